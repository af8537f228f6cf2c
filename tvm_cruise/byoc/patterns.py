"""Pattern tables generated from an accelerator spec and the operator table.

Each op family the spec lists yields the fused patterns an NPU executes as one unit, over
the operators ``optable.OPS`` gives it, in that table's order:

- ``conv2d[_bias][_add][_act]`` and ``depthwise_conv2d[...]`` (BN is folded into the conv
  and its bias first, ``fold.py``; ``add`` is a residual add of another tensor)
- ``dense[_bias][_act]`` (matmul with a constant weight) and ``matmul`` (two activations)
- pool2d: ``max_pool2d``, ``avg_pool2d``, ``global_avg_pool2d`` (mean over H and W,
  adaptive to 1x1); ``concat``, ``resize2d``, ``elementwise``, ``activation``; reshape:
  ``reshape``, ``flatten``, ``squeeze``, ``expand_dims``

Element-wise ops and activations (also those inside a pattern) are only those the spec
lists. Every pattern's check runs the
rules of ``rules.py`` on each op it would fuse, so a pattern never offloads what a rule
forbids. Composite names are ``<key>.<pattern>`` (``cruise_npu.conv2d_bias_act``).
Patterns are listed highest priority first (longest fusion first), which is the order
``FuseOpsByPattern`` wants.
"""

from __future__ import annotations

import contextvars
import itertools

from tvm.relax.backend.utils import has_leaking_intermediate_variables
from tvm.relax.dpl import is_const, is_op, wildcard
from tvm.relax.transform import FusionPattern

from ..targets.spec import AcceleratorSpec
from . import optable
from .rules import (broadcast_kind, conv2d_fits, is_constant, op_row, static_shape,
                    violations)

# The precision policy of the partition in progress (patterns registered with TVM are
# global; their checks read the policy from here, fp16 when used outside tvm-cruise).
ACTIVE_PRECISION: contextvars.ContextVar[str] = contextvars.ContextVar(
    "tvm_cruise_precision", default="fp16")
# Op ids (partition.tag_ops) the NPU compiler could not lower in an earlier attempt: no
# pattern may take them again (they run on the host; the report says why).
REFUSED_OPS: contextvars.ContextVar[frozenset] = contextvars.ContextVar(
    "tvm_cruise_refused_ops", default=frozenset())


def _any_of(spec: AcceleratorSpec, rows, first=None):
    """Any of ``rows``' operators the spec selects (``optable.listed``), each with ``first``
    (a wildcard when None) then wildcards for its other operands; None when none is."""
    pattern = None
    for row in rows:
        if not optable.listed(spec, row):
            continue
        operands = [wildcard() if first is None else first] + \
            [wildcard() for _ in range(row.arity - 1)]
        alt = is_op(row.op)(*operands)
        pattern = alt if pattern is None else pattern | alt
    return pattern


def _act_pattern(spec: AcceleratorSpec, inner):
    return _any_of(spec, [r for r in optable.OPS if r.family == "activation"], inner)


def _ok(spec: AcceleratorSpec, *calls) -> bool:
    from .ops import op_id

    precision = ACTIVE_PRECISION.get()
    refused = REFUSED_OPS.get()
    if refused and any(op_id(c) in refused for c in calls):
        return False
    return all(not violations(spec, c, precision) for c in calls)


def _is_channel_bias(out_call, const_expr) -> bool:
    """A constant added per output channel (NCHW) or per feature (last axis) is a bias."""
    out, b = static_shape(out_call.ty), static_shape(const_expr.ty)
    if out is None or b is None:
        return False
    if len(out) == 4:
        return broadcast_kind(out, b) == "channel" and b != out
    padded = (1,) * (len(out) - len(b)) + tuple(b)
    return all(d == 1 for d in padded[:-1]) and padded[-1] == out[-1]


def _other(ctx, add_call, prev):
    """The operand of ``add_call`` that is not ``prev``'s result (args are bound vars)."""
    lhs, rhs = add_call.args[0], add_call.args[1]
    bound = ctx.matched_bindings
    is_prev = (lambda a: a.same_as(prev) or (a in bound and bound[a].same_as(prev)))
    return rhs if is_prev(lhs) else lhs


OP_IDS_ATTR = "tvm_cruise.op_ids"


def composite_op_ids(func) -> tuple[int, ...]:
    """The op ids (``partition.tag_ops``) a composite function fuses; () when it has none."""
    if func.attrs is None or OP_IDS_ATTR not in func.attrs:
        return ()
    return tuple(int(i) for i in str(func.attrs[OP_IDS_ATTR]).split(",") if i)


def _op_ids_attr(annotated) -> dict:
    """Group attribute listing the ids of the fused ops (see partition.tag_ops).

    It tells the report which ops each composite holds, and it makes every composite
    function unique: TVM would otherwise reuse one function for structurally equal
    groups (two residual adds, say) and the second group's ops would lose their names.
    """
    from .ops import op_id

    ids = sorted({op_id(e) for e in annotated.values() if op_id(e) is not None})
    return {OP_IDS_ATTR: ",".join(map(str, ids))}


def _pattern(name, pattern, annotations, check) -> FusionPattern:
    return FusionPattern(name, pattern, annotations, check, _op_ids_attr)


