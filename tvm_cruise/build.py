"""``tvm_cruise.build``: model in, deployable ``CompiledModel`` out.

The call is shaped like Relay's old ``relay.build(mod, target=..., params=...)``; weights
are bound at import, so there is no ``params``.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from . import __version__
from ._compat import installed_version
from .artifact import FORMAT_NAME, FORMAT_VERSION, attach_metadata
from .calibration import describe as describe_calibration
from .calibration import (DEFAULT_PERCENTILE, CalibrationData, load_calibration,
                          missing_calibration, model_ranges)
from .env import logger
from .errors import BuildError
from .frontend import ImportedModel, load_model, op_counts
from .backend import backend_for
from .byoc.precision import check_layer_precision
from .link import build_executable, build_jobs
from .driver import AcceleratorStage, Compilation, verify_stage
from .runtime import CompiledModel
from .schedules.cpu import ATTR as DEFAULT_SCHEDULE_ATTR
from .targets import resolve_target


@dataclass
class BuildDetails:
    """What a build knew beyond its artifact (``tvm_cruise.report`` reads it).

    Only kept inside :func:`capture_details`: it holds Relax modules with their weights.
    """

    compiled: CompiledModel
    prepared: Any              # the Relax module after the prepare stage (before partitioning)
    stage: AcceleratorStage    # partitioned module, offloaded functions, NPU programs
    host_module: Any           # after the accelerator stage, before host lowering (Relax ops)
    kernels: dict[str, str]    # host kernel -> "tuned" | "default" | "unscheduled"


_CAPTURE: ContextVar[list | None] = ContextVar("tvm_cruise_build_details", default=None)


@contextmanager
def capture_details() -> Iterator[list[BuildDetails]]:
    """Every :func:`build` inside the block appends its :class:`BuildDetails` to the list.

    >>> with capture_details() as captured:                     # doctest: +SKIP
    ...     art = build("resnet18", target="cruise-npu-lite")
    >>> captured[0].kernels                                     # doctest: +SKIP
    {'cast1': 'default', 'fused_conv2d_cast': 'default'}
    """
    captured: list[BuildDetails] = []
    token = _CAPTURE.set(captured)
    try:
        yield captured
    finally:
        _CAPTURE.reset(token)


def _kernel_kinds(mod) -> dict[str, str]:
    import tvm

    kinds = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            attrs = func.attrs if func.attrs is not None else {}
            # default first: a custom op's hand-scheduled kernel carries both marks
            kinds[gv.name_hint] = ("default" if bool(attrs.get(DEFAULT_SCHEDULE_ATTR, False))
                                   else "tuned" if bool(attrs.get("tirx.is_scheduled", False))
                                   else "unscheduled")
    return dict(sorted(kinds.items()))


def _calibration(precision: str, data: Any, imported: ImportedModel, method: str,
                 percentile: float, layer_precision: Mapping[str, str]):
    """The validated calibration of a build with int8 layers (None for others).

    A QDQ model (``imported.quantization``) brings its own ranges: without ``data`` they
    are the calibration; with ``data`` they win and the samples fill what they miss."""
    if precision != "int8" and "int8" not in layer_precision.values():
        if data is not None:
            raise BuildError(f"calibration= is only used by int8 builds (precision is "
                             f"{precision!r}); fix: pass precision='int8' or drop calibration")
        if imported.quantization is not None:
            logger.info("%s is a quantized (QDQ) model built in %s: its float equivalent "
                        "runs (dequantized weights); precision='int8' uses its own scales",
                        imported.name, precision)
        return None
    if data is None:
        ranges = model_ranges(imported)
        if ranges is None:
            raise missing_calibration(imported.name)
        return ranges
    calib = load_calibration(data, imported.inputs, method, percentile)
    if isinstance(calib, CalibrationData):
        return model_ranges(imported, fallback=calib) or calib
    return calib


def _extensions(calib, layer_precision: dict) -> dict:
    out = {}
    if calib is not None:
        out["calibration"] = describe_calibration(calib)
    if layer_precision:
        out["layer_precision"] = dict(layer_precision)
    return out


def build(model: Any, target: Any = "cruise-npu", *, example_inputs: Any = None,
          input_shapes: Mapping[str, Sequence[int]] | None = None, host: Any = None,
          cuda_arch: str | None = None, tuning_logs: Any = None, shipped_logs: bool = True,
          name: str | None = None, precision: str = "fp16", allow_fallback: bool = True,
          check_cuda: bool | None = None, default_schedules: bool = True,
          fast_math: bool = True,
          verify: bool | str = False, verify_tolerance: float | None = None,
          calibration: Any = None, calibration_method: str = "minmax",
          calibration_percentile: float = DEFAULT_PERCENTILE,
          layer_precision: Mapping[str, str] | None = None) -> CompiledModel:
    """Compile a model for a tvm-cruise target.

    Parameters
    ----------
    model
        Anything :func:`tvm_cruise.load_model` accepts (torch module, ``.pt2``, ``.onnx``,
        ``onnx.ModelProto``, Relax ``IRModule``, reference-model name), or its result.
    target
        A name from :func:`tvm_cruise.list_targets` (``"cruise-npu"``, ``"llvm"``, ...), a
        ``tvm.target.Target``, a target dict, or an old ``"llvm -mcpu=..."`` string.
    example_inputs, input_shapes
        Fix the input shapes (see :func:`tvm_cruise.load_model`).
    host
        The CPU side: default this machine's CPU; e.g. ``{"kind": "llvm", "mtriple":
        "aarch64-linux-gnu", "mcpu": "cortex-a78"}`` for a car's CPU (export as ``.tar``
        when no cross-linker exists).
    cuda_arch
        GPU architecture of ``-cuda`` targets (default ``sm_87``, NVIDIA Orin).
    tuning_logs
        Tuning-log directories to apply (a path or a list) on top of the records shipped
        with the package and those in ``TVM_CRUISE_TUNING_LOGS``; ``False``: none at all.
    shipped_logs
        ``False`` skips the records shipped with the package.
    name
        Model name recorded in the artifact.
    precision
        The accelerator's arithmetic for what it runs: ``"fp16"`` (default; the host stays
        fp32, casts sit at the boundaries) or ``"fp32"`` (no accelerator computes fp32, so
        every op then falls back to the host, each with the reason), or ``"int8"``
        (post-training quantization with ``calibration``: activations symmetric per
        tensor, weights symmetric per output channel, requantization fused into each
        layer; layers with no int8 lowering run on the host in fp32, each with the reason).
    calibration
        int8 only: input samples to calibrate the activation ranges on (an iterable of
        samples, an ``.npz`` path or a directory of ``.npy`` files; see
        :func:`tvm_cruise.calibration.load_calibration`). Results are cached in-process, so
        a rebuild with the same data does not calibrate again. A QDQ ONNX model (ONNX
        Runtime's ``quantize_static``) needs none: its own scales are used (samples given
        too fill in the tensors it does not quantize).
    calibration_method, calibration_percentile
        ``"minmax"`` (default: the largest |x| seen), ``"percentile"`` (that percentile of
        |x| over the samples, default 99.99) or ``"entropy"`` (the threshold with the least
        KL divergence between |x|'s histogram and its 128-level quantization, as TensorRT's
        entropy calibrator).
    layer_precision
        Mixed precision: ``{layer name: "fp32" | "fp16" | "int8"}`` overrides
        ``precision`` for the named layers (``"fp32"``: on the host; the others: on the
        accelerator in their own programs). Names are those of the placement report (torch
        module path, ONNX node name, FX node, ``"#N"`` for op id N; wildcards allowed); an
        override covers the whole fused layer, and a name matching nothing is an error
        (``tvm_cruise.byoc.precision``; ``tvm_cruise.sensitivity`` ranks the layers worth
        keeping out of int8).
    allow_fallback
        ``False``: fail with :class:`BuildError` listing every op that would fall back to
        the host, and why (``tvm-cruise compile --no-fallback``).
    default_schedules
        CPU hosts: give every kernel no tuning record covers tvm-cruise's default schedule
        (threads over the outer loops, vectorized rows; bit-identical results, see
        ``tvm_cruise.schedules.cpu``; on AVX2, stride-1 3x3 convolutions where it pays run
        as Winograd, ``tvm_cruise.schedules.winograd``). ``False`` keeps TVM's
        unscheduled, single-threaded lowering for them and computes every convolution
        directly (``--no-default-schedules``).
    fast_math
        CPU hosts: compute float32 exp, erf, tanh, sigmoid, SiLU, softmax and GELU from
        vectorizable polynomial forms (at most 3.4e-7 relative error, NaN and infinities
        kept; see ``tvm_cruise.schedules.fastmath``) and, on AVX2, let 3x3 convolutions
        run as Winograd F(4x4, 3x3) where it pays (a few times a direct float32
        convolution's rounding error; ``tvm_cruise.schedules.winograd``). ``False``
        (``--exact-math``) keeps TVM's libm calls, one per element, and F(2x2, 3x3), as
        accurate as the direct convolution.
    verify
        Run every offloaded function's NPU program in the simulator and TVM's fp32 host
        build of the same function on seeded inputs, and report each function whose error
        is beyond the precision bound (``verify_tolerance``, default 2e-2, or twice the
        function's fp16 floor measured with TVM's own fp16 build) as a warning;
        ``"strict"``: a :class:`BuildError`. Results are in ``art.verification``
        (``tvm-cruise compile`` verifies by default).
    check_cuda
        For CUDA hosts, compile the generated CUDA with ``nvcc`` for ``cuda_arch`` (TVM
        keeps CUDA as source, so this is the only proof it compiles). Default: when nvcc
        exists.

    Examples
    --------
    >>> import tvm_cruise
    >>> art = tvm_cruise.build("perception-cnn", target="cruise-npu")   # doctest: +SKIP
    >>> art.run(**art.random_inputs()).shape                             # doctest: +SKIP
    (1, 128, 16, 32)
    """
    import tvm
    import tvm_ffi

    from .schedules.records import open_logs

    if verify not in (False, True, "strict"):
        raise BuildError(f"verify={verify!r}: use False, True (warn) or 'strict' (fail)")

    resolved = resolve_target(target, host=host, cuda_arch=cuda_arch)
    jobs = build_jobs()  # a bad TVM_CRUISE_BUILD_JOBS fails here, not after the compile
    imported = model if isinstance(model, ImportedModel) else load_model(
        model, example_inputs, input_shapes=input_shapes, name=name)
    layer_precision = check_layer_precision(layer_precision)
    calib = _calibration(precision, calibration, imported, calibration_method,
                         calibration_percentile, layer_precision)
    tvm_target = resolved.tvm_target
    logs = open_logs(tuning_logs, shipped_logs, tvm_target, resolved.accelerator)
    compilation = Compilation(imported.mod, tvm_target, resolved.accelerator,
                              resolved=resolved, imported=imported, precision=precision,
                              logs=logs, calibration=calib, layer_precision=layer_precision,
                              fast_math=fast_math)

    capture = _CAPTURE.get()
    compilation.run("accelerator")
    stage = compilation.stage
    checks = []
    if verify:
        with tvm_target:
            checks = verify_stage(stage, resolved.accelerator, strict=verify == "strict",
                                  tolerance=verify_tolerance, model=imported.name)
    if stage.placement is not None and not allow_fallback and stage.placement.host_ops:
        lines = stage.placement.fallback_lines()
        raise BuildError(
            f"{len(lines)} ops of {imported.name} would fall back to the host on "
            f"{resolved.accelerator.name} (allow_fallback=False / --no-fallback):\n  "
            + "\n  ".join(lines))
    compilation.run("schedule", default_schedules=default_schedules)
    total, tuned, failed = compilation.kernels
    kernels = _kernel_kinds(compilation.mod) if capture is not None else {}
    backend = backend_for(resolved.accelerator) if resolved.accelerator else None
    npu_layers = len(backend.tunable_layers(stage.compiled)) if backend else 0
    npu_tuned = backend.tuned_layers(stage.compiled) if backend else 0
    metadata = {
        "format": {"name": FORMAT_NAME, "version": list(FORMAT_VERSION)},
        "versions": {"tvm_cruise": __version__, "tvm": tvm.__version__,
                     "tvm_ffi": installed_version("apache-tvm-ffi")},
        "model": {"name": imported.name, "source_format": imported.source_format,
                  "ops": op_counts(imported.mod),
                  "ir_hash": f"{tvm_ffi.structural_hash(imported.mod) & (2**64 - 1):016x}"},
        "target": {"name": resolved.name, "host_kind": resolved.target.host_kind,
                   "accelerator": resolved.accelerator.name if resolved.accelerator else None,
                   "host": resolved.host_config, "config": resolved.config},
        "inputs": [i.to_dict() for i in imported.inputs],
        "outputs": [o.to_dict() for o in imported.outputs],
        "accelerator": stage.to_dict(),
        "placement": stage.placement.to_dict() if stage.placement is not None else None,
        "tuning": {"host_kernels": total, "tuned_kernels": tuned,
                   "default_scheduled": compilation.defaulted, "fast_math": fast_math,
                   "failed_records": failed, "npu_layers": npu_layers,
                   "npu_layers_tuned": npu_tuned, "logs": logs.opened,
                   "shipped_logs": logs.use_shipped, "skipped": logs.skipped.to_dict()},
        "verification": [c.to_dict() for c in checks] if verify else None,
        "extensions": _extensions(calib, layer_precision),
    }
    compilation.mod = attach_metadata(compilation.mod, metadata)
    mod = compilation.run("finalize").mod
    executable = build_executable(mod, tvm_target, jobs)
    logger.info("built %s for %s: %d/%d host kernels tuned", imported.name, resolved.name,
                tuned, total)
    compiled = CompiledModel(executable, metadata)
    if resolved.target.is_cuda:
        from . import cuda

        if check_cuda or (check_cuda is None and cuda.find_nvcc() is not None):
            cuda.compile_check(compiled)
    if capture is not None:
        capture.append(BuildDetails(compiled, compilation.prepared, stage,
                                    compilation.host_module, kernels))
    return compiled
