"""Winograd F(2x2, 3x3) for host 3x3 convolutions (a Relax rewrite before legalization).

A stride-1 3x3 convolution computes each 2x2 block of output pixels from a 4x4 block of
input with 16 multiplications per input channel instead of 36 (Lavin & Gray, 2016):

    Y = A^T [ sum_c (G w_c G^T) * (B^T d_c B) ] A

The weight transform ``U = G w G^T`` is done once, at build time, on the constant weight;
each inference runs three kernels:

1. ``winograd_input``: ``V[e1][e2][n][c][p] = (B^T d B)[e1][e2]`` for every tile ``p`` of
   every input channel (B has only 0 and +-1: additions and subtractions);
2. ``winograd_gemm``: ``M[e][n][p][k] = sum_c V[e][n][c][p] U[e][c][k]``, 16 independent
   matrix products of [tiles x C] by [C x K], ``U`` packed in blocks of output channels
   (as ``layout.pack_matmul_weights`` packs dense weights), the register-blocked default
   schedule's kind of kernel, with 2.25x fewer multiply-adds than the convolution;
3. ``winograd_output``: ``Y = A^T M A`` per tile, the convolution's epilogue (bias,
   activation, residual) fused after it.

The result is the same convolution in another order of floating-point operations: not
bit-identical to TVM's direct lowering, but as accurate (F(2x2, 3x3)'s data transforms
only add and subtract, the weight transform is computed in float64; error against a
float64 reference stays within a small factor of PyTorch's direct float32 convolution:
tests/test_schedules.py; ResNet-18's output 2.0e-6 of its range against PyTorch's, the
direct build's 2.0e-6).

Where it pays (measured on an AMD EPYC, znver3, 2 threads, per kernel in the model, one
process, alternating with the direct build): ResNet-18's 64-channel convolutions on
56x56 1343-1361 -> 1015-1073 us (input 267 + products 615 + output 133-191), its
128-channel ones on 28x28 1460-1488 -> 755-781 us (132 + 572 + 51-77); whole model min
24.71 -> 21.50 ms. The perception CNN's 64->128 on 32x64 1981 -> 1506 us. Where it does
not: 32 input channels (the perception CNN's 32->64 on 64x128: the products alone 2353
us against 2011 for the direct convolution, their reductions too short for their 8 MB
of output), hence ``MIN_CHANNELS``;
ResNet-18's 7x7 stage (16 tiles, 16 MB of transformed weight), hence ``MIN_TILES`` and
``MAX_WEIGHT_BYTES``. Its 256 channels on 14x14 (49 tiles, 4 MB) pay only with the
products' reduction in chunks (``CHUNKED_TILES``): 1466-1498 us direct, ~1437 without
chunks, products 1322 -> 953 us with them (whole ResNet-18 min 25.01 -> 19.92 ms with
all three stages). Only on 8-lane CPU targets (AVX2), the only ones measured. Builds with
``default_schedules=False`` keep TVM's direct convolution.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx, topi

from ..byoc.rewrite import rebuild_main
from ..byoc.rules import static_shape
from .layout import cpu_lanes, matmul_block, pack_matmul_weight, static_fp32_conv

TILE = 2    # output pixels per tile side
POINTS = 4  # input pixels per tile side (TILE + 3 - 1)
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], "float64")
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], "float64")
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], "float64")

# Least tiles per image for the transform to pay (the matrix products' rows), and most
# bytes of transformed weight (16/9 the weight's); measured, see the module docstring.
MIN_TILES = 32
MAX_WEIGHT_BYTES = 4 << 20
MIN_CHANNELS = 64

INPUT, GEMM, OUTPUT = "winograd_input", "winograd_gemm", "winograd_output"
KERNEL_ATTR = "tvm_cruise.winograd"


def applies(in_channels: int, out_channels: int, out_h: int, out_w: int, lanes: int) -> bool:
    """Whether a stride-1 3x3 convolution of these sizes is computed by Winograd."""
    th, tw = _tiles(out_h, out_w)
    weight_bytes = POINTS * POINTS * in_channels * out_channels * 4
    return lanes == 8 and in_channels >= MIN_CHANNELS and out_channels % lanes == 0 and \
        th * tw >= MIN_TILES and weight_bytes <= MAX_WEIGHT_BYTES


def transform_weight(weight: np.ndarray, block: int) -> np.ndarray:
    """OIHW [K][C][3][3] -> ``U`` (``G w G^T`` per channel pair, in float64) packed
    [16][K / block][C][block] (each [C][K] matrix as a dense layer's weight), float32."""
    k, c = weight.shape[:2]
    u = _G @ weight.astype("float64") @ _G.T  # [K][C][4][4], two small matmuls per pair
    u = u.reshape(k, c, POINTS * POINTS).transpose(2, 1, 0)  # 16 matrices [C][K]
    return np.stack([pack_matmul_weight(m, block) for m in u]).astype("float32")


def _coefficient(matrix: np.ndarray, row, col):
    """``matrix[row][col]`` as a TIR expression of two index expressions: constants once the
    loops over ``row`` and ``col`` are unrolled (the custom schedules unroll them)."""
    value = tirx.const(0.0, "float32")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j] != 0:
                value = tirx.Select(tirx.all(row == i, col == j),
                                    tirx.const(float(matrix[i, j]), "float32"), value)
    return value


