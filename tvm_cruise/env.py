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

NUM_THREADS = Knob("TVM_NUM_THREADS", "",
                   "threads of TVM's CPU runtime (TVM's own variable). Unset, tvm-cruise sets "
                   "it to the physical cores this process may run on: TVM alone takes half "
                   "the logical CPUs on x86 (it assumes two hyperthreads per core), which is "
                   "1 thread on a 2-vCPU machine whose vCPUs are cores")

BUILD_JOBS = Knob("TVM_CRUISE_BUILD_JOBS", "",
                  "threads that generate a build's host code (LLVM), each a share of the "
                  "kernels; 1 builds them in one module as TVM does (default: the CPUs this "
                  "process may run on, at most 8)")

KNOBS = (LOG_LEVEL, TUNING_LOGS, NVCC, CROSS_CC, ALLOW_BAD_DEPS, CALIBRATION_CACHE,
         NUM_THREADS, BUILD_JOBS)

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


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (its affinity mask): one per
    distinct (package, core) in Linux's CPU topology; the CPU count where that is not
    readable."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{base}/physical_package_id") as pkg, open(f"{base}/core_id") as core:
                cores.add((pkg.read().strip(), core.read().strip()))
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def configure_threads() -> None:
    """Give TVM's CPU runtime one thread per physical core unless the user chose
    (``TVM_NUM_THREADS`` / ``OMP_NUM_THREADS``). Must run before TVM's thread pool starts
    (it reads the variable once); subprocesses (tuning runners) inherit it."""
    if NUM_THREADS.name in os.environ or "OMP_NUM_THREADS" in os.environ:
        return
    os.environ[NUM_THREADS.name] = str(physical_cores())


def tuning_log_dirs_from_env() -> list[str]:
    return [p for p in TUNING_LOGS.get().split(os.pathsep) if p]
