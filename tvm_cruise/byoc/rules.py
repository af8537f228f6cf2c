"""Offload rules: every accelerator limit is one named rule with one message.

``violations(spec, call, precision)`` evaluates every rule that applies to one Relax call
and returns what it breaks. The pattern checks (``patterns.py``) offload an op only when
the list is empty, and the placement report quotes the same messages, so a user reads one
explanation everywhere. Rules read limits from the spec; none branches on an accelerator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..relay_ops import registry
from ..targets.spec import AcceleratorSpec
from . import optable

# Precision policy: the dtype an fp32 tensor has on the accelerator.
PRECISIONS = {"fp16": "float16", "fp32": "float32", "int8": "int8"}
DTYPE_BYTES = {"float16": 2, "float32": 4, "int8": 1, "int32": 4}


@dataclass(frozen=True)
class Rule:
    id: str
    template: str

    def message(self, spec: AcceleratorSpec, **fields) -> str:
        return self.template.format(acc=spec.name, **fields)


RULES = {r.id: r for r in (
    Rule("op-not-supported", "{acc}: {op} is not supported (it runs: {families})"),
    Rule("custom-op", "{acc}: {op} is a tvm-cruise custom operator ({summary}); no "
                      "accelerator instruction set implements it, so it runs on the host "
                      "with its own CPU schedule (tvm_cruise.relay_ops)"),
    Rule("dtype", "{acc}: {op} in {dtype} is not supported (it computes in {dtypes})"),
    Rule("tensor-dtype", "{acc}: {op} on {dtype} tensors runs on the host: under "
                         "precision={precision!r} the accelerator computes {compute} from "
                         "float tensors (integer tensors are not quantized activations)"),
    Rule("dynamic-shape", "{acc}: {op} has a dynamic shape {shape}; only static shapes are "
                          "offloaded"),
    Rule("rank", "{acc}: {op} on a rank-{rank} tensor is not supported (at most rank {max})"),
    Rule("conv2d-layout", "{acc}: conv2d layout {layout} is not supported (NCHW/OIHW only)"),
    Rule("conv2d-kernel", "{acc}: conv2d kernel {value} > {limit} is not supported"),
    Rule("conv2d-stride", "{acc}: conv2d stride {value} > {limit} is not supported"),
    Rule("conv2d-dilation", "{acc}: conv2d dilation {value} > {limit} is not supported"),
    Rule("conv2d-padding", "{acc}: conv2d padding {value} > {limit} is not supported"),
    Rule("conv2d-groups", "{acc}: grouped conv2d (groups={groups}) is not supported (groups=1 "
                          "or depthwise only)"),
    Rule("conv2d-depthwise", "{acc}: depthwise conv2d is not supported"),
    Rule("conv2d-sram", "{acc}: conv2d smallest tiling ({tiling}) needs {need} B of SRAM "
                        "(input rows at the padded width, weights, accumulators and output "
                        "tiles as its compiler allocates them) but the SRAM has {sram} B"),
    Rule("dense-rank", "{acc}: dense on a rank-{rank} input is not supported (at most rank "
                       "{limit})"),
    Rule("matmul-activations", "{acc}: matmul of two activations is not supported (only dense "
                               "layers with constant weights)"),
    Rule("matmul-rank", "{acc}: matmul on rank-{rank} operands is not supported (at most rank "
                        "{limit})"),
    Rule("pool-type", "{acc}: {kind} pooling is not supported (it runs: {types})"),
    Rule("pool-layout", "{acc}: pooling layout {layout} is not supported (NCHW only)"),
    Rule("pool-kernel", "{acc}: pooling window {value} > {limit} is not supported"),
    Rule("pool-stride", "{acc}: pooling stride {value} > {limit} is not supported"),
    Rule("pool-dilation", "{acc}: pooling dilation {value} is not supported (POOL windows are "
                          "dense)"),
    Rule("pool-window", "{acc}: pooling {detail}; POOL needs every window to start inside the "
                        "input and, counting padding, to end inside the padded input"),
    Rule("pool-global", "{acc}: {op} is not a global average pool over H and W ({detail}); only "
                        "that form is supported"),
    Rule("elementwise-op", "{acc}: element-wise {name} is not supported (it runs: {ops})"),
    Rule("elementwise-broadcast", "{acc}: element-wise {name} broadcasting {lhs} with {rhs} is "
                                  "not supported ({allowed})"),
    Rule("activation-function", "{acc}: activation {name} is not supported (it runs: "
                                "{functions})"),
    Rule("concat-axis", "{acc}: concat along axis {axis} is not supported (axes {axes} only)"),
    Rule("resize-method", "{acc}: resize method {method} is not supported (it runs: "
                          "{methods})"),
    Rule("resize-layout", "{acc}: resize layout {layout} is not supported (NCHW only)"),
    Rule("resize-scale", "{acc}: resize from {src} to {dst} is not an integer scale up to "
                         "{limit}x"),
    # Not a spec limit: the NPU compiler found no way to lower an op the rules accepted.
    # The op runs on the host; a property test keeps this empty for accepted configurations.
    Rule("npu-compiler", "{acc}: the NPU compiler cannot lower this {op} ({why}); it runs on "
                         "the host"),
    # Not a spec limit: the user asked for this layer in fp32 (build(layer_precision=)).
    Rule("precision-override", "{acc}: {why}"),
)}


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str


def is_constant(expr) -> bool:
    return isinstance(expr, tvm.ir.expr.Constant)


def op_row(call) -> optable.OpRow | None:
    """``call``'s row of the operator table in the form the spec sees (None: no
    accelerator runs it): a conv2d is depthwise when its groups are its input channels,
    a matmul is a dense layer when its weight is a constant."""
    tests = {"depthwise": lambda: is_depthwise(call),
             "weight": lambda: is_constant(call.args[1])}
    return optable.lookup(call.op.name, lambda form: tests[form]())


def family_of(call) -> str | None:
    """The spec op family a Relax call belongs to (None: no accelerator has it)."""
    row = op_row(call)
    return row.family if row is not None else None


def _short(call) -> str:
    return call.op.name.replace("relax.", "")


def _tensor_types(call) -> list:
    types = []
    for arg in call.args:
        ty = arg.ty
        if isinstance(ty, relax.TupleType):
            types.extend(f for f in ty.fields if isinstance(f, relax.TensorType))
        elif isinstance(ty, relax.TensorType):
            types.append(ty)
    if isinstance(call.ty, relax.TensorType):
        types.append(call.ty)
    return types


def static_shape(ty) -> tuple[int, ...] | None:
    if ty.shape is None:
        return None
    dims = []
    for dim in ty.shape.values:
        if not hasattr(dim, "value"):
            return None
        dims.append(int(dim.value))
    return tuple(dims)


def _effective_rank(shape) -> int:
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return len(dims)


def activation_name(call) -> str:
    """relu, relu6, clip, sigmoid, ... (clip(0, 6) is relu6)."""
    name = optable.lookup(call.op.name).name
    if name == "clip":
        lo, hi = (prim_value(a) for a in call.args[1:3])
        if lo == 0 and hi == 6:
            return "relu6"
        if lo == 0 and hi is not None and hi >= 3.4e38:
            return "relu"
    return name


def prim_value(expr):
    """The Python number of a scalar argument (IntImm/FloatImm, or a PrimValue of one)."""
    value = getattr(expr, "value", None)
    return getattr(value, "value", value)


def accel_dtype(dtype: str, precision: str) -> str:
    return PRECISIONS[precision] if dtype == "float32" else dtype


def violations(spec: AcceleratorSpec, call, precision: str = "fp16") -> list[Violation]:
    """Every rule ``call`` breaks on ``spec``'s accelerator (empty: it may be offloaded)."""
    out: list[Violation] = []

    def add(rule_id: str, **fields):
        out.append(Violation(rule_id, RULES[rule_id].message(spec, **fields)))

    family = family_of(call)
    short = _short(call)
    if registry.is_custom(call):
        add("custom-op", op=short, summary=registry.get(short.split(".", 1)[1]).summary)
        return out
    if family == "matmul" and family not in spec.ops and "dense" in spec.ops:
        add("matmul-activations")
        return out
    if family is None or family not in spec.ops:
        add("op-not-supported", op=short, families=", ".join(spec.ops))
        return out
    types = _tensor_types(call)
    for ty in types:
        shape = static_shape(ty)
        if shape is None:
            add("dynamic-shape", op=short, shape=str(ty.shape))
            return out
    compute = PRECISIONS[precision]
    if compute not in spec.dtypes:
        add("dtype", op=short, dtype=compute, dtypes=", ".join(spec.dtypes))
    # int8 programs quantize float tensors themselves; integer tensors are not activations
    accepted = {"float32"} if compute == "int8" else {"float32", compute}
    others = sorted({str(t.dtype) for t in types} - accepted)
    if others:
        add("tensor-dtype", op=short, dtype="/".join(others), precision=precision,
            compute=compute)
    ranks = [_effective_rank(static_shape(t)) for t in types]
    if ranks and max(ranks) > spec.max_rank:
        add("rank", op=short, rank=max(ranks), max=spec.max_rank)
    if family in _FAMILY_CHECKS:
        _FAMILY_CHECKS[family](spec, call, spec.ops[family], add, precision)
    return out


