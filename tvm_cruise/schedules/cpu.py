"""A default TensorIR schedule for CPU host kernels that no tuning record covers.

TVM lowers an unscheduled kernel to one single-threaded scalar loop nest: the perception
CNN's host build runs ~50x slower than PyTorch that way (docs/benchmarks.md). MetaSchedule
records fix that per kernel, but a model's first build, a kernel nobody tuned, or a record
that failed to apply would otherwise fall off that cliff.

The rule, per block of each kernel (after inlining what can be inlined, e.g. padding):

- the spatial loops outside the reductions are fused and run in parallel over the cores;
- the innermost spatial loop is split by the vector width and its inner part moved below
  the reduction loops and vectorized (conv: output columns; matmul: output columns), the
  reduction's init split off first.

A kernel with one reduction block that reuses an operand across a spatial loop
(convolutions: the input across output channels; matmuls: the weight across rows) gets a
register-blocked schedule first (:func:`_blocked_schedule`): a tile of ``f × x``
outputs (``f`` up to 16 output channels or rows, 8 on AVX2; ``x`` one vector of output
columns; on AVX2, 4 channels × one vector × two output rows, else 4 × two vectors where
the row holds pairs of vectors: :func:`_default_blocked`) accumulates in registers over
the whole reduction, each input vector loaded once for all ``f``; the loops over output
rows run outside or inside the loop over channel groups, whichever reads fewer bytes again
(:func:`_rows_outer_pays`); the epilogue (bias, activation, residual) is applied as the
tile is written out; padding is computed once (inlined, its bounds checks would stop the
vectorization) and, for a strided convolution read along its rows, stored split by phase
so that its strided reads become contiguous vectors (on AVX2 strided convolutions are
vectorized over packed output channels instead: ``layout.py``). Rows take a vector of a
divisor of their width (no masked tail); a row that does not split into whole vectors
(ResNet-18's 56, 28, 14 and 7 columns on AVX-512) is instead vectorized over output
channels, from a weight packed channel-innermost at build time (``layout.py``), a tile
of columns (the whole row where it fits) accumulating. A
kernel with no such reuse loop (a batch-1 matmul, a depthwise convolution) takes a tile
of several vectors of the row itself; where the loops above the tile give fewer than two
tiles per core, the threads run over all of them. A reduction that reads a padded
intermediate with a stride along its row (a strided pooling) gets that intermediate
phase-split and kept apart, as the strided convolutions do; a phase-split intermediate
is written in its new layout (contiguous stores) wherever the split leaves no padding.

Every output element still accumulates its reduction in the same order as the
unscheduled kernel, so results are bit-identical to TVM's default lowering. (The kernels
of a convolution computed by Winograd, ``winograd.py``, are another algorithm: its
transforms have schedules of their own there; its matrix products take this rule.) A step the
kernel does not allow is skipped; a kernel the rule cannot schedule at all keeps TVM's
lowering. Kernels scheduled from tuning records are left alone.
"""

from __future__ import annotations

import os

import tvm
import tvm_ffi
from tvm import tirx

from ..env import logger
from ..relay_ops.registry import SCHEDULED_ATTR, schedule_for

ATTR = SCHEDULED_ATTR
_SPATIAL, _REDUCE, _OTHER = "S", "R", "O"


def vector_shape(target) -> tuple[int, int]:
    """``(lanes, tile)``: fp32 lanes per vector register, and how many vector accumulators
    a register tile may hold (half the vector registers: 16 of AVX-512's and AArch64's 32,
    8 of AVX2's 16; the rest hold the loaded vector and the broadcast operands)."""
    from tvm.target.codegen import target_has_features

    def has(feature: str) -> bool:
        try:
            return bool(target_has_features(feature, target))
        except Exception:  # noqa: BLE001 - a target LLVM cannot describe
            return False

    if has("avx512f"):
        return 16, 16
    if has("avx2") or has("avx"):
        return 8, 8
    return 4, 16 if has("neon") else 8


def core_count(target) -> int:
    cores = target.attrs.get("num-cores") if target.attrs is not None else None
    return int(cores) if cores else (os.cpu_count() or 1)


