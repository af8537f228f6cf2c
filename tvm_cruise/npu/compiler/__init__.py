"""Compile accelerator functions to NPU programs and call them from the host graph.

``lower(mod, spec)`` replaces every call of an offloaded function (``Codegen`` = the
spec's key) with ``call_dps_packed("<key>.run", (program, *inputs))`` on fp16 tensors,
with casts at the boundary (int8 programs, given calibrated ranges: quantize and
dequantize with the tensors' scales), and returns what it compiled: per function its
program's content and spec hash and its simulated statistics (timing model, no data
needed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import tvm
from tvm import relax

from ...errors import LoweringFailures, NpuExecutionError
from ...targets.spec import AcceleratorSpec
from .codegen import compile_graph
from .graph import TUNABLE, Graph, from_relax, layer_macs, layer_signature
from .tiling import Tiling
from ..program import Program
from .quantize import FunctionRanges, quantize_graph
from ..runtime import call_npu
from ..simulator import RunStats, Simulator


@dataclass
class CompiledFunction:
    name: str
    graph: Graph
    program: Program
    tilings: dict
    stats: RunStats
    layer_ends: dict
    tuned_layers: set = field(default_factory=set)
    input_scales: list | None = None   # int8 programs: real value = int8 value * scale
    output_scales: list | None = None

    def layer_cycles(self) -> dict[int, int]:
        """Simulated cycles of each layer: between the barriers that close it and the
        previous one (layers are separated by SYNC on both engines)."""
        out, prev = {}, 0
        for index in sorted(self.layer_ends):
            end = self.stats.sync_times[self.layer_ends[index]]
            out[index], prev = end - prev, end
        return out

    def summary(self) -> dict:
        cycles = self.layer_cycles()
        peak = self.stats.macs_per_cycle
        layers = []
        for i, layer in enumerate(self.graph.layers):
            macs, cyc = layer_macs(layer), cycles.get(i, 0)
            layers.append({"kind": layer.kind, "pattern": layer.pattern,
                           "ops": list(layer.op_ids), "macs": macs, "cycles": cyc,
                           "utilization": round(macs / (cyc * peak), 6) if cyc else 0.0,
                           "tiling": self.tilings[i].to_dict() if i in self.tilings else None,
                           "tuned": i in self.tuned_layers})
        stats = self.stats.to_dict()
        # The array also computes rows past the image edge in a last, partial row tile:
        # time, but not useful work. Utilization counts the model's MACs only.
        useful = self.graph.macs()
        stats["array_macs"], stats["macs"] = stats["macs"], useful
        stats["utilization"] = round(useful / (self.stats.cycles * peak), 6) \
            if self.stats.cycles else 0.0
        return {"function": self.name, "dtype": self.graph.dtype,
                "spec_hash": self.program.spec_hash,
                "content_hash": self.program.content_hash,
                "bytes": len(self.program.to_bytes()),
                "instructions": len(self.program.instructions),
                "layers": layers, "stats": stats}


def compile_function(func: relax.Function, spec: AcceleratorSpec, name: str,
                     tilings: dict | None = None,
                     records: dict | None = None,
                     ranges: FunctionRanges | None = None) -> CompiledFunction:
    """One NPU program for an offloaded function.

    ``tilings`` ({layer index: Tiling}) overrides tiles per layer; ``records`` (tuning
    records {layer signature: record}) supplies searched tiles for the layers they match;
    every other layer gets the heuristic. ``ranges`` (calibrated ranges of its tensors)
    makes an int8 program (``quantize.py``); without them the program computes in fp16.
    """
    graph = from_relax(func, name)
    quantized = None
    if ranges is not None:
        quantized, failures = quantize_graph(graph, ranges)
        if failures:
            raise LoweringFailures(name, failures)
    chosen_in = dict(tilings or {})
    tuned = set()
    for i, layer in enumerate(graph.layers):
        if i in chosen_in or layer.kind not in TUNABLE or not records:
            continue
        rec = records.get(layer_signature(layer))
        if rec is not None:
            chosen_in[i] = Tiling(**rec["tiling"])
            tuned.add(i)
    program, chosen, ends = compile_graph(spec, graph, chosen_in)
    try:
        # the timing run checks every box, SRAM access and hazard of the program
        _, stats = Simulator(spec).run(program, None, functional=False)
    except NpuExecutionError as err:
        raise LoweringFailures(name, [(_layer_at(graph, ends, str(err)), str(err))]) from None
    compiled = CompiledFunction(name, graph, program, chosen, stats, ends)
    compiled.tuned_layers = tuned
    if quantized is not None:
        compiled.input_scales = quantized.input_scales
        compiled.output_scales = quantized.output_scales
    return compiled


def _layer_at(graph: Graph, ends: dict, message: str) -> tuple[int, ...]:
    """The op ids of the layer whose instructions include the one ``message`` names."""
    match = re.search(r"instruction (\d+)", message)
    if match:
        index = int(match.group(1))
        for layer_index in sorted(ends):
            if index <= ends[layer_index]:
                return tuple(graph.layers[layer_index].op_ids)
    return tuple(i for layer in graph.layers for i in layer.op_ids)


def lower(mod: tvm.IRModule, spec: AcceleratorSpec, functions, tilings=None, records=None,
          ranges: dict | None = None):
    """Replace each offloaded call by its NPU program; returns (module, [CompiledFunction]).

    Raises ``LoweringFailures`` listing every layer (of every function) that cannot lower.

    ``tilings``: {function name: {layer index: Tiling}}; ``records``: NPU tuning records;
    ``ranges``: {function name: FunctionRanges} of the int8 programs (the others: fp16).
    """
    from ...byoc.partition import _without
    from ...byoc.rewrite import rebuild_main

    compiled, failures = {}, []
    for gv in functions:
        try:
            compiled[gv] = compile_function(
                mod[gv], spec, gv.name_hint, (tilings or {}).get(gv.name_hint), records,
                (ranges or {}).get(gv.name_hint))
        except LoweringFailures as err:  # keep going: report every function's failures
            failures += err.failures
    if failures:
        raise LoweringFailures(", ".join(gv.name_hint for gv in functions), failures)

    def rewrite(bb, var, value, bound):
        if not (isinstance(value, relax.Call) and value.op in compiled):
            return None
        fn = compiled[value.op]
        dtype = fn.graph.dtype
        args = [_to_npu(bb, arg, dtype, fn.input_scales, i) for i, arg in enumerate(value.args)]
        outs = [relax.TensorType(v.shape, dtype) for v in fn.graph.outputs]
        result = bb.emit(call_npu(spec, fn.program, args, outs if len(outs) > 1 else outs[0]))
        if len(outs) == 1:
            return _from_npu(result, fn.output_scales, 0)
        items = [bb.emit(_from_npu(bb.emit(relax.TupleGetItem(result, i)), fn.output_scales, i))
                 for i in range(len(outs))]
        return relax.Tuple(items)

    out = rebuild_main(mod, rewrite)
    for gv in functions:
        out = _without(out, gv)
    return out, [compiled[gv] for gv in functions]


def _to_npu(bb, arg, dtype: str, scales: list | None, index: int):
    """A host fp32 tensor as the program's input: cast to fp16, or quantized to int8."""
    if not (isinstance(arg.ty, relax.TensorType) and str(arg.ty.dtype) == "float32"):
        return arg
    if scales is None:
        return bb.emit(relax.op.astype(arg, dtype))
    scaled = bb.emit(relax.op.round(bb.emit(relax.op.multiply(
        arg, relax.const(1.0 / scales[index], "float32")))))
    return bb.emit(relax.op.astype(bb.emit(relax.op.clip(scaled, -128, 127)), "int8"))


def _from_npu(result, scales: list | None, index: int):
    """A program's output back in fp32 on the host (dequantized for int8)."""
    out = relax.op.astype(result, "float32")
    if scales is None:
        return out
    return relax.op.multiply(out, relax.const(scales[index], "float32"))


def total_stats(compiled: list[CompiledFunction]) -> dict:
    """Simulated totals over programs that run one after another."""
    cycles = sum(c.stats.cycles for c in compiled)
    macs = sum(c.graph.macs() for c in compiled)
    peak = max((c.stats.macs_per_cycle for c in compiled), default=1)
    return {"simulated": True, "functions": len(compiled), "cycles": cycles, "macs": macs,
            "utilization": round(macs / (cycles * peak), 6) if cycles else 0.0,
            "dma_bytes": sum(c.stats.dma_bytes for c in compiled),
            "sram_high_water": max((c.stats.sram_high_water for c in compiled), default=0)}

