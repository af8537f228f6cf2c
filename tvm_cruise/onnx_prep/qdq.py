"""QDQ models (ONNX Runtime's ``quantize_static`` with ``QuantFormat.QDQ``): the float model
they quantize, and the activation ranges they record.

A QDQ model is a float model with ``QuantizeLinear → DequantizeLinear`` pairs on the tensors
it quantizes and ``DequantizeLinear`` on integer weights. :func:`strip_qdq` rewrites it into
its float equivalent before TVM imports it, and returns the quantization as
:class:`QdqRanges`, which ``tvm_cruise.calibration.model_ranges`` turns into the int8
scales of an NPU build (instead of calibrating):

- ``DequantizeLinear`` of an integer constant (weights, int32 biases; per tensor or per
  axis), and ``QuantizeLinear → DequantizeLinear`` of a float constant, become a float
  initializer holding the exact dequantized values ``(q - zero_point) · scale``.
- An activation pair ``x → QuantizeLinear → DequantizeLinear`` is removed (its consumers
  read ``x``) and ``x`` gets its range ``((qmin - zp)·s, (qmax - zp)·s)``, keyed by the ONNX
  node that produces ``x`` (graph inputs by name). Where ORT removed a Relu or Clip after a
  Conv and let the quantized range clamp (zero point = qmin, so the range starts at 0), a
  ``Relu`` named ``<producer>/Relu`` is inserted unless ``x`` is already non-negative, so
  the float model keeps the clamp at 0. A Relu rather than ``Clip(0, rmax)``: TVM 0.27's
  ONNX importer lowers ``Clip`` to two TE kernels no accelerator pattern matches, which
  would put the layer's epilogue on the host; the clamp at ``rmax`` is the int8 layer's own
  saturation (its output scale is ``rmax / 127``), so only fp16/fp32 builds no longer clamp
  values above the calibrated maximum (a removed ReLU6 then acts as a ReLU there).
- Everything else that is quantized is refused with the node, the reason and the fix (a
  ``ModelLoadError``): an operator-format model (``QLinearConv``, ``QGemm``,
  ``ConvInteger``, ...; an ``UnsupportedOpError`` listing every such node), a
  ``QuantizeLinear`` not followed by ``DequantizeLinear``, a ``DequantizeLinear`` of an
  integer tensor computed at run time, 16-bit, 4-bit and float8 activations, block
  quantization and per-axis scales on an activation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..env import logger
from ..errors import ModelLoadError, UnsupportedOpError
from .graph import PrepGraph, attributes, node_error, node_label, used_names

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"
# ORT writes its Q/DQ in the com.microsoft domain with UseQDQContribOps: same semantics.
QDQ_DOMAINS = ("", "ai.onnx", "com.microsoft")
# Activation types: the accelerators compute int8; a uint8 range maps onto it (symmetric).
ACTIVATION_RANGES = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255)}
# Constant (weight, bias) types dequantized to float (exactly; int4 and float8 are refused).
WEIGHT_TYPES = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
                TensorProto.INT32)
# Operator-format (QOperator) and dynamic quantization: integer kernels, not Q/DQ pairs.
INTEGER_OPS = ("QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
               "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
               "QAttention", "QEmbedLayerNormalization", "QuantizeWithOrder",
               "DequantizeWithOrder")
# Ops whose output is >= 0 (Clip: when its lower bound is), and ops that only move or pick
# values of their first input (>= 0 when it is).
NON_NEGATIVE = ("Relu", "Sigmoid", "Softmax")
VALUE_PRESERVING = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                    "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity",
                    "Resize", "Slice", "Split", "DepthToSpace", "SpaceToDepth", "Expand", "Tile")

_REQUANTIZE_FIX = ("quantize the float model with onnxruntime.quantization.quantize_static(..., "
                   "quant_format=QuantFormat.QDQ), or build the float model with "
                   "precision='int8' and calibration=...")


@dataclass(frozen=True)
class QuantRange:
    """One quantized activation: its real range ``[rmin, rmax]``, scale and zero point."""

    rmin: float
    rmax: float
    scale: float
    zero_point: int
    dtype: str  # "int8" or "uint8"

    @property
    def symmetric(self) -> bool:
        """int8 with zero point 0: the NPU's own quantization of the tensor."""
        return self.dtype == "int8" and self.zero_point == 0

    @property
    def amax(self) -> float:
        """The ``amax`` of the NPU's symmetric int8 quantization (scale ``amax / 127``): the
        model's own scale when it is symmetric, else ``max(|rmin|, |rmax|)``, which spends
        one of a one-sided tensor's 8 bits on a sign it never uses."""
        return 127.0 * self.scale if self.symmetric else max(-self.rmin, self.rmax)


