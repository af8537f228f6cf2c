"""Model import: PyTorch modules, saved ExportedPrograms (.pt2), ONNX and Relax IRModules.

Every path ends in the same place: a Relax ``IRModule`` whose ``main`` takes the model's
inputs with static shapes, with the weights bound as constants and constant-folded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .env import logger
from .errors import InputMismatchError, ModelLoadError, UnsupportedOpError

SUPPORTED_FORMATS = ("torch.nn.Module + example_inputs", "torch.export.ExportedProgram",
                     ".pt2 file (torch.export.save)", ".onnx file or onnx.ModelProto",
                     "tvm.IRModule with a Relax 'main'", "a bundled reference-model name")


@dataclass(frozen=True)
class TensorInfo:
    """Name, static shape and dtype of one model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping) -> "TensorInfo":
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}[{'x'.join(map(str, self.shape))}]"


@dataclass
class ImportedModel:
    """A model in Relax with its signature; what ``build`` compiles.

    ``quantization``: the activation ranges a QDQ ONNX model records
    (``onnx_prep.QdqRanges``: by the ONNX node producing each quantized tensor, which is the
    span of its Relax ops, and by graph input name); None for models that are not
    quantized. ``calibration.model_ranges`` turns it into int8 scales.
    """

    mod: Any  # tvm.IRModule
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    source_format: str
    name: str
    quantization: Any = None  # onnx_prep.QdqRanges | None


# --------------------------------------------------------------------------- helpers
def _shape_dtype(ty, what: str, output: bool = False) -> tuple[tuple[int, ...], str]:
    from tvm import relax

    if output and isinstance(ty, relax.TensorType) and ty.shape is None:
        raise ModelLoadError(
            f"{what} is not a tensor with a known shape ({ty}): its length depends on the "
            "data (torchvision.ops.nms keeps a data-dependent number of boxes); tvm-cruise "
            "compiles static shapes. Fix: for NMS call torch.ops.cruise.nms_padded(dets, "
            "scores, iou_threshold, max_out) (tvm_cruise.relay_ops.detection; indices "
            "padded with -1, and the count)")
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise ModelLoadError(f"{what} is not a tensor with a known shape ({ty}); tvm-cruise "
                             "compiles tensor-in, tensor-out models")
    dims = []
    for dim in ty.shape.values:
        if not hasattr(dim, "value"):
            raise ModelLoadError(
                f"{what} has a dynamic dimension {dim} in shape {ty.shape}; the accelerators "
                "need static shapes. Fix: pass input_shapes={'<input>': [1, 3, 224, 224]} "
                "(or example_inputs) to fix every dimension"
            )
        dims.append(int(dim.value))
    return tuple(dims), str(ty.dtype)


def _flatten_outputs(ty, names: Sequence[str] | None) -> list[TensorInfo]:
    from tvm import relax

    leaves = []

    def walk(t):
        if isinstance(t, relax.TupleType):
            for f in t.fields:
                walk(f)
        else:
            leaves.append(t)

    walk(ty)
    infos = []
    for i, leaf in enumerate(leaves):
        name = names[i] if names and i < len(names) else f"output_{i}"
        shape, dtype = _shape_dtype(leaf, f"output {i} ({name})", output=True)
        infos.append(TensorInfo(name, shape, dtype))
    return infos


def signature_of(mod, output_names: Sequence[str] | None = None):
    """``(inputs, outputs)`` TensorInfo lists of a Relax module's ``main``."""
    func = _main(mod)
    num_input = func.attrs.get("num_input") if func.attrs is not None else None
    params = list(func.params)[: int(num_input)] if num_input is not None else list(func.params)
    inputs = []
    for p in params:
        shape, dtype = _shape_dtype(p.ty, f"input {p.name!r}")
        inputs.append(TensorInfo(p.name, shape, dtype))
    return inputs, _flatten_outputs(func.ret_ty, output_names)


def _main(mod):
    from tvm import relax

    if "main" not in [g.name_hint for g in mod.get_global_vars()]:
        raise ModelLoadError("the IRModule has no 'main' function; tvm-cruise compiles the "
                             "Relax function named 'main'")
    func = mod["main"]
    if not isinstance(func, relax.Function):
        raise ModelLoadError("the IRModule's 'main' is not a Relax function (a TIR PrimFunc "
                             "is a kernel, not a model); import the model with a frontend")
    return func


def _finish(mod, source_format: str, name: str, output_names=None,
            input_names=None) -> ImportedModel:
    from tvm import relax

    func = _main(mod)
    if func.attrs is not None and "num_input" in func.attrs:
        # Parameters left as inputs would be runtime arguments; bind nothing silently.
        n = int(func.attrs["num_input"])
        if len(func.params) > n:
            raise ModelLoadError(
                f"the Relax 'main' has {len(func.params) - n} weight parameters that are not "
                "bound; bind them first (relax.frontend.detach_params + "
                "relax.transform.BindParams) so weights are constants"
            )
    mod = relax.transform.FoldConstant()(mod)
    inputs, outputs = signature_of(mod, output_names)
    if input_names is not None and len(input_names) == len(inputs):
        # the names the model's author gave (TVM's ONNX importer renames "input.1" to
        # "input_1"); inputs are passed by position, the names are what users type
        inputs = [TensorInfo(n, i.shape, i.dtype) for n, i in zip(input_names, inputs)]
    return ImportedModel(mod, inputs, outputs, source_format, name)


