"""relax.cruise.multi_scale_deformable_attention: reference, builds, schedule, errors.

The PyTorch reference (mmcv's per-level ``grid_sample`` formulation) is checked against an
independent explicit-gather implementation in numpy (float64, no ``grid_sample``); every
build is checked against both.
"""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
import onnx
import pytest
import torch
import tvm
from conftest import FP32_BOUND, rel_err
from onnx import TensorProto, helper, numpy_helper
from tvm import relax, te

import tvm_cruise
from tvm_cruise import cuda
from tvm_cruise.errors import ModelLoadError
from tvm_cruise.relay_ops import msda
from tvm_cruise.relay_ops import registry as R
from tvm_cruise.schedules import cpu

NPU_BOUND = 2e-2


def gather_msda(value, shapes, locs, weights):
    """Explicit bilinear gather (float64): the independent second implementation."""
    value, locs, weights = (np.asarray(a, np.float64) for a in (value, locs, weights))
    n_, _, m_, d_ = value.shape
    _, nq, _, nl, npt, _ = locs.shape
    out = np.zeros((n_, nq, m_, d_))
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        for n in range(n_):
            for m in range(m_):
                for p in range(npt):
                    x = locs[n, :, m, lvl, p, 0] * w - 0.5
                    y = locs[n, :, m, lvl, p, 1] * h - 0.5
                    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
                    for dx in (0, 1):
                        for dy in (0, 1):
                            xi, yi = x0 + dx, y0 + dy
                            wx = (x - x0) if dx else (1 - (x - x0))
                            wy = (y - y0) if dy else (1 - (y - y0))
                            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                            pos = start + np.where(ok, yi * w + xi, 0)
                            corner = value[n, pos, m, :] * ok[:, None]
                            out[n, :, m, :] += (wx * wy * weights[n, :, m, lvl, p])[:, None] \
                                * corner
        start += h * w
    return out.reshape(n_, nq, m_ * d_)


def _starts(shapes):
    return np.concatenate([[0], np.cumsum([h * w for h, w in shapes])[:-1]]).astype(np.int64)


def case(shapes, n=1, nq=9, m=2, d=4, p=2, seed=0):
    """Inputs with locations spread over [-0.3, 1.3], plus exact borders and pixel centres."""
    rng = np.random.default_rng(seed)
    nl = len(shapes)
    s = sum(h * w for h, w in shapes)
    value = rng.standard_normal((n, s, m, d)).astype(np.float32)
    locs = rng.uniform(-0.3, 1.3, (n, nq, m, nl, p, 2)).astype(np.float32)
    edges = np.array([0.0, 1.0, 0.5, 1e-7, 1 - 1e-7, -0.1, 1.1], np.float32)
    flat = locs.reshape(-1)
    k = min(len(edges), flat.size // 3)
    flat[: 3 * k: 3] = edges[:k]
    for lvl, (h, w) in enumerate(shapes):  # exactly on pixel centres and -1 / W borders
        locs[0, 0, 0, lvl, 0] = [0.5 / w, 0.5 / h]
        locs[0, -1, -1, lvl, -1] = [-0.5 / w, (h + 0.5) / h]
    weights = rng.random((n, nq, m, nl, p)).astype(np.float32)
    return value, locs, weights


def _torch_ref(shapes, value, locs, weights):
    return msda.reference(torch.from_numpy(value), torch.tensor(shapes, dtype=torch.int64),
                          torch.from_numpy(_starts(shapes)), torch.from_numpy(locs),
                          torch.from_numpy(weights)).numpy()


# levels of different sizes (L = 1..4), P = 1..4, M = 1..3 heads, batch 1..2
CONFIGS = [
    pytest.param([(5, 7)], 1, 1, 1, id="L1-P1-M1"),
    pytest.param([(6, 4), (3, 2)], 2, 2, 2, id="L2-P2-M2-N2"),
    pytest.param([(8, 11), (4, 6), (2, 3)], 3, 3, 1, id="L3-P3-M3"),
    pytest.param([(8, 8), (4, 4), (2, 2), (1, 1)], 4, 2, 1, id="L4-P4-1x1-level"),
]


@pytest.mark.parametrize("shapes,p,m,n", CONFIGS)
def test_reference_matches_explicit_gather(shapes, p, m, n):
    value, locs, weights = case(shapes, n=n, m=m, p=p, d=5)
    ref = _torch_ref(shapes, value, locs, weights)
    assert ref.shape == (n, 9, m * 5)
    assert rel_err(ref, gather_msda(value, shapes, locs, weights)) <= FP32_BOUND


def test_outside_locations_give_zero():
    shapes = [(3, 4)]
    value, locs, weights = case(shapes)
    locs[...] = np.float32(-0.5)  # x = -0.5 * W - 0.5 < -1: every corner outside
    assert np.all(_torch_ref(shapes, value, locs, weights) == 0)
    assert np.all(gather_msda(value, shapes, locs, weights) == 0)


def _build_torch(shapes, inputs, target="llvm"):
    model = msda.core(shapes).eval()
    args = tuple(torch.from_numpy(a) for a in inputs)
    return tvm_cruise.build(model, target=target, example_inputs=args)


@pytest.mark.parametrize("shapes,p,m,n", CONFIGS[1:])
def test_llvm_from_torch(shapes, p, m, n):
    """spatial_shapes / level_start_index are registered buffers: constants once bound."""
    inputs = case(shapes, n=n, m=m, p=p, d=8, seed=1)
    out = _build_torch(shapes, inputs).run(*inputs)
    assert rel_err(out, gather_msda(*inputs[:1], shapes, *inputs[1:])) <= FP32_BOUND
    assert rel_err(out, _torch_ref(shapes, *inputs)) <= FP32_BOUND


def test_llvm_from_torch_constants_made_in_forward():
    """``torch.tensor(...)`` in forward: export lifts it to a constant, bound like a buffer."""
    shapes = [(4, 5), (2, 3)]

    class Inline(torch.nn.Module):
        def forward(self, value, locs, weights):
            return msda.multi_scale_deformable_attention(
                value, torch.tensor(shapes), torch.tensor([0, 20]), locs, weights)

    inputs = case(shapes, d=8)
    art = tvm_cruise.build(Inline(), target="llvm",
                           example_inputs=tuple(torch.from_numpy(a) for a in inputs))
    assert rel_err(art.run(*inputs), gather_msda(inputs[0], shapes, *inputs[1:])) <= FP32_BOUND


def test_inf_in_value_does_not_leak_from_outside_corners():
    shapes = [(3, 4), (2, 2)]
    value, locs, weights = case(shapes, d=8)
    value[0, 0] = np.inf  # position 0 is where an outside corner's index is clamped
    locs[..., 0, :, :] = np.float32(-0.9)  # level 0 entirely outside
    out = _build_torch(shapes, (value, locs, weights)).run(value, locs, weights)
    ref = _torch_ref(shapes, value, locs, weights)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(ref))
    assert rel_err(out, ref) <= FP32_BOUND


