"""Operator identity: every Relax operator call of ``main`` gets an id kept in its span
(``#<id>@<module path>::<node>``), which partitioning, the placement report, calibration,
the report's kernel timing and the patterns' precision marks read back.

Below ``partition`` and ``patterns`` (both use it; neither imports the other for it).
"""

from __future__ import annotations

import re

import tvm
from tvm import relax

from .._importers import SEPARATOR
from .rewrite import rebuild_main

_TAG = re.compile(r"^#(\d+)@")


def _tagged_span(idx: int, old) -> tvm.ir.Span:
    text = str(old.source_name.name) if old is not None and old.source_name is not None else ""
    text = _TAG.sub("", text)
    return tvm.ir.Span(tvm.ir.SourceName(f"#{idx}@{text}"), 0, 0, 0, 0)


def op_id(expr) -> int | None:
    span = getattr(expr, "span", None)
    if span is None or span.source_name is None:
        return None
    match = _TAG.match(str(span.source_name.name))
    return int(match.group(1)) if match else None


def op_source(expr) -> tuple[str, str]:
    span = getattr(expr, "span", None)
    text = _TAG.sub("", str(span.source_name.name)) if span is not None and \
        span.source_name is not None else ""
    if SEPARATOR in text:
        path, node = text.split(SEPARATOR, 1)
        return path, node
    return "", text


def tag_ops(mod):
    """Give every operator call in ``main`` a unique id (kept in its span)."""
    counter = iter(range(1 << 30))

    def rewrite(bb, var, value, bound):
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            return relax.Call(value.op, value.args, value.attrs, value.ty_args,
                              span=_tagged_span(next(counter), value.span))
        return None

    return rebuild_main(mod, rewrite)


def op_calls(func) -> list:
    calls = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            calls.append(expr)

    relax.analysis.post_order_visit(func.body, visit)
    return calls
