"""Applying tuned records to a build, kernel by kernel, never failing the build.

Like TVM's ``MetaScheduleApplyDatabase``, but a record whose trace does not apply (a
``ScheduleError``, a record from a different TIR) leaves that kernel on its default
schedule with a warning instead of aborting the whole build.
"""

from __future__ import annotations

import tvm

from ..env import logger


def apply_database(mod: tvm.IRModule, target, database) -> tuple[tvm.IRModule, int, list[str]]:
    """``(module, kernels scheduled from records, kernels whose record failed)``.

    ``database``: the build's :class:`~tvm_cruise.schedules.records.HostRecords` (records
    turned into schedules only for the kernels looked up) or any MetaSchedule database."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    from .._tvm_workarounds import preload_tensor_intrinsics
    from .records import HostRecords

    preload_tensor_intrinsics()  # traces may name tensor intrinsics
    functions = dict(mod.functions.items())
    tuned, failed = 0, []
    for gv, func in list(functions.items()):
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        tir_mod = _normalize_mod(func)
        try:
            if isinstance(database, HostRecords):
                new_func = database.schedule(tir_mod)
            else:
                new_func = _from_database(database, tir_mod, target, gv.name_hint)
        except Exception as err:  # a record that does not apply must not break the build
            failed.append(gv.name_hint)
            logger.warning("tuning record for %s did not apply (%s); using the default "
                           "schedule", gv.name_hint,
                           str(err).splitlines()[0] if str(err) else type(err).__name__)
            continue
        if new_func is None:
            continue
        for key, value in (func.attrs.items() if func.attrs is not None else []):
            new_func = new_func.with_attr(key, value)
        functions[gv] = new_func.with_attr("tirx.is_scheduled", True)
        tuned += 1
    return tvm.IRModule(functions, attrs=mod.attrs), tuned, failed


def _from_database(database, tir_mod, target, name):
    record = database.query_tuning_record(tir_mod, target, name)
    if record is None:
        return None
    sch = tvm.s_tir.Schedule(record.workload.mod, debug_mask=0)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    (new_func,) = sch.mod.functions.values()
    return new_func
