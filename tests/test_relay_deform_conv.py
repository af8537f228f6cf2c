"""deformable_conv2d: the reference vs ONNX's reference evaluator and a grid_sample version;
torch (ours and torchvision's op) and ONNX (DeformConv, mmdeploy's form) built for llvm,
cruise-npu placement, the sampling kernel's schedule, CUDA compile, error texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tvm_cruise
from tvm_cruise import cuda
from tvm_cruise.errors import ModelLoadError
from tvm_cruise.relay_ops import deform_conv as dc

from conftest import FP16_BOUND, FP32_BOUND, rel_err

# (C, O, H, W, kh, kw, groups, offset_groups, stride, padding, dilation, mask, bias)
CASES = {
    "plain": (3, 4, 6, 7, 3, 3, 1, 1, (1, 1), (0, 0), (1, 1), False, False),
    "mask-bias-pad": (4, 6, 6, 7, 3, 3, 1, 1, (1, 1), (1, 1), (1, 1), True, True),
    "groups-2": (4, 6, 5, 6, 3, 2, 2, 1, (1, 1), (1, 0), (1, 1), True, False),
    "offset-groups-2": (4, 4, 6, 5, 2, 3, 1, 2, (1, 1), (0, 1), (1, 1), False, True),
    "groups-and-offset-groups": (8, 4, 6, 6, 3, 3, 2, 4, (2, 2), (1, 1), (1, 1), True, True),
    "stride-2-dilation-2": (4, 4, 9, 8, 3, 3, 1, 2, (2, 1), (2, 1), (2, 2), True, True),
}


def make_case(name, seed=0, scale=3.0, n=1):
    """Inputs as torch tensors; offsets of ``scale`` standard deviations put many samples
    outside the image."""
    c, o, h, w, kh, kw, groups, og, stride, padding, dilation, use_mask, use_bias = CASES[name]
    g = torch.Generator().manual_seed(seed)
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    x = torch.randn(n, c, h, w, generator=g)
    offset = scale * torch.randn(n, 2 * og * kh * kw, ho, wo, generator=g)
    weight = torch.randn(o, c // groups, kh, kw, generator=g)
    mask = torch.rand(n, og * kh * kw, ho, wo, generator=g) if use_mask else None
    bias = torch.randn(o, generator=g) if use_bias else None
    return dict(input=x, offset=offset, weight=weight, bias=bias, mask=mask, stride=stride,
                padding=padding, dilation=dilation, groups=groups, offset_groups=og)


def ours(case):
    return dc.deform_conv2d(case["input"], case["offset"], case["weight"], case["bias"],
                            case["stride"], case["padding"], case["dilation"], case["mask"])


def onnx_node(case, name="dc"):
    from onnx import helper

    inputs = ["X", "W", "offset", "B" if case["bias"] is not None else "",
              "mask" if case["mask"] is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    kh, kw = case["weight"].shape[2:]
    p = case["padding"]
    return helper.make_node("DeformConv", inputs, ["Y"], name=name,
                            dilations=list(case["dilation"]), group=case["groups"],
                            kernel_shape=[kh, kw], offset_group=case["offset_groups"],
                            pads=[p[0], p[1], p[0], p[1]], strides=list(case["stride"]))


def onnx_feeds(case):
    feeds = {"X": case["input"], "W": case["weight"], "offset": case["offset"],
             "B": case["bias"], "mask": case["mask"]}
    return {k: v.numpy() for k, v in feeds.items() if v is not None}


def onnx_reference(case):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(onnx_node(case)).run(None, onnx_feeds(case))[0]


def grid_sample_version(case):
    """An independent formulation: torch's grid_sample (bilinear, zeros, align_corners)
    per offset group, then a grouped einsum."""
    x, off, wt = case["input"], case["offset"], case["weight"]
    n, c, h, w = x.shape
    o, cg, kh, kw = wt.shape
    og, groups = case["offset_groups"], case["groups"]
    ho, wo = off.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = case["stride"], case["padding"], case["dilation"]
    off = off.reshape(n, og, kh, kw, 2, ho, wo).double()
    ky, kx = torch.meshgrid(torch.arange(kh) * dh, torch.arange(kw) * dw, indexing="ij")
    oy, ox = torch.meshgrid(torch.arange(ho) * sh - ph, torch.arange(wo) * sw - pw, indexing="ij")
    y = (oy[None, None] + ky[:, :, None, None]).double() + off[:, :, :, :, 0]
    xx = (ox[None, None] + kx[:, :, None, None]).double() + off[:, :, :, :, 1]
    # (n, og, kh, kw, ho, wo, 2): normalized (x, y) for align_corners=True
    grid = torch.stack([xx / (w - 1) * 2 - 1, y / (h - 1) * 2 - 1], -1)
    grid = grid.reshape(n * og, kh * kw * ho, wo, 2)
    sampled = F.grid_sample(x.double().reshape(n * og, c // og, h, w), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=True)
    sampled = sampled.reshape(n, c, kh * kw, ho, wo)
    if case["mask"] is not None:
        m = case["mask"].double().reshape(n, og, 1, kh * kw, ho, wo)
        sampled = (sampled.reshape(n, og, c // og, kh * kw, ho, wo) * m).reshape(sampled.shape)
    cols = sampled.reshape(n, groups, cg, kh, kw, ho, wo)
    out = torch.einsum("gpcij,ngcijyx->ngpyx", wt.double().reshape(groups, o // groups, cg, kh, kw),
                       cols).reshape(n, o, ho, wo)
    if case["bias"] is not None:
        out = out + case["bias"].double().reshape(1, o, 1, 1)
    return out.float()


def outside_share(case):
    """Share of sampling points with a coordinate outside (-1, size): the edge rule's work."""
    x, off = case["input"], case["offset"]
    kh, kw = case["weight"].shape[2:]
    h, w = x.shape[2:]
    ho, wo = off.shape[2:]
    off = off.reshape(x.shape[0], -1, kh, kw, 2, ho, wo)
    ys = (torch.arange(ho) * case["stride"][0] - case["padding"][0])[:, None] + \
        torch.zeros(wo)[None]
    y = ys + (torch.arange(kh) * case["dilation"][0])[:, None, None, None] + off[..., 0, :, :]
    return float(((y <= -1) | (y >= h)).float().mean())


