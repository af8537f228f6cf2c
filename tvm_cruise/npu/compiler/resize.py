"""Resize as matrix products: ``out_c = Rh @ X_c @ Rw^T`` with interpolation matrices.

The matrices follow the semantics of Relax ``image.resize2d`` (TVM's topi): the output
coordinate maps to an input coordinate by ``coordinate_transformation_mode``; nearest
picks one pixel by ``rounding_method``, linear blends the two neighbours; indices outside
the image clamp to its border.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import BuildError


def _source(x: int, in_size: int, out_size: int, mode: str) -> float:
    scale = in_size / out_size
    if mode == "half_pixel":
        return (x + 0.5) * scale - 0.5
    if mode == "align_corners":
        return (in_size - 1) / (out_size - 1) * x if out_size > 1 else 0.0
    if mode == "asymmetric":
        return scale * x
    if mode == "pytorch_half_pixel":
        return (x + 0.5) * scale - 0.5 if out_size > 1 else 0.0
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) * scale
    raise BuildError(f"NPU compiler: resize coordinate mode {mode!r} is not supported")


def _nearest(v: float, rounding: str, mode: str) -> int:
    if rounding == "":
        rounding = "round" if mode == "align_corners" else "floor"
    if rounding == "round":
        return int(np.round(v))  # half to even, as te.round
    if rounding == "round_prefer_floor":
        return math.ceil(v - 0.5)
    if rounding == "round_prefer_ceil":
        return math.floor(v + 0.5)
    if rounding == "floor":
        return math.floor(v + 1e-5)
    if rounding == "ceil":
        return math.ceil(v - 1e-5)
    raise BuildError(f"NPU compiler: resize rounding {rounding!r} is not supported")


def interpolation_matrix(in_size: int, out_size: int, method: str, mode: str,
                         rounding: str) -> np.ndarray:
    """``(out_size, in_size)`` weights: row ``o`` blends the input pixels of output ``o``."""
    mat = np.zeros((out_size, in_size), dtype=np.float64)

    def clamp(i: int) -> int:
        return min(max(i, 0), in_size - 1)

    for o in range(out_size):
        v = _source(o, in_size, out_size, mode)
        if method == "nearest_neighbor":
            mat[o, clamp(_nearest(v, rounding, mode))] = 1.0
        elif method == "linear":
            base = math.floor(v)
            t = v - base
            mat[o, clamp(base)] += 1.0 - t
            mat[o, clamp(base + 1)] += t
        else:
            raise BuildError(f"NPU compiler: resize method {method!r} is not supported")
    return mat
