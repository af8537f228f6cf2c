"""Custom operators (tvm_cruise.relay_ops): tvm-cruise's host kernels vs the PyTorch reference.

    python bench/relay_ops.py [--repeat 20] [--rounds 3] [--ops pillar_scatter,...] [--json F]

For each operator's ``bench_case()`` (a perception-sized call: PointPillars' KITTI scatter,
a BEVFormer-sized deformable attention, a DCNv2 head layer, Mask R-CNN-sized RoIAlign and
NMS), it builds a one-op model for the plain ``llvm`` target twice, with TVM's unscheduled
lowering (``tvm-untuned``) and with tvm-cruise's schedules (``tvm-default``: the op's own
CPU schedule and the default schedules of the kernels around it), checks both outputs
against the PyTorch reference, then times the three in interleaved rounds (batch 1, fp32,
inputs in place). The PyTorch reference is tvm-cruise's vectorized eager implementation
(``torch.ops.cruise.*``; torchvision's C++ kernels do not load on this machine). All figures
are measured wall time on the machine that runs the script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time


TOLERANCE = 1e-4


def cases() -> dict:
    """``{name: (torch callable, args)}`` from every operator module's ``bench_case``."""
    from tvm_cruise.relay_ops import deform_conv, detection, msda, pillar_scatter

    import torch

    if not hasattr(torch.ops.torchvision, "roi_align"):
        # torchvision's C++ ops do not load beside the CPU torch: declare torchvision's
        # roi_align with tvm-cruise's reference kernel, as the tests do
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
        import torchvision_ops

        torchvision_ops.ensure("roi_align", detection.roi_align_reference,
                               detection.roi_align_fake)
    out = {}
    for module in (pillar_scatter, msda, deform_conv, detection):
        got = module.bench_case()
        out.update(got if isinstance(got, dict) else {module.NAME: got})
    return out


def _one_op(fn):
    """A torch module around a bench callable (what torch.export traces)."""
    import torch

    class OneOp(torch.nn.Module):
        def forward(self, *args):
            return fn(*args)

    return OneOp().eval()


def _leaves(out) -> list:
    """Every output as a numpy array (torch tensors, TVM tensors, tuples of them)."""
    if isinstance(out, (tuple, list)) or type(out).__name__ == "Array":
        return [a for o in out for a in _leaves(o)]
    return [out.numpy()]


def bench_one(name, fn, args, repeat: int, rounds: int) -> dict:
    import torch
    import tvm

    import tvm_cruise
    from tvm_cruise.benchmark import _rel_err, _time

    with torch.no_grad():
        ref = _leaves(fn(*args))
    module = _one_op(fn)
    systems = {"pytorch": lambda: fn(*args)}
    result = {"op": name, "systems": {"pytorch": {}}}
    for system, kwargs in (("tvm-untuned", {"default_schedules": False}), ("tvm-default", {})):
        start = time.perf_counter()
        art = tvm_cruise.build(module, target="llvm", example_inputs=args, tuning_logs=False,
                               shipped_logs=False, **kwargs)
        build_s = time.perf_counter() - start
        inputs = [tvm.runtime.tensor(a.numpy()) for a in args]
        func = art.vm["main"]
        err = _rel_err(_leaves(func(*inputs)), ref)
        result["systems"][system] = {"build_s": round(build_s, 2), "max_rel_error": err}
        if err > TOLERANCE:
            result["systems"][system]["status"] = "WRONG"
            continue
        systems[system] = (lambda f=func, i=inputs: f(*i))
    samples = {s: [] for s in systems}
    with torch.no_grad():
        for fn_ in systems.values():
            fn_()
        for _ in range(rounds):
            for system, fn_ in systems.items():
                samples[system] += _time(fn_, repeat, budget_s=30.0)
    for system, times in samples.items():
        entry = result["systems"].setdefault(system, {})
        entry.update(min_ms=round(min(times), 3), median_ms=round(statistics.median(times), 3))
    base = result["systems"]["pytorch"]["median_ms"]
    for entry in result["systems"].values():
        if "median_ms" in entry:
            entry["vs_pytorch"] = round(entry["median_ms"] / base, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()

    import torch

    available = cases()
    chosen = [c for c in args.ops.split(",") if c] or list(available)
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; the cases are {', '.join(available)}")
    import tvm

    from tvm_cruise.benchmark import _cpu_name

    machine = (f"{_cpu_name()}, {os.cpu_count()} CPUs, {platform.machine()}; torch "
               f"{torch.__version__} with {torch.get_num_threads()} threads, TVM with "
               f"{tvm.get_global_func('runtime.NumThreads')()}")
    results = []
    print(f"measured on: {machine}")
    header = f"{'op':<34}{'system':<13}{'min ms':>9}{'median ms':>11}{'vs PyTorch':>12}"
    print(header)
    for name in chosen:
        fn, fn_args = available[name]
        r = bench_one(name, fn, fn_args, args.repeat, args.rounds)
        results.append(r)
        for system, e in r["systems"].items():
            if "median_ms" in e:
                print(f"{name:<34}{system:<13}{e['min_ms']:>9.3f}{e['median_ms']:>11.3f}"
                      f"{e['vs_pytorch']:>11.2f}x")
            else:
                print(f"{name:<34}{system:<13}  {e.get('status', '?')}: max rel error "
                      f"{e['max_rel_error']:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
