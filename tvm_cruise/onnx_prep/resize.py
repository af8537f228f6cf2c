"""Resize: TVM's resize where it computes what ONNX specifies, an exact rewrite elsewhere.

Per axis, ``resize_math.onnx_weights`` builds ONNX's interpolation matrix and
``resize_math.tvm_agrees`` says whether TVM's TOPI resize computes it. Where they agree on
every axis (and no known TOPI bug applies, ``_topi_bug``), the node goes to TVM in a
canonical form its importer reads right (full-rank constant ``sizes``; no ``axes``,
``keep_aspect_ratio_policy`` or ``antialias``), so accelerators still see a resize.
Elsewhere nearest becomes a Gather per axis with exact indices, and linear/cubic
(antialias included) a MatMul per axis with the exact matrix.

What TVM 0.27 gets wrong, found with ONNX's node tests and random Resize nodes:

- ``scales`` whose product with the input size is not an integer: TVM derives the scale
  from the output size (in/out), ONNX uses the given one (downsample_scales_linear/cubic);
- nearest on an exact rounding tie: TVM computes in/out in float32 and multiplies, ONNX
  divides exactly (upsample_sizes_nearest, 2 -> 7);
- ``antialias`` is ignored; ``axes``, ``keep_aspect_ratio_policy`` and
  ``half_pixel_symmetric`` are not understood; ``align_corners`` and
  ``tf_crop_and_resize`` to size 1 divide by zero; rank 5 (resize3d) loses the depth
  extrapolation of ``tf_crop_and_resize`` and weights cubic ``exclude_outside`` wrongly;
  integer results are truncated and wrap around where ONNX rounds and saturates.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
from onnx import helper

from .graph import PrepGraph, attributes, node_error
from .resize_math import ResizeMode, onnx_weights, tvm_agrees

_FLOATS = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
           onnx.TensorProto.FLOAT16: np.float32, onnx.TensorProto.BFLOAT16: np.float32}
_ONNX_OF = {np.float32: onnx.TensorProto.FLOAT, np.float64: onnx.TensorProto.DOUBLE}
_DROPPED = ("axes", "keep_aspect_ratio_policy", "antialias")


def _constant_input(node, g: PrepGraph, index: int, what: str):
    name = node.input[index] if len(node.input) > index else ""
    if not name:
        return None
    value = g.const(name)
    if value is None:
        raise node_error(node, f"its {what} ({name!r}) is computed at run time; TVM needs it "
                               "constant",
                         "fix every input dimension (input_shapes=...) so the computation "
                         "folds, or export the model with a constant resize factor")
    return None if value.size == 0 else value.astype(np.float64)


def _resolve(node, g: PrepGraph, attrs: dict, shape: tuple[int, ...]):
    """Per axis ``(scale, out_size, (roi_start, roi_end))``, as onnx.reference does."""
    rank = len(shape)
    roi = _constant_input(node, g, 1, "roi")
    scales = _constant_input(node, g, 2, "scales")
    sizes = _constant_input(node, g, 3, "sizes")
    if (scales is None) == (sizes is None):
        raise node_error(node, "exactly one of 'scales' and 'sizes' must be given",
                         "re-export the model; the node is not valid ONNX")
    axes = [a % rank for a in attrs.get("axes", range(rank))]
    full_scales = np.ones(rank)
    full_sizes = np.array(shape, np.float64)
    full_roi = np.array([0.0] * rank + [1.0] * rank)
    crop = attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize"
    if crop and (roi is None or roi.size != 2 * len(axes)):
        raise node_error(node, f"tf_crop_and_resize needs a constant roi of {2 * len(axes)} "
                               f"values (starts, then ends), got {roi}",
                         "give the roi input as an initializer")
    for i, a in enumerate(axes):
        if scales is not None:
            full_scales[a] = scales[i]
        else:
            full_sizes[a] = sizes[i]
        if crop:
            full_roi[a], full_roi[rank + a] = roi[i], roi[len(axes) + i]
    if sizes is not None:
        full_scales = full_sizes / np.array(shape)
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = {"not_larger": np.min, "not_smaller": np.max}[policy]
            scale = float(pick(full_scales[axes]))
            full_scales = np.array([scale if a in axes else 1.0 for a in range(rank)])
            full_sizes = np.array([int(scale * d + 0.5) if a in axes else d
                                   for a, d in enumerate(shape)], np.float64)
    else:
        full_sizes = np.floor(full_scales * np.array(shape))
    return [(float(full_scales[a]), int(full_sizes[a]), (float(full_roi[a]),
             float(full_roi[rank + a]))) for a in range(rank)]


def _identity(in_size, out_size, scale, roi) -> bool:
    return (out_size == in_size and math.isclose(scale, 1.0)
            and math.isclose(roi[0], 0.0) and math.isclose(roi[1], 1.0))


def _topi_bug(rank: int, m: ResizeMode, elem: int, extrapolates: bool) -> bool:
    """Forms whose TOPI lowering is wrong beyond what :func:`tvm_agrees` models."""
    # resize3d: cubic exclude_outside weights depth with the width weights (wz = wx), and
    # tf_crop_and_resize drops the depth extrapolation (its z test result is overwritten).
    if rank == 5 and (m.coord == "tf_crop_and_resize"
                      or (m.mode == "cubic" and m.exclude_outside)):
        return True
    # An interpolated or extrapolated value is cast to an integer dtype by truncation and
    # wrap-around; ONNX rounds half to even and saturates.
    return elem not in _FLOATS and (m.mode != "nearest" or extrapolates)


def rewrite(node: onnx.NodeProto, g: PrepGraph) -> list[onnx.NodeProto] | None:
    """Replace one Resize node (see the module docstring); None keeps it as it is."""
    attrs = attributes(node)
    if g.opset < 11:
        raise node_error(node, f"Resize-{g.opset} (asymmetric coordinates, no roi input) "
                               "is read by TVM as Resize-18, which misplaces its inputs",
                         "convert the model to opset 13 or newer "
                         "(onnx.version_converter.convert_version(model, 13))")
    shape, elem = g.types.get(node.input[0], (None, None))
    if shape is None:
        raise node_error(node, "the shape of its input is not known before run time",
                         "fix every input dimension with input_shapes=...")
    m = ResizeMode.of(attrs)
    if m.mode == "nearest":
        m = dataclasses.replace(m, antialias=False)  # antialias is for linear/cubic only
    try:
        axes = _resolve(node, g, attrs, shape)
        plans = [onnx_weights(m, d, out, scale, roi) for d, (scale, out, roi) in zip(shape, axes)]
    except (ValueError, KeyError) as err:
        raise node_error(node, f"unsupported attributes: {err}",
                         "use an ONNX Resize mode and coordinate_transformation_mode") from None
    if any(out <= 0 for _, out, _ in axes):
        raise node_error(node, f"output sizes {[out for _, out, _ in axes]} make a "
                               "zero-sized tensor; tvm-cruise compiles tensors with elements",
                         "check the scales/sizes input")
    resized = [a for a, (d, (scale, out, roi)) in enumerate(zip(shape, axes))
               if not _identity(d, out, scale, roi)]
    extrapolates = any(plans[a][1].any() for a in resized)
    native = (len(shape) in (3, 4, 5) and all(a >= 2 for a in resized)
              and not _topi_bug(len(shape), m, elem, extrapolates)
              and all(tvm_agrees(m, shape[a], axes[a][1], axes[a][2], *plans[a])
                      for a in range(2, len(shape))))
    if native:
        return [_canonical(node, g, axes, m)]
    return _exact(node, g, shape, elem, m, resized, axes, plans)


def _canonical(node, g: PrepGraph, axes, m: ResizeMode) -> onnx.NodeProto:
    sizes = g.add_const(f"{node.name}/sizes", np.array([out for _, out, _ in axes], np.int64))
    roi = ""
    if m.coord == "tf_crop_and_resize":
        roi = g.add_const(f"{node.name}/roi", np.array(
            [r[0] for _, _, r in axes] + [r[1] for _, _, r in axes], np.float32))
    new = helper.make_node("Resize", [node.input[0], roi, "", sizes], list(node.output),
                           name=node.name)
    new.attribute.extend(a for a in node.attribute if a.name not in _DROPPED)
    return new


def _exact(node, g: PrepGraph, shape, elem, m: ResizeMode, resized, axes, plans):
    gathers = m.mode == "nearest" and not any(plans[a][1].any() for a in resized)
    nodes: list[onnx.NodeProto] = []

    def emit(op, inputs, **kw):
        out = g.fresh(f"{node.name}/{op.lower()}")
        nodes.append(helper.make_node(op, inputs, [out], name=out, **kw))
        return out

    current, cur_shape = node.input[0], list(shape)
    # float16/bfloat16 interpolate in float32; integers in float64, then round half to
    # even and saturate, as onnx.reference does.
    compute = None if gathers else _FLOATS.get(elem, np.float64)
    if compute is not None and elem != _ONNX_OF[compute]:
        current = emit("Cast", [current], to=_ONNX_OF[compute])
    for a in resized:
        weights, extrapolated = plans[a]
        out = axes[a][1]
        if gathers:
            index = g.add_const(f"{node.name}/index{a}", weights.argmax(axis=1).astype(np.int64))
            current = emit("Gather", [current, index], axis=a)
        else:
            rank = len(cur_shape)
            bias = np.where(extrapolated, m.extrapolation, 0.0).astype(compute)
            if a == rank - 1:
                current = emit("MatMul", [current, g.add_const(f"{node.name}/weights{a}",
                                                               weights.T.astype(compute))])
                bias_shape = (out,)
            elif a == rank - 2:
                current = emit("MatMul", [g.add_const(f"{node.name}/weights{a}",
                                                      weights.astype(compute)), current])
                bias_shape = (out, 1)
            else:
                outer, inner = int(np.prod(cur_shape[:a])), int(np.prod(cur_shape[a + 1:]))
                flat = g.add_const(f"{node.name}/shape{a}",
                                   np.array([outer, cur_shape[a], inner], np.int64))
                current = emit("Reshape", [current, flat])
                current = emit("MatMul", [g.add_const(f"{node.name}/weights{a}",
                                                      weights.astype(compute)), current])
                bias_shape = (out, 1)
            if extrapolated.any():
                current = emit("Add", [current, g.add_const(f"{node.name}/fill{a}",
                                                            bias.reshape(bias_shape))])
            if a < rank - 2:
                back = cur_shape[:a] + [out] + cur_shape[a + 1:]
                current = emit("Reshape", [current, g.add_const(f"{node.name}/shape{a}",
                                                                np.array(back, np.int64))])
        cur_shape[a] = out
    if compute is not None and elem not in _FLOATS:
        info = np.iinfo(helper.tensor_dtype_to_np_dtype(elem))
        current = emit("Round", [current])
        current = emit("Clip", [current, g.add_const(f"{node.name}/min", np.float64(info.min)),
                                g.add_const(f"{node.name}/max", np.float64(info.max))])
    if compute is not None and elem != _ONNX_OF[compute]:
        current = emit("Cast", [current], to=elem)
    if not nodes:
        return [helper.make_node("Identity", [node.input[0]], list(node.output), name=node.name)]
    nodes[-1].output[0] = node.output[0]
    return nodes
