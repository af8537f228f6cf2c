"""Build-time verification: every offloaded function, simulated, against TVM on the host.

``verify_functions`` runs each NPU program in the simulator and the same Relax function (the
partitioner's output, before the NPU compiler touched it) as an fp32 host build, on seeded
inputs, and compares them. To tell fp16 rounding from a compiler bug, a function whose error
exceeds ``tolerance`` is also built with TVM's ``ToMixedPrecision`` (fp16 tensors, fp32 accumulation: the NPU's
arithmetic, computed by TVM's own lowering): a function is within bounds when its error is
at most ``tolerance`` or at most twice that fp16 floor. Anything beyond is reported by name
with the layers it holds; ``strict`` makes it an error.

The figures compare simulated NPU output with host output; no timing is involved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import tvm
from tvm import relax

from .byoc.rewrite import substitute
from .env import logger
from .errors import BuildError

DEFAULT_TOLERANCE = 2e-2  # max|npu - fp32| / max|fp32| for fp16 arithmetic


@dataclass
class FunctionCheck:
    function: str        # f0, f1, ... as in the placement report
    symbol: str          # the partitioner's name for it
    layers: str          # first .. last source name of the ops it holds
    error: float         # max|npu - fp32| / max|fp32| over its outputs
    fp16_floor: float | None  # the same for TVM's fp16 build (only when error > tolerance)
    bound: float
    ok: bool

    def line(self) -> str:
        floor = "-" if self.fp16_floor is None else f"{self.fp16_floor:.1e}"
        verdict = "ok" if self.ok else "BEYOND BOUND"
        return (f"{self.function:>5s}  {self.error:9.2e}  {floor:>9s}  {self.bound:8.1e}  "
                f"{verdict:12s}  {self.layers}")

    def to_dict(self) -> dict:
        return asdict(self)


def inline_composites(func: relax.Function, name: str,
                      taps: list | None = None) -> relax.Function:
    """``func`` (an offloaded function: local composite functions and calls to them) as one
    flat Relax function the host can build.

    ``taps``: a list to receive, per composite (one NPU layer), the op ids it holds; the
    function then returns ``(result, composite 0's output, composite 1's, ...)``.
    """
    from .byoc.patterns import composite_op_ids

    bb = relax.BlockBuilder()
    params = [relax.Var(p.name, p.ty) for p in func.params]
    env: dict = dict(zip(func.params, params))
    local: dict = {}
    with bb.function(name, params):
        with bb.dataflow():
            for block in func.body.blocks:
                for binding in block.bindings:
                    value = binding.value
                    if isinstance(value, relax.Function):
                        local[binding.var] = value
                    elif isinstance(value, relax.Call) and value.op in local:
                        inner = local[value.op]
                        scope = {p: substitute(a, env) for p, a in zip(inner.params, value.args)}
                        for inner_block in inner.body.blocks:
                            for b in inner_block.bindings:
                                scope[b.var] = bb.emit(substitute(b.value, scope))
                        env[binding.var] = _bind(bb, substitute(inner.body.body, scope))
                        if taps is not None and isinstance(env[binding.var].ty,
                                                           relax.TensorType):
                            taps.append((composite_op_ids(inner), env[binding.var]))
                    else:
                        env[binding.var] = _bind(bb, substitute(value, env))
            result = substitute(func.body.body, env)
            if taps is not None:
                result = relax.Tuple([result, *(var for _, var in taps)])
                taps[:] = [ids for ids, _ in taps]
            out = bb.emit_output(result)
        bb.emit_func_output(out)
    return bb.get()[name]


def _bind(bb, expr):
    return expr if isinstance(expr, relax.Var) else bb.emit(expr)


def _layers(compiled) -> str:
    names = [layer for layer in compiled.graph.layers if layer.op_ids]
    if not names:
        return ""
    return f"ops {min(min(layer.op_ids) for layer in names)}..{max(max(layer.op_ids) for layer in names)}"


def host_vm(mod: tvm.IRModule) -> relax.VirtualMachine:
    """``mod`` built for this machine's CPU with the default CPU schedules: bit-identical to
    TVM's lowering and far faster (TVM's unscheduled fp16 convolutions take seconds). The
    reference runs here, whatever the build's host."""
    from .pipeline import finalize_passes, legalize_passes, run_passes
    from .schedules.cpu import apply_default_schedules

    target = tvm.target.Target("llvm")
    with target:
        mod = run_passes(mod, legalize_passes())
        mod, _ = apply_default_schedules(mod, target)
        mod = run_passes(mod, finalize_passes(target))
    return relax.VirtualMachine(relax.build(mod, target, relax_pipeline=None), tvm.cpu())


