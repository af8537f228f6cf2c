"""``tvm-cruise logs``: list, merge, prune and validate tuning logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..schedules import records as store


def _host_sets(root: Path):
    for folder in store.host_record_dirs(root):
        stamp = store.read_stamp(folder) or {}
        # unreadable workload lines stay as None: records name their workload by its line
        workloads, bad_w = store.read_json_lines(folder / store.WORKLOAD_FILE, keep_places=True)
        records, bad_r = store.read_json_lines(folder / store.RECORD_FILE)
        yield folder, stamp, workloads, records, bad_w + bad_r


def _npu_sets(root: Path):
    base = root / "npu"
    if not base.is_dir():
        return
    for folder in sorted(p for p in base.glob("*/*") if p.is_dir()):
        stamp = store.read_stamp(folder) or {}
        lines, bad = store.read_json_lines(folder / store.TILING_FILE)
        yield folder, stamp, lines, bad


def _best_us(record) -> float | None:
    try:
        secs = [float(s) for s in record[1][1]]
    except (TypeError, ValueError, IndexError):
        return None
    return None if not secs or min(secs) >= 1e9 else float(np.mean(secs)) * 1e6


def list_logs(root: Path) -> list[str]:
    """One block per record set: what is tuned, for which target, and how good."""
    import tvm

    from ..targets import accelerators

    lines = []
    for folder, stamp, workloads, records, bad in _host_sets(root):
        target = stamp.get("target", {})
        usable = "" if stamp.get("tvm") == tvm.__version__ else \
            f"  [TVM {stamp.get('tvm')}: not usable with TVM {tvm.__version__}]"
        lines.append(f"host {folder.name}: {json.dumps(target, sort_keys=True)}{usable}")
        best: dict = {}
        for rec in records:
            us = _best_us(rec)
            if us is not None and isinstance(rec[0], int):
                best[rec[0]] = min(us, best.get(rec[0], us))
        readable = sum(w is not None for w in workloads)
        lines.append(f"  {readable} workloads, {len(records)} records"
                     + (f", {bad} unreadable lines" if bad else ""))
        for idx, us in sorted(best.items()):
            lines.append(f"    workload {idx}: best {us:.1f} us (measured by the tuning job)")
    specs = {s.name: s for s in accelerators().values()}
    for folder, stamp, recs, bad in _npu_sets(root):
        name = stamp.get("accelerator", folder.parent.name)
        spec = specs.get(name)
        state = "current spec" if spec is not None and spec.spec_hash == stamp.get(
            "spec_hash") else "stale: the spec changed since (not used)"
        lines.append(f"npu {name} spec {str(stamp.get('spec_hash', '?'))[:12]} ({state}): "
                     f"{len(recs)} layer records" + (f", {bad} unreadable lines" if bad else ""))
        for rec in recs:
            if isinstance(rec, dict) and "cycles" in rec:
                gain = 1 - rec["cycles"] / max(rec.get("default_cycles", rec["cycles"]), 1)
                lines.append(f"    {rec.get('layer', rec.get('signature'))}: {rec['cycles']} "
                             f"cycles, {gain:.1%} under the heuristic (simulated)")
    return lines or [f"{root}: no tuning records"]


def merge_logs(sources: list[Path], dest: Path) -> dict:
    """Merge every readable record of ``sources`` into ``dest`` (deduplicated, locked)."""
    from tvm.s_tir import meta_schedule as ms

    counts = {"host": 0, "npu": 0}
    for src in sources:
        for folder, stamp, workloads, records, _ in _host_sets(src):
            target = stamp.get("target")
            if not target:
                continue
            parsed = []
            for item in workloads:
                try:
                    parsed.append(None if item is None else ms.database.Workload.from_json(item))
                except Exception:
                    parsed.append(None)
            groups: dict = {}
            for rec in records:
                try:
                    wl = parsed[int(rec[0])]
                    if wl is not None:
                        groups.setdefault(int(rec[0]), (wl, []))[1].append(
                            ms.database.TuningRecord.from_json(rec[1], wl))
                except Exception:
                    continue
            if groups:  # under the source's key and stamp: its target may not be ours
                counts["host"] += store.merge_host_records(dest, folder.name, stamp,
                                                           list(groups.values()))
        for folder, stamp, recs, _ in _npu_sets(src):
            good = [r for r in recs if isinstance(r, dict) and "signature" in r]
            counts["npu"] += store.merge_npu_records(
                dest / "npu" / folder.parent.name / folder.name, dest, stamp, good)
    return counts


def prune_logs(root: Path, keep: int = 1) -> dict:
    """Keep the best ``keep`` host records per workload and the best NPU record per layer;
    drop unreadable lines and failed measurements."""
    counts = {"host_removed": 0, "npu_removed": 0}
    with store.locked(root):
        for folder, _, workloads, records, _ in _host_sets(root):
            by_workload: dict = {}
            for rec in records:
                us = _best_us(rec)
                if us is not None and isinstance(rec[0], int) and rec[0] < len(workloads):
                    by_workload.setdefault(rec[0], []).append((us, rec))
            kept = [rec for recs in by_workload.values()
                    for _, rec in sorted(recs, key=lambda p: p[0])[:keep]]
            kept.sort(key=lambda r: (r[0], _best_us(r)))
            counts["host_removed"] += len(records) - len(kept)
            store.write_atomic(folder / store.RECORD_FILE, "".join(
                json.dumps(r, separators=(",", ":")) + "\n" for r in kept))
        for folder, _, recs, _ in _npu_sets(root):
            best: dict = {}
            for rec in recs:
                if isinstance(rec, dict) and "signature" in rec and "cycles" in rec:
                    if rec["signature"] not in best or rec["cycles"] < \
                            best[rec["signature"]]["cycles"]:
                        best[rec["signature"]] = rec
            counts["npu_removed"] += len(recs) - len(best)
            store.write_atomic(folder / store.TILING_FILE, "".join(
                json.dumps(r, sort_keys=True) + "\n" for _, r in sorted(best.items())))
    return counts


def validate_logs(root: Path, target, rtol: float = 1e-4, seed: int = 0) -> list[dict]:
    """Replay each host workload's best record, build it and the untuned kernel with LLVM,
    run both on the same random arguments and compare (MetaSchedule's validate_database)."""
    import tvm

    from .._tvm_workarounds import preload_tensor_intrinsics

    preload_tensor_intrinsics()
    tvm_target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) \
        else target
    skipped = store.Skipped()
    db, _, _ = store.load_host_database([root], tvm_target, skipped)
    results = []
    if db is None:
        return results
    rng = np.random.default_rng(seed)
    for workload in db.workloads:
        record = db.get_top_k(workload, 1)
        if not record:
            continue
        record = record[0]
        entry = {"workload": str(workload.mod["main"].attrs.get("global_symbol", "main"))
                 if workload.mod["main"].attrs else "main"}
        try:
            sch = tvm.s_tir.Schedule(workload.mod, debug_mask=0)
            record.trace.apply_to_schedule(sch, remove_postproc=False)
            tuned = tvm.compile(sch.mod, target=tvm_target)
            base = tvm.compile(workload.mod, target=tvm_target)
            args = [info.shape for info in record.args_info]
            dtypes = [info.dtype for info in record.args_info]
            arrays = [rng.standard_normal(s).astype(str(d)) if "float" in str(d)
                      else np.zeros(s, str(d)) for s, d in zip(args, dtypes)]
            outs = []
            for lib in (tuned, base):
                tensors = [tvm.runtime.tensor(a.copy()) for a in arrays]
                lib["main"](*tensors)
                outs.append([t.numpy() for t in tensors])
            err = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                      for a, b in zip(*outs))
            entry.update(ok=err <= rtol, error=err)
        except Exception as exc:  # report, do not stop validating the others
            entry.update(ok=False, error=None, failure=str(exc).splitlines()[0])
        results.append(entry)
    return results
