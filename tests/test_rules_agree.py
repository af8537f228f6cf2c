"""The rules decide, the NPU compiler agrees: every configuration a spec's rules accept
lowers (no op goes back to the host with rule ``npu-compiler``), and its program, run in the
simulator, matches PyTorch's fp32 result of the same op within fp16 accuracy.

Hypothesis draws single-op (and op + epilogue) graphs over each family's attribute space:
conv2d (batch, groups, depthwise with and without a channel multiplier, kernel, stride,
dilation, asymmetric padding), pooling (ceil_mode, count_include_pad, padding, dilation,
global), element-wise broadcasts of every rank, matmul/dense of ranks 1-4, concat of any
rank, axis and arity, activations. Configurations the rules refuse must name a rule; the
ones they accept must compile and be right.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import relax

from tvm_cruise.driver import accelerator_stage
from tvm_cruise.pipeline import prepare_passes, run_passes
from tvm_cruise.targets import accelerators

from graphs import graph

SPECS = [accelerators()["cruise-npu"], accelerators()["cruise-npu-lite"]]
BOUND = 1e-2  # inputs are fp16-exact; what is left is fp16 output rounding
# CRUISE_PROPERTY_EXAMPLES=400 for a deeper search (scripts/test.sh -m slow runs it too)
EXAMPLES = int(os.environ.get("CRUISE_PROPERTY_EXAMPLES", "25"))
PROFILE = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 25,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(spec, mod, inputs, reference):
    """Partition + lower ``mod`` for ``spec``; accepted ops must lower and be right."""
    mod = run_passes(mod, prepare_passes())
    with spec_target(spec):
        _, stage = accelerator_stage(mod, spec)
    report = stage.placement
    refused = [o for o in report.ops if "npu-compiler" in o.rules]
    assert not refused, "the rules accepted what the NPU compiler cannot lower:\n" + \
        report.table()
    for o in report.host_ops:  # a refusal always names a rule and says why
        assert o.rules and o.reasons and all(o.reasons), report.table()
    if report.host_ops or len(stage.compiled) != 1:
        return False
    from tvm_cruise.npu import Simulator

    fn = stage.compiled[0]
    outs, _ = Simulator(spec).run(fn.program, [np.asarray(x, np.float16) for x in inputs])
    ref = reference()
    out = outs[0].astype(np.float32).reshape(ref.shape)
    scale = max(float(np.abs(ref).max()), 1e-3)
    err = float(np.abs(out - ref).max()) / scale
    assert err <= BOUND, f"NPU result off by {err:.3g} (relative) on {spec.name}\n" + \
        report.table()
    return True


def spec_target(spec):
    from tvm_cruise.targets import resolve_target

    return resolve_target(spec.name).tvm_target


def _rand(shape, seed):
    """fp16-representable values: the reference then sees exactly the NPU's inputs, and
    only the NPU's own rounding (products accumulate in fp32) separates the two."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return x.astype(np.float16).astype(np.float32)


