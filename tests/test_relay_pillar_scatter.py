"""pillar_scatter: reference vs a naive loop, both import paths, llvm / cruise-npu / CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tvm_cruise
from tvm_cruise import cuda
from tvm_cruise.errors import ModelLoadError, UnsupportedOpError
from tvm_cruise.relay_ops import pillar_scatter as ps

from conftest import FP16_BOUND, rel_err


def naive(features, coords, batch, ny, nx):
    """One pillar at a time, in order: a later pillar overwrites an earlier one."""
    out = np.zeros((batch, features.shape[1], ny, nx), features.dtype)
    for f, (b, z, y, x) in zip(features, coords):
        if 0 <= b < batch and z == 0 and 0 <= y < ny and 0 <= x < nx:
            out[b, :, y, x] = f
    return out


def random_case(seed=0, p=60, c=5, batch=2, ny=6, nx=7, dtype=torch.int32):
    """Pillars with padding (-1), z != 0, out-of-range cells and many duplicates."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack([
        torch.randint(-1, batch + 1, (p,), generator=g),
        torch.where(torch.rand(p, generator=g) < 0.15, 1, 0),
        torch.randint(-1, ny + 1, (p,), generator=g),
        torch.randint(-1, nx + 1, (p,), generator=g)], 1).to(dtype)
    return torch.randn(p, c, generator=g), coords


class Scatter(torch.nn.Module):
    def __init__(self, batch, ny, nx):
        super().__init__()
        self.shape = (batch, ny, nx)

    def forward(self, features, coords):
        return ps.pillar_scatter(features, coords, *self.shape)


@pytest.mark.parametrize("seed", range(3))
def test_reference_matches_naive_loop(seed):
    features, coords = random_case(seed)
    assert len(set(map(tuple, coords.tolist()))) < len(coords)  # duplicates present
    got = ps.reference(features, coords, 2, 6, 7).numpy()
    np.testing.assert_array_equal(got, naive(features.numpy(), coords.numpy(), 2, 6, 7))


def test_duplicate_cell_takes_highest_pillar_index():
    features = torch.tensor([[1.0], [2.0], [3.0]])
    coords = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
    art = tvm_cruise.build(Scatter(1, 2, 2), target="llvm", example_inputs=(features, coords))
    out = np.asarray(art.run(features.numpy(), coords.numpy()))
    assert out[0, 0, 1, 1] == 2.0 and out[0, 0, 0, 0] == 3.0 and out.sum() == 5.0


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64], ids=["int32", "int64"])
def test_torch_import_llvm_equals_reference(dtype):
    features, coords = random_case(1, dtype=dtype)
    art = tvm_cruise.build(Scatter(2, 6, 7), target="llvm", example_inputs=(features, coords))
    out = art.run(features.numpy(), coords.numpy())
    np.testing.assert_array_equal(np.asarray(out),
                                  naive(features.numpy(), coords.numpy(), 2, 6, 7))
    # a second call with other pillars: nothing is left over from the first
    features2, coords2 = random_case(2, dtype=dtype)
    out2 = art.run(features2.numpy(), coords2.numpy())
    np.testing.assert_array_equal(np.asarray(out2),
                                  naive(features2.numpy(), coords2.numpy(), 2, 6, 7))


def test_all_pillars_empty_gives_zeros():
    features, coords = torch.randn(8, 3), torch.full((8, 4), -1, dtype=torch.int32)
    art = tvm_cruise.build(Scatter(1, 4, 4), target="llvm", example_inputs=(features, coords))
    assert not np.asarray(art.run(features.numpy(), coords.numpy())).any()


def _onnx_model(p, c, batch, ny, nx, attrs=None, domain="com.cruise", coord_cols=4):
    import onnx
    from onnx import TensorProto, helper

    attrs = {"batch_size": batch, "ny": ny, "nx": nx} if attrs is None else attrs
    node = helper.make_node("PillarScatter", ["features", "coords"], ["bev"], name="scatter",
                            domain=domain, **attrs)
    relu = helper.make_node("Relu", ["bev"], ["out"], name="relu")
    graph = helper.make_graph(
        [node, relu], "pillars",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [p, c]),
         helper.make_tensor_value_info("coords", TensorProto.INT32, [p, coord_cols])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, c, ny, nx])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(domain, 1)])


def test_onnx_custom_domain_node_llvm():
    features, coords = random_case(3)
    art = tvm_cruise.build(_onnx_model(60, 5, 2, 6, 7), target="llvm")
    out = art.run(features.numpy(), coords.numpy())
    ref = np.maximum(naive(features.numpy(), coords.numpy(), 2, 6, 7), 0)
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_torch_onnx_export_writes_the_custom_node(tmp_path):
    import onnx

    ps.register_onnx_symbolic()
    features, coords = random_case(4)
    path = tmp_path / "scatter.onnx"
    torch.onnx.export(Scatter(2, 6, 7), (features, coords), str(path), dynamo=False,
                      opset_version=17, custom_opsets={"com.cruise": 1})
    model = onnx.load(str(path))
    assert [(n.domain, n.op_type) for n in model.graph.node] == [("com.cruise", "PillarScatter")]
    art = tvm_cruise.build(str(path), target="llvm")
    np.testing.assert_array_equal(np.asarray(art.run(features.numpy(), coords.numpy())),
                                  naive(features.numpy(), coords.numpy(), 2, 6, 7))


