"""ONNX preparation: what runs between reading an ONNX model and TVM's importer.

TVM's ONNX importer converts node by node and trusts what it sees. :func:`prepare` gives
it a model it converts right:

1. the input shapes the user fixed are written into the graph;
2. every node gets a name (``<OpType>_<index>`` when it had none), so errors and the
   placement report can name it;
3. a QDQ model (ONNX Runtime's ``quantize_static``) becomes its float equivalent and its
   activation ranges are recorded (``qdq.strip_qdq``; operator-format models such as
   ``QLinearConv`` are refused with the fix);
4. shape arithmetic folds to constants (``graph.fold_constants``): exporters compute
   reshape targets, pads and expand shapes from ``Shape`` at run time
   (Shape → Gather → Concat → Reshape, ConstantOfShape, dynamic Pad);
5. optional outputs nothing reads are dropped (TVM converts MaxPool's first output only
   and refuses a node whose unused ``Indices`` output is still declared);
6. node forms TVM lowers wrongly are rewritten exactly or refused (``rewrites.RULES``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import onnx
from onnx import TensorProto, defs

from ..env import logger
from ..errors import InputMismatchError, ModelLoadError
from .graph import PrepGraph, fold_constants, node_error, node_label, used_names
from .qdq import QdqRanges, QuantRange, is_quantized, strip_qdq
from .rewrites import RULES, apply_rules

__all__ = ["prepare", "prepare_with_ranges", "input_signature", "tvm_dtypes", "node_label",
           "node_error", "RULES", "QdqRanges", "QuantRange"]


def _opset(model: onnx.ModelProto) -> int:
    for ident in model.opset_import:
        if ident.domain in ("", "ai.onnx"):
            return int(ident.version)
    return 1


def _set_input_shapes(graph: onnx.GraphProto, shapes: Mapping[str, Sequence[int]]) -> None:
    for inp in graph.input:
        if inp.name not in shapes:
            continue
        shape = inp.type.tensor_type.shape
        del shape.dim[:]
        for value in shapes[inp.name]:
            shape.dim.add().dim_value = int(value)


def _name_nodes(graph: onnx.GraphProto) -> None:
    taken = {n.name for n in graph.node if n.name}
    for i, node in enumerate(graph.node):
        if node.name:
            continue
        name, k = f"{node.op_type}_{i}", 0
        while name in taken:
            k += 1
            name = f"{node.op_type}_{i}_{k}"
        node.name = name
        taken.add(name)


def _drop_unused_outputs(graph: onnx.GraphProto, opset: int) -> None:
    used = used_names(graph)
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            formal = defs.get_schema(node.op_type, opset, node.domain).outputs
        except Exception:  # an op the installed onnx does not know: leave it to TVM
            continue
        while (len(node.output) > 1 and node.output[-1] not in used
               and len(node.output) <= len(formal)
               and formal[len(node.output) - 1].option
               == defs.OpSchema.FormalParameterOption.Optional):
            node.output.pop()


def tvm_dtypes() -> dict[int, str]:
    """Element types TVM compiles, by ONNX type id (TVM's importer maps each id through
    ``onnx.helper.tensor_dtype_to_np_dtype``; complex, string, float8 and 4-bit types have
    no TVM kernels)."""
    T = TensorProto
    return {T.FLOAT: "float32", T.FLOAT16: "float16", T.DOUBLE: "float64",
            T.BFLOAT16: "bfloat16", T.INT8: "int8", T.INT16: "int16", T.INT32: "int32",
            T.INT64: "int64", T.UINT8: "uint8", T.UINT16: "uint16", T.UINT32: "uint32",
            T.UINT64: "uint64", T.BOOL: "bool"}


def input_signature(graph_inputs, input_shapes: Mapping[str, Sequence[int]]
                    ) -> tuple[dict, dict]:
    """Static shape and TVM dtype of every graph input.

    Parameters
    ----------
    graph_inputs
        The ``ValueInfoProto`` of the graph inputs that are not initializers.
    input_shapes
        Shapes the user gave, by input name; they may only set symbolic dimensions.

    Returns
    -------
    tuple of dict
        ``(shape_dict, dtype_dict)`` as TVM's importer takes them.

    Raises
    ------
    ModelLoadError
        An input of a type TVM does not compile, or with a dimension left dynamic.
    InputMismatchError
        A given shape that contradicts the model's.

    Examples
    --------
    >>> from onnx import helper, TensorProto
    >>> x = helper.make_tensor_value_info("x", TensorProto.UINT16, ["N", 3])
    >>> input_signature([x], {"x": [2, 3]})
    ({'x': [2, 3]}, {'x': 'uint16'})
    """
    dtypes = tvm_dtypes()
    shape_dict, dtype_dict = {}, {}
    for inp in graph_inputs:
        ttype = inp.type.tensor_type
        dtype = dtypes.get(ttype.elem_type)
        if dtype is None:
            kind = (TensorProto.DataType.Name(ttype.elem_type)
                    if ttype.elem_type in TensorProto.DataType.values() else "not a tensor")
            raise ModelLoadError(
                f"ONNX input {inp.name!r} has element type {kind} ({ttype.elem_type}), which "
                f"TVM does not compile; supported: {', '.join(sorted(set(dtypes.values())))}. "
                "Fix: export the model with the input in a supported type (cast it inside "
                "the model)")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in ttype.shape.dim]
        given = input_shapes.get(inp.name)
        if given is not None:
            given = [int(v) for v in given]
            if len(given) != len(dims) or any(
                    isinstance(d, int) and d != g for d, g in zip(dims, given)):
                raise InputMismatchError(
                    f"ONNX input {inp.name!r} has shape {dims} but {given} was given; fix the "
                    "given shape (only symbolic dimensions may be set)")
            dims = given
        symbolic = [d for d in dims if not isinstance(d, int)]
        if symbolic:
            raise ModelLoadError(
                f"ONNX input {inp.name!r} has dynamic dimensions {symbolic} (shape {dims}); the "
                f"accelerators need static shapes. Fix: input_shapes={{'{inp.name}': "
                f"{[d if isinstance(d, int) else 1 for d in dims]}}} (CLI: --input-shape "
                f"{inp.name}={'x'.join(str(d if isinstance(d, int) else 1) for d in dims)})")
        shape_dict[inp.name] = dims
        dtype_dict[inp.name] = dtype
    return shape_dict, dtype_dict


def prepare(model: onnx.ModelProto,
            input_shapes: Mapping[str, Sequence[int]] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` that TVM's ONNX importer converts right (see the module doc).

    Parameters
    ----------
    model
        A checked ONNX model.
    input_shapes
        Static shape of every graph input with a dynamic dimension, by input name.

    Returns
    -------
    onnx.ModelProto
        The prepared copy; ``model`` itself is not changed. A QDQ model's ranges are
        dropped: :func:`prepare_with_ranges` keeps them.

    Raises
    ------
    ModelLoadError
        A node in a form TVM would convert wrongly and that cannot be rewritten; the
        message names the node, the reason and a fix.

    Examples
    --------
    >>> from onnx import helper, TensorProto
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    >>> nodes = [helper.make_node("Shape", ["x"], ["s"]),
    ...          helper.make_node("Reshape", ["x", "s"], ["y"])]
    >>> m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    >>> [n.op_type for n in prepare(m, {"x": [2, 4]}).graph.node]
    ['Reshape']
    """
    return prepare_with_ranges(model, input_shapes)[0]


def prepare_with_ranges(model: onnx.ModelProto,
                        input_shapes: Mapping[str, Sequence[int]] | None = None
                        ) -> tuple[onnx.ModelProto, QdqRanges | None]:
    """:func:`prepare`, and the activation ranges of a QDQ model (``qdq.QdqRanges``; None
    for a model without QuantizeLinear/DequantizeLinear)."""
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    opset = _opset(prepared)
    _set_input_shapes(prepared.graph, input_shapes or {})
    _name_nodes(prepared.graph)
    g = PrepGraph(prepared, opset)
    ranges = None
    if is_quantized(prepared.graph):
        g.refresh()
        ranges = strip_qdq(g)
    folded = fold_constants(g)
    _drop_unused_outputs(prepared.graph, opset)
    changed = apply_rules(g)
    logger.debug("ONNX preparation: %d nodes folded, %d rewritten", folded, changed)
    return prepared, ranges
