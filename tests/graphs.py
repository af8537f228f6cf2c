"""Tiny Relax graphs for the partitioner tests, built op by op."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

RNG = np.random.default_rng(7)


def const(shape, scale=0.1):
    return relax.const((RNG.standard_normal(shape) * scale).astype("float32"), "float32")


def graph(inputs, body, dtype="float32"):
    """A module whose ``main`` takes tensors of ``inputs`` shapes and returns ``body(...)``.

    ``body(emit, *vars)`` builds the graph; ``emit(expr)`` binds one op and returns its var.
    """
    bb = relax.BlockBuilder()
    params = []
    for i, shape in enumerate(inputs):
        dims = [tvm.tirx.Var(d, "int64") if isinstance(d, str) else d for d in shape]
        params.append(relax.Var(f"x{i}", relax.TensorType(dims, dtype)))
    with bb.function("main", params):
        with bb.dataflow():
            out = body(bb.emit, *params)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    return bb.get()


def conv(x, cin, cout, k=3, stride=1, padding=None, dilation=1, groups=1, layout="NCHW"):
    pad = k // 2 if padding is None else padding
    kernel_layout = "OIHW" if layout == "NCHW" else "HWIO"
    wshape = (cout, cin // groups, k, k) if layout == "NCHW" else (k, k, cin // groups, cout)
    return relax.op.nn.conv2d(x, const(wshape), strides=stride, padding=pad, dilation=dilation,
                              groups=groups, data_layout=layout, kernel_layout=kernel_layout)


def bias(x, c):
    return relax.op.add(x, const((1, c, 1, 1)))


ACTIVATIONS = {
    "relu": lambda x: relax.op.nn.relu(x),
    "relu6": lambda x: relax.op.clip(x, 0, 6),
    "clip": lambda x: relax.op.clip(x, -1, 1),
    "sigmoid": lambda x: relax.op.sigmoid(x),
    "tanh": lambda x: relax.op.tanh(x),
    "silu": lambda x: relax.op.nn.silu(x),
    "gelu": lambda x: relax.op.nn.gelu(x),
}
