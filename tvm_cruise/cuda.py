"""CUDA host support: finding nvcc and proving generated CUDA compiles.

TVM's PyPI wheel keeps generated CUDA as source inside the executable, so a CUDA "build"
that only calls ``tvm.compile`` proves nothing about the kernels. ``compile_check`` runs
``nvcc`` on that source for a pinned architecture, which works on machines without a GPU.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import env
from .errors import BuildError


@functools.lru_cache(maxsize=None)
def find_nvcc() -> str | None:
    """Path of nvcc (``TVM_CRUISE_NVCC``, PATH, /usr/local/cuda/bin), or None. Never raises."""
    for candidate in (env.NVCC.get(), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def gpu_available() -> bool:
    """Whether TVM sees a CUDA GPU here (cached; never raises)."""
    try:
        import tvm

        return bool(tvm.cuda(0).exist)
    except Exception:
        return False


def _find_cuda_module(module):
    if module.kind == "cuda":
        return module
    for sub in module.imports:
        found = _find_cuda_module(sub)
        if found is not None:
            return found
    return None


def cuda_source(compiled) -> str:
    """The CUDA C++ source TVM generated for a ``CompiledModel`` built for a CUDA host."""
    module = compiled._module
    root = module.mod if hasattr(module, "mod") else module
    cuda_mod = _find_cuda_module(root)
    if cuda_mod is None:
        raise BuildError(f"{compiled!r} holds no CUDA module; build for a '-cuda' target")
    return cuda_mod.inspect_source()


def compile_check(compiled, arch: str | None = None, timeout: float = 300) -> dict:
    """Compile the model's generated CUDA with nvcc (``-cubin``) for ``arch``.

    Returns ``{"nvcc": path, "arch": arch, "cubin_bytes": n}``; raises BuildError with
    nvcc's diagnostics when the source does not compile or nvcc is missing.
    """
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc was not found (PATH, /usr/local/cuda/bin, "
                         f"{env.NVCC.name}); install the CUDA toolkit or pass check_cuda=False")
    arch = arch or compiled.metadata["target"]["config"].get("arch", "sm_87")
    source = cuda_source(compiled)
    with tempfile.TemporaryDirectory(prefix="tvm_cruise_cuda_") as tmp:
        src, out = Path(tmp, "kernels.cu"), Path(tmp, "kernels.cubin")
        src.write_text(source)
        proc = subprocess.run([nvcc, f"-arch={arch}", "-cubin", "-w", "-o", str(out), str(src)],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise BuildError(f"nvcc could not compile the generated CUDA for {arch}:\n"
                             f"{proc.stderr.strip()[-4000:]}")
        return {"nvcc": nvcc, "arch": arch, "cubin_bytes": out.stat().st_size}
