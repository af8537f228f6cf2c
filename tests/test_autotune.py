"""Tuning jobs and tuning logs: reuse in a fresh process, hygiene, concurrency, RPC."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import tvm_cruise
from tvm_cruise.schedules import records as store
from tvm_cruise.autotune.host import tune_host
from tvm_cruise.autotune.npu import tune_npu
from tvm_cruise.errors import BuildError

from conftest import run_cli, run_python


class Tiny(torch.nn.Module):
    """One fused host kernel: conv + bias + relu."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def _tiny():
    torch.manual_seed(0)
    return Tiny().eval(), (torch.randn(1, 8, 16, 16),)


@pytest.fixture(autouse=True)
def _tile_variants_where_asked(request, monkeypatch):
    """A tuning job measures the default's other register tiles too (5-6 more kernels to
    build and time per task); the module's shared log (``tuned_dir``) and the tests about
    them keep them, the other tuning tests measure the search against the default only."""
    if "variants" not in request.node.name:
        from tvm_cruise.schedules import cpu

        monkeypatch.setattr(cpu, "blocked_variants", lambda func, target: [])


@pytest.fixture(autouse=True)
def _two_measuring_rounds(monkeypatch):
    """Tuning jobs measure their candidates in ``_ROUNDS`` (5) alternating rounds; these
    tests check what the job does with the measurements, not the machine's noise, so two
    rounds do (the 5 rounds cost the default suite ~30 s)."""
    from tvm_cruise.autotune import host

    monkeypatch.setattr(host, "_ROUNDS", 2)


@pytest.fixture
def cruise_log():
    """What the tvm_cruise logger says during a test (it does not propagate to root)."""
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

        @property
        def text(self):
            return "\n".join(self.lines)

    handler = Collect()
    logger = logging.getLogger("tvm_cruise")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory):
    """A log directory with a few host trials of the tiny model for plain llvm.

    An application's unnamed handler sits on MetaSchedule's logger while it tunes (pytest's
    log capture puts one there too); MetaSchedule's dictConfig used to fail on it."""
    import logging

    path = tmp_path_factory.mktemp("logs")
    model, inputs = _tiny()
    lines = []
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    ms_logger.addHandler(logging.NullHandler())
    from tvm_cruise.autotune import host

    rounds, host._ROUNDS = host._ROUNDS, 2  # as _two_measuring_rounds (module scope)
    try:
        report = tune_host(model, "llvm", path, trials=4, example_inputs=inputs,
                           progress=lines.append)
    finally:
        host._ROUNDS = rounds
    assert report.new_records > 0, lines
    assert lines and "trials, best" in lines[-1] and "ETA" in lines[-1]
    assert lines[0].startswith("[....................]   0% [1/") and "tuning" in lines[0]
    assert lines[-1].startswith("[####################] 100% ["), lines
    return path, report


def _host_folder(path):
    (folder,) = store.host_record_dirs(path)
    return folder


def test_tuning_writes_stamped_records(tuned_dir):
    path, report = tuned_dir
    folder = _host_folder(path)
    stamp = json.loads((folder / "stamp.json").read_text())
    assert stamp["format"] == 1 and stamp["tvm"] == __import__("tvm").__version__
    assert stamp["target"]["kind"] == "llvm" and "mcpu" in stamp["target"]
    records = (folder / store.RECORD_FILE).read_text().splitlines()
    assert len(records) == report.new_records
    assert report.tasks[0].best_us is not None


def test_fresh_process_reuses_records_without_tuning(tuned_dir, tmp_path):
    path, _ = tuned_dir
    model, inputs = _tiny()
    torch.save(model, tmp_path / "m.pth")
    np.save(tmp_path / "x.npy", inputs[0].numpy())
    result = run_python(f"""
        import json, numpy as np, torch, tvm_cruise
        model = torch.load({str(tmp_path / 'm.pth')!r}, weights_only=False)
        x = np.load({str(tmp_path / 'x.npy')!r})
        tuned = tvm_cruise.build(model, target="llvm", example_inputs=(torch.tensor(x),),
                                 tuning_logs={str(path)!r})
        plain = tvm_cruise.build(model, target="llvm", example_inputs=(torch.tensor(x),),
                                 tuning_logs=False)
        err = float(np.abs(tuned.run(x) - plain.run(x)).max())
        print(json.dumps({{"tuning": tuned.metadata["tuning"], "err": err,
                           "plain": plain.metadata["tuning"]}}))
    """)
    tuning = result["tuning"]
    assert tuning["host_kernels"] >= 1
    assert tuning["tuned_kernels"] == tuning["host_kernels"]  # every kernel from a record
    assert result["plain"]["tuned_kernels"] == 0
    assert result["err"] < 1e-4


