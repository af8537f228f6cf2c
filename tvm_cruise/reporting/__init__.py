"""Deployability reports: what runs where, how fast, how accurate, and the first layer
that goes wrong (``tvm_cruise.report``, ``tvm-cruise report``; schema in docs/report.md).

- ``report``: build, measure and check a model; the :class:`Report` and its CI gates
- ``timing``: host kernels timed with ``vm.set_instrument``; the end-to-end estimate
- ``accuracy``: inputs, the framework reference (PyTorch, ONNX Runtime) and the metrics
- ``layerwise``: every NPU function on the model's real activations vs fp32, per layer
- ``graph``: the operator graph (data flow, grouping, layout, SVG)
- ``text``, ``html``: the terminal tables and the self-contained page
"""

from __future__ import annotations

from .report import SCHEMA, Gate, Report, report

__all__ = ["SCHEMA", "Gate", "Report", "report"]
