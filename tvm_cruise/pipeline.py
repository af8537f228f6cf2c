"""Relax pipelines: how a model is prepared, split and lowered for one target.

The same stage functions serve ``tvm_cruise.build`` and the pipelines registered with TVM,
so ``tvm.compile(mod, target="cruise-npu", relax_pipeline="cruise-npu")`` compiles exactly
what ``tvm_cruise.build`` compiles (minus the embedded artifact metadata). Tuning jobs call
``prepare_passes`` too: MetaSchedule matches records by the structural hash of the TIR, so
a tuned module must be prepared the same way as the module being built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class AcceleratorStage:
    """What the accelerator stage did to a module; recorded in the artifact."""

    accelerator: str | None
    spec_hash: str | None
    precision: str | None = None
    offloaded_functions: int = 0
    execution: str = ""
    programs: list = field(default_factory=list)
    placement: object = None  # byoc.PlacementReport
    totals: dict = field(default_factory=dict)
    compiled: list = field(default_factory=list)  # npu.compiler.CompiledFunction
    partitioned: object = None  # the module before lowering (verification builds from it)
    functions: list = field(default_factory=list)  # its offloaded functions (GlobalVars)

    def to_dict(self) -> dict:
        return {"accelerator": self.accelerator, "spec_hash": self.spec_hash,
                "precision": self.precision, "offloaded_functions": self.offloaded_functions,
                "execution": self.execution, "programs": list(self.programs),
                "totals": dict(self.totals)}


def accelerator_stage(mod, spec: AcceleratorSpec | None, precision: str = "fp16",
                      model: str = "model", tilings: dict | None = None,
                      records: dict | None = None, calibration=None,
                      layer_precision: dict | None = None):
    """Split ``mod`` between ``spec``'s accelerator and the host (``byoc.partition``) and
    compile every offloaded function into an NPU program (``npu.compiler``).

    The programs run in the NPU simulator through ``<key>.run``; their statistics are
    simulated (cycle model), recorded per function. int8 functions (``precision="int8"``,
    or layers ``layer_precision`` sets to int8) need ``calibration``: samples
    (``calibration.CalibrationData``, the partitioned module is calibrated on them in fp32)
    or a quantized model's own ranges (``calibration.ModelRanges``); those functions are
    compiled to int8 programs.
    """
    if spec is None:
        if layer_precision:
            raise BuildError("layer_precision= needs an accelerator target: on a host-only "
                             "target every layer already runs in fp32; fix: drop it or "
                             "build for an accelerator (e.g. target='cruise-npu')")
        return mod, AcceleratorStage(None, None, execution="host-only target")
    wants_int8 = precision == "int8" or "int8" in (layer_precision or {}).values()
    if wants_int8 and calibration is None:
        from .calibration import missing_calibration

        raise missing_calibration(model)
    from .npu.compiler.codegen import LoweringFailures
    from .npu.compiler import lower, total_stats
    from .byoc.partition import accelerator_functions, partition
    from .byoc.precision import function_precision
    from .env import logger

    # What the rules accept, the NPU compiler lowers; where it cannot, those ops go back to
    # the host with the compiler's reason and the graph is partitioned again.
    refused: dict[int, str] = {}
    while True:
        merged, report = partition(mod, spec, precision, model, refused, layer_precision)
        functions = accelerator_functions(merged, spec)
        int8 = [gv.name_hint for gv in functions
                if function_precision(merged[gv], precision) == "int8"]
        ranges = None
        if int8:
            from .calibration import calibrate

            tapped = calibrate(merged, functions, calibration)
            ranges = {name: tapped[name] for name in int8}
        try:
            lowered, compiled = lower(merged, spec, functions, tilings, records, ranges)
            break
        except LoweringFailures as err:
            new = {i: why for ids, why in err.failures for i in ids if i not in refused}
            if not new:
                raise BuildError(f"{err} (the ops are already refused: an NPU compiler bug)") \
                    from None
            for ids, why in err.failures:
                logger.warning("%s: the NPU compiler cannot lower ops %s of %s (%s); they run "
                               "on the host", spec.name, list(ids), model, why)
            refused.update(new)
    execution = (f"{len(functions)} NPU program{'s' if len(functions) != 1 else ''} run in "
                 f"the {spec.name} simulator (figures simulated)" if functions
                 else "nothing offloaded")
    report.execution = execution
    stage = AcceleratorStage(spec.name, spec.spec_hash, precision, len(functions), execution,
                             programs=[c.summary() for c in compiled], placement=report)
    stage.totals = total_stats(compiled)
    stage.compiled = compiled
    stage.partitioned, stage.functions = merged, functions
    return lowered, stage


def verify_stage(stage: AcceleratorStage, spec: AcceleratorSpec, strict: bool = False,
                 tolerance: float | None = None, model: str = "model") -> list:
    """Run every NPU program against TVM's host build of its function (``verify.py``)."""
    from . import verify

    if spec is None or not stage.functions:
        return []
    pairs = [(gv, c) for gv, c in zip(stage.functions, stage.compiled)
             if c.input_scales is None]
    if len(pairs) < len(stage.functions):
        from .env import logger

        logger.warning("verify: the build-time check compares fp16 programs; %s's %d int8 "
                       "program(s) are not verified (compare the model's outputs instead)",
                       model, len(stage.functions) - len(pairs))
    if not pairs:
        return []
    names = {}
    for index, gv in enumerate(stage.functions):
        ops = [o for o in stage.placement.ops if o.function == index]
        if ops:
            first, last = ops[0].name, ops[-1].name
            names[gv.name_hint] = first if first == last else f"{first} .. {last}"
    checks = verify.verify_functions(
        stage.partitioned, [gv for gv, _ in pairs], [c for _, c in pairs], spec, names=names,
        indices=[stage.functions.index(gv) for gv, _ in pairs],
        tolerance=verify.DEFAULT_TOLERANCE if tolerance is None else tolerance)
    verify.enforce(checks, strict, model)
    return checks


def legalize_passes() -> list:
    """Lower Relax ops to TIR and fuse them: the kernels tuning tasks are made of."""
    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def host_kernels(mod, target, database=None):
    """Legalize and fuse the host part, then apply tuned records kernel by kernel.

    Narrow-row convolutions read weights packed at build time first
    (``schedules.layout``), so tuning jobs and builds see the same kernels.

    Returns ``(module, kernels, tuned, records that failed to apply)``. Tuning jobs call
    it without a database to extract exactly the kernels a build will look up.
    """
    from .schedules.apply import apply_database

    from .schedules.layout import pack_narrow_conv_weights

    mod = pack_narrow_conv_weights(mod, target)
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
    others = [s for s in accelerators().values() if s.key in target.keys and s is not spec]
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

        from .schedules.records import open_logs
        from .schedules.cpu import apply_default_schedules

        # The defaults of tvm_cruise.build: shipped logs and TVM_CRUISE_TUNING_LOGS; a
        # MetaSchedule database in scope takes the host records' place.
        logs = open_logs(None, True, target, spec)
        database = ms.database.Database.current() or logs.host_db
        mod = run_passes(mod, prepare_passes())
        mod, _ = accelerator_stage(mod, spec, precision, records=logs.npu_records)
        mod, _, _, _ = host_kernels(mod, target, database)
        mod, _ = apply_default_schedules(mod, target)
        logs.skipped.warn()
        return run_passes(mod, finalize_passes(target))

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