@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_onnx_reference_evaluator(name):
    case = make_case(name)
    assert outside_share(case) > 0.1  # the edge rule is exercised
    ref = onnx_reference(case)
    assert rel_err(ours(case).numpy(), ref) < FP32_BOUND


@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_grid_sample(name):
    case = make_case(name, seed=1, n=2)
    assert rel_err(ours(case).numpy(), grid_sample_version(case).numpy()) < FP32_BOUND


@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_onnxruntime(name):
    import onnxruntime as ort

    case = make_case(name, seed=14)
    model, feeds = _onnx_model(case, onnx_node(case), [("", 19)], initializers=())
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    assert rel_err(ours(case).numpy(), session.run(None, feeds)[0]) < FP32_BOUND


def test_edge_rule_on_exact_boundaries():
    """Integer and half-integer offsets land exactly on -1, 0, H-1, H and between."""
    case = make_case("mask-bias-pad", seed=2)
    g = torch.Generator().manual_seed(3)
    case["offset"] = torch.randint(-8, 9, case["offset"].shape, generator=g).float() / 2
    ref = onnx_reference(case)
    assert rel_err(ours(case).numpy(), ref) < FP32_BOUND
    # a point just past the last row contributes 0, one just inside does not
    one = dict(case, input=torch.ones(1, 4, 6, 7), mask=None, bias=None,
               weight=torch.zeros(6, 4, 3, 3), padding=(0, 0))
    one["weight"][:, :, 0, 0] = 1
    ho, wo = 4, 5
    for dy, expect in ((5.0, 4.0), (5.5, 2.0), (6.0, 0.0), (-0.5, 2.0), (-1.0, 0.0)):
        one["offset"] = torch.zeros(1, 18, ho, wo)
        one["offset"][0, 0, 0, 0] = dy  # kernel point (0, 0), pixel (0, 0): y = dy
        assert float(ours(one)[0, 0, 0, 0]) == pytest.approx(expect), dy


