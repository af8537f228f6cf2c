"""Tile choices for the NPU compiler: explicit parameters, a heuristic, and their costs.

Every MAC layer has a tiling (how many output channels, output rows or matrix rows, and
reduction channels one step computes, and whether all weights stay in SRAM). ``choose``
picks the feasible tiling with the lowest estimated cycles under the spec's cycle model
(docs/npu_isa.md); a caller (the autotuner) may pass its own per layer instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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

    @property
    def jobs(self) -> int:
        return self.groups * self.batch

    @property
    def wp(self) -> int:
        return self.w + self.pad[1] + self.pad[3]

    def rows_in(self, rows: int) -> int:
        return (rows - 1) * self.sh + (self.kh - 1) * self.dh + 1


def conv_sram(s: ConvShape, t: Tiling) -> dict[str, int]:
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


def conv_cost(spec: AcceleratorSpec, s: ConvShape, t: Tiling) -> float:
    """Estimated cycles: max(compute, DMA) plus what cannot overlap (fills, epilogues)."""
    hw = spec.hardware
    rows_arr, cols = hw["mac_array"]
    rate = (rows_arr * cols) // hw["macs_per_cycle"][s.dtype]
    n_oc = math.ceil(s.cout / t.oc)
    n_rows = math.ceil(s.hout / t.rows)
    ic = t.oc if s.depthwise else t.ic
    n_ic = 1 if s.depthwise else math.ceil(s.cin / ic)
    red = s.kh * s.kw if s.depthwise else ic * s.kh * s.kw
    passes = math.ceil(red / rows_arr) * math.ceil(t.oc / cols)
    jobs = s.jobs
    conv = jobs * n_oc * n_rows * n_ic * (passes * t.rows * s.wout * rate
                                          + hw["mac_pipeline_cycles"])
    epi = jobs * n_oc * n_rows * math.ceil(t.oc * t.rows * s.wout / hw["vector_lanes"])
    in_bytes = jobs * n_oc * n_rows * n_ic * ic * s.rows_in(t.rows) * s.w * s.elem
    w_total = (s.cout * s.kh * s.kw if s.depthwise else s.cout * s.cin * s.kh * s.kw) * s.elem
    w_bytes = (w_total if t.resident else w_total * n_rows) * s.groups
    out_bytes = jobs * s.cout * s.hout * s.wout * s.elem * (2 if s.residual else 1)
    steps = jobs * n_oc * n_rows * n_ic
    dma = (in_bytes + w_bytes + out_bytes) / hw["dma_bytes_per_cycle"] + \
        hw["dma_setup_cycles"] * steps * 3
    issue = hw["issue_cycles"] * steps * 6
    return max(conv + epi, dma) + issue + hw["dma_setup_cycles"] * 2


def _best(spec: AcceleratorSpec, groups, sram, cost) -> Tiling | None:
    """The cheapest tiling that fits the SRAM. Each group lists tilings that differ only
    in rows, most rows first: the first that fits is the group's best (fewer rows only add
    per-step overheads)."""
    budget = spec.hardware["sram_bytes"]
    best, best_cost = None, math.inf
    for group in groups:
        for t in group:
            if sum(sram(t).values()) <= budget:
                c = cost(t)
                if c < best_cost:
                    best, best_cost = t, c
                break
    return best


def choose_conv(spec: AcceleratorSpec, s: ConvShape) -> Tiling | None:
    rows_arr, cols = spec.hardware["mac_array"]
    ic_options = [s.cin] if s.depthwise else _candidates(s.cin, rows_arr)
    groups = ([Tiling(oc, rows, ic, resident) for rows in _row_candidates(s.hout)]
              for oc in _candidates(s.cout, cols) for ic in ic_options
              for resident in (True, False))
    return _best(spec, groups, lambda t: conv_sram(s, t), lambda t: conv_cost(spec, s, t))


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
    return {
        "a": 2 * _a(t.rows * t.ic * s.elem),
        "b": _a(s.k * s.n * s.elem) if (t.resident and s.const_b) else 2 * _a(t.ic * t.oc * s.elem),
        "acc": _a(t.rows * t.oc * ACC),
        "out": 2 * _a(t.rows * t.oc * s.elem),
        "bias": _a(s.n * (3 if s.dtype == "int8" else 1) * ACC)
        if (s.bias or s.dtype == "int8") else 0,
    }


def gemm_cost(spec: AcceleratorSpec, s: GemmShape, t: Tiling) -> float:
    hw = spec.hardware
    rows_arr, cols = hw["mac_array"]
    rate = (rows_arr * cols) // hw["macs_per_cycle"][s.dtype]
    n_n, n_m, n_k = math.ceil(s.n / t.oc), math.ceil(s.m / t.rows), math.ceil(s.k / t.ic)
    steps = s.batch * n_n * n_m * n_k
    mac = steps * (math.ceil(t.ic / rows_arr) * math.ceil(t.oc / cols) * t.rows * rate
                   + hw["mac_pipeline_cycles"])
    epi = s.batch * n_n * n_m * math.ceil(t.rows * t.oc / hw["vector_lanes"])
    a_bytes = s.batch * n_n * s.m * s.k * s.elem
    b_total = s.k * s.n * s.elem
    b_bytes = b_total if (t.resident and s.const_b) else s.batch * n_m * b_total
    dma = (a_bytes + b_bytes + s.batch * s.m * s.n * s.elem) / hw["dma_bytes_per_cycle"] + \
        hw["dma_setup_cycles"] * steps * 3
    return max(mac + epi, dma) + hw["issue_cycles"] * steps * 6


def choose_gemm(spec: AcceleratorSpec, s: GemmShape) -> Tiling | None:
    rows_arr, cols = spec.hardware["mac_array"]
    groups = ([Tiling(n, m, k, resident) for m in _row_candidates(s.m)]
              for n in _candidates(s.n, cols) for k in _candidates(s.k, rows_arr)
              for resident in ((True, False) if s.const_b else (False,)))
    return _best(spec, groups, lambda t: gemm_sram(s, t), lambda t: gemm_cost(spec, s, t))