def test_resume_skips_tuned_tasks(tuned_dir):
    path, _ = tuned_dir
    model, inputs = _tiny()
    lines = []
    report = tune_host(model, "llvm", path, trials=4, example_inputs=inputs,
                       progress=lines.append)
    assert [t.status for t in report.tasks] == ["skipped"]
    assert report.trials == 0 and "already tuned" in lines[0]


def test_a_task_keeps_the_faster_of_search_and_default_schedule(tuned_dir):
    """The default schedule is measured in the job: no task's record is slower than it."""
    _, report = tuned_dir
    for task in report.tasks:
        assert task.default_us is not None, task
        assert task.best_us <= task.default_us
        assert task.status in ("tuned", "default")


class ThreeKernels(torch.nn.Module):
    """Three host kernels: a plain conv, a strided one, whose default schedule stores the
    padded input split by phase (a transform_layout, whose index map MetaSchedule's own
    JSON writer cannot write; 12 output channels, not whole vectors, so that no target
    packs its weight to vectorize it over channels instead: schedules.layout), and a
    pointwise one."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.strided = torch.nn.Conv2d(16, 12, 3, stride=2, padding=1)
        self.pointwise = torch.nn.Conv2d(12, 8, 1)

    def forward(self, x):
        return self.pointwise(self.strided(torch.relu(self.conv(x))))


def _pointwise(func) -> bool:
    """Whether ``func`` is ThreeKernels' pointwise conv kernel (its 8x12x1x1 weight)."""
    return any(tuple(int(d) for d in p.ty.shape) == (8, 12, 1, 1) for p in func.params)


