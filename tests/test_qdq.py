"""QDQ ONNX models (ONNX Runtime's ``quantize_static``): imported as their float model, with
the model's own activation ranges as int8 scales. The int8 NPU build is compared with ONNX
Runtime running the same QDQ model; every form tvm-cruise refuses names the node and the fix.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)

import tvm_cruise
from tvm_cruise import models
from tvm_cruise.build import capture_details
from tvm_cruise.calibration import ModelRanges, load_calibration, model_ranges
from tvm_cruise.errors import ModelLoadError, UnsupportedOpError
from tvm_cruise.frontend import op_counts
from tvm_cruise.models.zoo import digits_data, trained_digits
from tvm_cruise.onnx_prep import prepare_with_ranges

from conftest import rel_err

DATA = digits_data()
IMAGES = DATA["heldout_images"]
VARIANTS = {  # quantize_static options
    "int8-asymmetric": {},  # ORT's defaults: QInt8 activations (asymmetric), per-tensor weights
    "uint8-asymmetric": {"activation_type": QuantType.QUInt8},
    "symmetric-per-channel": {"per_channel": True,
                              "extra_options": {"ActivationSymmetric": True}},
}


class _Reader(CalibrationDataReader):
    def __init__(self, samples):
        self.samples = iter([{"x": s} for s in samples])

    def get_next(self):
        return next(self.samples, None)


def _quantize(float_path, out_path, samples, **options) -> str:
    quantize_static(str(float_path), str(out_path), _Reader(samples), **{
        "quant_format": QuantFormat.QDQ, **options})
    return str(out_path)


def _ort(path):
    """ONNX Runtime running the QDQ graph as written: every QuantizeLinear and
    DequantizeLinear executed, float ops between them -- the model's defined arithmetic.
    With graph optimizations on, ORT fuses the QDQ pairs into int8 kernels whose result
    depends on the CPU: on AVX2 without VNNI their 8-bit dot products saturate (measured
    on an AMD EPYC, znver3: the symmetric per-channel digits model scores 0.9361 top-1
    fused, 0.9806 unfused; fused, it scored 0.9806 in docs/npu_compiler.md's 2026-12-02
    measurement on another CPU)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class ResidualNet(torch.nn.Module):
    """conv-relu stem, a residual block (conv-relu, conv, add, relu), a 1x1 conv head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.a = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        return self.head(torch.relu(self.b(torch.relu(self.a(s))) + s))


def _noise(n: int, seed: int, shape=(1, 3, 16, 16)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype("float32") for _ in range(n)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """``{variant: path}`` of digits-cnn quantized by ORT, plus the float model ("float")."""
    folder = tmp_path_factory.mktemp("qdq_digits")
    float_path = models.export_onnx("digits-cnn", folder / "digits.onnx")
    calib = [image[None] for image in DATA["calibration_images"]]
    paths = {"float": float_path}
    for variant, options in VARIANTS.items():
        paths[variant] = _quantize(float_path, folder / f"{variant}.onnx", calib, **options)
    return paths


@pytest.fixture(scope="module")
def ort_digits(digits):
    """ONNX Runtime's top-1 class of each held-out digit, per variant."""
    out = {}
    for variant in VARIANTS:
        session = _ort(digits[variant])
        out[variant] = np.array([int(session.run(None, {"x": IMAGES[i:i + 1]})[0].argmax())
                                 for i in range(len(IMAGES))])
    return out


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qdq_residual")
    model = ResidualNet().eval()
    path = folder / "residual.onnx"
    torch.onnx.export(model, (torch.from_numpy(_noise(1, 0)[0]),), str(path),
                      input_names=["x"], output_names=["y"], dynamo=True, external_data=False)
    return model, _quantize(path, folder / "residual_qdq.onnx", _noise(16, 1))


def _predict(art) -> np.ndarray:
    return np.array([int(art.run(IMAGES[i:i + 1]).argmax()) for i in range(len(IMAGES))])