def _epilogue_chain(spec: AcceleratorSpec, root, bias: bool, residual: bool, with_act: bool):
    """``root`` then the optional bias add, residual add and activation the MAC array's
    epilogue fuses: ``(pattern, annotations, name suffix)``, or None where the spec has no
    activation pattern to end it with."""
    out, ann = root, {"root": root}
    if bias:
        out = ann["bias"] = is_op(optable.EPILOGUE_ADD)(out, is_const())
    if residual:
        out = ann["residual"] = is_op(optable.EPILOGUE_ADD)(out, wildcard())
    if with_act:
        out = _act_pattern(spec, out)
        if out is None:
            return None
        ann["act"] = out
    suffix = "".join(s for s, on in (("_bias", bias), ("_add", residual), ("_act", with_act))
                     if on)
    return out, ann, suffix


def _conv_family(spec: AcceleratorSpec, row: optable.OpRow):
    act = "activation" in spec.ops
    combos = [c for c in itertools.product((True, False), repeat=3) if act or not c[2]]
    combos.sort(key=lambda c: -sum(c))
    for bias, residual, with_act in combos:
        chain = _epilogue_chain(spec, is_op(row.op)(wildcard(), is_const()),
                                bias, residual, with_act)
        if chain is None:
            continue
        out, ann, suffix = chain
        yield _pattern(f"{spec.key}.{row.pattern}{suffix}", out, ann,
                       _conv_check(spec, row, bias, residual, with_act))


def _conv_check(spec, row, bias, residual, with_act):
    def check(ctx) -> bool:
        ann = ctx.annotated_expr
        conv = ann["root"]
        if op_row(conv).pattern != row.pattern:
            return False  # the other conv pattern's op (plain or depthwise)
        if has_leaking_intermediate_variables(ctx):
            # An intermediate (conv+bias feeding a residual add) used elsewhere too: fusing
            # would make the composite return it and close a cycle through its other user.
            return False
        calls, prev = [conv], conv
        if bias:
            b = ann["bias"]
            if not _is_channel_bias(prev, _other(ctx, b, prev)):
                return False
            calls.append(b)
            prev = b
        if residual:
            r = ann["residual"]
            other = _other(ctx, r, prev)
            if is_constant(other) or static_shape(other.ty) != static_shape(prev.ty):
                return False  # not a residual: a constant or a broadcast
            calls.append(r)
            prev = r
        if with_act:
            calls.append(ann["act"])
        # the fused epilogue's buffers must fit too, else a shorter pattern takes the conv
        return _ok(spec, *calls) and conv2d_fits(spec, conv, ACTIVE_PRECISION.get(), bias,
                                                 residual)

    return check


def _dense_family(spec: AcceleratorSpec, row: optable.OpRow):
    act = "activation" in spec.ops
    for bias, with_act in sorted(itertools.product((True, False), repeat=2),
                                 key=lambda c: -sum(c)):
        if with_act and not act:
            continue
        chain = _epilogue_chain(spec, is_op(row.op)(wildcard(), is_const()), bias,
                                False, with_act)
        if chain is None:
            continue
        out, ann, suffix = chain

        def check(ctx, bias=bias, with_act=with_act) -> bool:
            ann = ctx.annotated_expr
            if has_leaking_intermediate_variables(ctx):
                return False  # see _conv_check
            calls = [ann["root"]]
            if bias:
                if not _is_channel_bias(ann["root"], _other(ctx, ann["bias"], ann["root"])):
                    return False
                calls.append(ann["bias"])
            if with_act:
                calls.append(ann["act"])
            return _ok(spec, *calls)

        yield _pattern(f"{spec.key}.{row.pattern}{suffix}", out, ann, check)


def _single(spec: AcceleratorSpec, row: optable.OpRow):
    """One pattern matching any operator of ``row``'s pattern alone (none when the spec
    selects none of them)."""
    pattern = _any_of(spec, [r for r in optable.OPS if r.pattern == row.pattern])
    if pattern is None:
        return

    def check(ctx) -> bool:
        call = ctx.annotated_expr["root"]
        # a form of the operator that is another pattern's (a matmul by a constant weight
        # is a dense layer) is left to it
        return op_row(call).pattern == row.pattern and _ok(spec, call)

    yield _pattern(f"{spec.key}.{row.pattern}", pattern, {"root": pattern}, check)


# Families whose pattern fuses an epilogue (bias, residual add, activation) into its root.
_FUSED = {"conv2d": _conv_family, "depthwise_conv2d": _conv_family, "dense": _dense_family}


def build_patterns(spec: AcceleratorSpec) -> list[FusionPattern]:
    """The pattern table for ``spec``, highest priority first: every pattern of the
    operator table whose family the spec lists, in the table's order."""
    table: list[FusionPattern] = []
    done: set[str] = set()
    for row in optable.OPS:
        if row.family not in spec.ops or row.pattern in done:
            continue
        done.add(row.pattern)
        table += list(_FUSED.get(row.kind, _single)(spec, row))
    return table


_REGISTERED: set[str] = set()


def register(spec: AcceleratorSpec) -> list[str]:
    """Register ``spec``'s table with TVM's pattern registry under ``<key>.`` (once).

    TVM's registry gives later entries priority, so the table goes in reversed.
    """
    from tvm.relax.backend import pattern_registry

    table = build_patterns(spec)
    if spec.key not in _REGISTERED:
        pattern_registry.register_patterns(list(reversed(table)))
        # TVM removes the patterns it knows by name at exit; patterns left in its static
        # registry hold Python checks and crash the interpreter's shutdown.
        pattern_registry._REGISTERED_PATTERN_NAMES.update(p.name for p in table)
        _REGISTERED.add(spec.key)
    return [p.name for p in table]