def test_torch_op_and_wrapper():
    shapes = [(4, 5), (2, 3)]
    value, locs, weights = case(shapes)
    args = (torch.from_numpy(value), torch.tensor(shapes), torch.from_numpy(_starts(shapes)),
            torch.from_numpy(locs), torch.from_numpy(weights))
    direct = torch.ops.cruise.multi_scale_deformable_attention(*args)
    assert torch.equal(direct, msda.multi_scale_deformable_attention(*args))
    assert torch.equal(direct, msda.reference(*args))
    ep = torch.export.export(msda.core(shapes), (args[0], args[3], args[4]))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets == ["cruise.multi_scale_deformable_attention.default"]


# ------------------------------------------------------------------ schedule


def _kernel_func(shapes, n=1, nq=9, m=2, d=8, p=2):
    s = sum(h * w for h, w in shapes)
    v = te.placeholder((n, s, m, d), name="value")
    loc = te.placeholder((n, nq, m, len(shapes), p, 2), name="loc")
    aw = te.placeholder((n, nq, m, len(shapes), p), name="aw")
    out = msda.kernel(v, loc, aw, shapes, _starts(shapes).tolist())
    func = te.create_prim_func([v, loc, aw, out])
    for key, val in R.kernel_attrs(msda.NAME).items():
        func = func.with_attr(key, val)
    return func


def _run_kernel(func, inputs, target):
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      target=target)
    lib = lib.jit() if hasattr(lib, "jit") else lib
    dev = tvm.cpu()
    n, nq, _, nl, _, _ = inputs[1].shape
    out = np.zeros((n, nq, inputs[0].shape[2] * inputs[0].shape[3]), np.float32)
    args = [tvm.runtime.tensor(a, dev) for a in (*inputs, out)]
    return lib, args


