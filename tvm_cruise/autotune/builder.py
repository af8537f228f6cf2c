"""A MetaSchedule builder whose worker processes live for the whole tuning job.

MetaSchedule's ``LocalBuilder`` starts a new pool of worker processes for every
``build()`` call (once per search iteration, and once per back-to-back measurement of a
task's candidates), and each new worker imports TVM and MetaSchedule's tensor intrinsics
before it compiles anything: ~9 s of every call on a 2-core AMD EPYC (znver3), measured,
while compiling a small kernel takes well under a second. :class:`PooledBuilder` keeps
one pool for the job and recycles each worker after :data:`BUILDS_PER_WORKER` builds (the
reason ``LocalBuilder`` restarts its pool: memory that TVM's workers leak over many
builds). Each kernel is still compiled by MetaSchedule's own worker function, so the
artifacts are the ones ``LocalBuilder`` would make; a build that times out or raises is
that input's error, as there.
"""

from __future__ import annotations

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder import local_builder as _local
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from .._tvm_workarounds import preload_tensor_intrinsics

# Builds per worker process before it is replaced (a fresh worker costs ~9 s of CPU).
BUILDS_PER_WORKER = 64


@derived_object
class PooledBuilder(PyBuilder):
    """``LocalBuilder``'s builds on ``workers`` long-lived processes; ``close()`` ends them
    (the job does, when it finishes or fails)."""

    def __init__(self, workers: int, timeout_sec: float = 30.0) -> None:
        super().__init__()
        self.timeout_sec = timeout_sec
        # The tensor intrinsics (which MetaSchedule's build function imports) load once
        # per worker, with tvm-cruise's fast parse (_tvm_workarounds).
        self.pool = PopenPoolExecutor(max_workers=workers, timeout=timeout_sec,
                                      initializer=preload_tensor_intrinsics,
                                      maximum_process_uses=BUILDS_PER_WORKER)

    def build(self, build_inputs):
        results = []
        jobs = [(None, None, b.mod, b.target, _local._serialize_params(b.params))
                for b in build_inputs]
        for outcome in self.pool.map_with_error_catching(lambda x: _local._worker_func(*x),
                                                         jobs):
            if outcome.status == StatusKind.COMPLETE:
                results.append(BuilderResult(outcome.value, None))
            elif outcome.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(
                    None, f"build timed out: killed after {self.timeout_sec} seconds"))
            else:
                results.append(BuilderResult(None, f"build failed: {outcome.value}"))
        return results

    def close(self) -> None:
        self.pool.shutdown()
