"""The compile driver: the stages every compilation runs, in one order, defined once.

::

    resolve -> import -> prepare -> accelerator -> host -> schedule -> finalize

- **resolve**: the target (and its accelerator spec) from what the user named;
- **import**: the model into Relax (``frontend.load_model``);
- **prepare**: inference simplifications (``pipeline.prepare_passes``);
- **accelerator**: split with the accelerator's backend and lower what it takes
  (:func:`accelerator_stage`; host-only targets pass through);
- **host**: legalize and fuse the host part, apply tuning records
  (``pipeline.host_kernels``);
- **schedule**: default schedules for the kernels no record covers (CPU hosts);
- **finalize**: the Relax VM lowering (``pipeline.finalize_passes``).

``tvm_cruise.build``, the Relax pipelines registered with TVM, ``byoc.analyze``, both
tuning jobs and ``sensitivity`` all run a :class:`Compilation` up to the stage they need,
so a tuned module is prepared and partitioned exactly as the module being built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .backend import backend_for
from .errors import BuildError, LoweringFailures

STAGES = ("import", "prepare", "accelerator", "host", "schedule", "finalize")


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
    compiled: list = field(default_factory=list)  # the backend's compiled functions
    partitioned: object = None  # the module before lowering (verification builds from it)
    functions: list = field(default_factory=list)  # its offloaded functions (GlobalVars)

    def to_dict(self) -> dict:
        return {"accelerator": self.accelerator, "spec_hash": self.spec_hash,
                "precision": self.precision, "offloaded_functions": self.offloaded_functions,
                "execution": self.execution, "programs": list(self.programs),
                "totals": dict(self.totals)}


def accelerator_stage(mod, spec, precision: str = "fp16", model: str = "model",
                      tilings: dict | None = None, records: dict | None = None,
                      calibration=None, layer_precision: dict | None = None):
    """Split ``mod`` between ``spec``'s accelerator and the host and compile every offloaded
    function with ``spec``'s backend (``backend.backend_for``).

    The Cruise NPU's programs run in its simulator through ``<key>.run``; their statistics
    are simulated (cycle model), recorded per function. int8 functions (``precision=
    "int8"``, or layers ``layer_precision`` sets to int8) need ``calibration``: samples
    (``calibration.CalibrationData``, the partitioned module is calibrated on them in fp32)
    or a quantized model's own ranges (``calibration.ModelRanges``).
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
    from .env import logger

    backend = backend_for(spec)
    # What the rules accept, the backend lowers; where it cannot, those ops go back to the
    # host with the compiler's reason and the graph is partitioned again.
    refused: dict[int, str] = {}
    while True:
        merged, report = backend.partition(mod, spec, precision, model, refused,
                                           layer_precision)
        functions = backend.offloaded(merged, spec)
        int8 = backend.calibrated_functions(merged, functions, precision)
        ranges = None
        if int8:
            from .calibration import calibrate

            tapped = calibrate(merged, functions, calibration)
            ranges = {name: tapped[name] for name in int8}
        try:
            lowered, compiled = backend.lower(merged, spec, functions, tilings=tilings,
                                              records=records, ranges=ranges)
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
    stage.totals = backend.totals(compiled)
    stage.compiled = compiled
    stage.partitioned, stage.functions = merged, functions
    return lowered, stage


def verify_stage(stage: AcceleratorStage, spec, strict: bool = False,
                 tolerance: float | None = None, model: str = "model") -> list:
    """Run every offloaded function against TVM's host build of it (``verify.py``)."""
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