# -- import: the float model and the recorded ranges ---------------------------------------------
def test_qdq_model_imports_as_its_float_model(digits):
    proto = onnx.load(digits["int8-asymmetric"])
    stripped, ranges = prepare_with_ranges(proto, {"x": [1, 1, 8, 8]})
    ops = {n.op_type for n in stripped.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"}
    # weights: exactly (q - zero point) · scale
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    dq = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear"
              and n.input[0].startswith("conv2.weight"))
    want = (init[dq.input[0]].astype(np.float32) - init[dq.input[2]]) * init[dq.input[1]]
    got = {t.name: numpy_helper.to_array(t) for t in stripped.graph.initializer}[dq.output[0]]
    np.testing.assert_array_equal(got, want)
    assert ranges.weights == 8  # 4 weights, 4 biases
    # ORT removed the three relus (their range starts at 0): each comes back as a Relu
    assert len(ranges.restored) == 3 and op_counts(
        tvm_cruise.load_model(digits["int8-asymmetric"]).mod)["relax.nn.relu"] == 3
    x = ranges.inputs["x"]
    assert x.rmin == 0.0 and x.rmax == pytest.approx(1.0, abs=1e-3) and x.dtype == "int8"
    assert all(r.rmin == 0.0 for name, r in ranges.nodes.items() if name != "node_linear")


def test_stripped_model_matches_the_float_model(digits):
    art = tvm_cruise.build(digits["int8-asymmetric"], "llvm")
    with torch.no_grad():
        want = trained_digits()(torch.from_numpy(IMAGES[:32])).numpy()
    got = np.concatenate([art.run(IMAGES[i:i + 1]) for i in range(32)])
    # the weights are the quantized ones: measured 4e-3 of the largest logit
    assert rel_err(got, want) < 1e-2
    assert (got.argmax(1) == want.argmax(1)).all()


def test_ranges_map_onto_symmetric_int8(digits):
    per_variant = {v: tvm_cruise.load_model(digits[v]).quantization for v in VARIANTS}
    uint8 = per_variant["uint8-asymmetric"].inputs["x"]
    assert uint8.dtype == "uint8" and uint8.zero_point == 0 and not uint8.symmetric
    assert uint8.amax == pytest.approx(255 * uint8.scale)  # one-sided: 7 bits of int8 used
    symmetric = per_variant["symmetric-per-channel"].nodes["node_linear"]
    assert symmetric.symmetric and symmetric.amax == pytest.approx(127 * symmetric.scale)


# -- int8 builds with the model's scales --------------------------------------------------------
@pytest.mark.cruise_npu
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_int8_with_the_models_scales_agrees_with_onnxruntime(digits, ort_digits, variant):
    imported = tvm_cruise.load_model(digits[variant])
    ranges = model_ranges(imported)
    assert isinstance(ranges, ModelRanges) and load_calibration(ranges, []) is ranges
    # build() takes a QDQ model's own scales when no calibration data is given
    art = tvm_cruise.build(digits[variant], "cruise-npu", precision="int8")
    assert art.placement.mac_share == 1.0 and not art.placement.host_ops
    assert art.metadata["extensions"]["calibration"]["method"] == "model"
    agreement = (_predict(art) == ort_digits[variant]).mean()
    assert agreement >= 0.99, (variant, agreement)  # measured: 360/360 for each variant


@pytest.mark.cruise_npu
def test_per_channel_weights_keep_the_models_int8_values(digits):
    """ORT's per-channel int8 weights use max|W[c]| / 127 like the NPU: re-quantizing the
    dequantized weights gives back the model's own integers."""
    imported = tvm_cruise.load_model(digits["symmetric-per-channel"])
    with capture_details() as captured:
        tvm_cruise.build(imported, "cruise-npu", precision="int8",
                         calibration=model_ranges(imported))
    convs = [layer.weight for c in captured[0].stage.compiled for layer in c.graph.layers
             if layer.kind == "conv2d"]
    init = {t.name: numpy_helper.to_array(t)
            for t in onnx.load(digits["symmetric-per-channel"]).graph.initializer}
    for k, weight in enumerate(convs, start=1):
        np.testing.assert_array_equal(weight, init[f"conv{k}.weight_quantized"])


