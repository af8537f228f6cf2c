"""The ONNX graph being prepared: static shapes, constants, and node-level errors.

Shapes come from ONNX's own shape inference (with data propagation) on a light copy of the
model whose large weights are replaced by typed inputs, so a big model is never serialized
whole. Constants are the initializers and what :func:`fold_constants` computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..env import logger
from ..errors import ModelLoadError

STANDARD_DOMAINS = ("", "ai.onnx")
# Initializers up to this many elements keep their values for shape inference: shape
# tensors, axes, scales. Larger ones (weights) only need their shapes there.
SMALL_TENSOR = 4096
# Folding evaluates nodes with ONNX's Python reference: bound the work it may take.
FOLD_INPUT_LIMIT = 1 << 22
FOLD_OUTPUT_LIMIT = 1 << 24
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                     "RandomUniformLike", "Multinomial", "Bernoulli"}


def node_label(node: onnx.NodeProto) -> str:
    """``'name' (OpType)``: how every message names an ONNX node."""
    return f"{node.name!r} ({node.op_type})"


def node_error(node: onnx.NodeProto, reason: str, fix: str) -> ModelLoadError:
    """A :class:`ModelLoadError` naming ``node``, the reason and the fix."""
    return ModelLoadError(f"ONNX node {node_label(node)}: {reason}. Fix: {fix}")


def attributes(node: onnx.NodeProto) -> dict:
    """The node's attributes as Python values (strings decoded)."""
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8") for v in value]
        out[attr.name] = value
    return out


def _numel(dims) -> int:
    return int(np.prod([int(d) for d in dims], dtype=np.int64)) if len(dims) else 1


def _static(type_proto) -> tuple[tuple[int, ...], int] | None:
    if not type_proto.HasField("tensor_type"):
        return None
    ttype = type_proto.tensor_type
    if not ttype.HasField("shape") or not ttype.elem_type:
        return None
    dims = []
    for dim in ttype.shape.dim:
        if not dim.HasField("dim_value"):
            return None
        dims.append(int(dim.dim_value))
    return tuple(dims), int(ttype.elem_type)


@dataclass
class PrepGraph:
    """A model under preparation: its static tensor types and its constants."""

    model: onnx.ModelProto
    opset: int
    types: dict[str, tuple[tuple[int, ...], int]] = field(default_factory=dict)
    _initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    _arrays: dict[str, np.ndarray] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set)

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph

    def refresh(self) -> None:
        """Re-run shape inference and re-index the initializers."""
        self.types = infer_types(self.model)
        self._initializers = {t.name: t for t in self.graph.initializer}
        self._arrays = {k: v for k, v in self._arrays.items() if k in self._initializers}
        self._names = ({n for node in self.graph.node for n in (*node.input, *node.output)}
                       | set(self._initializers) | {i.name for i in self.graph.input})

    def shape(self, name: str) -> tuple[int, ...] | None:
        """Static shape of tensor ``name``, or None when it is not known."""
        entry = self.types.get(name)
        return entry[0] if entry else None

    def is_const(self, name: str) -> bool:
        return name in self._initializers

    def const(self, name: str) -> np.ndarray | None:
        """Value of ``name`` if it is an initializer ('' and activations give None)."""
        if not name or name not in self._initializers:
            return None
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self._initializers[name])
        return self._arrays[name]

    def fresh(self, hint: str) -> str:
        """A tensor or node name not used anywhere in the graph yet."""
        name, i = hint, 0
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._names.add(name)
        return name

    def add_const(self, hint: str, value: np.ndarray) -> str:
        """Add ``value`` as a new initializer; returns its name."""
        name = self.fresh(hint)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.graph.initializer.append(tensor)
        self._initializers[name] = tensor
        self._arrays[name] = np.asarray(value)
        self.types[name] = (tuple(tensor.dims), tensor.data_type)
        return name


