"""torchvision's ``roi_align`` and ``nms``, imported onto TVM's Relax vision ops.

These are not new Relax ops: the converters here map torchvision's operators (and ONNX
``RoiAlign``) onto ``relax.op.vision.roi_align`` and
``relax.op.vision.all_class_non_max_suppression`` with the arguments that reproduce
torchvision's CPU kernels (``csrc/ops/cpu/roi_align_kernel.cpp``, ``nms_kernel.cpp``).

- ``roi_align``: TVM 0.27's torch and ONNX importers subtract the half-pixel offset from the
  box coordinates *before* ``spatial_scale`` (``(x - 0.5) * s``) where torchvision and ONNX
  subtract it after (``x * s - 0.5``): wrong for ``aligned=True`` /
  ``coordinate_transformation_mode="half_pixel"`` whenever ``spatial_scale != 1``. The
  converters here scale and offset the boxes in a host kernel and call TVM's op with scale
  1; they also zero the bins of empty boxes, which TVM's kernel leaves unwritten.
- ``nms``: one host kernel on TOPI's all-class NMS, with a strict IoU comparison and any
  score sign. The output length depends on the data: ``torch.ops.cruise.nms_padded`` is
  the static-shape form tvm-cruise compiles (indices padded with -1, and the count);
  ``torchvision.ops.nms`` imports too, but its output shape is symbolic, which
  tvm-cruise's build refuses (see docs/custom_ops_detection.md).
"""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax, topi

from ..errors import CustomOpError, DependencyError
from . import registry

_FLOAT32 = ("float32",)


# --------------------------------------------------------------------------- references
def roi_align_reference(input: torch.Tensor, rois: torch.Tensor, spatial_scale: float,
                        pooled_height: int, pooled_width: int, sampling_ratio: int,
                        aligned: bool) -> torch.Tensor:
    """torchvision's ``roi_align`` (average pooling), vectorized in plain torch.

    Parameters
    ----------
    input : (N, C, H, W) features. rois : (K, 5) ``[batch_index, x1, y1, x2, y2]`` in image
    coordinates. spatial_scale : feature size / image size. pooled_height, pooled_width :
    output bins. sampling_ratio : samples per bin and axis; ``<= 0`` is adaptive,
    ``ceil(roi_size / pooled_size)`` per box. aligned : shift the boxes by -0.5 pixel after
    scaling (and do not clamp their size to >= 1).

    Returns
    -------
    (K, C, pooled_height, pooled_width) tensor.

    Examples
    --------
    >>> roi_align_reference(torch.ones(1, 2, 8, 8), torch.tensor([[0., 0, 0, 4, 4]]),
    ...                     1.0, 2, 2, 2, True).shape
    torch.Size([1, 2, 2, 2])
    """
    n, c, h, w = input.shape
    k, ph, pw = rois.shape[0], int(pooled_height), int(pooled_width)
    if k == 0:
        return input.new_zeros((0, c, ph, pw))
    dtype = input.dtype
    scale = torch.tensor(spatial_scale, dtype=dtype)  # the kernel takes it as T
    offset = 0.5 if aligned else 0.0
    start_w, start_h = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
    roi_w = (rois[:, 3] * scale - offset) - start_w
    roi_h = (rois[:, 4] * scale - offset) - start_h
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / ph, roi_w / pw
    if sampling_ratio > 0:
        grid_h = torch.full((k,), int(sampling_ratio), dtype=torch.int64)
        grid_w = grid_h
    else:
        # a negative size (aligned boxes with x2 < x1) gives no samples and a zero output
        grid_h = torch.ceil(roi_h / ph).to(torch.int64).clamp(min=0)
        grid_w = torch.ceil(roi_w / pw).to(torch.int64).clamp(min=0)
    count = (grid_h * grid_w).clamp(min=1).to(dtype)

    def axis(start, size_bin, grid, bins, limit):
        """Sample coordinates along one axis: (K, bins, G) low/high index, weights, mask."""
        g = max(int(grid.max()), 1)
        it = torch.arange(g, dtype=dtype)
        grid_f = grid.to(dtype).clamp(min=1)[:, None, None]
        pos = (start[:, None, None] + torch.arange(bins, dtype=dtype)[None, :, None]
               * size_bin[:, None, None]) + (it + 0.5)[None, None, :] * size_bin[:, None, None] \
            / grid_f
        used = (it[None, None, :] < grid[:, None, None]).expand_as(pos)
        inside = (pos >= -1.0) & (pos <= limit)  # False for NaN, as in the kernel
        pos = pos.clamp(min=0.0)
        low = torch.where(inside, pos, torch.zeros_like(pos)).to(torch.int64)
        edge = low >= limit - 1
        low = torch.where(edge, torch.full_like(low, limit - 1), low)
        high = torch.where(edge, low, low + 1)
        pos = torch.where(edge, low.to(dtype), pos)
        frac = pos - low.to(dtype)
        return low, high, 1.0 - frac, frac, inside & used

    y_lo, y_hi, hy, ly, y_ok = axis(start_h, bin_h, grid_h, ph, h)
    x_lo, x_hi, hx, lx, x_ok = axis(start_w, bin_w, grid_w, pw, w)
    # samples indexed (K, ph, gh, pw, gw)
    ok = (y_ok[:, :, :, None, None] & x_ok[:, None, None, :, :]).to(dtype)
    flat = input.permute(0, 2, 3, 1).reshape(n * h * w, c)
    base = (rois[:, 0].to(torch.int64) * (h * w))[:, None, None, None, None]
    out = 0
    for yi, wy in ((y_lo, hy), (y_hi, ly)):
        for xi, wx in ((x_lo, hx), (x_hi, lx)):
            index = base + yi[:, :, :, None, None] * w + xi[:, None, None, :, :]
            weight = wy[:, :, :, None, None] * wx[:, None, None, :, :] * ok
            out = out + flat[index.reshape(-1)].reshape(*index.shape, c) * weight[..., None]
    out = out.sum(dim=(2, 4)) / count[:, None, None, None]
    return out.permute(0, 3, 1, 2).contiguous()


def roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                   aligned):
    """Shape function of torchvision's ``roi_align`` for ``torch.export``."""
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


def nms_numpy(dets: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """torchvision's ``nms``: a greedy loop in numpy with the kernel's float32 arithmetic.

    Boxes are ``(x1, y1, x2, y2)``; a box is suppressed by a kept, higher-scored box when
    their IoU is *strictly greater* than ``iou_threshold`` (compared in float64, like the
    kernel's ``float > double``). Returns the kept indices (int64) by decreasing score;
    equal scores keep the order of a stable descending sort (torchvision's sort is not
    documented as stable: ties are not part of the contract).

    Examples
    --------
    >>> nms_numpy(np.array([[0, 0, 2, 2], [0, 0, 2, 1]], "f4"), np.array([1, .9], "f4"), .4)
    array([0])
    """
    dets, scores = np.asarray(dets), np.asarray(scores)
    if dets.shape[0] == 0:
        return np.zeros((0,), np.int64)
    x1, y1, x2, y2 = (np.ascontiguousarray(dets[:, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(order), bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        wid = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        hei = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = wid * hei
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou.astype(np.float64) > float(iou_threshold)]] = True
    return np.asarray(keep, np.int64)


def nms_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """:func:`nms_numpy` on torch tensors (torchvision's ``nms`` signature)."""
    _check_nms_operands(tuple(dets.shape), tuple(scores.shape), "torchvision.nms")
    keep = nms_numpy(dets.detach().cpu().numpy(), scores.detach().cpu().numpy(), iou_threshold)
    return torch.from_numpy(keep)


def nms_padded_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                         max_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices (max_out,) int64 padded with -1, count (1,) int64)``: the first
    ``min(len(nms(...)), max_out)`` indices torchvision's ``nms`` keeps."""
    keep = nms_reference(dets, scores, iou_threshold)[: int(max_out)]
    out = torch.full((int(max_out),), -1, dtype=torch.int64)
    out[: keep.numel()] = keep
    return out, torch.tensor([keep.numel()], dtype=torch.int64)


def _nms_padded_fake(dets, scores, iou_threshold, max_out):
    return (dets.new_empty((max_out,), dtype=torch.int64),
            dets.new_empty((1,), dtype=torch.int64))


def _check_nms_operands(boxes, scores, op):
    if len(boxes) != 2 or boxes[1] != 4:
        raise CustomOpError(f"{op}: dets must have shape (K, 4) as x1, y1, x2, y2, got {boxes}")
    if len(scores) != 1 or scores[0] != boxes[0]:
        raise CustomOpError(f"{op}: scores must have shape ({boxes[0]},) (one per box), got "
                         f"{scores}")


# --------------------------------------------------------------------------- Relax forms
# Box arithmetic is emitted as host kernels (call_te), not as Relax element-wise ops: an
# accelerator build would offload those to the NPU in fp16, and fp16 box coordinates are
# off by up to 1/8 pixel at 512 (NMS and sampling positions would change).


def _constant(value, what: str, op: str):
    if isinstance(value, relax.Expr):
        raise CustomOpError(f"{op}: {what} must be a constant known at import, got a tensor; "
                         "fix: pass a Python number")
    return value


def roi_align_expr(bb, data, rois, spatial_scale: float, pooled_height: int, pooled_width: int,
                   sampling_ratio: int, aligned: bool, op: str = "roi_align", batch=None):
    """torchvision's ``roi_align`` as ``relax.op.vision.roi_align``.

    ``rois`` is ``(K, 5)`` ``[batch_index, x1, y1, x2, y2]``, or ``(K, 4)`` with ``batch``
    the ``(K,)`` batch indices (ONNX). TVM's kernel applies no half-pixel offset itself
    (``aligned`` only drops the size clamp), so a host kernel scales and offsets the boxes,
    ``x * scale - 0.5`` as torchvision does, and TVM's op gets scale 1. (TVM's importers
    offset before scaling instead.)
    """
    for what, value in (("spatial_scale", spatial_scale), ("pooled_height", pooled_height),
                        ("pooled_width", pooled_width), ("sampling_ratio", sampling_ratio),
                        ("aligned", aligned)):
        _constant(value, what, op)
    registry.tensor_type(data, "input", op, rank=4, dtypes=_FLOAT32)
    (k, cols), _ = registry.tensor_type(rois, "rois", op, rank=2, dtypes=_FLOAT32)
    if cols != (5 if batch is None else 4):
        want = "(K, 5) as [batch_index, x1, y1, x2, y2]" if batch is None else "(K, 4)"
        raise CustomOpError(f"{op}: rois must have shape {want}, got ({k}, {cols})")
    if batch is not None:
        (kb,), _ = registry.tensor_type(batch, "batch_indices", op, rank=1,
                                        dtypes=("int64", "int32"))
        if kb != k:
            raise CustomOpError(f"{op}: batch_indices must have shape ({k},), got ({kb},)")
    if int(pooled_height) < 1 or int(pooled_width) < 1:
        raise CustomOpError(f"{op}: output size must be >= 1, got ({pooled_height}, {pooled_width})")
    scale = float(np.float32(spatial_scale))  # the kernel takes the scale as T
    if aligned or batch is not None:
        offset = 0.5 if aligned else 0.0
        box_scale = scale if aligned else 1.0
        operands = [rois] if batch is None else [rois, batch]
        rois = bb.emit(bb.call_te(_roi_boxes, *operands, box_scale, offset,
                                  primfunc_name_hint="cruise_roi_boxes"))
        scale = scale if not aligned else 1.0
    out = bb.emit(relax.op.vision.roi_align(
        data, rois, pooled_size=(int(pooled_height), int(pooled_width)), spatial_scale=scale,
        sample_ratio=int(sampling_ratio), aligned=bool(aligned), layout="NCHW", mode="avg"))
    if aligned and int(sampling_ratio) <= 0:
        # A box with x2 <= x1 (or y2 <= y1) gets no samples: torchvision writes 0, TVM's
        # kernel leaves the output unwritten (its init sits inside the empty sample loop)
        out = bb.emit(bb.call_te(_zero_empty_boxes, out, rois,
                                 primfunc_name_hint="cruise_roi_empty"))
    return out


def _roi_boxes(rois, *rest):
    """(K, 5) rois with ``x * scale - offset`` boxes, from (K, 5) rois or (K, 4) boxes and
    batch indices."""
    batch, (scale, offset) = (rest[0], rest[1:]) if len(rest) == 3 else (None, rest)
    scale, offset = tvm.tirx.const(scale, "float32"), tvm.tirx.const(offset, "float32")

    def value(i, j):
        if batch is None:
            index, box = rois[i, 0], rois[i, j]
        else:  # Select reads both operands: the column stays in bounds at j == 0
            index, box = batch[i].astype("float32"), rois[i, tvm.te.max(j - 1, 0)]
        return tvm.tirx.Select(j == 0, index, box * scale - offset)

    return tvm.te.compute((rois.shape[0], 5), value, name="roi_boxes")


def _zero_empty_boxes(out, rois):
    def value(k, c, i, j):
        empty = tvm.tirx.any(rois[k, 3] - rois[k, 1] <= 0.0, rois[k, 4] - rois[k, 2] <= 0.0)
        return tvm.tirx.Select(empty, tvm.tirx.const(0.0, out.dtype), out[k, c, i, j])

    return tvm.te.compute(out.shape, value, name="roi_empty")


def _suppress_threshold(iou_threshold: float) -> np.float32:
    """The float32 ``t'`` with ``iou >= t'`` exactly when ``iou > iou_threshold``.

    TVM's NMS suppresses at ``iou >= threshold``; torchvision at ``iou > threshold`` with
    a float32 IoU and a float64 threshold. The smallest float32 above the threshold
    turns one into the other for every float32 IoU.
    """
    t32 = np.float32(iou_threshold)
    if float(t32) <= float(iou_threshold):
        t32 = np.nextafter(t32, np.float32(np.inf))
    return t32


def _nms_kernel(dets, scores, iou_threshold: float, max_out: int):
    """TE of torchvision's nms on TVM's all-class NMS kernel: (indices padded with -1,
    count).

    TVM's NMS loop never suppresses a box whose score is <= 0 and drops scores <= -1, and
    a threshold <= 0 switches it off; torchvision takes any score and threshold. So the
    boxes are sorted here, TVM gets their ranks (K, K-1, ..., 1) as scores, and the kept
    positions map back through the sort.
    """
    k = int(dets.shape[0])
    order = topi.argsort(scores, axis=0, is_ascend=False, dtype="int64")
    slots = (max_out,)
    if iou_threshold < 0:  # every IoU (>= 0) exceeds it: only the best box is kept
        count = tvm.te.compute((1,), lambda _: tvm.tirx.const(1, "int64"), name="count")
        padded = tvm.te.compute(slots, lambda p: tvm.tirx.Select(
            p == 0, order[0], tvm.tirx.const(-1, "int64")), name="kept")
        return padded, count
    boxes = tvm.te.compute((1, k, 4), lambda _, i, c: dets[order[i], c], name="sorted_boxes")
    ranks = tvm.te.compute((1, 1, k), lambda _a, _b, i: (k - i).astype("float32"), name="ranks")
    sel, _, count = topi.vision.all_class_non_max_suppression(
        boxes, ranks, min(max_out, k), float(_suppress_threshold(iou_threshold)), 0.0,
        "tensorflow")
    # TVM's kernel leaves the rows past the count unwritten
    padded = tvm.te.compute(slots, lambda p: tvm.tirx.Select(
        p < count[0], order[tvm.te.min(tvm.te.max(sel[0, tvm.te.min(p, k - 1), 1], 0), k - 1)],
        tvm.tirx.const(-1, "int64")), name="kept")
    return padded, count


def nms_padded_expr(bb, dets, scores, iou_threshold: float, max_out: int, op: str):
    """``(indices (max_out,) int64 padded with -1, count (1,) int64)`` of torchvision's
    ``nms`` on TVM's ``all_class_non_max_suppression`` kernel (one host kernel)."""
    (k, four), _ = registry.tensor_type(dets, "dets", op, rank=2, dtypes=_FLOAT32)
    (ks,), _ = registry.tensor_type(scores, "scores", op, rank=1, dtypes=_FLOAT32)
    _check_nms_operands((k, four), (ks,), op)
    iou_threshold = float(_constant(iou_threshold, "iou_threshold", op))
    max_out = int(_constant(max_out, "max_out", op))
    if k == 0 or max_out < 1:
        raise CustomOpError(f"{op}: needs at least one box and max_out >= 1, got K={k}, "
                         f"max_out={max_out}")
    # TVM's legalized NMS would go through the generic CPU schedule, which breaks it (see
    # _nms_schedule): the kernel is emitted here with the op's own (identity) schedule.
    out = bb.emit(bb.call_te(_nms_kernel, dets, scores, iou_threshold, max_out,
                             primfunc_name_hint="cruise_nms",
                             primfunc_attrs=registry.kernel_attrs("nms")))
    return bb.emit(relax.TupleGetItem(out, 0)), bb.emit(relax.TupleGetItem(out, 1))


def nms_expr(bb, dets, scores, iou_threshold: float, op: str):
    """torchvision's ``nms`` with its data-dependent length: ``(n,)`` int64, ``n`` a
    symbolic dimension bound at run time from the kept count."""
    (k, _), _ = registry.tensor_type(dets, "dets", op, rank=2, dtypes=_FLOAT32)
    padded, count = nms_padded_expr(bb, dets, scores, iou_threshold, k, op)
    n = tvm.tirx.Var("nms_kept", "int64")
    shape = bb.emit(relax.op.tensor_to_shape(count))
    bb.match_cast(shape, relax.ShapeType([n]))
    return bb.emit(relax.op.strided_slice(padded, axes=[0], begin=[0], end=[n]))


# --------------------------------------------------------------------------- converters
def _arg(args, node, index, name, default):
    if len(args) > index:
        return args[index]
    return node.kwargs.get(name, default)


@registry.torch_converter("roi_align.default")
def _torch_roi_align(importer, node):
    """``torchvision::roi_align`` (replaces TVM's converter, see the module docstring)."""
    args = importer.retrieve_args(node)
    return roi_align_expr(
        importer.block_builder, args[0], args[1], _arg(args, node, 2, "spatial_scale", 1.0),
        _arg(args, node, 3, "pooled_height", 1), _arg(args, node, 4, "pooled_width", 1),
        _arg(args, node, 5, "sampling_ratio", -1), _arg(args, node, 6, "aligned", False),
        op="torchvision.roi_align")


@registry.torch_converter("nms.default")
def _torch_nms(importer, node):
    """``torchvision::nms``: output length known at run time only."""
    dets, scores, iou = importer.retrieve_args(node)[:3]
    return nms_expr(importer.block_builder, dets, scores, iou, "torchvision.nms")


@registry.torch_converter("nms_padded.default")
def _torch_nms_padded(importer, node):
    """``cruise::nms_padded``: static shapes."""
    dets, scores, iou, max_out = importer.retrieve_args(node)[:4]
    padded, count = nms_padded_expr(importer.block_builder, dets, scores, iou, max_out,
                                    "cruise.nms_padded")
    return importer.block_builder.emit(relax.Tuple([padded, count]))


def _text(value, default):
    value = default if value is None else value
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


@registry.onnx_converter("RoiAlign")
def _onnx_roi_align(bb, inputs, attrs, opset):
    """ONNX ``RoiAlign`` (opset 10/16); replaces TVM's converter, which offsets
    ``half_pixel`` boxes before scaling them."""
    if len(inputs) != 3 or any(x is None for x in inputs):
        raise CustomOpError("RoiAlign: needs 3 inputs (X, rois (K, 4), batch_indices (K,)), got "
                         f"{len(inputs)}")
    data, rois, batch = inputs
    default = "half_pixel" if opset >= 16 else "output_half_pixel"
    transform = _text(attrs.get("coordinate_transformation_mode"), default)
    if transform not in ("half_pixel", "output_half_pixel"):
        raise CustomOpError(f"RoiAlign: coordinate_transformation_mode {transform!r} is not one of "
                         "'half_pixel', 'output_half_pixel'")
    mode = _text(attrs.get("mode"), "avg")
    if mode != "avg":
        raise CustomOpError(f"RoiAlign: mode {mode!r} is not supported: TVM's max pooling (the max "
                         "of the interpolated samples) does not match ONNX Runtime's, which warns "
                         "that its own is wrong for sampling_ratio != 1; fix: export with "
                         "mode='avg'")
    return roi_align_expr(bb, data, rois, float(attrs.get("spatial_scale", 1.0)),
                          int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1)),
                          int(attrs.get("sampling_ratio", 0)), transform == "half_pixel",
                          op="RoiAlign", batch=batch)


