"""int8 vs fp32 and fp16: output agreement with PyTorch and simulated NPU cycles.

For each reference model (seeded weights, untrained) and accelerator: calibrate on
``--calib`` seeded standard-normal samples (min/max), evaluate on ``--eval`` other seeded
samples, and print the worst cosine similarity and SQNR of the int8 and fp16 builds against
PyTorch fp32, for classifiers ([batch, classes] outputs) the top-1 agreement with PyTorch
over the evaluation samples, the share of MACs each build keeps on the NPU, and the NPU
cycles (simulated by the cycle model, not measured).

    python bench/int8_accuracy.py [--models perception-cnn resnet18] [--calib 16] [--eval 32]

Then the trained ``digits-cnn`` on its 360 held-out digits: top-1 and agreement with
PyTorch of the fp32 host build and of the fp16 and int8 NPU builds (int8 calibrated on the
64 shipped training images).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import tvm_cruise
from tvm_cruise import models


def agreement(out, want) -> tuple[float, float]:
    out, want = np.ravel(out).astype(np.float64), np.ravel(want).astype(np.float64)
    cos = float(out @ want / (np.linalg.norm(out) * np.linalg.norm(want)))
    return cos, float(10 * np.log10((want @ want) / ((out - want) @ (out - want))))


def npu_share(art) -> float:
    ops = art.metadata["placement"]["ops"]
    total = sum(o["macs"] for o in ops)
    return sum(o["macs"] for o in ops if o["device"] != "host") / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["perception-cnn", "resnet18"])
    parser.add_argument("--targets", nargs="+", default=["cruise-npu", "cruise-npu-lite"])
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--eval", type=int, default=32)
    args = parser.parse_args()
    print(f"{'model':15s} {'target':16s} {'prec':5s} {'min cos':>9s} {'min SQNR dB':>12s} "
          f"{'top-1 agree':>11s} {'NPU MACs':>9s} {'NPU cycles (sim)':>17s}")
    for name in args.models:
        module, inputs = models.get(name)
        shape = tuple(inputs[0].shape)
        rng = np.random.default_rng(0)
        calib = [rng.standard_normal(shape).astype("float32") for _ in range(args.calib)]
        evals = [rng.standard_normal(shape).astype("float32") for _ in range(args.eval)]
        with torch.no_grad():
            wants = [module(torch.from_numpy(x)).numpy() for x in evals]
        for target in args.targets:
            for precision in ("fp16", "int8"):
                extra = {"calibration": calib} if precision == "int8" else {}
                art = tvm_cruise.build(module, target, example_inputs=inputs, name=name,
                                       precision=precision, **extra)
                outs = [art.run(x) for x in evals]
                scores = [agreement(o, w) for o, w in zip(outs, wants)]
                cycles = art.metadata["accelerator"]["totals"]["cycles"]
                top1 = "-"
                if wants[0].ndim == 2 and wants[0].shape[1] > 1:  # a classifier's logits
                    top1 = f"{np.mean([int(o.argmax()) == int(w.argmax()) for o, w in zip(outs, wants)]):.1%}"
                print(f"{name:15s} {target:16s} {precision:5s} "
                      f"{min(c for c, _ in scores):9.5f} {min(s for _, s in scores):12.1f} "
                      f"{top1:>11s} {npu_share(art):9.1%} {cycles:17,d}")
    trained_top1(args.targets)


def trained_top1(targets) -> None:
    from tvm_cruise.models.zoo import digits_data

    data = digits_data()
    images, labels = data["heldout_images"], data["heldout_labels"]
    module, _ = models.get("digits-cnn")
    with torch.no_grad():
        ref = module(torch.from_numpy(images)).argmax(1).numpy()
    print(f"\ndigits-cnn (trained), {len(labels)} held-out digits; PyTorch fp32 top-1 "
          f"{(ref == labels).mean():.4f}")
    print(f"{'target':16s} {'prec':5s} {'top-1':>7s} {'agrees w/ PyTorch':>18s} "
          f"{'NPU cycles (sim)':>17s}")
    for target, precision in [("llvm", "fp32"), *((t, p) for t in targets
                                                 for p in ("fp16", "int8"))]:
        extra = {"calibration": list(data["calibration_images"][:, None])} \
            if precision == "int8" else {}
        art = tvm_cruise.build("digits-cnn", target,
                               precision="fp16" if target == "llvm" else precision, **extra)
        pred = np.array([int(art.run(images[i:i + 1]).argmax()) for i in range(len(images))])
        acc = art.metadata["accelerator"] or {}
        cycles = f"{acc['totals']['cycles']:17,d}" if acc.get("totals") else f"{'-':>17s}"
        print(f"{target:16s} {precision:5s} {(pred == labels).mean():7.4f} "
              f"{(pred == ref).mean():18.4f} {cycles}")


if __name__ == "__main__":
    main()
