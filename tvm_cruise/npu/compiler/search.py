"""Tile search for one MAC layer, timed on the simulator's cycle model.

Each candidate tiling that fits the SRAM is compiled as a one-layer program and timed
with the simulator's timing-only mode (every check, no arithmetic); the fastest wins.
Deterministic: no hardware, no noise. Loop order is fixed (output-channel blocks, then
row tiles, then input-channel blocks); tiles are searched. ``autotune.npu`` runs it over
a model and stores the records.
"""

from __future__ import annotations

from ... import __version__
from ...targets.spec import AcceleratorSpec
from . import tiling as T
from .graph import Graph, Layer


def _probe(spec: AcceleratorSpec, layer: Layer):
    from .codegen import Emitter

    return Emitter(spec, Graph("probe", list(layer.inputs), [layer.output], [layer],
                               layer.output.dtype))


def candidates(spec: AcceleratorSpec, layer: Layer, per_group: int = 3) -> list:
    """Feasible tilings: per (channel block, reduction block, residency), the largest
    row counts that fit (``per_group`` of them, halving): ``tiling.shortlist``, the list
    the heuristic ranks by its estimate."""
    _, shape, sram = _probe(spec, layer).problem(layer)
    groups = T.conv_groups(spec, shape) if isinstance(shape, T.ConvShape) else \
        T.gemm_groups(spec, shape)
    return T.shortlist(groups, sram, spec.hardware["sram_bytes"], per_group)


def layer_cycles(spec: AcceleratorSpec, layer: Layer, tiling) -> int:
    """Simulated cycles of ``layer`` alone with ``tiling`` (timing-only run)."""
    from ..simulator import Simulator
    from .codegen import compile_graph

    inputs = list(layer.inputs) + ([layer.residual] if layer.residual is not None else [])
    graph = Graph("probe", inputs, [layer.output], [layer], layer.output.dtype)
    program, _, _ = compile_graph(spec, graph, {0: tiling} if tiling is not None else None)
    _, stats = Simulator(spec).run(program, None, functional=False)
    return stats.cycles


def search_layer(spec: AcceleratorSpec, layer: Layer) -> dict:
    """The fastest tiling of ``layer`` (simulated): a tuning record's fields."""
    choose, shape, _ = _probe(spec, layer).problem(layer)
    default = choose(spec, shape)
    default_cycles = layer_cycles(spec, layer, default)
    best, best_cycles = default, default_cycles
    options = candidates(spec, layer)
    for tiling in options:
        cycles = layer_cycles(spec, layer, tiling)
        if cycles < best_cycles:
            best, best_cycles = tiling, cycles
    return {"tiling": best.to_dict(), "cycles": best_cycles, "default_cycles": default_cycles,
            "candidates": len(options), "tvm_cruise": __version__}
