"""Multi-scale deformable attention (Deformable DETR, BEVFormer) as ``relax.cruise.*``.

``multi_scale_deformable_attention(value, spatial_shapes, level_start_index,
sampling_locations, attention_weights)`` computes, like mmcv's
``multi_scale_deformable_attn_pytorch``::

    out[n, q, m*D + d] = sum_{l, p} attention_weights[n, q, m, l, p]
                         * bilinear(value level l of head m, sampling_locations[n, q, m, l, p])

- ``value`` (N, S, M, D): the L feature levels flattened and concatenated, S = sum H_l*W_l;
- ``spatial_shapes`` (L, 2) integer rows (H_l, W_l); ``level_start_index`` (L,) the offset
  of each level in S (the exclusive cumulative sum of H_l*W_l);
- ``sampling_locations`` (N, Lq, M, L, P, 2): normalized (x, y), 0..1 spans the level;
- ``attention_weights`` (N, Lq, M, L, P); output (N, Lq, M*D).

Sampling is ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``:
pixel coordinate ``loc * W - 0.5``, a corner outside the level contributes 0.

``spatial_shapes`` and ``level_start_index`` fix the kernel's loop bounds, so they must be
constants once the model's weights are bound (registered buffers, ONNX initializers). The
Relax op keeps them as operands rather than attributes: TVM's torch importer presents a
buffer to a converter as a ``relax.Var`` and binds it to its constant only after the whole
graph is converted; they are read (and checked) when the op is legalized.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from ..errors import CustomOpError
from . import registry as R

NAME = "multi_scale_deformable_attention"
_OP = "relax.cruise." + NAME
ONNX_DOMAIN = "com.cruise"
ONNX_OP = "MultiScaleDeformableAttention"
# mmdeploy's symbolic for mmcv's MultiScaleDeformableAttnFunction (mmdeploy/mmcv/ops/
# multi_scale_deform_attn.py): same five inputs in the same order, attribute im2col_step.
MMDEPLOY_DOMAIN = "mmdeploy"
MMDEPLOY_OP = "MMCVMultiScaleDeformableAttention"
_FLOATS = ("float32",)
_INTS = ("int32", "int64")
_CONSTANT_FIX = ("register them as buffers of the module (self.register_buffer(...)) or "
                 "ONNX initializers, not model inputs, and fix the input shapes: they set "
                 "the kernel's loop bounds at build time")


# ---------------------------------------------------------------- types and checks


def _levels_from(ss, lsi, where: str) -> tuple[list[tuple[int, int]], list[int]]:
    """Checked ``([(H, W), ...], starts)`` from the two index operands as numpy arrays."""
    ss, lsi = np.asarray(ss), np.asarray(lsi)
    if ss.ndim != 2 or ss.shape[1] != 2:
        raise CustomOpError(f"{where}: spatial_shapes must have shape (L, 2) with rows (H, W), "
                         f"got {ss.shape}")
    if lsi.shape != (ss.shape[0],):
        raise CustomOpError(f"{where}: level_start_index must have shape ({ss.shape[0]},) "
                         f"(one offset per level of spatial_shapes), got {lsi.shape}")
    shapes = [(int(h), int(w)) for h, w in ss.tolist()]
    if any(h < 1 or w < 1 for h, w in shapes):
        raise CustomOpError(f"{where}: spatial_shapes has an empty level {shapes}; every "
                         "level needs H >= 1 and W >= 1")
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in shapes])[:-1]]).tolist()
    if [int(s) for s in lsi.tolist()] != starts:
        raise CustomOpError(f"{where}: level_start_index {lsi.tolist()} disagrees with "
                         f"spatial_shapes {shapes}: it must be the offsets {starts} "
                         "(the exclusive cumulative sum of H*W). Fix: compute it from "
                         "spatial_shapes")
    return shapes, [int(s) for s in starts]


def constant_levels(call) -> tuple[list[tuple[int, int]], list[int]]:
    """The call's checked ``(spatial shapes, level starts)``; ValueError if not constants."""
    out = []
    for expr, what in ((call.args[1], "spatial_shapes"), (call.args[2], "level_start_index")):
        if not isinstance(expr, tvm.ir.expr.Constant):
            raise CustomOpError(
                f"{_OP}: {what} is not a constant at build time (it is "
                f"{getattr(expr, 'name', None) or type(expr).__name__!r}: a model input or "
                "a computed tensor); it fixes the kernel's loop bounds, so it must be "
                f"known when the model is compiled. Fix: {_CONSTANT_FIX}")
        out.append(expr.value.numpy())
    return _levels_from(out[0], out[1], _OP)