@dataclass(frozen=True)
class QdqRanges:
    """What a QDQ model records about its quantization (``ImportedModel.quantization``).

    ``nodes`` maps an ONNX node name to the range of its output (a node with one output in
    use; the name is the span of the Relax ops it imports to), ``inputs`` a graph input
    name to its range. ``restored`` names the Relu nodes inserted where ORT had removed an
    activation; ``weights`` counts the dequantized constants.
    """

    nodes: Mapping[str, QuantRange] = field(default_factory=dict)
    inputs: Mapping[str, QuantRange] = field(default_factory=dict)
    restored: tuple[str, ...] = ()
    weights: int = 0

    def all(self) -> list[QuantRange]:
        return [*self.nodes.values(), *self.inputs.values()]


def is_quantized(graph: onnx.GraphProto) -> bool:
    """Whether the graph has Q/DQ nodes or integer (QOperator) kernels."""
    return any(n.op_type in (QUANTIZE, DEQUANTIZE) or _is_integer_op(n) for n in graph.node)


def _is_integer_op(node: onnx.NodeProto) -> bool:
    return node.op_type.startswith(("QLinear", "QOrdered")) or node.op_type in INTEGER_OPS


def _is_qdq(node: onnx.NodeProto, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in QDQ_DOMAINS


def _refuse_integer_ops(graph: onnx.GraphProto) -> None:
    found: dict[str, list[str]] = {}
    for node in graph.node:
        if _is_integer_op(node):
            found.setdefault(node.op_type, []).append(repr(node.name))
    if found:
        listing = "; ".join(f"{op} ({', '.join(names)})" for op, names in sorted(found.items()))
        raise UnsupportedOpError(
            f"the ONNX model is quantized in operator format (QOperator): {listing} compute "
            "on integers with their own kernels, which TVM does not import; tvm-cruise reads "
            "quantized models in QDQ format (QuantizeLinear/DequantizeLinear around float "
            "operators), takes their scales and quantizes for the accelerator itself. Fix: "
            + _REQUANTIZE_FIX)


class _Params:
    """Scale, zero point, axis and integer type of one Q or DQ node."""

    def __init__(self, node: onnx.NodeProto, g: PrepGraph, constants: dict,
                 default_type: int):
        attrs = attributes(node)
        if attrs.get("block_size", 0):
            raise node_error(node, f"block quantization (block_size={attrs['block_size']}) "
                             "gives each block of a tensor its own scale; the accelerator "
                             "quantizes a tensor with one scale (weights: one per output "
                             "channel)", "re-quantize without block_size (per tensor or "
                             "per channel)")
        self.scale = _constant(node, 1, g, constants, "scale")
        zp = _constant(node, 2, g, constants, "zero point") if len(node.input) > 2 and \
            node.input[2] else None
        self.type = _zero_point_type(node, g, constants) if zp is not None else default_type
        self.zero_point = np.zeros_like(self.scale, np.int64) if zp is None else \
            zp.astype(np.int64)
        self.axis = attrs.get("axis", 1)

    def same(self, other: "_Params") -> bool:
        return (self.type == other.type and np.array_equal(self.scale, other.scale)
                and np.array_equal(self.zero_point, other.zero_point))

    def text(self) -> str:
        return (f"scale {self.scale.ravel()[:4].tolist()}, zero point "
                f"{self.zero_point.ravel()[:4].tolist()} ({_type_name(self.type)})")

    def broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point shaped to broadcast against a tensor of rank ``ndim``."""
        if self.scale.size == 1:
            return self.scale.reshape(()), self.zero_point.reshape(())
        shape = [1] * ndim
        shape[self.axis % ndim] = self.scale.size
        return self.scale.reshape(shape), self.zero_point.reshape(shape)


def _constant(node, index: int, g: PrepGraph, constants: dict, what: str) -> np.ndarray:
    name = node.input[index]
    value = constants.get(name, g.const(name))
    if value is None:
        raise node_error(node, f"its {what} {name!r} is computed at run time; a QDQ model's "
                         "scales and zero points are constants", "quantize statically "
                         "(onnxruntime quantize_static), not dynamically")
    return np.asarray(value)


def _zero_point_type(node, g: PrepGraph, constants: dict) -> int:
    name = node.input[2]
    if name in constants:
        return helper.np_dtype_to_tensor_dtype(constants[name].dtype)
    return g.types[name][1]


def _constant_nodes(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of ``Constant`` nodes (some exporters give scales that way)."""
    values = {}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attr = next(iter(node.attribute), None)
            if attr is not None and attr.name == "value":
                values[node.output[0]] = numpy_helper.to_array(attr.t)
            elif attr is not None and attr.name in ("value_float", "value_floats",
                                                    "value_int", "value_ints"):
                values[node.output[0]] = np.asarray(helper.get_attribute_value(attr))
    return values


def _dequantize(q: np.ndarray, p: _Params) -> np.ndarray:
    """``(q - zero_point) · scale`` in the scale's type, as the ONNX specification computes
    it (exact in float32 for integers below 2**24)."""
    scale, zp = p.broadcast(q.ndim)
    return ((q.astype(np.int64) - zp).astype(scale.dtype) * scale).astype(scale.dtype)


def _quantize(x: np.ndarray, p: _Params) -> np.ndarray:
    qmin, qmax = _type_range(p.type)
    scale, zp = p.broadcast(x.ndim)
    q = np.rint(x.astype(np.float64) / scale.astype(np.float64)) + zp
    return np.clip(q, qmin, qmax).astype(helper.tensor_dtype_to_np_dtype(p.type))


def _type_range(elem_type: int) -> tuple[int, int]:
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(elem_type))
    return int(info.min), int(info.max)


