"""Autotuning: MetaSchedule records for host kernels, and where builds find them.

Today this package opens tuning logs for builds (``store``); tuning jobs, NPU tiling search
and log tools are the autotuning issue's work.
"""

from .store import open_database, resolve_log_dirs, shipped_log_dir

__all__ = ["open_database", "resolve_log_dirs", "shipped_log_dir"]
