"""Tile choices for the NPU compiler: the SRAM model, the candidate tilings, the heuristic.

Every MAC layer has a tiling (how many output channels, output rows or matrix rows, and
reduction channels one step computes, and whether all weights stay in SRAM). This module
is the one SRAM model: ``conv_sram`` / ``gemm_sram`` are the exact buffers codegen
allocates (padded input width, 64-B alignment, double buffering) and ``layout`` places
them; the offload rule ``conv2d-sram`` asks ``smallest_conv`` whether any tiling fits.
``choose_conv`` / ``choose_gemm`` rank the candidate tilings by ``estimate.py`` (the
instructions codegen emits, priced by the simulator's own cycle model) and keep the
fastest; a caller (the autotuner) may pass its own per layer instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ...errors import BuildError
from ...targets.spec import AcceleratorSpec

ACC = 4   # fp32 / int32 accumulators
ALIGN = 64


@dataclass(frozen=True)
class Tiling:
    """One MAC layer's tiles. conv/dwconv: ``(oc, rows, ic)``; dense/matmul: ``(n, m, k)``."""

    oc: int
    rows: int
    ic: int
    resident: bool = True  # all weights loaded once and kept in SRAM

    def to_dict(self) -> dict:
        return asdict(self)


def _a(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _candidates(total: int, step: int) -> list[int]:
    """Block sizes to try: the whole extent, then multiples of ``step`` below it."""
    out = {total}
    size = (total // step) * step
    while size >= step:
        out.add(size)
        size //= 2
        size = (size // step) * step
    if total < step:
        out.add(total)
    return sorted(out, reverse=True)


def _row_candidates(total: int) -> list[int]:
    rows = set()
    for n_tiles in range(1, total + 1):
        rows.add(-(-total // n_tiles))
    return sorted(rows, reverse=True)


# -- SRAM layout ------------------------------------------------------------------------------
class SramAllocator:
    """Bump allocator over the spec's SRAM, reset per layer; ping-pong pairs go to
    different banks when they fit (a DMA and a compute touching one bank stall)."""

    def __init__(self, spec: AcceleratorSpec, bank_aware: bool = True):
        self.size = spec.hardware["sram_bytes"]
        self.bank = self.size // spec.hardware["sram_banks"]
        self.bank_aware = bank_aware
        self.top = 0

    def alloc(self, nbytes: int, what: str) -> int:
        addr = -(-self.top // ALIGN) * ALIGN
        if addr + nbytes > self.size:
            raise BuildError(f"NPU compiler: {what} ({nbytes} B) does not fit the SRAM "
                             f"({self.top} of {self.size} B used); this is a tiling bug")
        self.top = addr + nbytes
        return addr

    def pair(self, nbytes: int, what: str) -> tuple[int, int]:
        first = self.alloc(nbytes, what)
        nxt = -(-self.top // self.bank) * self.bank
        if self.bank_aware and nxt + nbytes <= self.size and nbytes <= self.bank:
            self.top = nxt  # next bank boundary
        return first, self.alloc(nbytes, what)


def layout(spec: AcceleratorSpec, requests) -> dict:
    """SRAM addresses for ``[(name, bytes, paired)]``: ping-pong pairs in separate banks
    when everything still fits, else packed contiguously (64-B aligned either way)."""
    for bank_aware in (True, False):
        alloc = SramAllocator(spec, bank_aware)
        try:
            return {name: (alloc.pair(n, name) if paired else alloc.alloc(n, name))
                    for name, n, paired in requests if n > 0}
        except BuildError:
            if not bank_aware:
                raise
    raise AssertionError("unreachable")


CONV_OPERANDS = (("weights", "w"), ("input tiles", "in"))
GEMM_OPERANDS = (("B", "b"), ("A tiles", "a"))


def mac_buffers(need: dict, resident: bool, operands) -> list:
    """A MAC layer's ``layout`` requests, in codegen's order, from its ``need``
    (``conv_sram`` / ``gemm_sram``). ``operands`` names the streamed tiles and their keys in
    ``need``, weight side first (``CONV_OPERANDS``, ``GEMM_OPERANDS``)."""
    (w_name, w_key), (in_name, in_key) = operands
    return [("bias", need["bias"], False),
            ("scalars", need.get("scalars", 0), False),
            (w_name, need[w_key] if resident else need[w_key] // 2, not resident),
            (in_name, need[in_key] // 2, True),
            ("accumulators", need["acc"], False),
            ("output tiles", need["out"] // 2, True),
            ("residual tiles", need.get("res", 0) // 2, True)]


def shortlist(groups, sram, budget: int, per_group: int = 3) -> list:
    """Feasible tilings: per group (tilings that differ only in rows, most rows first), the
    largest row counts that fit, ``per_group`` of them, halving (the last the smallest)."""
    out = []
    for group in groups:
        fits = [t for t in group if sum(sram(t).values()) <= budget]
        picked, rows = [], None
        for t in fits:
            if rows is None or t.rows <= rows // 2 or t is fits[-1]:
                picked.append(t)
                rows = t.rows
            if len(picked) == per_group:
                break
        out.extend(picked)
    return list(dict.fromkeys(out))


_CHOSEN: dict = {}  # (spec hash, shape) -> tiling: a model repeats its layer shapes


def _remembered(spec: AcceleratorSpec, shape, choose) -> Tiling | None:
    key = (spec.spec_hash, shape)
    if key not in _CHOSEN:
        if len(_CHOSEN) >= 4096:
            _CHOSEN.clear()
        _CHOSEN[key] = choose()
    return _CHOSEN[key]


def _fastest(options: list, estimate, bound) -> Tiling | None:
    """The option with the fewest estimated cycles (the first of equals). Options go in
    the order of a cheap lower ``bound``; once the bound passes the best estimate, no later
    option can win, and they are not estimated."""
    bounds = [bound(t) for t in options]
    best, best_key = None, (math.inf, 0)
    for i in sorted(range(len(options)), key=lambda i: (bounds[i], i)):
        if bounds[i] > best_key[0]:
            break
        key = (estimate(options[i]), i)
        if key < best_key:
            best, best_key = options[i], key
    return best


# -- convolutions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvShape:
    cin: int
    cout: int
    h: int
    w: int
    hout: int
    wout: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pad: tuple[int, int, int, int]  # top, left, bottom, right
    depthwise: bool
    residual: bool
    bias: bool
    elem: int = 2            # bytes per activation/weight: 2 fp16, 1 int8
    dtype: str = "float16"
    groups: int = 1          # grouped conv: cin and cout above are per group
    batch: int = 1           # images: every group of every image is one job
    clamps: int = 0          # int8 residual: ELTWISE max / min after the add (activation)

    @property
    def jobs(self) -> int:
        return self.groups * self.batch

    @property
    def wp(self) -> int:
        return self.w + self.pad[1] + self.pad[3]

    def rows_in(self, rows: int) -> int:
        return (rows - 1) * self.sh + (self.kh - 1) * self.dh + 1


def conv_sram(s: ConvShape, t: Tiling) -> dict[str, int]:
    """Bytes of each SRAM buffer codegen allocates for conv ``s`` tiled ``t``: input rows
    at the padded width, weights (all, or a double-buffered block), accumulators, output
    (and residual) tiles double-buffered, per-channel constants; each 64-B aligned."""
    ic = t.oc if s.depthwise else t.ic
    w_block = (t.oc * s.kh * s.kw if s.depthwise else t.oc * ic * s.kh * s.kw) * s.elem
    w_all = (s.cout * s.kh * s.kw if s.depthwise else s.cout * s.cin * s.kh * s.kw) * s.elem \
        * s.groups
    tile = t.oc * t.rows * s.wout
    per_channel = (3 if s.dtype == "int8" else 1) * ACC  # bias (+ multiplier, shift)
    need = {
        "in": 2 * _a(ic * s.rows_in(t.rows) * s.wp * s.elem),
        "w": _a(w_all) if t.resident else 2 * _a(w_block),
        "acc": _a(tile * ACC),
        "out": 2 * _a(tile * s.elem),
        "res": 2 * _a(tile * s.elem) if s.residual else 0,
        "bias": _a(s.cout * s.groups * per_channel) if (s.bias or s.dtype == "int8") else 0,
        # int8 residual: the scalars of its rescale and clamp (RESIDUAL_SCALARS int8)
        "scalars": ALIGN if s.residual and s.dtype == "int8" else 0,
    }
    return need


def conv_groups(spec: AcceleratorSpec, s: ConvShape):
    """Candidate conv tilings grouped by (channel block, reduction block, residency), each
    group most rows first: channel blocks are multiples of the array's columns, reduction
    blocks of its rows (or the whole extent)."""
    rows_arr, cols = spec.hardware["mac_array"]
    ic_options = [s.cin] if s.depthwise else _candidates(s.cin, rows_arr)
    return [[Tiling(oc, rows, ic, resident) for rows in _row_candidates(s.hout)]
            for oc in _candidates(s.cout, cols) for ic in ic_options
            for resident in (True, False)]


def smallest_conv(spec: AcceleratorSpec, s: ConvShape) -> tuple[Tiling, int]:
    """The candidate tiling needing the least SRAM, and its bytes: one output row of the
    smallest channel and reduction blocks, with or without resident weights. No tiling
    fits when this one does not (what the offload rule ``conv2d-sram`` asks)."""
    options = [group[-1] for group in conv_groups(spec, s)]
    needs = [sum(conv_sram(s, t).values()) for t in options]
    i = int(np.argmin(needs))
    return options[i], needs[i]


def choose_conv(spec: AcceleratorSpec, s: ConvShape) -> Tiling | None:
    """The fastest shortlisted tiling by the estimate, or None when none fits the SRAM."""
    from .estimate import conv_bound, conv_estimate

    def choose():
        options = shortlist(conv_groups(spec, s), lambda t: conv_sram(s, t),
                            spec.hardware["sram_bytes"])
        return _fastest(options, lambda t: conv_estimate(spec, s, t),
                        lambda t: conv_bound(spec, s, t))

    return _remembered(spec, s, choose)


def conv_shape(in_shape, w_shape, out_shape, strides, padding, dilation, groups: int,
               dtype: str, bias: bool, residual: bool, clamps: int = 0) -> ConvShape:
    """The geometry codegen tiles for an NCHW conv (``w_shape[-2:]`` is the kernel): one
    filter per channel (groups = in = out channels) is depthwise; other groups are jobs
    with per-group channels."""
    batch, cin, h, w = in_shape
    cout, hout, wout = out_shape[1:]
    depthwise = groups > 1 and groups == cin == cout
    g = 1 if depthwise else groups
    kh, kw = w_shape[-2:]
    (sh, sw), (dh, dw) = strides, dilation
    return ConvShape(cin // g, cout // g, h, w, hout, wout, kh, kw, sh, sw, dh, dw,
                     tuple(padding), depthwise, residual, bias, np.dtype(dtype).itemsize,
                     dtype, g, batch, clamps)


# -- matrix products -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GemmShape:
    m: int
    k: int
    n: int
    batch: int
    const_b: bool   # dense: B is a constant weight
    bias: bool
    elem: int = 2
    dtype: str = "float16"


def gemm_sram(s: GemmShape, t: Tiling) -> dict[str, int]:
    """Bytes of each SRAM buffer codegen allocates for product ``s`` tiled ``t``."""
    return {
        "a": 2 * _a(t.rows * t.ic * s.elem),
        "b": _a(s.k * s.n * s.elem) if (t.resident and s.const_b) else 2 * _a(t.ic * t.oc * s.elem),
        "acc": _a(t.rows * t.oc * ACC),
        "out": 2 * _a(t.rows * t.oc * s.elem),
        "bias": _a(s.n * (3 if s.dtype == "int8" else 1) * ACC)
        if (s.bias or s.dtype == "int8") else 0,
    }


def gemm_groups(spec: AcceleratorSpec, s: GemmShape):
    """Candidate product tilings grouped like ``conv_groups`` (column blocks of ``n``,
    reduction blocks of ``k``, residency of a constant ``B``), most rows of ``m`` first."""
    rows_arr, cols = spec.hardware["mac_array"]
    return [[Tiling(n, m, k, resident) for m in _row_candidates(s.m)]
            for n in _candidates(s.n, cols) for k in _candidates(s.k, rows_arr)
            for resident in ((True, False) if s.const_b else (False,))]


def choose_gemm(spec: AcceleratorSpec, s: GemmShape) -> Tiling | None:
    """The fastest shortlisted tiling by the estimate, or None when none fits the SRAM."""
    from .estimate import gemm_bound, gemm_estimate

    def choose():
        options = shortlist(gemm_groups(spec, s), lambda t: gemm_sram(s, t),
                            spec.hardware["sram_bytes"])
        return _fastest(options, lambda t: gemm_estimate(spec, s, t),
                        lambda t: gemm_bound(spec, s, t))

    return _remembered(spec, s, choose)
