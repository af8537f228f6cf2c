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


_UNREADABLE = object()


def _json_lines(path: Path) -> list[tuple[str, object]]:
    """``[(line, parsed or _UNREADABLE)]`` of a JSON-lines file's non-empty lines; a missing
    file is empty."""
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append((line, json.loads(line)))
                except json.JSONDecodeError:
                    out.append((line, _UNREADABLE))
    return out


def read_json_lines(path: Path, keep_places: bool = False) -> tuple[list, int]:
    """``(parsed lines, unreadable lines)``; a missing file is empty. ``keep_places``: an
    unreadable line stays in the list as None, so the others keep their indices (records
    name their workload by its line)."""
    lines = _json_lines(path)
    good = [None if value is _UNREADABLE else value for _, value in lines
            if keep_places or value is not _UNREADABLE]
    return good, sum(value is _UNREADABLE for _, value in lines)


# Parsed host-record files of this process, by (path, inode, mtime, size): a build reads
# the shipped sets again each time (ResNet-18's warm build spent 0.22 s of ~3 s parsing
# them). A rewritten file (tuning jobs replace it: write_atomic) has another key. Only
# _usable_host_records reads through it, and it keeps the parsed lines unmodified.
_PARSED: dict[tuple, tuple[list, int]] = {}


def _read_json_lines_cached(path: Path, keep_places: bool = False) -> tuple[list, int]:
    """:func:`read_json_lines`, reusing this process's earlier parse of an unchanged file
    (the lists are shared: callers must not modify them)."""
    try:
        st = path.stat()
    except OSError:
        return read_json_lines(path, keep_places)
    key = (str(path.resolve()), st.st_ino, st.st_mtime_ns, st.st_size, keep_places)
    if key not in _PARSED:
        if len(_PARSED) > 64:  # a long-lived process tuning into many folders
            _PARSED.clear()
        _PARSED[key] = read_json_lines(path, keep_places)
    return _PARSED[key]


def _lines_as_written(path: Path) -> tuple[list[str], list]:
    """``(non-empty lines, each parsed or None)`` of a JSON-lines file."""
    lines = _json_lines(path)
    return [text for text, _ in lines], \
        [None if value is _UNREADABLE else value for _, value in lines]


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


@dataclass
class _Entry:
    """One usable host record, still as JSON: its workload's line and the record's body."""

    workload: list       # [structural hash, serialized TIR module]
    record: list         # [trace, run_secs, target, args_info]
    mean_secs: float     # how MetaSchedule ranks records of one workload


def _usable_host_records(roots: list[Path], target, skipped: Skipped):
    """``({workload hash: [_Entry]}, folders opened, usable records)`` for ``target``.

    Record sets of another TVM or target are judged by their stamp before their files are
    read (the package ships sets for several CPUs); records are checked as JSON (readable,
    of a readable workload, tuned for this target, measured) and left unparsed as TIR, which
    is most of the cost: only the records a build looks up are turned into schedules."""
    import tvm

    want = canonical_target(target)
    want_key = host_key(target)
    targets_seen: dict[str, bool] = {}
    by_hash: dict[str, list[_Entry]] = {}
    opened, count = [], 0
    foreign: Counter = Counter()
    for root in roots:
        for folder in host_record_dirs(root):
            stamp = read_stamp(folder)
            if stamp is None or stamp.get("format") != LOG_FORMAT:
                skipped.add(f"host record sets without a valid stamp ({folder})")
                continue
            if stamp.get("tvm") != tvm.__version__:
                skipped.add(f"host records written by TVM {stamp.get('tvm')} (this is TVM "
                            f"{tvm.__version__})", _count_lines(folder / RECORD_FILE))
                continue
            if folder.name != want_key and stamp.get("target") != want:
                if root.resolve() != shipped_log_dir().resolve():
                    foreign[folder.name] += _count_lines(folder / RECORD_FILE)
                continue  # the package ships other CPUs' sets: not a problem
            workloads, bad_w = _read_json_lines_cached(folder / WORKLOAD_FILE, keep_places=True)
            records, bad_r = _read_json_lines_cached(folder / RECORD_FILE)
            skipped.add("unreadable lines in host logs", bad_w + bad_r)
            for item in records:
                try:
                    index, body = item
                    workload = workloads[int(index)]
                    if not (isinstance(workload, list) and len(workload) == 2 and
                            isinstance(body, list) and len(body) == 4):
                        raise ValueError("not a record")
                    trace, run_secs, rec_target = body[0], body[1], body[2]
                    if rec_target is not None:
                        key = json.dumps(rec_target, sort_keys=True)
                        if key not in targets_seen:
                            targets_seen[key] = canonical_target(
                                tvm.target.Target(rec_target)) == want
                        if not targets_seen[key]:
                            skipped.add("host records tuned for another target")
                            continue
                    secs = [float(s) for s in run_secs or []]
                    if not secs or min(secs) >= 1e9:
                        skipped.add("host records of failed measurements")
                        continue
                    if not isinstance(trace, list):
                        raise ValueError("not a trace")
                except Exception:  # a damaged line: skip it, keep the rest
                    skipped.add("unreadable lines in host logs")
                    continue
                by_hash.setdefault(str(workload[0]), []).append(
                    _Entry(workload, body, sum(secs) / len(secs)))
                count += 1
            opened.append(str(folder))
    if foreign and not count:
        # Logs hold records, none for this host: the user most likely expected them to apply.
        skipped.add(f"host records tuned for other targets ({', '.join(sorted(foreign))}; "
                    f"this build's host is {want_key})", sum(foreign.values()))
    return by_hash, opened, count


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