# -- conv2d -----------------------------------------------------------------------------------
@st.composite
def conv_configs(draw):
    batch = draw(st.sampled_from([1, 1, 2]))
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise", "multiplier"]))
    groups = 1
    if kind == "dense":
        cin, cout = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    elif kind == "grouped":
        groups = draw(st.sampled_from([2, 3, 4]))
        cin, cout = groups * draw(st.integers(1, 6)), groups * draw(st.integers(1, 6))
    else:
        cin = groups = draw(st.integers(2, 24))
        cout = cin * (2 if kind == "multiplier" else 1)
    k = draw(st.sampled_from([1, 2, 3, 5, 7]))
    stride = draw(st.integers(1, 4))
    dilation = draw(st.sampled_from([1, 1, 2, 3]))
    span = (k - 1) * dilation + 1
    pads = tuple(draw(st.integers(0, min(3, span - 1))) for _ in range(4))
    h = draw(st.integers(max(1, span - pads[0] - pads[2]), 20))
    w = draw(st.integers(max(1, span - pads[1] - pads[3]), 20))
    epilogue = draw(st.sampled_from(["none", "bias", "bias_relu", "bias_relu6"]))
    return batch, cin, cout, groups, k, stride, dilation, pads, h, w, epilogue


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@PROFILE
@given(cfg=conv_configs(), seed=st.integers(0, 1000))
def test_conv2d_accepted_configurations_lower_and_match(spec, cfg, seed):
    batch, cin, cout, groups, k, stride, dilation, pads, h, w, epilogue = cfg
    x = _rand((batch, cin, h, w), seed)
    wt = _rand((cout, cin // groups, k, k), seed + 1)
    b = _rand((1, cout, 1, 1), seed + 2)

    def body(e, v):
        y = relax.op.nn.conv2d(v, relax.const(wt), strides=stride, padding=pads,
                               dilation=dilation, groups=groups)
        if epilogue != "none":
            y = relax.op.add(e(y), relax.const(b))
        if epilogue == "bias_relu":
            y = relax.op.nn.relu(e(y))
        if epilogue == "bias_relu6":
            y = relax.op.clip(e(y), 0, 6)
        return y

    def reference():
        xp = F.pad(torch.tensor(x), (pads[1], pads[3], pads[0], pads[2]))
        y = F.conv2d(xp, torch.tensor(wt), stride=stride, dilation=dilation, groups=groups)
        if epilogue != "none":
            y = y + torch.tensor(b)
        if epilogue == "bias_relu":
            y = torch.relu(y)
        if epilogue == "bias_relu6":
            y = torch.clamp(y, 0, 6)
        return y.numpy()

    _check(spec, graph([x.shape], body), [x], reference)


# -- pooling -----------------------------------------------------------------------------------
@st.composite
def pool_configs(draw):
    kind = draw(st.sampled_from(["max", "avg"]))
    k = draw(st.integers(1, 7))
    stride = draw(st.integers(1, 4))
    pad = draw(st.integers(0, k // 2))
    dilation = draw(st.sampled_from([1, 1, 1, 2]))
    ceil = draw(st.booleans())
    count_pad = draw(st.booleans())
    span = (k - 1) * dilation + 1
    h, w = draw(st.integers(max(1, span - 2 * pad), 18)), draw(st.integers(max(1, span - 2 * pad), 18))
    c, n = draw(st.integers(1, 20)), draw(st.sampled_from([1, 1, 2]))
    return kind, k, stride, pad, dilation, ceil, count_pad, (n, c, h, w)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@PROFILE
@given(cfg=pool_configs(), seed=st.integers(0, 1000))
def test_pooling_accepted_configurations_lower_and_match(spec, cfg, seed):
    kind, k, stride, pad, dilation, ceil, count_pad, shape = cfg
    x = _rand(shape, seed)

    def body(e, v):
        if kind == "max":
            return relax.op.nn.max_pool2d(v, k, stride, pad, dilation, ceil_mode=ceil)
        return relax.op.nn.avg_pool2d(v, k, stride, pad, dilation, ceil_mode=ceil,
                                      count_include_pad=count_pad)

    def reference():
        t = torch.tensor(x)
        if kind == "max":
            return F.max_pool2d(t, k, stride, pad, dilation, ceil_mode=ceil).numpy()
        assert dilation == 1  # torch's avg_pool2d has no dilation; the rules refuse it
        return F.avg_pool2d(t, k, stride, pad, ceil_mode=ceil,
                            count_include_pad=count_pad).numpy()

    if kind == "avg" and dilation > 1:
        mod = graph([shape], body)
        _check(spec, mod, [x], lambda: pytest.fail("a dilated average pool was offloaded"))
        return
    # Relax and torch must agree on the output shape for the comparison to mean anything
    _check(spec, graph([shape], body), [x], reference)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("form", ["mean", "adaptive"])
def test_global_average_pool(spec, form):
    x = _rand((2, 5, 7, 3), 0)
    op = (lambda e, v: relax.op.mean(v, [2, 3], keepdims=True)) if form == "mean" else \
        (lambda e, v: relax.op.nn.adaptive_avg_pool2d(v, (1, 1)))
    assert _check(spec, graph([x.shape], op), [x], lambda: x.mean((2, 3), keepdims=True))


# -- element-wise broadcasts ----------------------------------------------------------------------
@st.composite
def broadcast_pairs(draw):
    rank = draw(st.integers(1, 5))
    out = [draw(st.integers(1, 9)) for _ in range(rank)]
    shapes = []
    for _ in range(2):
        r = draw(st.integers(0, rank))
        shape = [d if draw(st.booleans()) else 1 for d in out[rank - r:]]
        shapes.append(tuple(shape))
    if tuple(shapes[0]) != tuple(out) and tuple(shapes[1]) != tuple(out):
        shapes[draw(st.integers(0, 1))] = tuple(out)  # at least one full (most models)
    const = draw(st.sampled_from([None, 0, 1]))
    op = draw(st.sampled_from(["add", "subtract", "multiply", "maximum", "minimum"]))
    return shapes, const, op


_BINARY = {"add": (relax.op.add, np.add), "subtract": (relax.op.subtract, np.subtract),
           "multiply": (relax.op.multiply, np.multiply),
           "maximum": (relax.op.maximum, np.maximum), "minimum": (relax.op.minimum, np.minimum)}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@PROFILE
@given(cfg=broadcast_pairs(), seed=st.integers(0, 1000))
def test_elementwise_broadcasts_lower_and_match(spec, cfg, seed):
    shapes, const, op = cfg
    a, b = _rand(shapes[0], seed), _rand(shapes[1], seed + 1)
    rop, nop = _BINARY[op]
    if const is None:
        mod = graph(shapes, lambda e, x, y: rop(x, y))
        inputs = [a, b]
    elif const == 0:
        mod = graph([shapes[1]], lambda e, y: rop(relax.const(a), y))
        inputs = [b]
    else:
        mod = graph([shapes[0]], lambda e, x: rop(x, relax.const(b)))
        inputs = [a]
    _check(spec, mod, inputs, lambda: nop(a, b))


# -- matrix products -------------------------------------------------------------------------
@st.composite
def matmul_configs(draw):
    m, k, n = (draw(st.integers(1, 40)) for _ in range(3))
    ra, rb = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = [draw(st.integers(1, 3)) for _ in range(2)]
    a = tuple(batch[len(batch) - (ra - 2):]) + (m, k) if ra >= 2 else (k,)
    b = tuple(d if draw(st.booleans()) else 1 for d in batch[len(batch) - (rb - 2):]) + (k, n) \
        if rb >= 2 else (k,)
    return a, b, draw(st.booleans())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@PROFILE
@given(cfg=matmul_configs(), seed=st.integers(0, 1000))
def test_matmul_and_dense_of_any_rank_lower_and_match(spec, cfg, seed):
    a_shape, b_shape, weight = cfg
    a, b = _rand(a_shape, seed), _rand(b_shape, seed + 1)
    if weight:
        mod = graph([a_shape], lambda e, x: relax.op.matmul(x, relax.const(b)))
        inputs = [a]
    else:
        mod = graph([a_shape, b_shape], lambda e, x, y: relax.op.matmul(x, y))
        inputs = [a, b]
    _check(spec, mod, inputs, lambda: np.matmul(a, b))


# -- concat --------------------------------------------------------------------------------------
@st.composite
def concat_configs(draw):
    rank = draw(st.integers(1, 4))
    base = [draw(st.integers(1, 6)) for _ in range(rank)]
    axis = draw(st.integers(-rank, rank - 1))
    shapes = []
    for _ in range(draw(st.integers(1, 5))):
        s = list(base)
        s[axis] = draw(st.integers(1, 5))
        shapes.append(tuple(s))
    return shapes, axis, draw(st.booleans())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@PROFILE
@given(cfg=concat_configs(), seed=st.integers(0, 1000))
def test_concat_of_any_rank_axis_and_arity(spec, cfg, seed):
    shapes, axis, with_const = cfg
    arrays = [_rand(s, seed + i) for i, s in enumerate(shapes)]
    n_in = len(shapes) - (1 if with_const and len(shapes) > 1 else 0)

    def body(e, *vs):
        parts = list(vs) + [relax.const(a) for a in arrays[n_in:]]
        return relax.op.concat(parts, axis=axis)

    _check(spec, graph(shapes[:n_in], body), arrays[:n_in],
           lambda: np.concatenate(arrays, axis=axis))


# -- activations ---------------------------------------------------------------------------------
_ACTS = {"relu": (lambda v: relax.op.nn.relu(v), torch.relu),
         "relu6": (lambda v: relax.op.clip(v, 0, 6), lambda t: torch.clamp(t, 0, 6)),
         "clip": (lambda v: relax.op.clip(v, -0.5, 1.5), lambda t: torch.clamp(t, -0.5, 1.5)),
         "sigmoid": (relax.op.sigmoid, torch.sigmoid), "tanh": (relax.op.tanh, torch.tanh),
         "silu": (relax.op.nn.silu, F.silu), "gelu": (relax.op.nn.gelu, F.gelu)}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("act", sorted(_ACTS))
@pytest.mark.parametrize("shape", [(3,), (2, 5, 7), (1, 3, 9, 9), (2, 2, 2, 2, 3)])
def test_activations(spec, act, shape):
    x = _rand(shape, 3) * 4
    rop, top = _ACTS[act]
    _check(spec, graph([shape], lambda e, v: rop(v)), [x],
           lambda: top(torch.tensor(x)).numpy())


# -- resize ------------------------------------------------------------------------------------
# Relax resize2d forms with a PyTorch twin: (method, coordinate mode, rounding) -> interpolate
_RESIZES = {
    ("nearest_neighbor", "asymmetric", "floor"): dict(mode="nearest"),
    ("nearest_neighbor", "half_pixel", "round_prefer_ceil"): dict(mode="nearest-exact"),
    ("linear", "half_pixel", ""): dict(mode="bilinear", align_corners=False),
    ("linear", "align_corners", ""): dict(mode="bilinear", align_corners=True),
}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@PROFILE
@given(form=st.sampled_from(sorted(_RESIZES)), scale=st.tuples(st.integers(1, 5),
                                                                st.integers(1, 5)),
       shape=st.tuples(st.integers(1, 2), st.integers(1, 6), st.integers(1, 9),
                       st.integers(1, 9)), seed=st.integers(0, 1000))
def test_resize_accepted_configurations_lower_and_match(spec, form, scale, shape, seed):
    method, coord, rounding = form
    x = _rand(shape, seed)
    size = (shape[2] * scale[0], shape[3] * scale[1])
    mod = graph([shape], lambda e, v: relax.op.image.resize2d(
        v, size, method=method, coordinate_transformation_mode=coord,
        rounding_method=rounding))
    _check(spec, mod, [x], lambda: F.interpolate(torch.tensor(x), size=size,
                                                 **_RESIZES[form]).numpy())