@pytest.mark.cruise_npu
def test_residual_model_int8_matches_onnxruntime(residual):
    model, path = residual
    imported = tvm_cruise.load_model(path)
    assert len(imported.quantization.restored) == 3  # stem, a, and the block's add
    art = tvm_cruise.build(imported, "cruise-npu", precision="int8",
                           calibration=model_ranges(imported))
    assert not art.placement.host_ops
    session = _ort(path)
    inputs = _noise(4, 2)
    errors = [rel_err(art.run(x), session.run(None, {"x": x})[0]) for x in inputs]
    # measured: 0.018-0.023 against ORT unfused (its own error vs fp32: 0.012-0.072)
    assert max(errors) < 0.05, errors
    # the stripped float model is the fp32 model with the quantized weights
    fp32 = tvm_cruise.build(imported, "llvm")
    with torch.no_grad():
        drift = [rel_err(fp32.run(x), model(torch.from_numpy(x)).numpy()) for x in inputs]
    assert max(drift) < 0.02, drift


@pytest.mark.cruise_npu
def test_layer_without_recorded_range_runs_on_the_host_unless_samples_fill_it(digits, tmp_path):
    calib = [image[None] for image in DATA["calibration_images"]]
    path = _quantize(digits["float"], tmp_path / "partial.onnx", calib,
                     nodes_to_exclude=["node_conv2d_2"])
    imported = tvm_cruise.load_model(path)
    art = tvm_cruise.build(imported, "cruise-npu", precision="int8",
                           calibration=model_ranges(imported))
    host = {o.node: " ".join(o.reasons) for o in art.placement.host_ops}
    assert "node_conv2d_2" in host and "no calibration range" in host["node_conv2d_2"]
    # samples given with a QDQ model: its scales win, the samples fill what it lacks
    art = tvm_cruise.build(imported, "cruise-npu", precision="int8", calibration=calib[:16])
    assert not art.placement.host_ops
    assert art.metadata["extensions"]["calibration"]["fallback"]["samples"] == 16


def test_float_model_records_no_ranges(digits):
    assert model_ranges(tvm_cruise.load_model(digits["float"])) is None


# -- the relu ORT removed comes back ------------------------------------------------------------
def test_relu_removed_by_onnxruntime_is_restored(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 6, 6])
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((3, 2, 3, 3))
                                .astype("float32"), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    float_model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]),
                                    opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(float_model, tmp_path / "conv_relu.onnx")
    samples = _noise(8, 4, (1, 2, 6, 6))
    path = _quantize(tmp_path / "conv_relu.onnx", tmp_path / "qdq.onnx", samples)
    assert "Relu" not in {n.op_type for n in onnx.load(path).graph.node}  # ORT removed it
    imported = tvm_cruise.load_model(path)
    assert imported.quantization.restored == ("conv/Relu",)
    out = tvm_cruise.build(imported, "llvm").run(_noise(1, 5, (1, 2, 6, 6))[0])
    assert out.min() == 0.0 and out.max() > 0.0


# -- refused forms -------------------------------------------------------------------------------
def test_operator_format_model_is_refused_with_the_fix(digits, tmp_path):
    calib = [image[None] for image in DATA["calibration_images"][:8]]
    path = _quantize(digits["float"], tmp_path / "qop.onnx", calib,
                     quant_format=QuantFormat.QOperator)
    with pytest.raises(UnsupportedOpError) as err:  # a ModelLoadError
        tvm_cruise.load_model(path)
    text = str(err.value)
    assert "QLinearConv ('node_conv2d_quant'" in text and "QGemm" in text
    assert "quant_format=QuantFormat.QDQ" in text


def _tensor(name, dtype, values):
    return numpy_helper.from_array(
        np.asarray(values, dtype=helper.tensor_dtype_to_np_dtype(dtype)), name)


