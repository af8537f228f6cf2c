"""TVM's torch and ONNX importers, extended to remember where each Relax op came from.

Every Relax call an importer emits gets a ``Span`` whose source name is
``"<module path>::<node>"``: the torch module path (from the exported program's
``nn_module_stack``) and FX node name, or ``"::<ONNX node name>"``. Relax passes keep
spans through folding and partitioning, so the placement report can name each operator the
way the user knows it.
"""

from __future__ import annotations

import re

import tvm
from tvm import relax

SEPARATOR = "::"


def source_span(path: str, node: str) -> tvm.ir.Span:
    return tvm.ir.Span(tvm.ir.SourceName(f"{path}{SEPARATOR}{node}"), 0, 0, 0, 0)


def span_source(expr) -> tuple[str, str] | None:
    """``(module path, node name)`` recorded on ``expr``, or None."""
    span = getattr(expr, "span", None)
    if span is None or span.source_name is None:
        return None
    text = str(span.source_name.name)
    if SEPARATOR not in text:
        return None
    path, node = text.split(SEPARATOR, 1)
    return path, node


def with_span(expr, span):
    """``expr`` with ``span`` on every call in it (nested ones too) that has none yet."""
    if isinstance(expr, relax.Tuple):
        fields = [with_span(f, span) for f in expr.fields]
        if all(a.same_as(b) for a, b in zip(fields, expr.fields)):
            return expr
        return relax.Tuple(fields, span=expr.span)
    if not isinstance(expr, relax.Call):
        return expr
    args = [with_span(a, span) for a in expr.args]
    changed = not all(a.same_as(b) for a, b in zip(args, expr.args))
    if expr.span is None or changed:
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args,
                          span=span if expr.span is None else expr.span)
    return expr


class _SpanningEmit:
    """Wraps a BlockBuilder's ``emit`` and ``normalize``: while a source is current, the
    calls they bind (nested ones included) get its span.

    Nested calls are bound one by one, innermost first, before TVM normalizes the outer
    call: TVM's normalizer rebuilds a call whose arguments it binds, and drops its span.
    """

    def __init__(self, builder):
        self.builder = builder
        self.original = builder.emit
        self.original_normalize = builder.normalize
        self.span = None
        builder.emit = self
        builder.normalize = self.normalize

    def _bind_nested(self, expr):
        if isinstance(expr, relax.Tuple):
            fields = [self._bind_arg(f) for f in expr.fields]
            return relax.Tuple(fields, span=expr.span)
        if not isinstance(expr, relax.Call):
            return expr
        args = [self._bind_arg(a) for a in expr.args]
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args,
                          span=expr.span if expr.span is not None else self.span)

    def _bind_arg(self, arg):
        if isinstance(arg, relax.Call):
            return self.original(self._bind_nested(arg), "")
        if isinstance(arg, relax.Tuple):
            return self._bind_nested(arg)
        return arg

    def __call__(self, expr, name_hint: str = ""):
        if self.span is not None:
            expr = self._bind_nested(expr)
        return self.original(expr, name_hint)

    def normalize(self, expr):
        if self.span is not None:
            expr = self._bind_nested(expr)
        return self.original_normalize(expr)

    def restore(self):
        self.builder.emit = self.original
        self.builder.normalize = self.original_normalize


# aten ops whose integer operands PyTorch computes in float32 with a float scalar (and, for
# true division, always); see SourceNamingImporter._promoting.
_FLOAT_PROMOTING = ("add", "add.Scalar", "add.Tensor", "sub", "sub.Scalar", "sub.Tensor",
                    "rsub.Scalar", "rsub.Tensor", "mul", "mul.Scalar", "mul.Tensor",
                    "div.Scalar", "div.Tensor", "div.Tensor_mode", "pow.Tensor_Scalar",
                    "fmod.Scalar", "remainder.Scalar")
# Unary aten ops with a float result for an integer input.
_FLOAT_RESULT = tuple(f"{op}.default" for op in (
    "reciprocal", "sqrt", "rsqrt", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "sigmoid", "erf"))


