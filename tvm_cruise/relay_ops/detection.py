"""torchvision's ``roi_align`` and ``nms``, imported onto TVM's Relax vision ops.

These are not new Relax ops: the converters here map torchvision's operators (and ONNX
``RoiAlign``) onto ``relax.op.vision.roi_align`` and
``relax.op.vision.all_class_non_max_suppression`` with the arguments that reproduce
torchvision's CPU kernels (``csrc/ops/cpu/roi_align_kernel.cpp``, ``nms_kernel.cpp``).

- ``roi_align``: TVM 0.27's torch and ONNX importers subtract the half-pixel offset from the
  box coordinates *before* ``spatial_scale`` (``(x - 0.5) * s``) where torchvision and ONNX
  subtract it after (``x * s - 0.5``): wrong for ``aligned=True`` /
  ``coordinate_transformation_mode="half_pixel"`` whenever ``spatial_scale != 1``. The
  converters here scale and offset the boxes themselves and call TVM's op with scale 1.
- ``nms``: the output length depends on the data. ``torch.ops.cruise.nms_padded`` is the
  static-shape form tvm-cruise compiles (indices padded with -1, and the count); plain
  ``torchvision.ops.nms`` imports too, but its output shape is symbolic, which tvm-cruise's
  build refuses (see docs/custom_ops_detection.md).
"""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax

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
        raise ValueError(f"{op}: dets must have shape (K, 4) as x1, y1, x2, y2, got {boxes}")
    if len(scores) != 1 or scores[0] != boxes[0]:
        raise ValueError(f"{op}: scores must have shape ({boxes[0]},) (one per box), got "
                         f"{scores}")
