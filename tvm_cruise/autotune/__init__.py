"""Autotuning: tuning jobs for host kernels (MetaSchedule, XGBoost) and NPU tilings (the
simulator's cycle model), and the tuning logs every build reuses (docs/autotuning.md).

- ``host``: host tuning jobs (resumable, time budget, local or RPC measurement)
- ``npu``: tiling search per offloaded MAC layer
- ``store``: log layout, stamps, locking, robust reading; ``open_logs`` for builds
- ``apply``: tuned records onto a build's kernels, never failing the build
- ``tools``: ``tvm-cruise logs list|merge|prune|validate``
"""

from .store import Logs, open_logs, resolve_log_dirs, shipped_log_dir

__all__ = ["Logs", "open_logs", "resolve_log_dirs", "shipped_log_dir"]
