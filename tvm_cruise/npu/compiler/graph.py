"""The NPU compiler's input: an accelerator function as a list of fused layers.

``from_relax`` reads a function the partitioner offloaded (``Codegen`` = the spec's key):
each composite becomes one layer whose epilogue (bias, residual add, activation) runs
on-chip. Its root operator's row of the operator table (``byoc/optable.py``) gives the
layer kind, which picks the reader. Layers can also be built by hand (the int8
function-level tests do).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ...errors import BuildError
from ...byoc import optable
from ...byoc.patterns import composite_op_ids
from ...byoc.rules import (activation_name, broadcast_box, is_constant, prim_value,
                           static_shape)


@dataclass(eq=False)
class Value:
    """A tensor flowing between layers (stored in DRAM between them)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float16"
    alias_of: "Value | None" = None  # a reshape: the same bytes under another shape
    data: np.ndarray | None = None   # a constant operand (a concat's learned token, say)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def root(self) -> "Value":
        return self.alias_of.root if self.alias_of is not None else self


@dataclass
class Activation:
    name: str = "none"   # none, relu, clip, sigmoid, tanh, silu, gelu
    lo: float = 0.0
    hi: float = 0.0


@dataclass
class Requant:
    """int8 output scaling of a MAC layer (per output channel).

    With a residual, REQUANT writes the conv's part on the output's scale unclamped; the
    residual is rescaled to that scale by ``residual_mult / 2**residual_shift`` (an int8
    ELTWISE multiply), added (saturating), and clamped to ``[lo, hi]`` (ELTWISE max / min).
    """

    mult: np.ndarray
    shift: np.ndarray
    zp: int = 0
    lo: int = -128
    hi: int = 127
    residual_mult: int = 0
    residual_shift: int = 0


@dataclass(eq=False)
class Layer:
    kind: str                      # optable.KINDS: conv2d, depthwise_conv2d, dense, matmul,
    #                                pool2d, elementwise, activation, concat, resize, reshape
    inputs: list[Value]
    output: Value
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    act: Activation = field(default_factory=Activation)
    residual: Value | None = None
    requant: Requant | None = None
    pattern: str = ""
    op_ids: tuple[int, ...] = ()


@dataclass
class Graph:
    name: str
    inputs: list[Value]
    outputs: list[Value]
    layers: list[Layer]
    dtype: str = "float16"
    # composites the reader could not turn into layers: (op ids, reason)
    failures: list = field(default_factory=list)

    def macs(self) -> int:
        return sum(layer_macs(layer) for layer in self.layers)


def layer_macs(layer: Layer) -> int:
    """Useful multiply-accumulates of one layer (0 for vector-unit layers)."""
    out = layer.output.size
    if layer.kind in ("conv2d", "depthwise_conv2d"):
        return out * int(np.prod(layer.weight.shape[1:]))
    if layer.kind == "dense":
        return out * layer.weight.shape[0]
    if layer.kind == "matmul":
        return out * layer.inputs[0].shape[-1]
    return 0


def broadcast_mode(a_shape, b_shape):
    """How ELTWISE broadcasts ``b`` over ``a``: ``(mode, rows, cols)`` or None.

    ``a`` is viewed as ``[rows][cols]`` (a split of its dims); ``b`` is then the same
    (``none``), one value per row (``channel``), per column (``pixel``) or one (``scalar``).
    """
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    size = int(np.prod(a_shape)) if a_shape else 1
    b = (1,) * (len(a_shape) - len(b_shape)) + b_shape
    if len(b) > len(a_shape):
        return None
    if b == a_shape:
        return "none", 1, size
    if int(np.prod(b)) == 1:
        return "scalar", 1, size
    for split in range(1, len(a_shape)):
        rows = int(np.prod(a_shape[:split]))
        cols = int(np.prod(a_shape[split:]))
        lead, tail = b[:split], b[split:]
        if lead == a_shape[:split] and all(d == 1 for d in tail):
            return "channel", rows, cols
        if all(d == 1 for d in lead) and tail == a_shape[split:]:
            return "pixel", rows, cols
    return None


