"""The registry behind tvm-cruise's custom operators.

One custom operator is:

- a **Relax op** ``relax.cruise.<name>`` (:func:`define_op`): its output type and its
  legalization to TIR (``bb.call_te``; the kernel carries the op's name in
  :data:`KERNEL_ATTR` so the host build can find its schedule);
- a **CPU schedule** for that kernel (:func:`kernel_schedule`), applied by
  ``schedules.cpu.apply_default_schedules`` where no tuning record covers the kernel;
- **converters** from the torch importer (:func:`torch_converter`, keyed like TVM's table:
  ``"<op>.<overload>"``) and the ONNX importer (:func:`onnx_converter`, by op type and
  domain). A converter may also map a third-party op onto one of TVM's own Relax ops
  (torchvision's ``nms`` and ``roi_align``).

Op modules register themselves when :mod:`tvm_cruise.relay_ops` is imported. Registering a
name twice raises (a second definition would silently replace the first); re-importing a
module is harmless because TVM's op registry survives and is checked first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import tvm
from tvm import relax

from ..errors import CustomOpError

OP_PREFIX = "relax.cruise."
# PrimFunc attribute naming the custom op a kernel was legalized from.
KERNEL_ATTR = "tvm_cruise.custom_op"
# PrimFunc attribute of kernels with tvm-cruise's own schedule (schedules.cpu.ATTR); a
# kernel an op writes already scheduled sets it itself.
SCHEDULED_ATTR = "tvm_cruise.default_schedule"
# TVM's op-pattern kind for kernels FuseOps must not merge with their neighbours: the
# custom schedule is written for the op's own loop nest.
_OPAQUE = 8


@dataclass(frozen=True)
class CustomOp:
    """A custom Relax operator (see the module docstring)."""

    name: str
    summary: str
    infer_type: Callable[[relax.Call], Any]
    legalize: Callable[[relax.BlockBuilder, relax.Call], relax.Expr]

    @property
    def relax_name(self) -> str:
        return OP_PREFIX + self.name


@dataclass(frozen=True)
class OnnxForm:
    """An ONNX node type a converter handles: ``domains`` lists the accepted domains
    (``""`` is the standard ``ai.onnx``)."""

    op_type: str
    domains: tuple[str, ...]
    convert: Callable[..., relax.Expr]


_OPS: dict[str, CustomOp] = {}
_SCHEDULES: dict[str, Callable] = {}
_TORCH: dict[str, Callable] = {}
_ONNX: dict[str, OnnxForm] = {}


def _unique(table: Mapping, key: str, what: str) -> None:
    if key in table:
        raise CustomOpError(f"{what} {key!r} is registered twice; custom-op names must be unique "
                         f"(registered: {', '.join(sorted(table))})")


def define_op(name: str, summary: str, infer_type, legalize) -> CustomOp:
    """Define the Relax op ``relax.cruise.<name>``.

    ``infer_type(call)`` returns the output's Relax type (``relax.TensorType``) from the
    call's argument types and attributes (:func:`attrs_of`); it should raise ``ValueError``
    naming the operand and the expected shape on bad input. ``legalize(bb, call)`` returns
    the TIR form, usually ``bb.call_te(..., primfunc_attrs=kernel_attrs(name))``.
    """
    _unique(_OPS, name, "custom op")
    op = CustomOp(name, summary, infer_type, legalize)
    try:
        tvm.ir.Op.get(op.relax_name)
        fresh = False
    except Exception:  # noqa: BLE001 - TVM raises a plain error for an unknown op
        fresh = True
    if fresh:
        tvm.get_global_func("ir.RegisterOp")(op.relax_name, summary)
    # Attributes are (re)set every time: a re-import must not keep stale Python callbacks.
    if not fresh:
        for key in ("FInferType", "FPurity", "FLegalize"):
            tvm.get_global_func("ir.OpResetAttr")(tvm.ir.Op.get(op.relax_name), key)
    tvm.ir.register_op_attr(op.relax_name, "FInferType", lambda call, _bb: infer_type(call),
                            level=20)
    tvm.ir.register_op_attr(op.relax_name, "FPurity", True, level=20)
    tvm.ir.register_op_attr(op.relax_name, "FLegalize", legalize, level=20)
    _OPS[name] = op
    return op


def kernel_schedule(name: str):
    """Decorator: ``fn(func: PrimFunc, target) -> PrimFunc | None`` schedules the kernels
    legalized from ``relax.cruise.<name>`` on CPU targets. It must not change results
    (reduction order included: tests compare with the unscheduled kernel)."""

    def register(fn):
        _unique(_SCHEDULES, name, "kernel schedule")
        _SCHEDULES[name] = fn
        return fn

    return register


def torch_converter(*keys: str):
    """Decorator: ``fn(importer, node) -> relax.Expr`` converts FX nodes whose target is
    one of ``keys`` (``"deform_conv2d.default"``: the op's name and overload, as TVM's
    torch importer keys its table). ``importer.retrieve_args(node)`` gives the operands,
    ``importer.block_builder`` the builder."""

    def register(fn):
        for key in keys:
            _unique(_TORCH, key, "torch converter")
            _TORCH[key] = fn
        return fn

    return register


def onnx_converter(op_type: str, domains: tuple[str, ...] = ("",)):
    """Decorator: ``fn(bb, inputs, attrs, opset) -> relax.Expr`` converts ONNX nodes of
    ``op_type`` in one of ``domains``. ``inputs`` are Relax expressions (initializers are
    constants, a missing optional input is None); ``attrs`` the node's attributes."""

    def register(fn):
        _unique(_ONNX, op_type, "ONNX converter")
        _ONNX[op_type] = OnnxForm(op_type, tuple(domains), fn)
        return fn

    return register


