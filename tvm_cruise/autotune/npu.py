"""NPU tiling search: the fastest tiles per layer, measured on the simulator's cycle model.

For every MAC layer the partitioner offloads, each candidate tiling that fits the SRAM is
compiled as a one-layer program and timed with the simulator's timing-only mode (every
check, no arithmetic). The best per (layer signature, spec hash) is stored; a build uses
it instead of the heuristic. Deterministic: no hardware, no noise. Loop order is fixed
(output-channel blocks, then row tiles, then input-channel blocks); tiles are searched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import __version__
from ..schedules import records as store


@dataclass
class NpuTuneReport:
    accelerator: str
    log_dir: str
    layers: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    new_records: int = 0

    def summary(self) -> str:
        searched = [r for r in self.layers if r["status"] == "searched"]
        gain = sum(r["default_cycles"] - r["cycles"] for r in searched)
        total = sum(r["default_cycles"] for r in searched) or 1
        return (f"npu: {len(searched)} layers searched on {self.accelerator}, "
                f"{sum(r['status'] == 'skipped' for r in self.layers)} already tuned; "
                f"simulated cycles of the searched layers {gain / total:.1%} lower than the "
                f"heuristic's; {self.new_records} new records ({self.seconds:.0f} s)")


def _probe(spec, layer):
    from ..npu.compiler.codegen import Emitter
    from ..npu.compiler.graph import Graph

    return Emitter(spec, Graph("probe", list(layer.inputs), [layer.output], [layer],
                               layer.output.dtype))


def _groups(spec, layer):
    """Candidate tilings grouped like the heuristic's search: most rows first."""
    from ..npu.compiler import tiling as T

    _, shape, sram = _probe(spec, layer).problem(layer)
    rows_arr, cols = spec.hardware["mac_array"]
    if layer.kind in ("conv", "dwconv"):
        channels, rows, reductions = shape.cout, shape.hout, \
            ([shape.cin] if shape.depthwise else T._candidates(shape.cin, rows_arr))
        residency = (True, False)
    else:
        channels, rows, reductions = shape.n, shape.m, T._candidates(shape.k, rows_arr)
        residency = (True, False) if shape.const_b else (False,)
    for oc in T._candidates(channels, cols):
        for ic in reductions:
            for resident in residency:
                yield [T.Tiling(oc, r, ic, resident) for r in T._row_candidates(rows)], sram


def candidates(spec, layer, per_group: int = 3) -> list:
    """Feasible tilings: per (channel block, reduction block, residency), the largest
    row counts that fit (``per_group`` of them, halving)."""
    budget = spec.hardware["sram_bytes"]
    out = []
    for group, sram in _groups(spec, layer):
        fits = [t for t in group if sum(sram(t).values()) <= budget]
        picked, rows = [], None
        for t in fits:
            if rows is None or t.rows <= rows // 2 or t is fits[-1]:
                picked.append(t)
                rows = t.rows
            if len(picked) == per_group:
                break
        out.extend(picked)
    return list(dict.fromkeys(out))


def layer_cycles(spec, layer, tiling) -> int:
    """Simulated cycles of ``layer`` alone with ``tiling`` (timing-only run)."""
    from ..npu.compiler.codegen import compile_graph
    from ..npu.compiler.graph import Graph
    from ..npu.simulator import Simulator

    inputs = list(layer.inputs) + ([layer.residual] if layer.residual is not None else [])
    graph = Graph("probe", inputs, [layer.output], [layer], layer.output.dtype)
    program, _, _ = compile_graph(spec, graph, {0: tiling} if tiling is not None else None)
    _, stats = Simulator(spec).run(program, None, functional=False)
    return stats.cycles


def tune_npu(model, target, log_dir, *, retune: bool = False,
             progress: Callable[[str], None] = print, **build_options) -> NpuTuneReport:
    """Search the tiles of every offloaded MAC layer of ``model`` on ``target``'s NPU."""
    from ..npu.compiler.graph import TUNABLE, describe_layer, from_relax, layer_signature
    from ..byoc.partition import accelerator_functions, partition
    from ..frontend import ImportedModel, load_model
    from ..pipeline import prepare_passes, run_passes
    from ..targets import resolve_target

    log_dir = Path(log_dir)
    resolved = resolve_target(target, host=build_options.get("host"),
                              cuda_arch=build_options.get("cuda_arch"))
    spec = resolved.accelerator
    report = NpuTuneReport(spec.name if spec else "-", str(log_dir))
    if spec is None:
        progress(f"npu: target {resolved.name} has no accelerator; nothing to search")
        return report
    imported = model if isinstance(model, ImportedModel) else load_model(
        model, build_options.get("example_inputs"), input_shapes=build_options.get(
            "input_shapes"), name=build_options.get("name"))
    start = time.perf_counter()
    with resolved.tvm_target:
        mod = run_passes(imported.mod, prepare_passes())
        merged, _ = partition(mod, spec, build_options.get("precision", "fp16"), imported.name)
    known, _ = store.load_npu_records([log_dir], spec, store.Skipped())
    layers = []
    for gv in accelerator_functions(merged, spec):
        graph = from_relax(merged[gv], gv.name_hint)
        layers += [layer for layer in graph.layers if layer.kind in TUNABLE]
    records, seen = [], set()
    for n, layer in enumerate(layers, 1):
        sig = layer_signature(layer)
        if sig in seen:
            continue
        seen.add(sig)
        entry = {"signature": sig, "layer": describe_layer(layer)}
        if sig in known and not retune:
            report.layers.append({**entry, "status": "skipped"})
            progress(f"[{n}/{len(layers)}] {entry['layer']}: already tuned")
            continue
        choose, shape, _ = _probe(spec, layer).problem(layer)
        default = choose(spec, shape)
        default_cycles = layer_cycles(spec, layer, default)
        best, best_cycles = default, default_cycles
        options = candidates(spec, layer)
        for tiling in options:
            cycles = layer_cycles(spec, layer, tiling)
            if cycles < best_cycles:
                best, best_cycles = tiling, cycles
        rec = {**entry, "tiling": best.to_dict(), "cycles": best_cycles,
               "default_cycles": default_cycles, "candidates": len(options),
               "tvm_cruise": __version__}
        records.append(rec)
        report.layers.append({**rec, "status": "searched"})
        progress(f"[{n}/{len(layers)}] {entry['layer']}: {len(options)} tilings, "
                 f"{default_cycles} -> {best_cycles} cycles (simulated)")
    if records:
        report.new_records = store.write_npu_records(log_dir, spec, records)
    report.seconds = time.perf_counter() - start
    return report
