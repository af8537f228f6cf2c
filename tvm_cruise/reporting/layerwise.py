"""Layer-wise accuracy: every NPU function on the model's real activations, against fp32.

One run of the compiled model with a VM instrument (``vm.set_instrument``). After each
``<key>.run`` call the runtime has executed an NPU program on the model's real boundary
activations (fp16, as the NPU receives them). The instrument then

1. runs TVM's fp32 host build of the same Relax function (``verify.inline_composites``:
   the partitioner's output, before the NPU compiler saw it) on those inputs, upcast
   exactly, returning every composite's output too;
2. executes the program once more in the simulator keeping its DRAM, where every layer's
   output lives between layers (``Simulator.run_traced``), and checks that its outputs
   are the runtime's;
3. compares the runtime's outputs (the function) and each layer's output with fp32.

A function or layer is beyond its bound when its error, max|npu - fp32| / max|fp32|,
exceeds both ``tolerance`` and twice its fp16 floor (``verify.py``'s rule; the floor is
the same error for TVM's own fp16 build, ``ToMixedPrecision``, on the same inputs, and is
computed only for functions with an error above ``tolerance``). Inside a
function the fp32 reference starts from the function's inputs, so a layer's error carries
the layers before it in that function: the first layer beyond its bound is where the error
jumps. Each function's tensors are dropped before the model moves on, so memory holds one
function's values at a time, never every tensor of the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..npu.compiler.codegen import value_tensors
from ..npu.program import HEADER_BYTES
from ..env import logger
from ..errors import BuildError
from ..runtime import flatten_outputs
from ..verify import DEFAULT_TOLERANCE, host_vm, inline_composites, rel_err

METHOD = ("each NPU function, during one run of the model, on the real activations that "
          "reached it, against TVM's fp32 host build of the same Relax function; layers "
          "read from the simulator's DRAM; bound: max(tolerance, 2 x fp16 floor)")


@dataclass
class LayerCheck:
    layer: int            # index of the layer in its function's NPU program
    kind: str             # NPU layer kind: conv2d, dense, elementwise, pool2d, ...
    ops: list[int]        # placement op ids it holds
    names: list[str]      # their source names (each once)
    error: float
    fp16_floor: float | None
    bound: float
    ok: bool


@dataclass
class FunctionCheck:
    function: str         # f0, f1, ... as in the placement report
    symbol: str
    layers: str           # first .. last source name
    calls: int
    error: float          # the runtime's outputs vs fp32
    fp16_floor: float | None
    bound: float
    ok: bool
    runtime_matches_simulator: bool
    layer_checks: list[LayerCheck] = field(default_factory=list)

    @property
    def first_bad_layer(self) -> LayerCheck | None:
        return next((c for c in self.layer_checks if not c.ok), None)

    def to_dict(self) -> dict:
        return asdict(self)




class LayerwiseCheck:
    """The VM instrument of the layer-wise check; ``results()`` after the run.

    Parameters
    ----------
    stage
        The build's ``driver.AcceleratorStage`` (partitioned module, offloaded functions,
        their NPU programs).
    names
        ``{op id: source name}`` (the placement report's names).
    labels
        ``{function index: "first .. last"}``.
    """

    def __init__(self, stage, spec, names: dict[int, str], labels: dict[int, str],
                 tolerance: float = DEFAULT_TOLERANCE):
        import tvm

        from ..npu.runtime import function_name
        from ..npu.simulator import Simulator

        self.stage, self.names, self.labels, self.tolerance = stage, names, labels, tolerance
        self.taps: dict[str, list[tuple[int, ...]]] = {}
        self.mod = tvm.IRModule({})
        for gv in stage.functions:
            taps: list = []
            self.mod[gv.name_hint] = inline_composites(stage.partitioned[gv], gv.name_hint,
                                                       taps)
            self.taps[gv.name_hint] = taps
        self.fp32 = host_vm(self.mod)
        self._fp16 = False  # built on first use (see fp16)
        self.headers = {c.program.to_bytes()[:HEADER_BYTES]: i
                        for i, c in enumerate(stage.compiled)}
        self.simulator = Simulator(spec)
        self.symbol = function_name(spec)
        self.order: list[int] = []
        self.checks: dict[int, FunctionCheck] = {}
        self.failure: Exception | None = None

    # -- the instrument -----------------------------------------------------------------
    def __call__(self, func, symbol, before_run, ret_value, *args) -> int:
        if not before_run and symbol == self.symbol and self.failure is None:
            try:
                self._check(args)
            except Exception as err:  # noqa: BLE001 - raised again after the run
                self.failure = err
        return 0  # VMInstrumentReturnKind.NO_OP: the call runs as it would

    def _check(self, args) -> None:
        index = self.headers.get(np.from_dlpack(args[0])[:HEADER_BYTES].tobytes())
        if index is None:
            raise BuildError("layer-wise check: the model called an NPU program this build "
                             "did not compile; rebuild the model")
        compiled, gv = self.stage.compiled[index], self.stage.functions[index]
        n_in = len(compiled.program.inputs)
        inputs = [np.from_dlpack(a).copy() for a in args[1:1 + n_in]]
        npu_out = [np.from_dlpack(a).copy() for a in args[1 + n_in:]]
        check = self._function(index, gv.name_hint, compiled, inputs, npu_out)
        if index not in self.checks:
            self.order.append(index)
            self.checks[index] = check
        else:  # called again: keep the worse call
            previous = self.checks[index]
            check.calls = previous.calls + 1
            if check.error < previous.error:
                previous.calls = check.calls
                check = previous
            self.checks[index] = check

    def _function(self, index, name, compiled, inputs, npu_out) -> FunctionCheck:
        import tvm

        func = self.mod[name]
        host_in = []
        for x, p in zip(inputs, func.params):
            shape = [int(d) for d in p.ty.shape.values]
            host_in.append(tvm.runtime.tensor(x.reshape(shape).astype(str(p.ty.dtype))))
        ref = flatten_outputs(self.fp32[name](*host_in))
        n_out = len(npu_out)
        error = max(rel_err(o.reshape(r.shape), r) for o, r in zip(npu_out, ref[:n_out]))
        sim_out, _, dram = self.simulator.run_traced(compiled.program, inputs)
        same = all(np.array_equal(s.reshape(-1), o.reshape(-1))
                   for s, o in zip(sim_out, npu_out))
        layers = self._layers(compiled, self.taps[name], ref[n_out:], dram)
        del dram
        check = FunctionCheck(f"f{index}", name, self.labels.get(index, ""), 1, error, None,
                              self.tolerance, bool(error <= self.tolerance), same,
                              [layer for _, layer in layers])
        if not check.ok or any(not c.ok for c in check.layer_checks):
            self._apply_floor(check, name, host_in, ref, n_out, layers)
        return check

    def _apply_floor(self, check, name, host_in, ref, n_out, layers) -> None:
        """Bounds from TVM's fp16 build on the same inputs: computed only where an error
        is beyond ``tolerance`` (the floor can only raise a bound), as fp16 arithmetic on
        a CPU is slow."""
        vm = self.fp16
        if vm is None:
            return
        half = flatten_outputs(vm[name](*host_in))
        check.fp16_floor = max(rel_err(h, r) for h, r in zip(half[:n_out], ref[:n_out]))
        check.bound = self._bound(check.fp16_floor)
        check.ok = bool(check.error <= check.bound)
        for k, layer in layers:
            layer.fp16_floor = rel_err(half[n_out + k], ref[n_out + k])
            layer.bound = self._bound(layer.fp16_floor)
            layer.ok = bool(layer.error <= layer.bound)

    @property
    def fp16(self):
        """TVM's fp16 build of the functions (``ToMixedPrecision``), built on first use."""
        if self._fp16 is False:
            from tvm import relax

            try:
                self._fp16 = host_vm(
                    relax.transform.ToMixedPrecision(out_dtype="float32")(self.mod))
            except Exception as err:  # noqa: BLE001 - the floor is a diagnostic
                logger.info("layer-wise check: no fp16 floor (ToMixedPrecision failed: %s)",
                            err)
                self._fp16 = None
        return self._fp16

    def _bound(self, floor: float | None) -> float:
        return self.tolerance if floor is None else max(self.tolerance, 2 * floor)

    def _layers(self, compiled, taps, ref, dram) -> list[tuple[int, LayerCheck]]:
        """``(tap index, check)`` per layer, in program order, bounded by ``tolerance``."""
        graph = compiled.graph
        where = value_tensors(compiled.program, graph)
        checks = []
        for k, ids in enumerate(taps):
            group = [i for i, layer in enumerate(graph.layers) if tuple(layer.op_ids) == ids]
            if not group or all(graph.layers[i].kind == "reshape" for i in group):
                continue  # a pure reshape: the same bytes as its input
            layer = graph.layers[group[-1]]
            value = dram[where[id(layer.output.root)]].reshape(-1)
            if value.size != ref[k].size:
                continue
            error = rel_err(value.reshape(ref[k].shape), ref[k])
            kind = next(graph.layers[i].kind for i in group if graph.layers[i].kind != "reshape")
            names = list(dict.fromkeys(self.names.get(i, f"op{i}") for i in ids))
            checks.append((k, LayerCheck(group[-1], kind, list(ids), names, error, None,
                                         self.tolerance, bool(error <= self.tolerance))))
        return sorted(checks, key=lambda c: c[1].layer)

    # -- results ------------------------------------------------------------------------
    def results(self) -> list[FunctionCheck]:
        """Checks in the order the model called the functions."""
        if self.failure is not None:
            raise self.failure
        return [self.checks[i] for i in self.order]


def section(checks: list[FunctionCheck], expected: int, tolerance: float) -> dict:
    """The report's ``accuracy.layerwise`` section."""
    first = next((c for c in checks if not c.ok or c.first_bad_layer is not None), None)
    first_bad = None
    if first is not None:
        layer = first.first_bad_layer
        first_bad = {"function": first.function, "function_layers": first.layers,
                     "function_error": first.error,
                     "layer": None if layer is None else layer.layer,
                     "kind": None if layer is None else layer.kind,
                     "names": [] if layer is None else layer.names,
                     "ops": [] if layer is None else layer.ops,
                     "error": first.error if layer is None else layer.error,
                     "bound": first.bound if layer is None else layer.bound}
    worst = max(checks, key=lambda c: c.error / c.bound, default=None)
    return {"method": METHOD, "tolerance": tolerance, "functions_checked": len(checks),
            "functions_offloaded": expected,
            "functions": [c.to_dict() for c in checks], "first_bad": first_bad,
            "worst": None if worst is None else {"function": worst.function,
                                                 "error": worst.error, "bound": worst.bound}}
