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
from typing import Callable, NamedTuple

import numpy as np

from ...errors import BuildError, LoweringFailures
from ...targets.spec import AcceleratorSpec
from . import tiling as T
from .graph import Graph, Layer, Value, _reason, broadcast_box, broadcast_mode
from ..program import Program, ProgramBuilder
from .resize import interpolation_matrix


@dataclass
class Step:
    loads: list[Callable[[], None]] = field(default_factory=list)
    compute: list[Callable[[], None]] = field(default_factory=list)
    store: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class PackedWeights:
    """A MAC layer's weights as one DRAM constant, packed block by block so every block is
    one contiguous DMA: ``offsets[key]`` is a block's ``(first element, elements)``."""

    tensor: int
    offsets: dict
    size: int


@dataclass
class MacPlan:
    """What every step of a MAC layer (conv2d, depthwise_conv2d, dense, matmul) refers
    to: its weights and whether they stay in SRAM, its per-channel epilogue constants, and
    its SRAM buffers (pairs: one per step or per tile parity, so the DMA fills one while the MAC
    array reads the other)."""

    layer: Layer
    resident: bool                 # all weights loaded once, before the first step
    weights: PackedWeights | None  # None: a matmul's B streams from its own tensor
    params: tuple | None           # (DRAM tensor, elements) of ``Emitter._channel_params``
    bias: int | None               # their SRAM copy
    scalars: int | None            # an int8 residual's rescale multiplier, lo and hi
    w_bufs: tuple                  # (the resident weights,) or a pair for streamed blocks
    in_bufs: tuple                 # input (conv) or A (gemm) tiles, per step
    acc: int
    out_bufs: tuple                # output tiles, per tile
    res_bufs: tuple | None         # residual tiles, per tile


class ConvTile(NamedTuple):
    """An output tile of a conv: rows ``[r0, r0 + valid)`` of the channels ``[o0, o0 + on)``
    (block ``oi``) of one group of one image. ``x`` and ``y`` are that image's and group's
    first channel in the input and the output, both read as [N*C][H][W]."""

    x: int
    y: int
    group: int
    oi: int
    o0: int
    on: int
    r0: int
    valid: int


class GemmTile(NamedTuple):
    """An output tile of a dense or matmul: rows ``[m0, m0 + mm)`` of the columns
    ``[n0, n0 + nn)`` (block ``ni``) of the matrix at batch index ``bi``."""

    bi: int
    ni: int
    n0: int
    nn: int
    m0: int
    mm: int


