"""From a finalized Relax module to a VM executable, host code generated in parallel.

``tvm.relax.build`` lowers every TIR kernel and hands the whole module to LLVM in one call:
one thread, most of a warm build (ResNet-18: 1.5-1.8 s of ~4 s on a 2-core machine). LLVM's
codegen releases the GIL, so here the kernels of a CPU-only module are split into groups
that are built on threads, one LLVM module each (a few per thread, each thread taking the
next as it finishes one: ``_GROUPS_PER_JOB``); the first imports the others and the VM
finds every kernel through the imports (how TVM links external modules too). The kernels
are the same: each group goes through the same TIR pipeline and codegen, and the VM's
instructions do not change. ``export_library`` writes one object file per group and links
them into one library.

Anything else (CUDA, a module that declares device functions, fewer kernels than two per
group, ``TVM_CRUISE_BUILD_JOBS=1``, a TVM without the internals used here) goes through
``tvm.relax.build`` unchanged.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from . import env
from .env import logger
from .errors import BuildError

_MAX_JOBS = 8
_MIN_KERNELS_PER_JOB = 2  # each LLVM module has a fixed cost (context, target machine, glue)
# Modules per thread: the threads take the next module as they finish one, so a module of
# slow-to-compile kernels no longer sets the wall time alone (ResNet-18's host code on 2
# threads, medians of 6 alternating builds: 1.95 s in 2 modules, 1.79-1.83 in 6, 1.67-1.78
# in 12, 1.92 in 14; AMD EPYC, znver3).
_GROUPS_PER_JOB = 3


def build_jobs() -> int:
    """Threads for host codegen: ``TVM_CRUISE_BUILD_JOBS``, else the CPUs this process may
    run on (at most 8)."""
    text = env.BUILD_JOBS.get().strip()
    if text:
        try:
            jobs = int(text)
        except ValueError:
            jobs = 0
        if jobs < 1:
            raise BuildError(f"{env.BUILD_JOBS.name}={text!r} is not a number of threads: set "
                             "a whole number >= 1 (1 builds the host code in one module, as "
                             "TVM does) or unset it")
        return jobs
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    return max(1, min(_MAX_JOBS, cpus))


def _internals():
    """TVM's own steps of ``relax.build`` used here, or None where this TVM lacks them."""
    from tvm.relax import vm_build

    names = ("_vmcodegen", "_filter_tir", "_auto_attach_system_lib_prefix",
             "_is_device_module", "_ffi_api")
    if not all(hasattr(vm_build, n) for n in names) or \
            not hasattr(vm_build._ffi_api, "VMLink"):
        return None
    return vm_build


def _host_only(tir_mod, target) -> bool:
    if target.kind.name != "llvm":
        return False
    for func in tir_mod.functions.values():
        f_target = func.attrs.get("target", None) if func.attrs is not None else None
        if f_target is not None and f_target.kind.name != "llvm":
            return False
    return True


def split_kernels(tir_mod, jobs: int) -> list:
    """The kernels of ``tir_mod`` in ``jobs`` modules (fewer if there are not at least two
    kernels per module), dealt in module order: neighbouring kernels of a network differ
    most in size, so dealing them round-robin balances the groups."""
    import tvm

    items = list(tir_mod.functions.items())
    groups = max(1, min(jobs, len(items) // _MIN_KERNELS_PER_JOB))
    return [tvm.IRModule(dict(items[i::groups]), attrs=tir_mod.attrs) for i in range(groups)]


def build_executable(mod, target, jobs: int | None = None):
    """``tvm.relax.build(mod, target, relax_pipeline=None)``, host codegen on ``jobs``
    threads (default :func:`build_jobs`)."""
    import tvm
    from tvm import relax

    jobs = build_jobs() if jobs is None else jobs
    internals = _internals()
    attrs = dict(mod.attrs) if mod.attrs else {}
    ext_libs = list(attrs.get("external_mods", []))
    kernels = internals._filter_tir(mod) if internals is not None and jobs > 1 else None
    if kernels is None or not _host_only(kernels, target) or \
            len(kernels.functions) < 2 * _MIN_KERNELS_PER_JOB or \
            any(internals._is_device_module(m) for m in ext_libs):
        return relax.build(mod, target, relax_pipeline=None)
    builder = relax.ExecBuilder()
    tir_mod = internals._filter_tir(internals._vmcodegen(builder, mod, "bytecode"))
    tir_mod = internals._auto_attach_system_lib_prefix(tir_mod, target, None)
    groups = split_kernels(tir_mod, jobs * _GROUPS_PER_JOB)
    context = tvm.transform.PassContext.current()  # thread-local: hand it to the workers

    def build_group(group):
        with context:
            return tvm.tirx.build(group, target=target, pipeline="default")

    with ThreadPoolExecutor(max_workers=min(jobs, len(groups))) as pool:
        libs = list(pool.map(build_group, groups))
    lib = libs[0]
    for other in libs[1:]:
        lib.import_module(other)
    logger.debug("host code: %d kernels in %d modules, one thread each",
                 len(tir_mod.functions), len(groups))
    params = dict(attrs.get("const_name_to_constant", {}))
    executable = internals._ffi_api.VMLink(builder, target, lib, ext_libs, params)
    return relax.VMExecutable(executable)
