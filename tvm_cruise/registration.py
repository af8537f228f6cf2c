"""Registration with TVM: target tags and Relax pipelines for every accelerator target.

Called on ``import tvm_cruise``; safe to call again (re-imports, test fixtures).
"""

from __future__ import annotations

from .pipeline import register_pipelines
from .targets import list_targets


def register() -> list[str]:
    """Register a TVM target tag and Relax pipeline per accelerator target; return the names.

    ``tvm.target.Target("cruise-npu")`` then resolves to the LLVM host of this machine with
    the accelerator's key (``cruise_npu``) first in ``keys``, which is how the pipeline and
    tuning records tell the accelerators apart (a resolved tag prints ``"tag": ""``).
    """
    from tvm.target import tag

    names = []
    for cruise in list_targets():
        if cruise.accelerator is None:
            continue  # "llvm" and "cuda" are TVM target kinds already
        tag.register_tag(cruise.name, cruise.tvm_config(), override=True)
        names.append(cruise.name)
    register_pipelines()
    return names
