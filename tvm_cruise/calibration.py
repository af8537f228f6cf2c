"""Calibration for int8 builds: sample data in, per-tensor activation ranges out.

``build(model, target, precision="int8", calibration=data)`` reads ``data`` with
:func:`load_calibration` (an iterable of samples, an ``.npz`` file or a directory of
``.npy`` files), then, for every function the partitioner offloads, :func:`calibrate` runs
the model in fp32 on the host with every NPU layer's output tapped (TVM's own build of the
partitioned module, offloaded functions inlined) and records each tensor's absolute range:
``minmax`` (the largest |x| seen), ``percentile`` (the given percentile of |x| over all
samples, which clips rare outliers) or ``entropy`` (the clipping threshold whose 128-level
quantized histogram of |x| diverges least from the original, by Kullback-Leibler: TensorRT's
entropy calibrator, :func:`entropy_threshold`). The NPU compiler turns the ranges into int8 scales
(``npu/compiler/quantize.py``).

Ranges are cached by (partitioned module hash, calibration data hash, method): in-process,
and in ``TVM_CRUISE_CALIBRATION_CACHE`` (a directory of JSON files) when it is set, so
rebuilding the same model with the same data (in another process, with another tuning
log that does not move the partition) does not run calibration again.

A quantized model brings its own ranges: :func:`model_ranges` turns the quantization a QDQ
ONNX model records (``ImportedModel.quantization``) into :class:`ModelRanges`, which
:func:`calibrate` takes in place of samples (:func:`ranges_from_model`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .env import logger
from .errors import BuildError, InputMismatchError
from .verify import host_vm

METHODS = ("minmax", "percentile", "entropy")
ENTROPY_BINS, ENTROPY_LEVELS = 2048, 128  # histogram of |x|; int8's positive levels
DEFAULT_PERCENTILE = 99.99
_CACHE: dict[tuple, dict] = {}
_CACHE_LIMIT = 32
_STORE_VERSION = 1


@dataclass(frozen=True)
class CalibrationData:
    """Validated calibration samples: ``samples[k][i]`` is sample k of input i."""

    samples: tuple[tuple[np.ndarray, ...], ...]
    method: str = "minmax"
    percentile: float = DEFAULT_PERCENTILE

    def __post_init__(self):
        if self.method not in METHODS:
            raise BuildError(f"calibration method {self.method!r} is not known; use one of "
                             f"{', '.join(METHODS)}")
        if not 0 < self.percentile <= 100:
            raise BuildError(f"calibration percentile {self.percentile} is outside (0, 100]; "
                             "fix: pass e.g. 99.99")
        if not self.samples:
            raise BuildError("the calibration data holds no sample; fix: pass at least one "
                             "input sample (a few dozen representative ones are typical)")

    def digest(self) -> str:
        """sha256 over the samples' bytes, shapes and dtypes, and the method."""
        h = hashlib.sha256(f"{self.method}:{self.percentile}".encode())
        for sample in self.samples:
            for arr in sample:
                h.update(f"{arr.dtype}{arr.shape}".encode())
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class ModelRanges:
    """The activation ranges a quantized (QDQ) model records, as calibration.

    ``quantization`` is the model's record (``onnx_prep.QdqRanges``), ``input_names`` the
    model's inputs in order (``main``'s parameters). ``fallback``: calibration samples that
    fill in what the model does not record (tapped ranges, :func:`calibrate`); without
    them a layer whose output the model does not quantize runs on the host, with the
    reason. Make one with :func:`model_ranges`.
    """

    quantization: Any  # onnx_prep.QdqRanges
    input_names: tuple[str, ...]
    fallback: CalibrationData | None = None

    def digest(self) -> str:
        """sha256 over the recorded ranges (and the fallback samples)."""
        ranges = self.quantization
        h = hashlib.sha256(repr((sorted(ranges.nodes.items()), sorted(ranges.inputs.items()),
                                 self.input_names)).encode())
        if self.fallback is not None:
            h.update(self.fallback.digest().encode())
        return h.hexdigest()


