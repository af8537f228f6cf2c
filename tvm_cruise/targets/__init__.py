"""Targets: the accelerators (spec files) combined with a host (LLVM CPU or CUDA GPU).

Every accelerator spec in ``specs/`` yields two targets: ``<name>`` (accelerator + LLVM
host) and ``<name>-cuda`` (accelerator + CUDA host). ``llvm`` and ``cuda`` are the plain
host targets. Registration with TVM (target tags, Relax pipelines) happens on
``import tvm_cruise`` and is idempotent.

>>> import tvm_cruise
>>> [t.name for t in tvm_cruise.list_targets()][:2]
['cruise-npu', 'cruise-npu-lite']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..errors import SpecError, UnknownTargetError
from .host import (build_machine_arch, default_host, host_arch, parse_target_config,
                   translate_legacy, validate_host)
from .spec import AcceleratorSpec

__all__ = [
    "AcceleratorSpec", "CruiseTarget", "ResolvedTarget", "accelerators", "get_accelerator",
    "add_accelerator", "list_targets", "get_target", "resolve_target", "default_host", "translate_legacy",
    "DEFAULT_CUDA_ARCH", "host_arch", "build_machine_arch",
]

# NVIDIA Orin's compute capability: the GPU an on-car CUDA host most likely has.
DEFAULT_CUDA_ARCH = "sm_87"


_ACCELERATORS: dict[str, AcceleratorSpec] = {}


def _load_shipped() -> None:
    if _ACCELERATORS:
        return
    folder = resources.files(__package__).joinpath("specs")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name.rsplit(".", 1)[0]):
        if entry.name.endswith(".json"):
            spec = AcceleratorSpec.from_dict(json.loads(entry.read_text()), source=entry.name)
            if spec.name in _ACCELERATORS:
                raise SpecError(f"two spec files define accelerator {spec.name!r}")
            _ACCELERATORS[spec.name] = spec


def accelerators() -> dict[str, AcceleratorSpec]:
    """The known accelerator specs by name: the shipped ones, then any registered."""
    _load_shipped()
    return dict(_ACCELERATORS)


def add_accelerator(spec: AcceleratorSpec) -> AcceleratorSpec:
    """Add ``spec`` to the table (idempotent for an identical spec).

    Use :func:`tvm_cruise.register_accelerator`, which also registers it with TVM.
    """
    _load_shipped()
    known = _ACCELERATORS.get(spec.name)
    if known is not None and known != spec:
        raise SpecError(
            f"accelerator {spec.name!r} is already registered with a different spec "
            f"(hash {known.spec_hash[:12]} vs {spec.spec_hash[:12]}); pick another name")
    clash = [s.name for s in _ACCELERATORS.values() if s.key == spec.key and s.name != spec.name]
    if clash:
        raise SpecError(f"accelerator key {spec.key!r} is already used by {clash[0]!r}; fix: "
                        "give the spec a key of its own")
    _ACCELERATORS[spec.name] = spec
    return spec


def get_accelerator(name: str) -> AcceleratorSpec:
    specs = accelerators()
    if name not in specs:
        raise UnknownTargetError(
            f"unknown accelerator {name!r}; known accelerators: {', '.join(specs)}"
        )
    return specs[name]


@dataclass(frozen=True)
class CruiseTarget:
    """A named compilation target: an optional accelerator plus a host kind."""

    name: str
    description: str
    host_kind: str  # "llvm" or "cuda"
    accelerator: AcceleratorSpec | None = field(default=None, repr=False)

    @property
    def is_cuda(self) -> bool:
        return self.host_kind == "cuda"

    def tvm_config(self, host: dict | None = None, cuda_arch: str | None = None) -> dict:
        """The TVM target dict. ``host`` is the CPU side, ``cuda_arch`` the GPU's."""
        import tvm

        cpu = dict(host) if host is not None else default_host()
        if self.is_cuda:
            config: dict[str, Any] = {"kind": "cuda", "arch": cuda_arch or DEFAULT_CUDA_ARCH,
                                      "host": cpu}
        else:
            config = cpu
        if self.accelerator is not None:
            base_keys = list(tvm.target.Target({k: v for k, v in config.items()
                                                if k != "keys"}).keys)
            config = dict(config, keys=[self.accelerator.key] + base_keys)
        return config