# -- from Relax ---------------------------------------------------------------------------------
def _row(call) -> optable.OpRow | None:
    """``call``'s row of the operator table in the form the NPU computes: a conv2d is
    depthwise with one filter per channel (a channel multiplier runs as a grouped conv), a
    matmul is dense by a constant weight of rank <= 2 (else a matmul with a constant
    operand); None where no NPU instruction computes it."""
    def holds(form: str) -> bool:
        if form == "depthwise":
            groups = int(call.attrs.groups)
            return groups > 1 and groups == _shape(call.args[0])[1] == _shape(call)[1]
        return is_constant(call.args[1]) and len(_shape(call.args[1])) <= 2  # "weight"

    row = optable.lookup(call.op.name, holds)
    return row if row is not None and row.offloadable else None


def _const(expr) -> np.ndarray:
    return expr.value.numpy()


def _shape(expr) -> tuple[int, ...]:
    shape = static_shape(expr.ty)
    if shape is None:
        raise BuildError(f"the NPU compiler needs static shapes, got {expr.ty}")
    return shape


def _act_of(call) -> Activation:
    name = activation_name(call)
    if optable.lookup(call.op.name).name == "clip":
        lo, hi = (float(prim_value(a)) for a in call.args[1:3])
        return Activation("clip", lo, hi)
    return Activation({"relu6": "clip"}.get(name, name), 0.0, 6.0 if name == "relu6" else 0.0)