@registry.kernel_schedule("nms")
def _nms_schedule(func, target):
    """TVM's NMS kernel as written: hand-written IR with its own parallel loops. The
    generic default schedule inlines the ``T_gather`` stage its extern blocks read, and
    the build then fails in FlattenBuffer ("Buffer T_gather is used before its
    definition")."""
    return func


NMS_PADDED = registry.torch_custom_op(
    "nms_padded", nms_padded_reference, _nms_padded_fake,
    schema="(Tensor dets, Tensor scores, float iou_threshold, int max_out) -> (Tensor, Tensor)")


def bench_case(seed: int = 0) -> dict:
    """Perception-size cases: ``{name: (torch_callable, args)}``.

    - ``roi_align``: a Faster R-CNN box head's pooling, 256 channels on the 1/8 feature map
      of a 512x512 image, 300 boxes, 7x7 bins, 2x2 samples, aligned;
    - ``nms``: ``cruise::nms_padded`` over 2000 scored boxes, IoU 0.7, 300 kept at most.

    The callables call ``torch.ops.torchvision.roi_align`` (present with a CPU build of
    torchvision, or after ``tests/torchvision_ops.ensure("roi_align",
    roi_align_reference, roi_align_fake)``) and ``torch.ops.cruise.nms_padded``, so a
    module wrapping one exports to the node the converters here map.

    Examples
    --------
    >>> fn, args = bench_case()["nms"]; fn(*args)[1].item() <= 300   # doctest: +SKIP
    True
    """
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(1, 256, 64, 64, generator=g)
    rois = torch.cat([torch.zeros(300, 1), _random_boxes(300, 512.0, g)], dim=1)
    dets = _random_boxes(2000, 512.0, g)
    scores = torch.rand(2000, generator=g)

    def roi_align(x, r):
        if not hasattr(torch.ops.torchvision, "roi_align"):
            raise DependencyError("torch.ops.torchvision.roi_align is not loaded: use a CPU "
                                  "build of torchvision, or declare it with tests/"
                                  "torchvision_ops.ensure('roi_align', roi_align_reference, "
                                  "roi_align_fake)")
        return torch.ops.torchvision.roi_align(x, r, 0.125, 7, 7, 2, True)

    def nms(d, s):
        return torch.ops.cruise.nms_padded(d, s, 0.7, 300)

    return {"roi_align": (roi_align, (feat, rois)), "nms": (nms, (dets, scores))}


def _random_boxes(k: int, size: float, generator) -> torch.Tensor:
    """``k`` boxes (x1, y1, x2, y2) of 16..128 pixels, centres in the image."""
    centre = torch.rand(k, 2, generator=generator) * size
    half = (16 + torch.rand(k, 2, generator=generator) * 112) / 2
    return torch.cat([centre - half, centre + half], dim=1)