class HostRecords:
    """The host records a build may use, turned into schedules only when looked up.

    ``schedule(mod)`` gives the kernel of ``mod`` (an IRModule holding one PrimFunc as
    ``main``) scheduled by its best record, as MetaSchedule's database would pick it (the
    lowest mean run time among records of a structurally equal workload), or None."""

    def __init__(self, by_hash: dict):
        self._by_hash = {key: sorted(entries, key=lambda e: e.mean_secs)  # best first
                         for key, entries in by_hash.items()}
        self._workloads: dict[int, object] = {}

    def _workload_mod(self, entry: _Entry):
        from tvm.s_tir import meta_schedule as ms

        key = id(entry.workload)
        if key not in self._workloads:
            self._workloads[key] = ms.database.Workload.from_json(entry.workload).mod
        return self._workloads[key]

    def best(self, mod) -> tuple[object, list] | None:
        """``(workload module, trace JSON)`` of the best record for ``mod``, or None."""
        import tvm_ffi

        entries = self._by_hash.get(str(tvm_ffi.structural_hash(mod)), [])
        for entry in entries:
            workload = self._workload_mod(entry)
            if tvm_ffi.structural_equal(workload, mod):
                return workload, entry.record[0]
        return None

    def schedule(self, mod):
        """The scheduled PrimFunc, or None where no record matches; raises where the best
        record's trace does not apply."""
        import tvm
        from tvm.s_tir.schedule import Trace

        found = self.best(mod)
        if found is None:
            return None
        workload, trace = found
        sch = tvm.s_tir.Schedule(workload, debug_mask=0)
        Trace.apply_json_to_schedule(trace, sch)
        (func,) = sch.mod.functions.values()
        return func


def host_records(roots: list[Path], target, skipped: Skipped):
    """``(HostRecords or None, folders opened, usable records)``: what builds use."""
    by_hash, opened, count = _usable_host_records(roots, target, skipped)
    return (HostRecords(by_hash) if count else None), opened, count


def load_host_database(roots: list[Path], target, skipped: Skipped):
    """A MetaSchedule MemoryDatabase of every usable host record for ``target`` (what
    tuning jobs and the log tools use; builds use :func:`host_records`)."""
    from tvm.s_tir import meta_schedule as ms

    by_hash, opened, _ = _usable_host_records(roots, target, skipped)
    db = ms.database.MemoryDatabase()
    count = 0
    for entries in by_hash.values():
        parsed: dict[int, object] = {}
        for entry in entries:
            try:
                key = id(entry.workload)
                if key not in parsed:
                    parsed[key] = ms.database.Workload.from_json(entry.workload)
                    db.commit_workload(parsed[key].mod)
                db.commit_tuning_record(
                    ms.database.TuningRecord.from_json(entry.record, parsed[key]))
                count += 1
            except Exception:  # a workload or trace that does not parse: skip it, keep the rest
                skipped.add("unreadable lines in host logs")
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
        # Lines are kept as they are, unreadable ones too: records name their workload by
        # its line (`tvm-cruise logs prune` is what drops unreadable records).
        w_lines, existing_w = _lines_as_written(folder / WORKLOAD_FILE)
        r_lines, existing_r = _lines_as_written(folder / RECORD_FILE)
        index = {str(w[0]): i for i, w in enumerate(existing_w)
                 if isinstance(w, list) and w}  # keyed by the workload's structural hash
        seen = {json.dumps(r, sort_keys=True) for r in existing_r if r is not None}
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
    host_db, host_opened, _ = host_records(roots, target, skipped)
    npu_records, npu_opened = load_npu_records(roots, spec, skipped) if spec else ({}, [])
    return Logs(host_db, npu_records, host_opened + npu_opened, use_shipped, skipped)
