"""Workarounds for TVM 0.27 problems that cost users minutes, each with its reason."""

from __future__ import annotations

import contextlib
import functools
import inspect
import linecache
import sys


@contextlib.contextmanager
def _cheap_inspect_stack():
    """TVMScript's ``@T.prim_func`` calls ``inspect.stack()``, which resolves the module of
    every frame through ``inspect.getmodule`` (a scan of ``sys.modules``). It only needs
    the frames and one source line each; this stand-in gives exactly that."""
    original = inspect.stack

    def stack(context: int = 1):
        frames = []
        frame = sys._getframe(1)
        while frame is not None:
            filename, lineno = frame.f_code.co_filename, frame.f_lineno
            line = linecache.getline(filename, lineno)
            frames.append(inspect.FrameInfo(frame, filename, lineno, frame.f_code.co_name,
                                            [line] if line else None, 0 if line else None))
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = original


@functools.lru_cache(maxsize=None)
def preload_tensor_intrinsics() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` (dlight's GPU matmul rule for fp16 does, and so
    do MetaSchedule's tune contexts and its build function, in every builder worker).

    Its ~500 TVMScript functions each call ``inspect.stack()``: 80 s on this project's
    2-core machine (measured), 5 s with the stand-in above. In a builder worker the 80 s
    exceed MetaSchedule's 30 s build timeout, so every trial fails; the tuning job's builder
    runs this function as each worker's initializer (``autotune.builder``).
    """
    with _cheap_inspect_stack():
        import tvm.s_tir.tensor_intrin  # noqa: F401
        import tvm.s_tir.tensor_intrin.cuda  # noqa: F401


def drop_unnamed_meta_schedule_handlers() -> None:
    """MetaSchedule rebuilds its loggers with ``logging.config.dictConfig`` for every tune
    context and refers to the handlers already on ``tvm.s_tir.meta_schedule`` by name. A
    handler someone attached without a name (pytest's log capture does, as do many apps)
    makes that fail with ``'NoneType' object has no attribute 'format'``. dictConfig
    replaces that logger's handlers anyway, so removing the unnamed ones first loses nothing
    the tuning job would have kept."""
    import logging

    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(ms_logger.handlers):
        if handler.get_name() is None:
            ms_logger.removeHandler(handler)
