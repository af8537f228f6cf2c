"""The tiling search's cycle estimate: the instructions codegen emits, priced by cost.py.

For one MAC layer and one tiling, this lists the instructions ``codegen.Emitter`` emits
per tile step (the same boxes, tile sizes, flags and SRAM buffers from ``tiling.layout``),
prices each with the simulator's own functions (``npu/cost.py``) and schedules them on the
same ``Timeline`` (issue, SYNC barriers, bank conflicts) in the order of
``Emitter.pipeline``. It skips what the simulator does besides timing (bounds, hazards,
arithmetic). ``tests/test_tiling_model.py`` bounds its difference from the simulated
cycles of the one-layer program.
"""

from __future__ import annotations

from collections import Counter

from ..cost import (Timeline, conv_cycles, dma_cycles, dwconv_cycles, eltwise_cycles,
                    epilogue_cycles, fill_cycles, gemm_cycles, requant_cycles)
from . import tiling as T

DMA, COMPUTE = "dma", "compute"


class _Items:
    """Instructions as ``(engine, cycles, banks)``, priced by cost.py."""

    def __init__(self, spec):
        self.hw = spec.hardware
        self.bank = self.hw["sram_bytes"] // self.hw["sram_banks"]
        self.memo: dict = {}

    def banks(self, *ranges) -> frozenset:
        """The banks ``(address, bytes)`` ranges touch (as the simulator's SRAM views)."""
        out = set()
        for lo, n in ranges:
            if n > 0:
                out.update(range(lo // self.bank, (lo + n - 1) // self.bank + 1))
        return frozenset(out)

    def dma(self, item: int, sram: int, dims, dram_strides, sram_strides):
        key = (item, sram, dims, dram_strides, sram_strides)
        if key not in self.memo:
            span = sum((d - 1) * st for d, st in zip(dims, sram_strides)) + 1
            self.memo[key] = (DMA, dma_cycles(self.hw, item, dims, dram_strides, sram_strides),
                              self.banks((sram, span * item)))
        return self.memo[key]

    def dense(self, item: int, sram: int, elements: int):
        return self.dma(item, sram, (elements,), (1,), (1,))

    def compute(self, cycles: int, *ranges):
        return COMPUTE, cycles, self.banks(*ranges)

    def epilogue(self, s, acc, out, params, channels, c0, cn, pixels, residual=None,
                 scalars=None) -> list:
        """``Emitter._epilogue_step``: EPILOGUE (fp16) or REQUANT (int8; with a residual,
        its rescale, the add and the activation's clamps) of a ``cn`` x ``pixels`` tile."""
        hw, n = self.hw, cn * pixels
        if s.dtype != "int8":
            bias = (params + c0 * 4, cn * 4) if params is not None else (0, 0)
            res = (residual, n * 2) if residual is not None else (0, 0)
            return [self.compute(epilogue_cycles(hw, cn, pixels, params is not None,
                                                 residual is not None),
                                 (acc, n * 4), (out, n * s.elem), bias, res)]
        bias = (params + c0 * 4, cn * 4) if s.bias else (0, 0)
        items = [self.compute(requant_cycles(hw, cn, pixels, s.bias), (acc, n * 4),
                              (out, n), bias, (params + (channels + c0) * 4, cn * 4),
                              (params + (2 * channels + c0) * 4, cn * 4))]
        if residual is not None:
            items += [self.compute(eltwise_cycles(hw, 1, cn, pixels, 2), (residual, n),
                                   (scalars, 1)),
                      self.compute(eltwise_cycles(hw, 1, cn, pixels, 0), (out, n),
                                   (residual, n))]
            items += [self.compute(eltwise_cycles(hw, 1, cn, pixels, 2), (out, n),
                                   (scalars + 1 + i, 1)) for i in range(s.clamps)]
        return items


def _epilogue_cycles(hw, s, cn: int, pixels: int, residual: bool) -> int:
    """The compute cycles of ``_Items.epilogue`` (for the lower bounds)."""
    if s.dtype != "int8":
        return epilogue_cycles(hw, cn, pixels, s.bias, residual)
    out = requant_cycles(hw, cn, pixels, s.bias)
    if residual:
        out += (2 + s.clamps) * eltwise_cycles(hw, 1, cn, pixels, 2)
    return out


def _replay(hw, prologue, steps, pre) -> int:
    """Cycles of ``prologue`` (compute instructions, then SYNC compute) followed by
    ``Emitter.pipeline(steps)`` with ``pre`` loads before the first step's and the SYNC
    that closes the layer. ``steps`` are ``(loads, compute, store)`` lists of items."""
    tl = Timeline(hw)

    def run(items):
        for engine, cycles, banks in items:
            tl.issue()
            tl.run(engine, cycles, banks)

    def sync(dma=False, compute=False):
        tl.issue()
        tl.sync(dma, compute)

    if prologue:
        run(prologue)
        sync(compute=True)
    run(pre)
    run(steps[0][0])
    for i, (_, compute, _) in enumerate(steps):
        sync(dma=True)
        if i + 1 < len(steps):
            run(steps[i + 1][0])
        if i > 0:
            run(steps[i - 1][2])
        run(compute)
        sync(compute=True)
    run(steps[-1][2])
    sync(dma=True)
    sync(dma=True, compute=True)
    return tl.end


def _channel_params(it: _Items, s, addr, channels: int) -> list:
    """The per-channel constants' load: fp16 bias (fp32); int8 bias | multipliers | shifts."""
    if s.dtype == "int8":
        return [it.dense(4, addr, 3 * channels)]
    return [it.dense(4, addr, channels)] if s.bias else []


def conv_estimate(spec, s: T.ConvShape, t: T.Tiling) -> int:
    """Estimated cycles of the one-layer program codegen emits for conv ``s`` tiled ``t``."""
    it = _Items(spec)
    hw, e = spec.hardware, s.elem
    need = T.conv_sram(s, t)
    addr = T.layout(spec, T.mac_buffers(need, t.resident, T.CONV_OPERANDS))
    params, scalars = addr.get("bias"), addr.get("scalars")
    w_bufs = (addr["weights"],) if t.resident else addr["weights"]
    in_bufs, acc, out_bufs = addr["input tiles"], addr["accumulators"], addr["output tiles"]
    res_bufs = addr.get("residual tiles")
    rows_in = s.rows_in(t.rows)
    plane, pixels = rows_in * s.wp, t.rows * s.wout
    pt, pl = s.pad[0], s.pad[1]
    oc_blocks = [(c, min(t.oc, s.cout - c)) for c in range(0, s.cout, t.oc)]
    ic_blocks = [(0, s.cin)] if s.depthwise else \
        [(c, min(t.ic, s.cin - c)) for c in range(0, s.cin, t.ic)]
    taps = s.kh * s.kw
    offsets, pos = {}, 0  # the packed weights: [group][oc block][ic block]
    for g in range(s.groups):
        for oi, (_, on) in enumerate(oc_blocks):
            for ki, (_, inn) in enumerate(ic_blocks):
                size = on * taps if s.depthwise else on * inn * taps
                offsets[g, oi, ki] = (pos, size)
                pos += size

    def input_rows(buf, chans, top):
        lo, hi = max(top, 0), min(top + rows_in, s.h)
        end = max(hi, lo)
        out = []
        if lo > top:
            out.append(it.dma(e, buf + pl * e, (chans, lo - top, s.w), (0, 0, 1),
                              (plane, s.wp, 1)))
        if hi > lo:
            out.append(it.dma(e, buf + ((lo - top) * s.wp + pl) * e, (chans, hi - lo, s.w),
                              (s.h * s.w, s.w, 1), (plane, s.wp, 1)))
        if top + rows_in > end:
            out.append(it.dma(e, buf + ((end - top) * s.wp + pl) * e,
                              (chans, top + rows_in - end, s.w), (0, 0, 1), (plane, s.wp, 1)))
        return out

    def tile_rows(buf, on, valid):
        return it.dma(e, buf, (on, valid, s.wout), (s.hout * s.wout, s.wout, 1),
                      (t.rows * s.wout, s.wout, 1))

    steps, tile_no = [], 0
    for job in range(s.jobs):
        g = job % s.groups
        for oi, (o0, on) in enumerate(oc_blocks):
            for r0 in range(0, s.hout, t.rows):
                valid = min(t.rows, s.hout - r0)
                obuf = out_bufs[tile_no % 2]
                for ki, (_, inn) in enumerate(ic_blocks):
                    sbuf = len(steps) % 2
                    ibuf = in_bufs[sbuf]
                    chans = on if s.depthwise else inn
                    loads = input_rows(ibuf, chans, r0 * s.sh - pt)
                    w_off, w_len = offsets[g, oi, ki]
                    if t.resident:
                        waddr = w_bufs[0] + w_off * e
                    else:
                        waddr = w_bufs[sbuf]
                        loads.append(it.dense(e, waddr, w_len))
                    last = ki == len(ic_blocks) - 1
                    rbuf = res_bufs[tile_no % 2] if last and res_bufs is not None else None
                    if rbuf is not None:
                        loads.append(tile_rows(rbuf, on, valid))
                    ranges = ((ibuf, chans * rows_in * s.wp * e), (waddr, w_len * e),
                              (acc, on * pixels * 4))
                    if s.depthwise:
                        cycles = dwconv_cycles(hw, s.dtype, e, on, rows_in, s.wp, t.rows,
                                               s.wout, s.kh, s.kw, False)
                    else:
                        cycles = conv_cycles(hw, s.dtype, e, inn, rows_in, s.wp, on, t.rows,
                                             s.wout, s.kh, s.kw, ki > 0)
                    compute, store = [it.compute(cycles, *ranges)], []
                    if last:
                        compute += it.epilogue(s, acc, obuf, params, s.cout * s.groups,
                                               g * s.cout + o0, on, pixels, rbuf, scalars)
                        store.append(tile_rows(obuf, on, valid))
                    steps.append((loads, compute, store))
                tile_no += 1
    pre = _channel_params(it, s, params, s.cout * s.groups)
    if t.resident:
        pre.append(it.dense(e, w_bufs[0], pos))
    if scalars is not None:
        pre.append(it.dense(1, scalars, 4))
    count = need["in"] // 2 // e
    fills = [it.compute(fill_cycles(hw, count), (buf, count * e)) for buf in in_bufs]
    return _replay(hw, fills, steps, pre)


def conv_bound(spec, s: T.ConvShape, t: T.Tiling) -> int:
    """A lower bound of ``conv_estimate``, cheap: each engine runs its instructions one
    after another, so the layer takes at least either engine's sum. (DMA: a step's input
    rows priced as one box, never dearer than the boxes codegen splits them into.)"""
    hw, e = spec.hardware, s.elem
    rows_in, pixels = s.rows_in(t.rows), t.rows * s.wout
    n_rows = -(-s.hout // t.rows)
    ic_blocks = _sizes(s.cin, t.ic)
    taps = s.kh * s.kw
    compute = dma = 0
    for on, n_oc in Counter(_sizes(s.cout, t.oc)).items():  # at most two block sizes
        if s.depthwise:
            mac = dwconv_cycles(hw, s.dtype, e, on, rows_in, s.wp, t.rows, s.wout, s.kh,
                                s.kw, False)
            loads = [(on, on * taps, 1)]
        else:
            mac = sum(n * conv_cycles(hw, s.dtype, e, inn, rows_in, s.wp, on, t.rows, s.wout,
                                      s.kh, s.kw, acc)
                      for (inn, acc), n in Counter((inn, ki > 0)
                                                   for ki, inn in enumerate(ic_blocks)).items())
            loads = [(inn, on * inn * taps, n) for inn, n in Counter(ic_blocks).items()]
        compute += n_oc * n_rows * (mac + _epilogue_cycles(hw, s, on, pixels, s.residual))
        tile = dma_cycles(hw, e, (on, t.rows, s.wout), (s.hout * s.wout, s.wout, 1),
                          (t.rows * s.wout, s.wout, 1))
        step = sum(n * (dma_cycles(hw, e, (chans, rows_in, s.w), (s.h * s.w, s.w, 1),
                                   (rows_in * s.wp, s.wp, 1))
                        + (0 if t.resident else dma_cycles(hw, e, (size,), (1,), (1,))))
                   for chans, size, n in loads)
        dma += n_oc * n_rows * (step + tile * (2 if s.residual else 1))
    return s.jobs * max(compute, dma)


def gemm_bound(spec, s: T.GemmShape, t: T.Tiling) -> int:
    """A lower bound of ``gemm_estimate``: either engine's sum (``conv_bound``)."""
    hw, e = spec.hardware, s.elem
    k_blocks = _sizes(s.k, t.ic)
    streamed = not (t.resident and s.const_b)
    compute = dma = 0
    for (nn, mm), n in Counter((nn, mm) for nn in _sizes(s.n, t.oc)
                               for mm in _sizes(s.m, t.rows)).items():
        tile = sum(gemm_cycles(hw, s.dtype, e, mm, kn, nn, kj > 0)
                   for kj, kn in enumerate(k_blocks))
        compute += n * (tile + _epilogue_cycles(hw, s, nn, mm, False))
        moves = dma_cycles(hw, e, (mm, nn), (s.n, 1), (nn, 1))
        for kn in k_blocks:
            moves += dma_cycles(hw, e, (mm, kn), (s.k, 1), (kn, 1))
            if streamed:
                moves += dma_cycles(hw, e, (kn, nn), (s.n, 1), (nn, 1)) if not s.const_b \
                    else dma_cycles(hw, e, (kn * nn,), (1,), (1,))
        dma += n * moves
    return s.batch * max(compute, dma)


def _sizes(total: int, block: int) -> list[int]:
    return [min(block, total - c) for c in range(0, total, block)]


def gemm_estimate(spec, s: T.GemmShape, t: T.Tiling) -> int:
    """Estimated cycles of the one-layer program codegen emits for product ``s`` tiled
    ``t``."""
    it = _Items(spec)
    hw, e = spec.hardware, s.elem
    resident = t.resident and s.const_b
    addr = T.layout(spec, T.mac_buffers(T.gemm_sram(s, t), resident, T.GEMM_OPERANDS))
    params = addr.get("bias")
    b_bufs = (addr["B"],) if resident else addr["B"]
    a_bufs, acc, out_bufs = addr["A tiles"], addr["accumulators"], addr["output tiles"]
    n_blocks = [(c, min(t.oc, s.n - c)) for c in range(0, s.n, t.oc)]
    k_blocks = [(c, min(t.ic, s.k - c)) for c in range(0, s.k, t.ic)]
    offsets, pos = {}, 0
    for ni, (_, nn) in enumerate(n_blocks):
        for kj, (_, kn) in enumerate(k_blocks):
            offsets[ni, kj] = pos
            pos += kn * nn
    steps, tile_no = [], 0
    for _ in range(s.batch):
        for ni, (n0, nn) in enumerate(n_blocks):
            for m0 in range(0, s.m, t.rows):
                mm = min(t.rows, s.m - m0)
                obuf = out_bufs[tile_no % 2]
                for kj, (_, kn) in enumerate(k_blocks):
                    sbuf = len(steps) % 2
                    abuf = a_bufs[sbuf]
                    loads = [it.dma(e, abuf, (mm, kn), (s.k, 1), (kn, 1))]
                    if resident:
                        baddr = b_bufs[0] + offsets[ni, kj] * e
                    else:
                        baddr = b_bufs[sbuf]
                        loads.append(it.dense(e, baddr, kn * nn) if s.const_b else
                                     it.dma(e, baddr, (kn, nn), (s.n, 1), (nn, 1)))
                    compute = [it.compute(gemm_cycles(hw, s.dtype, e, mm, kn, nn, kj > 0),
                                          (abuf, mm * kn * e), (baddr, kn * nn * e),
                                          (acc, mm * nn * 4))]
                    store = []
                    if kj == len(k_blocks) - 1:
                        compute += it.epilogue(s, acc, obuf, params, s.n, n0, nn, mm)
                        store.append(it.dma(e, obuf, (mm, nn), (s.n, 1), (nn, 1)))
                    steps.append((loads, compute, store))
                tile_no += 1
    pre = _channel_params(it, s, params, s.n)
    if resident:
        pre.append(it.dense(e, b_bufs[0], pos))
    return _replay(hw, [], steps, pre)
