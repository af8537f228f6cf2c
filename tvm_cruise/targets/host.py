"""The host side of a target: the CPU (LLVM) that runs what the accelerator does not.

TVM 0.27 accepts only the dict form of a target with options; TVM's older command-line
form (``"llvm -mcpu=cortex-a78 -mtriple=aarch64-linux-gnu"``) is translated here.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
from typing import Any, Mapping

from ..errors import UnknownTargetError

# Options whose values are comma-separated lists in TVM's old string form.
_LIST_OPTIONS = {"keys", "libs", "mattr"}
_INT_OPTIONS = {"num-cores", "opt-level", "vector-width", "max_num_threads"}


@functools.lru_cache(maxsize=None)
def _system_cpu() -> str:
    import tvm.target.codegen as cg

    return str(cg.llvm_get_system_cpu())


def default_host() -> dict:
    """The build machine's CPU as an LLVM target dict (the default host)."""
    return {"kind": "llvm", "mcpu": _system_cpu(), "num-cores": os.cpu_count() or 1}


def translate_legacy(text: str) -> dict:
    """Translate TVM's old ``"llvm -mcpu=x -mattr=+a,+b"`` string into the dict form.

    >>> translate_legacy("llvm -mcpu=cortex-a78 -mtriple=aarch64-linux-gnu -num-cores=4")
    {'kind': 'llvm', 'mcpu': 'cortex-a78', 'mtriple': 'aarch64-linux-gnu', 'num-cores': 4}
    """
    tokens = shlex.split(text)
    if not tokens or tokens[0].startswith("-"):
        raise UnknownTargetError(
            f"cannot read target {text!r}: it must start with a target kind such as 'llvm' "
            "(e.g. 'llvm -mcpu=cortex-a78 -mtriple=aarch64-linux-gnu')"
        )
    config: dict[str, Any] = {"kind": tokens[0]}
    for tok in tokens[1:]:
        if not tok.startswith("-"):
            raise UnknownTargetError(
                f"cannot read target {text!r}: option {tok!r} must look like -key=value"
            )
        key, sep, value = tok.lstrip("-").partition("=")
        if not sep:
            config[key] = True
        elif key in _LIST_OPTIONS:
            config[key] = [v for v in value.split(",") if v]
        elif key in _INT_OPTIONS:
            try:
                config[key] = int(value)
            except ValueError:
                raise UnknownTargetError(
                    f"cannot read target {text!r}: -{key} needs an integer, got {value!r}"
                ) from None
        else:
            config[key] = value
    return config


def parse_target_config(value: Any, what: str = "host") -> dict:
    """Turn a target given as dict, JSON string, plain kind or old CLI string into a dict."""
    import tvm

    if isinstance(value, tvm.target.Target):
        return _target_to_dict(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise UnknownTargetError(f"{what} {value!r} is not valid JSON: {err}") from None
            return dict(data)
        return translate_legacy(text)
    raise UnknownTargetError(
        f"{what} must be a dict such as {{'kind': 'llvm', 'mcpu': 'cortex-a78'}}, a JSON "
        f"string or an 'llvm -mcpu=...' string; got {type(value).__name__}"
    )


def _plain(value: Any) -> Any:
    """TVM containers (Array, Map, String) as plain Python values."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, Mapping) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__"):
        return [_plain(v) for v in value]
    return str(value)


def _target_to_dict(target) -> dict:
    out = {}
    for key, val in target.export().items():
        if key == "tag" or val in ("", None):
            continue
        out[key] = _target_to_dict(target.host) if key == "host" else _plain(val)
    return out


def validate_host(config: Mapping[str, Any]) -> dict:
    """Check an LLVM host config with TVM and LLVM; return it as a plain dict."""
    import tvm
    import tvm.target.codegen as cg

    config = dict(config)
    if config.get("kind") != "llvm":
        raise UnknownTargetError(
            f"host {config!r} must be an LLVM CPU target (kind 'llvm'); a CUDA host is chosen "
            "with a '-cuda' target such as 'cruise-npu-cuda'"
        )
    try:
        tvm.target.Target(config)
    except (ValueError, RuntimeError) as err:
        raise UnknownTargetError(f"host {config!r} is not a valid LLVM target: {err}") from None
    mcpu = config.get("mcpu")
    if mcpu:
        triple = config.get("mtriple") or str(cg.llvm_get_system_triple())
        if not cg.llvm_is_valid_cpu(mcpu, triple):
            raise UnknownTargetError(
                f"host mcpu {mcpu!r} is not a CPU LLVM knows for {triple}; run "
                f"`llc -mtriple={triple} -mcpu=help` for the list (e.g. 'cortex-a78' for "
                "aarch64, 'znver4' or 'skylake-avx512' for x86_64)"
            )
    return config


def host_arch(config: Mapping[str, Any]) -> str:
    """The machine architecture code for ``config`` runs on (``'x86_64'``, ``'aarch64'``)."""
    triple = config.get("mtriple")
    if not triple:
        return build_machine_arch()
    arch = str(triple).split("-", 1)[0]
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)


def build_machine_arch() -> str:
    machine = platform.machine().lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)