def test_onnx_offset_layout_is_torchvisions():
    """ONNX's offset (N, offset_group, kh, kw, 2=(dy, dx), Ho, Wo) is torchvision's channel
    order: a single displaced (group, point, dy) channel gives the same output in both, and
    reading it as dx instead would not."""
    case = make_case("offset-groups-2", seed=4)
    kh, kw = case["weight"].shape[2:]
    group, point = 1, 4
    channel = 2 * (group * kh * kw + point)
    case["offset"] = torch.zeros_like(case["offset"])
    case["offset"][:, channel] = 0.75
    ref = onnx_reference(case)
    assert rel_err(ours(case).numpy(), ref) < FP32_BOUND
    swapped = dict(case, offset=case["offset"].clone())
    swapped["offset"][:, channel], swapped["offset"][:, channel + 1] = 0.0, 0.75
    assert rel_err(ours(swapped).numpy(), ref) > 1e-2


class Ours(torch.nn.Module):
    def __init__(self, stride, padding, dilation):
        super().__init__()
        self.args = (stride, padding, dilation)

    def forward(self, x, offset, weight, mask, bias):
        return dc.deform_conv2d(x, offset, weight, bias, *self.args, mask=mask)


class OursNoMaskNoBias(Ours):
    def forward(self, x, offset, weight):
        return dc.deform_conv2d(x, offset, weight, None, *self.args)


def _torch_inputs(case):
    return tuple(case[k] for k in ("input", "offset", "weight", "mask", "bias"))


@pytest.mark.parametrize("name", ["mask-bias-pad", "groups-and-offset-groups",
                                  "stride-2-dilation-2"])
def test_torch_import_llvm_equals_reference(name):
    case = make_case(name, seed=5)
    model = Ours(case["stride"], case["padding"], case["dilation"])
    args = _torch_inputs(case)
    art = tvm_cruise.build(model, target="llvm", example_inputs=args)
    assert rel_err(art.run(*[a.numpy() for a in args]), ours(case).numpy()) < FP32_BOUND


def test_torch_import_without_mask_and_bias():
    case = make_case("offset-groups-2", seed=6)
    model = OursNoMaskNoBias(case["stride"], case["padding"], case["dilation"])
    args = (case["input"], case["offset"], case["weight"])
    art = tvm_cruise.build(model, target="llvm", example_inputs=args)
    ref = dc.deform_conv2d(*args, None, case["stride"], case["padding"], case["dilation"])
    assert rel_err(art.run(*[a.numpy() for a in args]), ref.numpy()) < FP32_BOUND


def _torchvision():
    from torchvision_ops import ensure

    def kernel(input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, og, use_mask):
        return dc._reference(input, offset, weight, bias, mask if use_mask else None,
                             (sh, sw), (ph, pw), (dh, dw))

    def fake(input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, og, use_mask):
        return input.new_empty((input.shape[0], weight.shape[0], *offset.shape[2:]))

    return ensure("deform_conv2d", kernel, fake)


@pytest.mark.parametrize("use_mask", [True, False], ids=["mask", "no-mask"])
def test_torchvision_op_import_llvm(use_mask):
    tv = _torchvision()
    case = make_case("groups-and-offset-groups", seed=7)

    class Model(torch.nn.Module):
        def forward(self, x, offset, weight, mask):
            return tv.ops.deform_conv2d(x, offset, weight, None, stride=case["stride"],
                                        padding=case["padding"],
                                        mask=mask if use_mask else None)

    mask = case["mask"]
    args = (case["input"], case["offset"], case["weight"], mask)
    art = tvm_cruise.build(Model(), target="llvm", example_inputs=args)
    ref = dc.deform_conv2d(case["input"], case["offset"], case["weight"], None, case["stride"],
                           case["padding"], 1, mask if use_mask else None)
    assert rel_err(art.run(*[a.numpy() for a in args]), ref.numpy()) < FP32_BOUND


