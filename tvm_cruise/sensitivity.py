"""Which layers does int8 hurt? The sensitivity pass for mixed precision.

``sensitivity(model, target, calibration=data)`` builds the model in int8 once, then once
per int8 accelerator layer with only that layer in ``alternative`` precision (fp16 on the
accelerator by default, or fp32 on the host), runs every build on the same samples and
compares each with TVM's fp32 host build of the model. A layer's sensitivity is what
taking it out of int8 buys: the output's SQNR gain in dB over the all-int8 build (and, for
[batch, classes] outputs, the top-1 agreement with fp32). The layers that buy the most are
the ones to pass as ``build(..., layer_precision={name: "fp16"})``.

Everything here is measured: each build's NPU programs run in the simulator (the same
programs a build ships), nothing is estimated. The cost is one build and one run per layer
(``layers=`` limits it). Samples default to the calibration data, which measures the
quantization error on the data the scales were chosen on; pass ``data=`` held-out samples
for an unbiased figure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .byoc.report import _si
from .calibration import (DEFAULT_PERCENTILE, CalibrationData, load_calibration,
                          missing_calibration, model_ranges)
from .errors import BuildError

ALTERNATIVES = ("fp16", "fp32")


@dataclass
class LayerSensitivity:
    """One int8 layer, measured with it alone out of int8."""

    key: str                  # the layer_precision key that selects it ("#<op id>")
    name: str                 # the placement report's names of its operators
    kind: str                 # NPU layer kind (conv2d, depthwise_conv2d, dense, pool2d, ...)
    macs: int
    sqnr_db: float            # output SQNR vs fp32 with this layer out of int8
    gain_db: float            # sqnr_db minus the all-int8 build's
    top1_agreement: float | None
    cycles_int8: int | None = None  # simulated, this layer's program share: for the trade-off


@dataclass
class SensitivityReport:
    model: str
    target: str
    alternative: str
    samples: int
    method: str
    baseline: dict            # the all-int8 build: sqnr_db, cosine, top1_agreement
    layers: list[LayerSensitivity] = field(default_factory=list)

    def ranked(self) -> list[LayerSensitivity]:
        """Layers by gain, largest first."""
        return sorted(self.layers, key=lambda s: s.gain_db, reverse=True)

    def suggest(self, min_gain_db: float = 1.0) -> dict[str, str]:
        """``layer_precision`` for the layers whose gain reaches ``min_gain_db``."""
        return {s.key: self.alternative for s in self.ranked() if s.gain_db >= min_gain_db}

    def to_dict(self) -> dict:
        return {"model": self.model, "target": self.target, "alternative": self.alternative,
                "samples": self.samples, "calibration_method": self.method,
                "baseline": dict(self.baseline), "layers": [asdict(s) for s in self.ranked()]}

    def table(self) -> str:
        b = self.baseline
        top1 = b.get("top1_agreement")
        lines = [f"int8 sensitivity of {self.model} on {self.target}: each layer alone in "
                 f"{self.alternative}, {self.samples} samples, vs TVM's fp32 host build",
                 f"all-int8: SQNR {b['sqnr_db']:.1f} dB, cosine {b['cosine']:.6f}"
                 + (f", top-1 agreement {top1:.1%}" if top1 is not None else ""),
                 "  rank  key    kind             MACs      SQNR dB  gain dB  top-1   layer"]
        for rank, s in enumerate(self.ranked(), 1):
            t1 = "" if s.top1_agreement is None else f"{s.top1_agreement:.1%}"
            lines.append(f"  {rank:<4}  {s.key:<6} {s.kind:<16} {_si(s.macs):<9} "
                         f"{s.sqnr_db:7.1f}  {s.gain_db:+7.2f}  {t1:<6}  {s.name}")
        suggestion = self.suggest()
        lines.append("suggested (gain >= 1 dB): " + (
            f"layer_precision={suggestion}" if suggestion else "none; int8 costs no layer "
            "more than 1 dB here"))
        return "\n".join(lines)


def sensitivity(model: Any, target: Any = "cruise-npu", *, calibration: Any = None,
                data: Any = None, alternative: str = "fp16", samples: int = 32,
                layers: int | None = None, calibration_method: str = "minmax",
                calibration_percentile: float = DEFAULT_PERCENTILE,
                example_inputs: Any = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None
                ) -> SensitivityReport:
    """Rank the int8 accelerator layers of ``model`` by what int8 costs the output.

    Parameters
    ----------
    calibration
        The calibration data of the int8 builds (as for :func:`tvm_cruise.build`); a QDQ
        model may go without (its own scales; then pass ``data=``).
    data
        Samples to measure on (same forms as ``calibration``); default the calibration
        samples. At most ``samples`` of them are used.
    alternative
        ``"fp16"`` (the layer on the accelerator in fp16) or ``"fp32"`` (on the host).
    layers
        Measure only the ``layers`` largest layers by MACs (default all).

    Examples
    --------
    >>> rep = tvm_cruise.sensitivity("digits-cnn", "cruise-npu", calibration=cal)  # doctest: +SKIP
    >>> print(rep.table())                                                         # doctest: +SKIP
    >>> art = tvm_cruise.build("digits-cnn", "cruise-npu", precision="int8",
    ...                        calibration=cal, layer_precision=rep.suggest())     # doctest: +SKIP
    """
    from .build import build, capture_details
    from .frontend import ImportedModel, load_model
    from .reporting.accuracy import compare
    from .targets import resolve_target

    if alternative not in ALTERNATIVES:
        raise BuildError(f"sensitivity: alternative={alternative!r}; use 'fp16' (the layer on "
                         "the accelerator in fp16) or 'fp32' (on the host)")
    if samples < 1:
        raise BuildError(f"sensitivity: samples={samples}; fix: measure on at least 1 sample")
    resolved = resolve_target(target)
    if resolved.accelerator is None:
        raise BuildError(f"sensitivity: target {resolved.name!r} has no accelerator, so no "
                         "layer runs in int8; fix: pick an accelerator target such as "
                         "'cruise-npu'")
    imported = model if isinstance(model, ImportedModel) else load_model(
        model, example_inputs, input_shapes=input_shapes)
    if calibration is None:
        calib = model_ranges(imported)
        if calib is None:
            raise missing_calibration(imported.name)
    else:
        calib = load_calibration(calibration, imported.inputs, calibration_method,
                                 calibration_percentile)
    if data is None and not isinstance(calib, CalibrationData):
        raise BuildError(f"sensitivity: {imported.name} brings its own int8 scales, so there "
                         "are no calibration samples to measure on; fix: pass data= samples")
    evaluation = calib if data is None else load_calibration(data, imported.inputs)
    inputs = evaluation.samples[:samples]

    def outputs(art) -> list[np.ndarray]:
        runs = [art.run(*sample) for sample in inputs]
        runs = [r if isinstance(r, list) else [r] for r in runs]
        return [np.concatenate([np.asarray(r[k]) for r in runs]) for k in range(len(runs[0]))]

    def measure(art) -> dict:
        metrics = [compare(str(k), o, r) for k, (o, r) in
                   enumerate(zip(outputs(art), reference))]
        top1 = [m["top1_agreement"] for m in metrics if m["top1_agreement"] is not None]
        return {"sqnr_db": min(m["sqnr_db"] for m in metrics),
                "cosine": min(m["cosine"] for m in metrics),
                "top1_agreement": min(top1) if top1 else None}

    reference = outputs(build(imported, "llvm", tuning_logs=False))
    kwargs = dict(precision="int8", calibration=calib, tuning_logs=False)
    with capture_details() as captured:
        base_art = build(imported, target, **kwargs)
    baseline = measure(base_art)
    placement = base_art.placement
    names = {o.id: o.name for o in placement.ops}
    candidates = []
    for compiled in captured[0].stage.compiled:
        if compiled.input_scales is None:
            continue
        cycles = compiled.layer_cycles()
        for index, layer in enumerate(compiled.graph.layers):
            if layer.kind == "reshape" or not layer.op_ids:
                continue
            ids = list(layer.op_ids)
            label = "+".join(dict.fromkeys(names.get(i, f"#{i}") for i in ids))
            candidates.append((f"#{min(ids)}", label, layer.kind,
                               sum(o.macs for o in placement.ops if o.id in ids),
                               cycles.get(index)))
    candidates.sort(key=lambda c: -c[3])
    report = SensitivityReport(imported.name, resolved.name, alternative, len(inputs),
                               getattr(calib, "method", "model"), baseline)
    for key, label, kind, macs, cycles in candidates[:layers]:
        art = build(imported, target, layer_precision={key: alternative}, **kwargs)
        m = measure(art)
        gain = m["sqnr_db"] - baseline["sqnr_db"] if math.isfinite(baseline["sqnr_db"]) \
            else 0.0
        report.layers.append(LayerSensitivity(key, label, kind, macs, m["sqnr_db"], gain,
                                              m["top1_agreement"], cycles))
    return report