def _model(nodes, initializers=(), x_type=TensorProto.FLOAT, y_type=TensorProto.FLOAT):
    x = helper.make_tensor_value_info("x", x_type, [1, 4])
    y = helper.make_tensor_value_info("y", y_type, [1, 4])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], list(initializers)),
                             opset_imports=[helper.make_opsetid("", 21)])


def _pair(zero_point, scale=0.1, dq_scale=None, **q_attrs):
    """x → QuantizeLinear 'quant' → DequantizeLinear 'dequant' → y."""
    zp = numpy_helper.from_array(np.asarray(zero_point), "z")
    inits = [_tensor("s", TensorProto.FLOAT, scale), zp]
    dq_inputs = ["q", "s", "z"]
    if dq_scale is not None:
        inits.append(_tensor("s2", TensorProto.FLOAT, dq_scale))
        dq_inputs[1] = "s2"
    return _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant",
                                    **q_attrs),
                   helper.make_node("DequantizeLinear", dq_inputs, ["y"], name="dequant",
                                    **q_attrs)], inits)


_INT8_ZP = np.int8(0)
_SCALE_ZP = [_tensor("s", TensorProto.FLOAT, 0.1), _tensor("z", TensorProto.INT8, 0)]


@pytest.mark.parametrize("model, node, why", [
    pytest.param(_model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"],
                                          name="lonely")], _SCALE_ZP, y_type=TensorProto.INT8),
                 "'lonely' (QuantizeLinear)", "is a graph output", id="q-is-graph-output"),
    pytest.param(_model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"],
                                          name="quant"),
                         helper.make_node("Cast", ["q"], ["y"], name="cast",
                                          to=TensorProto.FLOAT)], _SCALE_ZP),
                 "'quant' (QuantizeLinear)", "is read by 'cast' (Cast)", id="q-not-to-dq"),
    pytest.param(_model([helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"],
                                          name="raw")], _SCALE_ZP, x_type=TensorProto.INT8),
                 "'raw' (DequantizeLinear)", "neither a constant nor", id="dq-of-int-input"),
    pytest.param(_pair(np.int16(0)), "'quant' (QuantizeLinear)", "to INT16",
                 id="int16-activation"),
    pytest.param(_pair(np.zeros(4, np.int8), scale=[0.1, 0.2, 0.3, 0.4], axis=1),
                 "'quant' (QuantizeLinear)", "per-axis scales (4 along axis 1)",
                 id="per-axis-activation"),
    pytest.param(_pair(np.zeros((1, 2), np.int8), scale=[[0.1, 0.2]], axis=1, block_size=2),
                 "'quant' (QuantizeLinear)", "block quantization (block_size=2)",
                 id="block-quantization"),
    pytest.param(_pair(_INT8_ZP, dq_scale=0.2), "'dequant' (DequantizeLinear)",
                 "a requantization", id="dq-scale-differs"),
])
def test_unsupported_quantization_names_the_node_and_fix(model, node, why):
    with pytest.raises(ModelLoadError) as err:
        tvm_cruise.load_model(model)
    text = str(err.value)
    assert f"ONNX node {node}" in text and why in text and "Fix:" in text, text


def test_int8_pair_strips_to_the_float_model():
    imported = tvm_cruise.load_model(_pair(_INT8_ZP))
    assert imported.quantization.inputs["x"].amax == pytest.approx(12.7)
    x = np.array([[-3.0, -0.04, 0.5, 20.0]], "float32")
    np.testing.assert_array_equal(tvm_cruise.build(imported, "llvm").run(x), x)


@pytest.mark.cruise_npu
def test_sensitivity_of_a_qdq_model_uses_its_scales(digits):
    held_out = [image[None] for image in IMAGES[:12]]
    with pytest.raises(tvm_cruise.BuildError, match="pass data= samples"):
        tvm_cruise.sensitivity(digits["int8-asymmetric"])
    rep = tvm_cruise.sensitivity(digits["int8-asymmetric"], data=held_out, layers=2)
    assert rep.method == "model" and len(rep.layers) == 2
