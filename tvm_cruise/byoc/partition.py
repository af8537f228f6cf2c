"""Partitioning a Relax module between an accelerator and the host.

``partition(mod, spec, precision)``:

1. tag every operator with an id (its span keeps the user's name for it),
2. ``FuseOpsByPattern`` with the spec's patterns (from TVM's registry, ``<key>.*``),
   ``annotate_codegen=False``, then ``MergeCompositeFunctions`` so adjacent offloaded ops
   form one accelerator function (``Codegen`` = the spec's key),
3. the placement report, read off the result,

The NPU compiler (``npu.compiler.lower``) then turns each accelerator function into a
program for the accelerator's precision, with casts at the host/accelerator boundaries.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..errors import BuildError
from ..targets.spec import AcceleratorSpec
from .patterns import ACTIVE_PRECISION, REFUSED_OPS, composite_op_ids
from .patterns import register as register_patterns
from .precision import (HOST_PRECISION, Override, check_layer_precision, mark_composites,
                        pattern_name, resolve, restore_codegen, spread_to_layers)
from .report import HOST, OpPlacement, PlacementReport
from .rewrite import rebuild_main
from .ops import op_calls, op_id, op_source, tag_ops
from .rules import (DTYPE_BYTES, PRECISIONS, RULES, family_of, macs, static_shape,
                    violations)

# -- partition -------------------------------------------------------------------------------
def patterns_for(spec: AcceleratorSpec):
    from tvm.relax.backend.pattern_registry import get_patterns_with_prefix

    register_patterns(spec)
    table = list(get_patterns_with_prefix(spec.key + "."))
    if not table:  # TVM returns () for an unknown prefix; never partition with nothing
        raise BuildError(f"no patterns are registered for accelerator {spec.name!r} "
                         f"(prefix {spec.key}.); its spec lists ops {list(spec.ops)}")
    return table


def accelerator_functions(mod, spec: AcceleratorSpec) -> list:
    """GlobalVars of the functions offloaded to ``spec``, in order of first call in main."""
    order = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar):
            func = mod[expr.op]
            if func.attrs is not None and func.attrs.get("Codegen") == spec.key and \
                    expr.op not in order:
                order.append(expr.op)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return order


def partition(mod, spec: AcceleratorSpec, precision: str = "fp16", model: str = "model",
              refused: dict[int, str] | None = None,
              layer_precision: dict[str, str] | None = None):
    """Split ``mod`` for ``spec``: returns ``(partitioned_mod, PlacementReport)``.

    The partitioned module still computes in fp32; the NPU compiler converts it.
    ``refused`` maps op ids the NPU compiler could not lower to why: they stay on the host.
    ``layer_precision`` ({name: precision}, ``byoc.precision``) overrides the precision of
    the layers it names: fp32 ones stay on the host, others form accelerator functions of
    their own precision (attribute ``precision.PRECISION_ATTR``).
    """
    if precision not in PRECISIONS:
        raise BuildError(f"precision {precision!r} is not supported; use one of "
                         f"{', '.join(PRECISIONS)}")
    refused = dict(refused or {})
    tagged = tag_ops(mod)
    overrides: dict[int, Override] = {}
    layer_precision = check_layer_precision(layer_precision)
    if layer_precision:
        calls = op_calls(tagged["main"])
        named = {op_id(c): op_source(c) for c in calls}
        overrides = resolve([(i, s, n) for i, (s, n) in named.items()], layer_precision,
                            spec.name)
        # an override names a layer: learn the layers, then give each its override
        layers = _fuse(tagged, spec, precision, set(refused))
        overrides = spread_to_layers(layers, overrides,
                                     {i: s or n for i, (s, n) in named.items()})
    host = {i for i, o in overrides.items() if o.precision == HOST_PRECISION}
    fused = _fuse(tagged, spec, precision, set(refused) | host)
    fused = mark_composites(fused, overrides, precision)
    merged = restore_codegen(relax.transform.MergeCompositeFunctions()(fused), spec.key)
    report = placement_report(tagged, merged, spec, precision, model, refused, overrides)
    return merged, report


def _fuse(tagged, spec: AcceleratorSpec, precision: str, refused: set):
    token = ACTIVE_PRECISION.set(precision)
    token_refused = REFUSED_OPS.set(frozenset(refused))
    try:
        return relax.transform.FuseOpsByPattern(
            patterns_for(spec), bind_constants=True, annotate_codegen=False)(tagged)
    finally:
        ACTIVE_PRECISION.reset(token)
        REFUSED_OPS.reset(token_refused)


def placement_report(tagged, merged, spec: AcceleratorSpec, precision: str,
                     model: str, refused: dict[int, str] | None = None,
                     overrides: dict[int, Override] | None = None) -> PlacementReport:
    functions = accelerator_functions(merged, spec)
    where: dict[int, tuple[int, str]] = {}
    for index, gv in enumerate(functions):
        def visit(expr, index=index):
            if isinstance(expr, relax.Function):
                for idx in composite_op_ids(expr):
                    where[idx] = (index, pattern_name(str(expr.attrs["Composite"])))

        relax.analysis.post_order_visit(merged[gv].body, visit)

    ops = []
    for call in op_calls(tagged["main"]):
        idx = op_id(call)
        path, node = op_source(call)
        entry = OpPlacement(id=idx, source=path, node=node, op=call.op.name, device=HOST,
                            macs=macs(call))
        override = (overrides or {}).get(idx)
        if idx in where:
            entry.device = spec.name
            entry.function, entry.pattern = where[idx]
            if override is not None and override.precision != precision:
                entry.precision = override.precision
        elif override is not None and override.precision == HOST_PRECISION:
            entry.rules = ["precision-override"]
            entry.reasons = [RULES["precision-override"].message(spec, why=override.reason())]
        elif refused and idx in refused:
            entry.rules = ["npu-compiler"]
            entry.reasons = [RULES["npu-compiler"].message(
                spec, op=call.op.name.replace("relax.", ""), why=refused[idx])]
        else:
            broken = violations(spec, call, precision)
            if broken:
                entry.rules = [v.rule for v in broken]
                entry.reasons = [v.message for v in broken]
            else:
                entry.rules = ["no-pattern"]
                family = family_of(call)
                entry.reasons = [f"{spec.name}: no {spec.name} pattern covers this "
                                 f"{call.op.name.replace('relax.', '')}"
                                 + (f" ({family} runs only in the forms listed in "
                                    "docs/placement.md)" if family else "")]
        ops.append(entry)
    ops.sort(key=lambda o: o.id)
    return PlacementReport(model=model, accelerator=spec.name, precision=precision, ops=ops,
                           functions=len(functions),
                           boundary=_boundary(merged, functions, precision))


def _boundary(merged, functions, precision: str) -> dict:
    """Tensors crossing between host and accelerator, in the accelerator's dtype."""
    accel = set(functions)
    main = merged["main"]
    producers: dict = {}
    users: dict = {}
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            producers[binding.var] = value
            for arg in _var_args(value):
                users.setdefault(arg, []).append(value)
    returned = set(_var_args(main.body.body)) | {main.body.body} if isinstance(
        main.body.body, relax.Var) else set(_var_args(main.body.body))

    def is_accel(value) -> bool:
        return isinstance(value, relax.Call) and value.op in accel

    def nbytes(var) -> int:
        ty = var.ty
        leaves = ty.fields if isinstance(ty, relax.TupleType) else [ty]
        total = 0
        for leaf in leaves:
            shape = static_shape(leaf) if isinstance(leaf, relax.TensorType) else None
            if shape is not None:
                dtype = str(leaf.dtype)
                dtype = PRECISIONS[precision] if dtype == "float32" else dtype
                total += int(np.prod(shape)) * DTYPE_BYTES.get(dtype, 4)
        return total

    into = set()
    out = set()
    for var, value in producers.items():
        if is_accel(value):
            for arg in _var_args(value):
                if not is_accel(producers.get(arg)):
                    into.add(arg)
            if var in returned or any(not is_accel(u) for u in users.get(var, [])):
                out.add(var)
    for param in main.params:
        if any(is_accel(u) for u in users.get(param, [])):
            into.add(param)
    return {"tensors": len(into) + len(out), "to_accelerator": len(into), "to_host": len(out),
            "bytes": sum(nbytes(v) for v in into | out)}


def _var_args(expr) -> list:
    if isinstance(expr, relax.Call):
        return [a for a in expr.args if isinstance(a, relax.Var)]
    if isinstance(expr, relax.Tuple):
        return [f for f in expr.fields if isinstance(f, relax.Var)]
    if isinstance(expr, relax.TupleGetItem) and isinstance(expr.tuple_value, relax.Var):
        return [expr.tuple_value]
    if isinstance(expr, relax.Var):
        return [expr]
    return []


def _without(mod, gv):
    funcs = {g: f for g, f in mod.functions.items() if not g.same_as(gv)}
    return tvm.IRModule(funcs, attrs=mod.attrs)