def _tiles(height: int, width: int) -> tuple[int, int]:
    return -(-height // TILE), -(-width // TILE)


def input_transform(data, padding):
    """``V[e1][e2][n][c][p]``: ``B^T d B`` of every 4x4 input tile (padded as the conv)."""
    n, c, h, w = (int(d) for d in data.shape)
    top, left, bottom, right = padding
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    th, tw = _tiles(out_h, out_w)
    # pad to whole tiles: the last tile reads zeros where the output has no pixel
    pad = topi.nn.pad(data, [0, 0, top, left],
                      [0, 0, th * TILE + 2 - h - top, tw * TILE + 2 - w - left],
                      name="winograd_pad")
    rx = te.reduce_axis((0, POINTS), "rx")
    ry = te.reduce_axis((0, POINTS), "ry")
    return te.compute(
        (POINTS, POINTS, n, c, th * tw),
        lambda e1, e2, b, ch, p: te.sum(
            pad[b, ch, (p // tw) * TILE + rx, (p % tw) * TILE + ry] *
            _coefficient(_BT, e1, rx) * _coefficient(_BT, e2, ry), axis=[rx, ry]),
        name="winograd_input")


def gemm(v, u):
    """``M[e][n][p][k] = sum_c V[e][n][c][p] U[e][c][k]``, ``U`` packed [16][K/b][C][b]."""
    _, _, n, c, tiles = (int(d) for d in v.shape)
    _, blocks, _, block = (int(d) for d in u.shape)
    rc = te.reduce_axis((0, c), "rc")
    return te.compute(
        (POINTS * POINTS, n, tiles, blocks * block),
        lambda e, b, p, k: te.sum(
            v[e // POINTS, e % POINTS, b, rc, p] * u[e, k // block, rc, k % block], axis=rc),
        name="winograd_gemm")


def output_transform(m, out_h: int, out_w: int):
    """``Y[n][k][y][x]``: ``A^T M A`` of every tile, cropped to the output."""
    _, n, _, k = (int(d) for d in m.shape)
    _, tw = _tiles(out_h, out_w)
    rx = te.reduce_axis((0, POINTS), "rx")
    ry = te.reduce_axis((0, POINTS), "ry")
    return te.compute(
        (n, k, out_h, out_w),
        lambda b, kk, y, x: te.sum(
            m[rx * POINTS + ry, b, (y // TILE) * tw + x // TILE, kk] *
            _coefficient(_AT, y % TILE, rx) * _coefficient(_AT, x % TILE, ry),
            axis=[rx, ry]),
        name="winograd_output")


def winograd_convs(mod: tvm.IRModule, target) -> tvm.IRModule:
    """``mod`` with every fp32 NCHW stride-1 3x3 convolution by a constant weight that
    :func:`applies` computed by the three Winograd kernels (module docstring); CPU
    (LLVM) targets with 8-lane vectors only, others unchanged."""
    lanes = cpu_lanes(target)
    if lanes != 8:
        return mod

    def rewrite(bb, var, value, bound):
        conv = static_fp32_conv(var, value)
        if conv is None:
            return None
        data, weight, out = conv
        attrs = value.attrs
        wshape = static_shape(weight.ty)
        if [int(s) for s in attrs.strides] != [1, 1] or \
                [int(d) for d in attrs.dilation] != [1, 1] or \
                wshape is None or tuple(wshape[2:]) != (3, 3) or \
                not applies(wshape[1], wshape[0], out[2], out[3], lanes):
            return None
        u = relax.const(transform_weight(weight.value.numpy(), matmul_block(wshape[0], lanes)))
        v = bb.emit(bb.call_te(input_transform, data,
                               padding=[int(p) for p in attrs.padding],
                               primfunc_name_hint=INPUT,
                               primfunc_attrs={KERNEL_ATTR: INPUT, "op_pattern": _OPAQUE}),
                    f"{var.name}_{INPUT}")
        m = bb.emit(bb.call_te(gemm, v, u, primfunc_name_hint=GEMM,
                               primfunc_attrs={KERNEL_ATTR: GEMM, "op_pattern": _OPAQUE}),
                    f"{var.name}_{GEMM}")
        call = bb.call_te(output_transform, m, out_h=out[2], out_w=out[3],
                          primfunc_name_hint=OUTPUT,
                          primfunc_attrs={"op_pattern": _OUT_ELEMWISE_FUSABLE})
        return relax.Call(call.op, call.args, call.attrs, call.ty_args, span=value.span)

    return rebuild_main(mod, rewrite)


# TVM's op-pattern kinds (tvm/relax/op_attr_types.h): the transforms must not fuse with
# their neighbours except the output transform with the convolution's epilogue.
_OUT_ELEMWISE_FUSABLE, _OPAQUE = 4, 8


def input_schedule(func: tirx.PrimFunc, target):
    """The schedule of a ``winograd_input`` kernel (a traced ``Schedule``), or None where
    ``func`` is not one: the padded input written once (in parallel over channels: read
    in place, its bounds checks would branch at every load), then per tile the 16
    transformed values with the transform's loops unrolled, so that B's coefficients are
    constants (0 and +-1 fold into additions and subtractions), in parallel over channels
    and tile rows. Not vectorized: the tiles step by 2 along the row (stride-2 gathers)
    and measured slower that way (AMD EPYC, znver3: 128 channels of 28x28, 136 us scalar
    against 328-428 us over tiles; 64 of 56x56, 275 against 725-2990 us)."""
    del target  # the same schedule on every 8-lane CPU (the only ones rewritten)
    if func.attrs is None or str(func.attrs.get(KERNEL_ATTR, "")) != INPUT:
        return None
    try:
        return _input_schedule(func)
    except Exception as err:  # noqa: BLE001 - never fail a build over a schedule
        from ..env import logger

        logger.debug("Winograd input schedule skipped: %s", str(err).splitlines()[0])
        return None


def _input_schedule(func: tirx.PrimFunc):
    sch = tvm.s_tir.Schedule(func, debug_mask=0)
    block = sch.get_sblock(INPUT)
    e1, e2, n, c, p, rx, ry = sch.get_loops(block)
    pad = sch.get_sblock("winograd_pad")
    tw = (int(sch.get(pad).writes[0].source.ty.shape[-1]) - 2) // TILE  # tiles per row
    ty, tx = sch.split(p, [None, tw])
    sch.reorder(n, c, ty, tx, e1, e2, rx, ry)
    sch.parallel(sch.fuse(n, c, ty))
    for loop in (e1, e2, rx, ry):
        sch.unroll(loop)
    loops = sch.get_loops(pad)
    sch.parallel(sch.fuse(loops[0], loops[1]))
    return sch


# Fewer tiles than this: the products sweep their reduction in chunks (measured on an AMD
# EPYC, znver3, min of 5 interleaved rounds: ResNet-18's 14x14 stage, 49 tiles, 1322 ->
# 953 us with chunks of 16; its 28x28 and 56x56 ones, 196 and 784 tiles, 772 -> 902 and
# 649 -> 715 us, so not there).
CHUNKED_TILES = 64
_CHUNK = 16


def gemm_schedule(func: tirx.PrimFunc, target):
    """The default schedule of a ``winograd_gemm`` kernel with few tiles (the register-
    blocked rule, its reduction in chunks: :data:`CHUNKED_TILES`), or None (the plain rule
    applies)."""
    from .cpu import _default_blocked, core_count, vector_shape

    if func.attrs is None or str(func.attrs.get(KERNEL_ATTR, "")) != GEMM:
        return None
    tiles = int(func.params[0].ty.shape[-1])  # V[e1][e2][n][c][tiles]
    if tiles >= CHUNKED_TILES:
        return None
    (lanes, tile), cores = vector_shape(target), core_count(target)
    return _default_blocked(func, lanes, tile, cores, _CHUNK)


def output_schedule(func: tirx.PrimFunc, target):
    """The schedule of a ``winograd_output`` kernel with its fused epilogue (a traced
    ``Schedule``), or None where ``func`` is not one or does not allow it (it then takes
    the generic default rule): per tile, a vector of output channels (``M``'s contiguous
    axis) x the tile's 2x2 outputs accumulated in registers, A's coefficients constants
    (the outputs and the 4x4 sums unrolled), the epilogue (bias, activation, residual)
    applied as the tile is written, in parallel over tile rows. (The generic rule ran
    ResNet-18's 28x28 ones in 148-216 us, this one in 51-77.)"""
    from ..env import logger
    from .cpu import vector_shape

    sch = tvm.s_tir.Schedule(func, debug_mask=0)
    try:
        block = sch.get_sblock(OUTPUT)
    except Exception:  # noqa: BLE001 - no such block (~1 ms a kernel to find out)
        return None
    try:
        return _output_schedule(sch, block, vector_shape(target)[0])
    except Exception as err:  # noqa: BLE001 - an epilogue the schedule does not allow
        logger.debug("Winograd output schedule skipped: %s", str(err).splitlines()[0])
        return None


def _output_schedule(sch, block, lanes: int):
    n, k, y, x, rx, ry = sch.get_loops(block)
    if int(sch.get(k).extent) % lanes:
        return None
    out = sch.cache_write(block, 0, "local")
    root = sch.get_sblock("root")
    keep = {sch.get(block).name_hint, sch.get(out).name_hint}
    for other in reversed(list(sch.get_child_blocks(root))):
        if sch.get(other).name_hint not in keep:
            sch.reverse_compute_inline(other)  # the epilogue: bias, activation, residual
    ty, i = sch.split(y, [None, TILE])
    tx, j = sch.split(x, [None, TILE])
    ko, ki = sch.split(k, [None, lanes])
    sch.reorder(n, ty, tx, ko, rx, ry, i, j, ki)
    sch.parallel(sch.fuse(n, ty))
    sch.reverse_compute_at(out, ko)
    for loop in (rx, ry, i, j):
        sch.unroll(loop)
    sch.vectorize(ki)
    init = sch.decompose_reduction(block, rx)
    for loop in sch.get_loops(init)[-3:]:
        sch.unroll(loop)
    for loop in sch.get_loops(out)[-3:]:
        sch.unroll(loop)
    return sch
