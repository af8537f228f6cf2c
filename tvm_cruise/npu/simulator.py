"""The Cruise NPU simulator: executes a program's instructions and counts its cycles.

Functional model: SRAM is a byte array of the spec's size; every instruction reads and
writes it through bounds- and alignment-checked views; tiles are computed with numpy
(fp16 products in fp32 via BLAS, int8 through float64 BLAS, which is exact for int8 sums
up to 2^53, then checked against the int32 accumulator range). Hazard rules:
docs/npu_isa.md. Every instruction's cycles and the engines' timeline come from
``cost.py``, the one cycle model (the compiler's tiling estimate uses it too). Figures it
produces are simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import HazardError, NpuExecutionError, SramAccessError
from ..targets.spec import AcceleratorSpec
from . import cost, isa
from .program import Program

_ACC_RANGE = (-(1 << 31), (1 << 31) - 1)


@dataclass
class ClassStats:
    count: int = 0
    cycles: int = 0
    macs: int = 0


@dataclass
class RunStats:
    """Simulated statistics of one program run."""

    accelerator: str
    cycles: int = 0
    macs: int = 0
    macs_per_cycle: int = 1
    clock_mhz: float = 1.0
    dma_bytes_loaded: int = 0
    dma_bytes_stored: int = 0
    sram_high_water: int = 0
    bank_conflict_cycles: int = 0
    instructions: int = 0
    by_class: dict = field(default_factory=dict)
    sync_times: dict = field(default_factory=dict)  # SYNC index -> cycle it releases

    @property
    def utilization(self) -> float:
        return self.macs / (self.cycles * self.macs_per_cycle) if self.cycles else 0.0

    @property
    def time_us(self) -> float:
        return self.cycles / self.clock_mhz

    @property
    def dma_bytes(self) -> int:
        return self.dma_bytes_loaded + self.dma_bytes_stored

    def to_dict(self) -> dict:
        return {"accelerator": self.accelerator, "simulated": True, "cycles": self.cycles,
                "time_us": round(self.time_us, 3), "clock_mhz": self.clock_mhz,
                "macs": self.macs,
                "macs_per_cycle": self.macs_per_cycle,
                "utilization": round(self.utilization, 6),
                "dma_bytes_loaded": self.dma_bytes_loaded,
                "dma_bytes_stored": self.dma_bytes_stored,
                "sram_high_water": self.sram_high_water,
                "bank_conflict_cycles": self.bank_conflict_cycles,
                "instructions": self.instructions,
                "by_class": {k: vars(v) for k, v in sorted(self.by_class.items())}}


# -- math helpers ---------------------------------------------------------------------------
def _erf(x: np.ndarray) -> np.ndarray:
    """erf in fp32 (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7: below fp16 resolution)."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                           + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


def activation(x: np.ndarray, func: int, lo: float, hi: float) -> np.ndarray:
    """The fp32 activation of EPILOGUE / ACT."""
    with np.errstate(over="ignore"):
        if func == isa.ACT_NONE:
            return x
        if func == isa.ACT_RELU:
            return np.maximum(x, np.float32(0))
        if func == isa.ACT_CLIP:
            return np.clip(x, np.float32(lo), np.float32(hi))
        if func == isa.ACT_SIGMOID:
            return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
        if func == isa.ACT_TANH:
            return np.tanh(x)
        if func == isa.ACT_SILU:
            return (x / (1.0 + np.exp(-x))).astype(np.float32)
        if func == isa.ACT_GELU:
            return (0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))).astype(np.float32)
    raise ValueError(f"unknown activation {func}")


