"""The operator table is the single source: every row has its pattern, its rule family and
its NPU layer kind, every spec family has rows, and no other module names an operator."""

from __future__ import annotations

import inspect
import re

import pytest
from tvm import relax

from tvm_cruise.byoc import optable, patterns, rules
from tvm_cruise.byoc.partition import accelerator_functions, partition
from tvm_cruise.npu.compiler import codegen, graph as npu_graph
from tvm_cruise.pipeline import prepare_passes, run_passes
from tvm_cruise.targets import accelerators
from tvm_cruise.targets.spec import OP_SCHEMA

from graphs import conv, const, graph

X = (1, 8, 16, 16)
FULL = "cruise-npu"  # lists every family


def _unary(f):
    return graph([X], lambda e, x: f(x))


def _binary(f):
    return graph([X, X], lambda e, a, b: f(a, b))


# One single-op model per table row (keyed by operator and form); a row without one fails
# test_every_row_has_a_model.
MODELS = {
    ("relax.nn.conv2d", ""): lambda: _unary(lambda x: conv(x, 8, 16)),
    ("relax.nn.conv2d", "depthwise"): lambda: _unary(lambda x: conv(x, 8, 8, groups=8)),
    ("relax.matmul", "weight"): lambda: graph(
        [(1, 64)], lambda e, x: relax.op.matmul(x, const((64, 32)))),
    ("relax.matmul", ""): lambda: graph(
        [(1, 4, 16, 8), (1, 4, 8, 16)], lambda e, a, b: relax.op.matmul(a, b)),
    ("relax.nn.max_pool2d", ""): lambda: _unary(lambda x: relax.op.nn.max_pool2d(x, 2, 2)),
    ("relax.nn.avg_pool2d", ""): lambda: _unary(lambda x: relax.op.nn.avg_pool2d(x, 3, 1, 1)),
    ("relax.nn.adaptive_avg_pool2d", ""): lambda: _unary(
        lambda x: relax.op.nn.adaptive_avg_pool2d(x, (1, 1))),
    ("relax.mean", ""): lambda: _unary(lambda x: relax.op.mean(x, [2, 3], True)),
    ("relax.concat", ""): lambda: _binary(lambda a, b: relax.op.concat([a, b], axis=1)),
    ("relax.image.resize2d", ""): lambda: _unary(
        lambda x: relax.op.image.resize2d(x, (32, 32), method="nearest_neighbor")),
    ("relax.add", ""): lambda: _binary(relax.op.add),
    ("relax.subtract", ""): lambda: _binary(relax.op.subtract),
    ("relax.multiply", ""): lambda: _binary(relax.op.multiply),
    ("relax.maximum", ""): lambda: _binary(relax.op.maximum),
    ("relax.minimum", ""): lambda: _binary(relax.op.minimum),
    ("relax.nn.relu", ""): lambda: _unary(relax.op.nn.relu),
    ("relax.clip", ""): lambda: _unary(lambda x: relax.op.clip(x, 0, 6)),
    ("relax.sigmoid", ""): lambda: _unary(relax.op.sigmoid),
    ("relax.tanh", ""): lambda: _unary(relax.op.tanh),
    ("relax.nn.silu", ""): lambda: _unary(relax.op.nn.silu),
    ("relax.nn.gelu", ""): lambda: _unary(relax.op.nn.gelu),
    ("relax.nn.gelu_tanh", ""): lambda: _unary(relax.op.nn.gelu_tanh),
    ("relax.reshape", ""): lambda: _unary(lambda x: relax.op.reshape(x, (1, 8, 256))),
    ("relax.flatten", ""): lambda: _unary(relax.op.flatten),
    ("relax.squeeze", ""): lambda: _unary(lambda x: relax.op.squeeze(x, [0])),
    ("relax.expand_dims", ""): lambda: _unary(lambda x: relax.op.expand_dims(x, 0)),
}
OFFLOADABLE = [row for row in optable.OPS if row.offloadable]


def test_every_row_has_a_model():
    assert set(MODELS) == {(row.op, row.form) for row in OFFLOADABLE}


@pytest.mark.parametrize("row", OFFLOADABLE, ids=lambda r: r.op + (f"-{r.form}" if r.form else ""))
def test_row_offloads_with_its_pattern_family_and_layer_kind(row):
    spec = accelerators()[FULL]
    mod = run_passes(MODELS[(row.op, row.form)](), prepare_passes())
    (call,) = [b.value for b in mod["main"].body.blocks[0].bindings
               if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == row.op]
    assert rules.op_row(call) == row
    assert rules.family_of(call) == row.family
    merged, report = partition(mod, spec, "fp16", "test")
    assert report.host_ops == [], report.table()
    assert [o.pattern for o in report.ops if o.op == row.op] == [f"{spec.key}.{row.pattern}"]
    (gv,) = accelerator_functions(merged, spec)
    layers = npu_graph.from_relax(merged[gv], gv.name_hint).layers
    assert [layer.kind for layer in layers] == [row.kind]


@pytest.mark.parametrize("acc", sorted(accelerators()))
def test_patterns_are_the_listed_rows_patterns(acc):
    """A row's pattern exists exactly where the spec lists its family (and, for element-wise
    ops and activations, names it); every pattern grows from one of them."""
    spec = accelerators()[acc]
    names = [p.name for p in patterns.build_patterns(spec)]
    bases = {f"{spec.key}.{r.pattern}" for r in optable.OPS
             if r.family in spec.ops and optable.listed(spec, r)}
    assert bases <= set(names)
    for name in names:
        assert any(name == b or name.startswith(b + "_") for b in bases), name


def test_every_spec_family_and_listed_name_is_in_the_table():
    assert {row.family for row in optable.OPS} == set(OP_SCHEMA)
    for family, key in optable.SELECTED_BY.items():
        rows = [r for r in optable.OPS if r.family == family]
        assert {n for r in rows if r.offloadable for n in r.listed_as} == \
            set(OP_SCHEMA[family][key]), family
        # the others are named only so the rules refuse them in their family's words
        assert not {r.name for r in rows if not r.offloadable} & set(OP_SCHEMA[family][key])


def test_one_vocabulary_for_kinds_patterns_and_families():
    assert optable.KINDS == ("conv2d", "depthwise_conv2d", "dense", "matmul", "pool2d",
                             "concat", "resize", "elementwise", "activation", "reshape")
    for row in optable.OPS:
        # a kind is its family's name but for a form's own kind
        assert row.kind == row.family or row.form, row
    assert set(codegen.EMITTERS) == set(optable.KINDS) - {"reshape"}
    assert all(hasattr(codegen.Emitter, m) for m in codegen.EMITTERS.values())
    assert all(hasattr(npu_graph._Reader, "_" + kind) for kind in optable.KINDS)
    assert set(npu_graph.TUNABLE) <= set(optable.KINDS)


@pytest.mark.parametrize("module", [rules, patterns, npu_graph], ids=lambda m: m.__name__)
def test_no_operator_is_named_outside_the_table(module):
    assert not re.findall(r"[\"']relax\.[a-z]", inspect.getsource(module))
