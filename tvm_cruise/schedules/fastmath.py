"""Vectorizable transcendental functions for CPU host kernels (a Relax rewrite before
legalization).

TVM lowers ``exp``, ``erf`` and ``tanh`` to LLVM's math intrinsics, which LLVM turns into
one libm call per element: a vectorized loop over them runs scalar. The transformer's
softmax and GELU kernels spent 0.26 and 0.28 ms per layer that way on a 2-core x86 host
(docs/benchmarks.md), as long as its feed-forward matmuls. This rewrite computes them from
TVM's polynomial forms (``topi.fast_exp``, ``topi.fast_erf``, ``topi.fast_tanh``: plain
arithmetic and bit operations, so vectorized like any element-wise op) for float32
tensors:

====================  =============================================================
relax op              computed as
====================  =============================================================
``exp``               ``fast_exp(x)``
``erf``               ``fast_erf(x)`` (NaN kept: ``fast_erf`` alone maps it to 1)
``tanh``              ``fast_tanh(x)``
``sigmoid``           ``1 / (1 + fast_exp(-x))``
``nn.silu``           ``x / (1 + fast_exp(-x))``
``nn.softmax``        ``topi.nn.fast_softmax`` (max-subtracted ``fast_exp``)
``nn.gelu``           ``x * (0.5 + 0.5 * fast_erf(x / sqrt(2)))``
``nn.gelu_tanh``      the tanh form with ``fast_tanh``
====================  =============================================================

Accuracy against float64 over [-87, 88] and [-4, 4] (``tests/test_fastmath.py`` checks
it): at most 3.4e-7 relative error (about 3 ulp of float32; absolute below 1) for exp,
erf, tanh, sigmoid and SiLU, 6e-7 for the GELUs (4.2e-7 measured, TVM's exact build
1.5e-7), the softmax's as the exact build's (2.1e-6: the float32 sum); NaN and ±inf
handled as the exact functions do. One range differs: ``fast_exp`` overflows to ``inf``
from x > 88.376 where the exact ``exp`` still returns finite values up to 88.72 (3.4e38),
and returns 0 below about -87.3 where ``exp`` returns float32 subnormals.

Builds apply it on CPU hosts by default (``fast_math=False`` / ``--exact-math`` keeps
TVM's exact lowering); tuning jobs and builds see the same kernels.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, te, tirx, topi

from ..byoc.rewrite import rebuild_main

# measured; tests/test_fastmath.py holds the kernels to them (relative error, absolute
# below 1, against float64, over [-87, 88] and [-4, 4])
MAX_RELATIVE_ERROR = 3.4e-7  # exp, erf, tanh, sigmoid, silu
GELU_MAX_ERROR = 6e-7        # gelu, gelu_tanh (measured 4.2e-7; TVM's exact build 1.5e-7)


def _erf(x: te.Tensor) -> te.Tensor:
    approx = topi.fast_erf(x)
    return te.compute(x.shape, lambda *i: tirx.if_then_else(tirx.isnan(x(*i)), x(*i),
                                                            approx(*i)), name="T_fast_erf")


def _one_plus_exp_neg(x: te.Tensor) -> te.Tensor:
    """``1 + fast_exp(-x)``: the denominator of sigmoid and SiLU."""
    e = topi.fast_exp(te.compute(x.shape, lambda *i: -x(*i), name="T_neg"))
    return te.compute(x.shape, lambda *i: tirx.const(1.0, x.dtype) + e(*i), name="T_denom")


def _sigmoid(x: te.Tensor) -> te.Tensor:
    d = _one_plus_exp_neg(x)
    return te.compute(x.shape, lambda *i: tirx.const(1.0, x.dtype) / d(*i),
                      name="T_fast_sigmoid")


def _silu(x: te.Tensor) -> te.Tensor:
    d = _one_plus_exp_neg(x)
    return te.compute(x.shape, lambda *i: x(*i) / d(*i), name="T_fast_silu")


def _gelu(x: te.Tensor) -> te.Tensor:
    half = tirx.const(0.5, x.dtype)
    erf = topi.fast_erf(te.compute(x.shape, lambda *i: x(*i) * tirx.const(0.5 ** 0.5, x.dtype),
                                   name="T_gelu_arg"))
    return te.compute(x.shape, lambda *i: x(*i) * (half + erf(*i) * half), name="T_fast_gelu")


def _gelu_tanh(x: te.Tensor) -> te.Tensor:
    c = tirx.const(math.sqrt(2.0 / math.pi), x.dtype)
    k = tirx.const(0.044715, x.dtype)
    one, half = tirx.const(1.0, x.dtype), tirx.const(0.5, x.dtype)
    t = topi.fast_tanh(te.compute(x.shape, lambda *i: c * x(*i) * (one + k * x(*i) * x(*i)),
                                  name="T_gelu_arg"))
    return te.compute(x.shape, lambda *i: half * x(*i) * (one + t(*i)), name="T_fast_gelu")


# relax op -> (TE function of the input tensor, extra call attributes to pass)
_FAST = {
    "relax.exp": (topi.fast_exp, ()),
    "relax.erf": (_erf, ()),
    "relax.tanh": (topi.fast_tanh, ()),
    "relax.sigmoid": (_sigmoid, ()),
    "relax.nn.silu": (_silu, ()),
    "relax.nn.softmax": (topi.nn.fast_softmax, ("axis",)),
    "relax.nn.gelu": (_gelu, ()),
    "relax.nn.gelu_tanh": (_gelu_tanh, ()),
}


def covered_ops() -> list[str]:
    """The Relax ops the rewrite computes with polynomial forms."""
    return sorted(_FAST)


def fast_math(mod: tvm.IRModule, target) -> tvm.IRModule:
    """``mod`` with the float32 ops of the module docstring computed from polynomial
    forms (CPU hosts only; others unchanged)."""
    if "gpu" in target.keys or target.kind.name != "llvm":
        return mod

    def rewrite(bb, var, value, bound):
        if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and
                value.op.name in _FAST and len(value.args) == 1):
            return None
        (data,) = value.args
        if not (isinstance(data.ty, relax.TensorType) and str(data.ty.dtype) == "float32"):
            return None
        fn, attrs = _FAST[value.op.name]
        extra = [int(getattr(value.attrs, a)) for a in attrs]
        name = value.op.name.rsplit(".", 1)[1]
        call = bb.call_te(fn, data, *extra, primfunc_name_hint=f"fast_{name}")
        return relax.Call(call.op, call.args, call.attrs, call.ty_args, span=value.span)

    return rebuild_main(mod, rewrite)