def ops() -> dict[str, CustomOp]:
    return dict(_OPS)


def get(name: str) -> CustomOp:
    if name not in _OPS:
        raise KeyError(f"no custom op {name!r}; defined: {', '.join(sorted(_OPS))}")
    return _OPS[name]


def torch_converters() -> dict[str, Callable]:
    return dict(_TORCH)


def onnx_forms() -> dict[str, OnnxForm]:
    return dict(_ONNX)


def schedule_for(func) -> Callable | None:
    """The registered CPU schedule of a kernel legalized from a custom op, or None."""
    name = func.attrs.get(KERNEL_ATTR) if func.attrs is not None else None
    return _SCHEDULES.get(str(name)) if name is not None else None


def is_custom(call) -> bool:
    return isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and \
        str(call.op.name).startswith(OP_PREFIX)


def call(name: str, args, **attrs) -> relax.Call:
    """A call of ``relax.cruise.<name>`` with ``attrs`` (ints, floats, strings, lists)."""
    get(name)
    return relax.Call(tvm.ir.Op.get(OP_PREFIX + name), list(args),
                      tvm.ir.make_node("ir.DictAttrs", **attrs) if attrs else None)


def attrs_of(call) -> dict:
    """A custom call's attributes as plain Python values."""
    out = {}
    if call.attrs is None:
        return out
    for key in call.attrs.keys():
        out[str(key)] = _plain(call.attrs[key])
    return out


def _plain(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tvm.tirx.IntImm):
        return int(value.value)
    if isinstance(value, tvm.tirx.FloatImm):
        return float(value.value)
    if hasattr(value, "__len__") and not isinstance(value, str):
        return [_plain(v) for v in value]
    return str(value)


def kernel_attrs(name: str) -> dict:
    """``primfunc_attrs`` for ``bb.call_te`` in a legalization: the kernel keeps its op's
    name (for its schedule) and is not fused with its neighbours."""
    return {KERNEL_ATTR: name, "op_pattern": _OPAQUE}


def tensor_type(expr, what: str, op: str, rank: int | None = None,
                dtypes: tuple[str, ...] | None = None):
    """``(shape as ints, dtype)`` of a static-shaped tensor operand, or ValueError naming
    the op, the operand and what it must be."""
    ty = expr.ty if hasattr(expr, "ty") else None
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise CustomOpError(f"{op}: {what} must be a tensor of known shape, got {ty}")
    dims = ty.shape.values
    if not all(hasattr(d, "value") for d in dims):
        raise CustomOpError(f"{op}: {what} has a symbolic shape {list(dims)}; tvm-cruise's "
                         "custom ops need static shapes (fix the input shapes at import)")
    shape = tuple(int(d.value) for d in dims)
    dtype = str(ty.dtype)
    if rank is not None and len(shape) != rank:
        raise CustomOpError(f"{op}: {what} must have rank {rank}, got shape {shape}")
    if dtypes is not None and dtype not in dtypes:
        raise CustomOpError(f"{op}: {what} must be {'/'.join(dtypes)}, got {dtype}")
    return shape, dtype


def torch_custom_op(name: str, reference, fake, schema: str | None = None):
    """``torch.ops.cruise.<name>``: defined once per process from ``reference`` (a plain
    torch function with type hints, the op's CPU kernel in eager mode) and ``fake`` (its
    shape function, for ``torch.export``). A second call returns the existing op.

    ``schema`` (e.g. ``"(Tensor x, int n) -> Tensor"``) is needed where torch cannot infer
    one from the hints.
    """
    import torch

    qualname = f"cruise::{name}"
    if not torch._C._jit_get_schemas_for_operator(qualname):
        op = torch.library.custom_op(qualname, reference, mutates_args=(), schema=schema)
        op.register_fake(fake)
        _TORCH_OPS[name] = op
    return getattr(torch.ops.cruise, name)


# torch keeps custom-op definitions in a WeakValueDictionary: a definition nobody holds is
# collected and its library deregistered, so the op would vanish.
_TORCH_OPS: dict[str, Any] = {}


# -- export to ONNX (torch's dynamo exporter) -------------------------------------------------
_ONNX_EXPORT: dict[str, tuple[Callable, Callable | None]] = {}
_SCHEMAS_DONE: set[str] = set()


def onnx_export(torch_name: str, schema: Callable | None = None):
    """Decorator: ``fn(*args)`` (an onnxscript function emitting the op's ONNX node) is how
    ``torch.onnx.export(..., dynamo=True)`` writes ``torch.ops.cruise.<torch_name>``.
    ``schema()`` returns the ``onnx.defs.OpSchema`` of a custom-domain node, registered
    with ONNX once before the first export (onnxscript needs it to build the node)."""

    def register(fn):
        _unique(_ONNX_EXPORT, torch_name, "ONNX export")
        _ONNX_EXPORT[torch_name] = (fn, schema)
        return fn

    return register


def onnx_translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``: every
    custom op with an ONNX form."""
    import onnx
    import torch

    table = {}
    for name, (fn, schema) in _ONNX_EXPORT.items():
        if schema is not None and name not in _SCHEMAS_DONE:
            made = schema()
            try:
                onnx.defs.get_schema(made.name, made.since_version, made.domain)
            except onnx.defs.SchemaError:
                onnx.defs.register_schema(made)
            _SCHEMAS_DONE.add(name)
        table[getattr(torch.ops.cruise, name).default] = fn
    return table
