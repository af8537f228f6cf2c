"""Import paths, registration, dependency checks, package data and environment knobs."""

from __future__ import annotations

import importlib

import pytest
import tvm
from tvm import relax

import tvm_cruise
from tvm_cruise import _compat, env

MODULES = [
    "tvm_cruise", "tvm_cruise.artifact", "tvm_cruise.build", "tvm_cruise.cli",
    "tvm_cruise.cuda", "tvm_cruise.demo", "tvm_cruise.env", "tvm_cruise.errors",
    "tvm_cruise.frontend", "tvm_cruise.pipeline", "tvm_cruise.registration",
    "tvm_cruise.runtime", "tvm_cruise.targets", "tvm_cruise.targets.host",
    "tvm_cruise.targets.spec", "tvm_cruise.models", "tvm_cruise.models.zoo",
    "tvm_cruise.autotune", "tvm_cruise.schedules.records", "tvm_cruise.byoc",
    "tvm_cruise.relay_ops", "tvm_cruise.schedules", "tvm_cruise.tuning_logs",
    "tvm_cruise.reporting",
]


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    assert importlib.import_module(name).__name__ == name


def test_public_api():
    for name in tvm_cruise.__all__:
        assert hasattr(tvm_cruise, name), name
    assert callable(tvm_cruise.build) and callable(tvm_cruise.load)
    assert issubclass(tvm_cruise.UnknownTargetError, tvm_cruise.CruiseError)


def test_registration_is_idempotent():
    first = tvm_cruise.register()
    second = tvm_cruise.register()
    assert first == second
    shipped = ["cruise-npu", "cruise-npu-lite", "cruise-npu-cuda", "cruise-npu-lite-cuda"]
    assert [n for n in first if n in shipped] == shipped
    importlib.reload(tvm_cruise)  # a re-import must not fail either
    assert tvm.target.Target("cruise-npu").keys[0] == "cruise_npu"
    for name in first:
        assert name in relax.pipeline.PIPELINE_MAP


def test_package_data_is_installed():
    """Specs and the shipped tuning-log folder come with a non-editable install."""
    from tvm_cruise.schedules.records import shipped_log_dir
    from tvm_cruise.targets import accelerators

    shipped = {n: s for n, s in accelerators().items() if s.source.endswith(".json")}
    assert set(shipped) == {"cruise-npu", "cruise-npu-lite"}
    assert (shipped_log_dir() / "README.md").is_file()


def test_known_bad_tvm_ffi_is_reported(monkeypatch):
    versions = {"apache-tvm": _compat.TVM_VERSION, "apache-tvm-ffi": "0.1.15.post1"}
    monkeypatch.setattr(_compat, "installed_version", versions.get)
    problems = _compat.check_dependencies()
    assert len(problems) == 1
    assert "apache-tvm-ffi 0.1.15.post1 segfaults" in problems[0]
    assert "pip install apache-tvm-ffi==0.1.14.post1" in problems[0]
    with pytest.raises(tvm_cruise.DependencyError, match="TVM_CRUISE_ALLOW_BAD_DEPS=1"):
        _compat.enforce_dependencies()
    monkeypatch.setenv("TVM_CRUISE_ALLOW_BAD_DEPS", "1")
    with pytest.warns(RuntimeWarning, match="segfaults"):
        _compat.enforce_dependencies()


def test_wrong_tvm_version_is_reported(monkeypatch):
    versions = {"apache-tvm": "0.26.0", "apache-tvm-ffi": _compat.TVM_FFI_VERSION}
    monkeypatch.setattr(_compat, "installed_version", versions.get)
    (problem,) = _compat.check_dependencies()
    assert "apache-tvm 0.26.0 is installed" in problem
    assert "pip install apache-tvm==0.27.0.post1" in problem


def test_installed_versions_are_the_pinned_ones():
    assert _compat.check_dependencies() == []


def test_every_knob_is_declared_once():
    names = [k.name for k in env.KNOBS]
    assert len(names) == len(set(names))
    # ours, and TVM's own thread count, which tvm-cruise sets when the user did not
    assert all(n.startswith("TVM_CRUISE_") or n == "TVM_NUM_THREADS" for n in names)


def test_log_level_knob(monkeypatch):
    monkeypatch.setenv("TVM_CRUISE_LOG_LEVEL", "debug")
    env.configure_logging()
    assert env.logger.level == 10
    monkeypatch.setenv("TVM_CRUISE_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="TVM_CRUISE_LOG_LEVEL='loud' is not a level"):
        env.configure_logging()
    env.configure_logging("warning")


def test_every_source_package_is_installed():
    """setup.py must ship every sub-package (a non-editable install once missed byoc.npu)."""
    import pathlib

    source = pathlib.Path(__file__).resolve().parents[1] / "tvm_cruise"  # the checkout
    found = sorted(source.rglob("*.py"))
    assert found
    for path in found:
        rel = path.relative_to(source.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        assert importlib.import_module(name).__name__ == name


@pytest.mark.parametrize("preset, expected", [(None, "cores"), ("1", 1)],
                         ids=["unset", "user-set"])
def test_tvm_runtime_threads(preset, expected):
    """TVM alone takes half the logical CPUs on x86 (1 thread on a 2-vCPU machine whose
    vCPUs are cores); tvm-cruise gives it the physical cores unless the user chose."""
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items()
               if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    if preset is not None:
        environ["TVM_NUM_THREADS"] = preset
    code = ("import tvm_cruise, tvm; "
            "print(tvm.get_global_func('runtime.NumThreads')(), "
            "tvm_cruise.env.physical_cores())")
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    threads, cores = int(out[0]), int(out[1])
    assert threads == (cores if expected == "cores" else expected)
    assert 1 <= cores <= (os.cpu_count() or 1)
