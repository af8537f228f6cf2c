"""Build-time weight packing for CPU host kernels (a Relax rewrite before legalization).

Some convolutions are better vectorized over output channels than along their output
rows; ``pack_conv_weights`` computes each of them from its constant weight packed at build
time as ``[O / lanes][I][kh][kw][lanes]`` (each block of ``lanes`` output channels
innermost and contiguous), so the default schedule (``cpu._channel_plan``) loads one
weight vector per input element for a register tile of columns, every lane busy. The
kernel taps sit inside the input channel, in the order the reduction runs (input channel,
kernel row, kernel column), so a tile reads its block of weights as one forward stream.
(They were outside it, ``[O / lanes][kh][kw][I][lanes]``: consecutive taps 4 KB apart for
128 input channels, nine lines of one L1 set per input channel, and a 36 KB block on AVX2,
more than the L1. On an AMD EPYC, znver3, default schedules, min of 7 interleaved rounds,
two runs: ResNet-18's 3x3 convolutions on 28x28 1683 -> 1543 and 1576 -> 1504 us, 14x14
1798 -> 1660 and 1530 -> 1499, 7x7 1698 -> 1546 and 1562 -> 1489, its stem 2050 -> 1944
and 1972 -> 1894, the perception CNN's strided 3x3 convolutions 1438 -> 1410 and
1628 -> 1521, 2350 -> 2030 and 1317 -> 1351 us.)

- rows that do not split into whole vectors (ResNet-18's 56, 28, 14 and 7 columns on
  AVX-512's 16 lanes) would leave lanes idle along the row: 14 of 16 at best, 7 of 16 on
  the last stage (ResNet-18's 3x3 convolutions of 56, 28 and 14 columns: 10-12% faster per
  kernel on AVX-512);
- strided convolutions on 8-lane targets (AVX2) would read their input rows with a stride:
  along the row that needs the padded input stored split by phase, and over channels it
  is read one broadcast element at a time, stride or not (the perception CNN's 3x3/2
  convolutions on an AMD EPYC, znver3: 64->64 on 64x128 1380 -> 1055 us, 128->128 on
  32x64 1280 -> 1121 us). Not measured on AVX-512, so left as it was there.

Other rows of whole vectors keep their OIHW weight (packed, they measured no faster).

On AVX2, dense layers (matmuls by a constant 2-D weight) read it packed in blocks of
columns, ``[N / 16][K][16]`` (:func:`pack_matmul_weights`), and ``winograd.py`` packs its
transformed weights the same way.
The convolution is the same sum in the same order (input channel, kernel row, kernel
column) as TOPI's ``conv2d_nchw``, so results stay bit-identical to TVM's lowering of the
original convolution.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, topi

from ..byoc.rewrite import rebuild_main
from ..byoc.rules import is_constant, static_shape


def cpu_lanes(target) -> int | None:
    """fp32 lanes of a CPU (LLVM) host target's vectors; None for GPU and other targets
    (the build-time rewrites here and in ``winograd.py`` are for CPU hosts only)."""
    from .cpu import vector_shape

    if "gpu" in target.keys or target.kind.name != "llvm":
        return None
    return vector_shape(target)[0]


def _fp32_by_constant(value, data, weight) -> bool:
    """Whether ``value`` (a conv2d or matmul) takes an fp32 ``data`` and a constant fp32
    ``weight`` and gives fp32."""
    return is_constant(weight) and str(weight.ty.dtype) == "float32" and \
        str(value.attrs.out_dtype) in ("", "None", "void", "float32") and \
        isinstance(data.ty, relax.TensorType) and str(data.ty.dtype) == "float32"


def static_fp32_conv(var, value):
    """``(data, weight, output shape)`` of an fp32 NCHW / OIHW, ungrouped
    ``relax.nn.conv2d`` by a constant weight with static shapes bound to ``var``, else
    None."""
    if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and
            value.op.name == "relax.nn.conv2d"):
        return None
    attrs = value.attrs
    data, weight = value.args
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW" or \
            str(attrs.out_layout) != "NCHW" or int(attrs.groups) != 1 or \
            not _fp32_by_constant(value, data, weight):
        return None
    out = static_shape(var.ty) if isinstance(var.ty, relax.TensorType) else None
    if out is None or len(out) != 4 or static_shape(data.ty) is None:
        return None
    return data, weight, out

def over_channels(out_width: int, out_channels: int, stride: int, lanes: int,
                  tile: int) -> bool:
    """Whether a convolution is better vectorized over output channels (module docstring):
    its rows do not split into whole vectors, or it strides along them on an 8-lane
    target; and a register tile of columns fits its rows (``cpu._row_tile``) and its
    channels fill whole vectors."""
    from .cpu import _row_block, _row_tile

    row = _row_block(out_width, lanes)
    return (row is None or row < lanes or (stride > 1 and lanes == 8)) and \
        _row_tile(out_width, tile) is not None and out_channels % lanes == 0


def pack_weight(weight: np.ndarray, lanes: int) -> np.ndarray:
    """OIHW -> [O / lanes][I][H][W][lanes]."""
    o, i, h, w = weight.shape
    return np.ascontiguousarray(weight.reshape(o // lanes, lanes, i, h, w)
                                .transpose(0, 2, 3, 4, 1))


def conv2d_packed(data, packed, strides, padding, dilation):
    """TOPI's ``conv2d_nchw`` (same padding, same reduction order) reading a packed weight."""
    blocks, cin, kh, kw, lanes = (int(d) for d in packed.shape)
    n, _, h, w = (int(d) for d in data.shape)
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    out_h = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (w + left + right - (kw - 1) * dw - 1) // sw + 1
    pad = topi.nn.pad(data, [0, 0, top, left], [0, 0, bottom, right], name="pad_temp") \
        if any(padding) else data
    rc = te.reduce_axis((0, cin), "rc")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, blocks * lanes, out_h, out_w),
        lambda nn, ff, yy, xx: te.sum(
            pad[nn, rc, yy * sh + ry * dh, xx * sw + rx * dw] *
            packed[ff // lanes, rc, ry, rx, ff % lanes], axis=[rc, ry, rx]),
        name="conv2d_nchw")


def pack_conv_weights(mod: tvm.IRModule, target) -> tvm.IRModule:
    """``mod`` with every fp32 NCHW convolution better vectorized over output channels
    (:func:`over_channels`) computed from a packed constant weight (CPU hosts only; others
    unchanged)."""
    from .cpu import vector_shape

    if cpu_lanes(target) is None:
        return mod
    lanes, tile = vector_shape(target)

    def rewrite(bb, var, value, bound):
        conv = static_fp32_conv(var, value)
        if conv is None:
            return None
        data, weight, out = conv
        attrs = value.attrs
        if not over_channels(out[3], out[1], int(attrs.strides[1]), lanes, tile):
            return None
        packed = relax.const(pack_weight(weight.value.numpy(), lanes))
        call = bb.call_te(conv2d_packed, data, packed,
                          strides=[int(s) for s in attrs.strides],
                          padding=[int(p) for p in attrs.padding],
                          dilation=[int(d) for d in attrs.dilation],
                          primfunc_name_hint="conv2d_packed")
        return relax.Call(call.op, call.args, call.attrs, call.ty_args, span=value.span)

    return rebuild_main(mod, rewrite)


# -- matmuls with a constant weight -------------------------------------------------------

# Least rows (the product of the left operand's leading dims) worth packing for: the
# register tile reuses each weight vector across rows (cpu._blocked_plan), and below a
# tile of rows there is no reuse to organize (a batch-1 classifier head reads its weight
# once, in any layout).
_MIN_PACKED_ROWS = 8


def matmul_block(columns: int, lanes: int) -> int | None:
    """Columns per packed weight block: two vectors where they divide the output row
    (the default register tile is two vectors wide, ``cpu._default_blocked``), else one;
    None where the row is not whole vectors."""
    return next((b for b in (2 * lanes, lanes) if columns % b == 0), None)


def pack_matmul_weight(weight: np.ndarray, block: int) -> np.ndarray:
    """[K][N] -> [N / block][K][block]."""
    k, n = weight.shape
    return np.ascontiguousarray(weight.reshape(k, n // block, block).transpose(1, 0, 2))


def matmul_packed(data, packed):
    """``data @ weight`` (Relax's legalized matmul: same sum, same order over ``k``) reading
    the weight packed as [N / block][K][block]."""
    blocks, depth, block = (int(d) for d in packed.shape)
    shape = [int(d) for d in data.shape]
    k = te.reduce_axis((0, depth), "k")
    return te.compute(
        (*shape[:-1], blocks * block),
        lambda *i: te.sum(data[(*i[:-1], k)] * packed[i[-1] // block, k, i[-1] % block],
                          axis=k),
        name="matmul")


def pack_matmul_weights(mod: tvm.IRModule, target) -> tvm.IRModule:
    """``mod`` with every fp32 matmul by a constant 2-D weight (a dense layer) of at least
    ``_MIN_PACKED_ROWS`` rows computed from that weight packed as [N / block][K][block]
    (:func:`matmul_block`) on 8-lane CPU targets (AVX2); others unchanged.

    A [K][N] weight is read by a register tile one block of columns per ``k``, rows of N
    floats apart: for N = 1024 every step lands 4 KB further, the same L1 set each time, so
    a tile's weight strip keeps evicting itself. Packed, the strip is one contiguous
    stream. Measured on an AMD EPYC (znver3, 2 threads, min of 9 interleaved rounds, the
    default 4-row x 2-vector tile): the transformer's 128x256 @ 256x1024 843-943 -> 419-428
    us, 128x1024 @ 1024x256 752 -> 422, 128x256 @ 256x768 546 -> 268, 128x256 @ 256x256
    106 -> 85 us. Not measured on AVX-512, so left as it was there."""
    lanes = cpu_lanes(target)
    if lanes != 8:
        return mod

    def rewrite(bb, var, value, bound):
        if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and
                value.op.name == "relax.matmul"):
            return None
        data, weight = value.args
        if not _fp32_by_constant(value, data, weight):
            return None
        shape, wshape = static_shape(data.ty), static_shape(weight.ty)
        if shape is None or wshape is None or len(wshape) != 2 or len(shape) < 2 or \
                shape[-1] != wshape[0] or int(np.prod(shape[:-1])) < _MIN_PACKED_ROWS:
            return None
        block = matmul_block(wshape[1], lanes)
        if block is None:
            return None
        packed = relax.const(pack_matmul_weight(weight.value.numpy(), block))
        call = bb.call_te(matmul_packed, data, packed, primfunc_name_hint="matmul_packed")
        return relax.Call(call.op, call.args, call.attrs, call.ty_args, span=value.span)

    return rebuild_main(mod, rewrite)
