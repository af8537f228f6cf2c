"""The Cruise NPU's cycle model: what each instruction costs and how the engines overlap.

The single definition of NPU time. The simulator prices every instruction it executes
with these functions and schedules it on a ``Timeline``; the compiler's tiling estimate
prices the instructions codegen emits per tile step with the same functions. Every term
is documented, with its hardware reason, in docs/npu_isa.md ("Cycle model"). Figures
computed from it are simulated, never measured.

Each function takes the spec's ``hardware`` mapping and an instruction's parameters and
returns whole cycles.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

ACC_BYTES = 4  # fp32 / int32 accumulators


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# -- MAC array ---------------------------------------------------------------------------
def mac_rate(hw: Mapping, dtype: str) -> int:
    """Cycles per output element per array pass: 1 at the full (int8) rate, 2 for fp16."""
    rows, cols = hw["mac_array"]
    return rows * cols // hw["macs_per_cycle"][dtype]


def mac_cycles(hw: Mapping, dtype: str, reduction: int, channels: int, pixels: int,
               accumulate: bool, read_bytes: int) -> int:
    """A CONV / DWCONV / GEMM instruction.

    The array is weight-stationary: ``reduction`` products of one output element lie along
    its rows, ``channels`` outputs along its columns. Each pass (one row block by one
    column block) first loads its weight rows (``mac_weight_rows_per_cycle``, not
    overlapped: one weight register per MAC), then streams ``pixels`` output elements
    through. Partial sums of a reduction longer than the rows go to the accumulators in
    SRAM between passes and are read back; the instruction cannot be faster than its SRAM
    reads (``read_bytes`` of operands plus those partial sums, and the accumulators'
    old values with ``accumulate``) at ``sram_read_bytes_per_cycle``.
    ``mac_pipeline_cycles`` fill and drain the array once.
    """
    rows, cols = hw["mac_array"]
    row_blocks, col_blocks = _cdiv(reduction, rows), _cdiv(channels, cols)
    stream = row_blocks * col_blocks * pixels * mac_rate(hw, dtype)
    per_cycle = hw["mac_weight_rows_per_cycle"]
    full, rest = divmod(reduction, rows)
    load = col_blocks * (full * _cdiv(rows, per_cycle) + (_cdiv(rest, per_cycle) if rest else 0))
    acc_reads = (row_blocks - (0 if accumulate else 1)) * channels * pixels * ACC_BYTES
    sram = _cdiv(read_bytes + acc_reads, hw["sram_read_bytes_per_cycle"])
    return max(stream + load, sram) + hw["mac_pipeline_cycles"]


def conv_cycles(hw: Mapping, dtype: str, itemsize: int, cin: int, hin: int, win: int,
                cout: int, hout: int, wout: int, kh: int, kw: int,
                accumulate: bool) -> int:
    """CONV: the input tile is read once per column block (the array's input stage forms
    the ``(ci, ky, kx)`` windows from it), every weight once."""
    cols = hw["mac_array"][1]
    reads = (cin * hin * win * _cdiv(cout, cols) + cout * cin * kh * kw) * itemsize
    return mac_cycles(hw, dtype, cin * kh * kw, cout, hout * wout, accumulate, reads)


def dwconv_cycles(hw: Mapping, dtype: str, itemsize: int, c: int, hin: int, win: int,
                  hout: int, wout: int, kh: int, kw: int, accumulate: bool) -> int:
    """DWCONV: column ``j`` computes channel ``j`` from its own ``kh·kw`` taps, so each
    column block reads only its channels of the input."""
    reads = (c * hin * win + c * kh * kw) * itemsize
    return mac_cycles(hw, dtype, kh * kw, c, hout * wout, accumulate, reads)


def gemm_cycles(hw: Mapping, dtype: str, itemsize: int, m: int, k: int, n: int,
                accumulate: bool) -> int:
    """GEMM: ``A`` is read once per column block, ``B`` (the weights) once."""
    cols = hw["mac_array"][1]
    reads = (m * k * _cdiv(n, cols) + k * n) * itemsize
    return mac_cycles(hw, dtype, k, n, m, accumulate, reads)


# -- vector unit ---------------------------------------------------------------------------
def vector_cycles(hw: Mapping, elements: int, read_bytes: int = 0) -> int:
    """``vector_lanes`` elements per cycle, unless its SRAM reads take longer."""
    return max(_cdiv(elements, hw["vector_lanes"]),
               _cdiv(read_bytes, hw["sram_read_bytes_per_cycle"]))


def epilogue_cycles(hw: Mapping, channels: int, pixels: int, bias: bool,
                    residual: bool) -> int:
    """EPILOGUE reads fp32 accumulators, the fp32 bias per channel, an fp16 residual."""
    n = channels * pixels
    return vector_cycles(hw, n, n * ACC_BYTES + (channels * 4 if bias else 0)
                         + (n * 2 if residual else 0))


def requant_cycles(hw: Mapping, channels: int, pixels: int, bias: bool) -> int:
    """REQUANT reads int32 accumulators, multipliers and shifts (and the bias)."""
    n = channels * pixels
    return vector_cycles(hw, n, n * ACC_BYTES + channels * 4 * (3 if bias else 2))


BROADCAST_ELEMENTS = {0: lambda c, p: c * p, 1: lambda c, p: c, 2: lambda c, p: 1,
                      3: lambda c, p: p}  # ELTWISE broadcast code -> elements of b


def eltwise_cycles(hw: Mapping, itemsize: int, channels: int, pixels: int,
                   broadcast: int) -> int:
    n = channels * pixels
    return vector_cycles(hw, n, (n + BROADCAST_ELEMENTS[broadcast](channels, pixels))
                         * itemsize)


def act_cycles(hw: Mapping, itemsize: int, count: int, lut: bool) -> int:
    return vector_cycles(hw, count, count * itemsize + (256 if lut else 0))


def pool_cycles(hw: Mapping, itemsize: int, c: int, hin: int, win: int, hout: int,
                wout: int, kh: int, kw: int) -> int:
    """POOL: one window element per lane per cycle; the input tile is read once."""
    return vector_cycles(hw, c * hout * wout * kh * kw, c * hin * win * itemsize)


def fill_cycles(hw: Mapping, count: int) -> int:
    return vector_cycles(hw, count)


# -- DMA -------------------------------------------------------------------------------------
def dma_runs(dims: Sequence[int], dram_strides: Sequence[int],
             sram_strides: Sequence[int]) -> tuple[int, int]:
    """``(runs, elements per run)``: a box as runs contiguous in both DRAM and SRAM
    (merging dimensions from the innermost while both strides stay dense)."""
    run = 1
    for d, ds, ss in zip(reversed(dims), reversed(dram_strides), reversed(sram_strides)):
        if d == 1:
            continue
        if ds != run or ss != run:
            break
        run *= d
    return math.prod(dims) // run, run


def dma_cycles(hw: Mapping, itemsize: int, dims: Sequence[int],
               dram_strides: Sequence[int], sram_strides: Sequence[int]) -> int:
    """DMA_LOAD / DMA_STORE: ``dma_setup_cycles``, then each contiguous run moves whole
    DRAM bursts (``dram_burst_bytes``) at ``dma_bytes_per_cycle``: a run shorter than a
    burst, or a run's last partial burst, costs the whole burst."""
    runs, run = dma_runs(dims, dram_strides, sram_strides)
    burst = hw["dram_burst_bytes"]
    per_run = _cdiv(_cdiv(run * itemsize, burst) * burst, hw["dma_bytes_per_cycle"])
    return hw["dma_setup_cycles"] + runs * per_run


