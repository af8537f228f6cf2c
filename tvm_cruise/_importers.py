"""TVM's torch and ONNX importers, extended to remember where each Relax op came from.

Every Relax call an importer emits gets a ``Span`` whose source name is
``"<module path>::<node>"``: the torch module path (from the exported program's
``nn_module_stack``) and FX node name, or ``"::<ONNX node name>"``. Relax passes keep
spans through folding and partitioning, so the placement report can name each operator the
way the user knows it.
"""

from __future__ import annotations

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


def _torch_importer_class():
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    class SourceNamingImporter(ExportedProgramImporter):
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

        def _convert_operator(self, op_name, inputs, attrs, opset):
            name = (attrs.get("tvm_custom") or {}).get("name") or op_name
            self._emit.span = source_span("", str(name))
            try:
                sym = super()._convert_operator(op_name, inputs, attrs, opset)
                # Bind the node's result now: left unbound, it would be bound (and named)
                # while the next node converts, and normalizing can drop its span.
                return self.bb.emit(sym) if isinstance(sym, relax.Call) else sym
            finally:
                self._emit.span = None

    return SourceNamingImporter


def from_onnx(model, shape_dict, dtype_dict):
    """Like ``tvm.relax.frontend.onnx.from_onnx``, with source spans."""
    opset = 1
    for ident in model.opset_import:
        if str(ident.domain) in ("ai.onnx", ""):
            opset = ident.version
            break
    importer = _onnx_importer_class()(shape_dict, dtype_dict)
    return importer.from_onnx(model.graph, opset)
