"""ONNX import on the host: ONNX's own operator tests, torch-exported models, error texts.

Every ONNX node test case of the families below is built for ``llvm`` and run: it must
match ONNX's expected output within the case's tolerance, or be refused with a
``ModelLoadError`` naming the node (the known refusals are data, each with its reason).
Parameter tensors (Reshape's shape, Resize's roi/scales/sizes, Pad's pads, ...) are graph
inputs in those cases; real models have them as initializers, so they are moved there
first. Clip's bounds and Gemm's scalar bias also run as 0-d graph inputs.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import tvm_cruise
from tvm_cruise.errors import ModelLoadError
from tvm_cruise.frontend import op_counts
from tvm_cruise.onnx_prep import prepare
from tvm_cruise.onnx_prep.resize_math import ResizeMode, onnx_weights

FAMILIES = {
    "Resize": (1, 2, 3), "ConvTranspose": (), "Reshape": (1,), "Clip": (1, 2), "Gemm": (),
    "Add": (), "Sub": (), "Mul": (), "Div": (), "Max": (), "Min": (), "Pad": (1, 2, 3),
    "Expand": (1,), "BatchNormalization": (), "Flatten": (), "Squeeze": (1,),
    "Unsqueeze": (1,),
}
# Refused on purpose; each message must contain the text given here.
REFUSED = {
    "test_batchnorm_example_training_mode": "training_mode=1",
    "test_batchnorm_epsilon_training_mode": "training_mode=1",
    "test_reshape_allowzero_reordered": "zero-sized dimension",
}


@functools.lru_cache(maxsize=1)
def _cases() -> dict[str, list]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        cases = collect_testcases(None)
    by_family: dict[str, list] = {}
    for case in cases:
        nodes = case.model.graph.node
        if len(nodes) == 1 and nodes[0].op_type in FAMILIES:
            by_family.setdefault(nodes[0].op_type, []).append(case)
    return by_family


def _as_initializers(model, inputs, indices):
    """``model`` with the graph inputs feeding node inputs ``indices`` as initializers."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    node = model.graph.node[0]
    moved = {n for i, n in enumerate(node.input) if i in indices and n}
    kept_inputs, kept_values = [], []
    for info, value in zip(model.graph.input, inputs):
        if info.name in moved:
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), info.name))
        else:
            kept_inputs.append(info)
            kept_values.append(value)
    del model.graph.input[:]
    model.graph.input.extend(kept_inputs)
    return model, kept_values


def _outcome(case, indices) -> tuple[str, str]:
    inputs, expected = case.data_sets[0]
    model, values = _as_initializers(case.model, inputs, indices)
    try:
        out = tvm_cruise.build(model, target="llvm").run(*values)
    except ModelLoadError as err:
        return "refused", str(err)
    outs = out if isinstance(out, list) else [out]
    for got, want in zip(outs, expected):
        want = np.asarray(want)
        if got.shape != want.shape:
            return "wrong", f"shape {got.shape}, expected {want.shape}"
        if not np.allclose(got, want, rtol=case.rtol, atol=case.atol, equal_nan=True):
            return "wrong", f"max error {np.abs(got.astype(float) - want).max()}"
    return "pass", ""


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_onnx_node_cases(family):
    results = {}
    for case in _cases()[family]:
        results[case.name] = _outcome(case, FAMILIES[family])
        if family in ("Clip", "Gemm"):  # bounds and bias as 0-d runtime inputs
            results[case.name + "[inputs]"] = _outcome(case, ())
    bad = []
    for name, (status, text) in results.items():
        reason = REFUSED.get(name)
        if reason is None and status != "pass":
            bad.append(f"{name}: {status}: {text[:200]}")
        elif reason is not None and not (status == "refused" and reason in text
                                         and "ONNX node '" in text and "Fix:" in text):
            bad.append(f"{name}: expected a refusal naming the node and {reason!r}, got "
                       f"{status}: {text[:200]}")
    assert not bad, "\n".join(bad)
    assert len(results) >= 2


