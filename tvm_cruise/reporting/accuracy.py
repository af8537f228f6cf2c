"""Inputs and the framework reference: outputs vs PyTorch or ONNX Runtime.

The reference is the framework the model came from: a bundled model's or the given torch
module, a ``.pt2``'s exported program (``ExportedProgram.module()``), an ONNX model in ONNX
Runtime. A Relax IRModule has none: it is compared with TVM's fp32 host build, and the
report says so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import InputMismatchError
from ..runtime import seeded_inputs  # noqa: F401 - the report's seeded inputs

INPUT_FIX = ("save one array per model input under the input's name (numpy.savez(path, "
             "{example}=array)) with the model's shapes and dtypes")


# -- inputs ------------------------------------------------------------------------------
def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise InputMismatchError(
            f"--inputs {path}: not a readable .npz file ({err}); write one with "
            "numpy.savez(path, input_name=array)") from None


def check_inputs(values: Any, infos, model: str, where: str = "inputs"
                 ) -> dict[str, np.ndarray]:
    """``values`` (a .npz path, a mapping by input name, or a sequence in input order) as
    ``{name: array}``, each checked against the model's signature."""
    if isinstance(values, (str, os.PathLike)):
        where = f"--inputs {Path(values).name}"
        values = read_npz(values)
    names = [i.name for i in infos]
    fix = INPUT_FIX.format(example=names[0] if names else "x")
    if isinstance(values, Mapping):
        keys = list(values)
        positional = [f"arr_{i}" for i in range(len(names))]
        if keys == positional and set(keys) != set(names):  # numpy.savez(path, a, b)
            values = dict(zip(names, values.values()))
        elif set(keys) != set(names):
            missing = [n for n in names if n not in keys]
            extra = [k for k in keys if k not in names]
            detail = "; ".join(([f"missing {missing}"] if missing else []) +
                               ([f"unknown {extra}"] if extra else []))
            raise InputMismatchError(f"{where} holds arrays {keys} but {model} takes inputs "
                                     f"{names} ({detail}); fix: {fix}")
    else:
        seq = list(values) if isinstance(values, (list, tuple)) else [values]
        if len(seq) != len(names):
            raise InputMismatchError(f"{where}: {len(seq)} arrays given but {model} takes "
                                     f"{len(names)} inputs {names}; fix: {fix}")
        values = dict(zip(names, seq))
    out = {}
    for info in infos:
        arr = values[info.name]
        if hasattr(arr, "detach"):
            arr = arr.detach().cpu().numpy()
        arr = np.asarray(arr)
        if tuple(arr.shape) != info.shape:
            raise InputMismatchError(
                f"{where}: input {info.name!r} has shape {tuple(arr.shape)} but {model} takes "
                f"{info.shape}; fix: give arrays of the model's shape, or fix the model's "
                "input shapes (example_inputs=, or --input-shape NAME=DIMS for ONNX)")
        if str(arr.dtype) != info.dtype:
            raise InputMismatchError(
                f"{where}: input {info.name!r} is {arr.dtype} but {model} takes {info.dtype}; "
                f"fix: convert it (array.astype('{info.dtype}')) before saving")
        out[info.name] = np.ascontiguousarray(arr)
    return out


# -- the framework reference -------------------------------------------------------------
@dataclass
class Reference:
    kind: str                   # pytorch, onnxruntime, tvm-fp32-host
    label: str                  # what the report prints
    run: Callable[[dict], list]  # {input name: array} -> outputs, in the model's order


def _torch_reference(module, label: str) -> Reference:
    import torch

    def run(inputs: dict) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.array(a)) for a in inputs.values()))
        leaves = torch.utils._pytree.tree_leaves(out)
        return [t.detach().cpu().numpy() for t in leaves if isinstance(t, torch.Tensor)]

    return Reference("pytorch", f"PyTorch {torch.__version__} ({label})", run)