def test_custom_schedule_is_applied_and_keeps_results():
    shapes = [(6, 4), (3, 2)]
    func = _kernel_func(shapes)
    target = tvm.target.Target("llvm")
    assert R.schedule_for(func) is msda.schedule
    mod, count = cpu.apply_default_schedules(tvm.IRModule({"cruise_msda": func}), target)
    assert count == 1
    text = mod["cruise_msda"].script()
    assert "T.parallel" in text and "T.vectorized" in text and '"local"' in text
    inputs = case(shapes, d=8)
    results = []
    for f in (func, mod["cruise_msda"]):
        lib, args = _run_kernel(f, inputs, target)
        lib["main"](*args)
        results.append(args[-1].numpy())
    np.testing.assert_array_equal(results[0], results[1])
    assert rel_err(results[1], gather_msda(inputs[0], shapes, *inputs[1:])) <= FP32_BOUND


def test_build_uses_the_custom_schedule(monkeypatch):
    """apply_default_schedules swallows schedule errors: check ours ran and returned."""
    calls = []

    def spy(func, target):
        calls.append(msda.schedule(func, target))
        return calls[-1]

    monkeypatch.setitem(R._SCHEDULES, msda.NAME, spy)
    shapes = [(4, 5)]
    inputs = case(shapes, d=8)
    art = _build_torch(shapes, inputs)
    assert len(calls) == 1 and calls[0] is not None
    assert rel_err(art.run(*inputs), _torch_ref(shapes, *inputs)) <= FP32_BOUND


@pytest.mark.slow
def test_custom_schedule_is_faster_than_the_generic_one():
    """BEVFormer-sized kernel: custom vs the generic default schedule vs none."""
    shapes = [(32, 88), (16, 44), (8, 22), (4, 11)]
    func = _kernel_func(shapes, nq=2500, m=8, d=32, p=4)
    target = tvm.target.Target("llvm")
    inputs = case(shapes, nq=2500, m=8, d=32, p=4)
    times = {}
    for name, f in (("custom", msda.schedule(func, target)),
                    ("generic", cpu.schedule_kernel(func, target)), ("none", func)):
        lib, args = _run_kernel(f, inputs, target)
        timer = lib.time_evaluator("main", tvm.cpu(), number=3, repeat=5)
        times[name] = float(np.median(timer(*args).results))
    assert times["custom"] * 1.5 < min(times["generic"], times["none"]), times


# ------------------------------------------------------------------ ONNX


def _onnx_model(shapes, inputs, op=msda.ONNX_OP, domain=msda.ONNX_DOMAIN, **attrs):
    value, locs, weights = inputs
    node = helper.make_node(op, ["value", "spatial_shapes", "level_start_index", "locs",
                                 "weights"], ["out"], name="msda_0", domain=domain, **attrs)
    n, nq = locs.shape[:2]
    graph = helper.make_graph(
        [node], "msda",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, a.shape)
         for k, a in (("value", value), ("locs", locs), ("weights", weights))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                       [n, nq, value.shape[2] * value.shape[3]])],
        [numpy_helper.from_array(np.array(shapes, np.int64), "spatial_shapes"),
         numpy_helper.from_array(_starts(shapes), "level_start_index")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(domain, 1)])


@pytest.mark.parametrize("op,domain,attrs", [
    pytest.param(msda.ONNX_OP, msda.ONNX_DOMAIN, {}, id="com.cruise"),
    pytest.param(msda.MMDEPLOY_OP, msda.MMDEPLOY_DOMAIN, {"im2col_step": 64}, id="mmdeploy"),
])
def test_llvm_from_onnx(op, domain, attrs):
    shapes = [(6, 4), (3, 2), (2, 1)]
    inputs = case(shapes, m=2, d=8, p=3, seed=2)
    art = tvm_cruise.build(_onnx_model(shapes, inputs, op, domain, **attrs), target="llvm")
    out = art.run(*inputs)
    assert rel_err(out, gather_msda(inputs[0], shapes, *inputs[1:])) <= FP32_BOUND


def test_legacy_onnx_export_of_the_torch_op():
    shapes = [(4, 5), (2, 3)]
    inputs = case(shapes, d=8)
    msda.register_onnx_symbolic()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter warns
        torch.onnx.export(msda.core(shapes).eval(), tuple(torch.from_numpy(a) for a in inputs),
                          buf, dynamo=False, opset_version=17,
                          input_names=["value", "locs", "weights"], output_names=["out"])
    model = onnx.load_from_string(buf.getvalue())
    (node,) = model.graph.node
    assert (node.op_type, node.domain) == (msda.ONNX_OP, msda.ONNX_DOMAIN)
    assert {i.name for i in model.graph.initializer} == {"spatial_shapes", "level_start_index"}
    out = tvm_cruise.build(model, target="llvm").run(*inputs)
    assert rel_err(out, _torch_ref(shapes, *inputs)) <= FP32_BOUND


