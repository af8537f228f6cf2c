"""Relax pass lists of the compile stages, and the pipelines registered with TVM.

The stage order lives in ``driver.py``; this module holds what the stages run (prepare,
legalize and fuse, host records, VM lowering). The registered pipelines run the same
driver, so ``tvm.compile(mod, target="cruise-npu", relax_pipeline="cruise-npu")``
compiles exactly what ``tvm_cruise.build`` compiles (minus the embedded artifact
metadata). Tuning jobs run it too: MetaSchedule matches records by the structural hash of
the TIR, so a tuned module must be prepared the same way as the module being built.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .errors import BuildError
from .targets import AcceleratorSpec, accelerators, list_targets


@tvm.transform.module_pass(opt_level=0, name="tvm_cruise.FoldBatchNorm")
def _fold_batch_norm(mod, _ctx):
    from .byoc.fold import fold_batch_norm, forward_tuple_items

    return forward_tuple_items(fold_batch_norm(mod))


@tvm.transform.module_pass(opt_level=0, name="tvm_cruise.SimplifyResize")
def _simplify_resize(mod, _ctx):
    from .byoc.fold import simplify_resize

    return simplify_resize(mod)


def prepare_passes() -> list:
    """Inference simplifications every build runs first (before any partitioning).

    BatchNorm folds into the preceding conv (or becomes a per-channel scale and shift),
    so accelerators and the host see the same conv+bias graph.
    """
    return [
        _simplify_resize,  # first: FoldConstant lowers every resize it meets, and TVM's
        #                    lowering of some (align_corners to size 1) divides by zero
        relax.transform.FoldConstant(),
        _fold_batch_norm,
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
        relax.transform.DeadCodeElimination(["main"]),
    ]


def legalize_passes() -> list:
    """Lower Relax ops to TIR and fuse them: the kernels tuning tasks are made of."""
    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def host_rewrites(mod, target, fast_math: bool = True, winograd: bool = True):
    """The Relax rewrites of the host part before legalization (CPU hosts): the weights of
    convolutions vectorized over output channels and (AVX2) of dense layers packed
    (``schedules.layout``); with ``winograd``, stride-1 3x3 convolutions that pay computed
    by Winograd (AVX2; ``schedules.winograd``; F(4x4, 3x3) only with ``fast_math``, else
    F(2x2, 3x3)); with ``fast_math``, exp / erf /
    tanh and the ops made of them in polynomial forms (``schedules.fastmath``).
    Bindings keep their names (the report maps kernels back to ops through them)."""
    from .schedules.fastmath import fast_math as fast_math_rewrite
    from .schedules.layout import pack_conv_weights, pack_matmul_weights
    from .schedules.winograd import winograd_convs

    if winograd:
        mod = winograd_convs(mod, target, fast_math)
    mod = pack_matmul_weights(pack_conv_weights(mod, target), target)
    return fast_math_rewrite(mod, target) if fast_math else mod


def host_kernels(mod, target, database=None, fast_math: bool = True, winograd: bool = True):
    """Legalize and fuse the host part, then apply tuned records kernel by kernel.

    The host rewrites come first (:func:`host_rewrites`: packed weights, Winograd
    convolutions, fast math), so tuning jobs and builds see the same kernels.
    ``winograd=False`` (builds with ``default_schedules=False``) computes every
    convolution directly, as TVM lowers it.

    Returns ``(module, kernels, tuned, records that failed to apply)``. Tuning jobs call
    it without a database to extract exactly the kernels a build will look up.
    """
    from .schedules.apply import apply_database

    mod = host_rewrites(mod, target, fast_math, winograd)
    mod = run_passes(mod, library_dispatch_passes(target) + legalize_passes())
    total, _ = count_kernels(mod)
    tuned, failed = 0, []
    if database is not None:
        mod, tuned, failed = apply_database(mod, target, database)
    return mod, total, tuned, failed


def finalize_passes(target) -> list:
    """Default schedules for what is untuned (GPU), then the Relax VM lowering.

    Written out rather than taken from ``relax.pipeline.*_passes(target)``, whose CPU
    branch is broken in TVM 0.27 (``cpu_generic`` does not export its pass lists).
    """
    passes = []
    gpu = "gpu" in target.keys
    if gpu:
        from tvm.s_tir import dlight as dl

        from ._tvm_workarounds import preload_tensor_intrinsics

        preload_tensor_intrinsics()
        # A GPU kernel without a schedule does not compile at all (unbound threads).
        rules = (dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                 dl.gpu.GeneralReduction(), dl.gpu.Fallback())
        passes.append(dl.ApplyDefaultSchedule(*[_declining(dl, r) for r in rules]))
    t = relax.transform
    passes += [t.RewriteDataflowReshape(), t.ToNonDataflow(), t.RemovePurityChecking(),
               t.CallTIRRewrite(), t.StaticPlanBlockMemory()]
    if gpu:
        passes.append(t.RewriteCUDAGraph())
    passes += [t.LowerAllocTensor(), t.KillAfterLastUse(), t.LowerRuntimeBuiltin(),
               t.ComputePrimValue(), t.VMShapeLower(), t.AttachGlobalSymbol()]
    return passes


def _declining(dl, rule):
    """``rule``, declining a kernel it asserts on instead of failing the build.

    dlight's ``gpu.Reduction`` (TVM 0.27) asserts in ``collect_block_iter_vars_used_in_
    access_region`` on kernels that read at a data-dependent index (roi_align's bilinear
    samples); declined, the next rule (``Fallback``) schedules them.
    """

    class Declining(dl.ScheduleRule):
        def apply(self, func, target, tunable):
            try:
                return rule.apply(func, target, tunable)
            except AssertionError:
                return None

        def __repr__(self):
            return f"Declining({rule!r})"

    return Declining()


def library_dispatch_passes(target) -> list:  # noqa: ARG001 - same for every host kind
    return [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan()]


def run_passes(mod, passes):
    return tvm.transform.Sequential(passes)(mod) if passes else mod


def count_kernels(mod) -> tuple[int, int]:
    """``(total, tuned)`` TIR kernels; tuned ones carry MetaSchedule's scheduled mark."""
    total = tuned = 0
    for _, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            total += 1
            if func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False)):
                tuned += 1
    return total, tuned