def _torch_importer_class():
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    class SourceNamingImporter(ExportedProgramImporter):
        def _div(self, node):
            """``aten.div`` with a Python scalar operand, typed as PyTorch types it.

            TVM makes the scalar a constant of its own dtype (int32 for ``2``), and Relax
            refuses ``floor_divide(float32, int32)``: edgenext and DETR positional
            encodings divide a float tensor by an int. PyTorch promotes the scalar to the
            tensor's dtype (an integer tensor divided by a float becomes float32).
            """
            args = self.retrieve_args(node)
            lhs, rhs = args[0], args[1]
            mode = args[2] if len(node.args) > 2 else node.kwargs.get("rounding_mode")
            tensor = lhs if isinstance(lhs, relax.Expr) else rhs
            if not (isinstance(tensor, relax.Expr) and isinstance(tensor.ty, relax.TensorType)
                    and (isinstance(lhs, (int, float)) or isinstance(rhs, (int, float)))):
                return super()._div(node)
            bb = self.block_builder
            dtype = str(tensor.ty.dtype)
            scalar = rhs if tensor is lhs else lhs
            if not dtype.startswith(("float", "bfloat")) and (
                    isinstance(scalar, float) or mode is None):
                tensor, dtype = bb.emit(relax.op.astype(tensor, "float32")), "float32"
            const = relax.const(scalar, dtype)
            a, b = (tensor, const) if scalar is rhs else (const, tensor)
            if mode == "floor":
                return bb.emit(relax.op.floor_divide(a, b))
            out = bb.emit(relax.op.divide(a, b))
            return bb.emit(relax.op.trunc(out)) if mode == "trunc" else out

        def _promoting(self, convert, key):
            """``convert`` with PyTorch's promotion to float for integer tensors.

            TVM types a Python scalar like the tensor it meets and divides integers as
            integers: ``int64_tensor * 0.5``, ``int64_tensor / 4`` and ``7 / int_tensor``
            come out int64 and truncated, where PyTorch computes them in float32 (its
            default dtype). Before the op, integer tensor operands are cast to float32 when
            no operand is a float tensor and a float scalar is involved, or the op is a
            true division or a unary function with a float result (``reciprocal``, ``exp``,
            ``sqrt``, ...).
            """
            from torch import fx

            true_division = key in ("div.Tensor", "div.Scalar") or key in _FLOAT_RESULT

            def run(node, *rest):
                operands = node.args[:1] if key in _FLOAT_RESULT else node.args[:2]
                mode = (node.args[2] if len(node.args) > 2 and key == "div.Tensor_mode"
                        else node.kwargs.get("rounding_mode"))
                tensors = [a for a in operands if isinstance(a, fx.Node)]
                values = [self.env.get(a) for a in tensors]
                types = [getattr(v, "ty", None) for v in values]
                if not tensors or not all(isinstance(t, relax.TensorType) for t in types):
                    return convert(node, *rest)
                dtypes = [str(t.dtype) for t in types]
                floats = [d.startswith(("float", "bfloat")) for d in dtypes]
                float_scalar = any(isinstance(a, float) for a in operands)
                divides = true_division or (key == "div.Tensor_mode" and mode is None)
                if any(floats) or not (float_scalar or divides):
                    return convert(node, *rest)
                saved = {a: self.env[a] for a in tensors}
                try:
                    for a, v in zip(tensors, values):
                        self.env[a] = self.block_builder.emit(relax.op.astype(v, "float32"))
                    return convert(node, *rest)
                finally:
                    self.env.update(saved)

            return run

        def _integer_clamp(self, convert, key):
            """``convert`` for ``clamp`` / ``clamp_min`` / ``clamp_max`` of an integer tensor
            with Python-number bounds.

            TVM clips with an infinite missing bound, which an integer ``clip`` cannot
            represent (TVM crashes converting infinity); a float bound makes PyTorch compute
            in float32. Emitted as ``maximum`` / ``minimum`` with constants of the result
            dtype instead.
            """
            from torch import fx

            def run(node, *rest):
                args = list(node.args)
                x = self.env.get(args[0]) if isinstance(args[0], fx.Node) else None
                ty = getattr(x, "ty", None)
                if not isinstance(ty, relax.TensorType) or str(ty.dtype).startswith(
                        ("float", "bfloat")) or str(ty.dtype) == "bool":
                    return convert(node, *rest)
                names = {"clamp.default": ("min", "max"), "clamp_min.default": ("min",),
                         "clamp_max.default": ("max",)}[key]
                bounds = {name: args[i + 1] if len(args) > i + 1 else node.kwargs.get(name)
                          for i, name in enumerate(names)}
                if not all(b is None or isinstance(b, (int, float)) for b in bounds.values()):
                    return convert(node, *rest)
                bb, dtype = self.block_builder, str(ty.dtype)
                if any(isinstance(b, float) for b in bounds.values()):
                    x, dtype = bb.emit(relax.op.astype(x, "float32")), "float32"
                if bounds.get("min") is not None:
                    x = bb.emit(relax.op.maximum(x, relax.const(bounds["min"], dtype)))
                if bounds.get("max") is not None:
                    x = bb.emit(relax.op.minimum(x, relax.const(bounds["max"], dtype)))
                return x

            return run

        def _reduce_dim(self, reduce, arg):
            """``max.dim`` / ``min.dim``: the values and indices as two reductions.

            TVM imports ``max.dim`` as ``topk(k=1)``, which lowers to a sort that no
            schedule vectorizes (9.7 ms for a PointPillars max over 16 points, against
            microseconds as a reduction) and has no ``min.dim``. The index is the first
            extreme element's, as in PyTorch; an unused index is removed as dead code.
            """

            def convert(node):
                x = self.env[node.args[0]]
                dim = node.args[1]
                keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
                bb = self.block_builder
                values = bb.emit(reduce(x, axis=[dim], keepdims=bool(keep)))
                indices = bb.emit(arg(x, axis=dim, keepdims=bool(keep)))
                if str(indices.ty.dtype) != "int64":
                    indices = bb.emit(relax.op.astype(indices, "int64"))
                return bb.emit(relax.Tuple([values, indices]))

            return convert

        def _reduce_amax(self, reduce):
            """``amax`` / ``amin`` (TVM's importer has neither)."""

            def convert(node):
                x = self.env[node.args[0]]
                dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", [])
                keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
                dims = [dims] if isinstance(dims, int) else list(dims)
                return self.block_builder.emit(reduce(x, axis=dims or None,
                                                      keepdims=bool(keep)))

            return convert

        def create_convert_map(self):
            from functools import partial

            from .relay_ops import registry

            table = super().create_convert_map()
            table["max.dim"] = self._reduce_dim(relax.op.max, relax.op.argmax)
            table["min.dim"] = self._reduce_dim(relax.op.min, relax.op.argmin)
            table["amax.default"] = self._reduce_amax(relax.op.max)
            table["amin.default"] = self._reduce_amax(relax.op.min)
            # tvm-cruise's custom ops (and torchvision's), ahead of TVM's own converters
            for key, convert in registry.torch_converters().items():
                table[key] = partial(convert, self)
            for key in ("clamp.default", "clamp_min.default", "clamp_max.default"):
                if key in table:
                    table[key] = self._integer_clamp(table[key], key)
            for key in _FLOAT_PROMOTING + _FLOAT_RESULT:
                if key in table:
                    table[key] = self._promoting(table[key], key)
            return table

        def _translate_fx_graph(self, graph_module, nodes, inputs_vars, custom_ops=None):
            emit = _SpanningEmit(self.block_builder)
            original = dict(self.convert_map)

            def wrap(func):
                def convert(node, *rest):
                    stack = node.meta.get("nn_module_stack") or {}
                    path = list(stack.values())[-1][0] if stack else ""
                    emit.span = source_span(path, node.name)
                    try:
                        return with_span(func(node, *rest), emit.span)
                    finally:
                        emit.span = None

                return convert

            self.convert_map = {k: wrap(f) for k, f in original.items()}
            try:
                return super()._translate_fx_graph(graph_module, nodes, inputs_vars, custom_ops)
            finally:
                self.convert_map = original
                emit.restore()

    return SourceNamingImporter


