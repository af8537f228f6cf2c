"""Deformable convolution (DCNv1; DCNv2 with a mask): ``relax.cruise.deformable_conv2d``.

Semantics are ``torchvision.ops.deform_conv2d``'s (checked against its CPU kernel,
``csrc/ops/cpu/deform_conv2d_kernel.cpp``): input channel ``c`` belongs to offset group
``g = c // (C / offset_groups)``; kernel point ``k = i * kw + j`` of that group reads its
displacement ``(dy, dx)`` from offset channels ``2 * (g * kh * kw + k)`` and ``... + 1``
and its modulation from mask channel ``g * kh * kw + k``. The point is sampled at
``y = ho * stride_h - pad_top + i * dilation_h + dy`` (``x`` likewise) by bilinear
interpolation: a point with ``y <= -1``, ``y >= H``, ``x <= -1`` or ``x >= W`` gives 0,
and each of the four corners outside the image contributes 0. The sampled value times the
mask forms the im2col columns, which a grouped GEMM with the weight turns into the output
(plus the bias). ONNX's ``DeformConv`` (opset 19) and mmcv's modulated deformable
convolution use the same offset layout and edge rule.

Relax operands: ``data (N, C, H, W)``, ``offset (N, 2*G_off*kh*kw, Ho, Wo)``,
``weight (O, C/groups, kh, kw)``, then ``mask (N, G_off*kh*kw, Ho, Wo)`` if the attribute
``has_mask`` is 1 and ``bias (O,)`` if ``has_bias`` is 1 (absent operands are left out of
the call, so no placeholder tensor is computed or read). Attributes: ``strides`` (2),
``padding`` (4: top, left, bottom, right: ONNX allows asymmetric pads), ``dilation`` (2),
``groups``, ``offset_groups``.

Legalization: a sampling kernel (bilinear gather times mask) writes the columns
``(N, Ho, C, kh, kw, Wo)`` and has its own CPU schedule here; the GEMM is a plain TE
reduction (with the bias as its epilogue) left to the default CPU schedule, which
register-blocks it.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx

from ..errors import CustomOpError
from . import registry as R

NAME = "deformable_conv2d"
_OP = f"relax.cruise.{NAME}"


# ----------------------------------------------------------------------------- shapes
def _pair(value, what: str) -> tuple[int, int]:
    values = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(values) != 2:
        raise CustomOpError(f"{_OP}: {what} must be an int or 2 ints, got {value!r}")
    return int(values[0]), int(values[1])


def _pads(value) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from 1, 2 (symmetric) or 4 (ONNX order) ints."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1:
        values = values * 4
    elif len(values) == 2:
        values = values * 2
    if len(values) != 4:
        raise CustomOpError(f"{_OP}: padding must be 1, 2 or 4 ints, got {value!r}")
    return tuple(int(v) for v in values)


def out_shape(data, offset, weight, mask, bias, strides, padding, dilation, groups,
              offset_groups) -> tuple[int, int, int, int]:
    """The output shape ``(N, O, Ho, Wo)`` of a deformable convolution, or ValueError
    naming the operand, the shape it must have and the fix. Shapes are tuples of ints;
    ``mask``/``bias`` None when absent."""
    if len(data) != 4:
        raise CustomOpError(f"{_OP}: data must be (N, C, H, W), got shape {tuple(data)}")
    if len(weight) != 4:
        raise CustomOpError(f"{_OP}: weight must be (O, C/groups, kh, kw), got shape "
                         f"{tuple(weight)}")
    n, c, h, w = data
    o, cg, kh, kw = weight
    (sh, sw), (dh, dw) = strides, dilation
    pt, pl, pb, pr = padding
    if min(sh, sw, dh, dw) < 1 or min(padding) < 0:
        raise CustomOpError(f"{_OP}: strides and dilation must be >= 1 and padding >= 0, got "
                         f"strides {strides}, dilation {dilation}, padding {padding}")
    if groups < 1 or c % groups or o % groups or cg * groups != c:
        raise CustomOpError(f"{_OP}: weight {tuple(weight)} does not fit data channels {c} with "
                         f"groups={groups}: weight must be ({o}, C/groups={c // max(groups, 1)}"
                         f", kh, kw) and O={o} divisible by groups. Fix the weight's shape "
                         "or the groups")
    if offset_groups < 1 or c % offset_groups:
        raise CustomOpError(f"{_OP}: offset_groups={offset_groups} must divide the data's "
                         f"{c} channels. Fix: use a divisor of {c}")
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise CustomOpError(f"{_OP}: a {kh}x{kw} kernel (dilation {dilation}, padding "
                         f"{padding}) does not fit the {h}x{w} input. Fix: pad more or use "
                         "a smaller kernel")
    k = kh * kw
    expect = (n, 2 * offset_groups * k, ho, wo)
    if tuple(offset) != expect:
        raise CustomOpError(f"{_OP}: offset must have shape (N, 2*offset_groups*kh*kw, Ho, Wo) "
                         f"= {expect}, got {tuple(offset)}. Fix: the offset's channels hold "
                         "(dy, dx) per kernel point and offset group, and its spatial size "
                         "is the output's")
    if mask is not None and tuple(mask) != (n, offset_groups * k, ho, wo):
        raise CustomOpError(f"{_OP}: mask must have shape (N, offset_groups*kh*kw, Ho, Wo) = "
                         f"{(n, offset_groups * k, ho, wo)}, got {tuple(mask)}. Fix: one "
                         "modulation scalar per kernel point, offset group and output pixel")
    if bias is not None and tuple(bias) != (o,):
        raise CustomOpError(f"{_OP}: bias must have shape (O,) = ({o},), got {tuple(bias)}")
    return n, o, ho, wo


def _operands(call):
    attrs = R.attrs_of(call)
    args = list(call.args)
    want = 3 + int(attrs.get("has_mask", 0)) + int(attrs.get("has_bias", 0))
    if len(args) != want:
        raise CustomOpError(f"{_OP}: expected {want} operands (data, offset, weight"
                         f"{', mask' if attrs.get('has_mask') else ''}"
                         f"{', bias' if attrs.get('has_bias') else ''}), got {len(args)}")
    data, offset, weight = args[:3]
    rest = args[3:]
    mask = rest.pop(0) if attrs.get("has_mask") else None
    bias = rest.pop(0) if attrs.get("has_bias") else None
    return data, offset, weight, mask, bias, attrs


def _infer(call):
    data, offset, weight, mask, bias, attrs = _operands(call)
    shapes = {}
    for what, expr, rank in (("data", data, 4), ("offset", offset, 4), ("weight", weight, 4),
                             ("mask", mask, 4), ("bias", bias, 1)):
        if expr is not None:
            shapes[what] = R.tensor_type(expr, what, _OP, rank, ("float32",))[0]
    shape = out_shape(shapes["data"], shapes["offset"], shapes["weight"], shapes.get("mask"),
                      shapes.get("bias"), _pair(attrs["strides"], "strides"),
                      _pads(attrs["padding"]), _pair(attrs["dilation"], "dilation"),
                      int(attrs["groups"]), int(attrs["offset_groups"]))
    return relax.TensorType(list(shape), "float32")


# ----------------------------------------------------------------------------- TIR
def _columns(data, offset, mask, strides, padding, dilation, offset_groups, kh, kw):
    """TE: the sampled columns ``(N, Ho, C, kh, kw, Wo)``, torchvision's arithmetic.

    Output rows outermost: the GEMM's reduction for one output row then walks one
    contiguous block (C*kh*kw rows of Wo) instead of striding across the whole
    (C*kh*kw, Ho*Wo) matrix (measured ~10% faster GEMM at the bench size).

    Two stages: per sampling point (offset group, kernel point, output pixel) its four
    corner weights (0 for a corner or point outside the image) and corner rows/columns
    (clamped into the image), then per channel the gather ``mask * sum(weight * corner)``.
    The point's coordinates are computed once for all the group's channels."""
    n_, c_, h_, w_ = (int(d) for d in data.shape)
    ho_, wo_ = (int(d) for d in offset.shape[2:])
    (sh, sw), (dh, dw), (pt, pl) = strides, dilation, padding[:2]
    per_group, k_ = c_ // offset_groups, kh * kw
    dt = data.dtype
    zero, one = tirx.const(0.0, dt), tirx.const(1.0, dt)

    def clamp(v, lo, hi):
        return tirx.max(tirx.min(v, hi), lo)

    def f(value):
        return tirx.const(float(value), dt)

    def fl(value):
        return tirx.floor(value).astype("int32")

    def point(n, g, k, y, x):
        """(sy, sx): integer base position first, then the offset, as torchvision sums."""
        p = 2 * (g * k_ + k)
        sy = (y * sh - pt + (k // kw) * dh).astype(dt) + offset[n, p, y, x]
        sx = (x * sw - pl + (k % kw) * dw).astype(dt) + offset[n, p + 1, y, x]
        return sy, sx

    def weight(n, g, k, q, y, x):
        sy, sx = point(n, g, k, y, x)
        inside = tirx.all(sy > f(-1), sy < f(h_), sx > f(-1), sx < f(w_))
        # clamped before floor so that a far-off sample never overflows the int cast
        fy = tirx.floor(clamp(sy, f(-1), f(h_)))
        fx = tirx.floor(clamp(sx, f(-1), f(w_)))
        ly, lx = sy - fy, sx - fx
        dy, dx = q // 2, q % 2
        yy, xx = fy.astype("int32") + dy, fx.astype("int32") + dx
        ok = tirx.all(inside, yy >= 0, yy <= h_ - 1, xx >= 0, xx <= w_ - 1)
        wy = tirx.Select(dy == 0, one - ly, ly)
        wx = tirx.Select(dx == 0, one - lx, lx)
        return tirx.Select(ok, wy * wx, zero)

    def corner(n, g, k, q, y, x):
        # rows (q = 0, 1) and columns (q = 2, 3) of the low and high corners, clamped in
        # float into the image: always safe to load (a corner outside has weight 0)
        sy, sx = point(n, g, k, y, x)

        def low(s, size):
            return fl(clamp(s, f(0), f(size - 1)))

        def high(s, size):
            return fl(clamp(s, f(-1), f(size - 2))) + 1

        return tirx.Select(q < 2, tirx.Select(q == 0, low(sy, h_), high(sy, h_)),
                           tirx.Select(q == 2, low(sx, w_), high(sx, w_)))

    shape = (n_, offset_groups, k_, 4, ho_, wo_)
    weights = te.compute(shape, weight, name="deform_weights")
    corners = te.compute(shape, corner, name="deform_corners")

    def gather(n, y, c, i, j, x):
        g, k = c // per_group, i * kw + j
        value = None
        for q in range(4):  # torchvision's order: w1*v1 + w2*v2 + w3*v3 + w4*v4
            term = weights[n, g, k, q, y, x] * data[n, c, corners[n, g, k, q // 2, y, x],
                                                    corners[n, g, k, 2 + q % 2, y, x]]
            value = term if value is None else value + term
        return value if mask is None else mask[n, g * k_ + k, y, x] * value

    return te.compute((n_, ho_, c_, kh, kw, wo_), gather, name="deform_columns")


def _gemm(columns, weight, bias, groups):
    """TE: the grouped GEMM of the columns, ``(N, O, Ho, Wo)``, bias as the epilogue.

    The reduction block's output is ``(N, Ho, O, Wo)``, so that the default schedule's
    parallel loop runs output rows outside output-channel tiles: one row's columns
    (C*kh*kw x Wo) stay in cache for all the tiles. The epilogue writes NCHW (inlined into
    the tile's write-out; measured 14.8 vs 25.8-34.6 ms at the bench size)."""
    n_, ho_, _, kh, kw, wo_ = (int(d) for d in columns.shape)
    o_, cg = int(weight.shape[0]), int(weight.shape[1])
    og = o_ // groups
    rc = te.reduce_axis((0, cg), "rc")
    ri = te.reduce_axis((0, kh), "ri")
    rj = te.reduce_axis((0, kw), "rj")

    def channel(o):
        # groups == 1 spelled out: the columns then visibly do not depend on the output
        # channel, which the default schedule's register blocking needs
        return rc if groups == 1 else (o // og) * cg + rc

    rows = te.compute(
        (n_, ho_, o_, wo_),
        lambda n, y, o, x: te.sum(weight[o, rc, ri, rj] * columns[n, y, channel(o), ri, rj, x],
                                  axis=[rc, ri, rj]),
        name="deform_gemm")
    if bias is None:
        return te.compute((n_, o_, ho_, wo_), lambda n, o, y, x: rows[n, y, o, x],
                          name="deform_out")
    return te.compute((n_, o_, ho_, wo_), lambda n, o, y, x: rows[n, y, o, x] + bias[o],
                      name="deform_out")


def _legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    data, offset, weight, mask, bias, attrs = _operands(call)
    strides, dilation = _pair(attrs["strides"], "strides"), _pair(attrs["dilation"], "dilation")
    padding, groups = _pads(attrs["padding"]), int(attrs["groups"])
    kh, kw = (int(d.value) for d in weight.ty.shape.values[2:])
    sample_args = [data, offset] + ([mask] if mask is not None else [])

    def sample(d, off, *m):
        return _columns(d, off, m[0] if m else None, strides, padding, dilation,
                        int(attrs["offset_groups"]), kh, kw)

    columns = bb.emit(_spanned(bb.call_te(sample, *sample_args,
                                          primfunc_name_hint="cruise_deform_sample",
                                          primfunc_attrs=R.kernel_attrs(NAME)), call))
    gemm_args = [columns, weight] + ([bias] if bias is not None else [])
    return _spanned(bb.call_te(lambda col, wt, *b: _gemm(col, wt, b[0] if b else None, groups),
                               *gemm_args, primfunc_name_hint="cruise_deform_gemm"), call)


def _spanned(kernel_call, call):
    """Both kernels keep the op's source span: the placement report names their layer."""
    return relax.Call(kernel_call.op, kernel_call.args, kernel_call.attrs,
                      kernel_call.ty_args, span=call.span)


R.define_op(NAME, "deformable convolution (DCNv1/DCNv2, torchvision.ops.deform_conv2d)",
            _infer, _legalize)


@R.kernel_schedule(NAME)
def _schedule(func, target):
    """The sampling kernel's CPU schedule: every stage's outer loops fused and parallel over
    the cores; the per-point stages (weights, corners: arithmetic on contiguous offsets)
    vectorized along the output row. The gather stays scalar: TVM lowers a vector gather
    lane by lane, measured 1.6-1.7x slower than the scalar loop (docs/custom_ops_deform_conv.md)."""
    from ..schedules.cpu import core_count, vector_shape

    lanes, _ = vector_shape(target)
    sch = tvm.s_tir.Schedule(func, debug_mask=0)
    for name in ("deform_weights", "deform_corners", "deform_columns"):
        block = sch.get_sblock(name)
        *outer, row = sch.get_loops(block)
        width = int(sch.get(row).extent)
        # a divisor of the row as the vector (no masked tail), else the row stays scalar
        vec = next((d for d in range(min(lanes, width), 1, -1) if width % d == 0), 1)
        if name != "deform_columns" and vec >= max(2, lanes // 4):
            _, inner = sch.split(row, [None, vec])
            sch.vectorize(inner)
        fused = sch.fuse(*outer)
        if core_count(target) > 1:
            sch.parallel(fused)
    (new,) = sch.mod.functions.values()
    return new


def make_call(data, offset, weight, mask=None, bias=None, strides=(1, 1), padding=(0, 0),
              dilation=(1, 1), groups=1, offset_groups=1) -> relax.Call:
    """A ``relax.cruise.deformable_conv2d`` call; ``mask``/``bias`` None when absent.

    Example
    -------
    >>> y = bb.emit(make_call(x, off, w, mask=m, padding=1))  # doctest: +SKIP
    """
    args = [data, offset, weight] + [a for a in (mask, bias) if a is not None]
    return R.call(NAME, args, strides=list(_pair(strides, "strides")),
                  padding=list(_pads(padding)), dilation=list(_pair(dilation, "dilation")),
                  groups=int(groups), offset_groups=int(offset_groups),
                  has_mask=int(mask is not None), has_bias=int(bias is not None))


def emit(bb, *args, **kwargs):
    """Bind :func:`make_call` in ``bb`` (its type is checked at once)."""
    return bb.emit(make_call(*args, **kwargs))


def _derived_groups(data_shape, offset_shape, weight_shape, where: str) -> tuple[int, int]:
    """``(groups, offset_groups)`` from the shapes, as torchvision's wrapper derives them."""
    c, (cg, kh, kw) = data_shape[1], weight_shape[1:]
    if cg < 1 or c % cg:
        raise CustomOpError(f"{where}: weight's dim 1 ({cg}) must divide the input's {c} "
                         "channels (it is C/groups). Fix the weight's shape")
    if offset_shape[1] % (2 * kh * kw) or offset_shape[1] == 0:
        raise CustomOpError(f"{where}: offset's dim 1 ({offset_shape[1]}) must be a multiple of "
                         f"2*kh*kw = {2 * kh * kw} (a (dy, dx) pair per kernel point and "
                         "offset group). Fix the offset's shape")
    return c // cg, offset_shape[1] // (2 * kh * kw)


# ----------------------------------------------------------------------------- torch
def _reference(input, offset, weight, bias, mask, stride, padding, dilation):
    """Vectorized plain-torch deformable convolution, torchvision's semantics."""
    import torch

    n, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    groups, og = _derived_groups(tuple(input.shape), tuple(offset.shape), tuple(weight.shape),
                                 "torch.ops.cruise.deformable_conv2d")
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    pt, pl, pb, pr = _pads(padding)
    out_shape(tuple(input.shape), tuple(offset.shape), tuple(weight.shape),
              None if mask is None else tuple(mask.shape),
              None if bias is None else tuple(bias.shape), (sh, sw), (pt, pl, pb, pr),
              (dh, dw), groups, og)
    ho, wo = offset.shape[2:]
    k, dt = kh * kw, input.dtype
    off = offset.reshape(n, og, k, 2, ho, wo)
    # integer base positions (K, Ho, Wo), converted before adding the offset (torchvision)
    iy = (torch.arange(kh) * dh).repeat_interleave(kw)
    ix = (torch.arange(kw) * dw).repeat(kh)
    by = (torch.arange(ho) * sh - pt)[None, :, None] + iy[:, None, None]
    bx = (torch.arange(wo) * sw - pl)[None, None, :] + ix[:, None, None]
    y = by.to(dt) + off[:, :, :, 0]  # (N, G_off, K, Ho, Wo)
    x = bx.to(dt) + off[:, :, :, 1]
    inside = (y > -1) & (y < h) & (x > -1) & (x < w)
    fy, fx = torch.floor(y.clamp(-1, h)), torch.floor(x.clamp(-1, w))
    ly, lx = y - fy, x - fx
    hy, hx = 1 - ly, 1 - lx
    y0, x0 = fy.long(), fx.long()
    # Channels last, plus one zero row at index H*W: each corner of each point is one
    # contiguous row of the group's channels, gathered for all points at once; a corner
    # outside the image (or of a point outside) reads the zero row, so it contributes an
    # exact 0 as in torchvision, without a pass over the gathered values
    rows = input.reshape(n, og, c // og, h * w).transpose(2, 3)  # (N, G_off, HW, C/G_off)
    rows = torch.cat([rows, rows.new_zeros(n, og, 1, c // og)], 2)
    batch = torch.arange(n)[:, None, None, None, None]
    group = torch.arange(og)[None, :, None, None, None]
    value = None
    for yy, xx, weight_ in ((y0, x0, hy * hx), (y0, x0 + 1, hy * lx),
                            (y0 + 1, x0, ly * hx), (y0 + 1, x0 + 1, ly * lx)):
        # torchvision's order: w1*v1 + w2*v2 + w3*v3 + w4*v4
        ok = inside & (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        index = torch.where(ok, yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1), h * w)
        term = torch.where(ok, weight_, 0.0)[..., None] * rows[batch, group, index]
        value = term if value is None else value + term
    if mask is not None:
        value = mask.reshape(n, og, k, ho, wo, 1) * value
    # (N, Ho*Wo, C*K), channel-major within a row as the weight is: out^T = columns @ W^T
    columns = value.permute(0, 3, 4, 1, 5, 2).reshape(n, ho * wo, groups, cg * k)
    out = torch.matmul(columns.transpose(1, 2),
                       weight.reshape(groups, o // groups, cg * k).transpose(1, 2))
    out = out.permute(0, 1, 3, 2).reshape(n, o, ho, wo)
    return out if bias is None else out + bias.reshape(1, o, 1, 1)


def _cruise_kernel(input, offset, weight, bias, mask, stride, padding, dilation):
    return _reference(input, offset, weight, bias, mask, stride, padding, dilation)


def _cruise_fake(input, offset, weight, bias, mask, stride, padding, dilation):
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    pt, pl, pb, pr = _pads(padding)
    kh, kw = weight.shape[2:]
    ho = (input.shape[2] + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (input.shape[3] + pl + pr - dw * (kw - 1) - 1) // sw + 1
    return input.new_empty((input.shape[0], weight.shape[0], ho, wo))


_SCHEMA = ("(Tensor input, Tensor offset, Tensor weight, Tensor? bias, Tensor? mask, "
           "int[] stride, int[] padding, int[] dilation) -> Tensor")


def torch_op():
    """``torch.ops.cruise.deformable_conv2d`` (defined when this module is imported)."""
    return R.torch_custom_op(NAME, _cruise_kernel, _cruise_fake, schema=_SCHEMA)


def deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                  mask=None):
    """``torchvision.ops.deform_conv2d`` as tvm-cruise's torch op (exports and imports).

    Parameters
    ----------
    input, offset, weight, bias, stride, padding, dilation, mask
        As in ``torchvision.ops.deform_conv2d``; ``padding`` may also be 4 ints
        (top, left, bottom, right).

    Example
    -------
    >>> out = deform_conv2d(x, offset, weight, mask=torch.sigmoid(m))  # doctest: +SKIP
    """
    padding = list(_pads(padding))
    return torch_op()(input, offset, weight, bias, mask, list(_pair(stride, "stride")),
                      padding, list(_pair(dilation, "dilation")))


def _static(expr, what: str, where: str):
    return R.tensor_type(expr, what, where)[0]


@R.torch_converter("deform_conv2d.default")
def _from_torchvision(importer, node):
    (data, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups,
     use_mask) = importer.retrieve_args(node)
    # torchvision's wrapper passes a placeholder (N, 1) zero mask with use_mask=False, and a
    # zero bias when it has none: the placeholder is dropped, the bias kept
    return emit(importer.block_builder, data, offset, weight, mask if use_mask else None,
                bias, (sh, sw), (ph, pw), (dh, dw), groups, offset_groups)


@R.torch_converter(f"{NAME}.default")
def _from_cruise(importer, node):
    data, offset, weight, bias, mask, stride, padding, dilation = importer.retrieve_args(node)
    where = f"torch.ops.cruise.{NAME}"
    groups, og = _derived_groups(_static(data, "input", where), _static(offset, "offset", where),
                                 _static(weight, "weight", where), where)
    return emit(importer.block_builder, data, offset, weight, mask, bias, stride, padding,
                dilation, groups, og)


# ----------------------------------------------------------------------------- ONNX
def _ints(attrs, key, default):
    value = attrs.get(key, default)
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else int(value)


@R.onnx_converter("DeformConv", ("",))
def _from_onnx(bb, inputs, attrs, opset):
    x, w, offset = inputs[:3]
    bias = inputs[3] if len(inputs) > 3 else None
    mask = inputs[4] if len(inputs) > 4 else None
    wshape = _static(w, "W", "ONNX DeformConv")
    if "kernel_shape" in attrs and list(_ints(attrs, "kernel_shape", [])) != list(wshape[2:]):
        raise CustomOpError(f"ONNX DeformConv: kernel_shape {_ints(attrs, 'kernel_shape', [])} "
                         f"differs from W's spatial shape {list(wshape[2:])}. Fix the "
                         "attribute or the weight")
    pads = _ints(attrs, "pads", [0, 0, 0, 0])
    if len(pads) != 4:
        raise CustomOpError(f"ONNX DeformConv: only 2-D is supported (pads {pads}); fix: a 4-D "
                         "input with 4 pads")
    # ONNX pads are (top, left, bottom, right): the op's own order
    return emit(bb, x, offset, w, mask, bias, _ints(attrs, "strides", [1, 1]), pads,
                _ints(attrs, "dilations", [1, 1]), _ints(attrs, "group", 1),
                _ints(attrs, "offset_group", 1))


@R.onnx_converter("MMCVModulatedDeformConv2d", ("mmdeploy", "mmcv"))
def _from_mmdeploy(bb, inputs, attrs, opset):
    # mmdeploy's symbolic: (input, offset, mask, weight[, bias]); attrs stride, padding,
    # dilation (2 ints each), groups, deform_groups
    x, offset, mask, w = inputs[:4]
    bias = inputs[4] if len(inputs) > 4 else None
    return emit(bb, x, offset, w, mask, bias, _ints(attrs, "stride", [1, 1]),
                _ints(attrs, "padding", [0, 0]), _ints(attrs, "dilation", [1, 1]),
                _ints(attrs, "groups", 1), _ints(attrs, "deform_groups", 1))


# ----------------------------------------------------------------------------- bench
def bench_case(seed: int = 0):
    """``(torch callable, args)``: one DCNv2 layer of a CenterNet/BEVDet head (64 -> 64
    channels, 3x3, padding 1, a 64x176 feature map), the PyTorch reference as callable."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n, c, o, h, w = 1, 64, 64, 64, 176
    x = torch.randn(n, c, h, w, generator=gen)
    offset = 2.0 * torch.randn(n, 18, h, w, generator=gen)
    mask = torch.sigmoid(torch.randn(n, 9, h, w, generator=gen))
    weight = torch.randn(o, c, 3, 3, generator=gen) / 24.0
    bias = torch.randn(o, generator=gen)

    def layer(x, offset, mask, weight, bias):
        # torch.ops.cruise.deformable_conv2d: eager, its kernel is the PyTorch reference;
        # exported, the node tvm-cruise imports
        return deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask)

    return layer, (x, offset, mask, weight, bias)


torch_op()


@R.onnx_export(NAME)
def _to_onnx(input, offset, weight, bias=None, mask=None, stride=(1, 1), padding=(0, 0, 0, 0),
             dilation=(1, 1)):
    """``torch.onnx.export(..., dynamo=True)``: the standard ``DeformConv`` (opset 19)."""
    from onnxscript import opset19

    dims = [list(t.shape) for t in (input, offset, weight)]
    if not all(isinstance(d, int) for shape in dims for d in shape):
        raise CustomOpError(f"ONNX export of torch.ops.cruise.{NAME}: DeformConv's group and "
                         f"offset_group are read from static shapes, got {dims}. Fix: export "
                         "with static input shapes")
    (_, c, _, _), (_, offset_channels, _, _), (_, cg, kh, kw) = dims
    return opset19.DeformConv(input, weight, offset, bias, mask, dilations=list(dilation),
                              group=c // cg, kernel_shape=[kh, kw],
                              offset_group=offset_channels // (2 * kh * kw),
                              pads=list(_pads(padding)), strides=list(stride))
