"""tvm-cruise: Apache TVM (Relax) extended with on-car accelerator targets.

>>> import tvm_cruise
>>> art = tvm_cruise.build("perception-cnn", target="cruise-npu")     # doctest: +SKIP
>>> art.export_library("perception.so")                               # doctest: +SKIP
>>> tvm_cruise.load("perception.so").run(x)                           # doctest: +SKIP
>>> print(tvm_cruise.report("resnet18", "cruise-npu-lite").table())    # doctest: +SKIP

Importing the package registers its targets (TVM target tags) and Relax pipelines, so
``tvm.target.Target("cruise-npu")`` and ``tvm.compile(mod, target="cruise-npu",
relax_pipeline="cruise-npu")`` work. Registration is idempotent.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import env  # noqa: E402

env.configure_threads()  # before TVM's thread pool starts
env.configure_logging()

from . import _compat  # noqa: E402
_compat.enforce_dependencies()

from .artifact import read_metadata  # noqa: E402
from .build import build  # noqa: E402
from .errors import (ArtifactError, BuildError, CruiseError, DependencyError,  # noqa: E402
                     InputMismatchError, ModelLoadError, SpecError, UnknownModelError,
                     UnknownTargetError, UnsupportedOpError)
from .frontend import ImportedModel, TensorInfo, load_model  # noqa: E402
from .registration import register, register_accelerator  # noqa: E402
from .reporting import Report, report  # noqa: E402
from .runtime import CompiledModel, load  # noqa: E402
from .sensitivity import SensitivityReport, sensitivity  # noqa: E402
from . import relay_ops  # noqa: E402,F401  (registers the custom ops)
from .targets import list_targets  # noqa: E402

register()

__all__ = [
    "__version__", "build", "load", "load_model", "list_targets", "read_metadata", "register",
    "register_accelerator", "report", "sensitivity",
    "CompiledModel", "ImportedModel", "Report", "SensitivityReport", "TensorInfo",
    "CruiseError", "ArtifactError", "BuildError", "DependencyError", "InputMismatchError",
    "ModelLoadError", "SpecError", "UnknownModelError", "UnknownTargetError",
    "UnsupportedOpError",
]
