"""Accelerator tiling search over a model: the fastest tiles per layer, stored as records.

For every layer the accelerator's backend calls tunable (the Cruise NPU: MAC layers), the
backend searches its tiles (``npu.compiler.search``: each candidate tiling compiled as a
one-layer program and timed by the simulator's cycle model). The best per (layer
signature, spec hash) is stored; a build uses it instead of the heuristic. Deterministic:
no hardware, no noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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


def tune_npu(model, target, log_dir, *, retune: bool = False,
             progress: Callable[[str], None] = print, **build_options) -> NpuTuneReport:
    """Search the tiles of every offloaded MAC layer of ``model`` on ``target``'s NPU."""
    from ..backend import backend_for
    from ..driver import Compilation
    from ..targets import resolve_target

    log_dir = Path(log_dir)
    resolved = resolve_target(target, host=build_options.get("host"),
                              cuda_arch=build_options.get("cuda_arch"))
    spec = resolved.accelerator
    report = NpuTuneReport(spec.name if spec else "-", str(log_dir))
    if spec is None:
        progress(f"npu: target {resolved.name} has no accelerator; nothing to search")
        return report
    start = time.perf_counter()
    # the layers a build compiles: its stages up to the accelerator, without records
    compilation = Compilation.start(
        model, resolved, example_inputs=build_options.get("example_inputs"),
        input_shapes=build_options.get("input_shapes"), name=build_options.get("name"),
        precision=build_options.get("precision", "fp16"))
    compilation.run("accelerator")
    backend = backend_for(spec)
    layers = backend.tunable_layers(compilation.stage.compiled)
    known, _ = store.load_npu_records([log_dir], spec, store.Skipped())
    records, seen = [], set()
    for n, layer in enumerate(layers, 1):
        if layer.signature in seen:
            continue
        seen.add(layer.signature)
        entry = {"signature": layer.signature, "layer": layer.description}
        if layer.signature in known and not retune:
            report.layers.append({**entry, "status": "skipped"})
            progress(f"[{n}/{len(layers)}] {entry['layer']}: already tuned")
            continue
        rec = {**entry, **backend.search_layer(spec, layer)}
        records.append(rec)
        report.layers.append({**rec, "status": "searched"})
        progress(f"[{n}/{len(layers)}] {entry['layer']}: {rec['candidates']} tilings, "
                 f"{rec['default_cycles']} -> {rec['cycles']} cycles (simulated)")
    if records:
        report.new_records = store.write_npu_records(log_dir, spec, records)
    report.seconds = time.perf_counter() - start
    return report
