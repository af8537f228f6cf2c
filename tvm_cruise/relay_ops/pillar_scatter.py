"""``pillar_scatter``: PointPillars' per-pillar features to a BEV pseudo-image.

``pillar_scatter(features, coords, batch_size, ny, nx)``

- ``features`` (P, C) float: one feature vector per pillar (the pillar encoder's output);
- ``coords`` (P, 4) int32/int64: each pillar's ``(batch, z, y, x)`` cell, as OpenPCDet and
  mmdet3d's voxelizers emit them (PointPillars has one z slice: z must be 0);
- result (batch_size, C, ny, nx): the pillar's features at its cell, 0 where no pillar is.

Rules (defined here; PyTorch's ``canvas[:, idx] = features.t()`` leaves duplicates
unspecified):

- **empty and padding pillars**: a pillar whose batch, y or x is outside
  ``[0, batch_size) × [0, ny) × [0, nx)`` or whose z is not 0 is skipped (voxelizers pad
  their fixed-size pillar tensors with coordinates of -1);
- **duplicate coordinates**: the pillar with the highest index wins, as a scatter in pillar
  order would leave it.

The kernel is two passes: a serial pass over pillars records each cell's winning pillar
(a serial loop makes "highest index wins" deterministic without atomics; it touches P
integers), then a parallel gather writes every output element once (the zero fill and
the copy are one pass over the output, which is what bounds the op's time).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.script import tirx as T

from ..errors import CustomOpError
from . import registry

NAME = "pillar_scatter"
_INT = ("int32", "int64")
_FLOAT = ("float32", "float16")


def _shapes(call):
    attrs = registry.attrs_of(call)
    missing = [k for k in ("batch_size", "ny", "nx") if k not in attrs]
    if missing:
        raise CustomOpError(f"{NAME}: attributes {missing} are missing")
    (p, c), fdtype = registry.tensor_type(call.args[0], "features", NAME, 2, _FLOAT)
    (pc, width), idtype = registry.tensor_type(call.args[1], "coords", NAME, 2, _INT)
    if pc != p or width != 4:
        raise CustomOpError(
            f"{NAME}: coords must be ({p}, 4) (batch, z, y, x) for features of shape "
            f"({p}, {c}), got ({pc}, {width}). Fix: pass one (batch, z, y, x) row per pillar")
    b, ny, nx = (int(attrs[k]) for k in ("batch_size", "ny", "nx"))
    if min(b, ny, nx) < 1:
        raise CustomOpError(f"{NAME}: batch_size, ny and nx must be >= 1, got {b}, {ny}, {nx}")
    return p, c, b, ny, nx, fdtype, idtype


def _infer(call):
    _, c, b, ny, nx, fdtype, _ = _shapes(call)
    return relax.TensorType([b, c, ny, nx], fdtype)


def _winner_kernel(p, b, ny, nx, idtype, gpu: bool):
    cells = b * ny * nx

    @T.macro
    def scatter_in_order(coords, winner):
        # a later pillar overwrites: each cell ends with its highest-index pillar
        for k in T.serial(p):
            if (coords[k, 0] >= 0 and coords[k, 0] < b and coords[k, 1] == 0
                    and coords[k, 2] >= 0 and coords[k, 2] < ny
                    and coords[k, 3] >= 0 and coords[k, 3] < nx):
                winner[T.Cast("int32", (coords[k, 0] * ny + coords[k, 2]) * nx
                              + coords[k, 3])] = k

    # Each cell's pillar: -1 (empty), else the highest-index pillar scattered there.
    @T.prim_func(private=True, s_tir=True)
    def winner_cpu(coords: T.Buffer((p, 4), idtype), winner: T.Buffer((cells,), "int32")):
        with T.sblock("root"):
            for i in T.parallel(cells):
                winner[i] = -1
            scatter_in_order(coords, winner)

    threads = 256
    grid = (cells + threads - 1) // threads

    @T.prim_func(private=True, s_tir=True)
    def winner_gpu(coords: T.Buffer((p, 4), idtype), winner: T.Buffer((cells,), "int32")):
        with T.sblock("root"):
            for bx in T.thread_binding(grid, thread="blockIdx.x"):
                for tx in T.thread_binding(threads, thread="threadIdx.x"):
                    if bx * threads + tx < cells:
                        winner[bx * threads + tx] = -1
            # one thread, in pillar order: deterministic without atomics
            for bx in T.thread_binding(1, thread="blockIdx.x"):
                for tx in T.thread_binding(1, thread="threadIdx.x"):
                    scatter_in_order(coords, winner)

    return winner_gpu if gpu else winner_cpu


def _gather_kernel(p, c, b, ny, nx, fdtype, gpu: bool):
    cells = ny * nx
    zero = tvm.tirx.const(0, fdtype)

    @T.prim_func(private=True, s_tir=True)
    def gather_cpu(features: T.Buffer((p, c), fdtype), winner: T.Buffer((b * cells,), "int32"),
                   out: T.Buffer((b, c, ny, nx), fdtype)):
        with T.sblock("root"):
            # threads over (batch, channel) planes: each writes one contiguous output plane
            for bc in T.parallel(b * c):
                for i in T.serial(cells):
                    w: T.int32 = winner[bc // c * cells + i]
                    out[bc // c, bc % c, i // nx, i % nx] = T.if_then_else(
                        w >= 0, features[T.max(w, 0), bc % c], zero)

    threads = 256
    total = b * c * cells
    grid = (total + threads - 1) // threads

    @T.prim_func(private=True, s_tir=True)
    def gather_gpu(features: T.Buffer((p, c), fdtype), winner: T.Buffer((b * cells,), "int32"),
                   out: T.Buffer((b, c, ny, nx), fdtype)):
        with T.sblock("root"):
            for bx in T.thread_binding(grid, thread="blockIdx.x"):
                for tx in T.thread_binding(threads, thread="threadIdx.x"):
                    if bx * threads + tx < total:
                        e: T.int32 = bx * threads + tx
                        bc: T.int32 = e // cells
                        i: T.int32 = e % cells
                        w: T.int32 = winner[bc // c * cells + i]
                        out[bc // c, bc % c, i // nx, i % nx] = T.if_then_else(
                            w >= 0, features[T.max(w, 0), bc % c], zero)

    return gather_gpu if gpu else gather_cpu


def _legalize(bb: relax.BlockBuilder, call):
    p, c, b, ny, nx, fdtype, idtype = _shapes(call)
    target = tvm.target.Target.current(allow_none=True)
    gpu = target is not None and "gpu" in target.keys
    # written scheduled (threads, one serial pass): no default or dlight schedule on top,
    # reported as tvm-cruise's own ("default") schedule, not as a tuned one
    attrs = {registry.KERNEL_ATTR: NAME, "tirx.is_scheduled": True,
             registry.SCHEDULED_ATTR: True}
    winner_fn = _winner_kernel(p, b, ny, nx, idtype, gpu)
    gather_fn = _gather_kernel(p, c, b, ny, nx, fdtype, gpu)
    for key, value in attrs.items():
        winner_fn = winner_fn.with_attr(key, value)
        gather_fn = gather_fn.with_attr(key, value)
    winner_gv = bb.add_func(winner_fn, "cruise_pillar_winner")
    gather_gv = bb.add_func(gather_fn, "cruise_pillar_scatter")
    winner = bb.emit(relax.call_tir(winner_gv, [call.args[1]],
                                    relax.TensorType([b * ny * nx], "int32")))
    return relax.call_tir(gather_gv, [call.args[0], winner],
                          relax.TensorType([b, c, ny, nx], fdtype))


OP = registry.define_op(NAME, "PointPillars' scatter of pillar features to a BEV image",
                        _infer, _legalize)


# -- PyTorch --------------------------------------------------------------------------------
def _check_torch_args(features, coords):
    import torch

    torch._check(features.dim() == 2 and coords.dim() == 2 and coords.shape[1] == 4
                 and coords.shape[0] == features.shape[0],
                 lambda: f"{NAME}: features must be (P, C) and coords (P, 4) (batch, z, y, x), "
                         f"got {tuple(features.shape)} and {tuple(coords.shape)}")


def reference(features, coords, batch_size: int, ny: int, nx: int):
    """The PyTorch reference (vectorized): same rules as the kernel."""
    import torch

    _check_torch_args(features, coords)
    coords = coords.long()
    b, z, y, x = coords.unbind(1)
    valid = (b >= 0) & (b < batch_size) & (z == 0) & (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
    cell = torch.where(valid, (b * ny + y) * nx + x, batch_size * ny * nx)  # spare slot
    winner = torch.full((batch_size * ny * nx + 1,), -1, dtype=torch.long)
    winner.scatter_reduce_(0, cell, torch.arange(len(cell)), reduce="amax")
    winner = winner[:-1]
    filled = winner >= 0
    flat = features.new_zeros(batch_size * ny * nx, features.shape[1])
    flat[filled] = features[winner[filled]]
    return flat.view(batch_size, ny, nx, -1).permute(0, 3, 1, 2).contiguous()


def _fake(features, coords, batch_size, ny, nx):
    _check_torch_args(features, coords)
    return features.new_empty(batch_size, features.shape[1], ny, nx)


_SCHEMA = "(Tensor features, Tensor coords, int batch_size, int ny, int nx) -> Tensor"


def torch_op():
    """``torch.ops.cruise.pillar_scatter`` (defined on first use)."""
    return registry.torch_custom_op(NAME, reference, _fake, schema=_SCHEMA)


def pillar_scatter(features, coords, batch_size: int, ny: int, nx: int):
    """Scatter pillar features to a ``(batch_size, C, ny, nx)`` BEV image (module docstring
    for the rules); a ``torch.library`` op, so models using it ``torch.export`` cleanly.

    Examples
    --------
    >>> import torch
    >>> from tvm_cruise.relay_ops.pillar_scatter import pillar_scatter
    >>> feats = torch.ones(2, 3)
    >>> coords = torch.tensor([[0, 0, 1, 2], [0, 0, 0, 0]])
    >>> pillar_scatter(feats, coords, 1, 2, 4)[0, :, 1, 2].tolist()
    [1.0, 1.0, 1.0]
    """
    return torch_op()(features, coords, batch_size, ny, nx)


torch_op()


@registry.torch_converter(f"{NAME}.default")
def _from_torch(importer, node):
    features, coords, batch_size, ny, nx = importer.retrieve_args(node)[:5]
    return importer.block_builder.emit(registry.call(
        NAME, [features, coords], batch_size=int(batch_size), ny=int(ny), nx=int(nx)))


@registry.onnx_converter("PillarScatter", domains=("com.cruise",))
def _from_onnx(bb, inputs, attrs, _opset):
    missing = [k for k in ("batch_size", "ny", "nx") if k not in attrs]
    if missing:
        raise CustomOpError(f"com.cruise PillarScatter needs the integer attributes {missing}")
    if len(inputs) != 2:
        raise CustomOpError(f"com.cruise PillarScatter takes 2 inputs (features, coords), got "
                         f"{len(inputs)}")
    return bb.emit(registry.call(NAME, inputs, batch_size=int(attrs["batch_size"]),
                                 ny=int(attrs["ny"]), nx=int(attrs["nx"])))


def _onnx_schema():
    from onnx.defs import OpSchema

    return OpSchema(
        "PillarScatter", "com.cruise", 1,
        doc="tvm-cruise's pillar_scatter (tvm_cruise.relay_ops.pillar_scatter)",
        inputs=[OpSchema.FormalParameter("features", "T"), OpSchema.FormalParameter("coords", "I")],
        outputs=[OpSchema.FormalParameter("bev", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "features"),
                          ("I", ["tensor(int32)", "tensor(int64)"], "coordinates")],
        attributes=[OpSchema.Attribute(n, OpSchema.AttrType.INT, n)
                    for n in ("batch_size", "ny", "nx")])


@registry.onnx_export(NAME, _onnx_schema)
def _to_onnx(features, coords, batch_size: int, ny: int, nx: int):
    import onnxscript

    return onnxscript.values.Opset("com.cruise", 1).PillarScatter(
        features, coords, batch_size=batch_size, ny=ny, nx=nx)


def register_onnx_symbolic(opset: int = 17) -> None:
    """Let ``torch.onnx.export(..., dynamo=False)`` write ``torch.ops.cruise.pillar_scatter``
    as a ``com.cruise::PillarScatter`` node."""
    import torch

    def symbolic(g, features, coords, batch_size, ny, nx):
        from torch.onnx import symbolic_helper as sh

        return g.op("com.cruise::PillarScatter", features, coords,
                    batch_size_i=sh._get_const(batch_size, "i", "batch_size"),
                    ny_i=sh._get_const(ny, "i", "ny"), nx_i=sh._get_const(nx, "i", "nx"))

    torch.onnx.register_custom_op_symbolic(f"cruise::{NAME}", symbolic, opset)


def bench_case(seed: int = 0):
    """PointPillars on KITTI: 12000 pillar slots (about 9000 used), 64 channels, a 496 × 432
    BEV grid."""
    import torch

    g = torch.Generator().manual_seed(seed)
    p, used, c, ny, nx = 12000, 9000, 64, 496, 432
    cells = torch.randperm(ny * nx, generator=g)[:used]
    coords = torch.full((p, 4), -1, dtype=torch.int32)
    coords[:used, 0] = 0
    coords[:used, 1] = 0
    coords[:used, 2] = (cells // nx).int()
    coords[:used, 3] = (cells % nx).int()
    features = torch.randn(p, c, generator=g)
    return (lambda f, k: pillar_scatter(f, k, 1, ny, nx)), (features, coords)