def _infer(call) -> relax.TensorType:
    if len(call.args) != 5:
        raise CustomOpError(f"{_OP} takes 5 operands (value, spatial_shapes, level_start_index, "
                         f"sampling_locations, attention_weights), got {len(call.args)}")
    value, ss, lsi, loc, attn = call.args
    (n, s, m, d), dtype = R.tensor_type(value, "value (N, S, M, D)", _OP, 4, _FLOATS)
    (nl, two), _ = R.tensor_type(ss, "spatial_shapes (L, 2)", _OP, 2, _INTS)
    lsi_shape, _ = R.tensor_type(lsi, "level_start_index (L,)", _OP, 1, _INTS)
    if two != 2 or lsi_shape != (nl,):
        raise CustomOpError(f"{_OP}: spatial_shapes must be (L, 2) rows (H, W) and "
                         f"level_start_index (L,), got {(nl, two)} and {lsi_shape}")
    lshape, _ = R.tensor_type(loc, "sampling_locations (N, Lq, M, L, P, 2)", _OP, 6, (dtype,))
    ashape, _ = R.tensor_type(attn, "attention_weights (N, Lq, M, L, P)", _OP, 5, (dtype,))
    nq, npt = lshape[1], lshape[4]
    want = (n, nq, m, nl, npt, 2)
    if lshape != want:
        raise CustomOpError(f"{_OP}: sampling_locations must have shape (N, Lq, M, L, P, 2) = "
                         f"{want} for value {(n, s, m, d)} and {nl} levels, got {lshape}")
    if ashape != want[:5]:
        raise CustomOpError(f"{_OP}: attention_weights must have shape (N, Lq, M, L, P) = "
                         f"{want[:5]} to match sampling_locations {lshape}, got {ashape}")
    if isinstance(ss, tvm.ir.expr.Constant) and isinstance(lsi, tvm.ir.expr.Constant):
        shapes, _ = constant_levels(call)
        _check_total(shapes, s)
    return relax.TensorType([n, nq, m * d], dtype)


def _check_total(shapes, s: int) -> None:
    total = sum(h * w for h, w in shapes)
    if total != s:
        raise CustomOpError(f"{_OP}: value has S = {s} positions but spatial_shapes {shapes} "
                         f"sum to {total} (S must be sum H*W over levels). Fix: pass the "
                         "spatial shapes of the levels value was flattened from")


# ---------------------------------------------------------------- TE kernel


def _per_level(l, values, dtype):
    """``values[l]`` for a loop variable ``l`` (a few levels: a select chain)."""
    out = tirx.const(values[-1], dtype)
    for i in range(len(values) - 2, -1, -1):
        out = tirx.Select(l == i, tirx.const(values[i], dtype), out)
    return out