class _Reader:
    def __init__(self, name: str):
        self.name = name
        self.layers: list[Layer] = []
        self.count = 0

    def value(self, shape, hint="t") -> Value:
        self.count += 1
        return Value(f"{hint}{self.count}", tuple(shape))

    def composite(self, func: relax.Function, args: list[Value]) -> Value:
        env = dict(zip(func.params, args))
        calls = []
        for block in func.body.blocks:
            for binding in block.bindings:
                calls.append((binding.var, binding.value))
        pattern = str(func.attrs["Composite"]) if func.attrs is not None else ""
        ids = composite_op_ids(func)
        out = self._layer(calls, env, pattern, ids)
        return out

    def arg(self, expr, env):
        if isinstance(expr, relax.Var):
            if expr not in env:
                raise BuildError(f"NPU compiler: {expr.name} is not bound")
            value = env[expr]
            if not isinstance(value, Value):
                raise BuildError(f"NPU compiler: {expr.name} is a tuple where a tensor is "
                                 "expected")
            return value
        if is_constant(expr):
            data = _const(expr)
            self.count += 1
            return Value(f"c{self.count}", tuple(data.shape), data=data.astype(np.float32))
        raise BuildError(f"NPU compiler: cannot read operand {type(expr).__name__}")

    def view(self, value: Value, shape) -> Value:
        """``value``'s bytes under another shape (a free reshape)."""
        self.count += 1
        return Value(f"v{self.count}", tuple(shape), value.dtype, alias_of=value)

    def _layer(self, calls, env, pattern, ids) -> Value:
        var, root = calls[0]
        if not (isinstance(root, relax.Call) and isinstance(root.op, tvm.ir.Op)):
            raise BuildError(f"NPU compiler: composite {pattern} does not start with an op")
        row = _row(root)
        if row is None:
            raise BuildError(f"NPU compiler: no lowering for {root.op.name} (pattern {pattern})")
        out_shape = _shape(root)
        layer: Layer = getattr(self, "_" + row.kind)(root, env, row)
        if row.kind in ("dense", "matmul"):
            out = self._vector_product(layer, calls, out_shape, pattern, ids)
            if out is not None:
                return out
        # epilogue ops fused into the layer
        prev = var
        for evar, call in calls[1:]:
            cname = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
            other = [a for a in call.args if not (isinstance(a, relax.Var) and a.same_as(prev))]
            epilogue = optable.lookup(cname)
            if cname == optable.EPILOGUE_ADD and len(other) == 1 and is_constant(other[0]):
                layer.bias = _const(other[0]).astype(np.float32).reshape(-1)
            elif cname == optable.EPILOGUE_ADD and len(other) == 1:
                layer.residual = self.arg(other[0], env)
            elif epilogue is not None and epilogue.kind == "activation":
                layer.act = _act_of(call)
            else:
                raise BuildError(f"NPU compiler: unexpected {cname} in {pattern}")
            prev = evar
            out_shape = _shape(call)
        output = self.value(out_shape)
        if layer.kind == "reshape":
            output.alias_of = layer.inputs[0]
        layer.output = output
        layer.pattern = pattern
        layer.op_ids = ids
        self.layers.append(layer)
        return output

    # -- one reader per layer kind (optable.KINDS): the layer without its output ----------------
    def _conv2d(self, call, env, row) -> Layer:
        a = call.attrs
        w = _const(call.args[1]).astype(np.float32)
        depthwise = row.kind == "depthwise_conv2d"
        return Layer(row.kind, [self.arg(call.args[0], env)], None,
                     weight=w[:, 0] if depthwise else w,
                     attrs={"strides": tuple(int(v) for v in a.strides),
                            "padding": tuple(int(v) for v in a.padding),
                            "dilation": tuple(int(v) for v in a.dilation),
                            "groups": int(a.groups)})

    _depthwise_conv2d = _conv2d

    def _dense(self, call, env, row) -> Layer:
        a = self.arg(call.args[0], env)
        if len(a.shape) == 1:  # a vector: one row
            a = self.view(a, (1,) + a.shape)
        w = _const(call.args[1]).astype(np.float32)
        if w.ndim == 1:
            w = w.reshape(-1, 1)
        return Layer(row.kind, [a], None, weight=w)

    def _matmul(self, call, env, row) -> Layer:
        a = self.arg(call.args[0], env)
        if len(a.shape) == 1:  # a vector: one row
            a = self.view(a, (1,) + a.shape)
        b = self.arg(call.args[1], env)
        if len(b.shape) == 1:  # a vector: one column
            b = self.view(b, b.shape + (1,))
        return Layer(row.kind, [a, b], None)

    def _vector_product(self, layer, calls, out_shape, pattern, ids) -> Value | None:
        """A product of vectors: the layer computes it with their unit dims kept and a
        reshape drops them (returns its output); None for any other product."""
        a = layer.inputs[0]
        batch = np.broadcast_shapes(a.shape[:-2], () if layer.kind == "dense"
                                    else layer.inputs[1].shape[:-2])
        n = layer.weight.shape[1] if layer.kind == "dense" else layer.inputs[1].shape[-1]
        full = tuple(batch) + (a.shape[-2], n)
        if int(np.prod(full)) != int(np.prod(out_shape)):
            raise BuildError(f"NPU compiler: matmul output {out_shape} is not {full}")
        if full == tuple(out_shape):
            return None
        if len(calls) > 1:
            raise BuildError("NPU compiler: a fused epilogue after a matrix-vector "
                             "product is not supported")
        layer.output = self.value(full)
        layer.pattern, layer.op_ids = pattern, ids
        self.layers.append(layer)
        out = self.view(layer.output, out_shape)
        self.layers.append(Layer("reshape", [layer.output], out, pattern=pattern, op_ids=ids))
        return out

    def _pool2d(self, call, env, row) -> Layer:
        x = self.arg(call.args[0], env)
        in_shape = _shape(call.args[0])
        if row.global_by:
            return Layer(row.kind, [x], None, attrs={"kind": "avg", "kernel": in_shape[2:],
                                                    "stride": (1, 1), "padding": (0, 0, 0, 0),
                                                    "count_pad": False})
        a = call.attrs
        return Layer(row.kind, [x], None, attrs={
            "kind": row.pool,
            "kernel": tuple(int(v) for v in a.pool_size),
            "stride": tuple(int(v) for v in a.strides),
            "padding": tuple(int(v) for v in a.padding),
            "count_pad": bool(getattr(a, "count_include_pad", False))})

    def _elementwise(self, call, env, row) -> Layer:
        lhs, rhs = (self.arg(a, env) for a in call.args[:2])
        if lhs.data is not None and rhs.data is not None:
            raise BuildError("NPU compiler: element-wise op of two constants (fold it first)")
        return Layer(row.kind, [lhs, rhs], None, attrs={"op": row.name})

    def _activation(self, call, env, row) -> Layer:
        return Layer(row.kind, [self.arg(call.args[0], env)], None, act=_act_of(call))

    def _concat(self, call, env, row) -> Layer:
        fields = call.args[0].fields if isinstance(call.args[0], relax.Tuple) else None
        if fields is None:
            raise BuildError("NPU compiler: concat of a tuple variable is not supported")
        return Layer(row.kind, [self.arg(f, env) for f in fields], None,
                     attrs={"axis": int(call.attrs.axis) % len(_shape(call))})

    def _resize(self, call, env, row) -> Layer:
        a = call.attrs
        return Layer(row.kind, [self.arg(call.args[0], env)], None,
                     attrs={"method": str(a.method),
                            "coordinate": str(a.coordinate_transformation_mode),
                            "rounding": str(a.rounding_method)})

    def _reshape(self, call, env, row) -> Layer:
        return Layer(row.kind, [self.arg(call.args[0], env)], None)


