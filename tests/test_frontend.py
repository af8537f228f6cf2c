"""Model import from every supported format, and every import error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from tvm import relax

import tvm_cruise
from tvm_cruise.errors import InputMismatchError, ModelLoadError, UnsupportedOpError


class TwoHeads(torch.nn.Module):
    """A model with two outputs of different shapes."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return y, self.fc(y.mean((2, 3)))


def _onnx_relu(dims, op="Relu", opset=17):
    node = helper.make_node(op, ["x"], ["y"], name=f"{op.lower()}_0")
    graph = helper.make_graph(
        [node], "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims if op == "Relu" else [])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_reference_model_by_name():
    imported = tvm_cruise.load_model("perception-cnn")
    assert [str(i) for i in imported.inputs] == ["x: float32[1x3x128x256]"]
    assert imported.outputs[0].shape == (1, 128, 16, 32)
    assert imported.source_format == "pytorch" and imported.name == "perception-cnn"


def test_weights_are_bound_constants():
    imported = tvm_cruise.load_model("perception-cnn")
    assert [p.name for p in imported.mod["main"].params] == ["x"]


def test_torch_module_with_numpy_example_and_two_outputs():
    imported = tvm_cruise.load_model(TwoHeads(), (np.zeros((1, 3, 8, 8), "float32"),))
    assert [o.shape for o in imported.outputs] == [(1, 4, 8, 8), (1, 2)]


def test_exported_program_and_pt2(tmp_path):
    ep = torch.export.export(TwoHeads().eval(), (torch.randn(1, 3, 8, 8),))
    assert tvm_cruise.load_model(ep).outputs[1].shape == (1, 2)
    path = tmp_path / "two.pt2"
    torch.export.save(ep, str(path))
    imported = tvm_cruise.load_model(path)
    assert imported.name == "two" and imported.outputs[0].shape == (1, 4, 8, 8)


def test_relax_irmodule():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.relu(x))
        bb.emit_func_output(y)
    imported = tvm_cruise.load_model(bb.get())
    assert imported.source_format == "relax"
    assert [str(i) for i in imported.inputs] == ["x: float32[2x3]"]


def test_onnx_file_and_proto(onnx_file):
    path = onnx_file("perception-cnn")
    from_file = tvm_cruise.load_model(path)
    from_proto = tvm_cruise.load_model(onnx.load(path))
    assert from_file.source_format == from_proto.source_format == "onnx"
    assert [str(i) for i in from_file.inputs] == ["x: float32[1x3x128x256]"]
    assert from_file.outputs[0].name == "y"


def test_onnx_dynamic_dims_need_shapes():
    model = _onnx_relu(["N", 3])
    with pytest.raises(ModelLoadError) as info:
        tvm_cruise.load_model(model)
    text = str(info.value)
    assert "dynamic dimensions ['N']" in text
    assert "input_shapes={'x': [1, 3]}" in text and "--input-shape x=1x3" in text
    assert tvm_cruise.load_model(model, input_shapes={"x": [4, 3]}).inputs[0].shape == (4, 3)
    assert tvm_cruise.load_model(model, (np.zeros((2, 3), "float32"),)).inputs[0].shape == (2, 3)


@pytest.mark.parametrize("shapes, message", [
    ({"x": [4, 5]}, "has shape \\['N', 3\\] but \\[4, 5\\] was given"),
    ({"x": [4]}, "has shape \\['N', 3\\] but \\[4\\] was given"),
    ({"img": [1, 3]}, "input_shapes names \\['img'\\], which the ONNX model does not have"),
])
def test_onnx_shape_mismatch(shapes, message):
    with pytest.raises(InputMismatchError, match=message):
        tvm_cruise.load_model(_onnx_relu(["N", 3]), input_shapes=shapes)


def test_onnx_unsupported_op_is_named():
    with pytest.raises(UnsupportedOpError) as info:
        tvm_cruise.load_model(_onnx_relu([3, 3], op="Det"))
    assert "ONNX importer cannot convert: Det (nodes 'det_0')" in str(info.value)
    assert "Fix:" in str(info.value)


def test_torch_unsupported_op_is_named():
    class Bessel(torch.nn.Module):
        def forward(self, x):
            return torch.special.bessel_j0(x)

    with pytest.raises(UnsupportedOpError, match="special_bessel_j0.default"):
        tvm_cruise.load_model(Bessel(), (torch.randn(4),))


def test_untraceable_torch_module():
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(ModelLoadError, match="torch.export could not trace DataDependent"):
        tvm_cruise.load_model(DataDependent(), (torch.randn(4),))


def test_torch_module_needs_example_inputs():
    with pytest.raises(ModelLoadError, match="needs example_inputs.*example_inputs=\\(torch"):
        tvm_cruise.load_model(TwoHeads())


def test_torch_module_rejects_input_shapes():
    with pytest.raises(InputMismatchError, match="input_shapes is for ONNX models"):
        tvm_cruise.load_model(TwoHeads(), (torch.randn(1, 3, 8, 8),), input_shapes={"x": [1]})


@pytest.mark.parametrize("thing", [42, {"weights": 1}, [torch.randn(2)]])
def test_not_a_model(thing):
    with pytest.raises(ModelLoadError) as info:
        tvm_cruise.load_model(thing)
    assert "not a model" in str(info.value) and ".onnx file" in str(info.value)