def kernel(value, loc, attn, shapes, starts):
    """TE compute of the op for fixed ``shapes`` [(H, W)] and ``starts``.

    Two stages: per (n, q, m, l, p) and bilinear corner k (0: y0x0, 1: y0x1, 2: y1x0, 3:
    y1x1) the position in S and its weight times the attention weight (0 outside the
    level); then the weighted gather over (l, p, k), contiguous in D. A zero-weight corner
    is skipped, so an inf/nan value there does not make a nan (PyTorch multiplies it).
    """
    n_, _, m_, d_ = (int(v) for v in value.shape)
    _, nq, _, nl, npt, _ = (int(v) for v in loc.shape)
    fdt = value.dtype

    def corner(n, q, m, l, p, k):
        h_f = _per_level(l, [float(h) for h, _ in shapes], fdt)
        w_f = _per_level(l, [float(w) for _, w in shapes], fdt)
        h_i = _per_level(l, [h for h, _ in shapes], "int32")
        w_i = _per_level(l, [w for _, w in shapes], "int32")
        # Clamped so that the int cast cannot overflow; beyond -1 or W every corner is
        # outside anyway, so the result is unchanged.
        x = tirx.max(tirx.min(loc[n, q, m, l, p, 0] * w_f - 0.5, w_f + 1.0), -2.0)
        y = tirx.max(tirx.min(loc[n, q, m, l, p, 1] * h_f - 0.5, h_f + 1.0), -2.0)
        x0, y0 = tirx.floor(x), tirx.floor(y)
        fx, fy = x - x0, y - y0
        right, lower = k % 2 == 1, k // 2 == 1
        xi = x0.astype("int32") + tirx.Select(right, 1, 0)
        yi = y0.astype("int32") + tirx.Select(lower, 1, 0)
        wx = tirx.Select(right, fx, 1.0 - fx)
        wy = tirx.Select(lower, fy, 1.0 - fy)
        valid = tirx.all(xi >= 0, xi < w_i, yi >= 0, yi < h_i)
        start = _per_level(l, starts, "int32")
        return valid, start + yi * w_i + xi, wx * wy * attn[n, q, m, l, p]

    shape = (n_, nq, m_, nl, npt, 4)
    # an outside corner keeps an in-bounds position (0) and weight 0
    index = te.compute(shape, lambda *i: tirx.Select(corner(*i)[0], corner(*i)[1], 0),
                       name="msda_index")
    weight = te.compute(shape, lambda *i: tirx.Select(corner(*i)[0], corner(*i)[2],
                                                      tirx.const(0.0, fdt)),
                        name="msda_weight")
    rl = te.reduce_axis((0, nl), name="l")
    rp = te.reduce_axis((0, npt), name="p")
    rk = te.reduce_axis((0, 4), name="k")

    def gather(n, q, c):
        m, d = c // d_, c % d_
        w = weight[n, q, m, rl, rp, rk]
        # Select, not only the zero weight: an inf/nan at position 0 must not leak in
        # from a corner grid_sample skips.
        return te.sum(tirx.Select(w != 0.0, w * value[n, index[n, q, m, rl, rp, rk], m, d],
                                  tirx.const(0.0, fdt)), axis=[rl, rp, rk])

    return te.compute((n_, nq, m_ * d_), gather, name="msda_out")


def _legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    shapes, starts = constant_levels(call)
    value, _, _, loc, attn = call.args
    _check_total(shapes, int(value.ty.shape.values[1].value))
    target = tvm.target.Target.current(allow_none=True)
    if target is None or "gpu" not in target.keys:
        return bb.call_te(lambda v, sl, aw: kernel(v, sl, aw, shapes, starts), value, loc,
                          attn, primfunc_name_hint="cruise_msda",
                          primfunc_attrs=R.kernel_attrs(NAME))
    # dlight's Reduction rule asserts on the data-dependent gather (TVM 0.27), so GPU
    # kernels come scheduled: one thread per output element.
    ins = [te.placeholder([int(d) for d in x.ty.shape.values], str(x.ty.dtype), name=nm)
           for x, nm in ((value, "value"), (loc, "sampling_locations"),
                         (attn, "attention_weights"))]
    out = kernel(*ins, shapes, starts)
    func = te.create_prim_func([*ins, out])
    for key, val in R.kernel_attrs(NAME).items():
        func = func.with_attr(key, val)
    gv = bb.add_func(_gpu_schedule(func, target), "cruise_msda")
    return relax.call_tir(gv, [value, loc, attn],
                          relax.TensorType([int(d) for d in out.shape], out.dtype))


