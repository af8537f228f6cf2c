"""The NPU program compiler: int8 chains bit-exact, random graphs vs the LLVM build,
tilings, determinism, the timing-only simulator."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

import tvm_cruise
from tvm_cruise.npu import Simulator
from tvm_cruise.npu.compiler.codegen import compile_graph
from tvm_cruise.npu.compiler.graph import Graph, Layer, Requant, Value
from tvm_cruise.npu.compiler.tiling import Tiling
from tvm_cruise.errors import BuildError
from tvm_cruise.targets import accelerators

import npu_reference as ref
from conftest import FP16_BOUND, rel_err
from graphs import const, graph

NPU, LITE = accelerators()["cruise-npu"], accelerators()["cruise-npu-lite"]


# -- int8: a quantized conv/conv/dense chain, bit-exact against the ISA reference ---------------
def _int8_chain(seed: int):
    rng = np.random.default_rng(seed)
    x = Value("x", (1, 8, 12, 12), "int8")
    w1 = rng.integers(-20, 20, (13, 8, 3, 3)).astype(np.int8)
    b1 = rng.integers(-500, 500, 13).astype(np.int32)
    q1 = Requant(rng.integers(1 << 20, 1 << 22, 13), rng.integers(16, 20, 13), zp=-5,
                 lo=-5, hi=127)  # relu on the quantized scale: clamp at the zero point
    y1 = Value("y1", (1, 13, 12, 12), "int8")
    w2 = rng.integers(-30, 30, (7, 13, 1, 1)).astype(np.int8)
    q2 = Requant(rng.integers(1 << 20, 1 << 22, 7), rng.integers(14, 18, 7), zp=3)
    y2 = Value("y2", (1, 7, 6, 6), "int8")
    flat = Value("flat", (1, 252), "int8", alias_of=y2)
    w3 = rng.integers(-10, 10, (252, 10)).astype(np.int8)
    b3 = rng.integers(-100, 100, 10).astype(np.int32)
    q3 = Requant(rng.integers(1 << 20, 1 << 22, 10), rng.integers(15, 19, 10))
    y3 = Value("y3", (1, 10), "int8")
    conv = {"strides": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}
    layers = [
        Layer("conv2d", [x], y1, dict(conv), weight=w1, bias=b1, requant=q1),
        Layer("conv2d", [y1], y2, {**conv, "strides": (2, 2), "padding": (0, 0, 0, 0)},
              weight=w2, requant=q2),
        Layer("reshape", [y2], flat),
        Layer("dense", [flat], y3, weight=w3, bias=b3, requant=q3),
    ]
    g = Graph("int8-chain", [x], [y3], layers, dtype="int8")
    inp = rng.integers(-128, 128, x.shape).astype(np.int8)

    def expect():
        xp = np.pad(inp[0], ((0, 0), (1, 1), (1, 1)))
        a1 = ref.conv(xp, w1).reshape(13, -1)
        r1 = ref.requant(a1, b1, q1.mult, q1.shift, q1.zp, q1.lo, q1.hi).reshape(13, 12, 12)
        a2 = ref.conv(r1, w2, stride=(2, 2)).reshape(7, -1)
        r2 = ref.requant(a2, None, q2.mult, q2.shift, q2.zp, q2.lo, q2.hi)
        a3 = ref.gemm(r2.reshape(1, 252), w3)                     # [1][10]
        r3 = ref.requant(a3.T, b3, q3.mult, q3.shift, q3.zp, q3.lo, q3.hi).T
        return r3

    return g, inp, expect()


@pytest.mark.parametrize("spec", [NPU, LITE], ids=["npu", "lite"])
@pytest.mark.parametrize("tilings", [None, {0: Tiling(8, 5, 8, False), 1: Tiling(4, 2, 5, True),
                                             3: Tiling(4, 1, 100, False)}],
                         ids=["heuristic", "small-tiles"])
def test_int8_chain_bit_exact(spec, tilings):
    g, inp, expect = _int8_chain(5)
    program, chosen, _ = compile_graph(spec, g, tilings)
    (out,), stats = Simulator(spec).run(program, [inp])
    np.testing.assert_array_equal(out.reshape(expect.shape), expect)
    if tilings:
        assert chosen == tilings
    assert stats.macs >= g.macs()


def test_infeasible_tiling_is_refused():
    g, _, _ = _int8_chain(1)
    with pytest.raises(BuildError, match="tiling .* of layer 0 needs [0-9]+ B of SRAM"):
        compile_graph(LITE, g, {0: Tiling(13, 1200, 8, True)})


def test_compilation_is_deterministic_and_timing_mode_agrees():
    g, inp, _ = _int8_chain(3)
    p1, _, _ = compile_graph(NPU, g)
    p2, _, _ = compile_graph(NPU, _int8_chain(3)[0])
    assert p1.to_bytes() == p2.to_bytes()
    _, functional = Simulator(NPU).run(p1, [inp])
    _, timing = Simulator(NPU).run(p1, None, functional=False)
    assert functional.to_dict() == timing.to_dict()


# -- int8: grouped, batched and broadcast MAC layers under every way to cut them -------------------
def _grouped_conv_int8(rng):
    """Two images, three groups (4 -> 2 channels each), stride 2, dilation (1, 2)."""
    x, y = Value("x", (2, 12, 9, 11), "int8"), Value("y", (2, 6, 5, 6), "int8")
    w = rng.integers(-20, 20, (6, 4, 3, 3)).astype(np.int8)
    b = rng.integers(-300, 300, 6).astype(np.int32)
    q = Requant(rng.integers(1 << 20, 1 << 22, 6), rng.integers(16, 20, 6), zp=-3)
    attrs = {"strides": (2, 2), "padding": (1, 2, 1, 2), "dilation": (1, 2), "groups": 3}
    g = Graph("grouped", [x], [y], [Layer("conv2d", [x], y, attrs, weight=w, bias=b, requant=q)],
              dtype="int8")
    inp = rng.integers(-128, 128, x.shape).astype(np.int8)
    out = []
    for image in inp:
        xp = np.pad(image, ((0, 0), (1, 1), (2, 2)))
        acc = np.concatenate([ref.conv(xp[4 * k:4 * k + 4], w[2 * k:2 * k + 2], (2, 2), (1, 2))
                              for k in range(3)]).reshape(6, -1)
        out.append(ref.requant(acc, b, q.mult, q.shift, q.zp, q.lo, q.hi))
    return g, inp, np.stack(out).reshape(y.shape)


def _broadcast_matmul_int8(rng):
    """[2][3][5][16] @ [3][16][7]: B broadcast over the first batch dim; requant per column."""
    a, bv, y = Value("a", (2, 3, 5, 16), "int8"), Value("b", (3, 16, 7), "int8"), \
        Value("y", (2, 3, 5, 7), "int8")
    bias = rng.integers(-300, 300, 7).astype(np.int32)
    q = Requant(rng.integers(1 << 20, 1 << 22, 7), rng.integers(14, 18, 7), zp=2)
    g = Graph("bmm", [a, bv], [y], [Layer("matmul", [a, bv], y, bias=bias, requant=q)],
              dtype="int8")
    ia = rng.integers(-128, 128, a.shape).astype(np.int8)
    ib = rng.integers(-128, 128, bv.shape).astype(np.int8)
    out = [[ref.requant(ref.gemm(ia[i, j], ib[j]).T, bias, q.mult, q.shift, q.zp, q.lo, q.hi).T
            for j in range(3)] for i in range(2)]
    return g, [ia, ib], np.array(out)


@pytest.mark.parametrize("spec", [NPU, LITE], ids=["npu", "lite"])
@pytest.mark.parametrize("case, tilings", [
    (_grouped_conv_int8, [None, Tiling(2, 5, 4, True), Tiling(1, 2, 2, False),
                          Tiling(2, 1, 1, True), Tiling(1, 3, 4, False)]),
    (_broadcast_matmul_int8, [None, Tiling(7, 5, 16, False), Tiling(4, 2, 8, False),
                              Tiling(3, 5, 5, False)]),
], ids=["grouped-conv", "broadcast-matmul"])
def test_every_tiling_computes_the_same_bits(spec, case, tilings):
    """Channel, row and reduction blocks, resident or streamed weights, per group, per image
    and per batch index: the compiler's step plan must add up to the reference exactly."""
    g, inputs, expect = case(np.random.default_rng(9))
    inputs = inputs if isinstance(inputs, list) else [inputs]
    for tiling in tilings:
        program, _, _ = compile_graph(spec, g, None if tiling is None else {0: tiling})
        (out,), _ = Simulator(spec).run(program, inputs)
        np.testing.assert_array_equal(out.reshape(expect.shape), expect, err_msg=str(tiling))


