"""Resize arithmetic: ONNX's interpolation along one axis, and whether TVM's agrees.

ONNX Resize is separable: along each resized axis the output is ``M @ x`` with a constant
(out x in) interpolation matrix, plus a constant where ``tf_crop_and_resize`` extrapolates.
:func:`onnx_weights` builds ``M`` per the ONNX specification, with the arithmetic of
``onnx.reference``; :func:`tvm_agrees` says whether TVM's TOPI resize computes the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TVM_COORDS = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel",
              "tf_half_pixel_for_nn", "tf_crop_and_resize")


@dataclass(frozen=True)
class ResizeMode:
    """The attributes of one Resize node that shape its interpolation."""

    mode: str = "nearest"
    coord: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    antialias: bool = False
    extrapolation: float = 0.0

    @classmethod
    def of(cls, attrs: dict) -> "ResizeMode":
        return cls(attrs.get("mode", "nearest"),
                   attrs.get("coordinate_transformation_mode", "half_pixel"),
                   attrs.get("nearest_mode", "round_prefer_floor"),
                   float(attrs.get("cubic_coeff_a", -0.75)),
                   bool(attrs.get("exclude_outside", 0)), bool(attrs.get("antialias", 0)),
                   float(attrs.get("extrapolation_value", 0.0)))


def _source(m: ResizeMode, in_size: int, out_size: int, scale: float, roi) -> np.ndarray:
    y = np.arange(out_size, dtype=np.float64)
    width = scale * in_size  # ONNX: the real-valued output length, not the rounded one
    if m.coord == "align_corners":
        return np.zeros(out_size) if width == 1 else y * (in_size - 1) / (width - 1)
    if m.coord == "asymmetric":
        return y / scale
    if m.coord == "tf_crop_and_resize":
        # roi is a float32 tensor; onnx.reference does these steps in float32, and a
        # nearest tie depends on it.
        start, end = np.float32(roi[0]), np.float32(roi[1])
        offset = start * np.float32(in_size - 1)
        if width == 1:
            return np.full(out_size, (end - start) * np.float32(in_size - 1) / 2 + offset,
                           np.float64)
        return y * (end - start) * (in_size - 1) / (width - 1) + offset
    if m.coord == "pytorch_half_pixel":
        return np.full(out_size, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    if m.coord == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if m.coord == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / width)
        return offset + (y + 0.5) / scale - 0.5
    if m.coord == "tf_half_pixel_for_nn":  # Resize-11 only
        return (y + 0.5) / scale
    raise ValueError(f"coordinate_transformation_mode {m.coord!r} is not an ONNX mode")


def _keys(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _coefficients(m: ResizeMode, ratio: np.ndarray, scale: float) -> np.ndarray:
    """(out, taps) weights; ``ratio`` is in (0, 1], 1 where the source is an integer."""
    if m.mode == "nearest":
        upper = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5,
                 "floor": np.zeros_like(ratio, bool), "ceil": np.ones_like(ratio, bool)}
        if m.nearest_mode not in upper:
            raise ValueError(f"nearest_mode {m.nearest_mode!r} is not an ONNX mode")
        up = upper[m.nearest_mode] | (ratio == 1.0)
        return np.stack([~up, up], axis=1).astype(np.float64)
    s = min(scale, 1.0) if m.antialias else 1.0
    if m.mode == "linear":
        start = int(np.floor(-1 / s) + 1)
        taps = np.arange(start, 2 - start)
        w = np.clip(1 - np.abs((taps[None, :] - ratio[:, None]) * s), 0, 1)
    elif m.mode == "cubic":
        start = int(np.floor(-2 / s) + 1)
        taps = np.arange(start, 2 - start)
        w = _keys(s * (taps[None, :] - ratio[:, None]), m.cubic_a)
    else:
        raise ValueError(f"mode {m.mode!r} is not an ONNX mode")
    return w / w.sum(axis=1, keepdims=True) if m.antialias else w


def onnx_weights(m: ResizeMode, in_size: int, out_size: int, scale: float, roi=(0.0, 1.0)):
    """ONNX's interpolation along one axis: ``(M, extrapolated)``.

    ``M`` is (out_size, in_size) float64; ``extrapolated`` marks the output positions that
    take ``extrapolation_value`` (tf_crop_and_resize; all False otherwise).

    Examples
    --------
    >>> M, _ = onnx_weights(ResizeMode("linear", "align_corners"), 2, 3, 1.5)
    >>> M.tolist()
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    x = _source(m, in_size, out_size, scale, roi)
    base = np.floor(x)
    ratio = np.where(x == base, 1.0, x - base)
    coeffs = _coefficients(m, ratio, scale)
    n = coeffs.shape[1]
    # The n taps nearest x, ties to the smaller index, found as onnx.reference does: from
    # x + n/2, which is an integer also when x is within ~1e-16 above one (the window then
    # starts a tap early; kept, so results equal the reference's).
    pad = math.ceil(n / 2)
    padded = x + pad
    p = np.floor(padded)
    frac = padded - p
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    index = (p + offset).astype(np.int64)[:, None] + np.arange(n)[None, :] - pad
    if m.exclude_outside:
        coeffs = np.where((index < 0) | (index >= in_size), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    weights = np.zeros((out_size, in_size))
    rows = np.repeat(np.arange(out_size), n)
    np.add.at(weights, (rows, np.clip(index, 0, in_size - 1).ravel()), coeffs.ravel())
    extrapolated = np.zeros(out_size, bool)
    if m.coord == "tf_crop_and_resize":
        extrapolated = (x < 0) | (x > in_size - 1)
        weights[extrapolated] = 0.0
    return weights, extrapolated


def _tvm_source(m: ResizeMode, in_size: int, out_size: int, roi) -> np.ndarray | None:
    """TOPI's ``get_inx``: source coordinates from the in/out ratio (None: TOPI fails)."""
    x = np.arange(out_size, dtype=np.float64)
    scale = in_size / out_size
    if m.coord in ("half_pixel", "pytorch_half_pixel"):
        if m.coord == "pytorch_half_pixel" and out_size == 1:
            return np.zeros(1)
        return (x + 0.5) * scale - 0.5
    if m.coord == "asymmetric":
        return scale * x
    if m.coord == "tf_half_pixel_for_nn":
        return (x + 0.5) * scale
    if out_size == 1:  # align_corners, tf_crop_and_resize: TOPI divides by out_size - 1
        return None
    if m.coord == "align_corners":
        return (in_size - 1) / (out_size - 1) * x
    start, end = roi
    return start * (in_size - 1) + x * (end - start) * (in_size - 1) / (out_size - 1)


def _dyadic(v) -> bool:
    v = np.asarray(v, np.float64) * 1024
    return bool(np.all(v == np.round(v)))


def tvm_agrees(m: ResizeMode, in_size: int, out_size: int, roi, onnx_m, onnx_x) -> bool:
    """Whether TVM's TOPI resize computes ``onnx_m`` (and the same extrapolated set)."""
    if m.mode not in ("nearest", "linear", "cubic") or m.coord not in TVM_COORDS:
        return False
    c = _tvm_source(m, in_size, out_size, roi)
    if c is None:
        return False
    extrapolated = ((c < 0) | (c > in_size - 1) if m.coord == "tf_crop_and_resize"
                    else np.zeros(out_size, bool))
    if not np.array_equal(extrapolated, onnx_x):
        return False
    rows = np.arange(out_size)
    if m.mode == "nearest":
        int_div = (m.coord == "asymmetric" and m.nearest_mode == "floor"
                   and out_size % in_size == 0)
        if int_div:
            index = rows // (out_size // in_size)
        else:
            index = {"round_prefer_floor": np.ceil(c - 0.5),
                     "round_prefer_ceil": np.floor(c + 0.5),
                     "floor": np.floor(c + 1e-5), "ceil": np.ceil(c - 1e-5)}[m.nearest_mode]
            # Near a rounding boundary float32 decides; only exact arithmetic is safe there.
            edge = 0.5 if m.nearest_mode.startswith("round") else 0.0
            dist = np.abs((c - np.floor(c)) - edge)
            dist = np.minimum(dist, 1 - dist) if edge == 0.0 else dist
            exact = _dyadic(in_size / out_size) and _dyadic(c) and m.coord != "tf_crop_and_resize"
            if not exact and np.any(dist[~extrapolated] < 1e-3):
                return False
        weights = np.zeros((out_size, in_size))
        weights[rows, np.clip(index.astype(np.int64), 0, in_size - 1)] = 1.0
    else:
        base = np.floor(c)
        t = c - base
        if m.mode == "linear":
            taps, w = np.array([0, 1]), np.stack([1 - t, t], axis=1)
        else:
            a = m.cubic_a
            taps = np.array([-1, 0, 1, 2])
            w = np.stack([a * (t**3 - 2 * t**2 + t), (a + 2) * t**3 - (3 + a) * t**2 + 1,
                          -(a + 2) * t**3 + (3 + 2 * a) * t**2 - a * t, -a * t**3 + a * t**2],
                         axis=1)
        index = base.astype(np.int64)[:, None] + taps[None, :]
        if m.exclude_outside and m.mode == "cubic":
            w = np.where((index < 0) | (index > in_size - 1), 0.0, w)
            w = w / w.sum(axis=1, keepdims=True)
        weights = np.zeros((out_size, in_size))
        np.add.at(weights, (np.repeat(rows, len(taps)), np.clip(index, 0, in_size - 1).ravel()),
                  w.ravel())
    weights[extrapolated] = 0.0
    return bool(np.allclose(weights, onnx_m, atol=1e-5))