def round_half_away(num: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``num / 2^shift`` rounded half away from zero (int64, shift >= 0)."""
    num = num.astype(np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    mag = (np.abs(num) + half) >> shift
    return np.where(num < 0, -mag, mag)


# -- the simulator -------------------------------------------------------------------------------
class _Region:
    __slots__ = ("lo", "hi", "index", "name")

    def __init__(self, lo, hi, index, name):
        self.lo, self.hi, self.index, self.name = lo, hi, index, name

    def overlaps(self, other) -> bool:
        return self.lo < other.hi and other.lo < self.hi


class Simulator:
    """Run NPU programs for one accelerator spec.

    Examples
    --------
    >>> outputs, stats = Simulator(spec).run(program, [x])            # doctest: +SKIP
    >>> stats.cycles, stats.utilization                               # doctest: +SKIP
    """

    def __init__(self, spec: AcceleratorSpec):
        self.spec = spec
        hw = spec.hardware
        self.rows, self.cols = hw["mac_array"]
        self.sram_bytes = int(hw["sram_bytes"])
        self.bank_bytes = self.sram_bytes // int(hw["sram_banks"])

    # -- entry ----------------------------------------------------------------------
    def run(self, program: Program, inputs, functional: bool = True
            ) -> tuple[list[np.ndarray], RunStats]:
        """Execute ``program`` on ``inputs`` (one array per input tensor, in order).

        ``functional=False`` runs the timing model only: every bounds, alignment and hazard
        check and the same cycle count, but no arithmetic (outputs stay zero); what the
        compiler and the tiling search use.
        """
        return self._execute(program, inputs, functional).finish()

    def run_traced(self, program: Program, inputs
                   ) -> tuple[list[np.ndarray], RunStats, list[np.ndarray]]:
        """``run``, plus the DRAM after it: one array per tensor of ``program`` (in its
        declared shape). Values between layers live in DRAM, so this holds every layer's
        output (``codegen.value_tensors`` says which tensor holds which value)."""
        state = self._execute(program, inputs, True)
        outputs, stats = state.finish()
        dram = [flat.reshape(t.shape) for flat, t in zip(state.dram, program.tensors)]
        return outputs, stats, dram

    def _execute(self, program: Program, inputs, functional: bool) -> "_State":
        if program.accelerator != self.spec.name or program.spec_hash != self.spec.spec_hash:
            raise NpuExecutionError(
                f"program for {program.accelerator} (spec {program.spec_hash[:12]}) cannot run "
                f"on {self.spec.name} (spec {self.spec.spec_hash[:12]})")
        state = _State(self, program, inputs, functional)
        for index, instr in enumerate(program.instructions):
            state.execute(index, instr)
        return state


class _State:
    def __init__(self, sim: Simulator, program: Program, inputs, functional: bool = True):
        self.sim, self.program, self.spec = sim, program, sim.spec
        self.functional = functional
        hw = self.spec.hardware
        self.sram = np.zeros(sim.sram_bytes, dtype=np.uint8)
        self.dram: list[np.ndarray] = []
        in_ids = program.of_kind("input")
        if inputs is None and not functional:
            inputs = [np.zeros(program.tensors[i].shape, program.tensors[i].dtype)
                      for i in in_ids]
        if len(inputs) != len(in_ids):
            raise NpuExecutionError(f"the program takes {len(in_ids)} inputs, "
                                    f"{len(inputs)} given")
        given = dict(zip(in_ids, inputs))

        for i, t in enumerate(program.tensors):
            if t.kind == "input":
                arr = np.asarray(given[i])
                if arr.size == t.size and str(arr.dtype) == t.dtype:
                    arr = arr.reshape(t.shape)  # the same dense bytes (leading 1s dropped)
                if tuple(arr.shape) != t.shape or str(arr.dtype) != t.dtype:
                    raise NpuExecutionError(
                        f"input {t.name}: expected {t.dtype}{list(t.shape)}, got "
                        f"{arr.dtype}{list(arr.shape)}")
                self.dram.append(np.ascontiguousarray(arr).reshape(-1).copy())
            elif t.kind == "constant":
                self.dram.append(program.constant(i).reshape(-1))
            else:
                self.dram.append(np.zeros(t.size, dtype=t.dtype))
        self.stats = RunStats(self.spec.name, clock_mhz=float(hw["clock_mhz"]))
        self.hw = hw
        self.timeline = cost.Timeline(hw)
        # hazard tracking: regions touched since the last SYNC of their engine
        self.dma_writes: list[_Region] = []
        self.dma_reads: list[_Region] = []
        self.compute_writes: list[_Region] = []
        self.compute_reads: list[_Region] = []
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int]] = []
        self.peak = 0

    # -- SRAM access ----------------------------------------------------------------
    def view(self, addr: int, count: int, dtype, write: bool, what: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = count * dtype.itemsize
        if addr == isa.NONE or addr < 0 or addr + nbytes > self.sim.sram_bytes or count <= 0:
            raise SramAccessError(
                f"instruction {self.index} ({self.instr.name}): {what} at SRAM "
                f"0x{addr & 0xFFFFFFFF:x}..+{nbytes} B is outside the "
                f"{self.sim.sram_bytes} B SRAM of {self.spec.name}")
        if addr % dtype.itemsize:
            raise SramAccessError(f"instruction {self.index} ({self.instr.name}): {what} at "
                                  f"SRAM 0x{addr:x} is not aligned to {dtype.itemsize} B")
        (self.writes if write else self.reads).append((addr, addr + nbytes))
        self.stats.sram_high_water = max(self.stats.sram_high_water, addr + nbytes)
        return self.sram[addr:addr + nbytes].view(dtype)

    def tensor(self, addr, shape, dtype, write=False, what="operand"):
        # math.prod: exact (np.prod wraps at 2^63, and a wrapped count passes the bounds check)
        return self.view(addr, math.prod(shape), dtype, write, what).reshape(shape)

    # -- one instruction --------------------------------------------------------------
    def execute(self, index: int, instr: isa.Instruction) -> None:
        self.index, self.instr = index, instr
        self.reads, self.writes = [], []
        self.timeline.issue()
        cls = self.stats.by_class.setdefault(instr.name, ClassStats())
        cls.count += 1
        self.stats.instructions += 1
        if instr.name == "SYNC":
            self._sync(instr.flags)
            return
        handler = getattr(self, "_" + instr.name.lower())
        cycles, macs = handler(instr)
        engine = instr.info.engine
        self._check_hazards(engine)
        self._schedule(engine, cycles)
        cls.cycles += cycles
        cls.macs += macs
        self.stats.macs += macs

    def _sync(self, flags: int) -> None:
        dma, compute = bool(flags & isa.FLAG_SYNC_DMA), bool(flags & isa.FLAG_SYNC_COMPUTE)
        if dma:
            self.dma_writes, self.dma_reads = [], []
        if compute:
            self.compute_writes, self.compute_reads = [], []
        self.stats.sync_times[self.index] = self.timeline.sync(dma, compute)

    def _check_hazards(self, engine: str) -> None:
        me = f"instruction {self.index} ({self.instr.name})"
        reads = [_Region(lo, hi, self.index, self.instr.name) for lo, hi in self.reads]
        writes = [_Region(lo, hi, self.index, self.instr.name) for lo, hi in self.writes]

        def clash(mine, theirs, kind):
            for a in mine:
                for b in theirs:
                    if a.overlaps(b):
                        raise HazardError(
                            f"{me} {kind} SRAM 0x{max(a.lo, b.lo):x} that instruction "
                            f"{b.index} ({b.name}) still uses: no SYNC between them; add "
                            f"SYNC {'dma' if engine == 'compute' else 'compute'} before "
                            f"instruction {self.index}")

        if engine == "compute":
            clash(reads + writes, self.dma_writes, "touches")
            clash(writes, self.dma_reads, "overwrites")
            self.compute_reads += reads
            self.compute_writes += writes
        else:
            clash(writes, self.compute_reads + self.compute_writes, "overwrites")
            clash(reads, self.compute_writes, "reads")
            self.dma_reads += reads
            self.dma_writes += writes

    def _banks(self) -> set[int]:
        size = self.sim.bank_bytes
        banks = set()
        for lo, hi in self.reads + self.writes:
            banks.update(range(lo // size, (hi - 1) // size + 1))
        return banks

    def _schedule(self, engine: str, cycles: int) -> None:
        self.timeline.run(engine, cycles, self._banks())

    def finish(self) -> tuple[list[np.ndarray], RunStats]:
        self.stats.cycles = self.timeline.end
        self.stats.bank_conflict_cycles = self.timeline.conflict_cycles
        # the peak of the MAC mode the program used (mixed modes: the fastest one)
        self.stats.macs_per_cycle = self.peak or self.sim.rows * self.sim.cols
        outs = [self.dram[i].reshape(self.program.tensors[i].shape).copy()
                for i in self.program.of_kind("output")]
        return outs, self.stats

    # -- cycle helpers ----------------------------------------------------------------
    def _mac_mode(self, code: int) -> str:
        """The dtype name of a MAC instruction, checked against the spec's MAC modes."""
        name = str(isa.DTYPES[code])
        rate = self.spec.hardware["macs_per_cycle"].get(name)
        if rate is None:
            raise NpuExecutionError(f"instruction {self.index} ({self.instr.name}): "
                                    f"{self.spec.name} has no {name} MAC mode")
        self.peak = max(self.peak, rate)
        return name

    def _dtype(self, flags: int, allowed=(isa.INT8, isa.FLOAT16)) -> int:
        code = flags & 0x0F
        if code not in allowed:
            raise NpuExecutionError(f"instruction {self.index} ({self.instr.name}): dtype code "
                                    f"{code} is not allowed here")
        return code

    def _store_acc(self, acc_view: np.ndarray, result: np.ndarray, accumulate: bool,
                   code: int) -> None:
        if code == isa.INT8:
            total = result.astype(np.int64) + (acc_view.astype(np.int64) if accumulate else 0)
            if total.min(initial=0) < _ACC_RANGE[0] or total.max(initial=0) > _ACC_RANGE[1]:
                raise NpuExecutionError(f"instruction {self.index} ({self.instr.name}): int32 "
                                        "accumulator overflow")
            acc_view[...] = total.astype(np.int32)
        else:
            acc_view[...] = result + acc_view if accumulate else result

    # -- data movement ------------------------------------------------------------------
    def _box(self, instr):
        f = instr.fields
        dims = f[3:7]
        return f[0], f[1], f[2], dims, f[7:11], f[11:15]

    def _dma(self, instr, load: bool):
        tensor, offset, sram, dims, dstr, sstr = self._box(instr)
        decl = self.program.tensors[tensor]
        dtype = np.dtype(decl.dtype)
        if any(d == 0 for d in dims):
            raise NpuExecutionError(f"instruction {self.index} ({instr.name}): empty box {dims}")
        span_d = offset + sum((d - 1) * s for d, s in zip(dims, dstr)) + 1
        if span_d > decl.size:
            raise NpuExecutionError(
                f"instruction {self.index} ({instr.name}): box {tuple(dims)} at offset {offset} "
                f"reaches element {span_d - 1} of tensor {decl.name} ({decl.size} elements)")
        write_strides = sstr if load else dstr
        if any(d > 1 and s == 0 for d, s in zip(dims, write_strides)):
            raise NpuExecutionError(f"instruction {self.index} ({instr.name}): the destination "
                                    "box overlaps itself (stride 0)")
        span_s = sum((d - 1) * s for d, s in zip(dims, sstr)) + 1
        sram_flat = self.view(sram, span_s, dtype, write=load, what="DMA box")
        item = dtype.itemsize
        sram_box = as_strided(sram_flat, shape=dims, strides=[s * item for s in sstr])
        dram_flat = self.dram[tensor][offset:span_d]
        if not load and decl.kind == "constant":
            raise NpuExecutionError(f"instruction {self.index}: DMA_STORE into constant "
                                    f"tensor {decl.name}")
        dram_box = as_strided(dram_flat, shape=dims, strides=[s * item for s in dstr])
        nbytes = math.prod(dims) * item
        if load:
            if self.functional:
                sram_box[...] = dram_box
            self.stats.dma_bytes_loaded += nbytes
        else:
            if self.functional:
                dram_box[...] = sram_box
            self.stats.dma_bytes_stored += nbytes
        return cost.dma_cycles(self.hw, item, dims, dstr, sstr), 0

    def _dma_load(self, instr):
        return self._dma(instr, True)

    def _dma_store(self, instr):
        return self._dma(instr, False)

    def _fill(self, instr):
        code = self._dtype(instr.flags, tuple(isa.DTYPES))
        dtype = isa.DTYPES[code]
        sram, count, bits = instr.fields[:3]
        raw = np.array([bits], dtype=np.uint32).view(np.uint8)[:dtype.itemsize]
        value = raw.view(dtype)[0]
        target = self.view(sram, count, dtype, True, "fill")
        if self.functional:
            target[...] = value
        return cost.fill_cycles(self.hw, count), 0

    # -- MAC array ----------------------------------------------------------------------
    def _conv(self, instr):
        code = self._dtype(instr.flags)
        inp, w, acc, cin, hin, win, cout, hout, wout, k, s, d = instr.fields[:12]
        (kh, kw), (sh, sw), (dh, dw) = isa.unpair(k), isa.unpair(s), isa.unpair(d)
        self._check_window(hin, win, hout, wout, kh, kw, sh, sw, dh, dw)
        dtype = isa.DTYPES[code]
        x = self.tensor(inp, (cin, hin, win), dtype, what="input tile")
        wt = self.tensor(w, (cout, cin, kh, kw), dtype, what="weights")
        acc_v = self.tensor(acc, (cout, hout, wout), isa.DTYPES[isa.ACC_DTYPE[code]], True,
                            "accumulators")
        reduction = cin * kh * kw
        cycles = cost.conv_cycles(self.hw, self._mac_mode(code), dtype.itemsize, cin, hin, win,
                                  cout, hout, wout, kh, kw,
                                  bool(instr.flags & isa.FLAG_ACCUMULATE))
        if not self.functional:
            return cycles, cout * hout * wout * reduction
        work = np.float32 if code == isa.FLOAT16 else np.float64
        xs, ws = x.astype(work), wt.astype(work)
        result = np.zeros((cout, hout * wout), dtype=work)
        for ky in range(kh):  # one (cout x cin) @ (cin x pixels) product per kernel tap
            for kx in range(kw):
                tap = xs[:, ky * dh:ky * dh + (hout - 1) * sh + 1:sh,
                         kx * dw:kx * dw + (wout - 1) * sw + 1:sw]
                result += ws[:, :, ky, kx] @ tap.reshape(cin, hout * wout)
        result = result.reshape(cout, hout, wout)
        self._store_acc(acc_v, result, bool(instr.flags & isa.FLAG_ACCUMULATE), code)
        return cycles, cout * hout * wout * reduction

    def _dwconv(self, instr):
        code = self._dtype(instr.flags)
        inp, w, acc, c, hin, win, hout, wout, k, s, d = instr.fields[:11]
        (kh, kw), (sh, sw), (dh, dw) = isa.unpair(k), isa.unpair(s), isa.unpair(d)
        self._check_window(hin, win, hout, wout, kh, kw, sh, sw, dh, dw)
        dtype = isa.DTYPES[code]
        x = self.tensor(inp, (c, hin, win), dtype, what="input tile")
        wt = self.tensor(w, (c, kh, kw), dtype, what="weights")
        acc_v = self.tensor(acc, (c, hout, wout), isa.DTYPES[isa.ACC_DTYPE[code]], True,
                            "accumulators")
        cycles = cost.dwconv_cycles(self.hw, self._mac_mode(code), dtype.itemsize, c, hin, win,
                                    hout, wout, kh, kw, bool(instr.flags & isa.FLAG_ACCUMULATE))
        if not self.functional:
            return cycles, c * hout * wout * kh * kw
        work = np.float32 if code == isa.FLOAT16 else np.float64
        xs, ws = x.astype(work), wt.astype(work)
        result = np.zeros((c, hout, wout), dtype=work)
        for ky in range(kh):
            for kx in range(kw):
                result += xs[:, ky * dh:ky * dh + (hout - 1) * sh + 1:sh,
                             kx * dw:kx * dw + (wout - 1) * sw + 1:sw] * ws[:, ky, kx, None, None]
        self._store_acc(acc_v, result, bool(instr.flags & isa.FLAG_ACCUMULATE), code)
        return cycles, c * hout * wout * kh * kw

    def _gemm(self, instr):
        code = self._dtype(instr.flags)
        a, b, acc, m, k, n = instr.fields[:6]
        dtype = isa.DTYPES[code]
        av = self.tensor(a, (m, k), dtype, what="A")
        bv = self.tensor(b, (k, n), dtype, what="B")
        acc_v = self.tensor(acc, (m, n), isa.DTYPES[isa.ACC_DTYPE[code]], True, "accumulators")
        cycles = cost.gemm_cycles(self.hw, self._mac_mode(code), dtype.itemsize, m, k, n,
                                  bool(instr.flags & isa.FLAG_ACCUMULATE))
        if self.functional:
            work = np.float32 if code == isa.FLOAT16 else np.float64
            result = av.astype(work) @ bv.astype(work)
            self._store_acc(acc_v, result, bool(instr.flags & isa.FLAG_ACCUMULATE), code)
        return cycles, m * k * n

    def _check_window(self, hin, win, hout, wout, kh, kw, sh, sw, dh, dw):
        if min(hout, wout, kh, kw, sh, sw, dh, dw) < 1:
            raise NpuExecutionError(f"instruction {self.index} ({self.instr.name}): zero size "
                                    "or stride")
        need_h, need_w = (hout - 1) * sh + (kh - 1) * dh + 1, (wout - 1) * sw + (kw - 1) * dw + 1
        if need_h > hin or need_w > win:
            raise NpuExecutionError(
                f"instruction {self.index} ({self.instr.name}): a {hout}x{wout} output needs a "
                f"{need_h}x{need_w} input tile, the tile is {hin}x{win}")

    # -- vector unit --------------------------------------------------------------------
    def _channel_shape(self, channels, pixels, channel_last):
        return ((pixels, channels), (1, channels)) if channel_last else \
            ((channels, pixels), (channels, 1))

    def _epilogue(self, instr):
        acc, out, channels, pixels, bias, act, lo, hi, residual = instr.fields[:9]
        shape, bshape = self._channel_shape(channels, pixels,
                                            bool(instr.flags & isa.FLAG_CHANNEL_LAST))
        acc_v = self.tensor(acc, shape, np.float32, what="accumulators")
        bias_v = None if bias == isa.NONE else \
            self.tensor(bias, (channels,), np.float32, what="bias").reshape(bshape)
        res_v = None if residual == isa.NONE else \
            self.tensor(residual, shape, np.float16, what="residual")
        out_v = self.tensor(out, shape, np.float16, True, "output")
        if act >= len(isa.ACTIVATION_NAMES):
            raise NpuExecutionError(f"instruction {self.index} (EPILOGUE): unknown activation "
                                    f"{act}")
        if self.functional:
            x = acc_v.astype(np.float32)
            if bias_v is not None:
                x = x + bias_v
            if res_v is not None:
                x = x + res_v.astype(np.float32)
            out_v[...] = activation(x, act, isa.bits_f32(lo), isa.bits_f32(hi)).astype(
                np.float16)
        return cost.epilogue_cycles(self.hw, channels, pixels, bias_v is not None,
                                    res_v is not None), 0

    def _requant(self, instr):
        acc, out, channels, pixels, bias, mult, shift, zp, lo, hi = instr.fields[:10]
        zp, lo, hi = isa.s32(zp), isa.s32(lo), isa.s32(hi)
        if not -128 <= lo <= hi <= 127:
            raise NpuExecutionError(f"instruction {self.index} (REQUANT): clamp [{lo}, {hi}] "
                                    "is not inside [-128, 127]")
        shape, bshape = self._channel_shape(channels, pixels,
                                            bool(instr.flags & isa.FLAG_CHANNEL_LAST))
        acc_v = self.tensor(acc, shape, np.int32, what="accumulators")
        bias_v = None if bias == isa.NONE else \
            self.tensor(bias, (channels,), np.int32, what="bias").reshape(bshape)
        m = self.tensor(mult, (channels,), np.int32, what="multipliers").astype(np.int64)
        sh = self.tensor(shift, (channels,), np.int32, what="shifts").astype(np.int64)
        out_v = self.tensor(out, shape, np.int8, True, "output")
        if self.functional:
            if m.min() < 0 or sh.min() < 0 or sh.max() > 62:
                raise NpuExecutionError(f"instruction {self.index} (REQUANT): multipliers must "
                                        "be non-negative and shifts in [0, 62]")
            v = acc_v.astype(np.int64) + (bias_v if bias_v is not None else 0)
            r = round_half_away(v * m.reshape(bshape), sh.reshape(bshape))
            out_v[...] = np.clip(r + zp, lo, hi)
        return cost.requant_cycles(self.hw, channels, pixels, bias_v is not None), 0

    def _eltwise(self, instr):
        code = self._dtype(instr.flags)
        a, b, out, channels, pixels, op, bcast, shift = instr.fields[:8]
        if op > isa.ELT_MIN or bcast > isa.BCAST_PIXEL:
            raise NpuExecutionError(f"instruction {self.index} (ELTWISE): unknown op {op} or "
                                    f"broadcast {bcast}")
        dtype = isa.DTYPES[code]
        av = self.tensor(a, (channels, pixels), dtype, what="a")
        bshape = [(channels, pixels), (channels, 1), (1, 1), (1, pixels)][bcast]
        bv = self.tensor(b, bshape, dtype, what="b")
        out_v = self.tensor(out, (channels, pixels), dtype, True, "output")
        if self.functional:
            if code == isa.FLOAT16:
                x, y = av.astype(np.float32), bv.astype(np.float32)
            else:
                x, y = av.astype(np.int64), bv.astype(np.int64)
            r = [np.add, np.subtract, np.multiply, np.maximum, np.minimum][op](x, y)
            if code == isa.INT8:
                if op == isa.ELT_MUL:
                    r = round_half_away(r, shift)
                r = np.clip(r, -128, 127)
            out_v[...] = r.astype(dtype)
        return cost.eltwise_cycles(self.hw, dtype.itemsize, channels, pixels, bcast), 0

    def _act(self, instr):
        code = self._dtype(instr.flags)
        inp, out, count, func, lo, hi, lut = instr.fields[:7]
        dtype = isa.DTYPES[code]
        x = self.view(inp, count, dtype, False, "input")
        table = self.view(lut, 256, np.int8, False, "lookup table") if code == isa.INT8 \
            else None
        out_v = self.view(out, count, dtype, True, "output")
        if code == isa.FLOAT16 and func >= len(isa.ACTIVATION_NAMES):
            raise NpuExecutionError(f"instruction {self.index} (ACT): unknown activation {func}")
        if self.functional:
            if table is not None:
                out_v[...] = table[x.astype(np.int64) + 128]
            else:
                out_v[...] = activation(x.astype(np.float32), func, isa.bits_f32(lo),
                                        isa.bits_f32(hi)).astype(np.float16)
        return cost.act_cycles(self.hw, dtype.itemsize, count, table is not None), 0

    def _pool(self, instr):
        code = self._dtype(instr.flags)
        inp, out, c, hin, win, hout, wout, k, s, pad = instr.fields[:10]
        (kh, kw), (sh, sw), (pt, pl) = isa.unpair(k), isa.unpair(s), isa.unpair(pad)
        avg = bool(instr.flags & isa.FLAG_POOL_AVG)
        dtype = isa.DTYPES[code]
        x = self.tensor(inp, (c, hin, win), dtype, what="input tile")
        out_v = self.tensor(out, (c, hout, wout), dtype, True, "output")  # bounds first
        if min(kh, kw, sh, sw) < 1 or pt >= kh or pl >= kw:
            raise NpuExecutionError(f"instruction {self.index} (POOL): window {kh}x{kw}, "
                                    f"stride {sh}x{sw}, padding {pt}x{pl} is not valid "
                                    "(padding must be smaller than the window)")
        hp = max(hin + pt, (hout - 1) * sh + kh)
        wp = max(win + pl, (wout - 1) * sw + kw)
        if (hout - 1) * sh >= hin + pt or (wout - 1) * sw >= win + pl or \
                c * hp * wp > 8 * self.sim.sram_bytes:
            raise NpuExecutionError(f"instruction {self.index} (POOL): windows reach past the "
                                    f"{hin}x{win} tile (window {kh}x{kw}, stride {sh}x{sw}, "
                                    f"output {hout}x{wout})")
        cycles = cost.pool_cycles(self.hw, dtype.itemsize, c, hin, win, hout, wout, kh, kw)
        first_h = [(o * sh - pt, o * sh - pt + kh) for o in (0, hout - 1)]
        first_w = [(o * sw - pl, o * sw - pl + kw) for o in (0, wout - 1)]
        if any(hi <= 0 or lo >= hin for lo, hi in first_h) or \
                any(hi <= 0 or lo >= win for lo, hi in first_w):
            raise NpuExecutionError(f"instruction {self.index} (POOL): a window lies entirely "
                                    "in the padding")
        if not self.functional:
            return cycles, 0
        fill = 0 if avg else -np.inf
        padded = np.full((c, hp, wp), fill, dtype=np.float64)
        padded[:, pt:pt + hin, pl:pl + win] = x
        inside = np.zeros((hp, wp), dtype=np.int64)
        inside[pt:pt + hin, pl:pl + win] = 1
        ps, ins = padded.strides, inside.strides
        windows = as_strided(padded, shape=(c, hout, wout, kh, kw),
                             strides=(ps[0], sh * ps[1], sw * ps[2], ps[1], ps[2]))
        counts = as_strided(inside, shape=(hout, wout, kh, kw),
                            strides=(sh * ins[0], sw * ins[1], ins[0], ins[1])).sum((2, 3))
        if counts.min() == 0:
            raise NpuExecutionError(f"instruction {self.index} (POOL): a window lies entirely "
                                    "in the padding")
        if not avg:
            y = windows.max((3, 4))
        else:
            total = windows.sum((3, 4))
            n = np.full(counts.shape, kh * kw) if instr.flags & isa.FLAG_POOL_COUNT_PAD \
                else counts
            if code == isa.INT8:
                t = total.astype(np.int64)
                mag = (2 * np.abs(t) + n) // (2 * n)
                y = np.where(t < 0, -mag, mag)
            else:
                y = (total.astype(np.float32) / n.astype(np.float32))
        out_v[...] = y.astype(dtype)
        return cycles, 0