def test_dynamo_onnx_export_of_the_torch_op():
    from tvm_cruise.relay_ops.registry import onnx_translation_table

    shapes = [(4, 5), (2, 3)]
    inputs = case(shapes, d=8)
    program = torch.onnx.export(msda.core(shapes).eval(),
                                tuple(torch.from_numpy(a) for a in inputs), dynamo=True,
                                opset_version=18, verbose=False,
                                custom_translation_table=onnx_translation_table())
    model = program.model_proto
    onnx.checker.check_model(model)  # the com.cruise schema is registered with ONNX
    assert [(n.domain, n.op_type) for n in model.graph.node] == [(msda.ONNX_DOMAIN,
                                                                  msda.ONNX_OP)]
    out = tvm_cruise.build(model, target="llvm").run(*inputs)
    assert rel_err(out, _torch_ref(shapes, *inputs)) <= FP32_BOUND


# ------------------------------------------------------------------ accelerators


class ProjectedMSDA(torch.nn.Module):
    """A value projection (offloadable) before the op (on the host)."""

    def __init__(self, shapes, m, d):
        super().__init__()
        self.proj = torch.nn.Linear(m * d, m * d)
        self.core = msda.core(shapes)
        self.m, self.d = m, d

    def forward(self, x, locs, weights):
        value = self.proj(x).view(x.shape[0], x.shape[1], self.m, self.d)
        return self.core(value, locs, weights)


def test_cruise_npu_places_op_on_host():
    shapes = [(6, 4), (3, 2)]
    value, locs, weights = case(shapes, m=2, d=8)
    torch.manual_seed(0)
    model = ProjectedMSDA(shapes, 2, 8).eval()
    x = value.reshape(1, -1, 16)
    args = tuple(torch.from_numpy(a) for a in (x, locs, weights))
    with torch.no_grad():
        ref = model(*args).numpy()
    art = tvm_cruise.build(model, target="cruise-npu", example_inputs=args)
    assert rel_err(art.run(x, locs, weights), ref) <= NPU_BOUND
    ops = art.metadata["placement"]["ops"]
    (ours,) = [o for o in ops if o["op"] == "relax.cruise.multi_scale_deformable_attention"]
    assert ours["device"] == "host" and ours["rules"] == ["custom-op"]
    assert "no accelerator instruction set implements it" in ours["reasons"][0]
    assert any(o["op"] == "relax.matmul" and o["device"] == "cruise-npu" for o in ops)


@pytest.mark.cuda
@pytest.mark.skipif(cuda.find_nvcc() is None, reason="nvcc not installed")
def test_cuda_compiles():
    shapes = [(6, 4), (3, 2)]
    inputs = case(shapes, m=2, d=8)
    art = tvm_cruise.build(msda.core(shapes).eval(), target="cuda", check_cuda=False,
                           example_inputs=tuple(torch.from_numpy(a) for a in inputs))
    result = cuda.compile_check(art, arch="sm_87")
    assert result["cubin_bytes"] > 0
    assert "cruise_msda" in cuda.cuda_source(art)


# ------------------------------------------------------------------ errors


def _call(value_shape, ss, lsi, loc_shape, w_shape, dtype="float32", constant=True):
    def var(name, shape, dt=dtype):
        return relax.Var(name, relax.TensorType(shape, dt))

    ss_expr = relax.const(np.array(ss, np.int64)) if constant else var("ss", [len(ss), 2],
                                                                         "int64")
    call = msda.make_call(var("value", value_shape), ss_expr,
                          relax.const(np.array(lsi, np.int64)), var("loc", loc_shape),
                          var("w", w_shape))
    return relax.BlockBuilder().normalize(call), call


def test_type_inference():
    out, _ = _call([2, 26, 3, 8], [[4, 5], [2, 3]], [0, 20], [2, 7, 3, 2, 4, 2], [2, 7, 3, 2, 4])
    assert [int(d) for d in out.ty.shape.values] == [2, 7, 24]


