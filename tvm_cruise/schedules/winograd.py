"""Winograd convolutions for host 3x3 convolutions (a Relax rewrite before legalization).

A stride-1 3x3 convolution computes each m x m block of output pixels from an
(m+2) x (m+2) block of input with (m+2)^2 multiplications per input channel instead of
9 m^2 (Lavin & Gray, 2016): F(2x2, 3x3) 16 instead of 36, F(4x4, 3x3) 36 instead of 144:

    Y = A^T [ sum_c (G w_c G^T) * (B^T d_c B) ] A

The weight transform ``U = G w G^T`` is done once, at build time, in float64, on the
constant weight; each inference runs three kernels:

1. ``winograd_input``: ``V[e1][e2][n][c][p] = (B^T d B)[e1][e2]`` for every tile ``p`` of
   every input channel (F(2x2)'s B has only 0 and +-1: additions and subtractions; F(4x4)
   computes it separably, ``B^T d`` then ``(B^T d) B``, nonzero terms only, over a vector
   of tiles along a row read from the padded input stored split by phase);
2. ``winograd_gemm``: ``M[e][n][p][k] = sum_c V[e][n][c][p] U[e][c][k]``, (m+2)^2
   independent matrix products of [tiles x C] by [C x K], ``U`` packed in blocks of output
   channels (as ``layout.pack_matmul_weights`` packs dense weights), the register-blocked
   default schedule's kind of kernel, with 2.25x (F(2x2)) or 4x (F(4x4)) fewer
   multiply-adds than the convolution;
3. ``winograd_output``: ``Y = A^T M A`` per tile (F(4x4): separably), the convolution's
   epilogue (bias, activation, residual) fused after it.

The result is the same convolution in another order of floating-point operations: not
bit-identical to TVM's direct lowering. F(2x2, 3x3) is as accurate (its data transforms
only add and subtract; error against a float64 reference within a small factor of
PyTorch's direct float32 convolution: tests/test_schedules.py; ResNet-18's output 2.0e-6
of its range against PyTorch's, the direct build's 2.0e-6). F(4x4, 3x3) multiplies by up
to 8 and 1/24 and is less accurate: a few times the direct convolution's error (numpy,
64 and 128 channels: 4.0e-6 and 6.6e-6 of the output's range against PyTorch float32's
5.7e-7 and 8.9e-7; ResNet-18's output 2.8e-6 of its range against PyTorch's instead of
1.8e-6 with F(2x2) only, the perception CNN's 2.6e-6 instead of 1.5e-6). So it is part of
fast math, on by default like the polynomial exp / erf (``fast_math=False``,
``--exact-math``: F(2x2) only).

Where it pays (measured on an AMD EPYC, znver3, 2 threads, per kernel in the model, one
process, alternating with the direct build): with F(2x2), ResNet-18's 64-channel
convolutions on 56x56 1343-1361 -> 1015-1073 us (input 267 + products 615 + output
133-191), its 128-channel ones on 28x28 1460-1488 -> 755-781 us (132 + 572 + 51-77);
whole model min 24.71 -> 21.50 ms; the perception CNN's 64->128 on 32x64 1981 -> 1506 us.
With F(4x4) (tuned records, per kernel beside ONNX Runtime's profiler, one process):
ResNet-18's 56x56 ones 1014-1023 -> 549-583 us (145 + 340 + 64-98; ONNX Runtime's direct
kernels 1198-1221), 28x28 ones 742-770 -> 541-569 us (80 + 430 + 31-59); the perception
CNN's 64->128 on 32x64 1421 -> 933 us (134 + 654 + 145) and its 32->64 on 64x128, direct
before (F(2x2)'s products alone 2353 us against the direct 2011: reductions of 32 too
short for 8 MB of output), 1903 -> 1282 us isolated (F4_MIN_CHANNELS). F(2x2) stays
where F(4x4) has too few tiles or too much weight: ResNet-18's 256 channels on 14x14 (16
tiles of 4x4; by F(2x2) 49 tiles, 4 MB, paying only with the products' reduction in
chunks, ``CHUNKED_TILES``: 1466-1498 us direct, ~1437 without chunks, products 1322 -> 953
us with them). Neither: ResNet-18's 7x7 stage (16 MB of F(2x2) transformed weight), hence
``MIN_TILES`` and ``MAX_WEIGHT_BYTES``. Only on 8-lane CPU targets (AVX2), the only ones
measured. Builds with ``default_schedules=False`` keep TVM's direct convolution.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tvm
from tvm import relax, te, tirx, topi

from ..byoc.rewrite import rebuild_main
from ..byoc.rules import static_shape
from .layout import cpu_lanes, matmul_block, pack_matmul_weight, static_fp32_conv

class Variant(NamedTuple):
    """Winograd F(m x m, 3x3): ``m`` output pixels per tile side from ``points = m + 2``
    input pixels; ``Y = A^T [(G w G^T) * (B^T d B)] A``."""
    tile: int
    points: int
    bt: np.ndarray
    g: np.ndarray
    at: np.ndarray


F2 = Variant(2, 4,
             np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], "float64"),
             np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], "float64"),
             np.array([[1, 1, 1, 0], [0, 1, -1, -1]], "float64"))
# Lavin & Gray's F(4x4, 3x3) (interpolation points 0, +-1, +-2, infinity)
F4 = Variant(4, 6,
             np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
                      "float64"),
             np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                       [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
                      "float64"),
             np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                       [0, 1, -1, 8, -8, 1]], "float64"))
VARIANTS = {v.tile: v for v in (F2, F4)}

# Least tiles per image for the transform to pay (the matrix products' rows), and most
# bytes of transformed weight (16/9 the weight's); measured, see the module docstring.
MIN_TILES = 32
F4_MIN_TILES = 32
MAX_WEIGHT_BYTES = 4 << 20
MIN_CHANNELS = 64
F4_MIN_CHANNELS = 32

INPUT, GEMM, OUTPUT = "winograd_input", "winograd_gemm", "winograd_output"
INPUT_ROWS, OUTPUT_ROWS = "winograd_input_rows", "winograd_output_rows"  # F(4x4) stages
# The F(4x4) stages stay blocks of their own (MetaSchedule's inlining rule would merge
# them into their consumers' Selects), and tuning jobs measure only tvm-cruise's own
# schedules of those kernels (:func:`searchable`).
_KEEP_APART = {"meta_schedule.inline_rule": "disable"}
KERNEL_ATTR = "tvm_cruise.winograd"


def _pays(variant: Variant, in_channels: int, out_channels: int, out_h: int, out_w: int,
          min_tiles: int) -> bool:
    th, tw = _tiles(out_h, out_w, variant.tile)
    weight_bytes = variant.points ** 2 * in_channels * out_channels * 4
    return th * tw >= min_tiles and weight_bytes <= MAX_WEIGHT_BYTES


def choose(in_channels: int, out_channels: int, out_h: int, out_w: int, lanes: int,
           fast_math: bool = True) -> Variant | None:
    """The Winograd variant a stride-1 3x3 convolution of these sizes is computed by, or
    None (a direct convolution): F(4x4, 3x3) with ``fast_math`` where it pays
    (:data:`F4_MIN_TILES`), else F(2x2, 3x3) where that pays."""
    if lanes != 8 or out_channels % lanes:
        return None
    if fast_math and in_channels >= F4_MIN_CHANNELS and \
            _pays(F4, in_channels, out_channels, out_h, out_w, F4_MIN_TILES):
        return F4
    return F2 if in_channels >= MIN_CHANNELS and \
        _pays(F2, in_channels, out_channels, out_h, out_w, MIN_TILES) else None


def transform_weight(weight: np.ndarray, block: int, variant: Variant = F2) -> np.ndarray:
    """OIHW [K][C][3][3] -> ``U`` (``G w G^T`` per channel pair, in float64) packed
    [points^2][K / block][C][block] (each [C][K] matrix as a dense layer's weight),
    float32."""
    k, c = weight.shape[:2]
    g, points = variant.g, variant.points
    u = g @ weight.astype("float64") @ g.T  # [K][C][P][P], two small matmuls per pair
    u = u.reshape(k, c, points * points).transpose(2, 1, 0)  # P^2 matrices [C][K]
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


def _combine(row: np.ndarray, term):
    """``sum_c row[c] * term(c)`` over the nonzero coefficients of ``row`` (+-1 as additions
    and subtractions)."""
    out = None
    for col, coef in enumerate(row):
        if coef == 0:
            continue
        value = term(col)
        if out is None:
            out = value if coef == 1 else tirx.const(float(coef), "float32") * value
        elif abs(coef) == 1:
            out = out + value if coef == 1 else out - value
        else:
            out = out + tirx.const(float(coef), "float32") * value
    return out


def _row_product(matrix: np.ndarray, index, term):
    """``sum_c matrix[index][c] * term(c)`` for an index expression: a Select over the rows,
    one row's sum of nonzero terms once the loop over ``index`` is unrolled (the schedules
    unroll it)."""
    value = _combine(matrix[-1], term)
    for row in range(matrix.shape[0] - 2, -1, -1):
        value = tirx.Select(index == row, _combine(matrix[row], term), value)
    return value


def _tiles(height: int, width: int, tile: int) -> tuple[int, int]:
    return -(-height // tile), -(-width // tile)


def input_transform(data, padding, tile: int = 2):
    """``V[e1][e2][n][c][p]``: ``B^T d B`` of every ``points x points`` input tile (padded
    as the conv)."""
    variant = VARIANTS[tile]
    n, c, h, w = (int(d) for d in data.shape)
    top, left, bottom, right = padding
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    th, tw = _tiles(out_h, out_w, tile)
    # pad to whole tiles: the last tile reads zeros where the output has no pixel
    pad = topi.nn.pad(data, [0, 0, top, left],
                      [0, 0, th * tile + 2 - h - top, tw * tile + 2 - w - left],
                      name="winograd_pad")
    points = variant.points
    if variant is not F2:  # separable: (B^T d) first, then (B^T d) B; nonzero terms only
        rows = te.compute(
            (n, c, th * tw, points, points),
            lambda b, ch, p, e1, x: _row_product(
                variant.bt, e1, lambda r: pad[b, ch, (p // tw) * tile + r, (p % tw) * tile + x]),
            name=INPUT_ROWS, attrs=_KEEP_APART)
        return te.compute(
            (points, points, n, c, th * tw),
            lambda e1, e2, b, ch, p: _row_product(
                variant.bt, e2, lambda x: rows[b, ch, p, e1, x]),
            name="winograd_input")
    rx = te.reduce_axis((0, points), "rx")
    ry = te.reduce_axis((0, points), "ry")
    return te.compute(
        (points, points, n, c, th * tw),
        lambda e1, e2, b, ch, p: te.sum(
            pad[b, ch, (p // tw) * tile + rx, (p % tw) * tile + ry] *
            _coefficient(variant.bt, e1, rx) * _coefficient(variant.bt, e2, ry),
            axis=[rx, ry]),
        name="winograd_input")


def gemm(v, u):
    """``M[e][n][p][k] = sum_c V[e][n][c][p] U[e][c][k]``, ``U`` packed
    [points^2][K/b][C][b]."""
    points, _, n, c, tiles = (int(d) for d in v.shape)
    _, blocks, _, block = (int(d) for d in u.shape)
    rc = te.reduce_axis((0, c), "rc")
    return te.compute(
        (points * points, n, tiles, blocks * block),
        lambda e, b, p, k: te.sum(
            v[e // points, e % points, b, rc, p] * u[e, k // block, rc, k % block], axis=rc),
        name="winograd_gemm")


def output_transform(m, out_h: int, out_w: int):
    """``Y[n][k][y][x]``: ``A^T M A`` of every tile, cropped to the output."""
    elements, n, _, k = (int(d) for d in m.shape)
    variant = _by_points(elements)
    tile, points = variant.tile, variant.points
    _, tw = _tiles(out_h, out_w, tile)
    if variant is not F2:  # separable: (A^T M) first, then (A^T M) A; nonzero terms only
        cols = te.compute(
            (n, int(m.shape[2]), tile, points, k),
            lambda b, p, i, e2, kk: _row_product(
                variant.at, i, lambda e1: m[e1 * points + e2, b, p, kk]),
            name=OUTPUT_ROWS, attrs=_KEEP_APART)
        return te.compute(
            (n, k, out_h, out_w),
            lambda b, kk, y, x: _row_product(
                variant.at, x % tile,
                lambda e2: cols[b, (y // tile) * tw + x // tile, y % tile, e2, kk]),
            name="winograd_output")
    rx = te.reduce_axis((0, points), "rx")
    ry = te.reduce_axis((0, points), "ry")
    return te.compute(
        (n, k, out_h, out_w),
        lambda b, kk, y, x: te.sum(
            m[rx * points + ry, b, (y // tile) * tw + x // tile, kk] *
            _coefficient(variant.at, y % tile, rx) * _coefficient(variant.at, x % tile, ry),
            axis=[rx, ry]),
        name="winograd_output")


def _by_points(elements: int) -> Variant:
    """The variant whose transformed tiles have ``elements`` values (points^2)."""
    return next(v for v in VARIANTS.values() if v.points ** 2 == elements)


def winograd_convs(mod: tvm.IRModule, target, fast_math: bool = True) -> tvm.IRModule:
    """``mod`` with every fp32 NCHW stride-1 3x3 convolution by a constant weight that
    pays (:func:`choose`; F(4x4, 3x3) only with ``fast_math``) computed by the three
    Winograd kernels (module docstring); CPU (LLVM) targets with 8-lane vectors only,
    others unchanged."""
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
                wshape is None or tuple(wshape[2:]) != (3, 3):
            return None
        variant = choose(wshape[1], wshape[0], out[2], out[3], lanes, fast_math)
        if variant is None:
            return None
        u = relax.const(transform_weight(weight.value.numpy(), matmul_block(wshape[0], lanes),
                                         variant))
        v = bb.emit(bb.call_te(input_transform, data,
                               padding=[int(p) for p in attrs.padding], tile=variant.tile,
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


def searchable(func: tirx.PrimFunc) -> bool:
    """Whether a tuning job's MetaSchedule search may take ``func``: not F(4x4)'s input and
    output transforms: a search on ResNet-18's 56x56 input transform spent 8 minutes in
    TVM's passes over its Select-folded coefficients without finishing a trial (and 2 more
    with the stages kept apart, when it was stopped); their own schedules are measured
    instead."""
    sch = tvm.s_tir.Schedule(func, debug_mask=0)
    for name in (INPUT_ROWS, OUTPUT_ROWS):
        try:
            sch.get_sblock(name)
            return False
        except Exception:  # noqa: BLE001 - no such block
            continue
    return True


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
    e1, e2, n, c, p, *reduce = sch.get_loops(block)
    pad = sch.get_sblock("winograd_pad")
    tile = int(sch.get(block).writes[0].source.ty.shape[0]) - 2  # V[P][P]..., P = tile + 2
    tw = (int(sch.get(pad).writes[0].source.ty.shape[-1]) - 2) // tile  # tiles per row
    ty, tx = sch.split(p, [None, tw])
    if not reduce:  # F(4x4): separable, vectorized over tiles where a row allows it
        from .cpu import _row_block

        lanes = _row_block(tw, 8)
        if lanes is not None:
            return _vector_input_schedule(sch, block, pad, (e1, e2, n, c, ty, tx), tile,
                                          lanes)
    sch.reorder(n, c, ty, tx, e1, e2, *reduce)
    sch.parallel(sch.fuse(n, c, ty))
    for loop in (e1, e2, *reduce):
        sch.unroll(loop)
    if not reduce:  # F(4x4) with a row of tiles no vector divides: per tile, scalar
        rows = sch.get_sblock(INPUT_ROWS)
        sch.compute_at(rows, tx)
        sch.set_scope(rows, 0, "local")
        for loop in sch.get_loops(rows)[-2:]:  # (e1, x) of the tile
            sch.unroll(loop)
    loops = sch.get_loops(pad)
    sch.parallel(sch.fuse(loops[0], loops[1]))
    return sch


def _vector_input_schedule(sch, block, pad, loops, tile: int, lanes: int):
    """F(4x4)'s input transform over a vector of ``lanes`` tiles along a row: the padded
    input stored split by phase (``x -> (x % 4, x // 4)``) so that the same pixel of
    consecutive tiles is one contiguous vector, then per vector of tiles ``B^T d`` (the
    rows' stage, in registers) and ``(B^T d) B``, stored as contiguous vectors of ``V``."""
    from .cpu import _phase_split

    e1, e2, n, c, ty, tx = loops
    root = sch.get_sblock("root")
    buffer = sch.get(pad).writes[0].source
    if _phase_split(sch, root, buffer, tile) is None:
        raise ValueError("the padded input does not split by phase")
    txo, txi = sch.split(tx, [None, lanes])
    sch.reorder(n, c, ty, txo, e1, e2, txi)
    sch.parallel(sch.fuse(n, c, ty))
    rows = sch.get_sblock(INPUT_ROWS)
    sch.compute_at(rows, txo)
    sch.set_scope(rows, 0, "local")
    sch.transform_layout(rows, ("write", 0), tirx.IndexMap.from_func(
        lambda b, ch, q, r, x: (b, ch, r, x, q), ndim=5,
        index_dtype=str(sch.get(rows).writes[0].region[0].min.ty)))
    qi, ri, xi = sch.get_loops(rows)[-3:]
    sch.reorder(ri, xi, qi)
    for loop in (ri, xi, e1, e2):
        sch.unroll(loop)
    sch.vectorize(qi)
    sch.vectorize(txi)
    pad = sch.get_sblock("winograd_pad")
    ploops = sch.get_loops(pad)
    sch.parallel(sch.fuse(ploops[0], ploops[1]))
    return sch


# Fewer tiles than this and at least this many bytes of weight per product: the products
# sweep their reduction in chunks (measured on an AMD EPYC, znver3, min of 5-9 interleaved
# rounds: ResNet-18's 14x14 stage by F(2x2), 49 tiles, 256 KB per product, 1322 -> 953 us
# with chunks of 16; its 28x28 and 56x56 ones by F(2x2), 196 and 784 tiles, 772 -> 902 and
# 649 -> 715 us, and its 28x28 one by F(4x4), 49 tiles of 64 KB products, 401 -> 440 us,
# so not there).
CHUNKED_TILES = 64
CHUNKED_WEIGHT_BYTES = 256 << 10
_CHUNK = 16


def gemm_schedule(func: tirx.PrimFunc, target):
    """The default schedule of a ``winograd_gemm`` kernel with few tiles and large products
    (the register-blocked rule, its reduction in chunks: :data:`CHUNKED_TILES`), or None
    (the plain rule applies)."""
    from .cpu import _default_blocked, core_count, vector_shape

    if func.attrs is None or str(func.attrs.get(KERNEL_ATTR, "")) != GEMM:
        return None
    _, _, _, channels, tiles = (int(d) for d in func.params[0].ty.shape)  # V[P][P][n][C][p]
    _, blocks, _, block = (int(d) for d in func.params[1].ty.shape)        # U[P*P][K/b][C][b]
    if tiles >= CHUNKED_TILES or channels * blocks * block * 4 < CHUNKED_WEIGHT_BYTES:
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
    if len(sch.get_loops(block)) == 4:  # F(4x4): separable, no reduction
        return _separable_output_schedule(sch, block, lanes)
    n, k, y, x, rx, ry = sch.get_loops(block)
    if int(sch.get(k).extent) % lanes:
        return None
    out = sch.cache_write(block, 0, "local")
    _inline_epilogue(sch, block, out)
    ty, i = sch.split(y, [None, F2.tile])
    tx, j = sch.split(x, [None, F2.tile])
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


def _inline_epilogue(sch, *keep) -> None:
    """Inline every block but ``keep`` into the output transform: the convolution's
    epilogue (bias, activation, residual), applied as the transform's outputs are written."""
    names = {sch.get(b).name_hint for b in keep}
    for other in reversed(list(sch.get_child_blocks(sch.get_sblock("root")))):
        if sch.get(other).name_hint not in names:
            sch.reverse_compute_inline(other)


def _separable_output_schedule(sch, block, lanes: int):
    """F(4x4)'s output transform: per tile and vector of output channels, ``A^T M`` (the
    rows' stage, its loops unrolled) then, row by row of the tile, ``(A^T M) A`` with the
    epilogue (the columns unrolled)."""
    n, k, y, x = sch.get_loops(block)
    if int(sch.get(k).extent) % lanes:
        return None
    rows = sch.get_sblock(OUTPUT_ROWS)
    _inline_epilogue(sch, block, rows)
    tile = int(sch.get(rows).writes[0].source.ty.shape[2])  # [n][tiles][tile][P][K]
    ty, i = sch.split(y, [None, tile])
    tx, j = sch.split(x, [None, tile])
    ko, ki = sch.split(k, [None, lanes])
    sch.reorder(n, ty, tx, ko, i, j, ki)
    sch.parallel(sch.fuse(n, ty))
    sch.compute_at(rows, ko)
    sch.set_scope(rows, 0, "local")
    *_, ri, re2, rk = sch.get_loops(rows)
    for loop in (ri, re2, j):  # (a loop over the tile's rows: the same speed, 2.3-2.9x
        sch.unroll(loop)       # less code to compile than with them unrolled too)
    sch.vectorize(rk)
    sch.vectorize(ki)
    return sch