# -- per-family checks ---------------------------------------------------------------------
def _conv2d(spec, call, limits, add, precision):
    attrs = call.attrs
    layout = f"{attrs.data_layout}/{attrs.kernel_layout}"
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        add("conv2d-layout", layout=layout)
        return
    in_shape = static_shape(call.args[0].ty)
    w_shape = static_shape(call.args[1].ty)
    out_shape = static_shape(call.ty)
    kernel = tuple(w_shape[2:])
    strides = tuple(int(s) for s in attrs.strides)
    dilation = tuple(int(d) for d in attrs.dilation)
    padding = tuple(int(p) for p in attrs.padding)
    if max(kernel) > limits["max_kernel"]:
        add("conv2d-kernel", value=kernel, limit=limits["max_kernel"])
    if max(strides) > limits["max_stride"]:
        add("conv2d-stride", value=strides, limit=limits["max_stride"])
    if max(dilation) > limits["max_dilation"]:
        add("conv2d-dilation", value=dilation, limit=limits["max_dilation"])
    if max(padding) > limits["max_padding"]:
        add("conv2d-padding", value=padding, limit=limits["max_padding"])
    groups = int(attrs.groups)
    if is_depthwise(call):
        if not limits["depthwise"]:
            add("conv2d-depthwise")
    elif groups > 1 and not limits["grouped"]:
        add("conv2d-groups", groups=groups)
    smallest = conv2d_smallest_tiling(spec, call, precision)
    if smallest is not None and smallest[1] > spec.hardware["sram_bytes"]:
        tiling, need = smallest
        add("conv2d-sram", tiling=tiling, need=need, sram=spec.hardware["sram_bytes"])


