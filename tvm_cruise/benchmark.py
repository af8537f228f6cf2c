"""``tvm-cruise bench``: host latency of one model against the frameworks, in one run.

``benchmark(model)`` times, interleaved in rounds on the same inputs, batch 1, fp32 on this
machine's CPU:

- ``pytorch``: PyTorch eager (bundled models, torch modules, ``.pt2``);
- ``torch.compile``: the same module through ``torch.compile`` (inductor);
- ``onnxruntime``: ONNX Runtime's CPU provider (the ``.onnx`` given, or the torch model
  exported with ``torch.onnx.export``);
- ``tvm-untuned``: TVM's own lowering, no schedule at all, libm math
  (``default_schedules=False, fast_math=False``);
- ``tvm-default``: tvm-cruise's default CPU schedules, no tuning record;
- ``tvm-tuned``: with tuning records (``tuning_logs=`` plus the shipped ones), only when
  records cover some kernel of the model on this CPU.

Every system's output is checked against the framework's first (PyTorch, else ONNX
Runtime): a system beyond the tolerance is reported ``WRONG``, not timed as if fine. The
table gives min and median wall time, each median's ratio to ONNX Runtime's, and the
share of this machine's measured peak (the faster of a 2048² numpy and a 2048² PyTorch
sgemm: what a tuned BLAS reaches here; a system near 100% runs at the machine's peak)
that the model's conv / matmul FLOPs reach. All figures are measured wall time;
nothing here is simulated. A system that cannot run here (no torch, no C++ compiler for
inductor, no records) is listed with the reason.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import BuildError

SYSTEMS = ("pytorch", "torch.compile", "onnxruntime", "tvm-untuned", "tvm-default",
           "tvm-tuned")
TOLERANCE = 1e-3  # max|out - ref| / max|ref|, fp32 systems (reduction orders differ)


@dataclass
class SystemResult:
    system: str
    status: str                      # "ok", "WRONG" or "unavailable"
    note: str = ""
    samples_ms: list = field(default_factory=list)
    max_rel_error: float | None = None

    @property
    def min_ms(self) -> float | None:
        return min(self.samples_ms) if self.samples_ms else None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.samples_ms) if self.samples_ms else None


@dataclass
class BenchResult:
    model: str
    machine: str
    flops: int                       # 2 x the conv / matmul MACs of one run
    peak_gflops: float               # best sgemm measured on this machine (numpy, torch)
    rounds: int
    results: list[SystemResult]
    reference: str                   # what the outputs were checked against

    def _get(self, system: str) -> SystemResult | None:
        return next((r for r in self.results if r.system == system), None)

    def ratio(self, system: str, base: str = "onnxruntime") -> float | None:
        """``system``'s median over ``base``'s (None when either did not run)."""
        a, b = self._get(system), self._get(base)
        if a is None or b is None or a.median_ms is None or b.median_ms is None:
            return None
        return a.median_ms / b.median_ms

    def peak_share(self, system: str) -> float | None:
        r = self._get(system)
        if r is None or r.median_ms is None or not self.peak_gflops:
            return None
        return self.flops / (r.median_ms * 1e6) / self.peak_gflops

    def to_dict(self) -> dict:
        rows = []
        for r in self.results:
            row = asdict(r)
            row.update(min_ms=r.min_ms, median_ms=r.median_ms,
                       ratio_to_onnxruntime=self.ratio(r.system),
                       peak_share=self.peak_share(r.system))
            rows.append(row)
        return {"model": self.model, "machine": self.machine, "flops": self.flops,
                "peak_gflops": self.peak_gflops, "rounds": self.rounds,
                "reference": self.reference, "results": rows}

    def table(self) -> str:
        lines = [f"{self.model}: batch 1, fp32, {self.machine}; {self.rounds} rounds, systems "
                 f"interleaved; wall time MEASURED on this machine",
                 f"outputs checked against {self.reference} (tolerance {TOLERANCE:g} of the "
                 f"output's range); {self.flops / 1e9:.2f} GFLOP per run (conv + matmul); "
                 f"peak {self.peak_gflops:.0f} GFLOP/s (best numpy / PyTorch sgemm measured "
                 "here first)",
                 "| system | min ms | median ms | median / ONNX Runtime | % of peak | check |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for r in self.results:
            if r.median_ms is None:
                lines.append(f"| {r.system} | - | - | - | - | {r.status}: {r.note} |")
                continue
            ratio, share = self.ratio(r.system), self.peak_share(r.system)
            check = r.status if r.max_rel_error is None else \
                f"{r.status} ({r.max_rel_error:.1e})"
            if r.note:
                check += f"; {r.note}"
            lines.append(f"| {r.system} | {r.min_ms:.2f} | {r.median_ms:.2f} | "
                         f"{'-' if ratio is None else f'{ratio:.2f}x'} | "
                         f"{'-' if share is None else f'{share:.1%}'} | {check} |")
        return "\n".join(lines)


def measured_peak_gflops(n: int = 2048, repeat: int = 3) -> float:
    """GFLOP/s of the best of ``repeat`` float32 matmuls of ``n``, through numpy's BLAS
    and, where it imports, PyTorch's: this machine's practical peak (a tuned BLAS on all
    cores), whichever is faster here."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    matmuls = [lambda: a @ b]
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        matmuls.append(lambda: torch.mm(ta, tb))
    except ImportError:
        pass
    best = math.inf
    for matmul in matmuls:
        matmul()
        for _ in range(repeat):
            start = time.perf_counter()
            matmul()
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def model_flops(imported) -> int:
    """2 x the MACs of every conv2d / matmul of the imported model."""
    from tvm import relax

    from .byoc.rules import macs

    total = 0

    def visit(expr):
        nonlocal total
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            total += macs(expr)

    relax.analysis.post_order_visit(imported.mod["main"].body, visit)
    return 2 * total