def model_ranges(imported, fallback: CalibrationData | None = None) -> ModelRanges | None:
    """The model's own int8 activation ranges, or None for a model that records none (not
    a QDQ model, or one that quantizes its weights only).

    ``imported`` is an ``ImportedModel``; a QDQ ONNX model (ONNX Runtime's
    ``quantize_static``) records the range of every tensor it quantizes. ``fallback``
    (validated samples, :func:`load_calibration`) calibrates what it does not record.

    The NPU quantizes symmetrically with zero point 0, so each range becomes ``amax =
    max(|rmin|, |rmax|)`` (``scale = amax / 127``; an int8 range with zero point 0 keeps the
    model's scale exactly). An asymmetric range (uint8, or a nonzero zero point) loses
    resolution: a one-sided tensor (after a relu) uses 7 of its 8 bits.

    Examples
    --------
    >>> imported = tvm_cruise.load_model("model_qdq.onnx")                  # doctest: +SKIP
    >>> tvm_cruise.build(imported, "cruise-npu", precision="int8",
    ...                  calibration=model_ranges(imported))                  # doctest: +SKIP
    """
    recorded = getattr(imported, "quantization", None)
    if recorded is None or not recorded.all():  # not quantized, or its weights only
        return None
    asymmetric = [r for r in recorded.all() if not r.symmetric]
    if asymmetric:
        logger.info("%s: %d of the %d quantized tensors have asymmetric ranges (uint8 or a "
                    "nonzero zero point); the NPU quantizes symmetrically with zero point 0, "
                    "so each becomes [-amax, amax] with amax = max(|rmin|, |rmax|): up to one "
                    "bit less resolution on one-sided tensors", imported.name,
                    len(asymmetric), len(recorded.all()))
    return ModelRanges(recorded, tuple(i.name for i in imported.inputs), fallback)


def missing_calibration(what: str) -> BuildError:
    """The error for an int8 build without calibration data; ``what`` names the model or
    accelerator."""
    return BuildError(
        f"precision='int8' needs calibration data to choose the int8 scales of {what}'s "
        "activations; fix: pass calibration= (an iterable of input samples, an .npz file or "
        "a directory of .npy files; CLI: --calibration PATH), or use precision='fp16'")


def load_calibration(data: Any, inputs: Sequence, method: str = "minmax",
                     percentile: float = DEFAULT_PERCENTILE) -> CalibrationData:
    """Read calibration samples and check them against the model's inputs.

    Parameters
    ----------
    data
        - an iterable of samples; a sample is one array (a one-input model), a tuple or
          list of arrays in input order, or a dict {input name: array};
        - a path to an ``.npz`` file: one array per input name (or ``arr_0``, ... in input
          order), each either one sample (the input's shape) or a stack of them (one more
          leading dimension);
        - a path to a directory of ``.npy`` files (sorted by name), for a one-input model:
          each one sample or a stack.
        numpy arrays and torch tensors are accepted.
    inputs
        The model's inputs (``TensorInfo``: name, shape, dtype).

    Examples
    --------
    >>> data = load_calibration("calib.npz", imported.inputs)          # doctest: +SKIP
    >>> len(data.samples)                                              # doctest: +SKIP
    32

    :class:`CalibrationData` and :class:`ModelRanges` pass through unchanged.
    """
    if isinstance(data, (CalibrationData, ModelRanges)):
        return data
    if isinstance(data, (str, Path)):
        raw = _from_path(Path(data), inputs)
    elif isinstance(data, np.ndarray) or hasattr(data, "detach"):
        raw = _unstack([_array(data)], inputs, "the calibration array")
    elif isinstance(data, Iterable):
        raw = [_sample(s, inputs, f"calibration sample {k}") for k, s in enumerate(data)]
    else:
        raise BuildError(f"calibration={type(data).__name__} is not calibration data; fix: "
                         "pass an iterable of input samples, an .npz path or a directory "
                         "of .npy files")
    return CalibrationData(tuple(raw), method, float(percentile))


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _sample(sample: Any, inputs: Sequence, where: str) -> tuple[np.ndarray, ...]:
    if isinstance(sample, dict):
        unknown = sorted(set(sample) - {i.name for i in inputs})
        if unknown:
            raise InputMismatchError(f"{where}: unknown input(s) {unknown}; the model's inputs "
                                     f"are {[i.name for i in inputs]}")
        missing = [i.name for i in inputs if i.name not in sample]
        if missing:
            raise InputMismatchError(f"{where}: missing input(s) {missing}; fix: give every "
                                     "input of the model in each sample")
        arrays = [_array(sample[i.name]) for i in inputs]
    elif isinstance(sample, (tuple, list)):
        arrays = [_array(s) for s in sample]
    else:
        arrays = [_array(sample)]
    if len(arrays) != len(inputs):
        raise InputMismatchError(f"{where} has {len(arrays)} array(s) but the model takes "
                                 f"{len(inputs)} inputs ({', '.join(i.name for i in inputs)})")
    return tuple(_check(a, info, where) for a, info in zip(arrays, inputs))