def test_default_schedule_records_replay_to_the_default_kernels(tmp_path, monkeypatch):
    """Where no trial beats the default schedule (forced here: its measured time is
    scaled down), the record is the default schedule's trace: written by tvm-cruise where
    it holds a layout transform (records.record_json), read back, replayed to exactly the
    default kernel, and a build applying the records gets the results of a build without
    logs. A winning trace with no JSON form (forced here for the pointwise kernel) keeps
    no record, rather than the slower trials: builds apply the default schedule."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from tvm_cruise.autotune import host
    from tvm_cruise.schedules.cpu import schedule_kernel

    real_measure, real_storable = host._measure_pair, host._storable
    monkeypatch.setattr(host, "_measure_pair",
                        lambda *a: [t * (1e-3 if i == 0 else 1) for i, t in
                                    enumerate(real_measure(*a))])
    monkeypatch.setattr(host, "_storable",
                        lambda record: not _pointwise(record.workload.mod["main"]) and
                        real_storable(record))
    torch.manual_seed(0)
    model, inputs = ThreeKernels().eval(), (torch.randn(1, 8, 16, 16),)
    lines = []
    report = tune_host(model, "llvm", tmp_path, trials=3, example_inputs=inputs,
                       progress=lines.append)
    assert sorted((t.status, t.picked, t.stored) for t in report.tasks) == [
        ("default", "default", False)] + [("default", "default", True)] * 2
    assert report.new_records == 2 and "tvm-cruise's own schedules beat the search in 3" \
        in report.summary()
    assert sum("its trace cannot be written" in line for line in lines) == 1, lines
    mod, target, _ = host.prepared_host_module(model, "llvm", example_inputs=inputs)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    db, _, count = store.load_host_database([tmp_path], target, store.Skipped())
    assert count == 2 and len(tasks) == 3
    scripts = []
    for task in tasks:
        assert "T.transform_layout" not in task.dispatched[0].script()  # the trace adds it
        replayed = db.query_schedule(task.dispatched[0], target, task.task_name)
        if replayed is None:  # the pointwise kernel's, not written
            assert _pointwise(task.dispatched[0]["main"])
            continue
        default = schedule_kernel(task.dispatched[0]["main"], target)
        tvm.ir.assert_structural_equal(replayed.mod["main"].body, default.body)
        scripts.append(default.script())
    assert sum("% T.int64(2)" in script for script in scripts) == 1  # the phase split
    build = dict(target="llvm", example_inputs=inputs, shipped_logs=False)
    tuned = tvm_cruise.build(model, tuning_logs=tmp_path, **build)
    plain = tvm_cruise.build(model, tuning_logs=False, **build)
    assert tuned.metadata["tuning"]["tuned_kernels"] == 2
    assert tuned.metadata["tuning"]["default_scheduled"] == 1
    x = inputs[0].numpy()
    np.testing.assert_array_equal(tuned.run(x), plain.run(x))


def test_register_tile_variants_are_candidates(tmp_path):
    """The job measures the default's other register tiles too; whichever wins is a
    distinct kernel, computes the same convolution, and is what the record holds."""
    from tvm.s_tir import meta_schedule as ms

    from tvm_cruise.autotune import host
    from tvm_cruise.schedules.cpu import blocked_variants

    model, inputs = _tiny()
    mod, target, _ = host.prepared_host_module(model, "llvm", example_inputs=inputs)
    (task,) = ms.relax_integration.extract_tasks(mod, target)
    variants = blocked_variants(task.dispatched[0]["main"], target)
    assert len(variants) >= 2 and all(label.startswith(("blocked tile", "default tile"))
                                      for label, _ in variants)
    labels = [label for label, _ in host._candidates(task, target)]
    assert labels[0] == "default" and labels[1:] == [label for label, _ in variants]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _build_tiny(path):
    model, inputs = _tiny()
    return tvm_cruise.build(model, target="llvm", example_inputs=inputs, tuning_logs=path,
                            shipped_logs=False)


def test_corrupt_and_truncated_logs_keep_their_good_records(tuned_dir, tmp_path, cruise_log):
    path = _copy(tuned_dir[0], tmp_path / "logs")
    folder = _host_folder(path)
    records = (folder / store.RECORD_FILE).read_text()
    # garbage, a truncated copy of a real line, an empty line
    (folder / store.RECORD_FILE).write_text(records + "{not json\n" + records[:40] + "\n\n")
    art = _build_tiny(path)
    assert art.metadata["tuning"]["tuned_kernels"] == art.metadata["tuning"]["host_kernels"]
    assert art.metadata["tuning"]["skipped"] == {"unreadable lines in host logs": 2}
    assert "tuning logs: skipped 2 unreadable lines in host logs" in cruise_log.text


def test_foreign_target_and_version_are_skipped_with_a_warning(tuned_dir, tmp_path, cruise_log):
    path = _copy(tuned_dir[0], tmp_path / "foreign")
    folder = _host_folder(path)
    stamp = json.loads((folder / "stamp.json").read_text())
    stamp["target"]["mcpu"] = "skylake-avx512"
    (folder / "stamp.json").write_text(json.dumps(stamp))
    folder.rename(folder.parent / "llvm-skylake-avx512-2c-00000000")
    art = _build_tiny(path)
    assert art.metadata["tuning"]["tuned_kernels"] == 0
    (reason,) = art.metadata["tuning"]["skipped"]
    assert "host records tuned for other targets (llvm-skylake-avx512-2c-00000000" in reason
    assert "host records tuned for other targets" in cruise_log.text

    path = _copy(tuned_dir[0], tmp_path / "old")
    folder = _host_folder(path)
    stamp = json.loads((folder / "stamp.json").read_text())
    stamp["tvm"] = "0.19.0"
    (folder / "stamp.json").write_text(json.dumps(stamp))
    art = _build_tiny(path)
    assert art.metadata["tuning"]["tuned_kernels"] == 0
    (reason,) = art.metadata["tuning"]["skipped"]
    assert reason.startswith("host records written by TVM 0.19.0")


def test_a_record_that_does_not_apply_falls_back(tuned_dir, cruise_log, monkeypatch):
    """A record whose trace fails on this TIR (a ScheduleError in the field) must leave that
    kernel on its default schedule with a warning, not fail the build."""
    import tvm

    from tvm.s_tir.schedule import Trace

    def broken(json_obj, sch):
        raise tvm.s_tir.ScheduleError("the loop was not found")

    monkeypatch.setattr(Trace, "apply_json_to_schedule", staticmethod(broken))
    art = _build_tiny(tuned_dir[0])
    tuning = art.metadata["tuning"]
    assert tuning["tuned_kernels"] == 0 and len(tuning["failed_records"]) == 1
    assert "did not apply (the loop was not found); using the default schedule" in \
        cruise_log.text
    model, inputs = _tiny()
    with torch.no_grad():
        ref = model(*inputs).numpy()
    assert np.abs(art.run(*inputs) - ref).max() < 1e-4


def test_opting_out(tuned_dir):
    art = tvm_cruise.build(_tiny()[0], target="llvm", example_inputs=_tiny()[1],
                           tuning_logs=False)
    assert art.metadata["tuning"]["logs"] == [] and not art.metadata["tuning"]["shipped_logs"]
    with pytest.raises(BuildError, match="is not a directory"):
        tvm_cruise.build(_tiny()[0], target="llvm", example_inputs=_tiny()[1],
                         tuning_logs="/nonexistent/logs")


def _writer(args):
    root, index = args
    from tvm_cruise.schedules import records as st
    from tvm_cruise.targets import accelerators

    spec = accelerators()["cruise-npu-lite"]
    for j in range(20):
        st.write_npu_records(root, spec, [{"signature": f"w{index}-{j}", "layer": "x",
                                           "tiling": {"oc": 16, "rows": 1, "ic": 16,
                                                      "resident": True},
                                           "cycles": j, "default_cycles": j + 1}])
    return index


def test_concurrent_writers_do_not_corrupt_a_log(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        assert sorted(pool.map(_writer, [(tmp_path, i) for i in range(4)])) == [0, 1, 2, 3]
    from tvm_cruise.targets import accelerators

    spec = accelerators()["cruise-npu-lite"]
    lines, bad = store.read_json_lines(store.npu_dir(tmp_path, spec) / store.TILING_FILE)
    assert bad == 0 and len(lines) == 80
    assert {r["signature"] for r in lines} == {f"w{i}-{j}" for i in range(4) for j in range(20)}


def test_a_damaged_workload_line_costs_only_its_own_records(tmp_path):
    """Records name their workload by its line: a damaged line must not shift the others
    (every later record would land on the wrong kernel), and a merge into the log keeps
    every line where it was. On a copy of a shipped record set (45 workloads)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    shipped = store.host_record_dirs(store.shipped_log_dir())[0]
    clean = tmp_path / "clean" / "host" / shipped.name
    shutil.copytree(shipped, clean)
    damaged_root = tmp_path / "damaged"
    folder = damaged_root / "host" / shipped.name
    shutil.copytree(shipped, folder)
    lines = (folder / store.WORKLOAD_FILE).read_text().splitlines()
    lines[0] = lines[0][:30]  # a truncated line, where it was
    (folder / store.WORKLOAD_FILE).write_text("\n".join(lines) + "\n")
    target = tvm.target.Target(store.read_stamp(folder)["target"])
    records, _ = store.read_json_lines(folder / store.RECORD_FILE)
    of_first = sum(r[0] == 0 for r in records)

    skipped = store.Skipped()
    damaged, _, count = store.host_records([damaged_root], target, skipped)
    reference, _, total = store.host_records([tmp_path / "clean"], target, store.Skipped())
    assert of_first > 0 and count == total - of_first == len(records) - of_first
    assert skipped.to_dict() == {"unreadable lines in host logs": 1 + of_first}
    for line in lines[1:]:
        mod = ms.database.Workload.from_json(json.loads(line)).mod
        tvm.ir.assert_structural_equal(damaged.schedule(mod), reference.schedule(mod))

    db, _, _ = store.load_host_database([tmp_path / "clean"], target, store.Skipped())
    rec = db.get_all_tuning_records()[-1]
    faster = ms.database.TuningRecord(rec.trace, rec.workload, [1e-9], rec.target,
                                      rec.args_info)
    assert store.merge_host_records(damaged_root, folder.name, store.read_stamp(folder),
                                    [(rec.workload, [faster])]) == 1
    assert (folder / store.WORKLOAD_FILE).read_text().splitlines() == lines
    assert len((folder / store.RECORD_FILE).read_text().splitlines()) == len(records) + 1