def is_depthwise(call) -> bool:
    groups = int(call.attrs.groups)
    in_shape = static_shape(call.args[0].ty)
    return groups > 1 and in_shape is not None and groups == in_shape[1]


def conv2d_smallest_tiling(spec, call, precision: str, bias: bool = False,
                           residual: bool = False):
    """``(tiling described, bytes)``: of the tilings ``spec``'s backend would give this conv
    (with a fused bias / residual epilogue or without), the one needing the least SRAM, by
    the backend's own SRAM model (``Backend.conv2d_sram``); None when its dtype or shapes
    are not the accelerator's (other rules say why) or the backend sets no such limit.
    The conv fits no tiling when this one does not.
    """
    from ..backend import backend_for

    dtype = accel_dtype("float32", precision)
    shapes = [static_shape(call.args[0].ty), static_shape(call.args[1].ty),
              static_shape(call.ty)]
    if dtype not in spec.dtypes or any(s is None or len(s) != 4 for s in shapes):
        return None
    a = call.attrs
    return backend_for(spec).conv2d_sram(
        spec, shapes, [int(v) for v in a.strides], [int(v) for v in a.padding],
        [int(v) for v in a.dilation], int(a.groups), dtype, bias, residual)


def conv2d_fits(spec, call, precision: str, bias: bool, residual: bool) -> bool:
    """Whether the conv with this fused epilogue has a tiling that fits the SRAM (a fused
    residual adds two tiles: a pattern that does not fit leaves the add unfused)."""
    smallest = conv2d_smallest_tiling(spec, call, precision, bias, residual)
    return smallest is None or smallest[1] <= spec.hardware["sram_bytes"]