def _type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() \
        else str(elem_type)


def _refuse_type(node, elem_type: int, what: str) -> ModelLoadError:
    return node_error(node, f"{what} is quantized to {_type_name(elem_type)}; the accelerators "
                      "compute int8 activations, and int8 weights made from 8- to 32-bit "
                      "integer or float constants", "re-quantize with activation_type="
                      "QuantType.QUInt8 or QuantType.QInt8 and weight_type=QuantType.QInt8")


class _Stripper:
    """One pass over a QDQ graph (see :func:`strip_qdq`). Nodes are tracked by identity:
    names need not be unique in an ONNX graph."""

    def __init__(self, g: PrepGraph):
        self.g = g
        self.nodes = list(g.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in g.graph.output}
        self.inputs = {i.name for i in g.graph.input if not g.is_const(i.name)}
        self.used = used_names(g.graph)
        self.constants = _constant_nodes(g.graph)
        self.node_names = {n.name for n in self.nodes}
        self.floats: dict[str, np.ndarray] = {}    # dequantized constants, by DQ output
        self.integers: dict[str, np.ndarray] = {}  # quantized constants, by Q output
        self.rename: dict[str, str] = {}           # DQ output -> float tensor read instead
        self.removed: set[int] = set()             # id() of the removed nodes
        self.emit_at: dict[int, onnx.NodeProto] = {}  # id() of a removed node -> its stand-in
        self.relu_of: dict[str, str] = {}          # tensor -> output of the Relu inserted
        self.restored: list[str] = []
        self.ranges: dict[str, QuantRange] = {}    # float tensor -> its range

    def resolve(self, name: str) -> str:
        return self.rename.get(name, name)

    def const(self, name: str) -> np.ndarray | None:
        for table in (self.floats, self.integers, self.constants):
            if name in table:
                return table[name]
        return self.g.const(name)

    def params(self, node, default_type: int) -> _Params:
        return _Params(node, self.g, self.constants, default_type)

    # -- constants -------------------------------------------------------------------------
    def quantize_constant(self, node) -> None:
        p = self.params(node, attributes(node).get("output_dtype") or TensorProto.UINT8)
        if p.type not in WEIGHT_TYPES:
            raise _refuse_type(node, p.type, f"the constant {node.input[0]!r}")
        self.only_dequantized(node)
        self.integers[node.output[0]] = _quantize(self.const(node.input[0]), p)
        self.removed.add(id(node))

    def dequantize_constant(self, node) -> None:
        q = self.const(node.input[0])
        elem = helper.np_dtype_to_tensor_dtype(q.dtype)
        if elem not in WEIGHT_TYPES:
            raise _refuse_type(node, elem, f"the constant {node.input[0]!r}")
        self.floats[node.output[0]] = _dequantize(q, self.params(node, elem))
        self.removed.add(id(node))

    # -- activations -----------------------------------------------------------------------
    def only_dequantized(self, node) -> list:
        """The DequantizeLinear nodes reading ``node``'s output: they must be all of them."""
        out = node.output[0]
        readers = self.consumers.get(out, [])
        others = [r for r in readers if not _is_qdq(r, DEQUANTIZE)]
        if out in self.outputs or others:
            where = ("is a graph output" if out in self.outputs else
                     f"is read by {', '.join(node_label(r) for r in others)}")
            raise node_error(node, f"its output {out!r} {where}, not by a DequantizeLinear: "
                             "the model computes on integers there, which tvm-cruise does not "
                             "import", "quantize in QDQ format, where every QuantizeLinear "
                             "feeds DequantizeLinear nodes only; " + _REQUANTIZE_FIX)
        return readers

    def quantize_activation(self, node) -> None:
        p = self.params(node, attributes(node).get("output_dtype") or TensorProto.UINT8)
        if p.type not in ACTIVATION_RANGES:
            raise _refuse_type(node, p.type, f"the activation {node.input[0]!r}")
        if p.scale.size != 1:
            raise node_error(node, f"per-axis scales ({p.scale.size} along axis {p.axis}) on "
                             f"the activation {node.input[0]!r}; the accelerator quantizes "
                             "each activation tensor with one scale", "re-quantize with "
                             "per-tensor activation scales (quantize_static's per_channel=True "
                             "concerns weights only; drop per-axis activation entries from "
                             "extra_options['TensorQuantOverrides'])")
        readers = self.only_dequantized(node)
        for dq in readers:
            other = self.params(dq, p.type)
            if not other.same(p):
                raise node_error(dq, f"it dequantizes {node.output[0]!r} with {other.text()} "
                                 f"but {node.name!r} quantized it with {p.text()}: a "
                                 "requantization no float model expresses", "re-quantize the "
                                 "model so each QuantizeLinear and its DequantizeLinear nodes "
                                 "share scale and zero point; " + _REQUANTIZE_FIX)
        qmin, qmax = ACTIVATION_RANGES[p.type]
        s, zp = float(p.scale.ravel()[0]), int(p.zero_point.ravel()[0])
        rng = QuantRange((qmin - zp) * s, (qmax - zp) * s, s, zp,
                         "int8" if p.type == TensorProto.INT8 else "uint8")
        source = self.resolve(node.input[0])
        # a range starting at 0 clamps there: ORT's stand-in for the Relu/Clip it removed.
        # A graph input's range only says what calibration fed it: no clamp is added.
        target = self.clamp_at_zero(source, node) if zp == qmin and \
            source in self.producer else source
        for dq in readers:
            self.rename[dq.output[0]] = target
            self.removed.add(id(dq))
            if dq.output[0] in self.outputs:  # the graph output keeps its name
                self.emit_at[id(dq)] = helper.make_node("Identity", [target], [dq.output[0]],
                                                        name=dq.name)
        self.removed.add(id(node))
        old = self.ranges.get(target)
        # two quantizations of one tensor (a requantizing DQ → Q): the NPU has one scale per
        # tensor, so it takes the wider range, which clips no value either one keeps
        if old is None or rng.amax > old.amax:
            self.ranges[target] = rng

    def clamp_at_zero(self, source: str, q_node) -> str:
        """The tensor consumers of a one-sided range read: ``source`` when it is already
        non-negative, else a Relu of it (inserted once, in the QuantizeLinear's place)."""
        if source in self.relu_of:
            return self.relu_of[source]
        if self.non_negative(source):
            return source
        hint = name = f"{self.producer[source].name}/Relu"
        k = 0
        while name in self.node_names:
            k += 1
            name = f"{hint}_{k}"
        self.node_names.add(name)
        out = self.g.fresh(f"{source}_relu")
        relu = helper.make_node("Relu", [source], [out], name=name)
        self.emit_at[id(q_node)] = relu
        self.producer[out] = relu
        self.relu_of[source] = out
        self.restored.append(name)
        return out

    def non_negative(self, name: str) -> bool:
        name = self.resolve(name)
        node = self.producer.get(name)
        if node is None or name in self.floats:
            value = self.const(name)
            return value is not None and bool((value >= 0).all())
        if node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type in NON_NEGATIVE:
            return True
        if node.op_type == "Clip":
            low = (attributes(node).get("min") if self.g.opset < 11 else
                   self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None)
            return low is not None and bool(np.all(np.asarray(low) >= 0))
        if node.op_type in VALUE_PRESERVING:
            return self.non_negative(node.input[0])
        if node.op_type in ("Concat", "Max"):
            return all(self.non_negative(i) for i in node.input)
        return False

    # -- the whole graph -------------------------------------------------------------------
    def run(self) -> QdqRanges:
        for node in self.nodes:
            if id(node) in self.removed:
                continue
            if _is_qdq(node, QUANTIZE):
                if self.const(node.input[0]) is not None:
                    self.quantize_constant(node)
                else:
                    self.quantize_activation(node)
            elif _is_qdq(node, DEQUANTIZE):
                if self.const(node.input[0]) is None:
                    raise node_error(node, f"it dequantizes {node.input[0]!r}, which is "
                                     "neither a constant nor the output of a QuantizeLinear: "
                                     "an integer tensor computed at run time or an integer "
                                     "model input", "give the model float inputs; "
                                     + _REQUANTIZE_FIX)
                self.dequantize_constant(node)
        self.rewrite()
        return self.collect()

    def rewrite(self) -> None:
        graph = self.g.graph
        read_before = {i for n in self.nodes if id(n) in self.removed for i in n.input}
        nodes = []
        for node in self.nodes:
            if id(node) in self.emit_at:
                nodes.append(self.emit_at[id(node)])
            if id(node) in self.removed:
                continue
            for k, name in enumerate(node.input):
                node.input[k] = self.resolve(name)
            nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        still_used = used_names(graph)
        for name, value in self.floats.items():
            if name in still_used:
                graph.initializer.append(numpy_helper.from_array(value, name))
        orphans = read_before - still_used  # quantized weights, scales, zero points
        kept = [t for t in graph.initializer if t.name not in orphans]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        kept_inputs = [i for i in graph.input if i.name not in orphans]
        del graph.input[:]
        graph.input.extend(kept_inputs)
        self.g.refresh()

    def collect(self) -> QdqRanges:
        nodes, inputs = {}, {}
        for tensor, rng in self.ranges.items():
            if tensor in self.inputs:
                inputs[tensor] = rng
                continue
            node = self.producer[tensor]
            if sum(1 for o in node.output if o == tensor or o in self.used) == 1:
                nodes[node.name] = rng
            else:  # a Split's outputs: one op in Relax, one span, several tensors
                logger.debug("QDQ: %s has several outputs in use; their ranges are not used",
                             node_label(node))
        return QdqRanges(nodes, inputs, tuple(self.restored), len(self.floats))