def _torch_module(model: Any):
    """The torch module behind ``model``, or None."""
    from . import models

    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text in models.REFERENCE_MODELS:
            return models.get(text)[0]
        if text.endswith((".pt2", ".ep")):
            import torch

            return torch.export.load(text).module()
        return None
    try:
        import torch
    except ImportError:
        return None
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    return model.eval() if isinstance(model, torch.nn.Module) else None


def _onnx_path(model: Any, module, inputs: list, tmp: str) -> str | None:
    from . import models
    from .relay_ops.registry import onnx_translation_table

    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text.endswith(".onnx"):
            return text
        if text in models.REFERENCE_MODELS:
            return models.export_onnx(text, os.path.join(tmp, "model.onnx"))
    if module is None:
        return None
    import torch

    path = os.path.join(tmp, "model.onnx")
    torch.onnx.export(module, tuple(torch.from_numpy(a) for a in inputs), path,
                      dynamo=True, external_data=False, verbose=False,
                      custom_translation_table=onnx_translation_table())
    return path


def _onnx_failure(err: Exception) -> str:
    """Why ONNX Runtime cannot run the model, in one line."""
    import re

    text = str(err)
    custom = re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)'", text)
    if custom:
        return (f"torch's ONNX exporter has no ONNX form of {custom.group(1)} (a custom "
                "operator ONNX Runtime has no kernel for)")
    first = next((line for line in text.splitlines() if line.strip()), "")
    return f"ONNX export or ONNX Runtime failed ({type(err).__name__}: {first[:160]})"


_PAUSE_S = 0.3  # before each system's turn in a round (see benchmark)


