"""Public architectures nobody here wrote (torchvision, timm): built through torch.export and
ONNX for the host and both accelerators, compared with PyTorch (tests/model_corpus.py).

The default suite runs the fast subset; ``-m slow`` runs the whole corpus (what
scripts/model_coverage.py writes to docs/model_coverage.md).
"""

from __future__ import annotations

import pytest

import model_corpus as corpus

FAST = [n for n, e in corpus.CORPUS.items() if e.fast]
SLOW = [n for n, e in corpus.CORPUS.items() if not e.fast]


@pytest.fixture(scope="module")
def prepared():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = corpus.Prepared(corpus.CORPUS[name])
        return cache[name]

    return get


def _assert_row(res: corpus.Result):
    assert res.status == "pass", (f"{res.model} via {res.path} on {res.target}: {res.status} "
                                  f"error={res.error} bound={res.bound}\n{res.detail}")
    if res.target != "llvm":
        # the point of the row: the accelerator really runs most of the model
        assert res.npu_op_share is not None and res.npu_op_share > 0.4, res


def _params(names, targets, paths, marks=()):
    return [pytest.param(n, p, t, id=f"{n}-{p}-{t}", marks=list(marks))
            for n in names for p in paths for t in targets]


@pytest.mark.parametrize("name, path, target",
                         _params(FAST, ("cruise-npu", "cruise-npu-lite"), corpus.PATHS)
                         + _params(FAST, ("llvm",), ("torch",)))
def test_fast_corpus(prepared, name, path, target):
    _assert_row(corpus.run(prepared(name), path, target))


@pytest.mark.slow
@pytest.mark.parametrize("name, path, target",
                         _params(SLOW, corpus.TARGETS, corpus.PATHS)
                         + _params(FAST, ("llvm",), ("onnx",)))
def test_whole_corpus(prepared, name, path, target):
    _assert_row(corpus.run(prepared(name), path, target))


def test_corpus_is_what_the_issue_asks_for():
    """At least 20 architectures, across CNNs, transformers, detection and segmentation."""
    families = {e.family for e in corpus.CORPUS.values()}
    assert len(corpus.CORPUS) >= 20
    assert {"cnn", "transformer", "detection", "segmentation"} <= families
    assert {"torchvision", "timm"} <= {e.source for e in corpus.CORPUS.values()}


def test_a_wrong_result_is_a_failing_row(prepared, monkeypatch):
    """The harness itself can fail: a build whose output is off is reported as ``fail``."""
    import numpy as np

    import tvm_cruise
    from tvm_cruise.runtime import CompiledModel

    real_run = CompiledModel.run

    def off_by_a_bit(self, *args, **kw):
        out = real_run(self, *args, **kw)
        return [o * 1.1 for o in out] if isinstance(out, list) else out * np.float32(1.1)

    monkeypatch.setattr(CompiledModel, "run", off_by_a_bit)
    res = corpus.run(prepared(FAST[0]), "torch", "llvm")
    assert res.status == "fail" and res.error > res.bound
    assert tvm_cruise  # the real build ran (a refusal would not be "fail")