def _unsupported(fmt: str, ops: Sequence[str], detail: str) -> UnsupportedOpError:
    listing = ", ".join(ops) if ops else detail
    return UnsupportedOpError(
        f"the {fmt} model uses operators TVM's {fmt} importer cannot convert: {listing}. "
        "Fix: rewrite that part of the model with supported operators, or export it "
        "differently (e.g. decompose it in the model's forward)"
    )


# --------------------------------------------------------------------------- torch
def _from_exported_program(ep, name: str) -> ImportedModel:
    from ._importers import from_exported_program

    try:
        mod = from_exported_program(ep)
    except AssertionError as err:
        text = str(err)
        if "Unsupported function types" in text:
            ops = text.split("[", 1)[-1].rstrip("]").replace("'", "").split(", ")
            raise _unsupported("PyTorch", [o.strip() for o in ops], text) from None
        raise ModelLoadError(f"TVM could not import the exported program: {text}") from None
    except (NotImplementedError, KeyError, ValueError, TypeError) as err:
        raise ModelLoadError(
            f"TVM could not import the exported program: {type(err).__name__}: {err}"
        ) from None
    out_names = [str(n) for n in ep.graph_signature.user_outputs]
    return _finish(mod, "pytorch", name, out_names)


def _from_torch_module(model, example_inputs, name: str) -> ImportedModel:
    import torch

    if example_inputs is None:
        raise ModelLoadError(
            "a torch.nn.Module needs example_inputs to fix its input shapes; fix: "
            "build(model, example_inputs=(torch.randn(1, 3, 224, 224),), ...)"
        )
    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    args = tuple(torch.as_tensor(x) if isinstance(x, np.ndarray) else x
                 for x in example_inputs)
    for i, a in enumerate(args):
        if not isinstance(a, torch.Tensor):
            raise ModelLoadError(f"example_inputs[{i}] is a {type(a).__name__}; pass tensors "
                                 "(torch.Tensor or numpy arrays)")
    model = model.eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(model, args)
    except Exception as err:  # torch raises many types; all mean "could not trace"
        raise ModelLoadError(
            f"torch.export could not trace {type(model).__name__}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. Fix: make forward() traceable "
            "(no data-dependent Python control flow) and check example_inputs match forward()'s "
            "arguments"
        ) from None
    return _from_exported_program(ep, name)


def _from_pt2(path: Path, name: str) -> ImportedModel:
    import torch

    try:
        ep = torch.export.load(str(path))
    except Exception as err:
        raise ModelLoadError(
            f"{path} is not a readable torch.export program (.pt2): {type(err).__name__}: "
            f"{err}. Fix: save it with torch.export.save(torch.export.export(model, args), "
            "path)"
        ) from None
    return _from_exported_program(ep, name)


# --------------------------------------------------------------------------- onnx
def _from_onnx(proto, name: str, input_shapes, example_inputs) -> ImportedModel:
    import onnx

    from ._importers import dynamic_origin, from_onnx
    from .onnx_prep import input_signature, prepare_with_ranges
    from .onnx_prep.graph import value_dependent_ancestors

    try:
        onnx.checker.check_model(proto)
    except Exception as err:
        raise ModelLoadError(f"the ONNX model is invalid: {err}. Fix: re-export it") from None
    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    if example_inputs is not None:
        if isinstance(example_inputs, Mapping):
            example_inputs = [example_inputs[i.name] for i in graph_inputs
                              if i.name in example_inputs]
        if len(example_inputs) != len(graph_inputs):
            raise InputMismatchError(
                f"the ONNX model has {len(graph_inputs)} inputs "
                f"({', '.join(i.name for i in graph_inputs)}) but {len(example_inputs)} "
                "example inputs were given")
        derived = {i.name: list(np.shape(x)) for i, x in zip(graph_inputs, example_inputs)}
        input_shapes = {**derived, **(input_shapes or {})}
    input_shapes = dict(input_shapes or {})
    unknown = sorted(set(input_shapes) - {i.name for i in graph_inputs})
    if unknown:
        raise InputMismatchError(
            f"input_shapes names {unknown}, which the ONNX model does not have; its inputs "
            f"are {[i.name for i in graph_inputs]}")
    shape_dict, dtype_dict = input_signature(graph_inputs, input_shapes)
    try:
        proto, quantization = prepare_with_ranges(proto, shape_dict)
    except ModelLoadError:
        raise
    except Exception as err:  # a bug here must still say where it happened
        raise ModelLoadError(
            f"preparing the ONNX model for TVM failed: {type(err).__name__}: {err}. Fix: "
            "none on your side; report it with the model") from err
    mod = from_onnx(proto, shape_dict, dtype_dict)
    try:
        weights = {t.name for t in proto.graph.initializer}
        imported = _finish(mod, "onnx", name, [o.name for o in proto.graph.output],
                           [i.name for i in proto.graph.input if i.name not in weights])
        imported.quantization = quantization
        return imported
    except ModelLoadError:
        origin = dynamic_origin(mod)
        if origin is None:
            raise
        node = next((n for n in proto.graph.node if n.name == origin[0]), None)
        label = f"{origin[0]!r} ({node.op_type})" if node is not None else repr(origin[0])
        sources = value_dependent_ancestors(proto.graph, origin[0])
        why = (f"it depends on {', '.join(sources)}, whose output size depends on tensor "
               "values" if sources else "e.g. one that depends on tensor values")
        raise ModelLoadError(
            f"ONNX node {label}: its output has a shape known only at run time "
            f"({origin[1]}); {why}; tvm-cruise compiles static shapes. Fix: fix every "
            "input dimension with input_shapes=...; if they are fixed, replace the "
            "data-dependent part of the model") from None


