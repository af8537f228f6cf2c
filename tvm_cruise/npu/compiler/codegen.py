"""The NPU program compiler: layers in, one program of instructions out.

Each layer runs as a software pipeline of steps (docs/npu_isa.md, "Hazards and SYNC"):
while the MAC array computes step *i* on one set of buffers, the DMA engine loads step
*i+1* into the other set and stores step *i-1*'s result; a SYNC pair hands the buffers
over. Layers exchange tensors through DRAM; a layer's weights are packed block by block so
every weight tile is one contiguous DMA. Deterministic: the same graph and tilings give
the same bytes.
"""

from __future__ import annotations


from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import BuildError, LoweringFailures
from ...targets.spec import AcceleratorSpec
from . import tiling as T
from .graph import Graph, Layer, Value, _reason, broadcast_box, broadcast_mode
from ..program import Program, ProgramBuilder
from .resize import interpolation_matrix


class SramAllocator:
    """Bump allocator over the spec's SRAM, reset per layer; ping-pong pairs go to
    different banks when they fit (a DMA and a compute touching one bank stall)."""

    def __init__(self, spec: AcceleratorSpec, bank_aware: bool = True):
        self.size = spec.hardware["sram_bytes"]
        self.bank = self.size // spec.hardware["sram_banks"]
        self.bank_aware = bank_aware
        self.top = 0

    def alloc(self, nbytes: int, what: str) -> int:
        addr = -(-self.top // T.ALIGN) * T.ALIGN
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


@dataclass
class Step:
    loads: list[Callable[[], None]] = field(default_factory=list)
    compute: list[Callable[[], None]] = field(default_factory=list)
    store: list[Callable[[], None]] = field(default_factory=list)


class Emitter:
    """Emits one program for a ``Graph``; ``tilings`` overrides tiles per layer index."""

    def __init__(self, spec: AcceleratorSpec, graph: Graph, tilings: dict | None = None):
        self.spec = spec
        self.graph = graph
        self.b = ProgramBuilder(spec)
        self.tilings = dict(tilings or {})
        self.chosen: dict[int, T.Tiling] = {}
        self.tensors: dict[int, int] = {}  # id(root value) -> tensor index
        self.layer_ends: dict[int, int] = {}  # layer index -> its closing SYNC
        self.dtype = graph.dtype
        self.elem = np.dtype(graph.dtype).itemsize
        self._zero: dict[int, int] = {}

    # -- DRAM tensors ---------------------------------------------------------------------
    def _declare(self) -> None:
        g = self.graph
        for v in g.inputs:  # by root: a one-layer probe graph may start from a view
            self.tensors[id(v.root)] = self.b.input(v.name, self.dtype, dram_shape(v.shape))
        produced = {id(layer.output.root): layer for layer in g.layers}
        self.copies: list[tuple[Value, int]] = []
        for i, v in enumerate(g.outputs):
            tid = self.b.output(f"out{i}", self.dtype, dram_shape(v.shape))
            root = v.root
            if id(root) in produced and id(root) not in self.tensors:
                self.tensors[id(root)] = tid
            else:  # an input, or a value already bound to another output: copy it
                self.copies.append((v, tid))
        for layer in g.layers:
            root = layer.output.root
            if id(root) not in self.tensors:
                self.tensors[id(root)] = self.b.scratch(root.name, self.dtype,
                                                        dram_shape(root.shape))

    def tid(self, value: Value) -> int:
        root = value.root
        if id(root) not in self.tensors and root.data is not None:
            self.tensors[id(root)] = self.b.constant(
                root.name, np.ascontiguousarray(root.data, self.dtype).reshape(
                    dram_shape(root.shape)))
        return self.tensors[id(root)]

    def zeros(self, length: int) -> int:
        """A DRAM zero vector (DMA source for padding rows, read with stride 0)."""
        if length not in self._zero:
            self._zero[length] = self.b.constant(f"zeros{length}",
                                                 np.zeros(length, self.dtype))
        return self._zero[length]

    def layout(self, requests) -> dict:
        """SRAM addresses for ``[(name, bytes, paired)]``: ping-pong pairs in separate banks
        when everything still fits, else packed contiguously."""
        for bank_aware in (True, False):
            alloc = SramAllocator(self.spec, bank_aware)
            try:
                return {name: (alloc.pair(n, name) if paired else alloc.alloc(n, name))
                        for name, n, paired in requests if n > 0}
            except BuildError:
                if not bank_aware:
                    raise
        raise AssertionError("unreachable")

    def move_buffers(self, nbytes: int, what: str) -> tuple[int, int, int]:
        """Three buffers for steps that only move data (DMA in, DMA out of one buffer): the
        pipeline loads step i+1 before it stores step i-1, so two would collide."""
        addr = self.layout([(f"{what} {k}", nbytes, False) for k in range(3)])
        return tuple(addr[f"{what} {k}"] for k in range(3))

    # -- the pipeline -----------------------------------------------------------------------
    def pipeline(self, steps: list[Step]) -> None:
        b = self.b
        for f in steps[0].loads:
            f()
        for i, step in enumerate(steps):
            b.sync(dma=True)
            if i + 1 < len(steps):
                for f in steps[i + 1].loads:
                    f()
            if i > 0:
                for f in steps[i - 1].store:
                    f()
            for f in step.compute:
                f()
            b.sync(compute=True)
        for f in steps[-1].store:
            f()
        b.sync(dma=True)

    # -- entry -----------------------------------------------------------------------------
    def emit(self) -> Program:
        """The program; raises ``LoweringFailures`` naming every layer that cannot lower."""
        self._declare()
        failures = list(self.graph.failures)
        for index, layer in enumerate(self.graph.layers):
            if layer.kind == "reshape":
                continue  # same bytes, another shape: nothing to move
            start = len(self.b.instructions)
            try:
                getattr(self, "_" + layer.kind)(index, layer)
            except Exception as err:  # noqa: BLE001 - whatever it is, this layer can't lower
                del self.b.instructions[start:]
                failures.append((tuple(layer.op_ids), _reason(err)))
                continue  # the other layers still compile: find every failure at once
            self.b.sync(dma=True, compute=True)
            self.layer_ends[index] = len(self.b.instructions) - 1
        if failures:
            raise LoweringFailures(self.graph.name, failures)
        for value, tid in self.copies:
            self._copy(self.tid(value), tid, value.size)
        return self.b.build()

    # -- data movement helpers ----------------------------------------------------------------
    def _copy(self, src: int, dst: int, size: int) -> None:
        chunk = min(size, self.spec.hardware["sram_bytes"] // 4 // self.elem)
        bufs = self.move_buffers(chunk * self.elem, "copy")
        steps = []
        for j, start in enumerate(range(0, size, chunk)):
            n = min(chunk, size - start)
            buf = bufs[j % 3]
            steps.append(Step(
                loads=[lambda buf=buf, start=start, n=n: self.b.dma_load(src, buf, (n,),
                                                                        (1,), (1,), start)],
                store=[lambda buf=buf, start=start, n=n: self.b.dma_store(dst, buf, (n,), (1,),
                                                                          (1,), start)]))
        self.pipeline(steps)

    # -- convolutions --------------------------------------------------------------------------
    def _conv_shape(self, layer: Layer) -> T.ConvShape:
        """The conv's geometry; a grouped conv's channels are per group."""
        x = layer.inputs[0]
        batch, cin, h, w = x.shape
        _, cout, hout, wout = layer.output.shape
        depthwise = layer.kind == "dwconv"
        groups = 1 if depthwise else int(layer.attrs.get("groups", 1))
        kh, kw = layer.weight.shape[-2:]
        sh, sw = layer.attrs["strides"]
        dh, dw = layer.attrs["dilation"]
        return T.ConvShape(cin // groups, cout // groups, h, w, hout, wout, kh, kw, sh, sw, dh,
                           dw, tuple(layer.attrs["padding"]), depthwise,
                           layer.residual is not None, layer.bias is not None, self.elem,
                           self.dtype, groups, batch)

    def _gemm_shape(self, layer: Layer) -> T.GemmShape:
        a = layer.inputs[0].shape
        k = a[-1]
        if layer.kind == "dense":
            return T.GemmShape(int(np.prod(a[:-1])), k, layer.weight.shape[1], 1, True,
                               layer.bias is not None, self.elem, self.dtype)
        out_batch = layer.output.shape[:-2]
        return T.GemmShape(a[-2], k, layer.inputs[1].shape[-1],
                           int(np.prod(out_batch)) if out_batch else 1, False,
                           layer.bias is not None, self.elem, self.dtype)

    def problem(self, layer: Layer):
        """``(choose, shape, sram)`` of a MAC layer's tiling: the heuristic, the shape it
        takes and the SRAM a tiling needs (the autotuner searches the same space)."""
        if layer.kind in ("conv", "dwconv"):
            shape = self._conv_shape(layer)
            return T.choose_conv, shape, lambda t: T.conv_sram(shape, t)
        shape = self._gemm_shape(layer)
        return T.choose_gemm, shape, lambda t: T.gemm_sram(shape, t)

    def _tiling(self, index: int, choose, shape) -> T.Tiling:
        tiling = self.tilings.get(index) or choose(self.spec, shape)
        if tiling is None:
            raise BuildError(f"NPU compiler: layer {index} fits no tiling in "
                             f"{self.spec.hardware['sram_bytes']} B of SRAM")
        self.chosen[index] = tiling
        return tiling

    def _conv(self, index: int, layer: Layer) -> None:
        s = self._conv_shape(layer)
        t = self._tiling(index, T.choose_conv, s)
        need = T.conv_sram(s, t)
        if sum(need.values()) > self.spec.hardware["sram_bytes"]:
            raise BuildError(f"NPU compiler: tiling {t} of layer {index} needs "
                             f"{sum(need.values())} B of SRAM")
        b = self.b
        depthwise = s.depthwise
        ic_blk = t.oc if depthwise else t.ic
        oc_blocks = [(c, min(t.oc, s.cout - c)) for c in range(0, s.cout, t.oc)]
        ic_blocks = [(0, s.cin)] if depthwise else \
            [(c, min(ic_blk, s.cin - c)) for c in range(0, s.cin, ic_blk)]
        rows_in = s.rows_in(t.rows)
        pt, pl = s.pad[0], s.pad[1]
        # weights, packed so each (group, oc block, ic block) is contiguous
        w = layer.weight.astype(self.dtype)
        blocks, offsets, pos = [], {}, 0
        for g in range(s.groups):
            wg = w[g * s.cout:(g + 1) * s.cout]
            for oi, (o0, on) in enumerate(oc_blocks):
                for ki, (i0, inn) in enumerate(ic_blocks):
                    blk = wg[o0:o0 + on] if depthwise else wg[o0:o0 + on, i0:i0 + inn]
                    blk = np.ascontiguousarray(blk)
                    offsets[g, oi, ki] = (pos, blk.size)
                    blocks.append(blk.reshape(-1))
                    pos += blk.size
        wt = b.constant(f"w{index}", np.concatenate(blocks))
        addr = self.layout([("bias", need["bias"], False),
                            ("scalars", need["scalars"], False),
                            ("weights", need["w"] if t.resident else need["w"] // 2,
                             not t.resident),
                            ("input tiles", need["in"] // 2, True),
                            ("accumulators", need["acc"], False),
                            ("output tiles", need["out"] // 2, True),
                            ("residual tiles", need["res"] // 2, True)])
        bias_addr = addr.get("bias")
        channel_params = self._channel_params(index, layer, s.cout * s.groups)
        w_bufs = (addr["weights"],) if t.resident else addr["weights"]
        in_bufs, acc, out_bufs = addr["input tiles"], addr["accumulators"], addr["output tiles"]
        res_bufs = addr.get("residual tiles")
        x_t, y_t = self.tid(layer.inputs[0]), self.tid(layer.output)
        r_t = self.tid(layer.residual) if layer.residual else None
        # zero padding: columns stay zero from this fill; rows come from a zero vector
        b.fill(in_bufs[0], need["in"] // 2 // self.elem, self.dtype, 0)
        b.fill(in_bufs[1], need["in"] // 2 // self.elem, self.dtype, 0)
        b.sync(compute=True)
        pre = []
        if channel_params is not None:
            pre.append(lambda: b.dma_load(channel_params[0], bias_addr, (channel_params[1],)))
        if t.resident:
            pre.append(lambda: b.dma_load(wt, w_bufs[0], (pos,)))
        scalars = addr.get("scalars")
        if scalars is not None:
            q = layer.requant
            data = np.array([q.residual_mult, q.lo, q.hi, 0], np.int8)
            s_t = b.constant(f"r{index}", data)
            pre.append(lambda: b.dma_load(s_t, scalars, (data.size,)))
        zero = self.zeros(s.w)
        steps: list[Step] = []
        tile_no = 0
        # one job per (image, group); tensors are read as [N*C][H][W]
        jobs = [(n * s.cin * s.groups + g * s.cin, n * s.cout * s.groups + g * s.cout,
                 g * s.cout, g) for n in range(s.batch) for g in range(s.groups)]
        for (x_base, y_base, p_base, g), (oi, (o0, on)) in (
                (job, blk) for job in jobs for blk in enumerate(oc_blocks)):
            for r0 in range(0, s.hout, t.rows):
                valid = min(t.rows, s.hout - r0)
                obuf = out_bufs[tile_no % 2]
                for ki, (i0, inn) in enumerate(ic_blocks):
                    step = Step()
                    sbuf = len(steps) % 2
                    ibuf = in_bufs[sbuf]
                    chans = on if depthwise else inn
                    c0 = x_base + (o0 if depthwise else i0)
                    top = r0 * s.sh - pt
                    step.loads.append(self._input_rows(x_t, zero, ibuf, c0, chans, top, rows_in,
                                                       s, pl))
                    w_off, w_len = offsets[g, oi, ki]
                    if t.resident:
                        waddr = w_bufs[0] + w_off * self.elem
                    else:
                        waddr = w_bufs[sbuf]
                        step.loads.append(lambda waddr=waddr, w_off=w_off, w_len=w_len:
                                          b.dma_load(wt, waddr, (w_len,), (1,), (1,), w_off))
                    last = ki == len(ic_blocks) - 1
                    rbuf = None
                    if last and res_bufs is not None:
                        rbuf = res_bufs[tile_no % 2]
                        step.loads.append(self._tile_rows(b.dma_load, r_t, rbuf, y_base + o0,
                                                          on, r0, valid, t.rows, s.hout,
                                                          s.wout))
                    acc_first = ki == 0
                    if depthwise:
                        step.compute.append(lambda ibuf=ibuf, waddr=waddr, on=on:
                                            b.dwconv(ibuf, waddr, acc, on, rows_in, s.wp, t.rows,
                                                     s.wout, (s.kh, s.kw), (s.sh, s.sw),
                                                     (s.dh, s.dw), dtype=self.dtype))
                    else:
                        step.compute.append(lambda ibuf=ibuf, waddr=waddr, on=on, inn=inn,
                                            first=acc_first:
                                            b.conv(ibuf, waddr, acc, inn, rows_in, s.wp, on,
                                                   t.rows, s.wout, (s.kh, s.kw), (s.sh, s.sw),
                                                   (s.dh, s.dw), dtype=self.dtype,
                                                   accumulate=not first))
                    if last:
                        step.compute.append(self._epilogue_step(layer, acc, obuf, p_base + o0,
                                                                on, t.rows * s.wout, bias_addr,
                                                                s.cout * s.groups, False, rbuf,
                                                                scalars))
                        step.store.append(self._tile_rows(b.dma_store, y_t, obuf, y_base + o0,
                                                          on, r0, valid, t.rows, s.hout,
                                                          s.wout))
                    steps.append(step)
                tile_no += 1
        steps[0].loads = pre + steps[0].loads
        self.pipeline(steps)

    def _channel_params(self, index: int, layer: Layer, channels: int):
        """``(tensor, elements)`` of the per-channel epilogue constants, or None:
        fp16: the fp32 bias; int8: int32 bias | multipliers | shifts."""
        if self.dtype == "int8":
            q = layer.requant
            if q is None:
                raise BuildError(f"NPU compiler: int8 layer {index} has no requantization")
            bias = layer.bias if layer.bias is not None else np.zeros(channels)
            data = np.concatenate([np.asarray(bias, np.int64), np.asarray(q.mult, np.int64),
                                   np.asarray(q.shift, np.int64)]).astype(np.int32)
            return self.b.constant(f"q{index}", data), data.size
        if layer.bias is None:
            return None
        data = layer.bias.astype(np.float32)
        return self.b.constant(f"b{index}", data), data.size

    def _epilogue_step(self, layer: Layer, acc, obuf, c0, cn, pixels, params, channels,
                       channel_last, residual=None, scalars=None):
        """The instructions that turn accumulators into the layer's output tile."""
        b = self.b
        if self.dtype == "int8":
            q = layer.requant
            bias = params + c0 * T.ACC if layer.bias is not None else None
            mult, shift = params + (channels + c0) * T.ACC, params + (2 * channels + c0) * T.ACC
            if residual is None:
                return lambda: b.requant(acc, obuf, cn, pixels, mult, shift, bias, q.zp, q.lo,
                                         q.hi, channel_last=channel_last)
            if scalars is None or q.zp != 0:
                raise BuildError("NPU compiler: an int8 residual add needs its rescale "
                                 "scalars and a zero output zero point")

            def residual_epilogue():
                # the conv's part on the output's scale, then + the residual rescaled to it
                b.requant(acc, obuf, cn, pixels, mult, shift, bias, 0, -128, 127,
                          channel_last=channel_last)
                b.eltwise(residual, scalars, residual, cn, pixels, "multiply", "int8",
                          "scalar", q.residual_shift)
                b.eltwise(obuf, residual, obuf, cn, pixels, "add", "int8")
                if q.lo > -128:
                    b.eltwise(obuf, scalars + 1, obuf, cn, pixels, "maximum", "int8", "scalar")
                if q.hi < 127:
                    b.eltwise(obuf, scalars + 2, obuf, cn, pixels, "minimum", "int8", "scalar")
            return residual_epilogue
        bias = None if params is None else params + c0 * T.ACC
        return lambda: b.epilogue(acc, obuf, cn, pixels, bias, layer.act.name, layer.act.lo,
                                  layer.act.hi, channel_last=channel_last, residual=residual)

    def _input_rows(self, tensor, zero, buf, c0, chans, top, rows_in, s: T.ConvShape, pl):
        """Load input rows [top, top+rows_in) of channels [c0, c0+chans) into ``buf``
        ([chans][rows_in][wp], interior columns); rows outside the image load zeros."""
        b = self.b
        lo, hi = max(top, 0), min(top + rows_in, s.h)
        plane = rows_in * s.wp

        def emit():
            if lo > top:  # top padding rows
                b.dma_load(zero, buf + pl * self.elem, (chans, lo - top, s.w), (0, 0, 1),
                           (plane, s.wp, 1))
            if hi > lo:
                b.dma_load(tensor, buf + ((lo - top) * s.wp + pl) * self.elem,
                           (chans, hi - lo, s.w), (s.h * s.w, s.w, 1), (plane, s.wp, 1),
                           (c0 * s.h + lo) * s.w)
            end = max(hi, lo)
            if top + rows_in > end:  # bottom padding rows (and rows past the last tile)
                b.dma_load(zero, buf + ((end - top) * s.wp + pl) * self.elem,
                           (chans, top + rows_in - end, s.w), (0, 0, 1), (plane, s.wp, 1))

        return emit

    def _tile_rows(self, dma, tensor, buf, c0, chans, r0, valid, rows, height, width):
        """A [chans][rows][width] SRAM tile <-> rows [r0, r0+valid) of an NCHW tensor."""
        return lambda: dma(tensor, buf, (chans, valid, width), (height * width, width, 1),
                           (rows * width, width, 1), (c0 * height + r0) * width)

    def _dwconv(self, index: int, layer: Layer) -> None:
        self._conv(index, layer)

    # -- matrix products ----------------------------------------------------------------------
    def _gemm_layer(self, index: int, layer: Layer, a_val: Value, b_val: Value | None,
                    weight: np.ndarray | None) -> None:
        s = self._gemm_shape(layer)
        m_rows, k_, n_, batch = s.m, s.k, s.n, s.batch
        if weight is not None:
            a_batch, b_batch = [0], [0]
        else:
            out_batch = layer.output.shape[:-2]
            a_batch = _batch_offsets(a_val.shape[:-2], out_batch, m_rows * k_)
            b_batch = _batch_offsets(b_val.shape[:-2], out_batch, k_ * n_)
        t = self._tiling(index, T.choose_gemm, s)
        need = T.gemm_sram(s, t)
        b = self.b
        a_t, y_t = self.tid(a_val), self.tid(layer.output)
        if weight is not None:
            n_blocks = [(c, min(t.oc, n_ - c)) for c in range(0, n_, t.oc)]
            k_blocks = [(c, min(t.ic, k_ - c)) for c in range(0, k_, t.ic)]
            packed, offsets, pos = [], {}, 0
            for ni, (n0, nn) in enumerate(n_blocks):
                for ki, (k0, kn) in enumerate(k_blocks):
                    blk = np.ascontiguousarray(weight[k0:k0 + kn, n0:n0 + nn].astype(self.dtype))
                    offsets[ni, ki] = (pos, blk.size)
                    packed.append(blk.reshape(-1))
                    pos += blk.size
            b_t = b.constant(f"w{index}", np.concatenate(packed))
        else:
            b_t = self.tid(b_val)
        resident = t.resident and weight is not None
        addr = self.layout([("bias", need["bias"], False),
                            ("B", need["b"] if resident else need["b"] // 2, not resident),
                            ("A tiles", need["a"] // 2, True),
                            ("accumulators", need["acc"], False),
                            ("output tiles", need["out"] // 2, True)])
        bias_addr = addr.get("bias")
        channel_params = self._channel_params(index, layer, n_)
        b_bufs = (addr["B"],) if resident else addr["B"]
        a_bufs, acc, out_bufs = addr["A tiles"], addr["accumulators"], addr["output tiles"]
        pre = []
        if channel_params is not None:
            pre.append(lambda: b.dma_load(channel_params[0], bias_addr, (channel_params[1],)))
        if resident:
            pre.append(lambda: b.dma_load(b_t, b_bufs[0], (pos,)))
        steps: list[Step] = []
        tile_no = 0
        for bi in range(batch):
            for n0 in range(0, n_, t.oc):
                nn = min(t.oc, n_ - n0)
                for m0 in range(0, m_rows, t.rows):
                    mm = min(t.rows, m_rows - m0)
                    obuf = out_bufs[tile_no % 2]
                    k_list = list(range(0, k_, t.ic))
                    for kj, k0 in enumerate(k_list):
                        kn = min(t.ic, k_ - k0)
                        step = Step()
                        sbuf = len(steps) % 2
                        abuf = a_bufs[sbuf]
                        a_off = a_batch[bi] + m0 * k_ + k0
                        step.loads.append(lambda abuf=abuf, a_off=a_off, mm=mm, kn=kn:
                                          b.dma_load(a_t, abuf, (mm, kn), (k_, 1), (kn, 1), a_off))
                        if weight is not None:
                            w_off, w_len = offsets[n0 // t.oc, kj]
                            if resident:
                                baddr = b_bufs[0] + w_off * self.elem
                            else:
                                baddr = b_bufs[sbuf]
                                step.loads.append(lambda baddr=baddr, w_off=w_off, w_len=w_len:
                                                  b.dma_load(b_t, baddr, (w_len,), (1,), (1,),
                                                             w_off))
                        else:
                            baddr = b_bufs[sbuf]
                            b_off = b_batch[bi] + k0 * n_ + n0
                            step.loads.append(lambda baddr=baddr, b_off=b_off, kn=kn, nn=nn:
                                              b.dma_load(b_t, baddr, (kn, nn), (n_, 1), (nn, 1),
                                                         b_off))
                        step.compute.append(lambda abuf=abuf, baddr=baddr, mm=mm, kn=kn, nn=nn,
                                            first=kj == 0:
                                            b.gemm(abuf, baddr, acc, mm, kn, nn,
                                                   dtype=self.dtype, accumulate=not first))
                        if kj == len(k_list) - 1:
                            step.compute.append(self._epilogue_step(layer, acc, obuf, n0, nn,
                                                                    mm, bias_addr, n_, True))
                            y_off = bi * m_rows * n_ + m0 * n_ + n0
                            step.store.append(lambda obuf=obuf, mm=mm, nn=nn, y_off=y_off:
                                              b.dma_store(y_t, obuf, (mm, nn), (n_, 1), (nn, 1),
                                                          y_off))
                        steps.append(step)
                    tile_no += 1
        steps[0].loads = pre + steps[0].loads
        self.pipeline(steps)

    def _dense(self, index: int, layer: Layer) -> None:
        self._gemm_layer(index, layer, layer.inputs[0], None, layer.weight)

    def _matmul(self, index: int, layer: Layer) -> None:
        self._gemm_layer(index, layer, layer.inputs[0], layer.inputs[1], None)

    # -- vector-unit layers ------------------------------------------------------------------------
    def _rows_per_tile(self, row_bytes: int, buffers: int) -> int:
        budget = self.spec.hardware["sram_bytes"] // buffers
        return max(1, budget // max(row_bytes, 1))

    def _pool(self, index: int, layer: Layer) -> None:
        n, c, h, w = layer.inputs[0].shape
        c *= n  # every (image, channel) plane pools alike: an NCHW tensor is [N*C][H][W]
        # a global mean may drop the reduced axes: (1, C) holds the same values as (1, C, 1, 1)
        hout, wout = layer.output.shape[2:] if len(layer.output.shape) == 4 else (1, 1)
        a = layer.attrs
        kh, kw = a["kernel"]
        sh, sw = a["stride"]
        pt, pl = a["padding"][0], a["padding"][1]
        per_channel = (h * w + hout * wout) * self.elem + 2 * T.ALIGN
        cb = min(c, self._rows_per_tile(per_channel, 2))
        if (h * w + hout * wout) * self.elem * 2 > self.spec.hardware["sram_bytes"]:
            raise BuildError(f"NPU compiler: a {h}x{w} pooling plane does not fit the SRAM")
        addr = self.layout([("pool inputs", cb * h * w * self.elem, True),
                            ("pool outputs", cb * hout * wout * self.elem, True)])
        in_bufs, out_bufs = addr["pool inputs"], addr["pool outputs"]
        x_t, y_t = self.tid(layer.inputs[0]), self.tid(layer.output)
        steps = []
        for j, c0 in enumerate(range(0, c, cb)):
            n = min(cb, c - c0)
            ib, ob = in_bufs[j % 2], out_bufs[j % 2]
            steps.append(Step(
                loads=[lambda ib=ib, c0=c0, n=n: self.b.dma_load(x_t, ib, (n * h * w,), (1,),
                                                                 (1,), c0 * h * w)],
                compute=[lambda ib=ib, ob=ob, n=n: self.b.pool(
                    ib, ob, n, h, w, hout, wout, (kh, kw), (sh, sw), (pt, pl), a["kind"],
                    dtype=self.dtype, count_pad=a["count_pad"])],
                store=[lambda ob=ob, c0=c0, n=n: self.b.dma_store(
                    y_t, ob, (n * hout * wout,), (1,), (1,), c0 * hout * wout)]))
        self.pipeline(steps)

    def _elementwise_tiles(self, rows: int, cols: int, operands: int):
        """Row-block, column-block tiles of a [rows][cols] view for ``operands`` buffers."""
        budget = self.spec.hardware["sram_bytes"] // (2 * operands) - T.ALIGN
        col_blk = min(cols, max(1, budget // self.elem))
        row_blk = min(rows, max(1, budget // (col_blk * self.elem)))
        for r0 in range(0, rows, row_blk):
            for c0 in range(0, cols, col_blk):
                yield r0, min(row_blk, rows - r0), c0, min(col_blk, cols - c0), row_blk, col_blk

    def _eltwise(self, index: int, layer: Layer) -> None:
        x, y = layer.inputs
        out = tuple(layer.output.shape)
        op = layer.attrs["op"]
        # ELTWISE broadcasts its second operand per channel, per pixel or as a scalar: use
        # that when one operand has the output's shape (c - x runs as (-x) + c).
        for full, other, swapped in ((x, y, False), (y, x, True)):
            if tuple(full.shape) == out:
                plan = broadcast_mode(out, other.shape)
                if plan is not None:
                    self._eltwise_modes(index, layer, full, other, plan,
                                        negate=swapped and op == "subtract")
                    return
        self._eltwise_boxes(index, layer)

    def _eltwise_modes(self, index: int, layer: Layer, full: Value, other: Value, plan,
                       negate: bool) -> None:
        mode, rows, cols = plan
        op = "add" if negate else layer.attrs["op"]  # c - x  ==  (-x) + c
        b = self.b
        a_t, b_t, y_t = self.tid(full), self.tid(other), self.tid(layer.output)
        tiles = list(self._elementwise_tiles(rows, cols, 3))
        _, _, _, _, row_blk, col_blk = tiles[0]
        b_elems = {"none": row_blk * col_blk, "channel": row_blk, "pixel": col_blk,
                   "scalar": 1}[mode]
        addr = self.layout([("a tiles", row_blk * col_blk * self.elem, True),
                            ("b tiles", max(b_elems * self.elem, T.ALIGN), True),
                            ("output tiles", row_blk * col_blk * self.elem, True),
                            ("-1", T.ALIGN if negate else 0, False)])
        a_bufs, b_bufs, o_bufs = addr["a tiles"], addr["b tiles"], addr["output tiles"]
        minus = addr.get("-1")
        if negate:
            m_t = b.constant(f"m{index}", np.array([-1.0], np.float16))
            b.dma_load(m_t, minus, (1,))
            b.sync(dma=True)
        steps = []
        for j, (r0, rn, c0, cn, _, _) in enumerate(tiles):
            ab, bb_, ob = a_bufs[j % 2], b_bufs[j % 2], o_bufs[j % 2]
            loads = [lambda ab=ab, r0=r0, rn=rn, c0=c0, cn=cn: b.dma_load(
                a_t, ab, (rn, cn), (cols, 1), (cn, 1), r0 * cols + c0)]
            if mode == "none":
                loads.append(lambda bb_=bb_, r0=r0, rn=rn, c0=c0, cn=cn: b.dma_load(
                    b_t, bb_, (rn, cn), (cols, 1), (cn, 1), r0 * cols + c0))
            elif mode == "channel":
                loads.append(lambda bb_=bb_, r0=r0, rn=rn: b.dma_load(b_t, bb_, (rn,), (1,),
                                                                      (1,), r0))
            elif mode == "pixel":
                loads.append(lambda bb_=bb_, c0=c0, cn=cn: b.dma_load(b_t, bb_, (cn,), (1,),
                                                                      (1,), c0))
            else:
                loads.append(lambda bb_=bb_: b.dma_load(b_t, bb_, (1,), (1,), (1,), 0))

            def compute(ab=ab, bb_=bb_, ob=ob, rn=rn, cn=cn):
                src = ab
                if negate:
                    b.eltwise(ab, minus, ob, rn, cn, "multiply", broadcast="scalar")
                    src = ob
                b.eltwise(src, bb_, ob, rn, cn, op, broadcast=mode)

            steps.append(Step(loads=loads, compute=[compute], store=[
                lambda ob=ob, r0=r0, rn=rn, c0=c0, cn=cn: b.dma_store(
                    y_t, ob, (rn, cn), (cols, 1), (cn, 1), r0 * cols + c0)]))
        self.pipeline(steps)

    def _eltwise_boxes(self, index: int, layer: Layer) -> None:
        """Any broadcast of both operands: each tile's operands are DMA boxes with stride 0
        along the dimensions they broadcast, so ELTWISE sees two dense tiles."""
        x, y = layer.inputs
        plan = broadcast_box(layer.output.shape, x.shape, y.shape)
        if plan is None:
            raise BuildError(f"element-wise broadcast of {x.shape} and {y.shape} to "
                             f"{layer.output.shape} needs more than 4 DMA box dimensions")
        dims, (sx, sy) = plan
        out_strides = _dense_strides(dims)
        budget = max(1, (self.spec.hardware["sram_bytes"] // 6 - T.ALIGN) // self.elem)
        split = 0
        while split < len(dims) - 1 and int(np.prod(dims[split + 1:])) > budget:
            split += 1
        inner = int(np.prod(dims[split + 1:]))
        chunk = max(1, min(dims[split], budget // inner))
        tile = chunk * inner
        b = self.b
        x_t, y_t, o_t = self.tid(x), self.tid(y), self.tid(layer.output)
        addr = self.layout([("a tiles", tile * self.elem, True), ("b tiles", tile * self.elem,
                                                                  True),
                            ("output tiles", tile * self.elem, True)])
        steps = []
        for j, (outer, c0) in enumerate((o, c) for o in np.ndindex(*dims[:split])
                                        for c in range(0, dims[split], chunk)):
            cn = min(chunk, dims[split] - c0)
            box = (cn,) + tuple(dims[split + 1:])
            dense = _dense_strides(box)

            def offset(strides, outer=outer, c0=c0):
                return sum(i * st for i, st in zip(outer, strides)) + c0 * strides[split]

            ab, bb_, ob = (addr[k][j % 2] for k in ("a tiles", "b tiles", "output tiles"))
            n = cn * inner
            steps.append(Step(
                loads=[lambda ab=ab, box=box, dense=dense, o=offset(sx):
                       b.dma_load(x_t, ab, box, sx[split:], dense, o),
                       lambda bb_=bb_, box=box, dense=dense, o=offset(sy):
                       b.dma_load(y_t, bb_, box, sy[split:], dense, o)],
                compute=[lambda ab=ab, bb_=bb_, ob=ob, n=n:
                         b.eltwise(ab, bb_, ob, 1, n, layer.attrs["op"])],
                store=[lambda ob=ob, box=box, dense=dense, o=offset(out_strides):
                       b.dma_store(o_t, ob, box, out_strides[split:], dense, o)]))
        self.pipeline(steps)

    def _act(self, index: int, layer: Layer) -> None:
        size = layer.output.size
        x_t, y_t = self.tid(layer.inputs[0]), self.tid(layer.output)
        tiles = list(self._elementwise_tiles(1, size, 2))
        chunk = tiles[0][5]
        addr = self.layout([("act inputs", chunk * self.elem, True),
                            ("act outputs", chunk * self.elem, True)])
        in_bufs, out_bufs = addr["act inputs"], addr["act outputs"]
        act = layer.act
        steps = []
        for j, (_, _, c0, cn, _, _) in enumerate(tiles):
            ib, ob = in_bufs[j % 2], out_bufs[j % 2]
            steps.append(Step(
                loads=[lambda ib=ib, c0=c0, cn=cn: self.b.dma_load(x_t, ib, (cn,), (1,), (1,),
                                                                   c0)],
                compute=[lambda ib=ib, ob=ob, cn=cn: self.b.act(ib, ob, cn, "float16", act.name,
                                                                act.lo, act.hi)],
                store=[lambda ob=ob, c0=c0, cn=cn: self.b.dma_store(y_t, ob, (cn,), (1,), (1,),
                                                                    c0)]))
        self.pipeline(steps)

    def _concat(self, index: int, layer: Layer) -> None:
        axis = layer.attrs["axis"]
        out_shape = layer.output.shape
        outer = int(np.prod(out_shape[:axis]))
        inner = int(np.prod(out_shape[axis + 1:]))
        y_t = self.tid(layer.output)
        row = out_shape[axis] * inner
        steps = []
        buf_elems = self.spec.hardware["sram_bytes"] // 4 // self.elem
        bufs = self.move_buffers(buf_elems * self.elem, "concat")
        start = 0
        for value in layer.inputs:
            width = value.shape[axis] * inner
            x_t = self.tid(value)
            rows_blk = max(1, min(outer, buf_elems // width)) if width <= buf_elems else 1
            col_blk = min(width, buf_elems)
            for r0 in range(0, outer, rows_blk):
                rn = min(rows_blk, outer - r0)
                for c0 in range(0, width, col_blk):
                    cn = min(col_blk, width - c0)
                    buf = bufs[len(steps) % 3]
                    steps.append(Step(
                        loads=[lambda buf=buf, x_t=x_t, r0=r0, rn=rn, c0=c0, cn=cn, width=width:
                               self.b.dma_load(x_t, buf, (rn, cn), (width, 1), (cn, 1),
                                               r0 * width + c0)],
                        store=[lambda buf=buf, r0=r0, rn=rn, c0=c0, cn=cn, start=start:
                               self.b.dma_store(y_t, buf, (rn, cn), (row, 1), (cn, 1),
                                                r0 * row + start + c0)]))
            start += width
        self.pipeline(steps)

    def _resize(self, index: int, layer: Layer) -> None:
        """out_c = Rh @ X_c @ Rw^T per channel: two GEMMs with interpolation matrices."""
        n, c, h, w = layer.inputs[0].shape
        c *= n  # [N*C][H][W] planes
        _, _, ho, wo = layer.output.shape
        a = layer.attrs
        rh = interpolation_matrix(h, ho, a["method"], a["coordinate"], a["rounding"])
        rw = interpolation_matrix(w, wo, a["method"], a["coordinate"], a["rounding"])
        b = self.b
        rh_t = b.constant(f"rh{index}", rh.astype(np.float16))
        rwt_t = b.constant(f"rw{index}", np.ascontiguousarray(rw.T).astype(np.float16))
        need = (ho * h + w * wo) * self.elem + 2 * (h * w + h * wo + ho * wo) * self.elem + \
            (h * wo + ho * wo) * T.ACC
        if need > self.spec.hardware["sram_bytes"]:
            raise BuildError(f"NPU compiler: resize {h}x{w}->{ho}x{wo} does not fit the SRAM")
        addr = self.layout([("Rh", ho * h * self.elem, False), ("Rw", w * wo * self.elem, False),
                            ("X", h * w * self.elem, True), ("T acc", h * wo * T.ACC, False),
                            ("T", h * wo * self.elem, False), ("O acc", ho * wo * T.ACC, False),
                            ("O", ho * wo * self.elem, True)])
        rh_a, rw_a, x_bufs = addr["Rh"], addr["Rw"], addr["X"]
        t_acc, t_buf, o_acc, o_bufs = addr["T acc"], addr["T"], addr["O acc"], addr["O"]
        x_t, y_t = self.tid(layer.inputs[0]), self.tid(layer.output)
        steps = []
        for ch in range(c):
            xb, ob = x_bufs[ch % 2], o_bufs[ch % 2]
            steps.append(Step(
                loads=[lambda xb=xb, ch=ch: b.dma_load(x_t, xb, (h * w,), (1,), (1,),
                                                       ch * h * w)],
                compute=[lambda xb=xb: b.gemm(xb, rw_a, t_acc, h, w, wo),
                         lambda: b.epilogue(t_acc, t_buf, h, wo),
                         lambda: b.gemm(rh_a, t_buf, o_acc, ho, h, wo),
                         lambda ob=ob: b.epilogue(o_acc, ob, ho, wo)],
                store=[lambda ob=ob, ch=ch: b.dma_store(y_t, ob, (ho * wo,), (1,), (1,),
                                                        ch * ho * wo)]))
        steps[0].loads = [lambda: b.dma_load(rh_t, rh_a, (ho * h,)),
                          lambda: b.dma_load(rwt_t, rw_a, (w * wo,))] + steps[0].loads
        self.pipeline(steps)


def _dense_strides(dims) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(dims):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def dram_shape(shape) -> tuple[int, ...]:
    """A tensor's shape as the program declares it: rank at most 4 (leading 1s dropped,
    then leading dims merged); the bytes, dense row-major, are the same."""
    dims = list(shape) or [1]
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    while len(dims) > 4:
        dims[0:2] = [dims[0] * dims[1]]
    return tuple(dims)


def _batch_offsets(shape, out_batch, plane: int) -> list[int]:
    """Element offset of each output batch index into an operand with batch ``shape``
    (broadcast dims of size 1 repeat)."""
    shape = (1,) * (len(out_batch) - len(shape)) + tuple(shape)
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    strides = list(reversed(strides))
    offsets = []
    for idx in np.ndindex(*out_batch) if out_batch else [()]:
        off = sum((i if d > 1 else 0) * st for i, d, st in zip(idx, shape, strides))
        offsets.append(off * plane)
    return offsets


def compile_graph(spec: AcceleratorSpec, graph: Graph, tilings: dict | None = None):
    """``(Program, {layer index: Tiling}, {layer index: closing SYNC index})``."""
    emitter = Emitter(spec, graph, tilings)
    program = emitter.emit()
    return program, emitter.chosen, emitter.layer_ends


def value_tensors(program, graph: Graph) -> dict[int, int]:
    """``{id(root value): tensor index}`` of a program ``compile_graph`` made from ``graph``:
    where each input and each layer's output lives in DRAM (the layer-wise accuracy check
    reads them). Follows ``Emitter._declare``: inputs by name, a layer output that is a
    graph output in ``out<i>`` (the first output it is), every other one in a scratch
    tensor named after it."""
    index = {(t.kind, t.name): i for i, t in enumerate(program.tensors)}
    found: dict[int, int] = {}
    for v in graph.inputs:
        found[id(v.root)] = index[("input", v.name)]
    produced = {id(layer.output.root) for layer in graph.layers}
    for i, v in enumerate(graph.outputs):
        if id(v.root) in produced and id(v.root) not in found:
            found[id(v.root)] = index[("output", f"out{i}")]
    for layer in graph.layers:
        root = layer.output.root
        if id(root) not in found:
            found[id(root)] = index[("scratch", root.name)]
    return found