def _onnx_model(case, node, opsets, initializers=("W", "B"), out_shape=None):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    feeds = onnx_feeds(case)
    inits = [numpy_helper.from_array(feeds[k], k) for k in initializers if k in feeds]
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape))
              for k, v in feeds.items() if k not in initializers]
    out_shape = out_shape or list(ours(case).shape)
    graph = helper.make_graph([node], "dcn", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, out_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 9
    return model, {k: v for k, v in feeds.items() if k not in initializers}


@pytest.mark.parametrize("name", ["mask-bias-pad", "groups-and-offset-groups", "plain",
                                  "groups-2"])
def test_onnx_deformconv_llvm(name):
    from onnx.reference import ReferenceEvaluator

    case = make_case(name, seed=8)
    model, feeds = _onnx_model(case, onnx_node(case), [("", 19)])
    ref = ReferenceEvaluator(model).run(None, feeds)[0]
    art = tvm_cruise.build(model, target="llvm")
    out = art.run(*feeds.values())
    assert rel_err(out, ref) < FP32_BOUND


def test_onnx_asymmetric_pads():
    from onnx.reference import ReferenceEvaluator

    case = make_case("mask-bias-pad", seed=9)
    node = onnx_node(case)
    for attr in node.attribute:
        if attr.name == "pads":
            attr.ints[:] = [0, 1, 2, 0]
    h, w = case["input"].shape[2:]
    case["offset"] = 3 * torch.randn(1, 18, h + 2 - 2, w + 1 - 2)
    case["mask"] = torch.rand(1, 9, h + 2 - 2, w + 1 - 2)
    model, feeds = _onnx_model(case, node, [("", 19)], out_shape=[1, 6, h, w - 1])
    ref = ReferenceEvaluator(model).run(None, feeds)[0]
    assert ref.shape == (1, 6, h, w - 1)
    out = tvm_cruise.build(model, target="llvm").run(*feeds.values())
    assert rel_err(out, ref) < FP32_BOUND


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_onnx_mmdeploy_form_llvm(with_bias):
    from onnx import helper

    case = make_case("groups-2", seed=10)
    if case["mask"] is None:
        case["mask"] = torch.rand(1, 6, *case["offset"].shape[2:])
    case["bias"] = torch.randn(case["weight"].shape[0]) if with_bias else None
    inputs = ["X", "offset", "mask", "W"] + (["B"] if with_bias else [])
    node = helper.make_node("MMCVModulatedDeformConv2d", inputs, ["Y"], name="mdcn",
                            domain="mmdeploy", stride=list(case["stride"]),
                            padding=list(case["padding"]), dilation=list(case["dilation"]),
                            groups=case["groups"], deform_groups=case["offset_groups"])
    model, feeds = _onnx_model(case, node, [("", 17), ("mmdeploy", 1)])
    out = tvm_cruise.build(model, target="llvm").run(*feeds.values())
    assert rel_err(out, ours(case).numpy()) < FP32_BOUND


@pytest.mark.parametrize("name, with_mask, with_bias", [
    ("groups-and-offset-groups", True, True), ("groups-2", True, False),
    ("offset-groups-2", False, False)], ids=["mask-bias", "mask-only", "neither"])
def test_dynamo_onnx_export_writes_deformconv(name, with_mask, with_bias):
    """torch.onnx.export(dynamo=True) writes the standard node; ONNX Runtime and the
    llvm build of the exported model both match the reference."""
    import onnxruntime as ort

    from tvm_cruise.relay_ops.registry import onnx_translation_table

    case = make_case(name, seed=15)
    case["mask"] = case["mask"] if with_mask else None
    case["bias"] = torch.randn(case["weight"].shape[0]) if with_bias else None

    class Layer(Ours):
        def forward(self, *a):
            x, offset, weight = a[:3]
            rest = list(a[3:])
            mask = rest.pop(0) if with_mask else None
            bias = rest.pop(0) if with_bias else None
            return dc.deform_conv2d(x, offset, weight, bias, *self.args, mask=mask)

    args = tuple(a for a in _torch_inputs(case) if a is not None)
    model = torch.onnx.export(Layer(case["stride"], case["padding"], case["dilation"]).eval(), args,
                              dynamo=True, opset_version=19, verbose=False,
                              custom_translation_table=onnx_translation_table()).model_proto
    assert [(n.domain, n.op_type) for n in model.graph.node] == [("", "DeformConv")]
    feeds = {i.name: a.numpy() for i, a in zip(model.graph.input, args)}
    ref = ours(case).numpy()
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    assert rel_err(session.run(None, feeds)[0], ref) < FP32_BOUND
    out = tvm_cruise.build(model, target="llvm").run(*feeds.values())
    assert rel_err(out, ref) < FP32_BOUND


class DcnHead(torch.nn.Module):
    """A conv (accelerator work), then a DCNv2 whose offsets and mask come from a conv."""

    def __init__(self, c=8):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, c, 3, padding=1)
        self.offset = torch.nn.Conv2d(c, 27, 3, padding=1)
        self.weight = torch.nn.Parameter(torch.randn(c, c, 3, 3) / 8)
        self.bias = torch.nn.Parameter(torch.randn(c))

    def forward(self, x):
        y = torch.relu(self.conv(x))
        o = self.offset(y)
        return dc.deform_conv2d(y, 3 * o[:, :18], self.weight, self.bias, 1, 1, 1,
                                mask=torch.sigmoid(o[:, 18:]))