class Compilation:
    """One model (or Relax module) on its way through :data:`STAGES`.

    Each ``run(until)`` continues from the last stage done; a stage's results stay on
    the object (``prepared``, ``stage``, ``host_module``, ``kernels`` ...).

    >>> c = Compilation.start("perception-cnn", "cruise-npu")      # doctest: +SKIP
    >>> c.run("accelerator").stage.placement.npu_share()            # doctest: +SKIP
    """

    def __init__(self, mod, target, spec, *, resolved=None, imported=None,
                 precision: str = "fp16", logs=None, database=None, calibration=None,
                 layer_precision: dict | None = None, fast_math: bool = True):
        self.mod = mod
        self.target = target          # tvm.target.Target
        self.spec = spec              # AcceleratorSpec, None for a host-only target
        self.resolved = resolved      # targets.ResolvedTarget, when started from a name
        self.imported = imported      # frontend.ImportedModel, when started from a model
        self.precision = precision
        self.logs = logs              # schedules.records.Logs: NPU records, host database
        self.database = database      # a MetaSchedule database in place of the logs' one
        self.calibration = calibration
        self.layer_precision = layer_precision
        self.fast_math = fast_math    # host: polynomial exp/erf/tanh (schedules.fastmath)
        self.prepared = None
        self.stage: AcceleratorStage | None = None
        self.host_module = None
        self.kernels = (0, 0, [])  # host kernels: total, tuned, records that failed
        self.defaulted = 0         # kernels given a default schedule
        self.default_schedules = True  # the schedule stage gives them (run's option)
        self.done = "import"

    @classmethod
    def start(cls, model, target, *, host=None, cuda_arch=None, example_inputs=None,
              input_shapes=None, name=None, **options) -> "Compilation":
        """Resolve ``target`` (or take a ``ResolvedTarget``) and import ``model``
        (anything ``load_model`` takes, or its result). An unknown target fails before
        the model is read."""
        from .frontend import ImportedModel, load_model
        from .targets import ResolvedTarget, resolve_target

        resolved = target if isinstance(target, ResolvedTarget) else resolve_target(
            target, host=host, cuda_arch=cuda_arch)
        imported = model if isinstance(model, ImportedModel) else load_model(
            model, example_inputs, input_shapes=input_shapes, name=name)
        return cls(imported.mod, resolved.tvm_target, resolved.accelerator,
                   resolved=resolved, imported=imported, **options)

    @property
    def model_name(self) -> str:
        return self.imported.name if self.imported is not None else "model"

    def run(self, until: str = "finalize", *, default_schedules: bool = True
            ) -> "Compilation":
        """Run the stages after the last one done, up to and including ``until``."""
        if until not in STAGES:
            raise BuildError(f"unknown compile stage {until!r}; stages: {', '.join(STAGES)}")
        start, end = STAGES.index(self.done) + 1, STAGES.index(until) + 1
        self.default_schedules = default_schedules
        with self.target:
            for name in STAGES[start:end]:
                getattr(self, f"_{name}")()
                self.done = name
        return self

    # -- the stages, in STAGES order ------------------------------------------------------
    def _prepare(self) -> None:
        from .pipeline import prepare_passes, run_passes

        self.mod = self.prepared = run_passes(self.mod, prepare_passes())

    def _accelerator(self) -> None:
        records = self.logs.npu_records if self.logs is not None else None
        self.mod, self.stage = accelerator_stage(
            self.mod, self.spec, self.precision, self.model_name, records=records,
            calibration=self.calibration, layer_precision=self.layer_precision)
        self.host_module = self.mod

    def _host(self) -> None:
        from .pipeline import host_kernels

        database = self.database
        if database is None and self.logs is not None:
            database = self.logs.host_db
        # without default schedules, convolutions stay TVM's direct ones (no Winograd)
        self.mod, total, tuned, failed = host_kernels(
            self.mod, self.target, database, fast_math=self.fast_math,
            winograd=self.default_schedules)
        self.kernels = (total, tuned, failed)

    def _schedule(self) -> None:
        from .schedules.cpu import apply_default_schedules

        if self.default_schedules:
            self.mod, self.defaulted = apply_default_schedules(self.mod, self.target)
        if self.logs is not None:
            self.logs.skipped.warn()

    def _finalize(self) -> None:
        from .pipeline import finalize_passes, run_passes

        self.mod = run_passes(self.mod, finalize_passes(self.target))