# ----------------------------------------------------------------- resize arithmetic
def _reference_resize(x, mode: ResizeMode, scales=None, sizes=None, roi=None):
    from onnx.reference import ReferenceEvaluator

    attrs = {"mode": mode.mode, "coordinate_transformation_mode": mode.coord,
             "nearest_mode": mode.nearest_mode, "cubic_coeff_a": mode.cubic_a,
             "exclude_outside": int(mode.exclude_outside), "antialias": int(mode.antialias),
             "extrapolation_value": mode.extrapolation}
    inputs = ["x", "roi" if roi is not None else "", "scales" if scales is not None else ""]
    if sizes is not None:
        inputs.append("sizes")
    node = helper.make_node("Resize", inputs, ["y"], **attrs)
    graph = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", 1, x.shape)],
                              [helper.make_tensor_value_info("y", 1, None)])
    for name, value, dtype in (("roi", roi, np.float32), ("scales", scales, np.float32),
                               ("sizes", sizes, np.int64)):
        if value is not None:
            graph.initializer.append(numpy_helper.from_array(np.array(value, dtype), name))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("coord", ["half_pixel", "align_corners", "asymmetric",
                                   "pytorch_half_pixel", "half_pixel_symmetric",
                                   "tf_crop_and_resize"])
def test_resize_weights_match_onnx_reference(mode, coord):
    """The per-axis matrices reproduce onnx.reference for every mode on odd sizes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    roi = ([float(np.float32(v)) for v in (0.1, 0.2, 0.8, 0.9)]
           if coord == "tf_crop_and_resize" else None)
    for scales, antialias, exclude in (([0.6, 1.7], False, False), ([2.0, 0.45], True, True),
                                       ([1.0, 3.0], False, True)):
        antialias = antialias and mode != "nearest"  # onnx.reference refuses nearest+antialias
        spec = ResizeMode(mode, coord, "round_prefer_ceil", -0.5, exclude, antialias, -1.0)
        want = _reference_resize(x, spec, scales=scales, roi=roi)
        y = x.astype(np.float64)
        for axis, scale in enumerate(scales):
            out = int(np.floor(np.float64(np.float32(scale)) * x.shape[axis]))
            weights, fill = onnx_weights(spec, x.shape[axis], out, float(np.float32(scale)),
                                         (roi[axis], roi[2 + axis]) if roi else (0.0, 1.0))
            y = np.moveaxis(np.tensordot(weights, np.moveaxis(y, axis, 0), 1), 0, axis)
            y = np.where(np.expand_dims(fill, 1 - axis), spec.extrapolation, y)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5, err_msg=str(scales))


def _resize_model(mode: str, coord: str, scales, shape=(1, 2, 5, 6), nearest="floor"):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode=mode,
                            coordinate_transformation_mode=coord, nearest_mode=nearest)
    graph = helper.make_graph(
        [node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [onnx.ValueInfoProto(name="y")],
        [numpy_helper.from_array(np.array(scales, np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("mode, coord, nearest", [
    ("nearest", "asymmetric", "floor"),             # torch: F.interpolate(nearest)
    ("nearest", "half_pixel", "round_prefer_floor"),
    ("linear", "pytorch_half_pixel", "floor"),      # torch: bilinear, align_corners=False
    ("linear", "half_pixel", "floor"),
    ("linear", "align_corners", "floor"),
    ("cubic", "half_pixel", "floor"),
])
def test_integer_upsampling_stays_a_resize(mode, coord, nearest):
    """Where TVM's resize computes what ONNX specifies it is kept (accelerators offload
    it); only the forms it gets wrong are rewritten."""
    imported = tvm_cruise.load_model(_resize_model(mode, coord, [1, 1, 2, 2], nearest=nearest))
    assert op_counts(imported.mod) == {"relax.image.resize2d": 1}


def test_fractional_scale_is_rewritten_exactly():
    model = _resize_model("linear", "half_pixel", [1, 1, 0.6, 0.7])
    ops = [n.op_type for n in prepare(model).graph.node]
    assert ops == ["MatMul", "MatMul"]
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 6)).astype(np.float32)
    from onnx.reference import ReferenceEvaluator

    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(tvm_cruise.build(model, target="llvm").run(x), want,
                               rtol=1e-5, atol=1e-5)


def _random_resize(rng):
    """One random Resize case: ``(model, x)``."""
    rank = int(rng.choice([3, 4, 4, 5]))
    mode = str(rng.choice(["nearest", "linear", "cubic"]))
    coord = str(rng.choice(["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel",
                            "tf_crop_and_resize", "half_pixel_symmetric"]))
    elem, dtype = [(TensorProto.FLOAT, np.float32), (TensorProto.FLOAT16, np.float16),
                   (TensorProto.UINT8, np.uint8)][int(rng.choice([0, 0, 1, 2]))]
    shape = [1, 2] + [int(d) for d in rng.integers(1, 8, rank - 2)]
    attrs = {"mode": mode, "coordinate_transformation_mode": coord,
             "nearest_mode": str(rng.choice(["round_prefer_floor", "round_prefer_ceil",
                                              "floor", "ceil"])),
             "exclude_outside": int(mode == "cubic" and rng.random() < 0.5),
             "antialias": int(mode != "nearest" and rng.random() < 0.3),
             "extrapolation_value": -3.0}
    inits, inputs = [], ["x", "", ""]
    if coord == "tf_crop_and_resize":
        lo, hi = np.sort(rng.uniform(-0.2, 1.2, (2, rank - 2)), axis=0)
        roi = np.concatenate([[0, 0], lo, [1, 1], hi]).astype(np.float32)
        inits.append(numpy_helper.from_array(roi, "roi"))
        inputs[1] = "roi"
    if rng.random() < 0.5:
        sizes = np.array(shape[:2] + list(rng.integers(1, 12, rank - 2)), np.int64)
        inits.append(numpy_helper.from_array(sizes, "sizes"))
        inputs.append("sizes")
    else:
        choices = [0.25, 0.33, 0.5, 0.6, 0.8, 1.0, 1.5, 1.7, 2.0, 3.0]
        scales = np.array([1, 1] + list(rng.choice(choices, rank - 2)), np.float32)
        inits.append(numpy_helper.from_array(scales, "scales"))
        inputs[2] = "scales"
    node = helper.make_node("Resize", inputs, ["y"], name="rs", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem, shape)],
                              [onnx.ValueInfoProto(name="y")], inits)
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
    x = rng.standard_normal(shape) * 40 + (100 if dtype == np.uint8 else 0)
    return model, x.astype(dtype)


@pytest.mark.parametrize("seed", range(3))
def test_random_resizes_match_onnx_reference(seed):
    """Random Resize nodes (ranks 3-5, every mode and coordinate mode, sizes or scales,
    antialias, float32/float16/uint8): TVM's resize where kept, the exact rewrite
    elsewhere, both equal onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    rng, checked, failures = np.random.default_rng(seed), 0, []
    while checked < 15:
        model, x = _random_resize(rng)
        try:
            want = ReferenceEvaluator(model).run(None, {"x": x})[0]
        except Exception:  # a random combination ONNX itself refuses
            continue
        if want.size == 0:
            continue
        checked += 1
        got = tvm_cruise.build(model, target="llvm").run(x)
        # uint8: ties at .5 may round either way after a different summation order.
        tol = {np.uint8: 1.0, np.float16: 2e-2}.get(x.dtype.type, 1e-5)
        scale = 1.0 if x.dtype == np.uint8 else max(1.0, float(np.abs(want).max()))
        if got.shape != want.shape or not np.allclose(got.astype(float), want.astype(float),
                                                      rtol=0, atol=tol * scale):
            failures.append(f"{onnx.helper.printable_node(model.graph.node[0])} "
                            f"{x.dtype}{list(x.shape)}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------- torch-exported models
class ViewFlatten(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


class PadToMultiple(torch.nn.Module):
    def forward(self, x):
        ph, pw = (4 - x.shape[2] % 4) % 4, (4 - x.shape[3] % 4) % 4
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)) * 2


