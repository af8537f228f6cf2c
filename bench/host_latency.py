"""Host latency: PyTorch, ONNX Runtime, untuned TVM, default-scheduled and tuned tvm-cruise.

    python bench/host_latency.py --model perception-cnn --logs DIR [--repeat 30] [--rounds 3]

Builds the model for the plain ``llvm`` target three times (no tuning logs and no
schedules: TVM's lowering; no tuning logs: tvm-cruise's default CPU schedules; the given
logs),
exports it to ONNX for ONNX Runtime, then times every system in interleaved rounds
(batch 1, fp32, inputs already in place) and prints min / median wall time and the ratio
of each median to tuned tvm-cruise's. All figures are measured wall time on the machine
that runs the script; nothing here is simulated.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np


def _timer(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="perception-cnn")
    parser.add_argument("--logs", required=True, help="tuning-log directory")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    import tvm_cruise
    from tvm_cruise import models

    model, inputs = models.get(args.model)
    x = inputs[0].numpy()
    untuned = tvm_cruise.build(model, target="llvm", example_inputs=inputs, tuning_logs=False,
                               default_schedules=False)
    default = tvm_cruise.build(model, target="llvm", example_inputs=inputs, tuning_logs=False)
    tuned = tvm_cruise.build(model, target="llvm", example_inputs=inputs,
                             tuning_logs=args.logs, shipped_logs=False)
    t = tuned.metadata["tuning"]
    with tempfile.TemporaryDirectory() as tmp:
        path = models.export_onnx(args.model, os.path.join(tmp, "m.onnx"))
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    import tvm

    def tvm_call(art):
        arg = tvm.runtime.tensor(x)
        func = art.vm["main"]
        return lambda: func(arg)

    systems = {
        "PyTorch eager": lambda: model(*inputs),
        "ONNX Runtime": lambda: session.run(None, {"x": x}),
        "TVM untuned (no schedules)": tvm_call(untuned),
        "tvm-cruise default schedules": tvm_call(default),
        "tvm-cruise tuned": tvm_call(tuned),
    }
    ref = model(*inputs).detach().numpy()
    err = float(np.abs(tuned.run(x) - ref).max() / np.abs(ref).max())
    default_err = float(np.abs(default.run(x) - ref).max() / np.abs(ref).max())
    times: dict[str, list[float]] = {k: [] for k in systems}
    with torch.no_grad():
        for fn in systems.values():
            _timer(fn, 3)  # warm up
        for _ in range(args.rounds):
            for name, fn in systems.items():
                times[name] += _timer(fn, args.repeat)
    base = statistics.median(times["tvm-cruise tuned"])
    print(f"{args.model}, batch 1, fp32; {platform.machine()}, {os.cpu_count()} cores; "
          f"{args.rounds} rounds x {args.repeat} runs, systems interleaved (measured)")
    print(f"tuned build: {t['tuned_kernels']}/{t['host_kernels']} host kernels from "
          f"{args.logs}; max|out - PyTorch| / max|PyTorch|: tuned {err:.1e}, default "
          f"schedules {default_err:.1e} ({default.metadata['tuning']['default_scheduled']}/"
          f"{t['host_kernels']} kernels)")
    print("| system | min ms | median ms | median / tuned tvm-cruise |")
    print("| --- | --- | --- | --- |")
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"| {name} | {min(samples):.2f} | {med:.2f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