def test_dynamo_onnx_export_writes_the_custom_node():
    import onnx

    from tvm_cruise.relay_ops.registry import onnx_translation_table

    features, coords = random_case(7)
    program = torch.onnx.export(Scatter(2, 6, 7).eval(), (features, coords), dynamo=True,
                                opset_version=18, verbose=False,
                                custom_translation_table=onnx_translation_table())
    model = program.model_proto
    onnx.checker.check_model(model)  # the com.cruise schema is registered with ONNX
    assert [(n.domain, n.op_type) for n in model.graph.node] == [("com.cruise", "PillarScatter")]
    art = tvm_cruise.build(model, target="llvm")
    np.testing.assert_array_equal(np.asarray(art.run(features.numpy(), coords.numpy())),
                                  naive(features.numpy(), coords.numpy(), 2, 6, 7))


def test_onnx_node_in_another_domain_is_refused():
    with pytest.raises(UnsupportedOpError, match=r"PillarScatter \(domain ai.other\).*'scatter'"):
        tvm_cruise.build(_onnx_model(8, 2, 1, 4, 4, domain="ai.other"), target="llvm")


def test_onnx_missing_attribute_is_a_clear_error():
    # ONNX's checker names it once the com.cruise schema is registered (an export did)
    with pytest.raises(ModelLoadError, match=r"'scatter'.*attributes \['nx'\]|attribute 'nx' "
                                             r"is missing[\s\S]*Name: scatter"):
        tvm_cruise.build(_onnx_model(8, 2, 1, 4, 4, attrs={"batch_size": 1, "ny": 4}),
                         target="llvm")


def test_onnx_bad_coords_shape_is_a_clear_error():
    with pytest.raises(ModelLoadError, match=r"'scatter'.*coords must be \(8, 4\) \(batch, z, y, "
                                             r"x\).*got \(8, 3\)"):
        tvm_cruise.build(_onnx_model(8, 2, 1, 4, 4, coord_cols=3), target="llvm")


def test_bad_coords_shape_is_a_clear_error():
    class Bad(torch.nn.Module):
        def forward(self, features, coords):
            return ps.pillar_scatter(features, coords[:, 1:], 1, 4, 4)

    with pytest.raises(ModelLoadError, match=r"coords \(P, 4\) \(batch, z, y, x\), got "
                                             r"\(8, 2\) and \(8, 3\)"):
        tvm_cruise.build(Bad(), target="llvm",
                         example_inputs=(torch.randn(8, 2), torch.zeros(8, 4, dtype=torch.int32)))


class BevHead(torch.nn.Module):
    """Scatter, then a BEV conv: the conv is accelerator work, the scatter is not."""

    def __init__(self, c=8):
        super().__init__()
        torch.manual_seed(0)
        self.encode = torch.nn.Linear(4, c)
        self.conv = torch.nn.Conv2d(c, 16, 3, padding=1)

    def forward(self, points, coords):
        return torch.relu(self.conv(ps.pillar_scatter(torch.relu(self.encode(points)), coords,
                                                      1, 16, 16)))


def test_cruise_npu_places_scatter_on_host_with_reason():
    g = torch.Generator().manual_seed(5)
    points = torch.randn(40, 4, generator=g)
    cells = torch.randperm(256, generator=g)[:40]
    coords = torch.stack([torch.zeros(40, dtype=torch.long), torch.zeros(40, dtype=torch.long),
                          cells // 16, cells % 16], 1).int()
    model = BevHead().eval()
    art = tvm_cruise.build(model, target="cruise-npu", example_inputs=(points, coords))
    with torch.no_grad():
        ref = model(points, coords).numpy()
    assert rel_err(art.run(points.numpy(), coords.numpy()), ref) < FP16_BOUND
    host = [op for op in art.metadata["placement"]["ops"] if op["device"] == "host"]
    scatter = [op for op in host if "pillar_scatter" in op["op"]]
    assert scatter and scatter[0]["rules"] == ["custom-op"]
    assert "custom operator" in scatter[0]["reasons"][0]
    assert any("conv2d" in op["op"] for op in art.metadata["placement"]["ops"]
               if op["device"] != "host")


@pytest.mark.cuda
@pytest.mark.skipif(cuda.find_nvcc() is None, reason="nvcc not installed")
def test_cuda_build_compiles_with_nvcc():
    features, coords = random_case(6)
    art = tvm_cruise.build(Scatter(2, 6, 7), target="cuda", example_inputs=(features, coords),
                           check_cuda=False)
    source = cuda.cuda_source(art)
    assert "__global__" in source
    assert cuda.compile_check(art, arch="sm_87")["cubin_bytes"] > 1000


def test_tuning_job_leaves_the_hand_scheduled_kernels_alone(tmp_path):
    from tvm_cruise.autotune.host import tune_host

    features, coords = random_case(8)
    lines = []
    report = tune_host(Scatter(2, 6, 7), "llvm", tmp_path, trials=4,
                       example_inputs=(features, coords), progress=lines.append)
    assert report.tasks == [] and report.new_records == 0
    assert "2 kernels written scheduled by custom ops, not tuned: " in lines[0]
    assert "cruise_pillar_winner" in lines[0] and "cruise_pillar_scatter" in lines[0]