class SplitHalves(torch.nn.Module):
    def forward(self, x):
        y = x.reshape(x.shape[0], x.shape[1] // 2, 2, -1)
        ones = torch.ones(x.shape[0], 1, 1).expand(x.shape[0], x.shape[1] // 2, y.shape[-1])
        return y.sum(2) + ones


class Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.pos = torch.nn.Parameter(torch.randn(32, 16))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x + self.pos[torch.arange(t)]).split(c, dim=-1)
        q, k, v = (z.view(b, t, 4, -1).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2) / (q.size(-1) ** 0.5)).softmax(-1)
        return (att @ v).transpose(1, 2).reshape(b, t, c)


class Shrink(torch.nn.Module):
    def forward(self, x):  # torch uses the given scale, not in/out: ONNX Resize with scales
        return F.interpolate(x, scale_factor=0.6, mode="bilinear")


TORCH_MODELS = [
    pytest.param(ViewFlatten, (2, 3, 8, 8), id="view-flatten"),
    pytest.param(PadToMultiple, (1, 3, 7, 10), id="computed-pad"),
    pytest.param(SplitHalves, (2, 6, 5), id="computed-reshape-expand"),
    pytest.param(Attention, (2, 10, 16), id="attention-views"),
    pytest.param(Shrink, (1, 2, 7, 9), id="fractional-resize"),
]


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("factory, shape", TORCH_MODELS)
def test_torch_exported_models(tmp_path, factory, shape, dynamo):
    torch.manual_seed(0)
    model, x = factory().eval(), torch.randn(*shape)
    path = tmp_path / "m.onnx"
    kwargs = {"dynamic_axes": {"x": {0: "batch"}}} if not dynamo else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["x"], dynamo=dynamo, **kwargs)
    art = tvm_cruise.build(str(path), target="llvm", input_shapes={"x": list(shape)})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(art.run(x.numpy()), want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- errors and inputs
def _single(op, inputs, outputs, attrs=None, initializers=(), opset=18, elem=TensorProto.FLOAT):
    node = helper.make_node(op, [i[0] for i in inputs] + [i.name for i in initializers],
                            [o for o in outputs], name=f"{op.lower()}_0", **(attrs or {}))
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, elem, s) for n, s in inputs if n],
        [onnx.ValueInfoProto(name=o) for o in outputs[:1]], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)  # the checker wants typed outputs