def _as_list(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [o.numpy() for o in out]


def rel_err(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    diff = float(np.abs(out - ref).max()) if ref.size else 0.0
    if not np.isfinite(diff):
        return float("inf")
    return diff / scale if scale > 0 else diff


def verify_functions(partitioned, functions, compiled, spec, *,
                     tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
                     names: dict | None = None,
                     indices: list[int] | None = None) -> list[FunctionCheck]:
    """Compare every offloaded function's NPU program with TVM's fp32 host build of it.

    Parameters
    ----------
    partitioned
        The partitioned module (``byoc.partition``): ``functions`` are its offloaded
        functions, ``compiled`` their NPU programs (``npu.compiler.lower``), same order.
    names
        ``{function name: "first layer .. last layer"}`` for the report.
    indices
        Each function's index in the placement report (default: its position here).
    """
    from .backend import backend_for

    if not functions:
        return []
    mod = tvm.IRModule({})
    for gv in functions:
        mod[gv.name_hint] = inline_composites(partitioned[gv], gv.name_hint)
    fp32 = host_vm(mod)
    fp16: list = []  # built on first need: running fp16 on a CPU is slow

    def fp16_vm():
        if not fp16:
            try:
                fp16.append(host_vm(relax.transform.ToMixedPrecision(out_dtype="float32")(mod)))
            except Exception as err:  # noqa: BLE001 - the floor is a diagnostic
                logger.info("verify: no fp16 floor (TVM's ToMixedPrecision failed: %s)", err)
                fp16.append(None)
        return fp16[0]

    rng = np.random.default_rng(seed)
    backend = backend_for(spec)
    checks = []
    for index, (gv, fn) in enumerate(zip(functions, compiled)):
        func = mod[gv.name_hint]
        inputs = [rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32")
                  for p in func.params]
        ref = _as_list(fp32[gv.name_hint](*[tvm.runtime.tensor(x) for x in inputs]))
        outs = backend.run(spec, fn, inputs)
        error = max(rel_err(o.reshape(r.shape), r) for o, r in zip(outs, ref))
        floor = None
        if error > tolerance and fp16_vm() is not None:  # the floor can only raise a bound
            half = _as_list(fp16_vm()[gv.name_hint](*[tvm.runtime.tensor(x) for x in inputs]))
            floor = max(rel_err(h, r) for h, r in zip(half, ref))
        bound = tolerance if floor is None else max(tolerance, 2 * floor)
        label = f"f{index if indices is None else indices[index]}"
        checks.append(FunctionCheck(label, gv.name_hint,
                                    (names or {}).get(gv.name_hint, _layers(fn)),
                                    error, floor, bound, bool(error <= bound)))
    return checks


def table(checks: list[FunctionCheck]) -> str:
    lines = ["verification: each NPU program (simulated) vs TVM's fp32 host build of the same "
             "function, seeded N(0,1) inputs",
             "   fn  rel.error  fp16 floor     bound  verdict       layers"]
    lines += [c.line() for c in checks]
    return "\n".join(lines)


def enforce(checks: list[FunctionCheck], strict: bool, model: str) -> None:
    """Warn about (strict: refuse) functions beyond their bound."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return
    text = (f"{len(bad)} NPU function(s) of {model} differ from the fp32 host build beyond "
            "the precision bound:\n  " + "\n  ".join(c.line() for c in bad) +
            "\nFix: keep those layers on the host (precision='fp32' or fewer offloaded ops), "
            "or report a compiler bug if the error is far above the fp16 floor")
    if strict:
        raise BuildError(text)
    logger.warning(text)
