"""Accelerator specs: one JSON file per accelerator, loaded into a frozen, validated object.

The spec file is the single source of truth for an accelerator's hardware parameters and
capabilities. Shared code reads these attributes; it never branches on an accelerator name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import SpecError

SPEC_VERSION = 1
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
KNOWN_DTYPES = ("int8", "float16")
DEFAULT_ARCHITECTURE = "cruise-npu"
# Operator families an accelerator may list, with the limits each one must state.
OP_SCHEMA: dict[str, dict[str, Any]] = {
    "conv2d": {"max_kernel": int, "max_stride": int, "max_dilation": int, "max_padding": int,
               "depthwise": bool, "grouped": bool},
    "dense": {"max_rank": int},    # activation x constant weight (+bias, +activation)
    "matmul": {"max_rank": int},   # activation x activation (attention)
    "pool2d": {"types": ("max", "avg"), "max_kernel": int, "max_stride": int, "global": bool},
    "elementwise": {"ops": ("add", "subtract", "multiply", "maximum", "minimum"),
                    "broadcast": ("none", "channel", "any")},
    "activation": {"functions": ("relu", "relu6", "clip", "sigmoid", "tanh", "silu", "gelu")},
    "concat": {"axes": int},
    "resize": {"methods": ("nearest_neighbor", "linear", "cubic"), "max_scale": int},
    "reshape": {},                 # contiguous views: reshape, flatten, squeeze, expand_dims
}
KNOWN_OPS = tuple(OP_SCHEMA)
# Hardware parameters, documented with their reasoning in docs/npu_isa.md.
_REQUIRED_HARDWARE = ("mac_array", "macs_per_cycle", "clock_mhz", "sram_bytes", "sram_banks",
                      "dma_bytes_per_cycle", "dma_setup_cycles", "dram_burst_bytes",
                      "issue_cycles", "vector_lanes", "mac_pipeline_cycles",
                      "mac_weight_rows_per_cycle", "sram_read_bytes_per_cycle")
_POSITIVE_HARDWARE = ("clock_mhz", "sram_bytes", "sram_banks", "dma_bytes_per_cycle",
                      "dram_burst_bytes", "vector_lanes", "mac_weight_rows_per_cycle",
                      "sram_read_bytes_per_cycle")
_COUNT_HARDWARE = ("dma_setup_cycles", "issue_cycles", "mac_pipeline_cycles")
# whole numbers: every parameter but the clock (which may be fractional MHz)
_WHOLE_HARDWARE = _COUNT_HARDWARE + tuple(k for k in _POSITIVE_HARDWARE if k != "clock_mhz")


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _check_family(where: str, family: str, limits: Any) -> None:
    schema = OP_SCHEMA[family]
    if not isinstance(limits, Mapping):
        raise SpecError(f"{where}: ops.{family} must be an object of limits, got {limits!r}")
    missing = sorted(set(schema) - set(limits))
    extra = sorted(set(limits) - set(schema))
    if missing or extra:
        raise SpecError(f"{where}: ops.{family} must state exactly {sorted(schema)}"
                        + (f"; missing {missing}" if missing else "")
                        + (f"; unknown {extra}" if extra else ""))
    for key, kind in schema.items():
        value = limits[key]
        if kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            if key == "axes":
                ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value)
            want = "a positive integer" if key != "axes" else "a list of integers"
        elif kind is bool:
            ok, want = isinstance(value, bool), "true or false"
        elif key in ("broadcast",):
            ok, want = value in kind, f"one of {list(kind)}"
        else:
            ok = isinstance(value, (list, tuple)) and set(value) <= set(kind)
            want = f"a list drawn from {list(kind)}"
        if not ok:
            raise SpecError(f"{where}: ops.{family}.{key} must be {want}, got {_thaw(value)!r}")


@dataclass(frozen=True)
class AcceleratorSpec:
    """An accelerator described as data.

    Attributes
    ----------
    name : str
        User-facing name, also the target and pipeline name (``"cruise-npu"``).
    key : str
        Identifier used as the TVM target key, pattern prefix and runtime prefix
        (``"cruise_npu"``).
    hardware : Mapping
        ``mac_array`` [rows, cols], ``clock_mhz``, ``sram_bytes``, ``dma_bytes_per_cycle``
        and the other cycle-model parameters of docs/npu_isa.md (``npu/cost.py`` reads
        them).
    dtypes : Mapping
        Data types the MAC array computes, with their accumulator type.
    ops : Mapping
        Operator families the accelerator executes, each with its limits.
    architecture : str
        The backend that compiles for it (``tvm_cruise.backend``; default
        ``"cruise-npu"``, the Cruise NPU instruction set of docs/npu_isa.md).
    source : str
        Where the spec was read from (for error messages).
    """

    name: str
    key: str
    description: str
    hardware: Mapping[str, Any]
    dtypes: Mapping[str, Any]
    ops: Mapping[str, Any]
    max_rank: int = 4
    spec_version: int = SPEC_VERSION
    architecture: str = DEFAULT_ARCHITECTURE
    source: str = field(default="<memory>", compare=False)

    def __post_init__(self):
        where = f"accelerator spec {self.source}"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise SpecError(f"{where}: name {self.name!r} must be lower-case letters, digits "
                            "and '-', starting with a letter (e.g. 'cruise-npu')")
        if not isinstance(self.key, str) or not _KEY_RE.match(self.key):
            raise SpecError(f"{where}: key {self.key!r} must be a Python-style identifier in "
                            "lower case (e.g. 'cruise_npu'); it prefixes patterns and runtime "
                            "functions")
        from ..backend import architectures

        if self.architecture not in architectures():
            raise SpecError(f"{where}: architecture {self.architecture!r} has no backend "
                            f"(known: {', '.join(architectures())}); fix: name a known "
                            "architecture, or register the backend first "
                            "(tvm_cruise.backend.register_backend)")
        if self.spec_version != SPEC_VERSION:
            raise SpecError(f"{where}: spec_version {self.spec_version} is not supported by "
                            f"this tvm-cruise (it reads version {SPEC_VERSION}); upgrade "
                            "tvm-cruise or rewrite the spec")
        missing = [k for k in _REQUIRED_HARDWARE if k not in self.hardware]
        if missing:
            raise SpecError(f"{where}: hardware is missing {', '.join(missing)}")
        mac = self.hardware["mac_array"]
        if (not isinstance(mac, (list, tuple)) or len(mac) != 2
                or not all(isinstance(v, int) and v > 0 for v in mac)):
            raise SpecError(f"{where}: hardware.mac_array must be [rows, cols] of positive "
                            f"integers, got {_thaw(mac)!r}")
        for k in _POSITIVE_HARDWARE:
            v = self.hardware[k]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise SpecError(f"{where}: hardware.{k} must be a positive number, got {v!r}")
        for k in _WHOLE_HARDWARE:
            v = self.hardware[k]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise SpecError(f"{where}: hardware.{k} must be a whole number, got {v!r}")
        if self.hardware["sram_bytes"] % self.hardware["sram_banks"]:
            raise SpecError(f"{where}: hardware.sram_bytes ({self.hardware['sram_bytes']}) "
                            f"must split into sram_banks ({self.hardware['sram_banks']}) "
                            "equal banks")
        unknown = sorted(set(self.dtypes) - set(KNOWN_DTYPES))
        if unknown or not self.dtypes:
            raise SpecError(f"{where}: dtypes must be a non-empty subset of "
                            f"{list(KNOWN_DTYPES)}, got {sorted(self.dtypes)}")
        rate = self.hardware["macs_per_cycle"]
        array = mac[0] * mac[1]
        if not isinstance(rate, Mapping) or set(rate) != set(self.dtypes) or not all(
                isinstance(v, int) and 0 < v <= array and array % v == 0 for v in rate.values()):
            raise SpecError(f"{where}: hardware.macs_per_cycle must give, for each dtype in "
                            f"{sorted(self.dtypes)}, a divisor of the array size {array} "
                            f"(e.g. int8 {array}, float16 {array // 2}); got {_thaw(rate)!r}")
        unknown = sorted(set(self.ops) - set(KNOWN_OPS))
        if unknown:
            raise SpecError(f"{where}: unknown op families {unknown}; known ones are "
                            f"{list(KNOWN_OPS)}")
        for family, limits in self.ops.items():
            _check_family(where, family, limits)
        if not isinstance(self.max_rank, int) or self.max_rank < 1:
            raise SpecError(f"{where}: max_rank must be a positive integer, got {self.max_rank!r}")
        object.__setattr__(self, "hardware", _freeze(dict(self.hardware)))
        object.__setattr__(self, "dtypes", _freeze(dict(self.dtypes)))
        object.__setattr__(self, "ops", _freeze(dict(self.ops)))

    # -- derived figures -------------------------------------------------------------
    @property
    def macs_per_cycle(self) -> int:
        rows, cols = self.hardware["mac_array"]
        return rows * cols

    def to_dict(self) -> dict:
        """The spec as plain JSON data (what the file holds)."""
        return {
            "name": self.name,
            "key": self.key,
            "description": self.description,
            "spec_version": self.spec_version,
            "architecture": self.architecture,
            "hardware": _thaw(self.hardware),
            "dtypes": _thaw(self.dtypes),
            "max_rank": self.max_rank,
            "ops": _thaw(self.ops),
        }

    @property
    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of the spec: stamps programs and tuning records."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<memory>") -> "AcceleratorSpec":
        if not isinstance(data, Mapping):
            raise SpecError(f"accelerator spec {source}: expected a JSON object, got "
                            f"{type(data).__name__}")
        allowed = {"name", "key", "description", "spec_version", "architecture", "hardware",
                   "dtypes", "ops", "max_rank"}
        extra = sorted(set(data) - allowed)
        if extra:
            raise SpecError(f"accelerator spec {source}: unknown fields {extra}; allowed: "
                            f"{sorted(allowed)}")
        missing = sorted({"name", "key", "hardware", "dtypes", "ops"} - set(data))
        if missing:
            raise SpecError(f"accelerator spec {source}: missing fields {missing}")
        return cls(
            name=data["name"],
            key=data["key"],
            description=data.get("description", ""),
            hardware=data["hardware"],
            dtypes=data["dtypes"],
            ops=data["ops"],
            max_rank=data.get("max_rank", 4),
            spec_version=data.get("spec_version", SPEC_VERSION),
            architecture=data.get("architecture", DEFAULT_ARCHITECTURE),
            source=source,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "AcceleratorSpec":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SpecError(f"accelerator spec {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise SpecError(f"accelerator spec {path} is not valid JSON: {err}") from None
        return cls.from_dict(data, source=str(path))