def test_pooled_builder_reuses_its_workers_and_reports_a_failed_build():
    """The job's builder compiles on the same worker process from one build() call to the
    next (LocalBuilder starts new ones per call, ~9 s each), its artifact computes the
    kernel, and an input that does not compile is that input's error, not the call's."""
    import os

    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    from tvm_cruise.autotune.builder import PooledBuilder

    def doubling(n):
        a = te.placeholder((n,), name="a")
        return te.create_prim_func([a, te.compute((n,), lambda i: a[i] * 2)])

    mod = tvm.IRModule({"main": doubling(64)})
    # a loop of unknown extent vectorized: LLVM codegen rejects it
    sch = tvm.s_tir.Schedule(doubling(tvm.tirx.Var("n", "int64")))
    sch.vectorize(sch.get_loops(sch.get_sblock("compute"))[0])
    llvm = tvm.target.Target("llvm")
    builder = PooledBuilder(1)
    try:
        pid = builder.pool.submit(os.getpid).result()
        first = builder.build([ms.builder.BuilderInput(mod, llvm)])
        second = builder.build([ms.builder.BuilderInput(sch.mod, llvm),
                                ms.builder.BuilderInput(mod, llvm)])
        assert builder.pool.submit(os.getpid).result() == pid
    finally:
        builder.close()
    assert first[0].error_msg is None and second[1].error_msg is None
    assert second[0].artifact_path is None and "build failed" in second[0].error_msg
    assert "Failed to vectorize loop" in second[0].error_msg
    lib = tvm.runtime.load_module(first[0].artifact_path)
    x = tvm.runtime.tensor(np.arange(64, dtype="float32"))
    y = tvm.runtime.tensor(np.zeros(64, dtype="float32"))
    lib["main"](x, y)
    np.testing.assert_array_equal(y.numpy(), np.arange(64, dtype="float32") * 2)