@pytest.mark.parametrize("args,message", [
    pytest.param(([1, 26, 2, 8], [[4, 5], [2, 3]], [0, 21], [1, 7, 2, 2, 3, 2],
                  [1, 7, 2, 2, 3]), "level_start_index [0, 21] disagrees with spatial_shapes",
                 id="bad-starts"),
    pytest.param(([1, 27, 2, 8], [[4, 5], [2, 3]], [0, 20], [1, 7, 2, 2, 3, 2],
                  [1, 7, 2, 2, 3]), "value has S = 27 positions but spatial_shapes",
                 id="bad-S"),
    pytest.param(([1, 26, 2, 8], [[4, 5], [2, 3]], [0, 20], [1, 7, 2, 3, 3, 2],
                  [1, 7, 2, 3, 3]), "sampling_locations must have shape (N, Lq, M, L, P, 2)",
                 id="levels-mismatch"),
    pytest.param(([1, 26, 2, 8], [[4, 5], [2, 3]], [0, 20], [1, 7, 2, 2, 3],
                  [1, 7, 2, 2, 3]), "sampling_locations (N, Lq, M, L, P, 2) must have rank 6",
                 id="locs-rank"),
    pytest.param(([1, 26, 2, 8], [[4, 5], [2, 3]], [0, 20], [1, 7, 2, 2, 3, 2],
                  [1, 7, 2, 2, 4]), "attention_weights must have shape", id="weights-shape"),
    pytest.param(([1, 26, 2, 8], [4, 5, 2, 3], [0, 20], [1, 7, 2, 2, 3, 2],
                  [1, 7, 2, 2, 3]), "spatial_shapes (L, 2) must have rank 2", id="ss-rank"),
    pytest.param(([1, 26, 2, 8], [[4, 5, 1], [2, 3, 1]], [0, 20], [1, 7, 2, 2, 3, 2],
                  [1, 7, 2, 2, 3]), "spatial_shapes must be (L, 2) rows (H, W)", id="ss-cols"),
    pytest.param(([1, 26, 2, 8], [[4, 5], [0, 3]], [0, 20], [1, 7, 2, 2, 3, 2],
                  [1, 7, 2, 2, 3]), "spatial_shapes has an empty level", id="empty-level"),
])
def test_bad_shapes_are_clear_errors(args, message):
    with pytest.raises(ValueError) as err:
        _call(*args)
    assert message in str(err.value)


def test_float64_value_is_refused():
    with pytest.raises(Exception) as err:
        _call([1, 26, 2, 8], [[4, 5], [2, 3]], [0, 20], [1, 7, 2, 2, 3, 2], [1, 7, 2, 2, 3],
              dtype="float64")
    assert "value (N, S, M, D) must be float32, got float64" in str(err.value)


def test_non_constant_spatial_shapes_at_legalization():
    _, call = _call([1, 26, 2, 8], [[4, 5], [2, 3]], [0, 20], [1, 7, 2, 2, 3, 2],
                    [1, 7, 2, 2, 3], constant=False)
    with pytest.raises(ValueError) as err:
        msda.constant_levels(call)
    assert "spatial_shapes is not a constant at build time" in str(err.value)
    assert "register_buffer" in str(err.value)


def test_spatial_shapes_as_model_input_is_a_clear_error():
    class Unbound(torch.nn.Module):
        def forward(self, value, ss, lsi, locs, weights):
            return msda.multi_scale_deformable_attention(value, ss, lsi, locs, weights)

    shapes = [(4, 5)]
    value, locs, weights = case(shapes)
    args = (torch.from_numpy(value), torch.tensor(shapes), torch.from_numpy(_starts(shapes)),
            torch.from_numpy(locs), torch.from_numpy(weights))
    with pytest.raises(Exception) as err:
        tvm_cruise.build(Unbound(), target="llvm", example_inputs=args)
    text = str(err.value)
    assert "spatial_shapes is not a constant at build time (it is 'ss'" in text
    assert "fixes the kernel's loop bounds" in text and "register_buffer" in text


def test_onnx_spatial_shapes_as_graph_input_is_a_clear_error():
    shapes = [(4, 5)]
    inputs = case(shapes)
    model = _onnx_model(shapes, inputs)
    init = model.graph.initializer.pop(0)  # spatial_shapes becomes a graph input
    model.graph.input.append(helper.make_tensor_value_info(init.name, TensorProto.INT64,
                                                           init.dims))
    with pytest.raises(ModelLoadError) as err:
        tvm_cruise.build(model, target="llvm")
    assert "spatial_shapes is not an initializer" in str(err.value)
    assert "msda_0" in str(err.value)


@pytest.mark.slow
def test_bench_case_builds_and_matches():
    module, args = msda.bench_case(0)
    with torch.no_grad():
        start = time.perf_counter()
        ref = module(*args).numpy()
        torch_s = time.perf_counter() - start
    art = tvm_cruise.build(module, target="llvm", example_inputs=args)
    out = art.run(*(a.numpy() for a in args))
    assert out.shape == (1, 2500, 256)
    assert rel_err(out, ref) <= FP32_BOUND, torch_s
