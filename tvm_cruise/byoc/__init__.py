"""BYOC: splitting a Relax graph between an accelerator and the host, op by op, with reasons.

- ``optable``: the operator table: every Relax op an accelerator runs, with its spec family,
  name, pattern arity, pattern and NPU layer kind (rules, patterns and the NPU graph reader
  all read it)
- ``rules``: every accelerator limit as one named rule with one message
- ``patterns``: fused pattern tables generated from a spec, checked by the rules
- ``fold``: BatchNorm folded into the preceding conv (with or without bias)
- ``ops``: operator identity (every op's id, kept in its span)
- ``partition``: FuseOpsByPattern + MergeCompositeFunctions, precision policy
- ``precision``: per-layer precision overrides by name (mixed precision)
- ``report``: the placement report (``art.placement``, ``analyze``)

The NPU itself (instruction set, program format, simulator, runtime) and its program
compiler live in ``tvm_cruise.npu``.

What the rules accept, the NPU compiler lowers; an op it cannot lower goes back to the host
with the compiler's reason (``driver.accelerator_stage``).
"""

from __future__ import annotations

from typing import Any

from .report import OpPlacement, PlacementReport
from .rules import RULES, Violation, violations

__all__ = ["analyze", "OpPlacement", "PlacementReport", "RULES", "Violation", "violations"]


def analyze(model: Any, target: Any = "cruise-npu", *, example_inputs: Any = None,
            input_shapes=None, precision: str = "fp16", name: str | None = None,
            layer_precision: dict | None = None) -> PlacementReport:
    """Where every op of ``model`` would run on ``target``, and why, without building.

    ``layer_precision`` overrides layers as in :func:`tvm_cruise.build` (fp32 / fp16 here:
    int8 layers need calibration data, so only a build places them).

    Examples
    --------
    >>> report = tvm_cruise.byoc.analyze("resnet18", "cruise-npu-lite")   # doctest: +SKIP
    >>> print(report.table())                                             # doctest: +SKIP
    """
    from ..driver import Compilation
    from ..errors import UnknownTargetError
    from ..targets import resolve_target

    resolved = resolve_target(target)
    if resolved.accelerator is None:
        raise UnknownTargetError(
            f"target {resolved.name!r} has no accelerator, so there is nothing to place; pick "
            "an accelerator target such as 'cruise-npu' or 'cruise-npu-lite'")
    # the same stages a build runs: what the NPU compiler cannot lower is on the host here
    compilation = Compilation.start(model, resolved, example_inputs=example_inputs,
                                    input_shapes=input_shapes, name=name,
                                    precision=precision, layer_precision=layer_precision)
    return compilation.run("accelerator").stage.placement
