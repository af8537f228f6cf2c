"""Post-training int8 quantization of one NPU function's layers (``Graph`` → int8 ``Graph``).

Activations are symmetric per tensor (zero point 0: the ISA's MAC array takes inputs and
weights without zero points, and a conv's zero padding must stay 0), with the scale
``amax / 127`` from calibration (``tvm_cruise.calibration``). Weights are symmetric per
output channel. A MAC layer's bias becomes int32 on the accumulator's scale
``s_in · s_w[c]``, and REQUANT rescales the accumulators by ``s_in · s_w[c] / s_out`` as a
31-bit multiplier and a right shift, with relu / clip as clamps on the output's scale.

Pooling keeps its input's scale (max and average commute with a positive scale); a reshape
is the same bytes. A residual add fused into a conv (ResNet) adds the shortcut rescaled to
the output's scale by an int8 multiply (7 significant bits) after the requantization, then
clamps. A layer with no int8 lowering yet (element-wise, standalone activations, concat,
resize, matmul of two activations, sigmoid-like epilogues) is reported as a failure with
its op ids: the build sends it to the host in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .graph import Graph, Layer, Requant

QMAX = 127
MAC_KINDS = ("conv2d", "depthwise_conv2d", "dense")


@dataclass
class FunctionRanges:
    """Calibrated absolute ranges (``amax``) of one offloaded function's tensors; an input
    whose range is not known (a quantized model that records none) is None."""

    inputs: list[float | None]
    layers: dict[tuple[int, ...], float] = field(default_factory=dict)  # by composite op ids


@dataclass
class QuantizedGraph:
    """An int8 graph and the scales of its inputs and outputs (host side: real = q · s)."""

    graph: Graph
    input_scales: list[float]
    output_scales: list[float]


def scale_of(amax: float) -> float:
    """Symmetric int8 scale of a tensor whose values lie in [-amax, amax]."""
    amax = float(amax)
    return amax / QMAX if np.isfinite(amax) and amax > 0 else 1.0


def requant_params(ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """REQUANT ``(mult, shift)`` with ``mult / 2**shift ≈ ratio`` per channel.

    ``mult`` keeps 31 significant bits (``2**30 ≤ mult < 2**31``) unless the ratio is so
    small that the ISA's largest shift (62) leaves fewer.
    """
    ratio = np.asarray(ratio, np.float64)
    mant, exp = np.frexp(ratio)                     # ratio = mant · 2**exp, mant in [0.5, 1)
    mult = np.round(mant * 2.0 ** 31).astype(np.int64)
    carry = mult == 1 << 31
    mult[carry] >>= 1
    exp = exp + carry
    shift = 31 - exp.astype(np.int64)
    small = shift > 62
    mult[small] = np.round(ratio[small] * 2.0 ** 62).astype(np.int64)
    shift[small] = 62
    if np.any(shift < 0):
        raise ValueError(f"a requantization ratio of {float(ratio.max()):.3g} is beyond the "
                         "ISA's multiplier range (< 2**31)")
    return mult, shift


def _weight_scales(weight: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel scales and the int8 weights (dense weights are [k][n])."""
    w = weight.astype(np.float64)
    per_col = kind == "dense"
    amax = np.abs(w).max(axis=0) if per_col else np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scales = np.where(amax > 0, amax / QMAX, 1.0)
    q = np.round(w / (scales if per_col else scales.reshape((-1,) + (1,) * (w.ndim - 1))))
    return scales, np.clip(q, -QMAX, QMAX).astype(np.int8)


def _clamp(layer: Layer, s_out: float) -> tuple[int, int]:
    act = layer.act
    if act.name == "none":
        return -128, 127
    if act.name == "relu":
        return 0, 127
    if act.name == "clip":
        lo = int(np.clip(np.round(act.lo / s_out), -128, 127))
        hi = int(np.clip(np.round(act.hi / s_out), -128, 127))
        return lo, max(lo, hi)
    raise ValueError(f"int8: a fused {act.name} epilogue has no int8 lowering yet (the "
                     "ISA's int8 activations are clamps and standalone lookup tables)")


