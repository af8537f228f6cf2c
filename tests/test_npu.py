"""The NPU: instruction semantics (bit-exact int8), cycle model, program format, runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_cruise.npu import Program, ProgramBuilder, Simulator
from tvm_cruise.npu import isa
from tvm_cruise.npu.disasm import disassemble
from tvm_cruise.npu.program import (HEADER_BYTES, MAX_TENSOR_BYTES, TENSOR_BYTES,
                                         TensorDecl)
from tvm_cruise.errors import (HazardError, NpuExecutionError, NpuProgramError,
                               SramAccessError)
from tvm_cruise.targets import accelerators

import npu_reference as ref

NPU, LITE = accelerators()["cruise-npu"], accelerators()["cruise-npu-lite"]
RNG = np.random.default_rng(1234)


def i8(shape, lo=-128, hi=128):
    return RNG.integers(lo, hi, shape).astype(np.int8)


def run_op(spec, inputs, outputs, emit):
    """Load ``inputs`` {name: (array, addr)}, emit the op, store ``outputs``
    {name: (dtype, shape, addr)}; returns ({name: array}, stats)."""
    b = ProgramBuilder(spec)
    ids = {}
    for name, (array, addr) in inputs.items():
        ids[name] = b.input(name, array.dtype, array.shape)
        b.dma_load(ids[name], addr, array.shape)
    b.sync(dma=True)
    emit(b)
    b.sync(compute=True)
    for name, (dtype, shape, addr) in outputs.items():
        ids[name] = b.output(name, dtype, shape)
        b.dma_store(ids[name], addr, shape)
    b.sync(dma=True)
    program = Program.from_bytes(b.build().to_bytes(), spec)
    outs, stats = Simulator(spec).run(program, [a for a, _ in inputs.values()])
    return dict(zip(outputs, outs)), stats


# -- int8, bit-exact against the independent reference -------------------------------------
CONV_CASES = [  # cin, cout, hin, win, k, stride, dilation (shapes that divide nothing)
    (3, 32, 17, 33, 3, 1, 1),
    (5, 7, 9, 11, 3, 2, 1),
    (16, 33, 12, 10, 1, 1, 1),
    (8, 5, 15, 15, 5, 2, 2),
    (40, 17, 7, 9, 3, 1, 2),
]


@pytest.mark.parametrize("spec", [NPU, LITE], ids=["npu", "lite"])
@pytest.mark.parametrize("cin, cout, hin, win, k, s, d", CONV_CASES)
def test_conv_int8_bit_exact(spec, cin, cout, hin, win, k, s, d):
    x, w = i8((cin, hin, win)), i8((cout, cin, k, k))
    expect = ref.conv(x, w, (s, s), (d, d))
    hout, wout = expect.shape[1:]
    acc = 0x8000 if spec is LITE else 0x40000
    outs, stats = run_op(spec, {"x": (x, 0), "w": (w, 0x4000 if spec is LITE else 0x20000)},
                         {"acc": ("int32", expect.shape, acc)},
                         lambda b: b.conv(0, 0x4000 if spec is LITE else 0x20000, acc, cin, hin,
                                          win, cout, hout, wout, (k, k), (s, s), (d, d),
                                          dtype="int8"))
    np.testing.assert_array_equal(outs["acc"], expect)
    assert stats.macs == cout * hout * wout * cin * k * k


def test_conv_accumulate_over_channel_blocks():
    """Two CONVs over input-channel halves, the second accumulating, equal one big one."""
    x, w = i8((24, 10, 10)), i8((9, 24, 3, 3))
    expect = ref.conv(x, w)

    def emit(b):
        b.conv(0x0000, 0x8000, 0x10000, 12, 10, 10, 9, 8, 8, (3, 3), dtype="int8")
        b.conv(0x0000 + 12 * 100, 0x9000, 0x10000, 12, 10, 10, 9, 8, 8, (3, 3), dtype="int8",
               accumulate=True)

    w_lo, w_hi = np.ascontiguousarray(w[:, :12]), np.ascontiguousarray(w[:, 12:])
    outs, _ = run_op(NPU, {"x": (x, 0), "wl": (w_lo, 0x8000), "wh": (w_hi, 0x9000)},
                     {"acc": ("int32", expect.shape, 0x10000)}, emit)
    np.testing.assert_array_equal(outs["acc"], expect)


@pytest.mark.parametrize("c, hin, win, k, s, d", [(32, 14, 14, 3, 1, 1), (7, 11, 9, 3, 2, 1),
                                                  (33, 8, 8, 5, 1, 1), (5, 13, 13, 3, 1, 3)])
def test_dwconv_int8_bit_exact(c, hin, win, k, s, d):
    x, w = i8((c, hin, win)), i8((c, k, k))
    expect = ref.dwconv(x, w, (s, s), (d, d))
    hout, wout = expect.shape[1:]
    outs, stats = run_op(NPU, {"x": (x, 0), "w": (w, 0x10000)},
                         {"acc": ("int32", expect.shape, 0x20000)},
                         lambda b: b.dwconv(0, 0x10000, 0x20000, c, hin, win, hout, wout,
                                            (k, k), (s, s), (d, d), dtype="int8"))
    np.testing.assert_array_equal(outs["acc"], expect)
    assert stats.macs == c * hout * wout * k * k


@pytest.mark.parametrize("m, k, n", [(1, 512, 1000), (5, 37, 19), (64, 64, 64), (7, 1, 3)])
def test_gemm_int8_bit_exact(m, k, n):
    a, bm = i8((m, k)), i8((k, n))
    outs, _ = run_op(NPU, {"a": (a, 0), "b": (bm, 0x20000)}, {"acc": ("int32", (m, n), 0x100000)},
                     lambda b: b.gemm(0, 0x20000, 0x100000, m, k, n, dtype="int8"))
    np.testing.assert_array_equal(outs["acc"], ref.gemm(a, bm))


@pytest.mark.parametrize("channel_last", [False, True])
def test_requantize_bit_exact(channel_last):
    channels, pixels = 6, 50
    acc = RNG.integers(-(1 << 24), 1 << 24, (channels, pixels)).astype(np.int32)
    acc[0, :4] = [3, -3, 5, -5]  # exact halves: 1.5, -1.5, 2.5, -2.5 with mult 1, shift 1
    bias = RNG.integers(-1000, 1000, channels).astype(np.int32)
    bias[0] = 0
    mult = RNG.integers(1 << 20, 1 << 30, channels).astype(np.int32)
    mult[0] = 1
    shift = RNG.integers(20, 40, channels).astype(np.int32)
    shift[0] = 1
    zp, lo, hi = -3, -100, 120
    expect = ref.requant(acc, bias, mult, shift, zp, lo, hi)
    assert list(expect[0, :4]) == [2 - 3, -2 - 3, 3 - 3, -3 - 3]  # half away from zero
    stored = acc.T.copy() if channel_last else acc
    shape = stored.shape
    outs, _ = run_op(NPU, {"acc": (stored, 0), "bias": (bias, 0x8000), "m": (mult, 0x8100),
                           "s": (shift, 0x8200)}, {"out": ("int8", shape, 0x9000)},
                     lambda b: b.requant(0, 0x9000, channels, pixels, 0x8100, 0x8200,
                                         bias=0x8000, zp=zp, lo=lo, hi=hi,
                                         channel_last=channel_last))
    got = outs["out"].T if channel_last else outs["out"]
    np.testing.assert_array_equal(got, expect)


def test_lut_activation_int8_bit_exact():
    x = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    lut = np.array([round(127 * math.tanh(v / 32)) for v in range(-128, 128)], dtype=np.int8)
    outs, _ = run_op(NPU, {"x": (x, 0), "lut": (lut, 0x1000)}, {"y": ("int8", x.shape, 0x2000)},
                     lambda b: b.act(0, 0x2000, x.size, "int8", lut=0x1000))
    np.testing.assert_array_equal(outs["y"], lut[x.astype(np.int64) + 128])


@pytest.mark.parametrize("kind, k, s, pad, count_pad", [
    ("max", 3, 2, 1, False), ("avg", 3, 1, 1, False), ("avg", 3, 1, 1, True),
    ("avg", 2, 2, 0, False), ("max", 7, 7, 0, False)])
def test_pool_int8_bit_exact(kind, k, s, pad, count_pad):
    x = i8((5, 14, 14))
    expect, hout, wout = ref.pool_int8(x, (k, k), (s, s), (pad, pad), kind, count_pad)
    outs, _ = run_op(NPU, {"x": (x, 0)}, {"y": ("int8", expect.shape, 0x4000)},
                     lambda b: b.pool(0, 0x4000, 5, 14, 14, hout, wout, (k, k), (s, s),
                                      (pad, pad), kind, "int8", count_pad))
    np.testing.assert_array_equal(outs["y"], expect)


@pytest.mark.parametrize("op", ["add", "subtract", "multiply", "maximum", "minimum"])
@pytest.mark.parametrize("broadcast", ["none", "channel", "scalar", "pixel"])
def test_eltwise_int8_bit_exact(op, broadcast):
    a = i8((6, 40))
    b = {"none": i8((6, 40)), "channel": i8((6, 1)), "scalar": i8((1, 1)),
         "pixel": i8((1, 40))}[broadcast]
    shift = 5 if op == "multiply" else 0
    outs, _ = run_op(NPU, {"a": (a, 0), "b": (b, 0x1000)}, {"y": ("int8", a.shape, 0x2000)},
                     lambda bl: bl.eltwise(0, 0x1000, 0x2000, 6, 40, op, "int8", broadcast,
                                           shift))
    np.testing.assert_array_equal(outs["y"], ref.eltwise_int8(a, b, op, shift))


# -- fp16 within stated bounds -----------------------------------------------------------
FP16_ULP = 2.0 ** -11  # relative rounding of one fp16 result


def test_conv_fp16_epilogue_within_fp16_rounding():
    x = RNG.standard_normal((19, 13, 21)).astype(np.float16)
    w = (RNG.standard_normal((24, 19, 3, 3)) * 0.2).astype(np.float16)
    bias = RNG.standard_normal(24).astype(np.float32)
    exact = ref.conv(x.astype(np.float64) * 0, w) * 0  # shape only
    hout, wout = exact.shape[1:]
    outs, _ = run_op(NPU, {"x": (x, 0), "w": (w, 0x10000), "bias": (bias, 0x18000)},
                     {"y": ("float16", (24, hout, wout), 0x40000)},
                     lambda b: (b.conv(0, 0x10000, 0x20000, 19, 13, 21, 24, hout, wout, (3, 3)),
                                b.epilogue(0x20000, 0x40000, 24, hout * wout, bias=0x18000,
                                           act="relu")))
    xs, ws = x.astype(np.float64), w.astype(np.float64)
    acc = np.zeros((24, hout, wout))
    for ky in range(3):
        for kx in range(3):
            acc += np.einsum("chw,oc->ohw", xs[:, ky:ky + hout, kx:kx + wout], ws[:, :, ky, kx])
    expect = np.maximum(acc + bias[:, None, None], 0)
    err = np.abs(outs["y"].astype(np.float64) - expect)
    assert (err <= FP16_ULP * np.abs(expect) + 1e-5 * np.abs(expect).max()).all()


@pytest.mark.parametrize("act, fn", [
    ("relu", lambda v: np.maximum(v, 0)), ("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
    ("tanh", np.tanh), ("silu", lambda v: v / (1 + np.exp(-v))), ("gelu", ref.gelu),
    ("clip", lambda v: np.clip(v, 0, 6))])
def test_fp16_activations_within_bounds(act, fn):
    x = (RNG.standard_normal((8, 64)) * 3).astype(np.float16)
    outs, _ = run_op(NPU, {"x": (x, 0)}, {"y": ("float16", x.shape, 0x1000)},
                     lambda b: b.act(0, 0x1000, x.size, "float16", act, 0.0, 6.0))
    expect = fn(x.astype(np.float64))
    assert np.abs(outs["y"] - expect).max() <= 2 * FP16_ULP * max(np.abs(expect).max(), 1)


# -- cycle model: programs whose cycle count is derived by hand --------------------------------
def _program(spec, build):
    b = ProgramBuilder(spec)
    build(b)
    return b.build()


def test_cycles_single_dma():
    # issue 4, then setup 64 + 4096 B / 64 B per cycle = 64 + 64
    prog = _program(NPU, lambda b: (b.dma_load(b.input("x", "int8", (4096,)), 0, (4096,)),
                                    b.sync(dma=True)))
    _, stats = Simulator(NPU).run(prog, [i8((4096,))])
    assert stats.cycles == 4 + 64 + 64
    assert stats.dma_bytes_loaded == 4096 and stats.sram_high_water == 4096


def test_cycles_conv_packs_the_reduction():
    """A 3-channel 3x3 stem: K = 27 fills one 32-row pass; 8x8 pixels, 16 of 32 columns."""
    prog = _program(NPU, lambda b: b.conv(0, 0x1000, 0x2000, 3, 10, 10, 16, 8, 8, (3, 3),
                                          dtype="int8"))
    _, stats = Simulator(NPU).run(prog, [])
    # ceil(27/32)=1 row block * ceil(16/32)=1 column block = 1 pass: load its 27 weight rows
    # (1 row per cycle) + 64 pixels * rate 1 (int8); SRAM reads 3*10*10 + 16*27 = 732 B
    # need ceil(732/256) = 3 cycles, fewer than the 91; + pipeline 32; issue 4 before
    assert stats.cycles == 4 + (27 + 64) + 32
    assert stats.macs == 16 * 64 * 27
    assert stats.utilization == pytest.approx(16 * 64 * 27 / (127 * 1024))
    prog16 = _program(NPU, lambda b: b.conv(0, 0x1000, 0x2000, 3, 10, 10, 16, 8, 8, (3, 3)))
    stats16 = Simulator(NPU).run(prog16, [])[1]
    assert stats16.cycles == 4 + (27 + 2 * 64) + 32  # fp16: half rate
    assert stats16.macs_per_cycle == 512  # utilization against the fp16 peak
    assert stats16.utilization == pytest.approx(16 * 64 * 27 / (191 * 512))


# CONV int8, 16 -> 32 channels, 3x3, 18x18 -> 16x16 on cruise-npu: K = 144 is 5 row blocks
# (4 x 32 + 16) of 1 column block: 5 passes * 256 pixels * rate 1 = 1280, weight rows
# loaded 4 * 32 + 16 = 144, pipeline 32. SRAM reads: input 16*18*18 = 5184 B, weights
# 32*144 = 4608 B, partial sums of passes 2..5 read back 4 * 32 * 256 * 4 = 131072 B:
# ceil(140864 / 256) = 551 cycles, under the array's 1424.
CONV_3X3 = 1280 + 144 + 32


def test_cycles_double_buffering_overlaps_dma_and_compute():
    """load A; sync; [conv on A || load B]; sync; conv on B: the second load hides."""
    def build(b, overlap):
        t = b.input("x", "int8", (2, 16, 18, 18))
        b.dma_load(t, 0x00000, (16, 18, 18), offset=0)                 # 5184 B: 64 + 81
        b.sync(dma=True)
        if overlap:
            b.dma_load(t, 0x40000, (16, 18, 18), offset=16 * 18 * 18)  # another bank
            b.conv(0x00000, 0x80000, 0xC0000, 16, 18, 18, 32, 16, 16, (3, 3), dtype="int8")
        else:
            b.conv(0x00000, 0x80000, 0xC0000, 16, 18, 18, 32, 16, 16, (3, 3), dtype="int8")
            b.sync(compute=True)
            b.dma_load(t, 0x40000, (16, 18, 18), offset=16 * 18 * 18)
        b.sync(dma=True, compute=True)
        b.conv(0x40000, 0x80000, 0xD0000, 16, 18, 18, 32, 16, 16, (3, 3), dtype="int8")

    x = i8((2, 16, 18, 18))
    conv = CONV_3X3
    # one contiguous run of 5184 B: 81 bursts of 64 B at 64 B per cycle, + setup 64
    dma = 64 + math.ceil(16 * 18 * 18 / 64)
    _, par = Simulator(NPU).run(_program(NPU, lambda b: build(b, True)), [x])
    _, ser = Simulator(NPU).run(_program(NPU, lambda b: build(b, False)), [x])
    # overlapped: load(4..149) | 2nd load and conv from 149 (issued at 12/16)
    assert par.cycles == 4 + dma + conv + conv
    assert ser.cycles == 4 + dma + conv + dma + conv
    assert par.bank_conflict_cycles == 0


def test_cycles_bank_conflict_stalls():
    """A DMA into the bank the running conv reads waits for it (single-ported banks)."""
    def build(b):
        t = b.input("x", "int8", (4096,))
        b.conv(0x00000, 0x80000, 0xC0000, 16, 18, 18, 32, 16, 16, (3, 3), dtype="int8")
        b.dma_load(t, 0x10000, (4096,))  # bank 0 (128 KiB banks), the conv's input bank
        b.sync(dma=True, compute=True)

    _, stats = Simulator(NPU).run(_program(NPU, build), [i8((4096,))])
    conv = CONV_3X3
    assert stats.bank_conflict_cycles == 4 + conv - 8
    assert stats.cycles == 4 + conv + 64 + 64


@pytest.mark.parametrize("acc, setup, per_burst", [("cruise-npu", 64, 1),
                                                   ("cruise-npu-lite", 48, 2)])
def test_cycles_strided_dma_pays_whole_bursts_per_run(acc, setup, per_burst):
    """64 rows of 16 B out of 256-B rows: 64 contiguous runs, each shorter than a burst.
    cruise-npu: 64-B bursts at 64 B/cycle (1 cycle a burst); lite: 32-B bursts at
    16 B/cycle (2 cycles a burst). The same 1024 B dense is one run of whole bursts."""
    spec = accelerators()[acc]
    burst = spec.hardware["dram_burst_bytes"]

    def build(dense):
        def emit(b):
            t = b.input("x", "int8", (64, 256))
            if dense:
                b.dma_load(t, 0, (1024,), (1,), (1,))
            else:
                b.dma_load(t, 0, (64, 16), (256, 1), (16, 1))
            b.sync(dma=True)
        return _program(spec, emit)

    x = i8((64, 256))
    strided = Simulator(spec).run(build(False), [x])[1]
    dense = Simulator(spec).run(build(True), [x])[1]
    assert strided.cycles == 4 + setup + 64 * 1 * per_burst          # 64 runs, 1 burst each
    assert dense.cycles == 4 + setup + (1024 // burst) * per_burst   # 1 run
    assert strided.dma_bytes_loaded == dense.dma_bytes_loaded == 1024


def test_cycles_epilogue_bounded_by_sram_reads():
    """EPILOGUE of 64 channels x 256 pixels on cruise-npu: 16384 / 64 lanes = 256 cycles.
    Reading the fp32 accumulators alone is 16384 * 4 B / 256 B per cycle = 256 cycles too;
    a fp32 bias adds 64 * 4 B: ceil(65792 / 256) = 257; a fp16 residual too
    (+ 16384 * 2 B): ceil(98560 / 256) = 385. The SRAM, not the lanes, bounds them."""
    def build(residual):
        return _program(NPU, lambda b: b.epilogue(0, 0x20000, 64, 256, bias=0x30000,
                                                  residual=0x40000 if residual else None))

    assert Simulator(NPU).run(build(False), [])[1].cycles == 4 + 257
    assert Simulator(NPU).run(build(True), [])[1].cycles == 4 + 385
    plain = _program(NPU, lambda b: b.epilogue(0, 0x20000, 64, 256))
    assert Simulator(NPU).run(plain, [])[1].cycles == 4 + 256


def test_cycles_gemm_vector_is_weight_load_bound():
    """A matrix-vector product (m = 1) on a weight-stationary array: int8, k = 64, n = 32
    on cruise-npu is 2 passes of 1 row each (2 cycles) after loading 64 weight rows; SRAM
    reads (64 + 64*32 B + one pass of 32 partial sums * 4 B = 2240 B) take 9 cycles."""
    prog = _program(NPU, lambda b: b.gemm(0, 0x1000, 0x2000, 1, 64, 32, dtype="int8"))
    stats = Simulator(NPU).run(prog, [])[1]
    assert stats.cycles == 4 + (2 + 64) + 32
    assert stats.utilization == pytest.approx(64 * 32 / (102 * 1024))


# -- refusals ----------------------------------------------------------------------------------
def _valid_program(spec=NPU):
    b = ProgramBuilder(spec)
    x = b.input("x", "float16", (4, 8))
    y = b.output("y", "float16", (4, 8))
    b.constant("w", np.ones((8, 8), np.float16))
    b.dma_load(x, 0, (4, 8))
    b.sync(dma=True)
    b.act(0, 0x100, 32, "float16", "relu")
    b.sync(compute=True)
    b.dma_store(y, 0x100, (4, 8))
    b.sync(dma=True)
    return b.build()


def test_program_round_trip_and_determinism():
    a, b = _valid_program().to_bytes(), _valid_program().to_bytes()
    assert a == b
    prog = Program.from_bytes(a, NPU)
    assert prog.to_bytes() == a
    x = RNG.standard_normal((4, 8)).astype(np.float16)
    (y,), _ = Simulator(NPU).run(prog, [x])
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    text = disassemble(prog)
    assert "ACT       inp=0x0 out=0x100 count=32 func=relu" in text
    assert ".tensor 2 constant w" in text


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:100], "truncated"),
    (lambda d: d + b"\0", "oversized"),
    (lambda d: b"NOTANNPU" + d[8:], "not a Cruise NPU program"),
    (lambda d: d[:8] + (2).to_bytes(2, "little") + d[10:], "program format 2.0"),
    (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], "corrupt \\(content hash mismatch\\)"),
])
def test_damaged_programs_are_refused(mutate, message):
    data = _valid_program().to_bytes()
    with pytest.raises(NpuProgramError, match=message):
        Program.from_bytes(mutate(data), NPU)


def test_foreign_programs_are_refused():
    data = _valid_program(LITE).to_bytes()
    with pytest.raises(NpuProgramError, match="built for accelerator 'cruise-npu-lite', refused "
                                              "by 'cruise-npu'"):
        Program.from_bytes(data, NPU)
    other = type(LITE)(**{**LITE.__dict__, "max_rank": 3})
    with pytest.raises(NpuProgramError, match="another version of the cruise-npu-lite spec"):
        Program.from_bytes(data, other)
    with pytest.raises(NpuExecutionError, match="cannot run on cruise-npu"):
        Simulator(NPU).run(Program.from_bytes(data, LITE), [np.zeros((4, 8), np.float16)])


def test_bad_instructions_are_refused_at_parse():
    prog = _valid_program()
    prog.instructions.append(isa.Instruction(0x77))
    with pytest.raises(NpuProgramError, match="instruction 6 has unknown opcode 0x77"):
        Program.from_bytes(prog.to_bytes(), NPU)
    prog = _valid_program()
    prog.instructions.insert(0, isa.make("DMA_LOAD", tensor=9, d0=1, d1=1, d2=1, d3=1))
    with pytest.raises(NpuProgramError, match="names tensor 9 of 3"):
        Program.from_bytes(prog.to_bytes(), NPU)


def test_sram_overflow_and_misalignment_name_the_instruction():
    b = ProgramBuilder(LITE)
    b.act(0, LITE.hardware["sram_bytes"] - 16, 32, "float16", "relu")
    with pytest.raises(SramAccessError, match="instruction 0 \\(ACT\\): output at SRAM "
                                              "0x3fff0..\\+64 B is outside the 262144 B SRAM"):
        Simulator(LITE).run(b.build(), [])
    b = ProgramBuilder(LITE)
    b.act(1, 0x100, 8, "float16", "relu")
    with pytest.raises(SramAccessError, match="not aligned to 2 B"):
        Simulator(LITE).run(b.build(), [])


def test_missing_sync_is_a_hazard():
    b = ProgramBuilder(NPU)
    x = b.input("x", "float16", (32,))
    b.dma_load(x, 0, (32,))
    b.act(0, 0x100, 32, "float16", "relu")  # reads what the DMA is still writing
    with pytest.raises(HazardError, match="instruction 1 \\(ACT\\) touches SRAM 0x0 that "
                                          "instruction 0 \\(DMA_LOAD\\) still uses"):
        Simulator(NPU).run(b.build(), [np.zeros(32, np.float16)])
    b = ProgramBuilder(NPU)
    y = b.output("y", "float16", (32,))
    b.act(0, 0x100, 32, "float16", "relu")
    b.dma_store(y, 0x100, (32,))  # stores what the ACT is still computing
    with pytest.raises(HazardError, match="reads SRAM 0x100"):
        Simulator(NPU).run(b.build(), [])


# -- fuzzing the parser and the simulator ----------------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data):
    with pytest.raises(NpuProgramError):
        Program.from_bytes(data, NPU)


# Where the header keeps the content hash (docs/npu_isa.md, "Program format"): magic 8,
# version 2+2, reserved 4, accelerator name 32, spec hash 32, then the hash of the body.
HASH_AT = slice(80, 112)
FUZZ_EXAMPLES = 300
# u32 values that sit on the reader's and the simulator's limits
EDGE_WORDS = [0, 1, 2, 3, 0x40, 0xFF, 0x100, 0xFFFF, 1 << 16, 1 << 20, (1 << 20) + 1, 1 << 24,
              (1 << 30) - 1, 1 << 30, (1 << 30) + 1, 1 << 31, 0xFFFFFFFE, 0xFFFFFFFF]


def _reseal(raw: bytearray) -> None:
    import hashlib

    raw[HASH_AT] = hashlib.sha256(bytes(raw[HEADER_BYTES:])).digest()


def test_fuzz_resealing_matches_the_format():
    """The fuzzer's idea of where the content hash sits is the reader's: a resealed
    program parses, and one sealed a byte off is refused."""
    raw = bytearray(_valid_program().to_bytes())
    original = bytes(raw)
    _reseal(raw)
    assert bytes(raw) == original
    raw[-1] ^= 0xFF
    with pytest.raises(NpuProgramError, match="content hash mismatch"):
        Program.from_bytes(bytes(raw), NPU)
    _reseal(raw)
    assert Program.from_bytes(bytes(raw), NPU).constants[-1] == original[-1] ^ 0xFF


def _fuzz_seed():
    """A valid program that uses every instruction (int8 and fp16 paths), so mutated
    fields reach every handler of the simulator."""
    b = ProgramBuilder(NPU)
    x = b.input("x", "int8", (4, 6, 6))
    h = b.input("h", "float16", (8, 16))
    w = b.constant("w", (np.arange(288) % 5 - 2).astype(np.int8).reshape(8, 4, 3, 3))
    q = b.constant("q", np.array([[7] * 8, [1 << 20] * 8, [20] * 8], np.int32))
    lut = b.constant("lut", (np.arange(256) // 2 - 64).astype(np.int8))
    g = b.constant("g", np.full((16, 8), 0.25, np.float16))
    y = b.output("y", "int8", (8, 2, 2))
    z = b.output("z", "float16", (8, 8))
    d = b.output("d", "float32", (8, 2, 2))
    for tensor, addr, dims in [(x, 0x0, (4, 6, 6)), (w, 0x1000, (8, 4, 3, 3)),
                               (q, 0x2000, (3, 8)), (lut, 0x3000, (256,)),
                               (h, 0x4000, (8, 16)), (g, 0x4400, (16, 8))]:
        b.dma_load(tensor, addr, dims)
    b.sync(dma=True)
    b.fill(0x5000, 8, "float32", 1.0)
    b.conv(0x0, 0x1000, 0x6000, 4, 6, 6, 8, 4, 4, (3, 3), dtype="int8")
    b.requant(0x6000, 0x7000, 8, 16, 0x2020, 0x2040, bias=0x2000, lo=-100, hi=100)
    b.eltwise(0x7000, 0x7000, 0x7100, 8, 16, "multiply", "int8", "none", 3)
    b.act(0x7100, 0x7200, 128, "int8", lut=0x3000)
    b.pool(0x7200, 0x7300, 8, 4, 4, 2, 2, (2, 2), (2, 2), kind="max", dtype="int8")
    b.gemm(0x4000, 0x4400, 0x8000, 8, 16, 8)
    b.epilogue(0x8000, 0x8200, 8, 8, bias=0x5000, act="silu", residual=0x4000)
    b.dwconv(0x4000, 0x4400, 0x8400, 8, 4, 4, 2, 2, (3, 3))
    b.pool(0x8200, 0x8300, 2, 4, 8, 4, 8, (3, 3), (1, 1), (1, 1), kind="avg")
    b.sync(compute=True)
    b.dma_store(y, 0x7300, (8, 2, 2))
    b.dma_store(z, 0x8200, (8, 8))
    b.dma_store(d, 0x8400, (8, 2, 2))
    b.sync(dma=True)
    return b.build().to_bytes()


FUZZ_SEED = _fuzz_seed()
_SEED = Program.from_bytes(FUZZ_SEED, NPU)
FUZZ_OPCODE_AT = [HEADER_BYTES + len(_SEED.tensors) * TENSOR_BYTES + i * isa.INSTR_BYTES
                  for i in range(len(_SEED.instructions))]


def _mutant(data) -> bytearray:
    """The seed program with 1 to 6 bytes, aligned u32 words or opcodes overwritten, mostly
    in the body (tensor table, instructions, constants: what the reader parses after the
    hash), sometimes truncated, then resealed with a valid content hash."""
    raw = bytearray(FUZZ_SEED)
    for _ in range(data.draw(st.integers(1, 6), label="mutations")):
        how = data.draw(st.sampled_from(["byte", "word", "word", "opcode"]), label="how")
        if how == "opcode":
            pos = data.draw(st.sampled_from(FUZZ_OPCODE_AT), label="instruction")
            raw[pos] = data.draw(st.sampled_from(sorted(isa.OPS)), label="opcode")
            continue
        lo = data.draw(st.sampled_from([HEADER_BYTES] * 7 + [0]), label="from")
        # (modulo: hypothesis favours the ends of a range, here the first tensor's kind)
        pos = lo + data.draw(st.integers(0, 1 << 20), label="at") % (len(raw) - lo)
        if how == "word":
            pos -= pos % 4
            word = data.draw(st.sampled_from(EDGE_WORDS) | st.integers(0, 0xFFFFFFFF),
                             label="word")
            raw[pos:pos + 4] = word.to_bytes(4, "little")
        else:
            raw[pos] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.sampled_from([False] * 15 + [True]), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw)), label="length")]
    if len(raw) >= HEADER_BYTES:
        _reseal(raw)
    return raw


def test_fuzz_seed_runs():
    prog = Program.from_bytes(FUZZ_SEED, NPU)
    assert len(prog.tensors) == 9 and len(prog.instructions) == 22
    assert all(FUZZ_SEED[at] == i.opcode for at, i in zip(FUZZ_OPCODE_AT, prog.instructions))
    assert {i.name for i in prog.instructions} == {op.name for op in isa.OPS.values()}
    x = (np.arange(144) % 9 - 4).astype(np.int8).reshape(4, 6, 6)
    (y, z, d), stats = Simulator(NPU).run(prog, [x, np.ones((8, 16), np.float16)])
    assert stats.macs == 8 * 16 * 36 + 8 * 8 * 16 + 8 * 4 * 9
    assert y.shape == (8, 2, 2) and y.max() > 0
    np.testing.assert_allclose(z, 6 / (1 + np.exp(-6.0)), rtol=1e-3)  # silu(4 + 1 + 1)
    np.testing.assert_array_equal(d, np.full((8, 2, 2), 2.25, np.float32))


def test_fuzz_mutated_programs_fail_cleanly():
    """Mutate the seed program, reseal its content hash so the reader gets past the
    checksum, and run it: a clean tvm-cruise error or a run, never another exception.
    Most mutants must parse and reach the simulator, or the fuzzing tests nothing."""
    from collections import Counter

    outcomes = Counter()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def fuzz(data):
        raw = _mutant(data)
        try:
            prog = Program.from_bytes(bytes(raw), NPU)
        except NpuProgramError:
            outcomes["refused by the reader"] += 1
            return
        if sum(t.nbytes for t in prog.tensors) > 64 << 20:
            outcomes["parsed, too large to simulate here"] += 1  # legal up to the DRAM limit
            return
        inputs = [(np.arange(t.size) % 7 - 3).astype(t.dtype).reshape(t.shape)
                  for t in prog.inputs]
        try:
            with np.errstate(all="ignore"):  # mutated fp16 data: inf and NaN are legitimate
                Simulator(NPU).run(prog, inputs)
        except (NpuProgramError, NpuExecutionError) as err:
            assert str(err), "an error without a message"
            outcomes["refused by the simulator"] += 1
        else:
            outcomes["ran"] += 1

    fuzz()
    total = sum(outcomes.values())
    simulated = outcomes["refused by the simulator"] + outcomes["ran"]
    # about half reach the simulator (300 examples: 43-56% over several runs); none would
    # if the resealing missed the content hash
    assert total >= FUZZ_EXAMPLES // 2, outcomes
    assert simulated >= 0.25 * total, outcomes
    assert outcomes["ran"] >= 0.05 * total, outcomes
    assert outcomes["refused by the simulator"] >= 0.05 * total, outcomes


def test_oversized_tensors_are_refused_by_the_reader():
    """A declared tensor over 1 GiB (docs/npu_isa.md) is refused before the simulator
    allocates it (2^30 x 2^30 x 8 once wrapped around to a negative size in int64), and so
    are tensors over 4 GiB together."""
    def with_tensors(*decls):
        prog = _valid_program()
        prog.tensors[1:2] = decls
        return prog.to_bytes()

    huge = with_tensors(TensorDecl("y", "output", "float16", (1 << 30, 1 << 30, 8)))
    with pytest.raises(NpuProgramError, match="tensor 1 \\(y\\) declares float16\\[1073741824, "
                                              "1073741824, 8\\], 18446744073709551616 B: over "
                                              "the limit of 1073741824 B \\(1 GiB\\)"):
        Program.from_bytes(huge, NPU)
    over = with_tensors(TensorDecl("y", "output", "float16", ((1 << 29) + 1, 1)))
    with pytest.raises(NpuProgramError, match="tensor 1 \\(y\\) declares float16\\[536870913, "
                                              "1\\], 1073741826 B: over the limit"):
        Program.from_bytes(over, NPU)
    gib = TensorDecl("y", "output", "float16", (1 << 29, 1))  # exactly 1 GiB: legal
    assert Program.from_bytes(with_tensors(gib), NPU).outputs[0].nbytes == MAX_TENSOR_BYTES
    four = with_tensors(gib, *[TensorDecl(f"s{i}", "scratch", "int8", (1 << 30,))
                               for i in range(3)])
    with pytest.raises(NpuProgramError, match="tensors 0..4 declare 4294967360 B of DRAM, "
                                              "over the 4294967296 B \\(4 GiB\\)"):
        Program.from_bytes(four, NPU)


def test_operand_sizes_that_wrap_int64_are_refused():
    """c * h * w of a CONV or POOL tile can exceed 2^64 (three u32 fields); wrapped, it
    once passed the SRAM bounds check as 4 elements and crashed in numpy."""
    c, h, w = 968973220, 49477, 384773
    assert c * h * w == (1 << 64) + 4
    for emit in (lambda b: b.conv(0, 0x1000, 0x2000, c, h, w, 1, 1, 1, (1, 1), dtype="int8"),
                 lambda b: b.pool(0, 0x1000, c, h, w, 1, 1, (1, 1), (1, 1), dtype="int8")):
        b = ProgramBuilder(NPU)
        emit(b)
        with pytest.raises(SramAccessError, match="input tile at SRAM 0x0"):
            Simulator(NPU).run(b.build(), [])


# -- inside TVM's VM -------------------------------------------------------------------------------
def test_program_runs_in_relax_and_survives_export(tmp_path):
    import tvm
    from tvm import relax

    from conftest import run_python
    from tvm_cruise.npu.runtime import call_npu, last_stats

    prog = _valid_program()
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((4, 8), "float16"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit(call_npu(NPU, prog, [xv], relax.TensorType((4, 8), "float16")))
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    ex = tvm.compile(bb.get(), "llvm")
    x = RNG.standard_normal((4, 8)).astype(np.float16)
    y = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert last_stats(NPU).instructions == len(prog.instructions)
    path = tmp_path / "npu.so"
    ex.export_library(str(path))
    np.save(tmp_path / "x.npy", x)
    result = run_python(f"""
        import json, numpy as np, tvm, tvm_cruise
        from tvm import relax
        vm = relax.VirtualMachine(tvm.runtime.load_module({str(path)!r}), tvm.cpu())
        y = vm["main"](tvm.runtime.tensor(np.load({str(tmp_path / 'x.npy')!r}))).numpy()
        print(json.dumps(y.astype(float).tolist()))
    """)
    np.testing.assert_array_equal(np.array(result, dtype=np.float16), y)
