"""CUDA hosts: compile-only with nvcc for a pinned arch here; running needs a GPU."""

from __future__ import annotations

import pytest

import tvm_cruise
from tvm_cruise import cuda
from tvm_cruise.errors import BuildError

from conftest import FP32_BOUND, rel_err

needs_nvcc = pytest.mark.skipif(cuda.find_nvcc() is None, reason="nvcc not installed")
needs_gpu = pytest.mark.skipif(not cuda.gpu_available(), reason="no CUDA GPU on this machine")

CUDA_TARGETS = ["cuda", "cruise-npu-cuda", "cruise-npu-lite-cuda"]


@pytest.fixture(scope="module")
def cuda_builds(reference):
    module, inputs, _ = reference("perception-cnn")
    return {t: tvm_cruise.build(module, target=t, example_inputs=inputs, check_cuda=False)
            for t in CUDA_TARGETS}


@pytest.mark.cuda
@needs_nvcc
@pytest.mark.parametrize("target", CUDA_TARGETS)
@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_generated_cuda_compiles_with_nvcc(cuda_builds, target, arch):
    art = cuda_builds[target]
    source = cuda.cuda_source(art)
    assert "__global__" in source
    result = cuda.compile_check(art, arch=arch)
    assert result["arch"] == arch and result["cubin_bytes"] > 1000


@pytest.mark.cuda
@needs_nvcc
def test_build_runs_nvcc_by_default(reference):
    module, inputs, _ = reference("perception-cnn")
    art = tvm_cruise.build(module, target="cuda", example_inputs=inputs, cuda_arch="sm_87")
    assert art.metadata["target"]["config"]["arch"] == "sm_87"


@pytest.mark.cuda
def test_cuda_source_of_a_cpu_build_is_an_error(built):
    with pytest.raises(BuildError, match="holds no CUDA module; build for a '-cuda' target"):
        cuda.cuda_source(built("perception-cnn", "llvm"))


@pytest.mark.cuda
@needs_nvcc
def test_nvcc_diagnostics_are_reported(cuda_builds):
    with pytest.raises(BuildError, match="nvcc could not compile the generated CUDA for sm_1"):
        cuda.compile_check(cuda_builds["cuda"], arch="sm_1")


@pytest.mark.cuda
@pytest.mark.skipif(cuda.gpu_available(), reason="checks the no-GPU error")
def test_running_without_gpu_says_so(cuda_builds):
    art = cuda_builds["cruise-npu-cuda"]
    with pytest.raises(BuildError, match="no CUDA GPU is visible here"):
        art.run(**art.random_inputs())


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("target", CUDA_TARGETS)
def test_runs_on_gpu(reference, target):
    module, inputs, ref = reference("perception-cnn")
    import tvm

    arch = "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    art = tvm_cruise.build(module, target=target, example_inputs=inputs, cuda_arch=arch)
    assert rel_err(art.run(*inputs), ref) <= FP32_BOUND