def test_maxpool_unused_indices_are_dropped():
    model = _single("MaxPool", [("x", [1, 1, 4, 4])], ["y", "idx"],
                    {"kernel_shape": [2, 2], "strides": [2, 2]})
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(tvm_cruise.build(model, target="llvm").run(x),
                                  [[[[5, 7], [13, 15]]]])


def test_maxpool_used_indices_are_refused_with_the_node():
    model = _single("MaxPool", [("x", [1, 1, 4, 4])], ["y", "idx"],
                    {"kernel_shape": [2, 2], "strides": [2, 2]})
    model.graph.output.append(helper.make_tensor_value_info("idx", TensorProto.INT64,
                                                            [1, 1, 2, 2]))
    with pytest.raises(ModelLoadError) as info:
        tvm_cruise.load_model(model)
    text = str(info.value)
    assert "ONNX node 'maxpool_0' (MaxPool)" in text and "idx" in text
    assert "return_indices" in text and "AssertionError" not in text


@pytest.mark.parametrize("elem, dtype", [(TensorProto.INT16, "int16"),
                                         (TensorProto.UINT16, "uint16"),
                                         (TensorProto.UINT32, "uint32"),
                                         (TensorProto.UINT64, "uint64"),
                                         (TensorProto.DOUBLE, "float64"),
                                         (TensorProto.BOOL, "bool")])
