"""Host kernel timing with ``vm.set_instrument``, the end-to-end estimate and hotspots.

TVM removed the VM's per-op profiler in 0.24; ``vm.set_instrument`` remains: the VM calls
a function before and after every call it makes (host kernels, VM builtins, the NPU's
``<key>.run``). Each call is timed with ``time.perf_counter`` between the two, over
several runs after a warm-up, and the median kept per call site.

Host kernels are *measured* on this machine. The NPU's time is *simulated* by the cycle
model; the simulator's own wall time on this CPU is recorded separately and is never NPU
time. The end-to-end estimate adds host measured and NPU simulated time and says so.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from ..npu.program import HEADER_BYTES

NO_SOURCE = "(compiler-inserted, e.g. a boundary cast)"
_TAG = "__op"
METHOD = ("vm.set_instrument: time.perf_counter around every call the VM makes, median "
          "over the timed runs after one warm-up run (each figure includes a few "
          "microseconds of instrumentation)")


@dataclass
class KernelSite:
    """One call of a host kernel in ``main``, in execution order."""

    symbol: str
    ops: list[int]


def kernel_sites(host_module, target, fast_math: bool = True) -> list[KernelSite]:
    """Host kernel calls of ``main`` in execution order, each with the op ids it computes.

    Every op's result is renamed after its id (``__op<id>``) and the host part lowered the
    way ``pipeline.host_kernels`` lowers it (``pipeline.host_rewrites`` first, with the
    build's ``fast_math``),
    stopping before ``FuseTIR``, where a fused
    Relax function is named as its kernel will be. FuseOps renames variables and shares
    one fused function between identical groups, so each call inside a fused function is
    matched to the legalized (unfused) binding that calls the same kernel on the same
    values, following the data flow from the call site's arguments.
    """
    import tvm
    from tvm import relax

    from ..byoc.ops import op_id
    from ..byoc.rewrite import rebuild_main
    from ..pipeline import host_rewrites, legalize_passes, library_dispatch_passes, run_passes

    def rename(var, value):
        idx = op_id(value) if isinstance(value, relax.Call) else None
        return None if idx is None else f"{_TAG}{idx}"

    ops_only = rebuild_main(host_module, lambda bb, var, value, bound: None, rename=rename)
    # as host_kernels does; keeps names (a rewrite that adds kernels before an op's last
    # one, a Winograd convolution's transforms, gets them owned by the op below)
    tagged = host_rewrites(ops_only, target, fast_math)
    passes = library_dispatch_passes(target) + legalize_passes()
    cut = [p.info.name for p in passes].index("FuseOps")
    with target:
        legal = run_passes(tagged, passes[:cut])
        fused = run_passes(legal, [passes[cut]])
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def key(call, alias: dict) -> tuple:
        args = call.args[1].fields if isinstance(call.args[1], relax.Tuple) else [call.args[1]]
        return (call.args[0].name_hint,
                tuple(alias.get(a.name, a.name) if isinstance(a, relax.Var) else None
                      for a in args))

    # (kernel, argument names) -> names of the legalized bindings, in execution order
    unfused: dict[tuple, list[str]] = {}
    for binding in _bindings(legal["main"]):
        if isinstance(binding.value, relax.Call) and binding.value.op.same_as(call_tir):
            unfused.setdefault(key(binding.value, {}), []).append(binding.var.name)
    owner = _legalization_owners(ops_only["main"], legal["main"], call_tir)

    def match(call, alias: dict) -> str | None:
        names = unfused.get(key(call, alias))
        return names.pop(0) if names else None

    def op_of(name: str | None) -> int | None:
        return _tagged(owner.get(name, name)) if name else None

    alias: dict[str, object] = {}  # fused main's variable -> legalized name(s)
    sites = []
    for binding in _bindings(fused["main"]):
        value = binding.value
        if isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var):
            names = alias.get(value.tuple_value.name)
            if isinstance(names, list) and value.index < len(names):
                alias[binding.var.name] = names[value.index]
            continue
        if not isinstance(value, relax.Call):
            continue
        if value.op.same_as(call_tir):
            name = match(value, alias)
            alias[binding.var.name] = name or binding.var.name
            idx = op_of(name)
            sites.append(KernelSite(value.args[0].name_hint, [] if idx is None else [idx]))
        elif isinstance(value.op, tvm.ir.GlobalVar) and \
                isinstance(fused[value.op], relax.Function):
            func = fused[value.op]
            local = {p.name: (alias.get(a.name, a.name) if isinstance(a, relax.Var) else None)
                     for p, a in zip(func.params, value.args)}
            ops = []
            for inner in _bindings(func):
                if isinstance(inner.value, relax.Call) and inner.value.op.same_as(call_tir):
                    name = match(inner.value, local)
                    local[inner.var.name] = name or inner.var.name
                    if op_of(name) is not None:
                        ops.append(op_of(name))
            out = func.body.body
            fields = out.fields if isinstance(out, relax.Tuple) else None
            alias[binding.var.name] = ([local.get(f.name, f.name) for f in fields]
                                       if fields is not None else local.get(out.name, out.name))
            sites.append(KernelSite(value.op.name_hint, sorted(ops)))
    return sites


def _bindings(func) -> list:
    return [b for block in func.body.blocks for b in block.bindings]


def _legalization_owners(tagged_main, legal_main, call_tir) -> dict[str, str]:
    """Kernels an op's lowering adds before its last one (a custom op's sampling pass
    before its GEMM, a Winograd convolution's transforms): their binding's name -> the
    op's tagged name, found by following each new binding to the op binding that reads
    it."""
    from tvm import relax

    before = {b.var.name for b in _bindings(tagged_main)}
    owner: dict[str, str] = {}
    for binding in reversed(_bindings(legal_main)):
        name = binding.var.name
        mine = name if _tagged(name) is not None else owner.get(name)
        value = binding.value
        if mine is None or not (isinstance(value, relax.Call) and value.op.same_as(call_tir)):
            continue
        args = value.args[1].fields if isinstance(value.args[1], relax.Tuple) \
            else [value.args[1]]
        for arg in args:
            if isinstance(arg, relax.Var) and arg.name not in before:
                owner.setdefault(arg.name, mine)
    return owner


def _tagged(name: str) -> int | None:
    name = str(name)
    return int(name[len(_TAG):]) if name.startswith(_TAG) and name[len(_TAG):].isdigit() \
        else None


def align(sequence: list[str], sites: list[KernelSite]) -> list[list[int]]:
    """The op ids of each executed kernel call: the next site with the same kernel name (a
    site lowered to no kernel, e.g. a reshape the VM does itself, is passed over)."""
    out, pos = [], 0
    for symbol in sequence:
        nxt = next((k for k in range(pos, len(sites)) if sites[k].symbol == symbol), None)
        if nxt is None:
            out.append([])
            continue
        out.append(sites[nxt].ops)
        pos = nxt + 1
    return out


def measure(art, args: list, kernels: dict[str, str], npu_symbol: str | None,
            headers: dict[bytes, int], repeat: int, warmup: int = 1) -> dict:
    """Time every VM call over ``repeat`` runs of ``main`` (after ``warmup`` runs).

    Returns per-run call lists: ``{"kernels": [[(symbol, s), ...] per run], "npu":
    [{function index: s} per run], "builtins": [(calls, s) per run], "wall": [s per run]}``.
    """
    current: list = []
    starts: list[float] = []

    def instrument(func, symbol, before_run, ret_value, *call_args):
        if before_run:
            starts.append(time.perf_counter())
            return 0
        elapsed = time.perf_counter() - starts.pop()
        fn = None
        if symbol == npu_symbol and call_args:
            head = np.from_dlpack(call_args[0])[:HEADER_BYTES].tobytes()
            fn = headers.get(head)
        current.append((str(symbol), elapsed, fn))
        return 0

    vm = art.instrumented_vm(instrument)
    main = vm["main"]
    runs, wall = [], []
    for i in range(warmup + repeat):
        current.clear()
        begin = time.perf_counter()
        main(*args)
        if i >= warmup:
            wall.append(time.perf_counter() - begin)
            runs.append(list(current))
    out: dict = {"kernels": [], "npu": [], "builtins": [], "wall": wall}
    for calls in runs:
        out["kernels"].append([(s, t) for s, t, _ in calls if s in kernels])
        npu: dict[int, float] = {}
        for s, t, fn in calls:
            if s == npu_symbol and fn is not None:
                npu[fn] = npu.get(fn, 0.0) + t
        out["npu"].append(npu)
        rest = [t for s, t, _ in calls if s not in kernels and s != npu_symbol]
        out["builtins"].append((len(rest), sum(rest)))
    out["npu_calls"] = {fn: sum(1 for _, _, f in runs[0] if f == fn)
                        for fn in set(headers.values())} if runs else {}
    return out


def host_section(raw: dict, sites: list[KernelSite], kernels: dict[str, str],
                 names: dict[int, str], repeat: int) -> dict:
    """The report's ``performance.host`` section from ``measure``'s calls."""
    per_run = raw["kernels"]
    sequence = [s for s, _ in per_run[0]] if per_run else []
    ops_per_call = align(sequence, sites)
    rows = []
    for pos, symbol in enumerate(sequence):
        times = [run[pos][1] * 1e3 for run in per_run if len(run) > pos]
        ops = ops_per_call[pos]
        rows.append({"position": pos, "symbol": symbol,
                     "schedule": kernels.get(symbol, "unscheduled"),
                     "median_ms": statistics.median(times), "min_ms": min(times),
                     "ops": ops,
                     "names": list(dict.fromkeys(names.get(i, f"op{i}") for i in ops))})
    builtin_ms = statistics.median(t for _, t in raw["builtins"]) * 1e3 \
        if raw["builtins"] else 0.0
    schedules = {kind: sum(1 for r in rows if r["schedule"] == kind)
                 for kind in ("tuned", "default", "unscheduled")}
    return {"measured": True, "method": METHOD, "runs": repeat, "kernels": rows,
            "total_ms": sum(r["median_ms"] for r in rows),
            "builtins_ms": builtin_ms,
            "builtin_calls": raw["builtins"][0][0] if raw["builtins"] else 0,
            "schedules": schedules,
            "unmapped_calls": sum(1 for ops in ops_per_call if not ops)}


def npu_section(stats, clock_mhz: float, raw: dict, labels: list[str],
                op_counts: list[int]) -> dict:
    """The report's ``performance.npu`` section: simulated figures per function (from the
    cycle model at the spec's ``clock_mhz``), the calls per run, and the simulator's wall
    time kept apart."""
    functions = []
    for i, program in enumerate(stats.programs):
        st = program["stats"]
        sim = [run.get(i, 0.0) * 1e3 for run in raw["npu"]]
        calls = raw["npu_calls"].get(i, 0)
        functions.append({
            "function": f"f{i}", "layers": labels[i], "ops": op_counts[i],
            "npu_layers": len(program["layers"]), "instructions": program["instructions"],
            "calls": calls, "cycles": st["cycles"], "time_us": st["time_us"],
            "time_ms_per_run": st["time_us"] * calls / 1e3,
            "utilization": st["utilization"], "macs": st["macs"],
            "dma_bytes": st["dma_bytes_loaded"] + st["dma_bytes_stored"],
            "sram_high_water": st["sram_high_water"],
            "simulator_wall_ms": statistics.median(sim) if sim else None})
    totals = dict(stats.totals)
    return {"simulated": True, "accelerator": stats.accelerator, "clock_mhz": clock_mhz,
            "functions": functions,
            "total": {"cycles": totals.get("cycles", 0),
                      "time_ms_per_run": sum(f["time_ms_per_run"] for f in functions),
                      "utilization": totals.get("utilization", 0.0),
                      "macs": totals.get("macs", 0), "dma_bytes": totals.get("dma_bytes", 0),
                      "sram_high_water": totals.get("sram_high_water", 0)},
            "simulator_wall_ms": sum(f["simulator_wall_ms"] or 0.0 for f in functions)}


def wall_section(raw: dict, npu: dict | None) -> dict:
    """Measured wall time of the timed runs as a whole (instrumented: a few microseconds
    more per call than a plain run)."""
    times = [t * 1e3 for t in raw["wall"]]
    note = "the instrumented timed runs, whole, on this machine"
    if npu:
        note += ", including the NPU simulator running on this CPU: not NPU time"
    return {"measured": True, "median_ms": statistics.median(times), "min_ms": min(times),
            "runs": len(times), "note": note}


def estimate(host: dict, npu: dict | None) -> dict:
    """End-to-end estimate: host kernels measured here + NPU simulated, never one clock."""
    npu_ms = npu["total"]["time_ms_per_run"] if npu else 0.0
    return {"basis": "host measured + NPU simulated",
            "total_ms": host["total_ms"] + npu_ms, "host_measured_ms": host["total_ms"],
            "npu_simulated_ms": npu_ms,
            "not_included": {"vm_builtins_measured_ms": host["builtins_ms"],
                             "npu_simulator_wall_ms": npu["simulator_wall_ms"] if npu
                             else 0.0},
            "note": ("an estimate of a deployment: host kernels as measured on this machine "
                     "plus the NPU's simulated time (cycle model at the spec clock); it is "
                     "not a measurement of any one system. VM builtins and the simulator's "
                     "own run time are not included")}


def hotspots(host: dict, npu: dict | None, top: int = 10) -> list[dict]:
    """The largest contributors to the estimate, each labelled measured or simulated."""
    total = host["total_ms"] + (npu["total"]["time_ms_per_run"] if npu else 0.0)
    items = [{"kind": "npu-function", "basis": "simulated", "name": f["function"],
              "layers": f["layers"], "time_ms": f["time_ms_per_run"]}
             for f in (npu["functions"] if npu else [])]
    items += [{"kind": "host-kernel", "basis": "measured", "name": k["symbol"],
               "layers": _label(k["names"]), "time_ms": k["median_ms"],
               "schedule": k["schedule"]} for k in host["kernels"]]
    items.sort(key=lambda h: -h["time_ms"])
    for rank, item in enumerate(items[:top], 1):
        item["rank"] = rank
        item["share"] = item["time_ms"] / total if total else 0.0
    return items[:top]


def _label(names: list[str]) -> str:
    if not names:
        return NO_SOURCE
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"