def _check(arr: np.ndarray, info, where: str) -> np.ndarray:
    if tuple(arr.shape) != tuple(info.shape):
        raise InputMismatchError(
            f"{where}: input {info.name!r} has shape {tuple(arr.shape)} but the model takes "
            f"{tuple(info.shape)}; fix: give calibration samples of the model's input shape")
    if str(arr.dtype) != info.dtype:
        raise InputMismatchError(
            f"{where}: input {info.name!r} has dtype {arr.dtype} but the model takes "
            f"{info.dtype}; fix: convert it (x.astype('{info.dtype}'))")
    return np.ascontiguousarray(arr)


def _unstack(arrays: list[np.ndarray], inputs: Sequence, where: str) -> list[tuple]:
    """Arrays in input order, each one sample or a stack of samples, as samples.

    A stack has one more leading dimension than the input; for an input of batch 1, a
    batch of N (``(N, C, H, W)`` for ``(1, C, H, W)``) is N samples too."""
    counts = []
    for k, (arr, info) in enumerate(zip(arrays, inputs)):
        shape = tuple(info.shape)
        if len(shape) >= 1 and shape[0] == 1 and arr.ndim == len(shape) and \
                arr.shape[0] > 1 and tuple(arr.shape[1:]) == shape[1:]:
            arrays[k] = arr = arr[:, None]  # a batch of batch-1 samples
        stacked = arr.ndim == len(shape) + 1 and tuple(arr.shape[1:]) == shape
        counts.append(arr.shape[0] if stacked else None)
    if len(set(counts)) > 1:
        raise InputMismatchError(f"{where}: the inputs hold different numbers of samples "
                                 f"({counts}); fix: stack the same number for every input")
    if counts[0] is None:
        return [_sample(tuple(arrays), inputs, where)]
    return [_sample(tuple(a[k] for a in arrays), inputs, f"{where}, sample {k}")
            for k in range(counts[0])]


def _from_path(path: Path, inputs: Sequence) -> list[tuple]:
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise BuildError(f"calibration directory {path} holds no .npy file; fix: save one "
                             "sample (or a stack) per file with numpy.save")
        if len(inputs) != 1:
            raise InputMismatchError(
                f"calibration directory {path}: a directory of .npy files calibrates a "
                f"one-input model, this one takes {len(inputs)}; fix: use an .npz with one "
                "array per input name")
        return [s for f in files for s in _unstack([np.load(f)], inputs, str(f))]
    if path.suffix == ".npz" and path.is_file():
        with np.load(path) as npz:
            names = [i.name for i in inputs]
            if all(n in npz.files for n in names):
                arrays = [npz[n] for n in names]
            elif len(npz.files) == len(inputs):
                arrays = [npz[f"arr_{k}"] if f"arr_{k}" in npz.files else npz[npz.files[k]]
                          for k in range(len(inputs))]
            else:
                raise InputMismatchError(
                    f"calibration file {path} holds {npz.files} but the model's inputs are "
                    f"{names}; fix: save one array per input name (numpy.savez(path, "
                    f"{names[0]}=...))")
        return _unstack(arrays, inputs, str(path))
    raise BuildError(f"calibration path {path} is neither an .npz file nor a directory of "
                     ".npy files")