def _time(fn: Callable, repeat: int, budget_s: float) -> list[float]:
    """Up to ``repeat`` timed runs (ms), fewer when they would exceed ``budget_s`` (at least
    three)."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
        if len(out) >= 3 and sum(out) / 1e3 > budget_s:
            break
    return out


def _rel_err(outs: list, refs: list) -> float:
    worst = 0.0
    for out, ref in zip(outs, refs):
        out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
        if out.shape != ref.shape or not np.isfinite(out).all():
            return math.inf
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        diff = float(np.abs(out - ref).max()) if ref.size else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def benchmark(model: Any, *, tuning_logs: Any = None, repeat: int = 20, rounds: int = 3,
              skip: tuple[str, ...] = (), seed: int = 0, budget_s: float = 5.0,
              progress: Callable[[str], None] | None = None) -> BenchResult:
    """Time ``model`` on this machine's CPU in every system of :data:`SYSTEMS`.

    ``repeat`` runs per system and round (fewer for a system slower than ``budget_s`` per
    round), ``rounds`` rounds with the systems interleaved, each system's turn after a
    short pause and one untimed run; ``skip`` leaves systems out.

    >>> print(benchmark("perception-cnn").table())          # doctest: +SKIP
    """
    from .build import build
    from .frontend import ImportedModel, load_model
    from .runtime import seeded_inputs

    unknown = sorted(set(skip) - set(SYSTEMS))
    if unknown:
        raise BuildError(f"bench: unknown system(s) {unknown} to skip; the systems are "
                         f"{', '.join(SYSTEMS)}")
    if repeat < 1 or rounds < 1:
        raise BuildError(f"bench: repeat={repeat}, rounds={rounds}; both must be >= 1")
    say = progress or (lambda _msg: None)
    # first, on a quiet machine: TVM's thread pool keeps spinning for a while after a
    # run, and an sgemm measured after the systems ran here got half the peak
    say("measuring this machine's sgemm peak")
    peak = measured_peak_gflops()
    if isinstance(model, ImportedModel):
        raise BuildError("bench needs the framework model (a bundled model name, torch "
                         "module, .pt2 or .onnx) to compare against, not an imported one")
    module = _torch_module(model)
    imported = load_model(model)
    infos = imported.inputs
    inputs = list(seeded_inputs(infos, seed).values())
    results: dict[str, SystemResult] = {}
    runners: dict[str, Callable] = {}
    outputs: dict[str, list] = {}

    def add(system: str, make: Callable[[], tuple[Callable, Callable, str]]):
        if system in skip:
            return
        say(f"preparing {system}")
        try:
            timed, run_once, note = make()
        except _Unavailable as why:
            results[system] = SystemResult(system, "unavailable", str(why))
            return
        outputs[system] = run_once()
        runners[system] = timed
        results[system] = SystemResult(system, "ok", note)

    def torch_system(compiled: bool):
        def make():
            if module is None:
                raise _Unavailable("no torch model (an ONNX model was given)")
            import torch

            fn = module
            if compiled:
                try:
                    fn = torch.compile(module)
                    with torch.no_grad():
                        fn(*(torch.from_numpy(a) for a in inputs))
                except Exception as err:  # noqa: BLE001 - inductor needs a C++ toolchain
                    raise _Unavailable(f"torch.compile failed here ({type(err).__name__}: "
                                       f"{str(err).splitlines()[0][:120]})") from None
            args = tuple(torch.from_numpy(a) for a in inputs)

            def run():
                with torch.no_grad():
                    return fn(*args)

            def once():
                leaves = torch.utils._pytree.tree_leaves(run())
                return [t.detach().numpy() for t in leaves if isinstance(t, torch.Tensor)]

            return run, once, ""
        return make

    def ort_system(tmp: str):
        def make():
            try:
                import onnxruntime as ort
            except ImportError:
                raise _Unavailable("onnxruntime is not installed (fix: pip install "
                                   "onnxruntime)") from None
            try:
                path = _onnx_path(model, module, inputs, tmp)
                if path is None:
                    raise _Unavailable("no ONNX form of this model")
                session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            except _Unavailable:
                raise
            except Exception as err:  # noqa: BLE001 - exporter and ORT raise many kinds
                raise _Unavailable(_onnx_failure(err)) from None
            feed = {i.name: a for i, a in zip(session.get_inputs(), inputs)}

            def run():
                return session.run(None, feed)

            return run, lambda: [np.asarray(o) for o in run()], ""
        return make

    def tvm_system(system: str):
        def make():
            import tvm

            kwargs = {"tuning_logs": False, "shipped_logs": False}
            if system == "tvm-untuned":
                kwargs.update(default_schedules=False, fast_math=False)
            elif system == "tvm-tuned":
                kwargs = {"tuning_logs": tuning_logs}
            art = build(imported, "llvm", **kwargs)
            tuning = art.metadata["tuning"]
            if system == "tvm-tuned" and not tuning["tuned_kernels"]:
                raise _Unavailable("no tuning record covers its kernels on this CPU (fix: "
                                   f"tvm-cruise tune {imported.name} --target llvm "
                                   "--host-only --tuning-logs DIR, then --tuning-logs DIR)")
            args = [tvm.runtime.tensor(a) for a in inputs]
            func = art.vm["main"]

            def once():
                out = art.run(*inputs)
                return out if isinstance(out, list) else [out]

            note = (f"{tuning['tuned_kernels']}/{tuning['host_kernels']} kernels tuned"
                    if system == "tvm-tuned" else "")
            return (lambda: func(*args)), once, note
        return make

    with tempfile.TemporaryDirectory() as tmp:
        add("pytorch", torch_system(False))
        add("torch.compile", torch_system(True))
        add("onnxruntime", ort_system(tmp))
        for system in ("tvm-untuned", "tvm-default", "tvm-tuned"):
            add(system, tvm_system(system))
        reference = next((s for s in ("pytorch", "onnxruntime") if s in outputs), None)
        if reference is None:
            raise BuildError("bench: neither PyTorch nor ONNX Runtime ran this model, so no "
                             "output can be checked; fix: install torch or onnxruntime and "
                             "do not skip both")
        for system, result in results.items():
            if system in outputs:
                result.max_rel_error = _rel_err(outputs[system], outputs[reference])
                if result.max_rel_error > TOLERANCE:
                    result.status = "WRONG"
                    runners.pop(system)  # a wrong answer's speed means nothing
        say(f"timing {', '.join(runners)}: {rounds} rounds x up to {repeat} runs")
        for _ in range(rounds):
            for system, fn in runners.items():
                # Each system starts its turn on a quiet machine and warm caches: the
                # previous runtime's worker threads keep spinning for a while after its
                # last run (ONNX Runtime's, OpenMP's, TVM's), and on 2 cores that slowed
                # whichever system came next.
                time.sleep(_PAUSE_S)
                fn()
                results[system].samples_ms += _time(fn, repeat, budget_s)
    machine = f"{_cpu_name()}, {os.cpu_count()} CPUs, {platform.machine()}"
    order = [results[s] for s in SYSTEMS if s in results]
    return BenchResult(imported.name, machine, model_flops(imported),
                       peak, rounds, order,
                       "PyTorch eager" if reference == "pytorch" else "ONNX Runtime")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


class _Unavailable(Exception):
    """A system that cannot run here; the message says why."""