def _dense(spec, call, limits, add, precision):
    rank = _effective_rank(static_shape(call.args[0].ty))
    if rank > limits["max_rank"]:
        add("dense-rank", rank=rank, limit=limits["max_rank"])


def _matmul(spec, call, limits, add, precision):
    rank = max(_effective_rank(static_shape(a.ty)) for a in call.args[:2])
    if rank > limits["max_rank"]:
        add("matmul-rank", rank=rank, limit=limits["max_rank"])


def _pool2d(spec, call, limits, add, precision):
    row = optable.lookup(call.op.name)
    if row.pool not in limits["types"]:
        add("pool-type", kind=row.pool, types=", ".join(limits["types"]))
    if row.global_by == "axes":
        axes = tuple(int(a) for a in call.attrs.axis) if call.attrs.axis is not None else ()
        ndim = len(static_shape(call.args[0].ty))
        axes = tuple(sorted(a % ndim for a in axes))
        if ndim != 4 or axes != (2, 3) or not limits["global"]:
            add("pool-global", op=row.name, detail=f"axes {axes} of a rank-{ndim} tensor")
        return
    if call.attrs.layout != "NCHW":
        add("pool-layout", layout=call.attrs.layout)
        return
    if row.global_by == "output":
        out_hw = tuple(static_shape(call.ty)[2:])
        if out_hw != (1, 1) or not limits["global"]:
            add("pool-global", op=row.name, detail=f"output {out_hw}")
        return
    window = tuple(int(v) for v in call.attrs.pool_size)
    strides = tuple(int(v) for v in call.attrs.strides)
    dilation = tuple(int(v) for v in call.attrs.dilation)
    if max(dilation) > 1:
        add("pool-dilation", value=dilation)
    problem = _pool_window_problem(call, window, strides)
    if problem:
        add("pool-window", detail=problem)
    if max(window) > limits["max_kernel"]:
        add("pool-kernel", value=window, limit=limits["max_kernel"])
    if max(strides) > limits["max_stride"]:
        add("pool-stride", value=strides, limit=limits["max_stride"])


def _pool_window_problem(call, window, strides) -> str | None:
    """Why POOL cannot compute this pooling's windows as Relax defines them, or None.

    POOL skips window elements outside the input and divides an average by the elements
    inside (or, counting padding, by the whole window): right as long as every window
    starts inside the input or its top/left padding and, when padding counts, ends inside
    the padded input (ceil_mode can make the last window reach past it).
    """
    in_hw = static_shape(call.args[0].ty)[2:]
    out_hw = static_shape(call.ty)[2:]
    pad = tuple(int(p) for p in call.attrs.padding)
    count_pad = bool(getattr(call.attrs, "count_include_pad", False)) and \
        optable.lookup(call.op.name).pool == "avg"
    for axis in range(2):
        size, out, k, s = in_hw[axis], out_hw[axis], window[axis], strides[axis]
        before, after = pad[axis], pad[axis + 2]
        last = (out - 1) * s - before  # start of the last window in input coordinates
        if before >= k:
            return f"padding {before} >= window {k}"
        if last >= size:
            return f"the last window (output {out}) starts past the {size}-wide input"
        if count_pad and last + k > size + after:
            return (f"counting padding, the last window reaches past the padded input "
                    f"(ceil_mode, output {out})")
    return None


def broadcast_kind(lhs, rhs) -> str:
    """'none' (same shape), 'channel' (per-channel/scalar vs NCHW) or 'any'."""
    if lhs == rhs:
        return "none"
    big, small = (lhs, rhs) if len(lhs) >= len(rhs) else (rhs, lhs)
    if int(np.prod(small)) == 1:
        return "channel"
    padded = (1,) * (len(big) - len(small)) + tuple(small)
    if len(big) == 4 and padded == (1, big[1], 1, 1):
        return "channel"  # NCHW: one value per channel
    if len(big) != 4 and all(d == 1 for d in padded[:-1]) and padded[-1] == big[-1]:
        return "channel"  # features on the last axis (dense outputs, sequences)
    return "any"