def strip_qdq(g: PrepGraph) -> QdqRanges:
    """Rewrite the QDQ model ``g`` into its float equivalent, in place (see the module doc).

    Parameters
    ----------
    g
        The model under preparation (``PrepGraph``), with every node named.

    Returns
    -------
    QdqRanges
        The activation ranges the model records, by producing node and graph input.

    Raises
    ------
    ModelLoadError
        A quantization form without a float equivalent tvm-cruise can take scales from;
        the message names the node, the reason and the fix.

    Examples
    --------
    >>> from onnx import helper, TensorProto
    >>> from tvm_cruise.onnx_prep.graph import PrepGraph
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    >>> s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    >>> z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    >>> nodes = [helper.make_node("Sigmoid", ["x"], ["a"], name="sig"),
    ...          helper.make_node("QuantizeLinear", ["a", "s", "z"], ["q"], name="q"),
    ...          helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]
    >>> g = PrepGraph(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [s, z])), 17)
    >>> g.refresh()
    >>> r = strip_qdq(g)
    >>> [n.op_type for n in g.graph.node], round(r.nodes["sig"].amax, 3)
    (['Sigmoid', 'Identity'], 12.7)
    """
    _refuse_integer_ops(g.graph)
    ranges = _Stripper(g).run()
    logger.info("QDQ model: %d quantized activations, %d dequantized constants, %d removed "
                "activations restored", len(ranges.all()), ranges.weights, len(ranges.restored))
    return ranges
