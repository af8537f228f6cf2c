"""Polynomial exp / erf / tanh on CPU hosts (tvm_cruise.schedules.fastmath)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tvm_cruise
from tvm_cruise.autotune.host import prepared_host_module
from tvm_cruise.schedules.fastmath import GELU_MAX_ERROR, MAX_RELATIVE_ERROR, covered_ops

from conftest import run_cli

F = torch.nn.functional
_erf = np.vectorize(math.erf)

# op -> (torch function, float64 reference)
OPS = {
    "exp": (torch.exp, np.exp),
    "erf": (torch.erf, _erf),
    "tanh": (torch.tanh, np.tanh),
    "sigmoid": (torch.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "silu": (F.silu, lambda x: x / (1 + np.exp(-x))),
    "gelu": (F.gelu, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
    "softmax": (lambda x: torch.softmax(x, -1),
                lambda x: np.exp(x - x.max(-1, keepdims=True)) /
                np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)),
}


class Op(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _build(name, x, **options):
    return tvm_cruise.build(Op(OPS[name][0]), target="llvm", tuning_logs=False,
                            example_inputs=(torch.from_numpy(x),), **options)


# the whole float32 range exp stays finite in, and the curved part of every function
X = np.concatenate([np.linspace(-87, 88, 4096),
                    np.linspace(-4, 4, 4096)]).astype(np.float32).reshape(8, 1024)


@pytest.mark.parametrize("name", sorted(OPS))
def test_accuracy_against_float64(name):
    """Relative error (absolute below 1) at most 3.4e-7, the GELUs' 6e-7 (measured 4.2e-7;
    TVM's exact build 1.5e-7), the softmax's within 1.5x the exact build's (both are the
    float32 sum's, 2.1e-6)."""
    fast = _build(name, X).run(X)
    exact = _build(name, X, fast_math=False).run(X)
    ref = OPS[name][1](X.astype(np.float64))

    def error(got):  # relative, and absolute below 1 (near-zero outputs)
        return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1.0)))

    assert not np.array_equal(fast, exact)  # the rewrite did change the kernel
    if name == "softmax":  # its error is the float32 sum's, as in the exact build
        assert error(fast) <= 1.5 * error(exact)
    elif name.startswith("gelu"):  # erf / tanh's error, times x
        assert error(fast) <= GELU_MAX_ERROR
    else:
        assert error(fast) <= MAX_RELATIVE_ERROR


@pytest.mark.parametrize("name", sorted(OPS))
def test_nan_and_infinities_as_the_exact_functions(name):
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 3.0]], np.float32)
    if name == "softmax":  # a row with a NaN is NaN; one with +inf too
        x = np.concatenate([x, np.array([[0, 1, 2, 3, 4, 5, 6, -np.inf]], np.float32)])
    fast = _build(name, x).run(x)
    exact = _build(name, x, fast_math=False).run(x)
    assert np.array_equal(np.isnan(fast), np.isnan(exact))
    finite = ~np.isnan(exact)
    assert np.array_equal(np.isinf(fast[finite]), np.isinf(exact[finite]))
    with np.errstate(all="ignore"):
        want = OPS[name][1](x.astype(np.float64))
    # finite results close to the float64 value (TVM's exact tanh returns 0 for 1e-30)
    np.testing.assert_allclose(fast[finite], want[finite], rtol=GELU_MAX_ERROR, atol=1e-37)


def test_rewrite_leaves_no_libm_call_and_opt_out_keeps_them():
    model = Op(lambda x: F.gelu(torch.softmax(torch.tanh(x), -1)) + torch.sigmoid(x))
    x = torch.randn(4, 64)
    fast, _, _ = prepared_host_module(model, "llvm", example_inputs=(x,))
    exact, _, _ = prepared_host_module(model, "llvm", example_inputs=(x,), fast_math=False)
    calls = ("T.exp(", "T.erf(", "T.tanh(", "T.sigmoid(")
    assert not any(c in fast.script() for c in calls)
    assert all(c in exact.script() for c in ("T.exp(", "T.erf(", "T.tanh("))
    assert set(covered_ops()) >= {"relax.exp", "relax.nn.softmax", "relax.nn.gelu"}


def test_float16_and_gpu_hosts_keep_exact_math():
    """Only float32 CPU kernels are rewritten (fast_exp is float32-only)."""
    model = Op(torch.exp)
    x16 = torch.randn(4, 64).half()
    mod, _, _ = prepared_host_module(model, "llvm", example_inputs=(x16,))
    assert "T.exp(" in mod.script()


def test_cli_exact_math(tmp_path):
    out = tmp_path / "t.so"
    done = run_cli("compile", "transformer", "-t", "llvm", "--exact-math",
                   "--no-shipped-logs", "-o", out)
    assert done.returncode == 0, done.stderr
    assert out.exists()


def test_tune_exact_math_records_match_exact_builds(tmp_path):
    """``tvm-cruise tune --exact-math`` tunes the libm kernels, which only an
    ``--exact-math`` build has: records are looked up by the kernel they were tuned on."""
    model = Op(F.gelu)
    x = torch.randn(8, 64)
    pt2 = tmp_path / "gelu.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(pt2))
    logs = tmp_path / "logs"
    done = run_cli("tune", pt2, "-t", "llvm", "--host-only", "--exact-math", "--trials", "2",
                   "--tuning-logs", logs)
    assert done.returncode == 0, done.stderr
    exact = tvm_cruise.build(str(pt2), target="llvm", tuning_logs=logs, shipped_logs=False,
                             fast_math=False).metadata["tuning"]
    fast = tvm_cruise.build(str(pt2), target="llvm", tuning_logs=logs,
                            shipped_logs=False).metadata["tuning"]
    assert exact["tuned_kernels"] == exact["host_kernels"] >= 1
    assert fast["tuned_kernels"] == 0