def broadcast_box(out_shape, *shapes):
    """The element-wise broadcast of ``shapes`` to ``out_shape`` as one DMA box: returns
    ``(dims, [strides per operand])`` with adjacent dimensions merged where every operand
    treats them alike (stride 0 where an operand broadcasts), or None when the operands
    need more than the DMA's 4 box dimensions.
    """
    out = tuple(int(d) for d in out_shape)
    padded = [(1,) * (len(out) - len(s)) + tuple(int(d) for d in s) for s in shapes]
    if any(len(p) != len(out) for p in padded):
        return None
    dims: list[int] = []
    kinds: list[tuple[bool, ...]] = []  # per kept dim: does each operand span it?
    for axis, extent in enumerate(out):
        if extent == 1:
            continue
        spans = tuple(p[axis] == extent for p in padded)
        if any(p[axis] not in (1, extent) for p in padded):
            return None
        if kinds and kinds[-1] == spans:
            dims[-1] *= extent
        else:
            dims.append(extent)
            kinds.append(spans)
    if not dims:
        dims, kinds = [1], [tuple(True for _ in shapes)]
    if len(dims) > 4:
        return None
    strides = []
    for op_index in range(len(shapes)):
        acc, st = 1, []
        for extent, spans in zip(reversed(dims), reversed(kinds)):
            st.append(acc if spans[op_index] else 0)
            acc *= extent if spans[op_index] else 1
        strides.append(tuple(reversed(st)))
    return tuple(dims), strides


def _elementwise(spec, call, limits, add, precision):
    name = optable.lookup(call.op.name).name
    if name not in limits["ops"]:
        add("elementwise-op", name=name, ops=", ".join(limits["ops"]))
    lhs, rhs = (static_shape(a.ty) for a in call.args[:2])
    kind = broadcast_kind(lhs, rhs)
    order = ("none", "channel", "any")
    if kind == "any" and broadcast_box(static_shape(call.ty), lhs, rhs) is None:
        # the DMA reads each operand as one box of at most 4 dimensions
        add("elementwise-broadcast", name=name, lhs=lhs, rhs=rhs,
            allowed="at most 4 dimensions once dimensions broadcast alike are merged")
    elif order.index(kind) > order.index(limits["broadcast"]):
        allowed = {"none": "same shapes only",
                   "channel": "same shapes, per-channel or scalar only"}[limits["broadcast"]]
        add("elementwise-broadcast", name=name, lhs=lhs, rhs=rhs, allowed=allowed)


def _activation(spec, call, limits, add, precision):
    name = activation_name(call)
    functions = limits["functions"]
    ok = name in functions or (name == "relu6" and "clip" in functions)
    if not ok:
        add("activation-function", name=name, functions=", ".join(functions))


def _concat(spec, call, limits, add, precision):
    ndim = len(static_shape(call.ty))
    axis = int(call.attrs.axis) % ndim
    if axis not in limits["axes"]:
        add("concat-axis", axis=axis, axes=list(limits["axes"]))


def _resize(spec, call, limits, add, precision):
    attrs = call.attrs
    if attrs.method not in limits["methods"]:
        add("resize-method", method=attrs.method, methods=", ".join(limits["methods"]))
    if attrs.layout != "NCHW":
        add("resize-layout", layout=attrs.layout)
        return
    src = static_shape(call.args[0].ty)[2:]
    dst = static_shape(call.ty)[2:]
    scales = [d / s for s, d in zip(src, dst)]
    if not all(float(x).is_integer() and 1 <= x <= limits["max_scale"] for x in scales):
        add("resize-scale", src=tuple(src), dst=tuple(dst), limit=limits["max_scale"])


_FAMILY_CHECKS = {"conv2d": _conv2d, "dense": _dense, "matmul": _matmul, "pool2d": _pool2d,
                  "elementwise": _elementwise, "activation": _activation, "concat": _concat,
                  "resize": _resize}  # reshape: a contiguous view, no limits of its own


def macs(call) -> int:
    """Multiply-accumulates of one conv2d / matmul call (0 for other ops)."""
    row = optable.lookup(call.op.name)
    out = static_shape(call.ty) if isinstance(call.ty, relax.TensorType) else None
    if out is None or row is None:
        return 0
    if row.family == "conv2d":
        w = static_shape(call.args[1].ty)
        return int(np.prod(out)) * w[1] * w[2] * w[3]
    if row.family == "matmul":
        a = static_shape(call.args[0].ty)
        return int(np.prod(out)) * a[-1]
    return 0