# -- NPU tiling search -------------------------------------------------------------------------
def test_npu_tiling_search_picks_the_fastest_and_is_reused(tmp_path, monkeypatch):
    """The search tries the heuristic's tiling and more, keeps the one with the fewest
    simulated cycles (a fresh simulation of it agrees), and a build applies it."""
    from tvm_cruise.npu.compiler import search as npu_search
    from tvm_cruise.npu.compiler.graph import layer_signature
    from tvm_cruise.npu.compiler.tiling import Tiling
    from tvm_cruise.targets import accelerators

    spec = accelerators()["cruise-npu-lite"]
    simulate = npu_search.layer_cycles
    tried = {}  # layer signature -> (layer, [(tiling, cycles) in the order tried])

    def recording(spec_, layer, tiling):
        cycles = simulate(spec_, layer, tiling)
        tried.setdefault(layer_signature(layer), (layer, []))[1].append((tiling, cycles))
        return cycles

    monkeypatch.setattr(npu_search, "layer_cycles", recording)
    lines = []
    report = tune_npu("perception-cnn", "cruise-npu-lite", tmp_path, progress=lines.append)
    monkeypatch.undo()
    searched = [r for r in report.layers if r["status"] == "searched"]
    assert len(searched) == 5 and report.new_records == 5
    assert "cycles (simulated)" in lines[0]
    for r in searched:
        layer, trials = tried[r["signature"]]
        default, default_cycles = trials[0]  # the heuristic's, simulated first
        assert r["default_cycles"] == default_cycles
        assert r["candidates"] == len(trials) - 1 > 1
        assert len({cycles for _, cycles in trials}) > 1, r  # the choice matters
        best = min(cycles for _, cycles in trials)
        assert r["cycles"] == best
        chosen = Tiling(**r["tiling"])
        assert (chosen, best) in trials
        assert simulate(spec, layer, chosen) == best  # a fresh simulation agrees
    art = tvm_cruise.build("perception-cnn", target="cruise-npu-lite", tuning_logs=tmp_path)
    default = tvm_cruise.build("perception-cnn", target="cruise-npu-lite", tuning_logs=False)
    assert art.metadata["tuning"]["npu_layers_tuned"] == 5
    tuned_layers = [layer for p in art.metadata["accelerator"]["programs"]
                    for layer in p["layers"] if layer["kind"] == "conv2d"]
    default_layers = [layer for p in default.metadata["accelerator"]["programs"]
                      for layer in p["layers"] if layer["kind"] == "conv2d"]
    assert [layer["tiling"] for layer in tuned_layers] == [r["tiling"] for r in searched]
    assert all(layer["tuned"] for layer in tuned_layers)
    assert not any(layer["tuned"] for layer in default_layers)
    # in the whole program, a layer is faster exactly where the search beat the heuristic
    for r, tuned, plain in zip(searched, tuned_layers, default_layers):
        if r["cycles"] < r["default_cycles"]:
            assert tuned["cycles"] < plain["cycles"], r
        else:
            assert tuned["tiling"] == plain["tiling"] and tuned["cycles"] == plain["cycles"]
    gained = any(r["cycles"] < r["default_cycles"] for r in searched)
    tuned_total, default_total = (a.npu_stats().totals["cycles"] for a in (art, default))
    assert tuned_total < default_total if gained else tuned_total == default_total
    again = tune_npu("perception-cnn", "cruise-npu-lite", tmp_path, progress=lines.append)
    assert [r["status"] for r in again.layers] == ["skipped"] * 5


