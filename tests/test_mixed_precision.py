"""Mixed precision: per-layer overrides by name (``build(layer_precision=)``, the CLI's
``--layer-precision``) and the sensitivity pass that ranks int8 layers (``sensitivity``),
on the bundled trained digits CNN and its held-out digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tvm_cruise
from tvm_cruise.errors import BuildError
from tvm_cruise.models.zoo import digits_data
from tvm_cruise.reporting.accuracy import compare

from conftest import run_cli

pytestmark = pytest.mark.cruise_npu

DATA = digits_data()
CALIBRATION = list(DATA["calibration_images"][:, None])
HELD_OUT = DATA["heldout_images"][:120]


def _build(precision="int8", **kwargs):
    return tvm_cruise.build("digits-cnn", "cruise-npu", precision=precision,
                            calibration=CALIBRATION if precision == "int8" or
                            "int8" in kwargs.get("layer_precision", {}).values() else None,
                            **kwargs)


def _outputs(art) -> np.ndarray:
    return np.concatenate([art.run(HELD_OUT[i:i + 1]) for i in range(len(HELD_OUT))])


@pytest.fixture(scope="module")
def fp32_outputs():
    return _outputs(tvm_cruise.build("digits-cnn", "llvm"))


def _dtypes(art) -> list[str]:
    return [p["dtype"] for p in art.metadata["accelerator"]["programs"]]


def test_fp32_override_runs_the_whole_layer_on_the_host(fp32_outputs):
    art = _build(layer_precision={"conv1": "fp32"})
    host = {o.id: o for o in art.placement.host_ops}
    # conv1's conv and bias add are named; its ReLU is fused into the same layer
    assert sorted(host) == [0, 1, 2], art.placement.table()
    assert all(o.rules == ["precision-override"] for o in host.values())
    assert "layer_precision['conv1'] = 'fp32': runs on the host in fp32" in host[0].reasons[0]
    assert "fused into one layer with conv1" in host[2].reasons[0]
    assert _dtypes(art) == ["int8"]
    assert art.metadata["extensions"]["layer_precision"] == {"conv1": "fp32"}
    m = compare("logits", _outputs(art), fp32_outputs)
    assert m["top1_agreement"] >= 0.99 and m["cosine"] > 0.999, m


def test_fp16_layer_in_an_int8_build_gets_its_own_program(fp32_outputs):
    art = _build(layer_precision={"conv2": "fp16"})
    assert not art.placement.host_ops
    precision = {o.id: o.precision for o in art.placement.ops}
    assert [i for i, p in precision.items() if p == "fp16"] == [3, 4, 5]
    assert precision[0] is None  # the build's own precision is not repeated
    # int8 | fp16 | int8: three programs, each in its own dtype
    assert _dtypes(art) == ["int8", "float16", "int8"]
    assert "cruise-npu (fp16)" in art.placement.table()
    m = compare("logits", _outputs(art), fp32_outputs)
    assert m["top1_agreement"] >= 0.99 and m["cosine"] > 0.999, m


def test_int8_layer_in_an_fp16_build_needs_and_uses_calibration(fp32_outputs):
    with pytest.raises(BuildError, match="needs calibration data"):
        tvm_cruise.build("digits-cnn", "cruise-npu", layer_precision={"conv2": "int8"})
    art = _build("fp16", layer_precision={"conv2": "int8"})
    assert _dtypes(art) == ["float16", "int8", "float16"]
    m = compare("logits", _outputs(art), fp32_outputs)
    assert m["top1_agreement"] >= 0.99, m


def test_wildcards_and_op_ids_name_layers():
    art = _build(layer_precision={"conv*": "fp16", "#11": "fp32"})
    fp16 = sorted(o.id for o in art.placement.ops if o.precision == "fp16")
    assert fp16 == [0, 1, 2, 3, 4, 5, 7, 8, 9], art.placement.table()
    assert sorted(o.id for o in art.placement.host_ops) == [11, 12]  # fc: matmul + bias


@pytest.mark.parametrize("layer_precision, message", [
    ({"conv_1": "fp16"}, "names no operator of the model; the closest names are 'conv1'"),
    ({"conv1": "bf16"}, "is not a precision; use one of fp32, fp16, int8"),
    ({"conv*": "fp16", "conv1": "fp32"}, "make the keys disjoint"),
    ({"#999": "fp16"}, "names no operator"),
    (["conv1"], "is not a mapping"),
])
def test_bad_overrides_name_the_fix(layer_precision, message):
    with pytest.raises(BuildError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tvm_cruise.build("digits-cnn", "cruise-npu", layer_precision=layer_precision)


def test_host_only_target_refuses_overrides():
    with pytest.raises(BuildError, match="needs an accelerator target"):
        tvm_cruise.build("digits-cnn", "llvm", layer_precision={"conv1": "fp32"})


def test_analyze_places_overrides_without_building():
    report = tvm_cruise.byoc.analyze("digits-cnn", "cruise-npu",
                                     layer_precision={"fc": "fp32"})
    assert sorted(o.id for o in report.host_ops) == [11, 12]


def test_sensitivity_ranks_and_its_suggestion_helps():
    rep = tvm_cruise.sensitivity("digits-cnn", "cruise-npu", calibration=CALIBRATION,
                                 data=list(HELD_OUT[:, None]), samples=60)
    # every int8 layer but the flatten (a view) measured once, ranked by gain
    assert sorted(s.key for s in rep.layers) == ["#0", "#11", "#3", "#6", "#7"]
    gains = [s.gain_db for s in rep.ranked()]
    assert gains == sorted(gains, reverse=True)
    assert rep.samples == 60 and 20 < rep.baseline["sqnr_db"] < 60
    # measured: the classifier's output layer (its int8 output is the logits) +4.5..7 dB
    suggestion = rep.suggest(1.0)
    assert suggestion and all(v == "fp16" for v in suggestion.values()), rep.table()
    # the suggestion, built on its own, really is closer to fp32 than all-int8
    fp32 = _outputs(tvm_cruise.build("digits-cnn", "llvm"))[:60]
    mixed = _outputs(_build(layer_precision=suggestion))[:60]
    base = _outputs(_build())[:60]
    assert compare("m", mixed, fp32)["sqnr_db"] >= compare("b", base, fp32)["sqnr_db"] + 1.0
    text = rep.table()
    assert "all-int8: SQNR" in text and "suggested (gain >= 1 dB): layer_precision=" in text
    assert json.loads(json.dumps(rep.to_dict()))["layers"][0]["key"] == rep.ranked()[0].key


def test_sensitivity_errors():
    with pytest.raises(BuildError, match="has no accelerator"):
        tvm_cruise.sensitivity("digits-cnn", "llvm", calibration=CALIBRATION)
    with pytest.raises(BuildError, match="alternative='bf16'"):
        tvm_cruise.sensitivity("digits-cnn", calibration=CALIBRATION, alternative="bf16")


def test_cli_layer_precision_and_sensitivity(tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=DATA["calibration_images"][:16, None])
    out = tmp_path / "d.so"
    proc = run_cli("compile", "digits-cnn", "--precision", "int8", "--calibration", calib,
                   "--layer-precision", "fc=fp16", "-o", out)
    assert proc.returncode == 0 and "cruise-npu (fp16)" in proc.stdout and out.exists(), \
        proc.stderr
    proc = run_cli("compile", "digits-cnn", "--layer-precision", "fc")
    assert proc.returncode == 2 and "must look like NAME=PRECISION" in proc.stderr
    report = tmp_path / "s.json"
    proc = run_cli("sensitivity", "digits-cnn", "--calibration", calib, "--samples", "8",
                   "--layers", "2", "--json", report)
    assert proc.returncode == 0 and "int8 sensitivity of digits-cnn" in proc.stdout, \
        proc.stderr
    assert len(json.loads(report.read_text())["layers"]) == 2
