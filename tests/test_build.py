"""Build + run for every host target and reference model, against PyTorch / ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tvm_cruise
from tvm_cruise.errors import BuildError, InputMismatchError

from conftest import FP16_BOUND, FP32_BOUND, rel_err

HOST_TARGETS = [
    pytest.param("llvm", marks=pytest.mark.llvm),
    pytest.param("cruise-npu", marks=pytest.mark.cruise_npu),
    pytest.param("cruise-npu-lite", marks=pytest.mark.cruise_npu_lite),
]
MODELS = ["perception-cnn", "resnet18", "transformer"]


@pytest.mark.parametrize("target", HOST_TARGETS)
@pytest.mark.parametrize("model", MODELS)
def test_matches_pytorch(built, reference, model, target):
    _, inputs, ref = reference(model)
    art = built(model, target)
    out = art.run(*inputs)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert art.metadata["target"]["name"] == target
    if art.placement is None:
        assert rel_err(out, ref) <= FP32_BOUND
    else:
        # The offloaded part runs as NPU programs in fp16: within the fp16 bound of PyTorch
        # and of the fp32 host build, and measurably not fp32 (the policy really applied).
        assert art.placement.accelerator_ops and art.npu_stats() is not None
        host = built(model, "llvm").run(*inputs)
        assert FP32_BOUND < rel_err(out, ref) <= FP16_BOUND
        assert rel_err(out, host) <= FP16_BOUND


@pytest.mark.cruise_npu
@pytest.mark.parametrize("model", MODELS)
def test_onnx_matches_onnxruntime(onnx_file, reference, model):
    import onnxruntime as ort

    path = onnx_file(model)
    _, inputs, _ = reference(model)
    x = inputs[0].numpy()
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    art = tvm_cruise.build(path, target="cruise-npu")
    assert art.metadata["model"]["source_format"] == "onnx"
    assert rel_err(art.run(x=x), ref) <= FP16_BOUND
    if model == "perception-cnn":  # and the fp32 host build, exact to fp32 rounding
        host = tvm_cruise.build(path, target="llvm")
        assert rel_err(host.run(x=x), ref) <= FP32_BOUND


def test_reference_outputs_are_order_one(reference):
    for name in MODELS:
        _, _, ref = reference(name)
        assert 0.5 < np.abs(ref).max() < 50, name
        assert 0.1 < ref.std() < 10, name


def test_reference_models_are_seeded():
    from tvm_cruise import models

    a, _ = models.get("perception-cnn")
    b, _ = models.get("perception-cnn")
    assert a is not b  # two builds, not one cached module compared with itself
    assert list(a.state_dict()) == list(b.state_dict())
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ta is not tb and torch.equal(ta, tb), na
    bn = a.features[0][1]
    # Non-trivial statistics: measured on a calibration batch, not the 0/1 defaults.
    assert bn.running_mean.abs().max() > 1e-2
    assert (bn.running_var - 1).abs().max() > 1e-2


# -- run() ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_heads():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, image, scale):
            y = torch.relu(self.conv(image)) * scale
            return y, self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    model = TwoHeads().eval()
    inputs = (torch.randn(1, 3, 8, 8), torch.randn(1, 4, 1, 1))
    return model, inputs, tvm_cruise.build(model, target="llvm", example_inputs=inputs)


def test_run_accepts_torch_numpy_and_names(two_heads):
    model, (image, scale), art = two_heads
    with torch.no_grad():
        ref = [t.numpy() for t in model(image, scale)]
    for outs in (art.run(image, scale), art.run(image.numpy(), scale.numpy()),
                 art.run(scale=scale, image=image), art.run(image, scale=scale.numpy())):
        assert isinstance(outs, list) and len(outs) == 2
        for out, r in zip(outs, ref):
            assert rel_err(out, r) <= FP32_BOUND
    assert [i.name for i in art.input_info] == ["image", "scale"]
    assert [o.shape for o in art.output_info] == [(1, 4, 8, 8), (1, 2)]


@pytest.mark.parametrize("call, message", [
    (lambda a, i, s: a.run(i), "missing inputs \\['scale'\\]"),
    (lambda a, i, s: a.run(i, s, s), "3 positional inputs given but the model takes 2"),
    (lambda a, i, s: a.run(i, s, bias=s), "unknown input 'bias'"),
    (lambda a, i, s: a.run(i, s, image=i), "input 'image' given both by position and by name"),
    (lambda a, i, s: a.run(i[:, :2], s), "input 'image' has shape \\(1, 2, 8, 8\\) but the "
                                          "model was compiled for \\(1, 3, 8, 8\\)"),
    (lambda a, i, s: a.run(i.double(), s), "input 'image' has dtype float64 but the model "
                                           "expects float32; fix: convert it"),
    (lambda a, i, s: a.run(object(), s), "input 'image': could not convert"),
])
def test_run_input_errors(two_heads, call, message):
    _, (image, scale), art = two_heads
    with pytest.raises(InputMismatchError, match=message):
        call(art, image, scale)


def test_random_inputs_and_time_run(two_heads, monkeypatch):
    import time

    _, _, art = two_heads
    inputs = art.random_inputs(seed=3)
    assert {k: v.shape for k, v in inputs.items()} == {"image": (1, 3, 8, 8), "scale": (1, 4, 1, 1)}
    np.testing.assert_array_equal(inputs["image"], art.random_inputs(seed=3)["image"])
    assert not np.array_equal(inputs["image"], art.random_inputs(seed=4)["image"])
    timing = art.time_run(**inputs, repeat=3, warmup=1)
    assert timing["runs"] == 3 and 0 < timing["min_ms"] < 10_000
    # the timer against a kernel of known duration: warmup + repeat calls, milliseconds
    calls = []

    def kernel(*args):
        calls.append(len(args))
        time.sleep(0.02)

    monkeypatch.setattr(art, "_vm", {"main": kernel})
    timing = art.time_run(**inputs, repeat=3, warmup=2)
    assert calls == [2] * 5 and timing["runs"] == 3
    assert 20 <= timing["min_ms"] and timing["median_ms"] < 1000


# -- tvm.compile with the registered pipelines ---------------------------------------------
@pytest.mark.cruise_npu
@pytest.mark.parametrize("name", ["cruise-npu", "cruise-npu-lite"])
def test_tvm_compile_with_registered_pipeline(reference, name):
    module, inputs, ref = reference("perception-cnn")
    mod = tvm_cruise.load_model(module, inputs).mod
    ex = tvm.compile(mod, target=name, relax_pipeline=name)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(inputs[0].numpy())).numpy()
    assert rel_err(out, ref) <= FP16_BOUND
    built_out = tvm_cruise.build(module, target=name, example_inputs=inputs).run(*inputs)
    np.testing.assert_array_equal(out, built_out)  # the same pipeline, the same numbers


def test_pipeline_refuses_a_target_for_another_accelerator(reference):
    module, inputs, _ = reference("perception-cnn")
    mod = tvm_cruise.load_model(module, inputs).mod
    with pytest.raises(Exception, match="relax_pipeline='cruise-npu' but the target is for "
                                        "accelerator 'cruise-npu-lite'"):
        tvm.compile(mod, target="cruise-npu-lite", relax_pipeline="cruise-npu")


def test_build_rejects_missing_tuning_dir(tmp_path):
    with pytest.raises(BuildError, match="is not a directory"):
        tvm_cruise.build("perception-cnn", target="llvm", tuning_logs=tmp_path / "nope")


def _conv_macs(module, inputs) -> int:
    """Multiply-accumulates of every Conv2d of ``module``, counted on a PyTorch run."""
    counted = []

    def hook(conv, _, out):
        kh, kw = conv.kernel_size
        counted.append(out.numel() * conv.in_channels // conv.groups * kh * kw)

    hooks = [m.register_forward_hook(hook) for m in module.modules()
             if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return sum(counted)


def test_build_records_its_npu_programs(built, reference):
    from tvm_cruise.targets import get_accelerator

    spec = get_accelerator("cruise-npu")
    meta = built("perception-cnn", "cruise-npu").metadata
    acc = meta["accelerator"]
    assert acc["accelerator"] == "cruise-npu" and acc["precision"] == "fp16"
    assert acc["offloaded_functions"] == 1
    assert acc["execution"] == "1 NPU program run in the cruise-npu simulator (figures simulated)"
    (program,) = acc["programs"]
    assert program["spec_hash"] == spec.spec_hash
    assert program["stats"]["simulated"] is True
    assert [layer["kind"] for layer in program["layers"]] == ["conv2d"] * 5
    # MACs: the five convolutions, nothing else, as PyTorch counts them; the simulator's own
    # count adds the rows a last, partial row tile computes past the image edge
    module, inputs, _ = reference("perception-cnn")
    macs = _conv_macs(module, inputs)
    assert macs == 460_062_720
    assert sum(layer["macs"] for layer in program["layers"]) == program["stats"]["macs"] == macs
    assert macs <= program["stats"]["array_macs"]
    # cycles: no layer beats the fp16 peak of the MAC array, and the layers (each closed by
    # a SYNC on both engines) account for every cycle of the program
    peak = spec.hardware["macs_per_cycle"]["float16"]
    for layer in program["layers"]:
        assert layer["cycles"] >= layer["macs"] / peak, layer
    assert sum(layer["cycles"] for layer in program["layers"]) == program["stats"]["cycles"]
    assert 0.5 < acc["totals"]["utilization"] <= 1.0
    assert meta["placement"]["summary"]["mac_share"] == 1.0
    assert meta["model"]["ops"]["relax.nn.conv2d"] == 5
    assert meta["tuning"]["host_kernels"] > 0


@pytest.mark.cruise_npu_lite
def test_no_fallback_lists_every_host_op(reference):
    module, inputs, _ = reference("resnet18")
    with pytest.raises(BuildError) as info:
        tvm_cruise.build(module, target="cruise-npu-lite", example_inputs=inputs,
                         allow_fallback=False)
    text = str(info.value)
    assert "1 ops of ResNet18 would fall back to the host on cruise-npu-lite" in text
    assert "conv1 (relax.nn.conv2d): cruise-npu-lite: conv2d kernel (7, 7) > 5" in text


def test_fp32_precision_keeps_everything_on_the_host(reference):
    module, inputs, ref = reference("perception-cnn")
    art = tvm_cruise.build(module, target="cruise-npu", example_inputs=inputs,
                           precision="fp32")
    report = art.placement
    assert not report.accelerator_ops and report.host_ops
    assert all(o.rules == ["dtype"] for o in report.host_ops)
    assert rel_err(art.run(*inputs), ref) <= FP32_BOUND
    with pytest.raises(BuildError, match="precision='int8' needs calibration data .* fix: "
                                         "pass calibration="):
        tvm_cruise.build(module, target="cruise-npu", example_inputs=inputs, precision="int8")
    with pytest.raises(BuildError, match="precision 'int4' is not supported"):
        tvm_cruise.build(module, target="cruise-npu", example_inputs=inputs, precision="int4")