def test_npu_records_of_another_spec_version_are_skipped(tmp_path):
    from tvm_cruise.targets import accelerators

    spec = accelerators()["cruise-npu-lite"]
    folder = store.npu_dir(tmp_path, spec)
    store.write_npu_records(tmp_path, spec, [{"signature": "x", "layer": "x", "cycles": 1,
                                              "tiling": {"oc": 16, "rows": 1, "ic": 16,
                                                         "resident": True}}])
    stamp = json.loads((folder / "stamp.json").read_text())
    stamp["spec_hash"] = "0" * 64
    (folder / "stamp.json").write_text(json.dumps(stamp))
    skipped = store.Skipped()
    records, _ = store.load_npu_records([tmp_path], spec, skipped)
    assert records == {}
    assert skipped.to_dict() == {"NPU records for another version of the cruise-npu-lite spec": 1}


# -- the CLI -----------------------------------------------------------------------------------
def test_logs_tools(tuned_dir, tmp_path):
    path = tuned_dir[0]
    proc = run_cli("logs", "list", path)
    assert proc.returncode == 0, proc.stderr
    assert "host llvm-" in proc.stdout and "best" in proc.stdout
    merged = tmp_path / "merged"
    proc = run_cli("logs", "merge", path, path, "-o", merged)
    assert proc.returncode == 0 and "merged" in proc.stdout, proc.stderr
    assert (_host_folder(merged) / store.RECORD_FILE).read_text().splitlines() == \
        (_host_folder(path) / store.RECORD_FILE).read_text().splitlines()
    proc = run_cli("logs", "prune", merged, "--keep", "1")
    assert proc.returncode == 0, proc.stderr
    assert len((_host_folder(merged) / store.RECORD_FILE).read_text().splitlines()) == 1
    proc = run_cli("logs", "validate", merged)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated 1 workloads: 0 bad" in proc.stdout


def test_tune_cli_npu_only_and_cuda_without_gpu(tmp_path):
    proc = run_cli("tune", "perception-cnn", "--target", "cruise-npu", "--tuning-logs",
                   tmp_path, "--npu-only")
    assert proc.returncode == 0, proc.stderr
    assert "npu: 5 layers searched on cruise-npu" in proc.stdout
    from tvm_cruise.cuda import gpu_available

    if not gpu_available():
        proc = run_cli("tune", "perception-cnn", "--target", "cuda", "--tuning-logs",
                       tmp_path, "--host-only", "--trials", "2")
        assert proc.returncode == 2
        assert "none is visible here" in proc.stderr and "--rpc-tracker" in proc.stderr


def test_another_schedule_replaces_the_default_only_beyond_the_margin():
    from tvm_cruise.autotune.host import _MARGIN, _pick

    assert _MARGIN == 0.03
    assert _pick([1.0]) == 0
    assert _pick([1.0, 0.98, 0.99]) == 0  # 2% faster: noise, the default stays
    assert _pick([1.0, 0.98, 0.95, 0.96]) == 2  # 5% faster: the fastest wins
    assert _pick([1.0, 1.0 - _MARGIN]) == 0  # exactly the margin is not beyond it
    assert _pick([1.0, 1.5, 2.0]) == 0
    assert _pick([2e-3, 1e-3]) == 1