def _onnx_reference(proto, output_names: list[str]) -> Reference | str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed (fix: pip install onnxruntime)"
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    ort_inputs = [i.name for i in session.get_inputs()]
    available = [o.name for o in session.get_outputs()]
    wanted = output_names if all(n in available for n in output_names) else None

    def run(inputs: dict) -> list[np.ndarray]:
        feed = dict(zip(ort_inputs, inputs.values()))  # both in the graph's input order
        return [np.asarray(o) for o in session.run(wanted, feed)]

    return Reference("onnxruntime", f"ONNX Runtime {ort.__version__} (CPU)", run)


def framework_reference(model: Any, imported) -> Reference | str:
    """The framework's own execution of ``model``, or why there is none."""
    from .. import models

    outputs = [o.name for o in imported.outputs]
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text in models.REFERENCE_MODELS:
            return _torch_reference(models.get(text)[0], f"bundled model {text}")
        suffix = Path(text).suffix.lower()
        if suffix == ".onnx":
            import onnx

            return _onnx_reference(onnx.load(text), outputs)
        if suffix in (".pt2", ".ep"):
            import torch

            return _torch_reference(torch.export.load(text).module(), f"{Path(text).name}")
    try:
        import onnx

        if isinstance(model, onnx.ModelProto):
            return _onnx_reference(model, outputs)
    except ImportError:  # pragma: no cover - onnx is a hard dependency
        pass
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if isinstance(model, torch.export.ExportedProgram):
        return _torch_reference(model.module(), "exported program")
    if isinstance(model, torch.nn.Module):
        return _torch_reference(model.eval(), f"{type(model).__name__} module")
    return "no framework model was given (a Relax IRModule or an already imported model)"


def tvm_host_reference(imported, why: str) -> Reference:
    """TVM's fp32 host build of the model (when the framework's is unavailable)."""
    from ..build import build

    art = build(imported, target="llvm", tuning_logs=False)

    def run(inputs: dict) -> list[np.ndarray]:
        out = art.run(**inputs)
        return out if isinstance(out, list) else [out]

    return Reference("tvm-fp32-host", f"TVM's fp32 host build (llvm), since {why}", run)


# -- metrics -----------------------------------------------------------------------------
def compare(name: str, out: np.ndarray, ref: np.ndarray) -> dict:
    """Error of one output against the reference.

    ``max_rel`` is max|out - ref| / max|ref| (relative to the output's range: elementwise
    ratios explode where the reference is near zero). SQNR is 10 log10(sum ref^2 /
    sum (out - ref)^2) in dB (infinite when identical). Outputs shaped [batch, classes]
    also get top-1 agreement (share of rows whose argmax agrees) and top-5 agreement
    (share of rows whose reference top-1 class is among the output's top 5).
    """
    o = np.asarray(out, np.float64).reshape(np.shape(ref))
    r = np.asarray(ref, np.float64)
    diff = o - r
    finite = bool(np.isfinite(o).all())
    max_abs = float(np.abs(diff).max()) if r.size else 0.0
    scale = float(np.abs(r).max()) if r.size else 0.0
    noise, signal = float((diff ** 2).sum()), float((r ** 2).sum())
    norm = math.sqrt(float((o ** 2).sum()) * signal)
    result = {
        "name": name, "shape": list(np.shape(ref)), "finite": finite,
        "max_abs": max_abs if finite else math.inf,
        "max_rel": (max_abs / scale if scale > 0 else max_abs) if finite else math.inf,
        "cosine": float((o * r).sum() / norm) if norm > 0 else (1.0 if noise == 0 else 0.0),
        "sqnr_db": (math.inf if noise == 0 else 10 * math.log10(signal / noise)
                    if signal > 0 else -math.inf) if finite else -math.inf,
        "top1_agreement": None, "top5_agreement": None,
    }
    if r.ndim == 2 and r.shape[1] >= 2 and finite:
        ref_top = r.argmax(axis=1)
        result["top1_agreement"] = float((o.argmax(axis=1) == ref_top).mean())
        if r.shape[1] > 5:
            top5 = np.argsort(-o, axis=1)[:, :5]
            result["top5_agreement"] = float(np.mean([t in row for t, row in
                                                      zip(ref_top, top5)]))
    return result