def _accelerator_for_target(target, spec: AcceleratorSpec) -> None:
    """Refuse a pipeline/target pair that names two different accelerators."""
    others = [s for s in accelerators().values()
              if s.key in target.keys and s.name != spec.name]
    if others:
        raise BuildError(
            f"relax_pipeline={spec.name!r} but the target is for accelerator "
            f"{others[0].name!r}; use relax_pipeline={others[0].name!r} or target="
            f"{spec.name!r}"
        )


def make_pipeline(spec: AcceleratorSpec | None, precision: str = "fp16"):
    """A Relax pipeline for ``spec`` (``None``: host only) on the target in scope."""

    @tvm.transform.module_pass(opt_level=0, name=f"tvm_cruise.{spec.key if spec else 'host'}")
    def _pipeline(mod, _ctx):
        target = tvm.target.Target.current()
        if target is None:
            raise BuildError(
                "the tvm-cruise pipeline needs a target in scope; call "
                "tvm.compile(mod, target='cruise-npu', relax_pipeline='cruise-npu')")
        if spec is not None:
            _accelerator_for_target(target, spec)
        from tvm.s_tir import meta_schedule as ms

        from .driver import Compilation
        from .schedules.records import open_logs

        # The defaults of tvm_cruise.build: shipped logs and TVM_CRUISE_TUNING_LOGS; a
        # MetaSchedule database in scope takes the host records' place.
        logs = open_logs(None, True, target, spec)
        compilation = Compilation(mod, target, spec, precision=precision, logs=logs,
                                  database=ms.database.Database.current())
        return compilation.run("finalize").mod

    return _pipeline


def register_pipelines() -> None:
    """Register a Relax pipeline under every accelerator target name (idempotent).

    ``relax.get_pipeline(name, precision="fp32")`` passes options through.
    """
    for cruise in list_targets():
        if cruise.accelerator is None or cruise.name in relax.pipeline.PIPELINE_MAP:
            continue
        spec = cruise.accelerator
        relax.register_pipeline(cruise.name)(
            lambda spec=spec, precision="fp16": make_pipeline(spec, precision))
