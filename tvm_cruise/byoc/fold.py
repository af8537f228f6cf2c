"""Inference-time BatchNorm elimination, before partitioning.

``conv2d -> [add(bias)] -> batch_norm`` becomes ``conv2d(W * s) -> add(b')`` with
``s = gamma / sqrt(var + eps)`` and ``b' = (b - mean) * s + beta``, so an accelerator runs
conv+BN as one conv with a bias. TVM's ``FoldBatchnormToConv2D`` leaves the ``add(bias)``
form (what the torch importer makes of a conv with bias) alone; this pass does not. Any
other inference BatchNorm becomes ``multiply(x, s) + add(shift)``: element-wise ops with
per-channel broadcast. Spans (operator names) carry over to the new ops.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .rewrite import rebuild_main


def _const(expr, bound) -> np.ndarray | None:
    while isinstance(expr, relax.Var) and expr in bound:
        expr = bound[expr]
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None


def _op_call(expr, bound, name: str):
    """The call bound to ``expr`` if it calls the operator ``name``."""
    while isinstance(expr, relax.Var) and expr in bound:
        expr = bound[expr]
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name:
        return expr
    return None


def _bn_scale_shift(bn, bound):
    gamma, beta, mean, var = (_const(a, bound) for a in bn.args[1:5])
    if any(v is None for v in (gamma, beta, mean, var)):
        return None
    attrs = bn.attrs
    if not attrs.scale:
        gamma = np.ones_like(gamma)
    if not attrs.center:
        beta = np.zeros_like(beta)
    scale = gamma / np.sqrt(var.astype(np.float64) + float(attrs.epsilon))
    return scale, beta - mean * scale


def fold_batch_norm(mod: tvm.IRModule) -> tvm.IRModule:
    """Fold or decompose every inference ``batch_norm`` with constant statistics."""
    def rewrite(bb, var, value, bound):
        if not (isinstance(value, relax.TupleGetItem) and value.index == 0):
            return None
        bn = _op_call(value.tuple_value, bound, "relax.nn.batch_norm")
        if bn is None:
            return None
        scale_shift = _bn_scale_shift(bn, bound)
        if scale_shift is None:
            return None
        scale, shift = scale_shift
        data = bn.args[0]
        axis = int(bn.attrs.axis)
        dtype = str(data.ty.dtype)
        ndim = data.ty.ndim
        bcast = [1] * ndim
        bcast[axis if axis >= 0 else axis + ndim] = -1
        bias_add = _op_call(data, bound, "relax.add")
        conv = bias = None
        if bias_add is not None:
            for a, b in ((bias_add.args[0], bias_add.args[1]), (bias_add.args[1], bias_add.args[0])):
                if _op_call(a, bound, "relax.nn.conv2d") is not None and _const(b, bound) is not None:
                    conv, bias = _op_call(a, bound, "relax.nn.conv2d"), _const(b, bound)
                    break
        else:
            conv = _op_call(data, bound, "relax.nn.conv2d")
            bias = None
        weight = _const(conv.args[1], bound) if conv is not None else None
        foldable = (conv is not None and weight is not None and axis in (1, -3) and ndim == 4
                    and conv.attrs.data_layout == "NCHW" and conv.attrs.kernel_layout == "OIHW"
                    and conv.attrs.out_layout == "NCHW")
        span = bn.span
        if foldable:
            new_w = (weight * scale.reshape(-1, 1, 1, 1)).astype(weight.dtype)
            b = np.zeros(scale.shape) if bias is None else bias.reshape(-1)
            new_b = b * scale + shift
            new_conv = relax.Call(conv.op, [conv.args[0], relax.const(new_w, dtype)], conv.attrs,
                                  conv.ty_args, span=conv.span)
            conv_var = bb.emit(new_conv)
            add_span = bias_add.span if bias_add is not None else span
            return relax.Call(tvm.ir.Op.get("relax.add"),
                              [conv_var, relax.const(new_b.reshape(bcast).astype(dtype), dtype)],
                              None, None, span=add_span)
        mul = bb.emit(relax.Call(tvm.ir.Op.get("relax.multiply"),
                                 [data, relax.const(scale.reshape(bcast).astype(dtype), dtype)],
                                 None, None, span=span))
        return relax.Call(tvm.ir.Op.get("relax.add"),
                          [mul, relax.const(shift.reshape(bcast).astype(dtype), dtype)],
                          None, None, span=span)

    mod = rebuild_main(mod, rewrite)
    # The batch_norm tuples (and the conv/add they consumed) are dead now.
    return relax.transform.DeadCodeElimination(["main"])(mod)


def forward_tuple_items(mod: tvm.IRModule) -> tvm.IRModule:
    """Replace ``(a, b)[0]`` by ``a``: importers leave such pairs (max_pool2d_with_indices
    gives values and indices), and the dead half would otherwise stay on the host.

    Also gives ``take`` with constant in-range indices the ``clip`` mode: the result is
    the same, and TVM's ``fast`` mode prints an out-of-bounds warning per legalization.
    """

    def rewrite(bb, var, value, bound):
        if isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var):
            tup = bound.get(value.tuple_value)
            if isinstance(tup, relax.Tuple):
                return tup.fields[value.index]
        if (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
                and value.op.name == "relax.take" and value.attrs.mode == "fast"):
            indices = _const(value.args[1], bound)
            data_shape = value.args[0].ty.shape
            axis = int(value.attrs.axis) if value.attrs.axis is not None else None
            if indices is not None and axis is not None and data_shape is not None:
                extent = data_shape.values[axis]
                if hasattr(extent, "value") and np.all((indices >= 0) & (indices < extent.value)):
                    made = relax.op.take(value.args[0], value.args[1], axis=axis, mode="clip")
                    return relax.Call(made.op, made.args, made.attrs, made.ty_args,
                                      span=value.span)
        return None

    mod = rebuild_main(mod, rewrite)
    return relax.transform.DeadCodeElimination(["main"])(mod)


def simplify_resize(mod: tvm.IRModule) -> tvm.IRModule:
    """``image.resize2d`` forms TVM mishandles, rewritten to what they mean.

    - Same input and output size (any method, any coordinate mode but tf_crop_and_resize):
      the identity.
    - ``align_corners`` with an output size of 1 on either axis: the source coordinate is 0
      there (ONNX, PyTorch), but TVM's lowering divides by ``out - 1 = 0`` on that axis and
      fails. Nearest and linear resizes are separable, ``out = Rh @ X @ Rw^T``: they become
      two matrix products with the interpolation matrices (the NPU's own resize form).
      A cubic one is refused with a clear error.
    """
    from ..errors import BuildError
    from ..npu.compiler.resize import interpolation_matrix

    def rewrite(bb, var, value, bound):
        if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
                and value.op.name == "relax.image.resize2d"):
            return None
        attrs = value.attrs
        in_shape, out_shape = value.args[0].ty.shape, var.ty.shape  # value: not normalized
        if attrs.layout != "NCHW" or in_shape is None or out_shape is None:
            return None
        dims = list(in_shape.values)[2:] + list(out_shape.values)[2:]
        if not all(hasattr(d, "value") for d in dims):
            return None
        h, w, ho, wo = (int(d.value) for d in dims)
        mode, method = str(attrs.coordinate_transformation_mode), str(attrs.method)
        if (h, w) == (ho, wo) and mode != "tf_crop_and_resize":
            return value.args[0]
        if mode != "align_corners" or 1 not in (ho, wo):
            return None
        if method not in ("nearest_neighbor", "linear"):
            raise BuildError(
                f"resize2d ({method}, align_corners) from {h}x{w} to {ho}x{wo}: TVM cannot "
                "lower align_corners to an output size of 1. Fix: use another "
                "coordinate_transformation_mode, or an output size above 1")
        dtype = str(var.ty.dtype)
        rh = interpolation_matrix(h, ho, method, mode, str(attrs.rounding_method))
        rwt = interpolation_matrix(w, wo, method, mode, str(attrs.rounding_method)).T
        def matmul(a, b):
            made = relax.op.matmul(a, b)
            return relax.Call(made.op, made.args, made.attrs, made.ty_args, span=value.span)

        cols = bb.emit(matmul(value.args[0], relax.const(rwt.astype(dtype), dtype)))
        return matmul(relax.const(rh.astype(dtype), dtype), cols)

    return rebuild_main(mod, rewrite)