# The Emitter method that emits each layer kind (a reshape emits nothing).
EMITTERS = {"conv2d": "_conv", "depthwise_conv2d": "_dwconv", "dense": "_dense",
            "matmul": "_matmul", "pool2d": "_pool", "elementwise": "_eltwise",
            "activation": "_act", "concat": "_concat", "resize": "_resize"}


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
        """SRAM addresses for ``[(name, bytes, paired)]`` (``tiling.layout``)."""
        return T.layout(self.spec, requests)

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
                getattr(self, EMITTERS[layer.kind])(index, layer)
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

    # -- MAC layers: shapes, tilings, and what convolutions and matrix products share -----
    def _conv_shape(self, layer: Layer) -> T.ConvShape:
        """The conv's geometry; a grouped conv's channels are per group."""
        q = layer.requant
        return T.conv_shape(layer.inputs[0].shape, layer.weight.shape, layer.output.shape,
                            layer.attrs["strides"], layer.attrs["padding"],
                            layer.attrs["dilation"], int(layer.attrs.get("groups", 1)),
                            self.dtype, layer.bias is not None, layer.residual is not None,
                            (q.lo > -128) + (q.hi < 127) if q is not None else 0)

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
        if layer.kind in ("conv2d", "depthwise_conv2d"):
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

    def _pack_weights(self, index: int, blocks) -> PackedWeights:
        """The constant ``w<index>`` holding ``blocks`` (``(key, array)`` in the order the
        steps read them), each block contiguous."""
        parts, offsets, pos = [], {}, 0
        for key, block in blocks:
            offsets[key] = (pos, block.size)
            parts.append(block.reshape(-1))
            pos += block.size
        return PackedWeights(self.b.constant(f"w{index}", np.concatenate(parts)), offsets, pos)

    def _mac_plan(self, index: int, layer: Layer, need: dict, resident: bool,
                  weights: PackedWeights | None, operands, channels: int) -> MacPlan:
        """Lay out a MAC layer's SRAM as its tiling's ``need`` says and declare its
        per-channel constants. ``operands`` names the streamed tiles and their keys in
        ``need``, weight side first: conv ``(("weights", "w"), ("input tiles", "in"))``
        (the names are what an SRAM overflow reports)."""
        (w_name, _), (in_name, _) = operands
        addr = self.layout(T.mac_buffers(need, resident, operands))
        return MacPlan(layer, resident, weights, self._channel_params(index, layer, channels),
                       addr.get("bias"), addr.get("scalars"),
                       (addr[w_name],) if resident else addr[w_name], addr[in_name],
                       addr["accumulators"], addr["output tiles"], addr.get("residual tiles"))

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

    @staticmethod
    def _mac_steps(tiles, blocks, make_step) -> list[Step]:
        """A MAC layer's steps: per output tile, one per reduction block, accumulating.
        ``make_step(tile, k, step_parity, tile_parity)`` builds the step of block ``k``;
        operand buffers alternate per step, output (and residual) buffers per tile."""
        steps: list[Step] = []
        for tile_no, tile in enumerate(tiles):
            for k in range(len(blocks)):
                steps.append(make_step(tile, k, len(steps) % 2, tile_no % 2))
        return steps

    def _weight_block(self, plan: MacPlan, step: Step, key, sbuf: int) -> int:
        """The SRAM address of weight block ``key`` in a step: inside the resident copy, or
        the step's buffer, which a load of its own fills."""
        offset, size = plan.weights.offsets[key]
        if plan.resident:
            return plan.w_bufs[0] + offset * self.elem
        addr = plan.w_bufs[sbuf]
        step.loads.append(lambda: self.b.dma_load(plan.weights.tensor, addr, (size,), (1,),
                                                  (1,), offset))
        return addr

    def _finish_tile(self, plan: MacPlan, step: Step, obuf: int, store, c0: int, cn: int,
                     pixels: int, channels: int, channel_last: bool, residual=None) -> None:
        """Close an output tile in its last step: the epilogue turns the accumulators into
        ``obuf`` (channels ``[c0, c0 + cn)``), and ``store`` writes it to DRAM (the pipeline
        runs it while the next step computes)."""
        step.compute.append(self._epilogue(plan, obuf, c0, cn, pixels, channels, channel_last,
                                           residual))
        step.store.append(store)

    def _epilogue(self, plan: MacPlan, obuf, c0, cn, pixels, channels, channel_last,
                  residual=None):
        """The instructions that turn accumulators into the layer's output tile."""
        b, layer, acc, params = self.b, plan.layer, plan.acc, plan.bias
        if self.dtype == "int8":
            q = layer.requant
            bias = params + c0 * T.ACC if layer.bias is not None else None
            mult, shift = params + (channels + c0) * T.ACC, params + (2 * channels + c0) * T.ACC
            if residual is None:
                return lambda: b.requant(acc, obuf, cn, pixels, mult, shift, bias, q.zp, q.lo,
                                         q.hi, channel_last=channel_last)
            scalars = plan.scalars
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

    def _mac_pipeline(self, plan: MacPlan, steps: list[Step], extra=()) -> None:
        """Run a MAC layer's steps, the first preceded by the loads all of them rely on: the
        per-channel constants, the weights when resident, then ``extra``."""
        b, pre = self.b, []
        if plan.params is not None:
            tensor, size = plan.params
            pre.append(lambda: b.dma_load(tensor, plan.bias, (size,)))
        if plan.resident:
            pre.append(lambda: b.dma_load(plan.weights.tensor, plan.w_bufs[0],
                                          (plan.weights.size,)))
        steps[0].loads = pre + list(extra) + steps[0].loads
        self.pipeline(steps)

    # -- convolutions --------------------------------------------------------------------------
    def _conv(self, index: int, layer: Layer) -> None:
        """A conv or depthwise conv: per output tile (image, group, output-channel block,
        row tile), one step per input-channel block; the tile's last step adds the
        residual (if any) in the epilogue and stores the tile."""
        s = self._conv_shape(layer)
        t = self._tiling(index, T.choose_conv, s)
        need = T.conv_sram(s, t)
        if sum(need.values()) > self.spec.hardware["sram_bytes"]:
            raise BuildError(f"NPU compiler: tiling {t} of layer {index} needs "
                             f"{sum(need.values())} B of SRAM")
        oc_blocks = _blocks(s.cout, t.oc)
        ic_blocks = [(0, s.cin)] if s.depthwise else _blocks(s.cin, t.ic)
        weights = self._pack_weights(index, _conv_weight_blocks(
            layer.weight.astype(self.dtype), s, oc_blocks, ic_blocks))
        plan = self._mac_plan(index, layer, need, t.resident, weights,
                              T.CONV_OPERANDS, s.cout * s.groups)
        x_t, y_t = self.tid(layer.inputs[0]), self.tid(layer.output)
        r_t = self.tid(layer.residual) if layer.residual else None
        # zero padding: columns stay zero from this fill; rows come from a zero vector
        for buf in plan.in_bufs:
            self.b.fill(buf, need["in"] // 2 // self.elem, self.dtype, 0)
        self.b.sync(compute=True)
        scalars = self._residual_scalars(index, plan)
        io = (x_t, y_t, r_t, self.zeros(s.w))  # DRAM: input, output, residual, zero rows
        steps = self._mac_steps(
            _conv_tiles(s, t.rows, oc_blocks), ic_blocks,
            lambda tile, ki, sbuf, tbuf: self._conv_step(plan, s, t.rows, io, tile, ic_blocks,
                                                         ki, sbuf, tbuf))
        self._mac_pipeline(plan, steps, scalars)

    def _residual_scalars(self, index: int, plan: MacPlan) -> list[Callable[[], None]]:
        """The load of an int8 residual's rescale scalars (multiplier, lo, hi), when the
        layer has SRAM for them."""
        if plan.scalars is None:
            return []
        q = plan.layer.requant
        data = np.array([q.residual_mult, q.lo, q.hi, 0], np.int8)
        tensor = self.b.constant(f"r{index}", data)
        return [lambda: self.b.dma_load(tensor, plan.scalars, (data.size,))]

    def _conv_step(self, plan: MacPlan, s: T.ConvShape, rows: int, io, tile: ConvTile,
                   ic_blocks, ki: int, sbuf: int, tbuf: int) -> Step:
        """Input-channel block ``ki`` of a conv tile: load its input rows (zero rows past
        the image) and its weight block, run the MAC; the last block also loads the
        residual tile, runs the epilogue and stores the tile."""
        x_t, y_t, r_t, zero = io
        i0, inn = ic_blocks[ki]
        step, ibuf = Step(), plan.in_bufs[sbuf]
        c0, chans = (tile.x + tile.o0, tile.on) if s.depthwise else (tile.x + i0, inn)
        step.loads.append(self._input_rows(x_t, zero, ibuf, c0, chans, tile.r0 * s.sh - s.pad[0],
                                           s.rows_in(rows), s, s.pad[1]))
        waddr = self._weight_block(plan, step, (tile.group, tile.oi, ki), sbuf)
        step.compute.append(self._conv_mac(s, rows, plan.acc, ibuf, waddr, tile.on, inn,
                                           accumulate=ki > 0))
        if ki == len(ic_blocks) - 1:
            def tile_rows(dma, tensor, buf):
                return self._tile_rows(dma, tensor, buf, tile.y + tile.o0, tile.on, tile.r0,
                                       tile.valid, rows, s.hout, s.wout)

            rbuf = None
            if plan.res_bufs is not None:
                rbuf = plan.res_bufs[tbuf]
                step.loads.append(tile_rows(self.b.dma_load, r_t, rbuf))
            obuf = plan.out_bufs[tbuf]
            self._finish_tile(plan, step, obuf, tile_rows(self.b.dma_store, y_t, obuf),
                              tile.group * s.cout + tile.o0, tile.on, rows * s.wout,
                              s.cout * s.groups, False, rbuf)
        return step

    def _conv_mac(self, s: T.ConvShape, rows: int, acc: int, ibuf: int, waddr: int, oc: int,
                  ic: int, accumulate: bool):
        """The MAC instruction of a conv step: ``oc`` output channels of a row tile from
        ``ic`` input channels (depthwise: channel by channel, one block of ``oc``)."""
        b, rows_in = self.b, s.rows_in(rows)
        window = ((s.kh, s.kw), (s.sh, s.sw), (s.dh, s.dw))
        if s.depthwise:
            return lambda: b.dwconv(ibuf, waddr, acc, oc, rows_in, s.wp, rows, s.wout, *window,
                                    dtype=self.dtype)
        return lambda: b.conv(ibuf, waddr, acc, ic, rows_in, s.wp, oc, rows, s.wout, *window,
                              dtype=self.dtype, accumulate=accumulate)

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
        """A dense (``weight``: a constant B) or a matmul (B the tensor ``b_val``, batch
        dims broadcast): per output tile (batch index, column block, row block), one step
        per reduction block; the tile's last step runs the epilogue and stores the tile."""
        s = self._gemm_shape(layer)
        batches = self._gemm_batches(layer, s, a_val, b_val, weight)
        t = self._tiling(index, T.choose_gemm, s)
        n_blocks, k_blocks = _blocks(s.n, t.oc), _blocks(s.k, t.ic)
        a_t, y_t = self.tid(a_val), self.tid(layer.output)
        weights = None
        if weight is not None:
            w = weight.astype(self.dtype)
            weights = self._pack_weights(index, (((ni, ki), w[k0:k0 + kn, n0:n0 + nn])
                                                 for ni, (n0, nn) in enumerate(n_blocks)
                                                 for ki, (k0, kn) in enumerate(k_blocks)))
        io = (a_t, self.tid(b_val) if weight is None else weights.tensor, y_t)  # DRAM A, B, Y
        plan = self._mac_plan(index, layer, T.gemm_sram(s, t), t.resident and weight is not None,
                              weights, T.GEMM_OPERANDS, s.n)
        tiles = [GemmTile(bi, ni, n0, nn, m0, mm) for bi in range(s.batch)
                 for ni, (n0, nn) in enumerate(n_blocks) for m0, mm in _blocks(s.m, t.rows)]
        steps = self._mac_steps(tiles, k_blocks, lambda tile, kj, sbuf, tbuf: self._gemm_step(
            plan, s, io, batches, tile, k_blocks, kj, sbuf, tbuf))
        self._mac_pipeline(plan, steps)

    def _gemm_batches(self, layer: Layer, s: T.GemmShape, a_val: Value, b_val: Value | None,
                      weight: np.ndarray | None) -> tuple[list[int], list[int]]:
        """Element offsets of A's and B's matrix at each output batch index (a dense: one)."""
        if weight is not None:
            return [0], [0]
        out_batch = layer.output.shape[:-2]
        return (_batch_offsets(a_val.shape[:-2], out_batch, s.m * s.k),
                _batch_offsets(b_val.shape[:-2], out_batch, s.k * s.n))

    def _gemm_step(self, plan: MacPlan, s: T.GemmShape, io, batches, tile: GemmTile, k_blocks,
                   kj: int, sbuf: int, tbuf: int) -> Step:
        """Reduction block ``kj`` of a gemm tile: load its A block and its B block (a
        weight block, or a matmul's B box), run GEMM; the last block also runs the
        epilogue and stores the tile."""
        (a_t, b_t, y_t), (a_batch, b_batch) = io, batches
        k0, kn = k_blocks[kj]
        b, step, abuf = self.b, Step(), plan.in_bufs[sbuf]
        a_off = a_batch[tile.bi] + tile.m0 * s.k + k0
        step.loads.append(lambda: b.dma_load(a_t, abuf, (tile.mm, kn), (s.k, 1), (kn, 1), a_off))
        if plan.weights is not None:
            baddr = self._weight_block(plan, step, (tile.ni, kj), sbuf)
        else:
            baddr = plan.w_bufs[sbuf]
            b_off = b_batch[tile.bi] + k0 * s.n + tile.n0
            step.loads.append(lambda: b.dma_load(b_t, baddr, (kn, tile.nn), (s.n, 1),
                                                 (tile.nn, 1), b_off))
        step.compute.append(lambda: b.gemm(abuf, baddr, plan.acc, tile.mm, kn, tile.nn,
                                           dtype=self.dtype, accumulate=kj > 0))
        if kj == len(k_blocks) - 1:
            obuf = plan.out_bufs[tbuf]
            y_off = tile.bi * s.m * s.n + tile.m0 * s.n + tile.n0
            self._finish_tile(plan, step, obuf, lambda: b.dma_store(
                y_t, obuf, (tile.mm, tile.nn), (s.n, 1), (tile.nn, 1), y_off),
                tile.n0, tile.nn, tile.mm, s.n, True)
        return step

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


def _blocks(total: int, size: int) -> list[tuple[int, int]]:
    """``(start, length)`` of the blocks of ``size`` that cover ``range(total)``."""
    return [(c, min(size, total - c)) for c in range(0, total, size)]


def _conv_weight_blocks(w: np.ndarray, s: T.ConvShape, oc_blocks, ic_blocks):
    """A conv's weight blocks, keyed ``(group, oc block, ic block)``, in the order its steps
    read them."""
    for g in range(s.groups):
        wg = w[g * s.cout:(g + 1) * s.cout]
        for oi, (o0, on) in enumerate(oc_blocks):
            for ki, (i0, inn) in enumerate(ic_blocks):
                yield (g, oi, ki), wg[o0:o0 + on] if s.depthwise else wg[o0:o0 + on, i0:i0 + inn]


def _conv_tiles(s: T.ConvShape, rows: int, oc_blocks):
    """A conv's output tiles in pipeline order: per image, group, output-channel block and
    row tile (tensors are read as [N*C][H][W])."""
    for n in range(s.batch):
        for g in range(s.groups):
            x, y = n * s.cin * s.groups + g * s.cin, n * s.cout * s.groups + g * s.cout
            for oi, (o0, on) in enumerate(oc_blocks):
                for r0 in range(0, s.hout, rows):
                    yield ConvTile(x, y, g, oi, o0, on, r0, min(rows, s.hout - r0))


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