def _uses(expr, var) -> bool:
    return any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr))


def _realize(sch, loops):
    realize = sch.get(loops[-1]).body if loops else None
    return realize if isinstance(realize, tvm.s_tir.SBlockRealize) else None


def _loop_roles(sch, loops) -> list[str] | None:
    """Per loop, whether it feeds only spatial block iters, only reduction ones, or else."""
    realize = _realize(sch, loops)
    if realize is None:
        return None
    iters = list(zip(realize.block.iter_vars, realize.iter_values))
    roles = []
    for loop in loops:
        var = sch.get(loop).loop_var
        kinds = {int(iv.iter_type) for iv, value in iters if _uses(value, var)}
        roles.append(_SPATIAL if kinds == {tirx.IterVar.DataPar} else
                     _REDUCE if kinds == {tirx.IterVar.CommReduce} else _OTHER)
    return roles


def _contiguous_in(sch, loops, loop) -> bool:
    """Whether ``loop`` moves along the last axis of the block's output and of one of its
    inputs: worth vectorizing (a softmax's rows, say, are not: that would gather)."""
    realize = _realize(sch, loops)
    bound = _bound_vars(sch, realize, loop)
    return _along(realize.block.writes, bound) and _along(realize.block.reads, bound)


def _bound_vars(sch, realize, loop) -> list:
    """The block iter vars whose binding uses ``loop``."""
    var = sch.get(loop).loop_var
    return [iv.var for iv, value in zip(realize.block.iter_vars, realize.iter_values)
            if _uses(value, var)]


def _moves_with(region, bound) -> bool:
    """Whether any axis of ``region`` moves with one of the iter vars ``bound``."""
    return any(_uses(r.min, v) for r in region.region for v in bound)


def _along(regions, bound) -> bool:
    """Whether one of ``regions`` moves along its last axis with the iter vars ``bound``."""
    return any(r.region and any(_uses(r.region[-1].min, v) for v in bound) for r in regions)


def _reduction_nest(sch, block):
    """``(loops, number of spatial loops, realize)`` of a block whose loops are at least two
    spatial ones then only reductions; None for any other block."""
    loops = sch.get_loops(block)
    roles = _loop_roles(sch, loops)
    if roles is None or _REDUCE not in roles:
        return None
    n_spatial = roles.index(_REDUCE)
    if n_spatial < 2 or any(r != _REDUCE for r in roles[n_spatial:]):
        return None
    return loops, n_spatial, _realize(sch, loops)