def residual_params(ratio: float) -> tuple[int, int]:
    """``(m, k)`` with ``m / 2**k ≈ ratio`` and ``m`` an int8 (the residual's rescale is an
    int8 ELTWISE multiply by a scalar: 7 significant bits)."""
    if not 0 < ratio < 127.5:
        raise ValueError(f"int8: a residual scale ratio of {ratio:.3g} is beyond an int8 "
                         "multiplier")
    k = min(31, int(np.floor(np.log2(127.5 / ratio))))
    m = int(np.round(ratio * 2.0 ** k))
    if m > QMAX:
        k, m = k - 1, int(np.round(ratio * 2.0 ** (k - 1)))
    return m, k


def _quantize_mac(layer: Layer, s_in: float, s_out: float, s_res: float | None) -> None:
    w_scales, layer.weight = _weight_scales(layer.weight, layer.kind)
    acc_scales = s_in * w_scales
    lo, hi = _clamp(layer, s_out)
    if layer.bias is not None:
        bias = np.round(layer.bias.astype(np.float64) / acc_scales)
        layer.bias = np.clip(bias, -(1 << 31), (1 << 31) - 1).astype(np.int32)
    mult, shift = requant_params(acc_scales / s_out)
    layer.requant = Requant(mult, shift, 0, lo, hi)
    if s_res is not None:
        layer.requant.residual_mult, layer.requant.residual_shift = \
            residual_params(s_res / s_out)


def quantize_graph(graph: Graph, ranges: FunctionRanges) -> tuple[QuantizedGraph, list]:
    """``graph`` (fp, as read by ``from_relax``) in int8, in place.

    Returns ``(QuantizedGraph, failures)``; failures are ``(op ids, reason)`` of the layers
    that cannot be quantized (the caller sends them to the host).
    """
    scales: dict[int, float] = {}
    unknown = set()
    for value, amax in zip(graph.inputs, ranges.inputs):
        if amax is None:
            unknown.add(id(value.root))
        else:
            scales[id(value.root)] = scale_of(amax)
    failures = list(graph.failures)
    for layer in graph.layers:
        if any(id(v.root) in unknown for v in layer.inputs):
            failures.append((tuple(layer.op_ids), "int8: the model records no range for this "
                             "layer's input (its producer is not quantized)"))
            continue
        try:
            _quantize_layer(layer, ranges, scales)
        except ValueError as err:
            failures.append((tuple(layer.op_ids), str(err)))
            # it runs on the host next time; its consumers still get its calibrated scale
            amax = ranges.layers.get(tuple(layer.op_ids))
            if amax is not None:
                scales.setdefault(id(layer.output.root), scale_of(amax))
    for value in [*graph.inputs, *(layer.output for layer in graph.layers)]:
        value.dtype = "int8"
    graph.dtype = "int8"
    # an input without a scale failed every layer reading it: the caller does not use q
    q = QuantizedGraph(graph, [scales.get(id(v.root), 1.0) for v in graph.inputs],
                       [scales.get(id(v.root), 1.0) for v in graph.outputs])
    return q, failures


def _quantize_layer(layer: Layer, ranges: FunctionRanges, scales: dict[int, float]) -> None:
    if any(v.data is not None for v in layer.inputs):
        raise ValueError(f"int8: {layer.kind} of a constant tensor has no int8 lowering yet")
    if layer.kind == "reshape":
        return  # same bytes: the output's root is the input's
    s_in = scales.get(id(layer.inputs[0].root))
    if s_in is None:
        raise ValueError(f"int8: the input of this {layer.kind} layer has no scale (its "
                         "producer was not quantized)")
    out = id(layer.output.root)
    if layer.kind == "pool2d":
        scales[out] = s_in
        return
    if layer.kind not in MAC_KINDS:
        raise ValueError(f"int8: {layer.kind} layers have no int8 lowering yet")
    if tuple(layer.op_ids) not in ranges.layers:
        raise ValueError("int8: no calibration range for this layer's output (a quantized "
                         "model that does not quantize it: pass calibration samples too)")
    s_res = None
    if layer.residual is not None:
        s_res = scales.get(id(layer.residual.root))
        if s_res is None or layer.residual.data is not None:
            raise ValueError("int8: the residual of this layer has no scale (a constant, or "
                             "its producer was not quantized)")
    scales[out] = scale_of(ranges.layers[tuple(layer.op_ids)])
    _quantize_mac(layer, s_in, scales[out], s_res)