def _gpu_schedule(func, target):
    sch = tvm.s_tir.Schedule(func)
    sch.compute_inline(sch.get_sblock("msda_index"))
    sch.compute_inline(sch.get_sblock("msda_weight"))
    n, q, c, *_ = sch.get_loops(sch.get_sblock("msda_out"))
    threads = min(256, int(target.attrs.get("max_num_threads", 256)))
    bx, tx = sch.split(sch.fuse(n, q, c), [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


R.define_op(NAME, "multi-scale deformable attention (Deformable DETR / BEVFormer)",
            _infer, _legalize)


def make_call(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """The Relax call ``relax.cruise.multi_scale_deformable_attention(...)``."""
    return R.call(NAME, [value, spatial_shapes, level_start_index, sampling_locations,
                         attention_weights])


# ---------------------------------------------------------------- CPU schedule


@R.kernel_schedule(NAME)
def schedule(func, target):
    """Parallel over (n, q), the corner table computed per (n, q) next to its use, the
    gather vectorized over D (contiguous in value) into a local accumulator.

    The reduction (l, p, k) stays in order for each output element: only the spatial
    loops move, so results equal the unscheduled kernel's.
    """
    sch = tvm.s_tir.Schedule(func)
    index, weight = sch.get_sblock("msda_index"), sch.get_sblock("msda_weight")
    heads = int(sch.get(sch.get_loops(index)[2]).extent)
    out = sch.get_sblock("msda_out")
    n, q, c, rl, rp, rk = sch.get_loops(out)
    channels = int(sch.get(c).extent) // heads
    m, d = sch.split(c, [None, channels])
    sch.reorder(n, q, m, rl, rp, rk, d)
    nq = sch.fuse(n, q)
    sch.parallel(nq)
    sch.compute_at(weight, nq)
    sch.compute_at(index, nq)
    # D floats per head stay in registers across the L*P*4 corners
    acc = sch.cache_write(out, 0, "local")
    sch.reverse_compute_at(acc, m)
    if channels <= 64:
        sch.vectorize(d)
        sch.vectorize(sch.get_loops(acc)[-1])
    sch.decompose_reduction(out, rl)
    return sch.mod["main"]


# ---------------------------------------------------------------- torch


def reference(value, spatial_shapes, level_start_index, sampling_locations,
              attention_weights):
    """PyTorch reference (mmcv's formulation: one ``grid_sample`` per level)."""
    import torch
    import torch.nn.functional as F

    n, s, m, d = value.shape
    _, nq, _, nl, npt, _ = sampling_locations.shape
    shapes, _ = _levels_from(spatial_shapes.cpu().numpy(), level_start_index.cpu().numpy(),
                             "cruise::" + NAME)
    if sum(h * w for h, w in shapes) != s:
        raise CustomOpError(f"cruise::{NAME}: value has S = {s} positions but spatial_shapes "
                         f"{shapes} sum to {sum(h * w for h, w in shapes)}")
    levels = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = levels[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N*M, Lq, P, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # (N*M, D, Lq, P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, nq, nl * npt)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return out.view(n, m * d, nq).transpose(1, 2).contiguous()


_SCHEMA = ("(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
           "Tensor sampling_locations, Tensor attention_weights) -> Tensor")


def _fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    n, _, m, d = value.shape
    return value.new_empty((n, sampling_locations.shape[1], m * d))


def _torch_op():
    return R.torch_custom_op(NAME, reference, _fake, schema=_SCHEMA)


# on import: a saved program calling torch.ops.cruise.* must load after importing tvm_cruise
_torch_op()

def multi_scale_deformable_attention(value, spatial_shapes, level_start_index,
                                     sampling_locations, attention_weights):
    """``torch.ops.cruise.multi_scale_deformable_attention``: traceable by ``torch.export``.

    Parameters
    ----------
    value : Tensor (N, S, M, D), float32
    spatial_shapes : Tensor (L, 2), int64 rows (H, W); a registered buffer of the model
    level_start_index : Tensor (L,), int64 offsets of the levels in S; a buffer too
    sampling_locations : Tensor (N, Lq, M, L, P, 2), normalized (x, y)
    attention_weights : Tensor (N, Lq, M, L, P)

    Returns
    -------
    Tensor (N, Lq, M * D)

    Examples
    --------
    >>> out = multi_scale_deformable_attention(v, shapes, starts, locs, weights)
    """
    return _torch_op()(value, spatial_shapes, level_start_index, sampling_locations,
                       attention_weights)


@R.torch_converter(NAME + ".default")
def _from_torch(importer, node):
    args = importer.retrieve_args(node)
    return importer.block_builder.emit(make_call(*args[:5]))


def register_onnx_symbolic(opset: int = 17) -> None:
    """Let the legacy exporter (``torch.onnx.export(..., dynamo=False)``) write the op as
    ``com.cruise::MultiScaleDeformableAttention``."""
    from torch.onnx import register_custom_op_symbolic

    _torch_op()

    def symbolic(g, value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights):
        out = g.op(f"{ONNX_DOMAIN}::{ONNX_OP}", value, spatial_shapes, level_start_index,
                   sampling_locations, attention_weights)
        vs, ls = value.type().sizes(), sampling_locations.type().sizes()
        if vs is not None and ls is not None:
            out.setType(value.type().with_sizes([vs[0], ls[1], vs[2] * vs[3]]))
        return out

    register_custom_op_symbolic(f"cruise::{NAME}", symbolic, opset)


def _onnx_schema():
    from onnx.defs import OpSchema

    par = OpSchema.FormalParameter
    return OpSchema(
        ONNX_OP, ONNX_DOMAIN, 1,
        doc="tvm-cruise's multi_scale_deformable_attention (tvm_cruise.relay_ops.msda)",
        inputs=[par("value", "T"), par("spatial_shapes", "I"), par("level_start_index", "I"),
                par("sampling_locations", "T"), par("attention_weights", "T")],
        outputs=[par("output", "T")],
        type_constraints=[("T", ["tensor(float)"], "features"),
                          ("I", ["tensor(int32)", "tensor(int64)"], "level layout")])


@R.onnx_export(NAME, _onnx_schema)
def _to_onnx(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    import onnxscript

    return onnxscript.values.Opset(ONNX_DOMAIN, 1).MultiScaleDeformableAttention(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


# ---------------------------------------------------------------- ONNX


def _from_onnx(bb, inputs, attrs, opset):
    if len(inputs) != 5 or any(i is None for i in inputs):
        raise CustomOpError(f"ONNX {ONNX_OP}: needs 5 inputs (value, spatial_shapes, "
                         "level_start_index, sampling_locations, attention_weights), got "
                         f"{len(inputs)}")
    for expr, what in ((inputs[1], "spatial_shapes"), (inputs[2], "level_start_index")):
        if not isinstance(expr, tvm.ir.expr.Constant):
            raise CustomOpError(f"ONNX {ONNX_OP}: {what} is not an initializer; it fixes the "
                             f"kernel's loop bounds at build time. Fix: {_CONSTANT_FIX}")
    return make_call(*inputs)


R.onnx_converter(ONNX_OP, (ONNX_DOMAIN,))(_from_onnx)
# im2col_step is how mmcv's CUDA kernel batches its work; it does not change the result.
R.onnx_converter(MMDEPLOY_OP, (MMDEPLOY_DOMAIN,))(_from_onnx)


# ---------------------------------------------------------------- bench


def _sampler_class():
    import torch

    class MultiScaleDeformableAttnCore(torch.nn.Module):
        """The op with the level layout as registered buffers: ``forward(value,
        sampling_locations, attention_weights)``."""

        def __init__(self, spatial_shapes):
            super().__init__()
            shapes = torch.as_tensor(spatial_shapes, dtype=torch.int64)
            sizes = shapes[:, 0] * shapes[:, 1]
            starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
            self.register_buffer("spatial_shapes", shapes)
            self.register_buffer("level_start_index", starts)

        def forward(self, value, sampling_locations, attention_weights):
            return multi_scale_deformable_attention(value, self.spatial_shapes,
                                                    self.level_start_index,
                                                    sampling_locations, attention_weights)

    return MultiScaleDeformableAttnCore


def core(spatial_shapes):
    """``torch.nn.Module`` running the op for the level layout ``spatial_shapes``
    ([(H, W), ...]), held as buffers so that it compiles (see the module docstring)."""
    return _sampler_class()(spatial_shapes)


def bench_case(seed: int = 0):
    """``(torch_callable, args)``: a BEVFormer-sized encoder call.

    N=1, 2500 queries (a 50x50 BEV grid), 8 heads of 32 channels, 4 points on each of 4
    levels of the 1/8..1/64 pyramid of a 256x704 image (32x88, 16x44, 8x22, 4x11).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    shapes = [(32, 88), (16, 44), (8, 22), (4, 11)]
    n, nq, m, d, nl, npt = 1, 2500, 8, 32, len(shapes), 4
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g)
    locs = torch.rand(n, nq, m, nl, npt, 2, generator=g)
    weights = torch.rand(n, nq, m, nl, npt, generator=g)
    weights = weights / weights.sum(dim=(-1, -2), keepdim=True)
    return core(shapes).eval(), (value, locs, weights)