def _extent(sch, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _try(what: str, fn, *args):
    """``(done, result)`` of a schedule primitive the kernel may not allow."""
    try:
        return True, fn(*args)
    except Exception as err:  # noqa: BLE001 - a primitive the kernel does not allow
        logger.debug("default schedule: %s skipped (%s)", what,
                     str(err).splitlines()[0] if str(err) else type(err).__name__)
        return False, None


def _schedule_block(sch, block, lanes: int, cores: int) -> bool:
    loops = sch.get_loops(block)
    roles = _loop_roles(sch, loops)
    if not loops or roles is None or roles[0] != _SPATIAL:
        return False
    n_outer = next((i for i, r in enumerate(roles) if r != _SPATIAL), len(roles))
    spatial, reduce = list(loops[:n_outer]), list(loops[n_outer:])
    has_reduction = _REDUCE in roles
    last = _extent(sch, spatial[-1]) or 0
    vectorize = (all(r == _REDUCE for r in roles[n_outer:]) and last >= lanes
                 and _contiguous_in(sch, loops, spatial[-1]))
    if not vectorize:  # threads over the outer spatial loops only
        outer = spatial if (has_reduction or len(spatial) == 1) else spatial[:-1]
        return _parallel(sch, outer)
    outer, row = spatial[:-1], spatial[-1]
    outer_extent = 1
    for loop in outer:
        outer_extent *= _extent(sch, loop) or cores * 4
    if outer_extent < 4 * cores and last >= 2 * cores * lanes:  # e.g. a batch-1 matmul
        done, parts = _try("split for threads", sch.split, row, [cores, None])
        if done:
            outer, row = outer + [parts[0]], parts[1]
    # The whole output row below the reduction loops: each reduction step sweeps a
    # contiguous row of the output and of an input, in vector registers.
    if reduce and not _try("reorder", sch.reorder, *reduce, row)[0]:
        return _parallel(sch, spatial)
    scheduled = _parallel(sch, outer)
    done, parts = _try("split", sch.split, row, [None, _row_block(last, lanes) or lanes])
    if done:
        scheduled |= _try("vectorize", sch.vectorize, parts[1])[0]
    if has_reduction:  # the init leaves the reduction loops: zeros once per row
        loops = sch.get_loops(block)
        first = next(lp for lp, r in zip(loops, _loop_roles(sch, loops)) if r == _REDUCE)
        _try("decompose_reduction", sch.decompose_reduction, block, first)
    return scheduled


def _parallel(sch, loops) -> bool:
    if not loops:
        return False
    done, fused = (True, loops[0]) if len(loops) == 1 else _try("fuse", sch.fuse, *loops)
    return done and _try("parallel", sch.parallel, fused)[0]


def _row_block(extent: int, lanes: int) -> int | None:
    """Vector length for an output row of ``extent``: ``lanes`` when it divides the row,
    else its largest divisor in [lanes/4, lanes) (no masked tail: ResNet-18's 7-column
    rows take 7 lanes), else None."""
    if extent % lanes == 0:
        return lanes
    return next((d for d in range(lanes - 1, max(lanes // 4, 2) - 1, -1) if extent % d == 0),
                None)


def _blocked_plan(sch, block, lanes: int, tile: int):
    """``(reuse loop index, its block, row index, row block, strided reads)`` for register
    blocking, or None; strided reads are ``(buffer, stride)`` of vector operands read with
    a stride along the row (a strided conv's input).

    The block must be spatial loops then reduction loops, with a vectorizable last spatial
    loop (the row), a read that does not move along the row (broadcast to the vector: a
    conv's weight) and another spatial loop (``f``) that no read moving along the row
    moves along (those vectors are loaded once for the whole ``f`` block: a conv's input
    across output channels, a matmul's right operand across rows)."""
    nest = _reduction_nest(sch, block)
    if nest is None:
        return None
    loops, n_spatial, realize = nest
    row = loops[n_spatial - 1]
    row_extent = _extent(sch, row)
    xb = _row_block(row_extent, lanes) if row_extent else None
    if xb is None or not _contiguous_in(sch, loops, row):
        return None

    def independent(region, loop) -> bool:
        return not _moves_with(region, _bound_vars(sch, realize, loop))

    reads = list(realize.block.reads)
    vectors = [r for r in reads if not independent(r, row)]   # loaded as vectors
    if len(vectors) == len(reads):  # nothing to broadcast against them
        return None
    strided = _strided(vectors, _bound_vars(sch, realize, row))
    for index in range(n_spatial - 2, -1, -1):
        extent = _extent(sch, loops[index]) or 0
        fb = next((d for d in range(tile, 1, -1) if extent % d == 0), None)
        if fb and all(independent(r, loops[index]) for r in vectors):
            return index, fb, n_spatial - 1, xb, strided
    # No such loop (a batch-1 matmul, a depthwise conv): a tile of several vectors of
    # the row itself accumulates in registers.
    vectors_in_row = row_extent // xb
    rb = next((d for d in range(tile, 1, -1) if vectors_in_row % d == 0), None)
    return (n_spatial - 1, rb, n_spatial - 1, xb, strided) if rb else None


def _row_tile(extent: int, tile: int) -> int | None:
    """Output columns per register tile when the tile is columns × one vector of output
    channels: the whole row where it fits the tile, else its largest divisor in
    [tile/2, tile] (ResNet-18's 56, 28 and 14 columns: 14 per tile), else None."""
    if 1 < extent <= tile:
        return extent
    return next((d for d in range(tile, tile // 2 - 1, -1) if extent % d == 0), None)


def _channel_plan(sch, block, lanes: int, tile: int):
    """``(row index, row tile, channel index, lanes)``: a register tile of output columns
    (:func:`_row_tile`) × one vector of output channels, or None.

    Needs a spatial loop other than the row whose extent fills whole vectors and along
    which a read moves contiguously (a weight packed channel-innermost: ``layout.py``)."""
    nest = _reduction_nest(sch, block)
    if nest is None:
        return None
    loops, n_spatial, realize = nest
    columns = _row_tile(_extent(sch, loops[n_spatial - 1]) or 0, tile)
    if columns is None:
        return None
    for index in range(n_spatial - 2, -1, -1):
        if (_extent(sch, loops[index]) or 0) % lanes == 0 and \
                _along(realize.block.reads, _bound_vars(sch, realize, loops[index])):
            return n_spatial - 1, columns, index, lanes
    return None


def _strided(regions, row_vars) -> list[tuple]:
    """``(buffer, stride)`` of the regions whose last axis moves along the row by more than
    one element per step."""
    from tvm.sym.pattern import detect_linear_equation

    out = []
    for region in regions:
        for var in row_vars:
            coeffs = detect_linear_equation(region.region[-1].min, [var])
            if len(coeffs) == 2 and isinstance(coeffs[0], tirx.IntImm) and \
                    int(coeffs[0]) > 1:
                out.append((region.source, int(coeffs[0])))
    return out


def _phase_split(sch, root, buffer, stride: int) -> str | None:
    """Store ``buffer`` (an intermediate, e.g. a strided conv's padded input) with its last
    axis split by phase (``x -> (x % stride, x // stride)``): the strided reads of each
    phase become contiguous vectors instead of gathers. The name of the block that
    writes it, if it was split."""
    for block in sch.get_child_blocks(root):
        writes = sch.get(block).writes
        if len(writes) == 1 and writes[0].source.same_as(buffer):
            shape = buffer.ty.shape
            index_map = tirx.IndexMap.from_func(
                lambda *i: (*i[:-1], i[-1] % stride, i[-1] // stride), ndim=len(shape),
                index_dtype=str(shape[-1].ty))
            done, _ = _try("phase split", sch.transform_layout, block, ("write", 0),
                           index_map, 0.0)
            if done:  # its loops in the new layout: contiguous vector stores (strided
                # scatters else: 15-27% of a stride-2 conv's time); skipped where the
                # split pads the buffer (an odd row)
                _try("phase split loops", sch.transform_block_layout, block, index_map)
            return sch.get(block).name_hint if done else None
    return None


def _split_strided_inputs(sch, root) -> set[str]:
    """Phase-split the intermediates that a reduction reads with a stride along its row (a
    strided pooling's padded input): the names of their blocks, to keep un-inlined."""
    keep = set()
    for block in list(sch.get_child_blocks(root)):
        nest = _reduction_nest(sch, block)
        if nest is None:
            continue
        loops, n_spatial, realize = nest
        row_vars = _bound_vars(sch, realize, loops[n_spatial - 1])
        for buffer, stride in _strided(list(realize.block.reads), row_vars):
            name = _phase_split(sch, root, buffer, stride)
            if name is not None:
                keep.add(name)
    return keep


def _blocked_schedule(func: tirx.PrimFunc, lanes: int, tile: int, cores: int,
                      row_vectors: int = 1, rows_only: bool = False, chunk: int = 0,
                      rows_outer: bool | None = None, tile_rows: int = 1):
    """The register-blocked schedule (a ``Schedule``) of a one-reduction kernel (module
    docstring), or None when the kernel has no such block. ``tile`` caps the tile's
    channels (or rows), ``row_vectors`` > 1 makes it that many vectors wide (tuning jobs
    try such variants: :func:`blocked_variants`); None where the kernel does not allow
    it. ``rows_only``: None unless the tile is whole vectors along the output row (not
    over packed channels). ``chunk`` > 0 (another variant) splits the outermost reduction
    loop (a conv's input channels) into chunks of that many and sweeps every tile of the
    row per chunk, the row's accumulators kept in a local buffer between chunks: each
    chunk's inputs stay in L1 across the row's tiles. Each output still accumulates in
    the same order; where the split does not apply, the schedule is the unchunked one.
    ``rows_outer`` puts the loops over output rows (and batch) outside the loop over
    groups of output channels instead of inside it; None chooses by the bytes each order
    reads again (:func:`_rows_outer_pays`). ``tile_rows`` > 1 makes the tile that many
    output rows tall (the innermost spatial loop other than the tile's two whose rows
    share an operand: a conv's output rows share its weight); None where there is no such
    loop or the tile's channels (columns) would not be full."""
    sch = tvm.s_tir.Schedule(func, debug_mask=0)
    root = sch.get_sblock("root")
    blocks = list(sch.get_child_blocks(root))
    reductions = [b for b in blocks
                  if _REDUCE in (_loop_roles(sch, sch.get_loops(b)) or [])]
    if len(reductions) != 1:
        return None
    (red,) = reductions
    plan = _blocked_plan(sch, red, lanes, tile)
    if plan is not None:
        *plan, strided = plan
        # rows not whole vectors, or read with a stride: over output channels where the
        # weight is packed for it (layout.py); else along the row, a strided input stored
        # split by phase
        channels = _channel_plan(sch, red, lanes, tile) if strided or plan[3] < lanes \
            else None
        if rows_only and (channels is not None or plan[3] < lanes):
            return None
        if channels is not None:
            plan = channels
        else:
            for buffer, stride in strided:
                _phase_split(sch, root, buffer, stride)
    elif not rows_only:
        plan = _channel_plan(sch, red, lanes, tile)
    if plan is None:
        return None
    tile_index, tb, vector_index, vb = plan
    if row_vectors > 1 and (tile_index == vector_index or
                            (_extent(sch, sch.get_loops(red)[vector_index]) or 0) %
                            (vb * row_vectors)):
        return None
    out = sch.cache_write(red, 0, "local")
    n_axes = len(sch.get(red).writes[0].region)
    if vector_index != n_axes - 1:  # the accumulators: vector axis innermost, in registers
        order = [a for a in range(n_axes) if a != vector_index] + [vector_index]
        sch.transform_layout(red, ("write", 0), tirx.IndexMap.from_func(
            lambda *i: tuple(i[a] for a in order), ndim=n_axes,
            index_dtype=str(sch.get(red).writes[0].region[0].min.ty)))
    keep = (sch.get(red).name_hint, sch.get(out).name_hint)
    for block in reversed(list(sch.get_child_blocks(root))):
        if sch.get(block).name_hint not in keep:
            _try("reverse_compute_inline", sch.reverse_compute_inline, block)
    last = sch.get(sch.get_child_blocks(root)[-1]).name_hint
    if last != keep[1]:  # an epilogue stayed apart (a tensor it reads twice): the tile's
        return None      # write-out would not be the last step
    loops = sch.get_loops(red)
    roles = _loop_roles(sch, loops)
    n_spatial = roles.index(_REDUCE)
    spatial, reduce = list(loops[:n_spatial]), list(loops[n_spatial:])
    if rows_outer is None and tile_index != vector_index:
        rows_outer = _rows_outer_pays(sch, loops, n_spatial, tile_index, tb, vector_index,
                                      vb * row_vectors)
    x_mid = []  # with row_vectors > 1: the tile's vectors along the row, unrolled
    if tile_index == vector_index:  # the tile is several vectors of the row
        x_outer, f_inner, x_inner = sch.split(spatial[vector_index], [None, tb, vb])
        f_outer = x_outer
    else:
        f_outer, f_inner = sch.split(spatial[tile_index], [None, tb])
        x_outer, *x_mid, x_inner = sch.split(spatial[vector_index], [None, row_vectors, vb]
                                             if row_vectors > 1 else [None, vb])
    outer = [f_outer if i == tile_index else x_outer if i == vector_index else lp
             for i, lp in enumerate(spatial)]
    y_inner = []  # with tile_rows > 1: the tile's output rows, unrolled
    if tile_rows > 1:  # rows that share an operand (a conv's weight; not a batch's heads)
        if tile_index == vector_index or tb * row_vectors < tile:
            return None  # (the rows multiply a full tile of channels or columns only)
        realize = _realize(sch, loops)
        shared = [r for r in realize.block.reads if r.source.scope() != "local"]

        def shares(i: int) -> bool:
            bound = _bound_vars(sch, realize, loops[i])
            return any(not _moves_with(r, bound) for r in shared)

        rows = [i for i in range(n_spatial) if i not in (tile_index, vector_index) and
                (_extent(sch, spatial[i]) or 0) % tile_rows == 0 and
                (_extent(sch, spatial[i]) or 0) > tile_rows and shares(i)]
        if not rows:
            return None
        outer[rows[-1]], *y_inner = sch.split(spatial[rows[-1]], [None, tile_rows])
    if rows_outer and tile_index != vector_index:  # rows (and batch) outermost, then the
        pair = sorted((tile_index, vector_index))   # tile's two loops in their order
        outer = [lp for i, lp in enumerate(outer) if i not in pair] + [outer[i] for i in pair]
    sch.reorder(*outer, *reduce, f_inner, *y_inner, *x_mid, x_inner)
    for loop in y_inner + x_mid:
        sch.unroll(loop)
    threads = 1
    for loop in outer[:-1]:
        threads *= _extent(sch, loop) or 1
    first = reduce[0]  # the loop the reduction's init goes above
    if threads < 2 * cores:  # too few tiles above the last loop: threads over all of them
        outer = [sch.fuse(*outer)] if len(outer) > 1 else outer
        sch.reverse_compute_at(out, outer[-1])
        sch.parallel(outer[-1])
    else:
        extent = _extent(sch, first) or 0
        if chunk and tile_index != vector_index and extent > chunk and extent % chunk == 0:
            first, chunk_inner = sch.split(first, [None, chunk])
            sch.reorder(first, outer[-1], chunk_inner)
            sch.reverse_compute_at(out, outer[-2])
        else:
            sch.reverse_compute_at(out, outer[-1])
        if not _parallel(sch, outer[:-1]):
            return None
    sch.vectorize(x_inner)
    sch.unroll(f_inner)
    init = sch.decompose_reduction(red, first)
    for block in (init, out):
        _try("vectorize", sch.vectorize, sch.get_loops(block)[-1])
    done = {sch.get(b).name_hint for b in (red, init, out)}
    for block in sch.get_child_blocks(root):  # producers (padding) left apart
        if sch.get(block).name_hint not in done:
            _schedule_block(sch, block, lanes, cores)
    return sch


def _rows_outer_pays(sch, loops, n_spatial: int, tile_index: int, tile: int,
                     vector_index: int, vector: int) -> bool:
    """Whether a conv's output rows should be the outer loops and its groups of output
    channels the inner ones (the other way round, each group sweeps every row).

    Each order reads some operand again and again from beyond L1/L2: with groups outer, the
    operands that do not depend on the output channels (a conv's input) once per group;
    with rows outer, those that do not depend on the rows (its weight) once per row. The
    order that re-reads fewer bytes wins. Measured on an AMD EPYC (znver3, min of 9
    interleaved rounds): the perception CNN's 64->64 3x3/2 conv 1837 -> 1446 us with rows
    outer (its padded input is 2.2 MB, 16 groups; the weight 147 KB, 32 rows), while
    ResNet-18's 128->128 on 28x28 (460 KB input, 16 groups; 590 KB weight, 28 rows) ran
    slower that way."""
    realize = _realize(sch, loops)
    group = min(tile_index, vector_index)  # the output channels' loop, outside the row's
    others = [i for i in range(n_spatial) if i not in (tile_index, vector_index)]
    rows = 1
    for i in others:
        rows *= _extent(sch, loops[i]) or 1
    groups = (_extent(sch, loops[group]) or 1) // (tile if group == tile_index else vector)
    if rows <= 1 or groups <= 1:
        return False
    group_vars = _bound_vars(sch, realize, loops[group])
    row_vars = [v for i in others for v in _bound_vars(sch, realize, loops[i])]

    def again(free_of) -> int:  # bytes of the operands that do not move with free_of
        total = 0
        for region in realize.block.reads:
            buffer = region.source
            if buffer.scope() == "local" or _moves_with(region, free_of):
                continue
            size = tvm.DataType(str(buffer.dtype)).bits // 8
            for dim in buffer.ty.shape:
                size *= int(dim) if isinstance(dim, tirx.IntImm) else 1
            total += size
        return total

    return again(row_vars) * rows < again(group_vars) * groups


# Reduction chunks the tuning job tries on the default tile. Measured on an AMD EPYC
# (znver3; a noisy VM, min of 9 interleaved rounds): chunks of 8 input channels made 8 of 9
# 3x3 convs 3-13% faster (the perception CNN's, ResNet-18's) and one 10% slower, so they
# are candidates, not the default.
_CHUNKS = (8, 16)


def blocked_variants(func: tirx.PrimFunc, target) -> list[tuple[str, object]]:
    """Other register tiles for ``func``'s blocked schedule: ``[(label, Schedule)]``,
    the default's tile left out, each a distinct kernel (empty where the kernel has no
    blocked schedule). Tuning jobs measure them beside the search's best and the default
    (``autotune.host``): the default's tile with its reduction in chunks (``_CHUNKS``),
    the default's tile in the loop order the estimate did not choose (rows or channel
    groups outermost: :func:`_rows_outer_pays`; also in chunks of 8), narrower tiles,
    tiles two or three vectors wide, up to 1.5x the default's accumulators, and tiles
    over two output rows (half the default's channels or columns × one vector, a quarter ×
    two vectors)."""
    (lanes, tile), cores = vector_shape(target), core_count(target)
    seen, out = set(), []
    default = _default_blocked(func, lanes, tile, cores)
    if default is None:
        return []
    seen.add(tvm_ffi.structural_hash(default.mod))

    def add(label: str, sch) -> None:  # a distinct kernel only (a variant may not apply)
        key = None if sch is None else tvm_ffi.structural_hash(sch.mod)
        if key is not None and key not in seen:
            seen.add(key)
            out.append((label, sch))

    for size in _CHUNKS:  # the default's tile, its reduction swept in chunks
        add(f"default tile, reduction in chunks of {size}",
            _default_blocked(func, lanes, tile, cores, size))
    # the other loop order than the default's estimate chose (_rows_outer_pays)
    for rows_outer, label in ((True, "rows outside the channel groups"),
                              (False, "channel groups outside the rows")):
        for size in (0, _CHUNKS[0]):
            add(f"default tile, {label}" + (f", reduction in chunks of {size}" if size else ""),
                _default_blocked(func, lanes, tile, cores, size, rows_outer))
    for cap in sorted({tile, tile // 2, tile // 4}, reverse=True):
        for vectors in (1, 2, 3):
            if cap < 2 or cap * vectors > tile * 3 // 2:
                continue
            add(f"blocked tile <= {cap} x {vectors} vector{'s' if vectors > 1 else ''}",
                _try("blocked variant", _blocked_schedule, func, lanes, cap, cores,
                     vectors)[1])
    for cap, vectors in ((tile // 2, 1), (tile // 4, 2)):  # tiles over two output rows
        if cap >= 2:
            add(f"blocked tile <= {cap} x {vectors} vector{'s' if vectors > 1 else ''} x 2 "
                "output rows", _try("blocked variant", _blocked_schedule, func, lanes, cap,
                                    cores, vectors, False, 0, None, 2)[1])
    return out


def _default_blocked(func: tirx.PrimFunc, lanes: int, tile: int, cores: int, chunk: int = 0,
                     rows_outer: bool | None = None):
    """The default register-blocked schedule, or None. With 8 lanes (AVX2's 16 vector
    registers) a tile vectorized along the output row is half the channels × one vector ×
    two output rows, where the rows share an operand (a conv's weight: 4 broadcasts + 2
    vector loads per 8 FMAs instead of 8 + 1, and a smaller input footprint per tile than
    two vectors of one row). Measured on an AMD EPYC (znver3), min of 7 interleaved rounds
    against 4 × two vectors (or 8 × one where the row is an odd number of vectors):
    ResNet-18's 64->64 3x3 convs on 56x56 2620 -> 1900 and 2248 -> 1675 us, the perception
    CNN's stride-1 convs 2426 -> 2191 and 2236 -> 2133 us. Else half the channels (rows) ×
    two vectors where the row splits into pairs of vectors (measured before: perception
    CNN's convs 2414 -> 1996, 2235 -> 1913, 1797 -> 1658, 169 -> 150 us against 8 × one).
    Tiles over packed channels keep one vector and one row (two vectors over channels: up
    to 3.3x slower on ResNet-18's 3x3 convolutions; two rows: no faster, the stem slower)."""
    for what, vectors, rows in ((("two output rows", 1, 2), ("two vectors wide", 2, 1))
                                if lanes == 8 else ()):
        done, sch = _try(f"register-blocked schedule, {what}", _blocked_schedule, func, lanes,
                         tile // 2, cores, vectors, True, chunk, rows_outer, rows)
        if done and sch is not None:
            return sch
    return _try("register-blocked schedule", _blocked_schedule, func, lanes, tile, cores, 1,
                False, chunk, rows_outer)[1]


def schedule_kernel(func: tirx.PrimFunc, target) -> tirx.PrimFunc | None:
    """``func`` with the default CPU schedule, or None where no step applies."""
    sch = default_schedule(func, target)
    if sch is None:
        return None
    (new,) = sch.mod.functions.values()
    return _mark(new, func)


def default_schedule(func: tirx.PrimFunc, target):
    """The default CPU schedule of ``func`` as a traced ``Schedule`` (its trace replays on
    the kernel: tuning jobs store it as a record where it beats the search), or None."""
    from .winograd import gemm_schedule, input_schedule, output_schedule

    transform = input_schedule(func, target) or gemm_schedule(func, target) or \
        output_schedule(func, target)
    if transform is not None:  # a Winograd kernel's own
        return transform
    (lanes, tile), cores = vector_shape(target), core_count(target)
    blocked = _default_blocked(func, lanes, tile, cores)
    if blocked is not None:
        return blocked
    sch = tvm.s_tir.Schedule(func, debug_mask=0)
    root = sch.get_sblock("root")
    keep = _split_strided_inputs(sch, root)
    while True:  # producers (padding, element-wise) into their consumers, one at a time
        for block in sch.get_child_blocks(root):
            if sch.get(block).name_hint not in keep and \
                    _try("compute_inline", sch.compute_inline, block)[0]:
                break
        else:
            break
    for block in reversed(list(sch.get_child_blocks(root))):
        _try("reverse_compute_inline", sch.reverse_compute_inline, block)
    scheduled = [_schedule_block(sch, block, lanes, cores)
                 for block in sch.get_child_blocks(root)]
    return sch if any(scheduled) else None


def _mark(new: tirx.PrimFunc, func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``new`` with ``func``'s attributes and the default-schedule mark."""
    for key, value in (func.attrs.items() if func.attrs is not None else []):
        new = new.with_attr(key, value)
    return new.with_attr(ATTR, True)


def apply_default_schedules(mod: tvm.IRModule, target) -> tuple[tvm.IRModule, int]:
    """Schedule every kernel of ``mod`` that has no schedule yet; ``(module, how many)``.

    CPU (LLVM) targets only: GPU kernels get dlight's defaults in ``finalize_passes``.
    """
    if "gpu" in target.keys or target.kind.name != "llvm":
        return mod, 0
    functions = dict(mod.functions.items())
    count = 0
    for gv, func in list(functions.items()):
        if not isinstance(func, tirx.PrimFunc):
            continue
        if func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False)):
            continue
        custom = schedule_for(func)  # a custom op's kernel (relay_ops) has its own
        try:
            new = custom(func, target) if custom is not None else None
        except Exception as err:  # noqa: BLE001 - never fail a build over a schedule
            # a custom op's schedule is written for its kernel: failing is a bug to see
            logger.warning("the CPU schedule of custom-op kernel %s failed (%s: %s); it "
                           "gets the generic default schedule", gv.name_hint,
                           type(err).__name__, err)
            new = None
        try:
            new = _mark(new, func) if new is not None else schedule_kernel(func, target)
        except Exception as err:  # noqa: BLE001 - never fail a build over a default
            logger.debug("default schedule for %s failed: %s", gv.name_hint, err)
            new = None
        if new is not None:
            functions[gv] = new
            count += 1
    return tvm.IRModule(functions, attrs=mod.attrs), count