@dataclass(frozen=True)
class ResolvedTarget:
    """A target with its host fixed: what one build compiles for."""

    target: CruiseTarget
    config: dict

    @property
    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.config)

    @property
    def host_config(self) -> dict:
        """The CPU side alone (without the accelerator's key)."""
        cpu = self.config["host"] if self.target.is_cuda else self.config
        return {k: v for k, v in cpu.items() if k != "keys"}

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def accelerator(self) -> AcceleratorSpec | None:
        return self.target.accelerator


def _targets() -> dict[str, CruiseTarget]:
    table = {}
    for spec in accelerators().values():
        table[spec.name] = CruiseTarget(
            spec.name, f"{spec.description}; host: this machine's CPU (LLVM)", "llvm", spec)
    for spec in accelerators().values():
        table[f"{spec.name}-cuda"] = CruiseTarget(
            f"{spec.name}-cuda", f"{spec.description}; host: CUDA GPU", "cuda", spec)
    table["llvm"] = CruiseTarget("llvm", "host only: this machine's CPU (or --host) via LLVM",
                                 "llvm")
    table["cuda"] = CruiseTarget("cuda", f"host only: CUDA GPU (default arch "
                                 f"{DEFAULT_CUDA_ARCH}, NVIDIA Orin)", "cuda")
    return table


def list_targets() -> list[CruiseTarget]:
    """Every target tvm-cruise compiles for, each with a one-line description."""
    return list(_targets().values())


def get_target(name: str) -> CruiseTarget:
    table = _targets()
    if name not in table:
        raise UnknownTargetError(
            f"unknown target {name!r}; valid targets: {', '.join(table)} "
            "(see `tvm-cruise targets`)"
        )
    return table[name]


def _target_from_keys(keys, kind: str) -> CruiseTarget:
    for spec in accelerators().values():
        if spec.key in keys:
            return get_target(spec.name + ("-cuda" if kind == "cuda" else ""))
    return get_target(kind)


def resolve_target(target: Any, host: Any = None, cuda_arch: str | None = None) -> ResolvedTarget:
    """Resolve what a user passed as ``target`` (and optionally ``host``) into one config.

    ``target`` is a tvm-cruise target name, a ``tvm.target.Target``, a target dict, or an
    old-style ``"llvm -mcpu=..."`` string. ``host`` overrides the CPU side: a dict, JSON
    string or ``"llvm -mcpu=..."`` string.
    """
    import tvm

    if isinstance(target, str) and not target.strip().startswith(("{", "llvm ", "cuda ")):
        cruise = get_target(target.strip())  # a name; an unknown one lists the valid ones
        base_host = None
    else:
        config = parse_target_config(target, what="target")
        kind = config.get("kind")
        if kind not in ("llvm", "cuda"):
            raise UnknownTargetError(
                f"target kind {kind!r} is not supported; tvm-cruise builds for "
                f"{', '.join(_targets())} (host kinds 'llvm' and 'cuda')"
            )
        cruise = _target_from_keys(config.get("keys", ()), kind)
        config.pop("keys", None)
        if kind == "cuda":
            cuda_arch = cuda_arch or config.get("arch")
            base_host = config.get("host")
            if base_host is not None:
                base_host = parse_target_config(base_host)
        else:
            base_host = config
    if host is not None:
        base_host = parse_target_config(host)
    if base_host is not None:
        base_host = validate_host(base_host)
    if cruise.is_cuda:
        if cuda_arch is not None and not str(cuda_arch).startswith("sm_"):
            raise UnknownTargetError(
                f"cuda_arch {cuda_arch!r} must look like 'sm_87' (Orin) or 'sm_90' (H100)")
    config = cruise.tvm_config(base_host, cuda_arch)
    try:
        tvm.target.Target(config)
    except (ValueError, RuntimeError) as err:
        raise UnknownTargetError(f"target {config!r} is not valid: {err}") from None
    return ResolvedTarget(cruise, config)
