"""The accelerator backend interface and the compile driver.

A second architecture must plug in with one backend and one spec, no edit elsewhere: the
recording backend below is registered from the test alone, and every user-facing path
(build, tvm.compile's pipeline, analyze, verification, the NPU tuning job) must reach the
accelerator through it.
"""

from __future__ import annotations

import pytest
import torch

import tvm_cruise
from tvm_cruise import backend as backend_mod
from tvm_cruise import targets
from tvm_cruise.driver import STAGES, Compilation
from tvm_cruise.errors import BuildError, SpecError
from tvm_cruise.npu.backend import CruiseNpuBackend

from conftest import FP16_BOUND, rel_err


class Recording(CruiseNpuBackend):
    """The Cruise NPU's backend under another architecture name, logging every call."""

    architecture = "test-recording"

    def __init__(self):
        self.calls: list[str] = []

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if callable(attr) and not name.startswith("_") and name in vars(CruiseNpuBackend):
            super().__getattribute__("calls").append(name)
        return attr


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.fc(y)


@pytest.fixture
def recording(monkeypatch):
    backend = Recording()
    monkeypatch.setitem(backend_mod._BACKENDS, "test-recording", lambda: backend)
    monkeypatch.delitem(backend_mod._LOADED, "test-recording", raising=False)
    data = {**targets.accelerators()["cruise-npu"].to_dict(), "name": "rec-npu",
            "key": "rec_npu", "architecture": "test-recording"}
    spec = targets.AcceleratorSpec.from_dict(data)
    monkeypatch.setitem(targets._ACCELERATORS, spec.name, spec)
    tvm_cruise.register()
    assert "register" in backend.calls  # registration went through the backend
    backend.calls.clear()
    yield backend
    backend_mod._LOADED.pop("test-recording", None)


def test_a_new_architecture_plugs_in_through_the_backend(recording, tmp_path):
    x = torch.randn(1, 3, 8, 8)
    model = Small().eval()
    art = tvm_cruise.build(model, target="rec-npu", example_inputs=(x,), verify=True,
                           tuning_logs=False)
    for step in ("partition", "offloaded", "calibrated_functions", "lower", "totals",
                 "tunable_layers", "tuned_layers", "run"):
        assert step in recording.calls, step
    assert art.placement.accelerator == "rec-npu" and art.placement.functions >= 1
    assert art.verification and all(c.ok for c in art.verification)
    with torch.no_grad():
        ref = model(x).numpy()
    assert rel_err(art.run(x.numpy()), ref) < FP16_BOUND

    recording.calls.clear()
    report = tvm_cruise.byoc.analyze(model, "rec-npu", example_inputs=(x,))
    assert report.accelerator == "rec-npu" and "partition" in recording.calls

    from tvm_cruise.autotune.npu import tune_npu

    recording.calls.clear()
    tuned = tune_npu(model, "rec-npu", tmp_path, progress=lambda _: None,
                     example_inputs=(x,))
    assert "search_layer" in recording.calls and tuned.new_records >= 1


def test_tvm_compile_pipeline_uses_the_backend(recording):
    import tvm
    from tvm import relax

    x = torch.randn(1, 3, 8, 8)
    imported = tvm_cruise.load_model(Small().eval(), (x,))
    exe = tvm.compile(imported.mod, target="rec-npu", relax_pipeline="rec-npu")
    assert "lower" in recording.calls
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = out if hasattr(out, "numpy") else out[0]  # the torch importer returns a tuple
    with torch.no_grad():
        ref = Small().eval()(x).numpy()
    assert rel_err(out.numpy(), ref) < FP16_BOUND


def test_unknown_architecture_is_refused():
    data = {**targets.accelerators()["cruise-npu"].to_dict(), "architecture": "vta"}
    with pytest.raises(SpecError, match="architecture 'vta' has no backend.*register_backend"):
        targets.AcceleratorSpec.from_dict(data)


def test_spec_without_architecture_is_a_cruise_npu():
    data = targets.accelerators()["cruise-npu-lite"].to_dict()
    del data["architecture"]
    spec = targets.AcceleratorSpec.from_dict(data)
    assert spec.architecture == "cruise-npu"
    assert type(backend_mod.backend_for(spec)) is CruiseNpuBackend


def test_driver_runs_the_stages_in_order_and_resumes():
    c = Compilation.start("perception-cnn", "cruise-npu")
    assert c.done == "import" and c.prepared is None
    c.run("prepare")
    assert c.done == "prepare" and c.prepared is not None and c.stage is None
    c.run("accelerator")
    assert c.stage.placement.functions >= 1 and c.host_module is not None
    assert c.kernels == (0, 0, [])  # the host stage has not run
    # the placement is the one analyze reports (same stages)
    analyzed = tvm_cruise.byoc.analyze("perception-cnn", "cruise-npu")
    assert analyzed.to_dict() == c.stage.placement.to_dict()
    c.run("schedule")
    total, _, _ = c.kernels
    assert total >= 1 and c.defaulted >= 1 and c.done == "schedule"
    assert STAGES[-1] == "finalize"
    with pytest.raises(BuildError, match="unknown compile stage 'link'; stages: import"):
        c.run("link")


def test_host_only_target_passes_the_accelerator_stage():
    c = Compilation.start("perception-cnn", "llvm").run("accelerator")
    assert c.stage.accelerator is None and c.stage.execution == "host-only target"
    assert c.stage.placement is None


def test_errors_cross_tvm_as_themselves():
    """A BuildError raised inside a registered pipeline (TVM calls it back through its
    FFI) reaches the caller as a BuildError, not a bare RuntimeError."""
    import tvm

    mod = tvm_cruise.load_model("perception-cnn").mod
    with pytest.raises(BuildError, match="relax_pipeline='cruise-npu-lite' but the target is "
                                         "for accelerator 'cruise-npu'"):
        tvm.compile(mod, target="cruise-npu", relax_pipeline="cruise-npu-lite")