# -- running the model with taps -------------------------------------------------------------
def calibrate(merged, functions, data: CalibrationData | ModelRanges) -> dict:
    """``{function name: FunctionRanges}`` of the offloaded ``functions`` of ``merged``
    (the partitioned, still fp32 module) over the calibration samples, or from the
    model's recorded ranges (:func:`ranges_from_model`)."""
    import tvm
    import tvm_ffi

    from .npu.compiler.quantize import FunctionRanges

    if not functions:
        return {}
    if isinstance(data, ModelRanges):
        return ranges_from_model(merged, functions, data)
    key = (f"{tvm_ffi.structural_hash(merged) & (2**64 - 1):016x}", data.digest())
    if key in _CACHE:
        return _CACHE[key]
    stored = _read_stored(key)
    if stored is not None:
        _remember(key, stored)
        return stored
    mod, layout = _tap_module(merged, functions)
    vm = host_vm(mod)
    absolutes: list[list[np.ndarray]] = [[] for _ in layout["slots"]]
    for sample in data.samples:
        outs = vm["main"](*[tvm.runtime.tensor(a) for a in sample])
        for slot, value in enumerate(outs[1:]):
            arr = np.abs(value.numpy().astype(np.float64))
            absolutes[slot].append(arr.ravel() if data.method != "minmax"
                                   else np.array([arr.max(initial=0.0)]))
    amax = [_reduce(values, data) for values in absolutes]
    ranges = {}
    for name, (arg_slots, taps) in layout["functions"].items():
        fr = ranges.setdefault(name, FunctionRanges([0.0] * len(arg_slots)))
        for i, slot in enumerate(arg_slots):
            fr.inputs[i] = max(fr.inputs[i], amax[slot])
        for ids, slot in taps:
            fr.layers[ids] = max(fr.layers.get(ids, 0.0), amax[slot])
    _remember(key, ranges)
    _store(key, ranges)
    return ranges


def _remember(key: tuple, ranges: dict) -> None:
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = ranges


def _stored_path(key: tuple) -> Path | None:
    from .env import CALIBRATION_CACHE

    root = CALIBRATION_CACHE.get()
    return Path(root) / f"{key[0]}-{key[1][:32]}.json" if root else None