def test_cruise_npu_places_deform_conv_on_host_with_reason():
    model = DcnHead().eval()
    x = torch.randn(1, 4, 10, 12, generator=torch.Generator().manual_seed(11))
    art = tvm_cruise.build(model, target="cruise-npu", example_inputs=(x,))
    with torch.no_grad():
        ref = model(x).numpy()
    assert rel_err(art.run(x.numpy()), ref) < 2 * FP16_BOUND
    ops = art.metadata["placement"]["ops"]
    dcn = [op for op in ops if op["device"] == "host" and dc.NAME in op["op"]]
    assert dcn and dcn[0]["rules"] == ["custom-op"]
    assert "custom operator" in dcn[0]["reasons"][0]
    assert any("conv2d" in op["op"] and op["device"] != "host" for op in ops)


def test_sampling_kernel_gets_its_schedule():
    """The custom schedule is applied (parallel + vectorized loops, the default-schedule
    mark) and does not change the kernel's results."""
    import tvm
    from tvm import relax

    from tvm_cruise.schedules.cpu import ATTR, apply_default_schedules
    from tvm_cruise.targets.host import default_host

    # output rows of 16: a whole number of vectors for 4, 8 and 16 lanes alike
    g = torch.Generator().manual_seed(12)
    case = {"input": torch.randn(1, 4, 6, 16, generator=g),
            "offset": 3 * torch.randn(1, 18, 6, 16, generator=g),
            "weight": torch.randn(6, 4, 3, 3, generator=g),
            "mask": torch.rand(1, 9, 6, 16, generator=g), "bias": torch.randn(6, generator=g)}
    shapes = {k: list(case[k].shape) for k in ("input", "offset", "weight", "mask", "bias")}
    params = {k: relax.Var(k, relax.TensorType(s, "float32")) for k, s in shapes.items()}
    bb = relax.BlockBuilder()
    with bb.function("main", list(params.values())):
        with bb.dataflow():
            out = bb.emit_output(dc.emit(bb, params["input"], params["offset"],
                                         params["weight"], params["mask"], params["bias"],
                                         (1, 1), (1, 1), (1, 1), 1, 1))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    target = tvm.target.Target(dict(default_host(), **{"num-cores": 2}))
    scheduled, _ = apply_default_schedules(mod, target)
    sample = scheduled["cruise_deform_sample"]
    assert bool(sample.attrs[ATTR])
    text = sample.script()
    assert text.count("T.parallel") == 3 and text.count("T.vectorized") == 2
    inputs = [case[k].numpy() for k in ("input", "offset", "mask")]
    outs = []
    for module in (mod, scheduled):
        func = module["cruise_deform_sample"].with_attr("global_symbol", "main")
        lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
        dev = tvm.cpu()
        args = [tvm.runtime.tensor(a, dev) for a in inputs]
        args.append(tvm.runtime.tensor(np.zeros([int(d) for d in func.params[-1].ty.shape],
                                                "float32"), dev))
        lib["main"](*args)
        outs.append(args[-1].numpy())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_bench_case_builds_and_matches():
    fn, args = dc.bench_case()

    class Layer(torch.nn.Module):
        def forward(self, *a):
            return fn(*a)

    art = tvm_cruise.build(Layer(), target="llvm", example_inputs=args)
    with torch.no_grad():
        ref = fn(*args).numpy()
    assert rel_err(art.run(*[a.numpy() for a in args]), ref) < FP32_BOUND


@pytest.mark.cuda
@pytest.mark.skipif(cuda.find_nvcc() is None, reason="nvcc not installed")
def test_cuda_build_compiles_with_nvcc():
    case = make_case("groups-and-offset-groups", seed=13)
    model = Ours(case["stride"], case["padding"], case["dilation"])
    art = tvm_cruise.build(model, target="cuda", example_inputs=_torch_inputs(case),
                           check_cuda=False)
    assert "__global__" in cuda.cuda_source(art)
    assert cuda.compile_check(art, arch="sm_87")["cubin_bytes"] > 1000


