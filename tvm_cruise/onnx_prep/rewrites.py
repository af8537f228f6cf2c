"""Node forms TVM's ONNX importer converts wrongly: rewritten to forms it gets right, or
refused with the node, the attribute and the reason.

``RULES`` maps an op type to a function ``(node, graph) -> list of nodes | None`` (None:
keep the node). Each rule's docstring says what TVM 0.27 does wrong with that form.
"""

from __future__ import annotations

import onnx
from onnx import helper

from . import resize
from .graph import PrepGraph, attributes, node_error


def _conv_transpose(node: onnx.NodeProto, g: PrepGraph):
    """``output_shape`` → explicit ``pads`` and ``output_padding``.

    TVM ignores ``output_shape`` and returns the shape the pads give (test_convtranspose_
    output_shape: (1, 2, 9, 7) for (1, 2, 10, 8)). Per the ONNX specification (and
    onnxruntime): a smaller output crops ``total = natural - wanted`` (``total - total // 2``
    at the start, or ``total // 2`` for SAME_UPPER); a larger one extends the end, which is
    ``output_padding`` and must stay below the stride.
    """
    attrs = attributes(node)
    if "output_shape" not in attrs:
        return None
    x, w = g.shape(node.input[0]), g.shape(node.input[1])
    if x is None or w is None:
        raise node_error(node, "output_shape needs the static shapes of its input and weight "
                               "to become pads", "fix every input dimension (input_shapes=...)")
    n = len(x) - 2
    wanted = list(attrs["output_shape"])[-n:]
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    kernel = list(attrs.get("kernel_shape", w[2:]))
    extra = list(attrs.get("output_padding", [0] * n))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    natural = [strides[i] * (x[i + 2] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
               for i in range(n)]
    if "pads" in attrs and auto_pad in ("NOTSET", "VALID"):
        pads = list(attrs["pads"])
        got = [natural[i] - pads[i] - pads[i + n] for i in range(n)]
        if got != wanted:
            raise node_error(node, f"output_shape {wanted} contradicts pads {pads}, which give "
                                   f"{got}", "give output_shape or pads, not both")
        begin, end = pads[:n], pads[n:]
    else:
        begin, end = [], []
        for i in range(n):
            total = natural[i] - wanted[i]
            if total < 0:
                extra[i] -= total
                total = 0
                if extra[i] >= max(strides[i], dilations[i]):
                    raise node_error(
                        node, f"output_shape {wanted} is {-(natural[i] - wanted[i])} larger "
                              f"than the input gives along spatial axis {i} ({natural[i]}); "
                              f"an output may only grow by less than the stride "
                              f"({strides[i]})", "correct output_shape")
            head = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            begin.append(head)
            end.append(total - head)
    keep = [a for a in node.attribute
            if a.name not in ("output_shape", "pads", "auto_pad", "output_padding")]
    new = helper.make_node("ConvTranspose", list(node.input), list(node.output),
                           name=node.name, pads=begin + end, output_padding=extra)
    new.attribute.extend(keep)
    return [new]


def _batch_norm(node: onnx.NodeProto, g: PrepGraph):
    """``training_mode=1`` is refused: TVM normalizes with the running statistics, while
    training mode uses the batch's own mean and variance (and updates the running ones)."""
    if attributes(node).get("training_mode", 0):
        raise node_error(node, "training_mode=1 normalizes with the batch's statistics; "
                               "tvm-cruise compiles inference, where the running mean and "
                               "variance are used",
                         "export the model in eval mode (model.eval() before export)")
    return None


def _reshape(node: onnx.NodeProto, g: PrepGraph):
    """``allowzero=1``: TVM loses the output shape. Without a 0 in the (constant) shape it
    means the same as ``allowzero=0``, so the attribute goes; a 0 there would be a
    zero-sized dimension, which is refused."""
    if not attributes(node).get("allowzero", 0):
        return None
    shape = g.const(node.input[1])
    if shape is None:
        raise node_error(node, "allowzero=1 with a shape computed at run time",
                         "fix every input dimension (input_shapes=...) so the shape folds")
    if (shape == 0).any():
        raise node_error(node, f"allowzero=1 with shape {shape.tolist()} makes a zero-sized "
                               "dimension; tvm-cruise compiles tensors with elements",
                         "export the model without empty tensors")
    new = helper.make_node("Reshape", list(node.input), list(node.output), name=node.name)
    new.attribute.extend(a for a in node.attribute if a.name != "allowzero")
    return [new]


RULES = {
    "BatchNormalization": _batch_norm,
    "ConvTranspose": _conv_transpose,
    "Reshape": _reshape,
    "Resize": resize.rewrite,
}


def apply_rules(g: PrepGraph) -> int:
    """Apply :data:`RULES` to every node of the main graph; returns how many changed."""
    nodes, changed = [], 0
    for node in g.graph.node:
        rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        replacement = rule(node, g) if rule else None
        if replacement is None:
            nodes.append(node)
        else:
            nodes.extend(replacement)
            changed += 1
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    return changed