def infer_types(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], int]]:
    """Static ``(shape, elem_type)`` of every tensor ONNX shape inference can fix."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    listed = {i.name for i in model.graph.input}
    types = {}
    for tensor in model.graph.initializer:
        types[tensor.name] = (tuple(int(d) for d in tensor.dims), int(tensor.data_type))
        if _numel(tensor.dims) <= SMALL_TENSOR:
            graph.initializer.append(tensor)
        elif tensor.name not in listed:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                             tensor.dims))
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=False,
                                                     strict_mode=False, data_prop=True)
    except Exception as err:  # inference is best effort: the importer has the last word
        logger.debug("ONNX shape inference failed: %s", err)
        inferred = light
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        entry = _static(info.type)
        if entry is not None:
            types.setdefault(info.name, entry)
    return types


def _evaluate(node: onnx.NodeProto, feeds: dict[str, np.ndarray], model: onnx.ModelProto):
    from onnx.reference import ReferenceEvaluator

    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype),
                                            v.shape) for name, v in feeds.items()]
    outputs = [onnx.ValueInfoProto(name=o) for o in node.output if o]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    tiny = helper.make_model(graph, opset_imports=list(model.opset_import),
                             ir_version=model.ir_version)
    return ReferenceEvaluator(tiny).run(None, feeds)


def _foldable(node: onnx.NodeProto) -> bool:
    return (node.domain in STANDARD_DOMAINS and node.op_type not in _NONDETERMINISTIC
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                        for a in node.attribute))


def _fold_node(node: onnx.NodeProto, g: PrepGraph, values: dict[str, np.ndarray]):
    """Outputs of ``node`` as arrays when its inputs are known, else None."""
    if node.op_type in ("Shape", "Size"):
        shape = g.shape(node.input[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(_numel(shape), dtype=np.int64)]
        attrs = attributes(node)
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return [np.array(shape[start:end], dtype=np.int64)]
    names = [n for n in node.input if n]
    if not all(n in values or g.is_const(n) for n in names):
        return None
    feeds = {n: values[n] if n in values else g.const(n) for n in names}
    if sum(int(v.size) for v in feeds.values()) > FOLD_INPUT_LIMIT:
        return None
    try:
        outs = _evaluate(node, feeds, g.model)
    except Exception as err:  # the reference lacks some ops: TVM may still convert them
        logger.debug("not folding %s: %s", node_label(node), err)
        return None
    if any(np.asarray(o).size > FOLD_OUTPUT_LIMIT for o in outs):
        return None
    return [np.asarray(o) for o in outs]


def used_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node (subgraphs included) or a graph output reads."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                names.update(used_names(sub))
    return names


def fold_constants(g: PrepGraph, max_rounds: int = 8) -> int:
    """Replace every node whose outputs are known before run time by initializers.

    Known: ``Shape``/``Size`` of a tensor with a static shape, and any deterministic node
    of the standard domain whose inputs are all constant (evaluated with
    ``onnx.reference``). Rounds repeat with fresh shape inference until nothing folds, so
    a chain like Shape → Gather → Concat → Reshape → Shape folds through.

    Returns the number of nodes folded.
    """
    folded_total = 0
    for _ in range(max_rounds):
        g.refresh()
        values: dict[str, np.ndarray] = {}
        kept = []
        for node in g.graph.node:
            outs = _fold_node(node, g, values) if _foldable(node) else None
            if outs is None:
                kept.append(node)
                continue
            for name, value in zip([o for o in node.output if o], outs):
                values[name] = value
        if not values:
            break
        folded_total += len(g.graph.node) - len(kept)
        del g.graph.node[:]
        g.graph.node.extend(kept)
        needed = used_names(g.graph)
        for name, value in values.items():
            if name in needed:
                g.graph.initializer.append(numpy_helper.from_array(value, name))
    g.refresh()
    return folded_total


# Ops whose output size depends on tensor values, not only on input shapes.
DATA_DEPENDENT = ("NonZero", "Unique", "NonMaxSuppression", "Compress")


def value_dependent_ancestors(graph: onnx.GraphProto, node_name: str) -> list[str]:
    """Labels of ``node_name``'s ancestors (itself included) that make shapes from values:
    where a shape known only at run time comes from."""
    producer = {o: n for n in graph.node for o in n.output}
    by_name = {n.name: n for n in graph.node}
    todo = [by_name[node_name]] if node_name in by_name else []
    seen, found = set(), []
    while todo:
        node = todo.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in DATA_DEPENDENT:
            found.append(node_label(node))
        todo.extend(producer[i] for i in node.input if i in producer)
    return sorted(found)