def from_relax(func: relax.Function, name: str) -> Graph:
    """The layers of one accelerator function (``Codegen`` set by MergeCompositeFunctions)."""
    reader = _Reader(name)
    failures: list = []
    params = [Value(p.name, _shape(p), "float16") for p in func.params]
    env = dict(zip(func.params, params))
    local: dict = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Function):
                local[binding.var] = value
            elif isinstance(value, relax.Call) and value.op in local:
                composite = local[value.op]
                try:
                    args = [reader.arg(a, env) for a in value.args]
                    env[binding.var] = reader.composite(composite, args)
                except Exception as err:  # noqa: BLE001 - any failure: this layer can't lower
                    # Keep reading: every composite that cannot lower is found in one pass,
                    # and goes back to the host (see driver.accelerator_stage).
                    failures.append((composite_op_ids(composite), _reason(err)))
                    env[binding.var] = _placeholder(reader, binding.var)
            elif isinstance(value, relax.Tuple):
                env[binding.var] = [env.get(f, f) if isinstance(f, relax.Var) else
                                    reader.arg(f, env) for f in value.fields]
            elif isinstance(value, relax.TupleGetItem) and \
                    isinstance(env.get(value.tuple_value), list):
                env[binding.var] = env[value.tuple_value][value.index]
            elif isinstance(value, relax.Var):
                env[binding.var] = env[value]
            else:
                raise BuildError(f"NPU compiler: cannot lower {type(value).__name__} in {name}")
    body = func.body.body
    result = env[body] if isinstance(body, relax.Var) else \
        [reader.arg(f, env) for f in body.fields]
    outputs = result if isinstance(result, list) else [result]
    graph = Graph(name, params, outputs, reader.layers)
    graph.failures = failures
    return graph


def _reason(err: Exception) -> str:
    text = str(err).removeprefix("NPU compiler: ")
    return text if isinstance(err, BuildError) else f"{type(err).__name__}: {text}"


def _placeholder(reader: "_Reader", var):
    """A stand-in for a composite's result that could not be read (same shape)."""
    ty = var.ty
    if isinstance(ty, relax.TupleType):
        return [reader.value(static_shape(f) or (1,)) for f in ty.fields]
    return reader.value(static_shape(ty) or (1,))


TUNABLE = ("conv2d", "depthwise_conv2d", "dense", "matmul")


def layer_signature(layer: Layer) -> str:
    """What a layer's best tiling depends on (shapes, kernel geometry, fused extras,
    dtype), hashed: NPU tuning records are keyed by it and the spec hash."""
    import hashlib
    import json

    data = {"kind": layer.kind, "in": [list(v.shape) for v in layer.inputs],
            "out": list(layer.output.shape), "dtype": layer.output.dtype,
            "weight": list(layer.weight.shape) if layer.weight is not None else None,
            "bias": layer.bias is not None, "residual": layer.residual is not None,
            "attrs": {k: list(v) if isinstance(v, tuple) else v
                      for k, v in sorted(layer.attrs.items())}}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def describe_layer(layer: Layer) -> str:
    w = "x".join(map(str, layer.weight.shape)) if layer.weight is not None else "-"
    return (f"{layer.kind} {'x'.join(map(str, layer.inputs[0].shape))} -> "
            f"{'x'.join(map(str, layer.output.shape))} w {w}")
