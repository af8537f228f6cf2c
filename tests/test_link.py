"""Host code generated on threads (``tvm_cruise.link``): same kernels, same results."""

from __future__ import annotations

import numpy as np
import pytest

import tvm_cruise
from tvm_cruise import link
from tvm_cruise.errors import BuildError


def _libraries(compiled):
    """The host code modules of a build: the VM's library and what it imports."""
    (lib,) = compiled._module.mod.imports
    return [lib, *lib.imports]


def test_host_code_built_on_threads_runs_the_same(monkeypatch, tmp_path):
    inputs = None
    outputs, counts = {}, {}
    for jobs in ("1", "2"):
        monkeypatch.setenv("TVM_CRUISE_BUILD_JOBS", jobs)
        art = tvm_cruise.build("perception-cnn", target="llvm")
        inputs = inputs or art.random_inputs(seed=0)
        outputs[jobs] = art.run(**inputs)
        counts[jobs] = [m.kind for m in _libraries(art)]
        if jobs == "2":
            path = art.export_library(tmp_path / "split.so")
            reloaded = tvm_cruise.load(path).run(**inputs)
    # 2 threads take several modules in turn (link._GROUPS_PER_JOB per thread)
    assert counts["1"] == ["llvm"] and set(counts["2"]) == {"llvm"}
    assert 2 < len(counts["2"]) <= 2 * link._GROUPS_PER_JOB
    np.testing.assert_array_equal(outputs["2"], outputs["1"])
    np.testing.assert_array_equal(reloaded, outputs["1"])


def test_kernels_are_dealt_into_groups_of_at_least_two():
    import tvm
    from tvm import te

    def kernel(n):
        a = te.placeholder((n,), "float32", name="a")
        return te.create_prim_func([a, te.compute((n,), lambda i: a[i] + 1.0, name="b")])

    mod = tvm.IRModule({f"k{i}": kernel(i + 1) for i in range(7)})
    groups = link.split_kernels(mod, 4)
    names = [sorted(g.name_hint for g in group.functions) for group in groups]
    assert len(groups) == 3 and all(len(n) >= 2 for n in names)
    assert sorted(sum(names, [])) == [f"k{i}" for i in range(7)]
    assert len(link.split_kernels(mod, 1)) == 1
    assert len(link.split_kernels(tvm.IRModule({"k": kernel(3)}), 8)) == 1


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_build_jobs_says_what_to_set(monkeypatch, value):
    monkeypatch.setenv("TVM_CRUISE_BUILD_JOBS", value)
    with pytest.raises(BuildError, match="TVM_CRUISE_BUILD_JOBS=.*set a whole number >= 1"):
        link.build_jobs()
    with pytest.raises(BuildError, match="TVM_CRUISE_BUILD_JOBS"):  # before any compiling
        tvm_cruise.build("perception-cnn", target="llvm", verify=False)


def test_build_jobs_default_follows_the_cpus(monkeypatch):
    import os

    monkeypatch.delenv("TVM_CRUISE_BUILD_JOBS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert link.build_jobs() == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert link.build_jobs() == 1