# ----------------------------------------------------------------------------- errors
def _emit_error(**shapes):
    from tvm import relax

    base = {"data": [1, 4, 6, 6], "offset": [1, 18, 6, 6], "weight": [8, 4, 3, 3],
            "mask": [1, 9, 6, 6], "bias": [8]}
    base.update(shapes)
    params = {k: relax.Var(k, relax.TensorType(s, "float32")) for k, s in base.items()}
    relax.BlockBuilder().normalize(dc.make_call(
        params["data"], params["offset"], params["weight"], params["mask"], params["bias"],
        1, 1, 1, 1, 1))


@pytest.mark.parametrize("shapes, message", [
    ({"offset": [1, 16, 6, 6]}, r"offset must have shape \(N, 2\*offset_groups\*kh\*kw, Ho, "
                                r"Wo\) = \(1, 18, 6, 6\), got \(1, 16, 6, 6\)"),
    ({"offset": [1, 18, 5, 6]}, r"offset must have shape .* = \(1, 18, 6, 6\), got "
                                r"\(1, 18, 5, 6\).*spatial size is the output's"),
    ({"mask": [1, 18, 6, 6]}, r"mask must have shape \(N, offset_groups\*kh\*kw, Ho, Wo\) = "
                              r"\(1, 9, 6, 6\), got \(1, 18, 6, 6\)"),
    ({"bias": [4]}, r"bias must have shape \(O,\) = \(8,\), got \(4,\)"),
    ({"weight": [8, 3, 3, 3]}, r"weight \(8, 3, 3, 3\) does not fit data channels 4 with "
                               r"groups=1.*Fix the weight's shape"),
    ({"data": [1, 4, 6]}, r"data must have rank 4"),
], ids=["offset-channels", "offset-spatial", "mask-channels", "bias", "weight-channels",
        "data-rank"])
def test_bad_shapes_are_clear_errors(shapes, message):
    with pytest.raises(ValueError, match=message):
        _emit_error(**shapes)


def test_float16_is_refused_with_the_operand_named():
    from tvm import relax

    types = {"data": ([1, 4, 6, 6], "float16"), "offset": ([1, 18, 6, 6], "float32"),
             "weight": ([8, 4, 3, 3], "float32")}
    params = {k: relax.Var(k, relax.TensorType(s, d)) for k, (s, d) in types.items()}
    with pytest.raises(ValueError, match=r"deformable_conv2d: data must be float32, got "
                                         r"float16"):
        relax.BlockBuilder().normalize(dc.make_call(params["data"], params["offset"],
                                                    params["weight"], padding=1))


def test_reference_rejects_offset_not_multiple_of_kernel():
    case = make_case("plain")
    with pytest.raises(ValueError, match=r"offset's dim 1 \(17\) must be a multiple of "
                                         r"2\*kh\*kw = 18"):
        dc.deform_conv2d(case["input"], case["offset"][:, :17], case["weight"])


def test_torch_import_bad_mask_names_operand():
    case = make_case("mask-bias-pad")
    model = Ours(case["stride"], case["padding"], case["dilation"])
    bad = dict(case, mask=case["mask"][:, :4])
    args = _torch_inputs(bad)
    # the eager reference refuses first; torch.export runs the fake kernel, so build goes
    # through to the Relax type check
    with pytest.raises(ValueError, match="mask must have shape"):
        model(*args)
    with pytest.raises(ModelLoadError, match=r"mask must have shape .*\(1, 9, 6, 7\), got "
                                             r"\(1, 4, 6, 7\)"):
        tvm_cruise.build(model, target="llvm", example_inputs=args)


def test_onnx_bad_kernel_shape_is_a_clear_error():
    case = make_case("plain")
    node = onnx_node(case)
    for attr in node.attribute:
        if attr.name == "kernel_shape":
            attr.ints[:] = [2, 2]
    model, _ = _onnx_model(case, node, [("", 19)])
    with pytest.raises(ModelLoadError, match=r"'dc'.*kernel_shape \[2, 2\] differs from W's "
                                             r"spatial shape \[3, 3\]"):
        tvm_cruise.build(model, target="llvm")
