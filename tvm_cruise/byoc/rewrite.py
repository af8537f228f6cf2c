"""Rebuilding a Relax function binding by binding, keeping names and spans.

TVM's pattern rewriter re-normalizes what it builds, and its normalizer drops the span of
a call whose arguments it binds; the placement report depends on spans, so the graph
rewrites of tvm-cruise go through this small builder instead.
"""

from __future__ import annotations

from typing import Callable

import tvm
from tvm import relax


def substitute(expr, env: dict):
    """``expr`` with every variable in ``env`` replaced (ANF: arguments are leaves)."""
    if isinstance(expr, relax.Var):
        return env.get(expr, expr)
    if isinstance(expr, relax.Call):
        op = env.get(expr.op, expr.op) if isinstance(expr.op, relax.Var) else expr.op
        args = [substitute(a, env) for a in expr.args]
        if op.same_as(expr.op) and all(a.same_as(b) for a, b in zip(args, expr.args)):
            return expr
        return relax.Call(op, args, expr.attrs, expr.ty_args, span=expr.span)
    if isinstance(expr, relax.Tuple):
        fields = [substitute(f, env) for f in expr.fields]
        if all(a.same_as(b) for a, b in zip(fields, expr.fields)):
            return expr
        return relax.Tuple(fields, span=expr.span)
    if isinstance(expr, relax.TupleGetItem):
        inner = substitute(expr.tuple_value, env)
        return expr if inner.same_as(expr.tuple_value) else relax.TupleGetItem(inner, expr.index)
    return expr


Rewrite = Callable[[relax.BlockBuilder, relax.Var, relax.Expr, dict], "relax.Expr | None"]


def rebuild_function(func: relax.Function, rewrite: Rewrite,
                     params: list | None = None,
                     rename: Callable[[relax.Var, relax.Expr], "str | None"] | None = None,
                     added: dict | None = None) -> relax.Function:
    """Rebuild ``func``; ``rewrite(bb, var, value, bound)`` may return a replacement value.

    ``value`` has its arguments already substituted; ``bound`` maps every new variable to
    the value it was bound to (to look at producers). A returned expression is bound under
    the old variable's name (or ``rename(var, value)`` when that gives one); returning None
    keeps ``value``. ``params`` replaces the parameters (same count, e.g. retyped), the
    body then refers to the new ones. Functions a rewrite adds through ``bb`` (e.g.
    ``bb.call_te``) go into ``added`` ({GlobalVar: function}) when it is given.
    """
    bb = relax.BlockBuilder()
    params = list(func.params) if params is None else list(params)
    env: dict = dict(zip(func.params, params))
    bound: dict = {}

    def emit_block(block, dataflow: bool):
        for binding in block.bindings:
            value = substitute(binding.value, env)
            if isinstance(binding, relax.MatchCast):
                env[binding.var] = bb.match_cast(value, binding.ty, binding.var.name)
                continue
            replacement = rewrite(bb, binding.var, value, bound)
            if replacement is not None:
                value = replacement
            output = dataflow and not isinstance(binding.var, relax.DataflowVar)
            if isinstance(value, relax.Var) and not output:
                env[binding.var] = value  # an alias: the rewrite bound it already
                continue
            name = (rename(binding.var, value) if rename else None) or binding.var.name
            new_var = bb.emit_output(value, name) if output else bb.emit(value, name)
            env[binding.var] = new_var
            bound[new_var] = value

    attrs = {str(k): v for k, v in func.attrs.items()} if func.attrs is not None else {}
    symbol = attrs.get("global_symbol")
    with bb.function("__rebuild__", params=params, attrs=dict(attrs),
                     pure=func.is_pure):
        for block in func.body.blocks:
            if isinstance(block, relax.DataflowBlock):
                with bb.dataflow():
                    emit_block(block, True)
            else:
                emit_block(block, False)
        bb.emit_func_output(substitute(func.body.body, env))
    built = bb.get()
    new = built["__rebuild__"]
    if added is not None:
        added.update({gv: f for gv, f in built.functions.items()
                      if gv.name_hint != "__rebuild__"})
    if symbol is not None:
        return new.with_attr("global_symbol", symbol)
    return new.without_attr("global_symbol")


def rebuild_main(mod: tvm.IRModule, rewrite: Rewrite, rename=None) -> tvm.IRModule:
    mod = mod.clone() if hasattr(mod, "clone") else mod
    new_mod = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
    added: dict = {}
    new_mod["main"] = rebuild_function(mod["main"], rewrite, rename=rename, added=added)
    for gv, func in added.items():
        new_mod[gv] = func
    return new_mod