def test_every_tvm_dtype_is_accepted(elem, dtype):
    op = "Or" if dtype == "bool" else "Add"
    model = _single(op, [("a", [3]), ("b", [3])], ["y"], elem=elem)
    a, b = np.array([1, 0, 3]).astype(dtype), np.array([4, 0, 1]).astype(dtype)
    out = tvm_cruise.build(model, target="llvm").run(a, b)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, (a | b) if dtype == "bool" else a + b)


def test_unsupported_dtype_names_input_type_and_choices():
    model = _single("Identity", [("z", [2])], ["y"], elem=TensorProto.COMPLEX64)
    with pytest.raises(ModelLoadError) as info:
        tvm_cruise.load_model(model)
    text = str(info.value)
    assert "'z' has element type COMPLEX64 (14)" in text
    assert "uint16" in text and "bfloat16" in text and "Fix:" in text


def test_scalar_inputs_run():
    model = _single("Clip", [("x", [4]), ("lo", []), ("hi", [])], ["y"], opset=13)
    art = tvm_cruise.build(model, target="llvm")
    out = art.run(np.array([-2, 0, 1, 5], np.float32), np.float32(-1), np.array(2, np.float32))
    np.testing.assert_array_equal(out, [-1, 0, 1, 2])


@pytest.mark.parametrize("model, expected", [
    pytest.param(_single("Resize", [("x", [1, 1, 4, 4]), ("", None), ("scales", [4])], ["y"]),
                 "its scales ('scales') is computed at run time", id="resize-runtime-scales"),
    pytest.param(_single("Resize", [("x", [1, 1, 4, 4])], ["y"], opset=10, initializers=[
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")]),
                 "Resize-10", id="resize-opset-10"),
    pytest.param(_single("ConvTranspose", [("x", [1, 1, 3, 3])], ["y"],
                         {"strides": [2, 2], "output_shape": [9, 9]}, initializers=[
                             numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")]),
                 "output_shape [9, 9] is 2 larger", id="convtranspose-output-too-large"),
])
def test_refusals_name_node_reason_and_fix(model, expected):
    with pytest.raises(ModelLoadError) as info:
        tvm_cruise.load_model(model)
    text = str(info.value)
    assert text.startswith("ONNX node '") and expected in text and "Fix:" in text, text


def test_value_dependent_shape_names_the_node_and_its_source():
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nz"),
             helper.make_node("Shape", ["nz"], ["s"], name="sh"),
             helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2, 2])],
                              [onnx.ValueInfoProto(name="y")])
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    with pytest.raises(ModelLoadError) as info:
        tvm_cruise.load_model(model)
    text = str(info.value)
    assert text.startswith("ONNX node 'rs' (Reshape): its output has a shape known only at "
                           "run time") and "'nz' (NonZero)" in text and "Fix:" in text


def test_importer_failure_names_node_without_tvm_noise(capsys):
    model = _single("TopK", [("x", [5]), ("k", [1])], ["y", "i"])
    model.graph.input[1].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(ModelLoadError) as info:
        tvm_cruise.load_model(model)
    text = str(info.value)
    assert text.startswith("ONNX node 'topk_0' (TopK): TVM's importer failed: ValueError: "
                           "TopK k must be a constant") and "input_shapes=" in text
    assert "Error converting operator" not in capsys.readouterr().out


def test_unnamed_nodes_get_names_for_errors_and_reports():
    model = _single("BatchNormalization", [("x", [1, 2, 3])], ["y"], {"training_mode": 1},
                    initializers=[numpy_helper.from_array(np.ones(2, np.float32), n)
                                  for n in ("s", "b", "m", "v")])
    model.graph.node[0].name = ""
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                 [1, 2, 3]))
    with pytest.raises(ModelLoadError, match=r"ONNX node 'BatchNormalization_0' "
                                             r"\(BatchNormalization\): training_mode=1"):
        tvm_cruise.load_model(model)
