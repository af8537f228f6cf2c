"""Autotuning jobs: host kernels (MetaSchedule, XGBoost) and NPU tilings (the simulator's
cycle model), writing the tuning logs every build reuses (docs/autotuning.md).

- ``host``: host tuning jobs (resumable, time budget, local or RPC measurement)
- ``npu``: tiling search per offloaded MAC layer
- ``tools``: ``tvm-cruise logs list|merge|prune|validate``

The jobs sit above the compile pipeline (they prepare models as a build does); the log
store and the application of records to a build sit below it, in ``tvm_cruise.schedules``
(``records``: layout, stamps, locking, robust reading, ``open_logs``; ``apply``: records
onto a build's kernels, never failing the build), re-exported here.
"""

from ..schedules.records import Logs, open_logs, resolve_log_dirs, shipped_log_dir

__all__ = ["Logs", "open_logs", "resolve_log_dirs", "shipped_log_dir"]
