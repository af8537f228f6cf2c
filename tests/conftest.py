"""Shared fixtures. Builds are cached per session: compiling is the slow part of the suite."""

from __future__ import annotations

import os

# Whether the user chose the runtime's thread count, read before tvm_cruise (which sets it).
_THREADS_CHOSEN = "TVM_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tvm_cruise
from tvm_cruise import models

# fp32 host builds reorder float sums only; 1e-5 relative to the output's largest value.
FP32_BOUND = 1e-5
# fp16 on the accelerator (fp32 accumulation, fp16 storage between layers): 1e-2.
FP16_BOUND = 1e-2


def rel_err(out, ref) -> float:
    """max|out - ref| / max|ref|: the error measure every accuracy test uses."""
    out, ref = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def pytest_configure(config):
    """Under pytest-xdist (scripts/test.sh) the workers already take one CPU each; TVM's
    runtime and torch would each start a pool of one thread per core in every worker, and
    those pools spin-wait against each other. The workers (started after this, with this
    process's environment) get one thread each unless the user chose: on a 2-core AMD EPYC
    (znver3), four build-heavy files with two workers took 212 s, and 161 s so; the whole
    default suite 1090 s, and 937 s so."""
    workers = getattr(config.option, "numprocesses", None)
    if (isinstance(workers, int) and workers > 1 and not _THREADS_CHOSEN
            and "PYTEST_XDIST_WORKER" not in os.environ):
        os.environ["TVM_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def reference():
    """``reference(name) -> (torch_module, inputs, torch_output)``, cached."""
    cache = {}

    def get(name):
        if name not in cache:
            import torch

            module, inputs = models.get(name)
            with torch.no_grad():
                cache[name] = (module, inputs, module(*inputs).numpy())
        return cache[name]

    return get


@pytest.fixture(scope="session")
def built(reference):
    """``built(model_name, target) -> CompiledModel``, cached per session."""
    cache = {}

    def get(name, target):
        key = (name, target)
        if key not in cache:
            module, inputs, _ = reference(name)
            cache[key] = tvm_cruise.build(module, target=target, example_inputs=inputs,
                                          name=name)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def onnx_file(tmp_path_factory):
    """``onnx_file(name) -> path`` of a bundled model exported to ONNX, cached."""
    cache = {}
    folder = tmp_path_factory.mktemp("onnx")

    def get(name):
        if name not in cache:
            cache[name] = models.export_onnx(name, folder / f"{name}.onnx")
        return cache[name]

    return get


def run_python(code: str, timeout: int = 300) -> dict:
    """Run ``code`` in a fresh interpreter; it must print one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_cli(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed ``tvm-cruise`` console script."""
    exe = os.path.join(os.path.dirname(sys.executable), "tvm-cruise")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
