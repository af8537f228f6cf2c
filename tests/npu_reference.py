"""An independent numpy reference of the NPU ISA semantics (docs/npu_isa.md), for tests.

Written from the document, not from the simulator: plain loops over kernel taps and
integer arithmetic in int64 (Python ints where rounding matters).
"""

from __future__ import annotations

import math

import numpy as np


def conv(x, w, stride=(1, 1), dilation=(1, 1)):
    """acc[co][y][x] = sum_{ci,ky,kx} in[ci][y*sh+ky*dh][x*sw+kx*dw] * w[co][ci][ky][kx]."""
    cin, hin, win = x.shape
    cout, _, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    hout = (hin - (kh - 1) * dh - 1) // sh + 1
    wout = (win - (kw - 1) * dw - 1) // sw + 1
    acc = np.zeros((cout, hout, wout), dtype=np.int64)
    xi, wi = x.astype(np.int64), w.astype(np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xi[:, ky * dh: ky * dh + (hout - 1) * sh + 1: sh,
                       kx * dw: kx * dw + (wout - 1) * sw + 1: sw]
            acc += np.einsum("chw,oc->ohw", patch, wi[:, :, ky, kx])
    return acc


def dwconv(x, w, stride=(1, 1), dilation=(1, 1)):
    c, hin, win = x.shape
    _, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    hout = (hin - (kh - 1) * dh - 1) // sh + 1
    wout = (win - (kw - 1) * dw - 1) // sw + 1
    acc = np.zeros((c, hout, wout), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = x.astype(np.int64)[:, ky * dh: ky * dh + (hout - 1) * sh + 1: sh,
                                       kx * dw: kx * dw + (wout - 1) * sw + 1: sw]
            acc += patch * w.astype(np.int64)[:, ky, kx][:, None, None]
    return acc


def gemm(a, b):
    return a.astype(np.int64) @ b.astype(np.int64)


def _round_half_away(num: int, shift: int) -> int:
    if shift == 0:
        return num
    mag = (abs(num) + (1 << (shift - 1))) >> shift
    return -mag if num < 0 else mag


def requant(acc, bias, mult, shift, zp, lo, hi):
    """acc [channels][pixels]; per-channel bias, multiplier, shift; Python-int exact."""
    out = np.zeros(acc.shape, dtype=np.int8)
    for c in range(acc.shape[0]):
        for p in range(acc.shape[1]):
            v = int(acc[c, p]) + (int(bias[c]) if bias is not None else 0)
            r = _round_half_away(v * int(mult[c]), int(shift[c]))
            out[c, p] = min(max(r + zp, lo), hi)
    return out


def eltwise_int8(a, b, op, shift=0):
    out = np.zeros(a.shape, dtype=np.int8)
    bb = np.broadcast_to(b, a.shape)
    for idx in np.ndindex(a.shape):
        x, y = int(a[idx]), int(bb[idx])
        r = {"add": x + y, "subtract": x - y, "maximum": max(x, y), "minimum": min(x, y),
             "multiply": _round_half_away(x * y, shift)}[op]
        out[idx] = min(max(r, -128), 127)
    return out


def pool_int8(x, kernel, stride, pad, kind, count_pad=False):
    c, hin, win = x.shape
    kh, kw = kernel
    sh, sw = stride
    pt, pl = pad
    hout = (hin + 2 * pt - kh) // sh + 1
    wout = (win + 2 * pl - kw) // sw + 1
    out = np.zeros((c, hout, wout), dtype=np.int8)
    for ch in range(c):
        for oy in range(hout):
            for ox in range(wout):
                vals = [int(x[ch, iy, ix])
                        for iy in range(oy * sh - pt, oy * sh - pt + kh)
                        for ix in range(ox * sw - pl, ox * sw - pl + kw)
                        if 0 <= iy < hin and 0 <= ix < win]
                if kind == "max":
                    out[ch, oy, ox] = max(vals)
                else:
                    n = kh * kw if count_pad else len(vals)
                    s = sum(vals)
                    mag = (2 * abs(s) + n) // (2 * n)
                    out[ch, oy, ox] = -mag if s < 0 else mag
    return out, hout, wout


def gelu(x):
    return np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in np.ravel(x)],
                    dtype=np.float64).reshape(np.shape(x))
