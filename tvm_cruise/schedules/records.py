"""Tuning logs: where records live, how they are stamped, read, merged and locked.

A tuning-log directory holds

    host/<host key>/stamp.json                     {"format", "tvm", "target"}
    host/<host key>/database_workload.json         MetaSchedule JSON database
    host/<host key>/database_tuning_record.json
    npu/<accelerator>/<spec hash[:16]>/stamp.json  {"format", "accelerator", "spec_hash"}
    npu/<accelerator>/<spec hash[:16]>/tilings.jsonl

Host records are keyed by the full host target (kind, CPU or GPU arch, cores), NPU records
by the accelerator's spec hash: editing a spec invalidates NPU records and leaves host
records alone. Reading never fails on a bad log: unreadable lines are skipped and
counted, foreign or stale record sets are skipped and counted, and the build logs one
warning that says how many and why. Writers take an exclusive lock on the directory and
replace files atomically, so concurrent jobs do not corrupt a log.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable

from .. import env
from ..env import logger
from ..errors import BuildError

LOG_FORMAT = 1
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
TILING_FILE = "tilings.jsonl"
STAMP_FILE = "stamp.json"


def shipped_log_dir() -> Path:
    """The tuning records shipped with the package (``tvm_cruise/tuning_logs``)."""
    return Path(str(resources.files("tvm_cruise.tuning_logs")))


# -- keys ---------------------------------------------------------------------------------------
def canonical_target(target) -> dict:
    """The host target as plain data, without the accelerator key (host records must not
    depend on which accelerator a build used)."""
    import tvm

    from ..targets.host import _target_to_dict

    t = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    data = _target_to_dict(t)
    keys = [k for k in data.get("keys", []) if k in ("cpu", "gpu", "cuda", "arm_cpu")]
    data["keys"] = keys
    if "host" in data and isinstance(data["host"], dict):
        data["host"].pop("keys", None)
    return data


def host_key(target) -> str:
    data = canonical_target(target)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    cpu = data.get("mcpu") or data.get("arch") or "generic"
    cores = data.get("num-cores")
    name = f"{data['kind']}-{cpu}" + (f"-{cores}c" if cores else "")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + "-" + hashlib.sha256(
        text.encode()).hexdigest()[:8]


# -- files ------------------------------------------------------------------------------------
@contextlib.contextmanager
def locked(root: Path):
    """Exclusive lock over a log directory (one writer at a time, across processes)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json_lines(path: Path) -> tuple[list, int]:
    """``(parsed lines, unreadable lines)``; a missing file is empty."""
    if not path.is_file():
        return [], 0
    good, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                good.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    return good, bad


def read_stamp(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / STAMP_FILE).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, json.JSONDecodeError):
        return None


# -- what a build loads -------------------------------------------------------------------------
@dataclass
class Skipped:
    """Why records were left out, counted per reason (reported in one warning)."""

    counts: Counter = field(default_factory=Counter)

    def add(self, reason: str, n: int = 1) -> None:
        if n:
            self.counts[reason] += n

    def warn(self) -> None:
        if self.counts:
            parts = [f"{n} {reason}" for reason, n in sorted(self.counts.items())]
            logger.warning("tuning logs: skipped %s", "; ".join(parts))

    def to_dict(self) -> dict:
        return dict(sorted(self.counts.items()))


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


def host_record_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "host").glob("*") if p.is_dir())