# -- fp16: random small graphs, partitioned + compiled vs the plain LLVM build -------------------
def _random_graph(seed: int):
    rng = np.random.default_rng(seed)
    c = int(rng.choice([3, 5, 8, 13, 16]))
    h, w = int(rng.integers(7, 20)), int(rng.integers(7, 20))

    def body(emit, x):
        cur, ch, hh, ww = x, c, h, w
        for _ in range(int(rng.integers(2, 6))):
            kind = rng.choice(["conv", "conv", "dw", "residual", "pool", "scale", "sigmoid",
                               "softmax", "concat", "resize"])
            if kind == "conv":
                k = int(rng.choice([1, 3, 5])) if min(hh, ww) >= 5 else 1
                s = int(rng.choice([1, 2])) if min(hh, ww) >= 8 else 1
                cout = int(rng.choice([4, 7, 16, 33]))
                y = emit(relax.op.nn.conv2d(cur, const((cout, ch, k, k), 0.3), strides=s,
                                            padding=k // 2))
                if rng.random() < 0.7:
                    y = emit(relax.op.add(y, const((1, cout, 1, 1))))
                if rng.random() < 0.6:
                    y = emit(relax.op.nn.relu(y) if rng.random() < 0.7 else
                             relax.op.clip(y, 0, 6))
                cur, ch = y, cout
                hh, ww = (hh + 2 * (k // 2) - k) // s + 1, (ww + 2 * (k // 2) - k) // s + 1
            elif kind == "dw" and min(hh, ww) >= 3:
                cur = emit(relax.op.nn.relu(emit(relax.op.nn.conv2d(
                    cur, const((ch, 1, 3, 3), 0.3), padding=1, groups=ch))))
            elif kind == "residual":
                y = emit(relax.op.nn.conv2d(cur, const((ch, ch, 3, 3), 0.2), padding=1))
                y = emit(relax.op.add(emit(relax.op.add(y, const((1, ch, 1, 1)))), cur))
                cur = emit(relax.op.nn.relu(y))
            elif kind == "pool" and min(hh, ww) >= 4:
                if rng.random() < 0.5:
                    cur = emit(relax.op.nn.max_pool2d(cur, 3, 2, 1))
                    hh, ww = (hh - 1) // 2 + 1, (ww - 1) // 2 + 1
                else:
                    cur = emit(relax.op.nn.avg_pool2d(cur, 2, 2))
                    hh, ww = hh // 2, ww // 2
            elif kind == "scale":
                cur = emit(relax.op.multiply(cur, const((1, ch, 1, 1), 1.0)))
            elif kind == "sigmoid":
                cur = emit(relax.op.sigmoid(cur))
            elif kind == "softmax":
                cur = emit(relax.op.nn.softmax(cur, axis=1))
            elif kind == "concat":
                cur = emit(relax.op.concat([cur, cur], axis=1))
                ch *= 2
            elif kind == "resize" and hh * ww <= 400:
                cur = emit(relax.op.image.resize2d(cur, (2 * hh, 2 * ww),
                                                   method="nearest_neighbor",
                                                   coordinate_transformation_mode="asymmetric",
                                                   rounding_method="floor"))
                hh, ww = 2 * hh, 2 * ww
        if rng.random() < 0.5:
            pooled = emit(relax.op.mean(cur, [2, 3], keepdims=False))
            return relax.op.add(emit(relax.op.matmul(pooled, const((ch, 10), 0.3))),
                                const((10,)))
        return cur

    mod = graph([(1, c, h, w)], body)
    x = np.random.default_rng(seed + 1000).standard_normal((1, c, h, w)).astype(np.float32)
    return mod, x


def _differential(seed: int, acc: str):
    mod, x = _random_graph(seed)
    expect = tvm_cruise.build(mod, target="llvm").run(x)
    art = tvm_cruise.build(mod, target=acc)
    err = rel_err(art.run(x), expect)
    assert err <= FP16_BOUND, (seed, acc, err, art.placement.table())
    return art


@pytest.mark.parametrize("acc", ["cruise-npu", "cruise-npu-lite"])
@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_match_the_llvm_build(seed, acc):
    art = _differential(seed, acc)
    stats = art.npu_stats()
    if art.placement.accelerator_ops:
        assert stats is not None and stats.totals["cycles"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("acc", ["cruise-npu", "cruise-npu-lite"])
@pytest.mark.parametrize("seed", range(12, 112))
def test_random_graphs_match_the_llvm_build_long(seed, acc):
    _differential(seed, acc)


def test_the_generator_covers_what_it_claims():
    """The default seeds exercise offloaded and host ops, odd channels and strides."""
    ops = set()
    for seed in range(12):
        mod, _ = _random_graph(seed)
        ops |= set(tvm_cruise.load_model(mod).mod["main"].script().split("R.")[1:])
    text = " ".join(ops)
    for needle in ("nn.conv2d", "nn.softmax", "nn.max_pool2d", "concat", "image.resize2d",
                   "sigmoid", "matmul"):
        assert needle in text, needle