def _read_stored(key: tuple) -> dict | None:
    """Ranges a previous process stored for ``key`` (None: none, or unreadable)."""
    import json

    from .npu.compiler.quantize import FunctionRanges
    from .env import logger

    path = _stored_path(key)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("key") != list(key) or data.get("version") != _STORE_VERSION:
            return None
        return {name: FunctionRanges(list(f["inputs"]),
                                     {tuple(ids): amax for ids, amax in f["layers"]})
                for name, f in data["functions"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("calibration cache %s is unreadable (%s); calibrating again", path, err)
        return None


def _store(key: tuple, ranges: dict) -> None:
    import json
    import os

    from .env import logger

    path = _stored_path(key)
    if path is None:
        return
    data = {"version": _STORE_VERSION, "key": list(key),
            "functions": {name: {"inputs": r.inputs,
                                 "layers": [[list(ids), amax] for ids, amax in r.layers.items()]}
                          for name, r in ranges.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)  # atomic: concurrent builds never read half a file
    except OSError as err:
        logger.warning("cannot write the calibration cache %s (%s)", path, err)


def cached_calibrations() -> int:
    """How many calibration results the in-process cache holds (tests read it)."""
    return len(_CACHE)


def _reduce(values: list[np.ndarray], data: CalibrationData) -> float:
    joined = np.concatenate(values) if values else np.zeros(1)
    if data.method == "percentile":
        return float(np.percentile(joined, data.percentile))
    if data.method == "entropy":
        return entropy_threshold(joined)
    return float(joined.max())


def entropy_threshold(absolute: np.ndarray, bins: int = ENTROPY_BINS,
                      levels: int = ENTROPY_LEVELS) -> float:
    """The clipping threshold for ``absolute`` (|x| of a tensor over all samples) that
    minimises KL(P || Q), TensorRT's entropy calibration: P is the histogram of |x| up to
    the threshold with the clipped mass added to its last bin, Q the unclipped part merged
    into ``levels`` quantization levels and spread back over the bins P holds mass in; both
    smoothed so an empty bin costs a finite amount. Never above the largest |x|."""
    top = float(absolute.max()) if absolute.size else 0.0
    if top <= 0.0:
        return 0.0
    hist, edges = np.histogram(absolute, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    best, best_kl = bins, np.inf
    for i in range(levels, bins + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        groups = np.minimum(np.arange(i) // (i // levels), levels - 1)  # bin -> level
        held = p > 0
        mass = np.bincount(groups, weights=hist[:i], minlength=levels)
        count = np.bincount(groups, weights=held, minlength=levels)
        q = np.where(held, mass[groups] / np.maximum(count[groups], 1), 0.0)
        p, q = _smooth(p), _smooth(q)
        if p is None or q is None:
            continue
        kl = float(np.sum(p * np.log(p / q)))
        if kl < best_kl:
            best, best_kl = i, kl
    return float(edges[best])


def _smooth(dist: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """``dist`` normalised, each empty bin given ``eps`` taken evenly from the others (None
    when nothing or everything is empty)."""
    zero = dist == 0
    n_zero, n_held = int(zero.sum()), int((~zero).sum())
    if n_held == 0:
        return None
    dist = dist / dist.sum()
    if n_zero:
        take = eps * n_zero / n_held
        if take >= dist[~zero].min():
            take = 0.0
        dist = np.where(zero, eps, dist - take)
    return dist / dist.sum()


def _tap_module(merged, functions):
    """``merged`` with each offloaded function inlined (``verify.inline_composites``) and
    ``main`` returning ``(output, every offloaded call's inputs and layer outputs...)``.

    Returns ``(module, layout)``: layout["functions"][name] = (input slots, [(op ids,
    slot)]), slots indexing the extra outputs."""
    import tvm
    from tvm import relax

    from .byoc.rewrite import substitute
    from .verify import inline_composites

    bb = relax.BlockBuilder()
    taps_of, new_gv = {}, {}
    for gv in functions:
        taps: list = []
        func = inline_composites(merged[gv], gv.name_hint, taps)
        new_gv[gv] = bb.add_func(func, gv.name_hint)
        taps_of[gv] = taps
    main = merged["main"]
    params = [relax.Var(p.name, p.ty) for p in main.params]
    env = dict(zip(main.params, params))
    extra: list = []
    layout: dict = {"functions": {}, "slots": extra}
    with bb.function("main", params):
        with bb.dataflow():
            for block in main.body.blocks:
                for binding in block.bindings:
                    value = substitute(binding.value, env)
                    if isinstance(value, relax.Call) and value.op in new_gv:
                        env[binding.var] = _tapped_call(bb, value, new_gv, taps_of, extra,
                                                        layout["functions"])
                    else:
                        env[binding.var] = bb.emit(value)
            out = bb.emit_output(relax.Tuple([substitute(main.body.body, env), *extra]))
        bb.emit_func_output(out)
    mod = bb.get()
    return tvm.IRModule({gv: f for gv, f in mod.functions.items()}), layout


def _tapped_call(bb, call, new_gv, taps_of, extra: list, functions: dict):
    from tvm import relax

    gv = call.op
    result = bb.emit(relax.Call(new_gv[gv], call.args))
    arg_slots = []
    for arg in call.args:
        arg_slots.append(len(extra))
        extra.append(arg)
    taps = []
    for k, ids in enumerate(taps_of[gv]):
        taps.append((ids, len(extra)))
        extra.append(bb.emit(relax.TupleGetItem(result, k + 1)))
    functions[gv.name_hint] = (arg_slots, taps)
    return bb.emit(relax.TupleGetItem(result, 0))


def describe(data: CalibrationData | ModelRanges) -> dict:
    """What the artifact records about the calibration (no data)."""
    if isinstance(data, ModelRanges):
        return {"samples": 0, "method": "model", "percentile": None, "sha256": data.digest(),
                "recorded_ranges": len(data.quantization.all()),
                "fallback": describe(data.fallback) if data.fallback is not None else None}
    return {"samples": len(data.samples), "method": data.method,
            "percentile": data.percentile if data.method == "percentile" else None,
            "sha256": data.digest()}


# -- ranges a quantized model records -----------------------------------------------------------
def ranges_from_model(merged, functions, data: ModelRanges) -> dict:
    """``{function name: FunctionRanges}`` from the ranges the model records.

    Relax ops carry the ONNX node they come from (their span). A function input is the
    result of an op (or a model input), a layer's output the result of its composite's last
    op; either gets the range of its ONNX node's output when that op is the node's last
    (``conv2d`` then ``add`` for a Conv with bias: the ``add``). What the model does not
    record stays unknown (None for an input, no entry for a layer: quantize.py sends those
    layers to the host with the reason), unless ``data.fallback`` samples calibrate it.
    """
    from tvm import relax

    from .npu.compiler.quantize import FunctionRanges
    from .byoc.ops import op_id, op_source
    from .byoc.patterns import composite_op_ids

    last = _last_op_of_node(merged)

    def amax_of(call) -> float | None:
        node = op_source(call)[1] if call is not None else None
        found = data.quantization.nodes.get(node) if node else None
        return found.amax if found is not None and last.get(node) == op_id(call) else None

    main = merged["main"]
    main_bindings = _bindings(main)
    params = {p: k for k, p in enumerate(main.params)}
    ranges = {}
    for gv in functions:
        func = merged[gv]
        layers = {}
        for value in _bindings(func).values():
            if isinstance(value, relax.Function) and composite_op_ids(value):
                amax = amax_of(_producing_op(merged, _bindings(value), value.body.body))
                if amax is not None:
                    layers[composite_op_ids(value)] = amax
        call = next(v for v in main_bindings.values()
                    if isinstance(v, relax.Call) and v.op.same_as(gv))
        inputs = []
        for arg in call.args:
            if arg in params:
                name = data.input_names[params[arg]]
                found = data.quantization.inputs.get(name)
                inputs.append(None if found is None else found.amax)
            else:
                inputs.append(amax_of(_producing_op(merged, main_bindings, arg)))
        ranges[gv.name_hint] = FunctionRanges(inputs, layers)
    if data.fallback is not None:
        tapped = calibrate(merged, functions, data.fallback)
        for name, fr in ranges.items():
            fr.inputs = [t if r is None else r for r, t in zip(fr.inputs, tapped[name].inputs)]
            fr.layers = {**tapped[name].layers, **fr.layers}
    return ranges


def _bindings(func) -> dict:
    return {b.var: b.value for block in func.body.blocks for b in block.bindings}


def _last_op_of_node(mod) -> dict[str, int]:
    """{source node name: the largest op id among its ops}: ids follow the order the
    importer emitted the node's ops in, so that op computes the node's output."""
    import tvm
    from tvm import relax

    from .byoc.ops import op_id, op_source

    last: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            idx, node = op_id(expr), op_source(expr)[1]
            if idx is not None and node:
                last[node] = max(last.get(node, idx), idx)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return last


def _producing_op(mod, bindings: dict, expr, field: int | None = None):
    """The operator call whose result ``expr`` is (``field``: that field of its tuple
    result), through variables, tuples, offloaded functions and composites; None when it is
    something else (a parameter, a constant)."""
    import tvm
    from tvm import relax

    while True:
        if isinstance(expr, relax.Var) and expr in bindings:
            expr = bindings[expr]
        elif isinstance(expr, relax.Tuple) and field is not None:
            expr, field = expr.fields[field], None
        elif isinstance(expr, relax.TupleGetItem) and field is None:
            expr, field = expr.tuple_value, expr.index
        elif isinstance(expr, relax.Call):
            op = expr.op
            callee = mod[op] if isinstance(op, tvm.ir.GlobalVar) else bindings.get(op)
            if isinstance(callee, relax.Function):
                bindings, expr = _bindings(callee), callee.body.body
            else:
                return expr if isinstance(op, tvm.ir.Op) and field is None else None
        else:
            return None
