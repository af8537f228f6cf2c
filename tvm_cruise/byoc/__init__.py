"""BYOC: splitting a Relax graph between an accelerator and the host, op by op, with reasons.

- ``rules``: every accelerator limit as one named rule with one message
- ``patterns``: fused pattern tables generated from a spec, checked by the rules
- ``fold``: BatchNorm folded into the preceding conv (with or without bias)
- ``partition``: FuseOpsByPattern + MergeCompositeFunctions, precision policy, host
  reference path
- ``report``: the placement report (``art.placement``, ``analyze``)

The NPU program compiler and simulator are not implemented yet: offloaded functions run
through the host reference path in the accelerator's precision.
"""

from __future__ import annotations

from typing import Any

from .report import OpPlacement, PlacementReport
from .rules import RULES, Violation, violations

__all__ = ["analyze", "OpPlacement", "PlacementReport", "RULES", "Violation", "violations"]


def analyze(model: Any, target: Any = "cruise-npu", *, example_inputs: Any = None,
            input_shapes=None, precision: str = "fp16", name: str | None = None
            ) -> PlacementReport:
    """Where every op of ``model`` would run on ``target``, and why, without building.

    Examples
    --------
    >>> report = tvm_cruise.byoc.analyze("resnet18", "cruise-npu-lite")   # doctest: +SKIP
    >>> print(report.table())                                             # doctest: +SKIP
    """
    from ..errors import UnknownTargetError
    from ..frontend import ImportedModel, load_model
    from ..pipeline import prepare_passes, run_passes
    from ..targets import resolve_target
    from .partition import partition

    resolved = resolve_target(target)
    if resolved.accelerator is None:
        raise UnknownTargetError(
            f"target {resolved.name!r} has no accelerator, so there is nothing to place; pick "
            "an accelerator target such as 'cruise-npu' or 'cruise-npu-lite'")
    imported = model if isinstance(model, ImportedModel) else load_model(
        model, example_inputs, input_shapes=input_shapes, name=name)
    with resolved.tvm_target:
        mod = run_passes(imported.mod, prepare_passes())
        _, report = partition(mod, resolved.accelerator, precision, imported.name)
    return report
