"""``tvm-cruise demo``: compile a bundled model, run it, and compare it with PyTorch.

Everything printed is measured in this run on this machine, except figures explicitly
labelled "simulated" (NPU cycle counts, once the NPU compiler exists).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time

import numpy as np


def _torch_wall_time(model, inputs, repeat: int, warmup: int = 3) -> dict:
    import torch

    with torch.no_grad():
        for _ in range(warmup):
            model(*inputs)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            model(*inputs)
            times.append((time.perf_counter() - start) * 1e3)
    return {"min_ms": min(times), "median_ms": statistics.median(times), "runs": repeat}


def _placement_lines(art) -> list[str]:
    report = art.placement
    if report is not None:
        return report.table().splitlines()
    where = "host (LLVM CPU)" if art.metadata["target"]["host_kind"] == "llvm" else \
        "host (CUDA GPU)"
    return [f"  {op:<28} {count:>5}  {where}"
            for op, count in art.metadata["model"]["ops"].items()]


def run_demo(model: str = "perception-cnn", target: str = "cruise-npu", repeat: int = 10) -> int:
    """Compile ``model`` for ``target``, export + reload it, and compare with PyTorch."""
    import torch

    from . import build, load, models

    torch_model, inputs = models.get(model)
    print(f"== tvm-cruise demo: {model} -> {target}")
    print(f"   machine: {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} torch threads")
    start = time.perf_counter()
    art = build(torch_model, target=target, example_inputs=inputs, name=model)
    print(f"   compiled in {time.perf_counter() - start:.1f} s")

    with tempfile.TemporaryDirectory(prefix="tvm_cruise_demo_") as tmp:
        path = os.path.join(tmp, f"{model}.{target}.so")
        art.export_library(path)
        loaded = load(path)
        print(f"   exported {os.path.getsize(path) / 1e6:.1f} MB artifact and reloaded it")
        print()
        print(loaded.describe())
        print()
        print("What runs where:")
        print("\n".join(_placement_lines(loaded)))

        with torch.no_grad():
            ref = torch_model(*inputs).numpy()
        out = loaded.run(*inputs)
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        fp16 = loaded.placement is not None and loaded.placement.precision == "fp16" and \
            loaded.placement.accelerator_ops
        bound, what = (1e-2, "fp16 on the accelerator") if fp16 else (1e-5, "an fp32 build")
        print()
        print(f"Accuracy vs PyTorch: max|out - ref| / max|ref| = {err:.2e} "
              f"(bound {bound:.0e} for {what}) -> {'OK' if err <= bound else 'FAIL'}")

        tvm_t = loaded.time_run(*inputs, repeat=repeat)
    torch_t = _torch_wall_time(torch_model, inputs, repeat)
    ratio = tvm_t["median_ms"] / torch_t["median_ms"]
    print()
    print(f"Measured wall time on this machine, batch 1, {repeat} runs (min / median):")
    print(f"  PyTorch eager      {torch_t['min_ms']:9.2f} / {torch_t['median_ms']:9.2f} ms")
    print(f"  tvm-cruise {target:<8}{tvm_t['min_ms']:9.2f} / {tvm_t['median_ms']:9.2f} ms"
          f"   ({ratio:.1f}x PyTorch's median)")
    stats = loaded.npu_stats()
    if stats is not None:
        print("  note: tvm-cruise's wall time includes running the NPU simulator on this CPU;"
              " it is not NPU time. The NPU's time is simulated:")
        print()
        print(stats.table(layers=True))
    tuning = loaded.metadata["tuning"]
    if tuning["tuned_kernels"] < tuning["host_kernels"]:
        untuned = tuning["host_kernels"] - tuning["tuned_kernels"]
        default = tuning.get("default_scheduled", 0)
        how = (f"{default} run tvm-cruise's default CPU schedule" if default == untuned else
               f"{default} run tvm-cruise's default CPU schedule, {untuned - default} TVM's "
               "unscheduled lowering")
        print(f"  note: {untuned} of {tuning['host_kernels']} host kernels are untuned ({how});"
              " `tvm-cruise tune` writes logs that close most of the remaining gap.")
    return 0 if err <= bound else 1