def test_missing_file_lists_bundled_models(tmp_path):
    with pytest.raises(ModelLoadError, match="neither an existing file nor a bundled model.*"
                                             "perception-cnn, resnet18, digits-cnn, transformer"):
        tvm_cruise.load_model(str(tmp_path / "nope.onnx"))


def test_torchscript_suffix_is_explained(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="unsupported model format '.pt'.*torch.export.save"):
        tvm_cruise.load_model(path)


def test_corrupt_files(tmp_path):
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"this is not protobuf" * 10)
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        tvm_cruise.load_model(bad_onnx)
    bad_pt2 = tmp_path / "bad.pt2"
    bad_pt2.write_bytes(b"PK\3\4 truncated zip")
    with pytest.raises(ModelLoadError, match="is not a readable torch.export program"):
        tvm_cruise.load_model(bad_pt2)


def test_irmodule_without_relax_main():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2,), "float32"))
    with bb.function("forward", [x]):
        bb.emit_func_output(x)
    with pytest.raises(ModelLoadError, match="has no 'main' function"):
        tvm_cruise.load_model(bb.get())


def test_unknown_reference_model():
    from tvm_cruise import models

    with pytest.raises(tvm_cruise.UnknownModelError, match="the bundled ones are: perception"):
        models.info("mobilenet")


class _IntegerArithmetic(torch.nn.Module):
    """Integer tensors meeting float scalars and true division, as positional encodings and
    box decoders write them (EdgeNeXt, DETR). TVM's importer gave int64 and truncated
    values for the first ten; PyTorch computes them in float32."""

    def forward(self, x, s):
        return (s * 0.5, s + 0.5, s - 1.5, 1.5 * s, torch.rsub(s, 0.5), s / 4, s / (s + 1),
                7 / (s + 1), torch.exp(s), s.sqrt(),
                # these stay integer, or float because an operand is
                s ** 2, torch.div(s, 4, rounding_mode="floor"), s * x,
                # float tensor divided by Python ints, every rounding mode
                x / 2, torch.div(x, 3, rounding_mode="floor"),
                torch.div(x, 2, rounding_mode="trunc"), 2 / (x.abs() + 1),
                # integer clamps: one-sided (TVM crashed on the infinite bound), float bound
                s.clamp(min=3), s.clamp(max=4), s.clamp(2, 6), s.clamp(min=2.5),
                torch.clamp_min(s, 1), x.clamp(min=-1))


def test_integer_tensors_follow_pytorch_type_promotion():
    x = torch.randn(2, 5) * 10
    s = torch.arange(10, dtype=torch.int64).reshape(2, 5)
    model = _IntegerArithmetic()
    art = tvm_cruise.build(model, target="llvm", example_inputs=(x, s))
    for index, (out, ref) in enumerate(zip(art.run(x, s), model(x, s))):
        assert out.dtype == ref.numpy().dtype, index
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-6, atol=1e-6, err_msg=str(index))


def test_onnx_inputs_keep_the_names_the_model_gives_them(tmp_path):
    # TVM's ONNX importer renames "input.1" to "input_1"; users pass the model's names
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("out.0", TensorProto.FLOAT, [1, 4])
    graph_ = helper.make_graph([helper.make_node("Relu", ["input.1"], ["out.0"])], "g", [x], [y])
    model = helper.make_model(graph_, opset_imports=[helper.make_opsetid("", 17)])
    art = tvm_cruise.build(model, target="llvm")
    assert [i.name for i in art.input_info] == ["input.1"]
    a = np.array([[-1, 2, -3, 4]], np.float32)
    np.testing.assert_array_equal(art.run(**{"input.1": a}), np.maximum(a, 0))
    np.savez(tmp_path / "in.npz", **{"input.1": a})
    from conftest import run_cli

    path = art.export_library(tmp_path / "m.so")
    proc = run_cli("run", path, "--inputs", tmp_path / "in.npz", "--save", tmp_path / "o.npz")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o.npz")["out.0"], np.maximum(a, 0))


class _Extremes(torch.nn.Module):
    def forward(self, x):
        v, i = x.max(dim=1)
        w, j = torch.min(x, 2, keepdim=True)
        return v, i, w, j, x.amax(dim=(1, 2)), torch.amin(x, dim=-1, keepdim=True)


def test_max_min_over_a_dim_are_reductions_with_pytorch_indices():
    """max.dim / min.dim import as max + argmax (TVM: a topk sort, and no min.dim), amax /
    amin as reductions; a tie gives the first index, as PyTorch does."""
    x = torch.randn(3, 5, 7)
    x[0, 1, 2] = x[0, 3, 2] = 9.0
    x[1, 2, 4] = x[1, 2, 6] = -9.0
    model = _Extremes()
    imported = tvm_cruise.load_model(model, (x,))
    ops = tvm_cruise.frontend.op_counts(imported.mod)
    assert "relax.topk" not in ops and ops.get("relax.argmax") == 1, ops
    outs = tvm_cruise.build(imported, target="llvm").run(x.numpy())
    for out, ref in zip(outs, model(x)):
        assert np.asarray(out).dtype == ref.numpy().dtype
        np.testing.assert_array_equal(np.asarray(out), ref.numpy())