def load_host_database(roots: list[Path], target, skipped: Skipped):
    """A MetaSchedule MemoryDatabase of every usable host record for ``target``."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    want = canonical_target(target)
    want_key = host_key(target)
    db = ms.database.MemoryDatabase()
    opened, count = [], 0
    foreign: Counter = Counter()
    for root in roots:
        for folder in host_record_dirs(root):
            stamp = read_stamp(folder)
            if stamp is None or stamp.get("format") != LOG_FORMAT:
                skipped.add(f"host record sets without a valid stamp ({folder})")
                continue
            workloads, bad_w = read_json_lines(folder / WORKLOAD_FILE)
            records, bad_r = read_json_lines(folder / RECORD_FILE)
            if stamp.get("tvm") != tvm.__version__:
                skipped.add(f"host records written by TVM {stamp.get('tvm')} (this is TVM "
                            f"{tvm.__version__})", len(records))
                continue
            if folder.name != want_key and stamp.get("target") != want:
                if root.resolve() != shipped_log_dir().resolve():
                    foreign[folder.name] += len(records)  # the package ships other CPUs'
                continue
            skipped.add("unreadable lines in host logs", bad_w + bad_r)
            parsed_w = []
            for item in workloads:
                try:
                    wl = ms.database.Workload.from_json(item)
                    db.commit_workload(wl.mod)
                    parsed_w.append(wl)
                except Exception:  # a damaged workload line: skip it, keep the rest
                    parsed_w.append(None)
                    skipped.add("unreadable lines in host logs")
            for item in records:
                try:
                    wl = parsed_w[int(item[0])]
                    if wl is None:
                        raise ValueError("record of an unreadable workload")
                    rec = ms.database.TuningRecord.from_json(item[1], wl)
                    if rec.target is not None and canonical_target(rec.target) != want:
                        skipped.add("host records tuned for another target")
                        continue
                    if not rec.run_secs or min(float(s) for s in rec.run_secs) >= 1e9:
                        skipped.add("host records of failed measurements")
                        continue
                    db.commit_tuning_record(rec)
                    count += 1
                except Exception:
                    skipped.add("unreadable lines in host logs")
            opened.append(str(folder))
    if foreign and not count:
        # Logs hold records, none for this host: the user most likely expected them to apply.
        skipped.add(f"host records tuned for other targets ({', '.join(sorted(foreign))}; "
                    f"this build's host is {want_key})", sum(foreign.values()))
    return (db if count else None), opened, count


def record_json(record):
    """``record`` as plain JSON data. MetaSchedule's own ``TuningRecord.as_json`` has no
    form for the index map of a ``transform_layout`` (the default schedules' phase split
    and packed accumulators); this writes it as TVM's JSON text, the form
    ``TuningRecord.from_json`` reads back."""
    import tvm
    from tvm.s_tir.meta_schedule import _ffi_api
    from tvm.tirx import FloatImm, IndexMap, IntImm
    from tvm_ffi import Array, Map

    def plain(obj):
        if obj is None or isinstance(obj, (bool, int, float)):
            return obj
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, (IntImm, FloatImm)):
            return obj.value
        if isinstance(obj, (Array, list, tuple)):
            return [plain(i) for i in obj]
        if isinstance(obj, Map):
            return {plain(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, IndexMap):
            return tvm.ir.save_json(obj)
        raise TypeError(f"a tuning record holds a {type(obj).__name__}, which has no JSON form")

    return plain(_ffi_api.TuningRecordAsJSON(record))


def merge_host_records(root: Path, key: str, stamp: dict, workloads_and_records) -> int:
    """Merge ``[(Workload, [TuningRecord])]`` into ``root/host/key`` under the directory
    lock, deduplicated, files rewritten atomically; returns the records added."""
    folder = root / "host" / key
    with locked(root):
        existing_w, _ = read_json_lines(folder / WORKLOAD_FILE)
        existing_r, _ = read_json_lines(folder / RECORD_FILE)
        w_lines = [json.dumps(w, separators=(",", ":")) for w in existing_w]
        index = {str(w[0]): i for i, w in enumerate(existing_w)
                 if isinstance(w, list) and w}  # keyed by the workload's structural hash
        seen = {json.dumps(r, sort_keys=True) for r in existing_r}
        r_lines = [json.dumps(r, separators=(",", ":")) for r in existing_r]
        added = 0
        for workload, records in workloads_and_records:
            wjson = workload.as_json()
            wkey = str(wjson[0])
            if wkey not in index:
                index[wkey] = len(w_lines)
                w_lines.append(json.dumps(wjson, separators=(",", ":")))
            for rec in records:
                line = [index[wkey], record_json(rec)]
                text = json.dumps(line, sort_keys=True)
                if text not in seen:
                    seen.add(text)
                    r_lines.append(json.dumps(line, separators=(",", ":")))
                    added += 1
        write_atomic(folder / WORKLOAD_FILE, "".join(w + "\n" for w in w_lines))
        write_atomic(folder / RECORD_FILE, "".join(r + "\n" for r in r_lines))
        write_atomic(folder / STAMP_FILE, json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    return added


def write_host_records(root: Path, target, workloads_and_records) -> int:
    """Merge a tuning job's records for ``target`` into ``root``'s log."""
    import tvm

    stamp = {"format": LOG_FORMAT, "tvm": tvm.__version__, "target": canonical_target(target)}
    return merge_host_records(root, host_key(target), stamp, workloads_and_records)


# -- NPU tiling records -----------------------------------------------------------------------
def npu_dir(root: Path, spec) -> Path:
    return root / "npu" / spec.name / spec.spec_hash[:16]


def load_npu_records(roots: list[Path], spec, skipped: Skipped) -> tuple[dict, list[str]]:
    """``{layer signature: record}`` (the fastest per signature) for ``spec``."""
    best: dict = {}
    opened = []
    for root in roots:
        base = root / "npu" / spec.name
        if not base.is_dir():
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            stamp = read_stamp(folder)
            lines, bad = read_json_lines(folder / TILING_FILE)
            if stamp is None or stamp.get("format") != LOG_FORMAT:
                skipped.add(f"NPU record sets without a valid stamp ({folder})", len(lines))
                continue
            if stamp.get("spec_hash") != spec.spec_hash:
                skipped.add(f"NPU records for another version of the {spec.name} spec",
                            len(lines))
                continue
            skipped.add("unreadable lines in NPU logs", bad)
            for rec in lines:
                if not (isinstance(rec, dict) and isinstance(rec.get("signature"), str)
                        and isinstance(rec.get("tiling"), dict)
                        and isinstance(rec.get("cycles"), (int, float))):
                    skipped.add("unreadable lines in NPU logs")
                    continue
                known = best.get(rec["signature"])
                if known is None or rec["cycles"] < known["cycles"]:
                    best[rec["signature"]] = rec
            opened.append(str(folder))
    return best, opened


def merge_npu_records(folder: Path, root: Path, stamp: dict, records: list[dict]) -> int:
    """Merge NPU records into ``folder`` (inside ``root``), deduplicated, under the lock."""
    with locked(root):
        existing, _ = read_json_lines(folder / TILING_FILE)
        seen = {json.dumps(r, sort_keys=True) for r in existing}
        lines = [json.dumps(r, sort_keys=True) for r in existing]
        added = 0
        for rec in records:
            text = json.dumps(rec, sort_keys=True)
            if text not in seen:
                seen.add(text)
                lines.append(text)
                added += 1
        write_atomic(folder / TILING_FILE, "".join(line + "\n" for line in lines))
        write_atomic(folder / STAMP_FILE, json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    return added


def write_npu_records(root: Path, spec, records: list[dict]) -> int:
    stamp = {"format": LOG_FORMAT, "accelerator": spec.name, "spec_hash": spec.spec_hash}
    return merge_npu_records(npu_dir(root, spec), root, stamp, records)


@dataclass
class Logs:
    """What a build found in its tuning logs."""

    host_db: object
    npu_records: dict
    opened: list
    use_shipped: bool
    skipped: Skipped


def open_logs(tuning_logs, shipped_logs: bool, target, spec=None) -> Logs:
    """Load the host records for ``target`` and the NPU records for ``spec`` from the
    shipped logs (unless opted out) and the user's directories."""
    dirs, use_shipped = resolve_log_dirs(tuning_logs, shipped_logs)
    roots = ([shipped_log_dir()] if use_shipped else []) + dirs
    skipped = Skipped()
    host_db, host_opened, _ = load_host_database(roots, target, skipped)
    npu_records, npu_opened = load_npu_records(roots, spec, skipped) if spec else ({}, [])
    return Logs(host_db, npu_records, host_opened + npu_opened, use_shipped, skipped)
