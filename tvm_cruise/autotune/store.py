"""Where tuning records live and how a build opens them.

A tuning-log directory holds MetaSchedule JSON databases (``database_workload.json`` +
``database_tuning_record.json``), directly or in sub-directories (``<dir>/<target>/``).
Every build opens the records shipped in the package (``tuning_logs/``) plus the
directories the user names. A log that cannot be read is skipped with a warning: a bad log
must never break a build.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Iterable

from .. import env
from ..env import logger
from ..errors import BuildError

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"


def shipped_log_dir() -> Path:
    """The tuning records shipped with the package (``tvm_cruise/tuning_logs``)."""
    return Path(str(resources.files("tvm_cruise.tuning_logs")))


def database_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) holding a JSON database."""
    return sorted(p.parent for p in root.rglob(WORKLOAD_FILE)
                  if (p.parent / RECORD_FILE).is_file())


def resolve_log_dirs(tuning_logs, shipped_logs: bool = True) -> tuple[list[Path], bool]:
    """``(user_dirs, use_shipped)`` from ``build(..., tuning_logs=..., shipped_logs=...)``.

    ``tuning_logs=None``: the directories in ``TVM_CRUISE_TUNING_LOGS``; a path or list of
    paths: those plus the environment's; ``False``: no tuning records at all (shipped ones
    included). ``shipped_logs=False`` drops only the records shipped with the package.
    """
    if tuning_logs is False:
        return [], False
    if tuning_logs is None or tuning_logs is True:
        given: Iterable = []
    elif isinstance(tuning_logs, (str, os.PathLike)):
        given = [tuning_logs]
    else:
        given = list(tuning_logs)
    dirs = []
    for item in [*given, *env.tuning_log_dirs_from_env()]:
        path = Path(item)
        if not path.is_dir():
            raise BuildError(f"tuning_logs: {path} is not a directory; pass the directory a "
                             "tuning job wrote (tvm-cruise tune ... --tuning-logs DIR)")
        dirs.append(path)
    return dirs, bool(shipped_logs)


def open_database(dirs: list[Path], use_shipped: bool):
    """One MetaSchedule database over every readable log, or None when there is none."""
    from tvm.s_tir import meta_schedule as ms

    roots = ([shipped_log_dir()] if use_shipped else []) + list(dirs)
    databases, opened = [], []
    for root in roots:
        for folder in database_dirs(root):
            try:
                databases.append(ms.database.JSONDatabase(
                    str(folder / WORKLOAD_FILE), str(folder / RECORD_FILE), allow_missing=False))
                opened.append(str(folder))
            except Exception as err:  # TVM raises TVMError/ValueError for unreadable logs
                logger.warning("skipping tuning log %s: it cannot be read (%s)", folder,
                               str(err).splitlines()[0] if str(err) else type(err).__name__)
    if not databases:
        return None, opened
    if len(databases) == 1:
        return databases[0], opened
    return ms.database.UnionDatabase(*databases), opened