# -- the timeline -----------------------------------------------------------------------------
class Timeline:
    """In-order issue to two engines (``"dma"``, ``"compute"``) that run concurrently.

    Instruction *i* issues ``issue_cycles`` after instruction *i-1*; it starts at the
    latest of its issue, the end of its engine's previous instruction and the last SYNC
    barrier; one that overlaps an instruction of the other engine on a shared SRAM bank
    waits for it (single-ported banks: ``conflict_cycles``).
    """

    __slots__ = ("issue_cycles", "t_issue", "free", "barrier", "inflight", "conflict_cycles")

    def __init__(self, hw: Mapping):
        self.issue_cycles = int(hw["issue_cycles"])
        self.t_issue = 0
        self.free = {"dma": 0, "compute": 0}
        self.barrier = 0
        self.inflight: dict[str, list] = {"dma": [], "compute": []}  # (start, end, banks)
        self.conflict_cycles = 0

    def issue(self) -> None:
        """The next instruction (any kind, SYNC included) leaves the command decoder."""
        self.t_issue += self.issue_cycles

    def sync(self, dma: bool, compute: bool) -> int:
        """A SYNC on the named engines; returns the cycle it releases."""
        if dma:
            self.barrier = max(self.barrier, self.free["dma"])
        if compute:
            self.barrier = max(self.barrier, self.free["compute"])
        return max(self.barrier, self.t_issue)

    def run(self, engine: str, cycles: int, banks: Iterable[int] = ()) -> int:
        """Schedule ``cycles`` of work on ``engine`` touching ``banks``; returns its end."""
        other = "compute" if engine == "dma" else "dma"
        start = max(self.t_issue, self.free[engine], self.barrier)
        first = start
        banks = banks if isinstance(banks, (set, frozenset)) else set(banks)
        if banks:
            moved = True
            while moved:
                moved = False
                for s, e, b in self.inflight[other]:
                    if s < start + cycles and start < e and banks & b:
                        start, moved = e, True
        self.conflict_cycles += start - first
        end = start + cycles
        self.free[engine] = end
        self.inflight[engine] = [iv for iv in self.inflight[engine] if iv[1] > self.barrier]
        self.inflight[engine].append((start, end, banks))
        return end

    @property
    def end(self) -> int:
        """When both engines are idle and every instruction has issued."""
        return max(self.free["dma"], self.free["compute"], self.t_issue)
