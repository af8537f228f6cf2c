"""Registration with TVM: target tags, Relax pipelines and pattern tables.

``register()`` runs on ``import tvm_cruise`` and is safe to call again (re-imports, test
fixtures). ``register_accelerator`` adds an accelerator from a spec alone.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from .backend import backend_for
from .errors import register_with_tvm
from .pipeline import register_pipelines
from .targets import AcceleratorSpec, add_accelerator, list_targets


def register() -> list[str]:
    """Register a TVM target tag and Relax pipeline per accelerator target, and what its
    backend needs (``backend.Backend.register``: for the Cruise NPU the pattern table and
    the runtime function ``<key>.run``, the simulator).

    ``tvm.target.Target("cruise-npu")`` then resolves to the LLVM host of this machine with
    the accelerator's key (``cruise_npu``) first in ``keys``, which is how the pipeline and
    tuning records tell the accelerators apart (a resolved tag prints ``"tag": ""``).
    Returns the registered target names.
    """
    from tvm.target import tag

    register_with_tvm()
    names = []
    for cruise in list_targets():
        if cruise.accelerator is None:
            continue  # "llvm" and "cuda" are TVM target kinds already
        tag.register_tag(cruise.name, cruise.tvm_config(), override=True)
        backend_for(cruise.accelerator).register(cruise.accelerator)
        names.append(cruise.name)
    register_pipelines()
    return names


def register_accelerator(spec: AcceleratorSpec | Mapping[str, Any] | str | os.PathLike
                         ) -> AcceleratorSpec:
    """Add an accelerator from its spec alone: a spec object, a dict, or a JSON file path.

    Its targets (``<name>``, ``<name>-cuda``), TVM tags, Relax pipelines and pattern table
    become available at once; no package code changes.

    Examples
    --------
    >>> spec = tvm_cruise.register_accelerator("my-npu.json")         # doctest: +SKIP
    >>> tvm_cruise.build("resnet18", target=spec.name)               # doctest: +SKIP
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = AcceleratorSpec.from_file(spec)
    elif isinstance(spec, Mapping):
        spec = AcceleratorSpec.from_dict(spec)
    add_accelerator(spec)
    register()
    return spec
