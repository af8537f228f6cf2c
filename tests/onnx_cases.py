"""ONNX's own single-node operator tests (``onnx.backend.test.case.node``), as build cases.

Each case is an ONNX model of one node with inputs and expected outputs computed by ONNX's
numpy reference. Parameter tensors the tests feed as graph inputs (a Reshape's shape, a
Resize's scales or sizes, a Clip's bounds, Pad's pads) are moved into initializers first:
that is how real models carry them, and a compiler for fixed-shape accelerators needs
them constant.
"""

from __future__ import annotations

import copy
import functools
import warnings

import numpy as np

# op type -> input positions that are parameters, not data
PARAMETER_INPUTS = {"Reshape": [1], "Resize": [1, 2, 3], "Clip": [1, 2], "Pad": [1, 2, 3],
                    "Slice": [1, 2, 3, 4], "Expand": [1], "Tile": [1], "Unsqueeze": [1],
                    "Squeeze": [1], "TopK": [1], "ReduceMean": [1], "ReduceSum": [1],
                    "ReduceMax": [1], "ReduceMin": [1], "Split": [1], "Upsample": [1]}


@functools.lru_cache(maxsize=1)
def all_cases() -> tuple:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return tuple(c for c in collect_testcases(None) if c.model is not None
                     and len(c.model.graph.node) == 1)


def cases_for(op_types) -> list:
    """The single-node cases of ``op_types``, by name."""
    wanted = set(op_types)
    return [c for c in all_cases() if c.model.graph.node[0].op_type in wanted]


def case(name: str):
    for c in all_cases():
        if c.name == name:
            return c
    raise KeyError(name)


def constantized(c):
    """``(model, inputs, expected outputs)`` with parameter inputs made initializers."""
    from onnx import numpy_helper

    model = copy.deepcopy(c.model)
    inputs, expected = c.data_sets[0]
    node = model.graph.node[0]
    names = {node.input[i] for i in PARAMETER_INPUTS.get(node.op_type, [])
             if i < len(node.input) and node.input[i]}
    keep, data = [], []
    for info, value in zip(list(model.graph.input), inputs):
        if info.name in names:
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(value),
                                                                   info.name))
        else:
            keep.append(info)
            data.append(value)
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return model, data, list(expected)


def compare(outs, expected, tol: float) -> str | None:
    """None when every output matches (floats within ``tol`` of the largest magnitude,
    integers exactly), else what differs."""
    for i, (o, e) in enumerate(zip(outs, expected)):
        o, e = np.asarray(o), np.asarray(e)
        if o.shape != e.shape:
            return f"output {i}: shape {o.shape}, expected {e.shape}"
        if e.dtype.kind == "f":
            scale = max(float(np.abs(e).max()) if e.size else 0.0, 1e-6)
            err = float(np.abs(o.astype(np.float64) - e).max()) / scale if e.size else 0.0
            if not err <= tol:
                return f"output {i}: relative error {err:.2e} > {tol:.0e}"
        elif not np.array_equal(o, e):
            return f"output {i}: values differ"
    if len(outs) != len(expected):
        return f"{len(outs)} outputs, expected {len(expected)}"
    return None