# -- RPC tracker and server on loopback -----------------------------------------------------------
def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rpc_tracker_measures_a_small_task(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host",
                                "127.0.0.1", "--port", str(port), "--port-end",
                                str(port + 1)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    server = None

    def wait_for(ready, what):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.2)
        raise AssertionError(f"the RPC {what} did not come up in 60 s")

    def tracker_summary():
        from tvm import rpc

        return rpc.connect_tracker("127.0.0.1", port).summary()

    try:
        wait_for(tracker_summary, "tracker")
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--tracker",
                                   f"127.0.0.1:{port}", "--key", "cruise-test", "--host",
                                   "127.0.0.1"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        wait_for(lambda: "cruise-test" in str(tracker_summary()), "server")
        model, inputs = _tiny()
        report = tune_host(model, "llvm", tmp_path, trials=2, example_inputs=inputs,
                           rpc_tracker=f"127.0.0.1:{port}", rpc_key="cruise-test",
                           progress=lambda line: None)
        assert report.new_records > 0 and report.tasks[0].best_us is not None
    finally:
        for proc in (server, tracker):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_bad_rpc_arguments():
    with pytest.raises(BuildError, match="must be HOST:PORT and needs --rpc-key"):
        tune_host(_tiny()[0], "llvm", "/tmp/x", trials=2, example_inputs=_tiny()[1],
                  rpc_tracker="localhost")


@pytest.mark.slow
def test_tuning_a_reference_model_covers_every_host_kernel(tmp_path):
    report = tune_host("perception-cnn", "llvm", tmp_path, trials=20,
                       progress=lambda line: None)
    assert report.tasks and all(t.status in ("tuned", "default") for t in report.tasks)
    art = tvm_cruise.build("perception-cnn", target="llvm", tuning_logs=tmp_path,
                           shipped_logs=False)
    assert art.metadata["tuning"]["tuned_kernels"] == art.metadata["tuning"]["host_kernels"]


def test_shipped_npu_records_are_installed_and_current():
    """The repository's tuning_logs/ ship as package data, stamped for today's specs (a
    spec edit must come with re-tuned records: stale ones would warn on every build)."""
    import ast
    import glob
    import pathlib

    from tvm_cruise.targets import accelerators

    root = pathlib.Path(__file__).resolve().parents[1]
    source = root / "tuning_logs"
    installed = store.shipped_log_dir()
    shipped = sorted(p.relative_to(source) for p in source.rglob("*.jsonl"))
    stamps = sorted(p.relative_to(source) for p in source.glob("npu/*/*/stamp.json"))
    assert shipped and len(stamps) == len(shipped), "no NPU records shipped"
    # setup.py's package_data must take every record and stamp into a wheel (an editable
    # install reads them in place, so only the patterns show it)
    (patterns,) = [ast.literal_eval(node.value)["tvm_cruise.tuning_logs"]
                   for node in ast.walk(ast.parse((root / "setup.py").read_text()))
                   if isinstance(node, ast.keyword) and node.arg == "package_data"]
    packaged = {pathlib.Path(p) for pattern in patterns
                for p in glob.glob(pattern, root_dir=source, recursive=True)}
    assert set(shipped + stamps) <= packaged, sorted(set(shipped + stamps) - packaged)
    if installed.resolve() != source.resolve():  # a regular install: copies, up to date
        for rel in shipped + stamps:
            assert (installed / rel).read_text() == (source / rel).read_text()
    specs = {s.name: s for s in accelerators().values() if s.source.endswith(".json")}
    for stamp_path in source.glob("npu/*/*/stamp.json"):
        stamp = json.loads(stamp_path.read_text())
        assert stamp["spec_hash"] == specs[stamp["accelerator"]].spec_hash, stamp_path
    art = tvm_cruise.build("perception-cnn", target="cruise-npu")
    assert art.metadata["tuning"]["npu_layers_tuned"] == 5
    assert art.metadata["tuning"]["skipped"] == {}


