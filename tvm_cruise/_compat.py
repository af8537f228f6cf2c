"""Versions of the dependencies tvm-cruise is pinned to, checked at import."""

from __future__ import annotations

import warnings
from importlib import metadata

from . import env
from .errors import DependencyError

TVM_VERSION = "0.27.0.post1"
TVM_FFI_VERSION = "0.1.14.post1"

# (distribution, version prefix, why it breaks, fix)
KNOWN_BAD = (
    ("apache-tvm-ffi", "0.1.15",
     "segfaults in tvm::ffi::ToJSONGraph when a MetaSchedule JSON database writes a workload",
     f"pip install apache-tvm-ffi=={TVM_FFI_VERSION}"),
)


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_dependencies() -> list[str]:
    """Return a message for every installed dependency known to break tvm-cruise."""
    problems = []
    tvm_version = installed_version("apache-tvm")
    if tvm_version is not None and tvm_version != TVM_VERSION:
        problems.append(
            f"apache-tvm {tvm_version} is installed but tvm-cruise is built and tested against "
            f"{TVM_VERSION} (artifacts and tuning records are TVM-version specific); fix: "
            f"pip install apache-tvm=={TVM_VERSION}"
        )
    for dist, prefix, why, fix in KNOWN_BAD:
        version = installed_version(dist)
        if version is not None and version.startswith(prefix):
            problems.append(f"{dist} {version} {why}; fix: {fix}")
    return problems


def enforce_dependencies() -> None:
    """Raise (or warn, with TVM_CRUISE_ALLOW_BAD_DEPS=1) on a known-broken dependency."""
    problems = check_dependencies()
    if not problems:
        return
    text = "; ".join(problems)
    if env.ALLOW_BAD_DEPS.get() == "1":
        warnings.warn(f"tvm-cruise: {text}", RuntimeWarning, stacklevel=3)
        return
    raise DependencyError(
        f"{text} (set {env.ALLOW_BAD_DEPS.name}=1 to import anyway at your own risk)"
    )