# --------------------------------------------------------------------------- entry
def load_model(model: Any, example_inputs: Any = None, *,
               input_shapes: Mapping[str, Sequence[int]] | None = None,
               name: str | None = None) -> ImportedModel:
    """Import a model into Relax with bound, constant-folded weights.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` (needs ``example_inputs``), ``torch.export.ExportedProgram``,
        path to a ``.pt2`` or ``.onnx`` file, ``onnx.ModelProto``, ``tvm.IRModule`` with a
        Relax ``main``, or a bundled reference-model name (``"resnet18"``).
    example_inputs
        Tensors (torch or numpy) fixing the input shapes; required for a ``nn.Module``.
    input_shapes
        ``{"input_name": [1, 3, 224, 224]}`` for ONNX models with dynamic dimensions.
    name
        Name recorded in the artifact (default: derived from the model).

    Examples
    --------
    >>> import tvm_cruise
    >>> imported = tvm_cruise.load_model("perception-cnn")
    >>> [str(i) for i in imported.inputs]
    ['x: float32[1x3x128x256]']
    """
    import tvm

    from . import models

    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text in models.REFERENCE_MODELS:
            module, ref_inputs = models.get(text)
            inputs = ref_inputs if example_inputs is None else example_inputs
            return _from_torch_module(module, inputs, name or text)
        path = Path(text)
        if not path.exists():
            raise ModelLoadError(
                f"{text!r} is neither an existing file nor a bundled model; bundled models: "
                f"{', '.join(models.REFERENCE_MODELS)}; files: .onnx, .pt2")
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            import onnx

            try:
                proto = onnx.load(str(path))
            except Exception as err:
                raise ModelLoadError(f"{path} is not a readable ONNX file: {err}") from None
            return _from_onnx(proto, name or path.stem, input_shapes, example_inputs)
        if suffix in (".pt2", ".ep"):
            return _from_pt2(path, name or path.stem)
        raise ModelLoadError(
            f"{path}: unsupported model format {suffix or '(no suffix)'!r}; tvm-cruise reads "
            f"{'; '.join(SUPPORTED_FORMATS)}. A TorchScript .pt is not supported: use "
            "torch.export.save to write a .pt2")
    if isinstance(model, tvm.IRModule):
        if example_inputs is not None or input_shapes is not None:
            logger.info("example_inputs/input_shapes are ignored for a Relax IRModule: its "
                        "signature fixes the shapes")
        return _finish(model, "relax", name or "relax-module")
    try:
        import onnx

        if isinstance(model, onnx.ModelProto):
            return _from_onnx(model, name or (model.graph.name or "onnx-model"), input_shapes,
                              example_inputs)
    except ImportError:  # pragma: no cover - onnx is a hard dependency
        pass
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        if isinstance(model, torch.export.ExportedProgram):
            return _from_exported_program(model, name or "exported-program")
        if isinstance(model, torch.nn.Module):
            if input_shapes is not None:
                raise InputMismatchError("input_shapes is for ONNX models; a torch module's "
                                         "shapes come from example_inputs")
            return _from_torch_module(model, example_inputs, name or type(model).__name__)
    raise ModelLoadError(
        f"not a model: got {type(model).__module__}.{type(model).__name__}; tvm-cruise "
        f"accepts {'; '.join(SUPPORTED_FORMATS)}")


def op_counts(mod) -> dict[str, int]:
    """How many times each Relax operator is called in ``main`` (sorted by name)."""
    import tvm
    from tvm import relax

    counts: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            counts[expr.op.name] = counts.get(expr.op.name, 0) + 1

    relax.analysis.post_order_visit(_main(mod).body, visit)
    return dict(sorted(counts.items()))
