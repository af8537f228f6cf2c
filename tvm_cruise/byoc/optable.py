"""The operator table: every Relax operator an accelerator can run, said once.

One row per operator (two for an operator whose forms differ, see ``FORMS``): its spec op
family (``targets/spec.py`` ``OP_SCHEMA``, whose limits the rules apply), the name spec
lists and rule messages use, the operands its pattern matches, its pattern and its NPU
layer kind. The rules (``rules.family_of`` and the per-family checks), the pattern tables
(``patterns.build_patterns``) and the NPU graph reader (``npu/compiler/graph.py``) all read
it; none of them names a Relax operator of its own.

One vocabulary: a layer kind is the name of the pattern family that produces it and, but
for ``depthwise_conv2d`` (a form of ``conv2d``), of the spec family whose limits apply::

    conv2d  depthwise_conv2d  dense  matmul  pool2d  elementwise  activation
    concat  resize  reshape

Rows are in pattern priority order: ``build_patterns`` emits each row's pattern where it
first appears (conv2d, then depthwise, dense, matmul, pooling, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..targets.spec import OP_SCHEMA

# Forms of one operator that are another layer kind (and pattern). Each reader tests a form
# on the call its own way: the rules by the spec's terms (``rules.op_row``), the graph
# reader by what the NPU computes (a depthwise conv with a channel multiplier lowers as a
# grouped conv; a constant weight of rank > 2 as a matmul with a constant operand).
FORMS = {
    "depthwise": "a conv2d with one filter group per input channel",
    "weight": "a matmul whose second operand is a constant (a dense layer's weight)",
}
# Families whose pattern matches only the operators the spec's list names (``listed_as``);
# an operator it does not name has no pattern and the rules give the reason. Other
# families' patterns match every operator and their checks refuse what the spec excludes.
SELECTED_BY = {"elementwise": "ops", "activation": "functions"}


@dataclass(frozen=True)
class OpRow:
    """One Relax operator (in one form) as every part of tvm-cruise knows it."""

    op: str             # Relax operator
    family: str         # spec op family whose limits apply (an OP_SCHEMA key)
    kind: str           # NPU layer kind = the pattern family that produces it
    name: str           # what spec lists and rule messages call it (add, relu, max_pool2d)
    arity: int          # operands its pattern matches (a concat's tuple is one)
    pattern: str        # its pattern; conv2d / depthwise_conv2d / dense grow fused suffixes
    form: str = ""      # a FORMS key: this row holds for that form only ('' = any form)
    listed_as: tuple[str, ...] = ()  # SELECTED_BY families: spec names that select it
    pool: str = ""      # pool2d: "max" or "avg"
    global_by: str = ""  # pool2d over all of H and W: "axes" (a mean over 2, 3) or
    #                      "output" (an adaptive pool to 1x1); '' = a pooling window

    @property
    def offloadable(self) -> bool:
        """Whether a spec can list it: a SELECTED_BY family's operator no spec list may
        name (divide, power) is in the table so the rules refuse it in its family's words,
        but no NPU instruction computes it."""
        key = SELECTED_BY.get(self.family)
        return key is None or bool(set(self.listed_as) & set(OP_SCHEMA[self.family][key]))


def _pool(op, name, pattern, pool, global_by=""):
    return OpRow(op, "pool2d", "pool2d", name, 1, pattern, pool=pool, global_by=global_by)


def _elementwise(op, name):
    return OpRow(op, "elementwise", "elementwise", name, 2, "elementwise", listed_as=(name,))


def _activation(op, name, arity=1, listed_as=None):
    return OpRow(op, "activation", "activation", name, arity, "activation",
                 listed_as=listed_as or (name,))


def _reshape(op, name, arity=1):
    return OpRow(op, "reshape", "reshape", name, arity, name)


OPS: tuple[OpRow, ...] = (
    OpRow("relax.nn.conv2d", "conv2d", "conv2d", "conv2d", 2, "conv2d"),
    OpRow("relax.nn.conv2d", "conv2d", "depthwise_conv2d", "conv2d", 2, "depthwise_conv2d",
          form="depthwise"),
    OpRow("relax.matmul", "dense", "dense", "dense", 2, "dense", form="weight"),
    OpRow("relax.matmul", "matmul", "matmul", "matmul", 2, "matmul"),
    _pool("relax.nn.max_pool2d", "max_pool2d", "max_pool2d", "max"),
    _pool("relax.nn.avg_pool2d", "avg_pool2d", "avg_pool2d", "avg"),
    _pool("relax.nn.adaptive_avg_pool2d", "adaptive_avg_pool2d", "global_avg_pool2d", "avg",
          "output"),
    _pool("relax.mean", "mean", "global_avg_pool2d", "avg", "axes"),
    OpRow("relax.concat", "concat", "concat", "concat", 1, "concat"),
    OpRow("relax.image.resize2d", "resize", "resize", "resize2d", 2, "resize2d"),  # x, size
    _elementwise("relax.add", "add"),
    _elementwise("relax.subtract", "subtract"),
    _elementwise("relax.multiply", "multiply"),
    _elementwise("relax.maximum", "maximum"),
    _elementwise("relax.minimum", "minimum"),
    _elementwise("relax.divide", "divide"),
    _elementwise("relax.power", "power"),
    _activation("relax.nn.relu", "relu"),
    # x, lo, hi; clip(0, 6) is relu6, so a spec listing either runs it
    _activation("relax.clip", "clip", arity=3, listed_as=("clip", "relu6")),
    _activation("relax.sigmoid", "sigmoid"),
    _activation("relax.tanh", "tanh"),
    _activation("relax.nn.silu", "silu"),
    _activation("relax.nn.gelu", "gelu"),
    _activation("relax.nn.gelu_tanh", "gelu"),
    _reshape("relax.reshape", "reshape", arity=2),  # x, shape
    _reshape("relax.flatten", "flatten"),
    _reshape("relax.squeeze", "squeeze"),
    _reshape("relax.expand_dims", "expand_dims"),
)

KINDS: tuple[str, ...] = tuple(dict.fromkeys(row.kind for row in OPS))
_BY_OP: dict[str, tuple[OpRow, ...]] = {}
for _row in OPS:
    _BY_OP[_row.op] = _BY_OP.get(_row.op, ()) + (_row,)


def rows_of(op: str) -> tuple[OpRow, ...]:
    """The rows of Relax operator ``op`` (its forms first); () when no accelerator runs it."""
    return tuple(sorted(_BY_OP.get(op, ()), key=lambda r: not r.form))


def lookup(op: str, holds=lambda form: False) -> OpRow | None:
    """The row of ``op`` in the first form ``holds(form)`` accepts, else its plain row.

    >>> lookup("relax.matmul", lambda form: form == "weight").family
    'dense'
    """
    for row in rows_of(op):
        if not row.form or holds(row.form):
            return row
    return None


def op_of(family: str, name: str) -> str:
    """The Relax operator a family calls ``name`` (``op_of("elementwise", "add")``)."""
    for row in OPS:
        if row.family == family and row.name == name:
            return row.op
    raise KeyError(f"the operator table has no {family} operator named {name!r}")


def listed(spec, row: OpRow) -> bool:
    """Whether ``spec``'s list selects ``row`` into its family's pattern (SELECTED_BY)."""
    key = SELECTED_BY.get(row.family)
    if key is None:
        return True
    names = spec.ops[row.family][key] if row.family in spec.ops else ()
    return bool(set(row.listed_as) & set(names))


# The bias and residual adds a MAC layer's epilogue fuses.
EPILOGUE_ADD = op_of("elementwise", "add")