def from_exported_program(ep):
    """Like ``tvm.relax.frontend.torch.from_exported_program`` (bound weights, unwrapped
    single output), with source spans."""
    import warnings

    with warnings.catch_warnings():
        # torch 2.13's own deep copy of the module call graph trips typing_extensions'
        # LeafSpec deprecation: torch-internal, nothing a user can act on.
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec",
                                category=FutureWarning)
        ep = ep.run_decompositions()
    return _torch_importer_class()().from_exported_program(ep, False, True, False, None)


def _onnx_importer_class():
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    class SourceNamingImporter(ONNXGraphImporter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._emit = _SpanningEmit(self.bb)
            self.current_node: str | None = None  # kept after a failure: it names the node

        def _check_for_unsupported_ops(self, graph):
            """TVM's check, knowing tvm-cruise's custom ops (in their domains)."""
            from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

            from .relay_ops import registry

            known, forms = _get_convert_map(), registry.onnx_forms()
            missing = []
            for node in graph.node:
                form = forms.get(node.op_type)
                if form is not None and node.domain in form.domains:
                    continue
                if node.op_type in known or node.op_type in ("If", "Constant"):
                    continue
                where = f" (domain {node.domain})" if node.domain else ""
                if node.op_type + where not in missing:
                    missing.append(node.op_type + where)
            if missing:
                raise tvm.error.OpNotImplemented(
                    "The following operators are not supported for frontend ONNX: "
                    + ", ".join(missing))

        def _convert_operator(self, op_name, inputs, attrs, opset):
            from .relay_ops import registry

            name = (attrs.get("tvm_custom") or {}).get("name") or op_name
            self.current_node = str(name)
            self._emit.span = source_span("", str(name))
            try:
                form = registry.onnx_forms().get(op_name)
                if form is not None:
                    custom = {k: v for k, v in attrs.items() if k != "tvm_custom"}
                    sym = form.convert(self.bb, list(inputs), custom, opset)
                else:
                    sym = super()._convert_operator(op_name, inputs, attrs, opset)
                # Bind the node's result now: left unbound, it would be bound (and named)
                # while the next node converts, and normalizing can drop its span.
                return self.bb.emit(sym) if isinstance(sym, relax.Call) else sym
            finally:
                self._emit.span = None

    return SourceNamingImporter


_STATIC_FIX = ("fix every input dimension with input_shapes=... so shape computations fold to "
               "constants; a value that depends on the input data cannot be compiled")
# Known importer failures: (text in TVM's message, reason, fix). {outputs}: the outputs the
# model reads; {op}: the op type.
_ONNX_FAILURES = (
    ("Missing outputs during conversion",
     "TVM converts fewer outputs of {op} than the model reads ({outputs})",
     "export the model so that only the first output is used (e.g. MaxPool without "
     "return_indices)"),
    ("cannot handle ShapeExpr inputs",
     "it takes a shape computed at run time that did not fold to a constant",
     _STATIC_FIX),
)
# TVM's wording when an input it needs at import time is not a constant.
_NEEDS_CONSTANT = re.compile(r"constant|statically known|[Dd]ynamic")


def _onnx_failure(err: Exception, graph, node_name: str | None):
    """The :class:`ModelLoadError` (or :class:`UnsupportedOpError`) for an importer error."""
    from .errors import ModelLoadError, UnsupportedOpError
    from .onnx_prep.graph import used_names

    text = str(err).strip()
    if type(err).__name__ == "OpNotImplemented":
        ops = text.split(":", 1)[-1].strip().split(", ")
        listing = ", ".join(
            f"{op} (nodes {', '.join(repr(n.name) for n in graph.node if n.op_type == kind)})"
            for op, kind in ((op, op.split(" (domain")[0]) for op in ops))
        return UnsupportedOpError(
            f"the ONNX model uses operators TVM's ONNX importer cannot convert: {listing}. "
            "Fix: rewrite that part of the model with supported operators, or export it "
            "differently (e.g. decompose it in the model's forward)")
    named = re.search(r"Node (\S+) cannot handle", text)  # raised before it converts
    node_name = named.group(1) if named else node_name
    node = next((n for n in graph.node if n.name == node_name), None)
    first = text.splitlines()[0] if text else ""
    reason = f"TVM's importer failed: {type(err).__name__}: {first}"
    fix = ("check the node against the ONNX specification; if it is valid, export that part "
           "of the model differently (another opset, or simpler operators)")
    for needle, why, how in _ONNX_FAILURES:
        if needle in text:
            read = used_names(graph)
            outputs = [o for o in node.output if o in read] if node is not None else []
            reason = why.format(op=node.op_type if node is not None else "the node",
                                outputs=", ".join(outputs) or "?")
            fix = how
    if fix.startswith("check the node") and _NEEDS_CONSTANT.search(text):
        fix = _STATIC_FIX
    where = (f"ONNX node {node.name!r} ({node.op_type})" if node is not None
             else f"ONNX node {node_name!r}" if node_name else "the ONNX model")
    return ModelLoadError(f"{where}: {reason}. Fix: {fix}")


def dynamic_origin(mod) -> tuple[str, str] | None:
    """``(node name, type)`` of the first binding in ``main`` whose tensor shape is not
    static, as its span names it; None if there is none or it has no span."""
    func = mod["main"]
    for block in getattr(func.body, "blocks", []):
        for binding in block.bindings:
            ty = binding.var.ty
            if not isinstance(ty, relax.TensorType):
                continue
            if ty.shape is not None and all(hasattr(d, "value") for d in ty.shape.values):
                continue
            source = span_source(binding.value)
            if source is not None:
                return source[1], str(ty)
    return None


def from_onnx(model, shape_dict, dtype_dict):
    """Like ``tvm.relax.frontend.onnx.from_onnx``, with source spans.

    Raises :class:`ModelLoadError` naming the ONNX node TVM's importer failed on, the
    reason and a fix (:class:`UnsupportedOpError` for operators it does not know).
    """
    import contextlib
    import io
    import warnings

    opset = 1
    for ident in model.opset_import:
        if str(ident.domain) in ("ai.onnx", ""):
            opset = ident.version
            break
    importer = _onnx_importer_class()(shape_dict, dtype_dict)
    try:
        # TVM prints every failing node's inputs to stdout; the error below names the node.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # TVM renames inputs such as "input.1" and warns; the artifact keeps the
            # model's names (frontend._finish), so the warning would only mislead
            warnings.filterwarnings("ignore", message="Renaming name ")
            return importer.from_onnx(model.graph, opset)
    except Exception as err:  # noqa: BLE001 - every importer failure becomes our error
        raise _onnx_failure(err, model.graph, importer.current_node) from None
