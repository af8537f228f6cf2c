"""``tvm_cruise.report``: does a model deploy, how fast is it, how accurate, and where does
it first go wrong.

One call compiles the model, measures it and checks it, and returns a :class:`Report`
whose ``data`` is the JSON document of ``docs/report.md``; the terminal table and the HTML
page are drawn from that document only, so a saved JSON renders the same page again.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import BuildError
from ..runtime import flatten_outputs
from ..verify import DEFAULT_TOLERANCE

SCHEMA = "tvm-cruise-report/1"
ACCURACY_BOUND = 1e-2  # max rel vs the framework for fp16 on the accelerator (tests agree)


@dataclass
class Gate:
    """One CI gate: ``ok`` is False when ``value`` is on the wrong side of ``limit``."""

    name: str
    limit: float
    value: float | None
    ok: bool
    message: str

    def to_dict(self) -> dict:
        return {"name": self.name, "limit": self.limit, "value": _finite(self.value),
                "ok": self.ok, "message": self.message}


class Report:
    """A deployability report (see :func:`report`).

    ``data`` is the JSON document (schema ``tvm-cruise-report/1``, ``docs/report.md``);
    ``compiled`` the ``CompiledModel`` that was built and measured (None when read back
    from JSON).
    """

    def __init__(self, data: dict, compiled=None):
        self.data = data
        self.compiled = compiled

    # -- sections ---------------------------------------------------------------------
    @property
    def verdict(self) -> str:
        return self.data["verdict"]["line"]

    @property
    def deployability(self) -> dict:
        return self.data["deployability"]

    @property
    def performance(self) -> dict:
        return self.data["performance"]

    @property
    def accuracy(self) -> dict:
        return self.data["accuracy"]

    @property
    def npu_share(self) -> float:
        """Share of the model's MACs on the accelerator (0 on a host-only target)."""
        return self.deployability["summary"]["mac_share"]

    @property
    def max_rel_error(self) -> float:
        """Worst max|out - ref| / max|ref| over the outputs vs the reference."""
        return max((o["max_rel"] for o in self.accuracy["outputs"]), default=0.0)

    @property
    def first_bad(self) -> dict | None:
        """The first NPU function / layer beyond its bound, or None."""
        layerwise = self.accuracy.get("layerwise")
        return layerwise["first_bad"] if layerwise else None

    # -- gates ------------------------------------------------------------------------
    def gates(self, min_npu_share: float | None = None,
              max_rel_error: float | None = None) -> list[Gate]:
        """CI gates; each one given is checked (``tvm-cruise report`` exits 1 on a failure).

        >>> rep.gates(min_npu_share=0.9, max_rel_error=1e-2)   # doctest: +SKIP
        [Gate(name='min-npu-share', limit=0.9, value=0.935, ok=True, ...), ...]
        """
        out = []
        if min_npu_share is not None:
            share = self.npu_share
            where = self.data["target"]["accelerator"] or "an accelerator"
            ok = share >= min_npu_share
            out.append(Gate("min-npu-share", min_npu_share, share, ok,
                            f"{share:.1%} of MACs on {where} "
                            f"{'>=' if ok else '<'} {min_npu_share:.1%} required"))
        if max_rel_error is not None:
            err = self.max_rel_error
            ok = err <= max_rel_error
            out.append(Gate("max-rel-error", max_rel_error, err, ok,
                            f"max rel error vs {self.accuracy['reference']} {err:.2e} "
                            f"{'<=' if ok else '>'} {max_rel_error:.0e} allowed"))
        return out

    # -- formats ----------------------------------------------------------------------
    def to_dict(self, gates: Sequence[Gate] | None = None) -> dict:
        """The JSON document (non-finite numbers as null); ``gates`` are added when given."""
        data = _sanitize(copy.deepcopy(self.data))
        if gates is not None:
            data["gates"] = [g.to_dict() for g in gates]
        return data

    def to_json(self, gates: Sequence[Gate] | None = None) -> str:
        return json.dumps(self.to_dict(gates), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        if data.get("schema") != SCHEMA:
            raise BuildError(f"not a tvm-cruise report (schema {data.get('schema')!r}, "
                             f"expected {SCHEMA!r})")
        return cls(data)

    def table(self, layers: int = 8) -> str:
        """The report for a terminal; ``layers``: layer rows shown per flagged function."""
        from .text import render

        return render(self.data, layers=layers)

    def to_html(self) -> str:
        """One self-contained HTML page (inline CSS and SVG, nothing fetched)."""
        from .html import render

        return render(self.data)

    def __repr__(self) -> str:
        return f"<Report {self.data['model']['name']} on {self.data['target']['name']}: " \
               f"{self.data['verdict']['status']}>"


def _finite(x):
    return x if not isinstance(x, float) or math.isfinite(x) else None


def _sanitize(obj):
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _finite(obj.item())
    return _finite(obj)


# -- building the report -------------------------------------------------------------------
def report(model: Any, target: Any = "cruise-npu", *, inputs: Any = None,
           example_inputs: Any = None, input_shapes: Mapping[str, Sequence[int]] | None = None,
           seed: int = 0, repeat: int = 5, host: Any = None, precision: str = "fp16",
           tuning_logs: Any = None, name: str | None = None,
           tolerance: float = DEFAULT_TOLERANCE, top: int = 10,
           progress: Callable[[str], None] | None = None) -> Report:
    """Compile ``model`` for ``target``, measure it and check it: a deployability report.

    Parameters
    ----------
    model, target, example_inputs, input_shapes, host, precision, tuning_logs, name
        As for :func:`tvm_cruise.build`.
    inputs
        The data to measure and compare on: a ``.npz`` path, ``{input name: array}`` or a
        sequence in input order, checked against the model's signature. Default: seeded
        N(0, 1) (``seed``). A torch module without ``example_inputs`` takes its shapes
        from them.
    repeat
        Timed runs (after one warm-up) for host kernel times and the wall time.
    tolerance
        Layer-wise bound floor: a function or layer is beyond its bound when its error
        exceeds both this and twice its fp16 floor.
    top
        Hotspots listed.
    progress
        Called with a line of text as each step starts (the CLI prints them).

    Examples
    --------
    >>> rep = tvm_cruise.report("resnet18", "cruise-npu-lite")        # doctest: +SKIP
    >>> print(rep.table())                                             # doctest: +SKIP
    >>> open("r.html", "w").write(rep.to_html())                       # doctest: +SKIP
    >>> [g.ok for g in rep.gates(min_npu_share=0.9, max_rel_error=1e-2)]  # doctest: +SKIP
    """
    from .. import __version__
    from ..build import build, capture_details
    from ..frontend import ImportedModel, load_model
    from ..targets import resolve_target
    from . import accuracy as acc
    from .graph import extract

    start = time.perf_counter()
    steps: dict[str, float] = {}

    def step(key: str, text: str) -> None:
        steps[key] = time.perf_counter()
        if progress is not None:
            progress(text)

    if repeat < 1:
        raise BuildError(f"repeat={repeat}: the report needs at least one timed run")
    resolved = resolve_target(target, host=host)  # an unknown target fails before anything
    step("import", "importing the model")
    if example_inputs is None and inputs is not None and _is_torch_module(model):
        example_inputs = _as_sequence(inputs)
    imported = model if isinstance(model, ImportedModel) else load_model(
        model, example_inputs, input_shapes=input_shapes, name=name)
    data_in = acc.seeded_inputs(imported.inputs, seed) if inputs is None else \
        acc.check_inputs(inputs, imported.inputs, imported.name)
    step("build", f"compiling {imported.name} for {resolved.name}")
    with capture_details() as captured:
        art = build(imported, target=target, host=host, precision=precision,
                    tuning_logs=tuning_logs)
    details = captured[-1]
    described = f"seeded N(0, 1), seed {seed}" if inputs is None else "user data" + (
        f" ({os.path.basename(os.fspath(inputs))})" if isinstance(inputs, (str, os.PathLike))
        else "")
    doc = _document(imported, art, resolved, __version__, inputs is None, seed, described)
    doc["graph"] = extract(details.prepared, art.placement)
    doc["deployability"] = _deployability(art, doc["graph"])
    names = {n["id"]: n["name"] for n in doc["graph"]["nodes"] if isinstance(n["id"], int)}
    step("measure", f"measuring host kernels and the whole run ({repeat} runs after a warm-up)")
    doc["performance"] = _performance(art, details, resolved, data_in, names, repeat, top)
    step("accuracy", "running the framework reference and the layer-wise check")
    doc["accuracy"] = _accuracy(model, imported, art, details, resolved, data_in, names,
                                tolerance, described)
    doc["verdict"] = _verdict(doc)
    steps["end"] = time.perf_counter()
    keys = list(steps)
    doc["timings_s"] = {k: round(steps[n] - steps[k], 3) for k, n in zip(keys, keys[1:])}
    doc["timings_s"]["total"] = round(steps["end"] - start, 3)
    return Report(doc, art)


def _is_torch_module(model) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(model, torch.nn.Module)


def _as_sequence(inputs) -> tuple:
    from .accuracy import read_npz

    if isinstance(inputs, (str, os.PathLike)):
        inputs = read_npz(inputs)
    if isinstance(inputs, Mapping):
        return tuple(inputs.values())
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def _document(imported, art, resolved, version: str, seeded: bool, seed: int,
              described: str) -> dict:
    import tvm

    return {
        "schema": SCHEMA,
        "tool": {"tvm_cruise": version, "tvm": tvm.__version__},
        "model": {"name": imported.name, "source_format": imported.source_format,
                  "inputs": [i.to_dict() for i in imported.inputs],
                  "outputs": [o.to_dict() for o in imported.outputs]},
        "target": {"name": resolved.name,
                   "accelerator": resolved.accelerator.name if resolved.accelerator else None,
                   "host": art.host,
                   "precision": art.metadata["accelerator"].get("precision")},
        "inputs": {"source": "seeded" if seeded else "user", "seed": seed if seeded else None,
                   "description": described},
    }


def _function_labels(placement) -> tuple[dict[int, str], dict[int, int]]:
    labels, counts = {}, {}
    if placement is None:
        return labels, counts
    for index in range(placement.functions):
        ops = [o for o in placement.ops if o.function == index]
        counts[index] = len(ops)
        if ops:
            first, last = ops[0].name, ops[-1].name
            labels[index] = first if first == last else f"{first} .. {last}"
    return labels, counts


def _deployability(art, graph: dict) -> dict:
    placement = art.placement
    if placement is None:
        ops = [n for n in graph["nodes"] if isinstance(n["id"], int)]
        return {"accelerator": None, "placement": None,
                "summary": {"ops": {"host": len(ops)}, "op_share": 0.0,
                            "macs": {"host": sum(n["macs"] for n in ops)},
                            "mac_share": 0.0, "functions": 0,
                            "boundary": {"tensors": 0, "to_accelerator": 0, "to_host": 0,
                                         "bytes": 0}},
                "host_ops": [], "functions": [],
                "note": f"{art.target} has no accelerator: every op runs on the host"}
    labels, counts = _function_labels(placement)
    functions = [{"function": f"f{i}", "ops": counts.get(i, 0), "layers": labels.get(i, ""),
                  "macs": sum(o.macs for o in placement.ops if o.function == i)}
                 for i in range(placement.functions)]
    return {"accelerator": placement.accelerator, "placement": placement.to_dict(),
            "summary": placement.summary(),
            "host_ops": [{"id": o.id, "name": o.name, "op": o.op, "macs": o.macs,
                          "rules": o.rules, "reasons": o.reasons}
                         for o in placement.host_ops],
            "functions": functions, "note": placement.execution}


def _performance(art, details, resolved, data_in, names, repeat, top) -> dict:
    from ..npu.program import HEADER_BYTES
    from ..npu.runtime import function_name
    from . import timing

    spec = resolved.accelerator
    headers = {c.program.to_bytes()[:HEADER_BYTES]: i
               for i, c in enumerate(details.stage.compiled)}
    args = art.device_arguments(**data_in)
    raw = timing.measure(art, args, details.kernels, function_name(spec) if spec else None,
                         headers, repeat)
    module = details.host_module
    if spec is None:  # no partitioning: give the ops the ids the graph gives them
        from ..byoc.partition import tag_ops

        module = tag_ops(module)
    sites = timing.kernel_sites(module, resolved.tvm_target,
                                fast_math=art.metadata["tuning"].get("fast_math", True))
    host = timing.host_section(raw, sites, details.kernels, names, repeat)
    stats = art.npu_stats()
    npu = None
    if stats is not None:
        labels, counts = _function_labels(art.placement)
        count = len(stats.programs)
        npu = timing.npu_section(stats, float(spec.hardware["clock_mhz"]), raw,
                                 [labels.get(i, "") for i in range(count)],
                                 [counts.get(i, 0) for i in range(count)])
    return {"npu": npu, "host": host, "estimate": timing.estimate(host, npu),
            "wall": timing.wall_section(raw, npu), "hotspots": timing.hotspots(host, npu, top)}


def _accuracy(model, imported, art, details, resolved, data_in, names, tolerance,
              described: str) -> dict:
    from . import accuracy as acc
    from . import layerwise

    reference = acc.framework_reference(model, imported)
    if isinstance(reference, str):
        reference = acc.tvm_host_reference(imported, reference)
    expected = [np.asarray(r) for r in reference.run(data_in)]
    stage = details.stage
    check = None
    if stage.functions:
        labels, _ = _function_labels(art.placement)
        check = layerwise.LayerwiseCheck(stage, resolved.accelerator, names, labels, tolerance)
        vm = art.instrumented_vm(check)
        outs = flatten_outputs(vm["main"](*art.device_arguments(**data_in)))
    else:
        outs = art.run(**data_in)
        outs = outs if isinstance(outs, list) else [outs]
    infos = art.output_info
    outputs = [acc.compare(info.name, out, ref) for info, out, ref in
               zip(infos, outs, expected)]
    section = {"reference": reference.label, "reference_kind": reference.kind,
               "inputs": described,
               "bound": ACCURACY_BOUND, "outputs": outputs,
               "max_rel": max((o["max_rel"] for o in outputs), default=0.0),
               "note": None}
    if len(expected) != len(outs):
        section["note"] = (f"the reference returned {len(expected)} outputs and the compiled "
                           f"model {len(outs)}; the first {len(outputs)} are compared")
    section["layerwise"] = layerwise.section(check.results(), len(stage.functions),
                                             tolerance) if check is not None else None
    return section




def _verdict(doc: dict) -> dict:
    dep, accuracy = doc["deployability"], doc["accuracy"]
    summary = dep["summary"]
    accel = dep["accelerator"]
    if accel is None:
        status = "host-only"
        where = f"host-only target {doc['target']['name']}: every op on the host"
    else:
        total = sum(summary["ops"].values())
        on = summary["ops"].get(accel, 0)
        host = summary["ops"].get("host", 0)
        status = "deploys" if host == 0 else "deploys-with-fallback" if on else "host-only"
        where = (f"{summary['mac_share']:.1%} of MACs ({on}/{total} ops) on {accel} in "
                 f"{summary['functions']} function{'s' if summary['functions'] != 1 else ''}, "
                 f"{host} op{'s' if host != 1 else ''} on the host")
    err = accuracy["max_rel"]
    bad = (accuracy["layerwise"] or {}).get("first_bad")
    if not math.isfinite(err) or err > accuracy["bound"] or bad is not None:
        status = "accuracy-risk"
    top1 = [o["top1_agreement"] for o in accuracy["outputs"] if o["top1_agreement"] is not None]
    parts = [where, f"max rel error vs {accuracy['reference_kind']} {err:.1e} "
                    f"(bound {accuracy['bound']:.0e})"
             + (f", top-1 {'agrees' if min(top1) == 1 else f'agrees on {min(top1):.0%}'}"
                if top1 else "")]
    if accuracy["layerwise"] is not None:
        parts.append("first error jump: " + _where(bad) if bad is not None else
                     "every NPU function and layer within its bound")
    estimate = doc["performance"]["estimate"]
    parts.append(f"estimate {estimate['total_ms']:.2f} ms ({estimate['basis']})")
    words = {"deploys": "DEPLOYS", "deploys-with-fallback": "DEPLOYS WITH HOST FALLBACK",
             "host-only": "HOST ONLY", "accuracy-risk": "ACCURACY RISK"}
    return {"status": status, "line": f"{words[status]}: " + "; ".join(parts)}


def _where(bad: dict) -> str:
    if bad["layer"] is None:
        return (f"{bad['function']} ({bad['function_layers']}) error {bad['error']:.1e} > "
                f"bound {bad['bound']:.1e}")
    return (f"{bad['function']} layer {bad['layer']} ({', '.join(bad['names'][:3])}, "
            f"{bad['kind']}) error {bad['error']:.1e} > bound {bad['bound']:.1e}")
