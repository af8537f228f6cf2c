"""Every environment variable tvm-cruise reads, and its logging setup, declared in one place.

``tvm-cruise env`` prints this table with the current values.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Knob:
    name: str
    default: str
    help: str

    def get(self) -> str:
        return os.environ.get(self.name, self.default)


LOG_LEVEL = Knob("TVM_CRUISE_LOG_LEVEL", "warning",
                 "logging level of the 'tvm_cruise' logger: debug, info, warning or error "
                 "(the CLI's -v / -q override it)")
TUNING_LOGS = Knob("TVM_CRUISE_TUNING_LOGS", "",
                   "extra tuning-log directories every build applies, separated by "
                   f"{os.pathsep!r}")
NVCC = Knob("TVM_CRUISE_NVCC", "",
            "nvcc used to compile-check generated CUDA (default: nvcc on PATH, then "
            "/usr/local/cuda/bin/nvcc)")
CROSS_CC = Knob("TVM_CRUISE_CROSS_CC", "",
                "C compiler that links a .so for a host of another architecture (e.g. "
                "aarch64-linux-gnu-gcc); without one, export such builds as .tar")
ALLOW_BAD_DEPS = Knob("TVM_CRUISE_ALLOW_BAD_DEPS", "0",
                      "set to 1 to downgrade the known-broken dependency check to a warning")

CALIBRATION_CACHE = Knob("TVM_CRUISE_CALIBRATION_CACHE", "",
                         "directory where int8 builds keep calibrated activation ranges "
                         "(keyed by partitioned model, calibration data and method), so a "
                         "rebuild in another process does not calibrate again (default: "
                         "in-process cache only)")

KNOBS = (LOG_LEVEL, TUNING_LOGS, NVCC, CROSS_CC, ALLOW_BAD_DEPS, CALIBRATION_CACHE)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

logger = logging.getLogger("tvm_cruise")


def configure_logging(level: str | int | None = None) -> None:
    """Set the package logger's level (from ``TVM_CRUISE_LOG_LEVEL`` when ``level`` is None)."""
    if level is None:
        level = LOG_LEVEL.get()
    if isinstance(level, str):
        key = level.strip().lower()
        if key not in _LEVELS:
            raise ValueError(f"{LOG_LEVEL.name}={level!r} is not a level; use one of "
                             f"{', '.join(_LEVELS)}")
        level = _LEVELS[key]
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("tvm-cruise %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def tuning_log_dirs_from_env() -> list[str]:
    return [p for p in TUNING_LOGS.get().split(os.pathsep) if p]
