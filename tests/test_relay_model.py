"""The bundled pillar-bev model: every custom op in one network, on every target kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tvm_cruise

from conftest import FP16_BOUND, FP32_BOUND, rel_err

CUSTOM = {"relax.cruise.pillar_scatter", "relax.cruise.multi_scale_deformable_attention",
          "relax.cruise.deformable_conv2d"}


@pytest.fixture(scope="module")
def bev(reference):
    return reference("pillar-bev")


def test_imports_with_every_custom_op(bev):
    imported = tvm_cruise.load_model("pillar-bev")
    ops = tvm_cruise.frontend.op_counts(imported.mod)
    assert CUSTOM <= set(ops), ops
    assert [str(i) for i in imported.inputs] == ["points: float32[512x16x4]",
                                                 "coords: int32[512x4]"]


def test_llvm_matches_pytorch(bev, built):
    _, inputs, ref = bev
    art = built("pillar-bev", "llvm")
    assert rel_err(art.run(*[i.numpy() for i in inputs]), ref) < FP32_BOUND


@pytest.mark.parametrize("target", ["cruise-npu", "cruise-npu-lite"])
def test_accelerator_build_places_custom_ops_on_host(bev, built, target):
    _, inputs, ref = bev
    art = built("pillar-bev", target)
    assert rel_err(art.run(*[i.numpy() for i in inputs]), ref) < FP16_BOUND
    ops = art.metadata["placement"]["ops"]
    custom = [o for o in ops if o["op"] in CUSTOM]
    assert len(custom) == 3 and all(o["device"] == "host" and o["rules"] == ["custom-op"]
                                    for o in custom)
    # the convolutions around them are accelerator work
    assert sum(o["device"] != "host" and o["op"] == "relax.nn.conv2d" for o in ops) >= 5


def test_other_inputs_still_match(bev, built):
    """New pillars at other cells: the scatter's output depends on the run's coords."""
    from tvm_cruise.models.zoo import PillarBEV

    module, _, _ = bev
    points, coords = PillarBEV.sample_inputs(torch.Generator().manual_seed(99))
    with torch.no_grad():
        ref = module(points, coords).numpy()
    out = built("pillar-bev", "llvm").run(points.numpy(), coords.numpy())
    assert rel_err(out, ref) < FP32_BOUND


def test_report_attributes_custom_kernels_to_their_ops():
    rep = tvm_cruise.report("pillar-bev", "llvm", repeat=2)
    rows = rep.data["performance"]["host"]["kernels"]
    by_kernel = {r["symbol"]: r for r in rows}
    for kernel, op in (("cruise_pillar_winner", "pillar_scatter"),
                       ("cruise_pillar_scatter", "pillar_scatter"),
                       ("cruise_msda", "multi_scale_deformable_attention")):
        assert kernel in by_kernel, sorted(by_kernel)
        assert by_kernel[kernel]["names"] == [op], by_kernel[kernel]
        assert by_kernel[kernel]["schedule"] == "default"
    assert not any(r["schedule"] == "unscheduled" for r in rows), \
        [r["symbol"] for r in rows if r["schedule"] == "unscheduled"]


def test_default_schedules_opt_out_keeps_results():
    """The custom ops' schedules (and the default ones) change no result: a build with them
    equals one with TVM's lowering."""
    on = tvm_cruise.build("pillar-bev", target="llvm")
    off = tvm_cruise.build("pillar-bev", target="llvm", default_schedules=False)
    kinds_on = on.metadata["tuning"]
    kinds_off = off.metadata["tuning"]
    assert kinds_on["default_scheduled"] > kinds_off["default_scheduled"] == 0
    np.testing.assert_allclose(on.run(*[a for a in on.random_inputs().values()]),
                               off.run(*[a for a in on.random_inputs().values()]),
                               rtol=1e-5, atol=1e-5)


def test_onnx_export_and_import(bev, tmp_path):
    """torch's dynamo exporter writes the three ops as DeformConv (opset 19) and com.cruise
    nodes; the ONNX model builds and matches PyTorch."""
    import onnx

    from tvm_cruise import models

    _, inputs, ref = bev
    path = models.export_onnx("pillar-bev", tmp_path / "bev.onnx")
    nodes = {(n.domain, n.op_type) for n in onnx.load(path).graph.node}
    assert {("", "DeformConv"), ("com.cruise", "PillarScatter"),
            ("com.cruise", "MultiScaleDeformableAttention")} <= nodes
    art = tvm_cruise.build(path, target="llvm")
    assert rel_err(art.run(*[i.numpy() for i in inputs]), ref) < FP32_BOUND
