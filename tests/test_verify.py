"""Build-time verification (``build(verify=...)``): every offloaded function's NPU program,
run in the simulator, against TVM's fp32 host build of the same function."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import tvm_cruise
from tvm_cruise.npu import simulator
from tvm_cruise.errors import BuildError

pytestmark = pytest.mark.cruise_npu


class _TwoStage(torch.nn.Module):
    """conv-relu, a 7x7 conv the lite NPU refuses (host), conv-relu: two NPU functions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.host = torch.nn.Conv2d(16, 16, 7, padding=3)
        self.b = torch.nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.b(self.host(torch.relu(self.a(x)))))


def _build(verify, target="cruise-npu-lite", **kw):
    x = torch.randn(1, 3, 16, 16)
    return tvm_cruise.build(_TwoStage().eval(), target=target, example_inputs=(x,),
                            verify=verify, **kw)


def test_every_offloaded_function_is_checked_and_named():
    art = _build(True)
    checks = art.verification
    placement = art.placement
    assert [c.function for c in checks] == [f"f{i}" for i in range(len(checks))]
    assert len(checks) == placement.functions == 2
    for check in checks:
        assert check.ok and np.isfinite(check.error)
        # fp16 arithmetic against fp32: not exact, far inside the bound
        assert 0 < check.error < 1e-2 <= check.bound
        assert check.fp16_floor is None  # only measured for an error beyond tolerance
    # first .. last source layer of each function (f1 opens with the host conv's bias add)
    assert checks[0].layers == "a .. relu" and checks[1].layers.endswith(".. relu_1")
    # the spec's clock, not cycles over a rounded time (gave 800.033 MHz)
    assert art.npu_stats().clock_mhz == 800
    assert "verified  2 offloaded functions" in art.describe()
    assert "all within bound" in art.describe()


def test_verification_survives_export_and_load(tmp_path):
    art = _build(True)
    path = art.export_library(tmp_path / "m.so")
    loaded = tvm_cruise.load(path)
    assert [c.to_dict() for c in loaded.verification] == [c.to_dict() for c in art.verification]


def test_off_by_default_in_the_api():
    art = _build(False)
    assert art.verification is None and "verified" not in art.describe()


def _corrupt_second_program(monkeypatch):
    """Fault injection: the simulator's result for the second program it executes (the
    compiler's own cycle-count runs carry no inputs) is off by 0.5."""
    real = simulator.Simulator.run
    calls = {"n": 0}

    def run(self, program, inputs, *args, **kw):
        outs, stats = real(self, program, inputs, *args, **kw)
        calls["n"] += inputs is not None
        if inputs is not None and calls["n"] == 2:
            outs = [o + np.float16(0.5) for o in outs]
        return outs, stats

    monkeypatch.setattr(simulator.Simulator, "run", run)


def test_a_wrong_function_is_reported_by_name(monkeypatch, caplog):
    _corrupt_second_program(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="tvm_cruise"):
        art = _build(True)
    first, second = art.verification
    assert first.ok and not second.ok and second.error > second.bound
    assert "1 NPU function(s)" in caplog.text and "f1" in caplog.text
    assert "BEYOND BOUND: f1" in art.describe()


def test_strict_refuses_a_wrong_function(monkeypatch):
    _corrupt_second_program(monkeypatch)
    with pytest.raises(BuildError) as info:
        _build("strict")
    text = str(info.value)
    assert "f1" in text and "BEYOND BOUND" in text and "Fix:" in text


def test_tolerance_tightens_the_bound():
    # fp16 arithmetic cannot meet 1e-9, but the bound never drops below twice TVM's own
    # fp16 floor for the function: a too-tight tolerance does not fail a correct program
    art = _build(True, verify_tolerance=1e-9)
    assert all(c.ok and c.bound == pytest.approx(2 * c.fp16_floor) for c in art.verification)


def test_bad_verify_value():
    with pytest.raises(BuildError, match="verify='yes'"):
        _build("yes")


def test_host_only_target_has_nothing_to_verify():
    art = _build(True, target="llvm")
    assert art.verification == []