def test_shipped_host_records_load_for_their_cpu_and_stay_quiet_elsewhere():
    """tuning_logs/host/<key>/ (scripts/regen_host_records.sh): stamped for this TVM,
    packaged, every record readable for the CPU it names; a build on another CPU ignores
    them without a warning (the package ships other CPUs' records), one on that CPU
    applies them to every host kernel of the model."""
    import ast
    import glob
    import pathlib

    import tvm

    root = pathlib.Path(__file__).resolve().parents[1]
    source = root / "tuning_logs"
    folders = store.host_record_dirs(source)
    assert folders, "no host records shipped (scripts/regen_host_records.sh)"
    (patterns,) = [ast.literal_eval(node.value)["tvm_cruise.tuning_logs"]
                   for node in ast.walk(ast.parse((root / "setup.py").read_text()))
                   if isinstance(node, ast.keyword) and node.arg == "package_data"]
    packaged = {pathlib.Path(p) for pattern in patterns
                for p in glob.glob(pattern, root_dir=source, recursive=True)}
    for folder in folders:
        stamp = store.read_stamp(folder)
        assert stamp["format"] == store.LOG_FORMAT and stamp["tvm"] == tvm.__version__
        target = tvm.target.Target(stamp["target"])
        assert folder.name == store.host_key(target)
        for name in (store.STAMP_FILE, store.WORKLOAD_FILE, store.RECORD_FILE):
            assert (folder / name).relative_to(source) in packaged
        records, bad = store.read_json_lines(folder / store.RECORD_FILE)
        skipped = store.Skipped()
        _, _, count = store.load_host_database([source], target, skipped)
        assert bad == 0 and count == len(records) > 0 and not skipped.to_dict()
    other = tvm.target.Target({"kind": "llvm", "mcpu": "cortex-a78", "num-cores": 8,
                               "mtriple": "aarch64-linux-gnu"})
    skipped = store.Skipped()
    db, _, count = store.load_host_database([store.shipped_log_dir()], other, skipped)
    assert db is None and count == 0 and not skipped.to_dict()
    from tvm_cruise.targets import resolve_target

    here = store.host_key(resolve_target("llvm").tvm_target)
    if here in {f.name for f in folders}:  # this machine's CPU has a shipped set
        art = tvm_cruise.build("perception-cnn", target="llvm")
        tuning = art.metadata["tuning"]
        assert tuning["tuned_kernels"] == tuning["host_kernels"] and not tuning["skipped"]


def test_parsed_record_files_are_reused_only_while_unchanged(tmp_path):
    """A build reads the host record files through a per-process cache of parsed lines
    (records._read_json_lines_cached): the same file is parsed once, and a file rewritten
    in place or replaced (a tuning job's write_atomic), even with the same size, is read
    again."""
    path = tmp_path / "lines.json"
    store.write_atomic(path, '[1, "a"]\n[2, "b"]\n')
    first = store._read_json_lines_cached(path)
    assert first == ([[1, "a"], [2, "b"]], 0)
    assert store._read_json_lines_cached(path) is first  # not parsed again
    store.write_atomic(path, '[1, "c"]\n[2, "d"]\n')  # same size, another file
    assert store._read_json_lines_cached(path) == ([[1, "c"], [2, "d"]], 0)
    with open(path, "w") as f:  # rewritten in place, one line damaged
        f.write('[1, "e"]\n[2, "f"\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # coarse mtime clocks
    assert store._read_json_lines_cached(path) == ([[1, "e"]], 1)
    assert store._read_json_lines_cached(tmp_path / "missing.json") == ([], 0)


def test_winograd_transforms_are_measured_without_a_search(tmp_path):
    """A tuning job does not run MetaSchedule's search on F(4x4)'s input and output
    transforms (schedules.winograd.searchable: the search spent minutes in TVM's passes on
    them); it measures tvm-cruise's own schedules and says so; the products are searched."""
    from tvm_cruise.schedules.cpu import vector_shape

    model = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU()).eval()
    x = torch.randn(1, 32, 24, 24)  # 36 tiles of 4x4
    lines: list[str] = []
    from tvm_cruise.autotune.host import prepared_host_module

    _, target, _ = prepared_host_module(model, "llvm", example_inputs=(x,))
    if vector_shape(target)[0] != 8:
        pytest.skip("Winograd is used on 8-lane (AVX2) CPUs only")
    start = time.perf_counter()
    report = tune_host(model, "llvm", tmp_path, trials=4, example_inputs=(x,),
                       progress=lines.append)
    assert time.perf_counter() - start < 300, lines  # (a search here ran for 10+ minutes)
    said = {t.name: [line for line in lines if f"] {t.name}: " in line] for t in report.tasks}
    assert set(said) == {"winograd_input", "winograd_gemm", "fused_winograd_output_add_relu"}, said
    for name, text in said.items():
        searched = name == "winograd_gemm"
        assert any("no search for this kernel" in line for line in text) != searched, text
        assert any("trials ..." in line for line in text) == searched, text
    transforms = [t for t in report.tasks if t.name != "winograd_gemm"]
    assert all(t.trials == 0 and t.status == "default" for t in transforms), transforms
