"""Deployability reports (``tvm_cruise.report``, ``tvm-cruise report``): the JSON agrees with
the artifact, gates exit non-zero, a fault in one layer of one NPU function is named, the
HTML renders in headless Chromium and shows the graph."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch

import tvm_cruise
from tvm_cruise.npu import compiler, simulator
from tvm_cruise.npu.compiler.codegen import Emitter, value_tensors
from tvm_cruise.npu.compiler.graph import Graph, Layer, Value
from tvm_cruise.cli import main
from tvm_cruise.errors import InputMismatchError
from tvm_cruise.reporting import Report, accuracy, graph
from tvm_cruise.targets import accelerators

from conftest import FP16_BOUND, run_cli

pytestmark = pytest.mark.cruise_npu_lite

NPU_FILL, HOST_FILL, BAD = graph.NPU_COLORS[0], graph.HOST_COLORS[0], "#d62839"


class _ThreeStage(torch.nn.Module):
    """Two convs on the NPU (f0), a 7x7 conv cruise-npu-lite refuses (host), two convs on
    the NPU (f1)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.a2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.host = torch.nn.Conv2d(16, 16, 7, padding=3)
        self.b = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.c = torch.nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.a2(torch.relu(self.a(x))))
        return torch.relu(self.c(torch.relu(self.b(self.host(x)))))


X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _report(target="cruise-npu-lite", **kw):
    return tvm_cruise.report(_ThreeStage().eval(), target, example_inputs=(X,), repeat=1, **kw)


@pytest.fixture(scope="module")
def good():
    return _report()


@pytest.fixture(scope="module")
def broken():
    """The NPU compiler emits negated weights for one layer (a2, the second layer of f0):
    the program of one function is wrong, everything else is right."""
    real = compiler.from_relax

    def faulty(func, name):
        g = real(func, name)
        convs = [layer for layer in g.layers if layer.kind == "conv2d"]
        if g.inputs[0].shape[1] == 3:  # f0: it starts from the 3-channel image
            convs[1].weight = -convs[1].weight
        return g

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiler, "from_relax", faulty)
        return _report()


# -- the reference models: JSON vs art.placement / art.npu_stats() ---------------------------
REFERENCE = [pytest.param("resnet18", "cruise-npu-lite", id="resnet18-lite"),
             pytest.param("transformer", "cruise-npu", id="transformer-npu")]
REFERENCE_SLOW = [pytest.param("resnet18", "cruise-npu", id="resnet18-npu"),
                  pytest.param("transformer", "cruise-npu-lite", id="transformer-lite"),
                  pytest.param("perception-cnn", "cruise-npu", id="perception-npu"),
                  pytest.param("perception-cnn", "cruise-npu-lite", id="perception-lite")]


def _check_against_artifact(rep: Report, top1: bool) -> None:
    art = rep.compiled
    data = json.loads(rep.to_json())  # strict JSON (no NaN / Infinity)
    placement, stats = art.placement, art.npu_stats()
    dep = data["deployability"]
    assert dep["placement"] == json.loads(placement.to_json())
    assert dep["summary"] == json.loads(json.dumps(placement.summary()))
    assert [(o["id"], o["reasons"]) for o in dep["host_ops"]] == \
        [(o.id, o.reasons) for o in placement.host_ops]
    assert all(o["reasons"] for o in dep["host_ops"])
    nodes = [n for n in data["graph"]["nodes"] if isinstance(n["id"], int)]
    assert [(n["id"], n["device"], n["function"]) for n in nodes] == \
        [(o.id, o.device, o.function) for o in placement.ops]
    # NPU: every simulated figure is the artifact's, labelled simulated
    npu = data["performance"]["npu"]
    spec = accelerators()[placement.accelerator]
    assert npu["simulated"] is True and npu["clock_mhz"] == spec.hardware["clock_mhz"]
    assert len(npu["functions"]) == len(stats.programs) == placement.functions
    for f, p in zip(npu["functions"], stats.programs):
        st = p["stats"]
        assert (f["cycles"], f["time_us"], f["utilization"], f["sram_high_water"]) == \
            (st["cycles"], st["time_us"], st["utilization"], st["sram_high_water"])
        assert f["dma_bytes"] == st["dma_bytes_loaded"] + st["dma_bytes_stored"]
        assert f["calls"] == 1 and f["instructions"] == p["instructions"]
    assert npu["total"]["cycles"] == stats.totals["cycles"]
    # host: measured kernels, each host op attributed to the kernel that computes it
    host = data["performance"]["host"]
    assert host["measured"] is True
    # a kernel without a source op is a cast the compiler put at a host/NPU boundary
    assert all(k["ops"] or "cast" in k["symbol"] for k in host["kernels"])
    assert all(k["median_ms"] > 0 and k["schedule"] in ("tuned", "default", "unscheduled")
               for k in host["kernels"])
    attributed = {i for k in host["kernels"] for i in k["ops"]}
    assert {o.id for o in placement.host_ops} <= attributed
    assert len({k["symbol"] for k in host["kernels"]}) <= art.metadata["tuning"]["host_kernels"]
    est = data["performance"]["estimate"]
    assert est["basis"] == "host measured + NPU simulated"
    assert est["npu_simulated_ms"] == pytest.approx(stats.time_us / 1e3)
    assert est["total_ms"] == pytest.approx(est["host_measured_ms"] + est["npu_simulated_ms"])
    # accuracy vs PyTorch, and every NPU function checked on the real activations
    acc = data["accuracy"]
    assert acc["reference_kind"] == "pytorch" and 0 < acc["max_rel"] < FP16_BOUND
    assert all(o["cosine"] > 0.9999 and o["sqnr_db"] > 30 for o in acc["outputs"])
    if top1:
        assert acc["outputs"][0]["top1_agreement"] == 1.0
    lw = acc["layerwise"]
    assert [f["function"] for f in lw["functions"]] == [f"f{i}" for i in range(len(stats.programs))]
    assert lw["first_bad"] is None and all(f["ok"] and f["runtime_matches_simulator"]
                                           for f in lw["functions"])
    mac_layers = sum(1 for p in stats.programs for layer in p["layers"] if layer["macs"])
    checked = sum(1 for f in lw["functions"] for c in f["layer_checks"]
                  if c["kind"] in ("conv2d", "depthwise_conv2d", "dense", "matmul"))
    assert checked == mac_layers
    assert data["verdict"]["status"] in ("deploys", "deploys-with-fallback")


@pytest.mark.parametrize("model,target", REFERENCE)
def test_reference_model_json_agrees_with_the_artifact(model, target):
    _check_against_artifact(tvm_cruise.report(model, target, repeat=1),
                            top1=model == "resnet18")


@pytest.mark.slow
@pytest.mark.parametrize("model,target", REFERENCE_SLOW)
def test_reference_model_json_agrees_with_the_artifact_long(model, target):
    _check_against_artifact(tvm_cruise.report(model, target, repeat=2),
                            top1=model == "resnet18")


# -- the first layer that goes wrong ------------------------------------------------------------
def test_good_model_has_no_error_jump(good):
    lw = good.accuracy["layerwise"]
    assert lw["functions_checked"] == 2 and lw["first_bad"] is None
    # f1 opens with the host conv's bias add: elementwise, conv2d, conv2d
    assert [[c["kind"] for c in f["layer_checks"]] for f in lw["functions"]] == \
        [["conv2d", "conv2d"], ["elementwise", "conv2d", "conv2d"]]
    assert good.data["verdict"]["status"] == "deploys-with-fallback"
    assert "first error jump: none" in good.table()


def test_a_fault_in_one_layer_of_one_function_is_named(broken):
    lw = broken.accuracy["layerwise"]
    f0, f1 = lw["functions"]
    a, a2 = f0["layer_checks"]
    assert a["ok"] and not a2["ok"] and "a2" in a2["names"]
    assert not f0["ok"] and f0["error"] > f0["bound"]
    assert f0["fp16_floor"] is not None and f0["fp16_floor"] < FP16_BOUND  # computed: needed
    # f1 gets the wrong activations, but on those it computes correctly: not blamed
    assert f1["ok"] and all(c["ok"] for c in f1["layer_checks"])
    bad = lw["first_bad"]
    assert (bad["function"], bad["layer"], bad["kind"]) == ("f0", a2["layer"], "conv2d")
    assert "a2" in bad["names"] and bad["error"] > bad["bound"]
    assert broken.data["verdict"]["status"] == "accuracy-risk"
    assert "first error jump: f0" in broken.verdict
    text = broken.table()
    assert "first error jump: f0" in text and "BEYOND BOUND" in text
    assert broken.max_rel_error > FP16_BOUND  # and the outputs show it


def test_a_runtime_that_differs_from_the_simulator_is_reported(monkeypatch):
    """The function's error is measured on what the registered runtime returned; a runtime
    that differs from the simulator is reported."""
    real = simulator.Simulator.run_traced

    def traced(self, program, inputs):
        outs, stats, dram = real(self, program, inputs)
        return [o + np.float16(1) for o in outs], stats, dram

    monkeypatch.setattr(simulator.Simulator, "run_traced", traced)
    rep = _report()
    assert all(not f["runtime_matches_simulator"] and f["ok"]
               for f in rep.accuracy["layerwise"]["functions"])
    assert "differ from the simulator's" in rep.table()


# -- gates --------------------------------------------------------------------------------------
def test_gates(good, broken):
    # the 7x7 host conv holds most of this model's MACs: 31% run on the NPU
    passed = good.gates(min_npu_share=0.3, max_rel_error=FP16_BOUND)
    assert [g.ok for g in passed] == [True, True]
    share, err = good.gates(min_npu_share=0.99, max_rel_error=1e-9)
    assert not share.ok and share.value == pytest.approx(good.npu_share) and share.value < 0.99
    assert "of MACs on cruise-npu-lite < 99.0% required" in share.message
    assert not err.ok and "> 1e-09 allowed" in err.message
    (gate,) = broken.gates(max_rel_error=FP16_BOUND)
    assert not gate.ok
    data = json.loads(good.to_json(passed))
    assert [g["ok"] for g in data["gates"]] == [True, True]


def test_cli_report_files_and_gate_exit_code(tmp_path):
    path = tmp_path / "three.pt2"
    torch.export.save(torch.export.export(_ThreeStage().eval(), (X,)), path)
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    proc = run_cli("report", path, "--target", "cruise-npu-lite", "--repeat", "1",
                   "--json", out_json, "--html", out_html, "--min-npu-share", "0.99",
                   "--max-rel-error", "1e-2")
    assert proc.returncode == 1, proc.stderr  # the share gate fails, nothing else
    assert "gate min-npu-share: FAILED" in proc.stdout
    assert "gate max-rel-error: ok" in proc.stdout
    for section in ("== Deployability", "== Performance", "== Accuracy", "SIMULATED",
                    "MEASURED", "host measured + NPU simulated", "7, 7) > 5"):
        assert section in proc.stdout, section
    assert "compiling three for cruise-npu-lite" in proc.stderr  # progress
    data = json.loads(out_json.read_text())
    assert data["schema"] == "tvm-cruise-report/1"
    assert [(g["name"], g["ok"]) for g in data["gates"]] == [("min-npu-share", False),
                                                             ("max-rel-error", True)]
    assert data["accuracy"]["reference"].startswith("PyTorch")
    assert "<svg class=\"graph\"" in out_html.read_text()


def test_cli_gates_pass_with_exit_0_and_bad_input_exits_2(tmp_path, capsys):
    path = tmp_path / "three.pt2"
    torch.export.save(torch.export.export(_ThreeStage().eval(), (X,)), path)
    np.savez(tmp_path / "ok.npz", x=X.numpy())
    assert main(["report", str(path), "-t", "cruise-npu-lite", "--repeat", "1",
                 "--inputs", str(tmp_path / "ok.npz"), "--min-npu-share", "0.3"]) == 0
    assert "gate min-npu-share: ok" in capsys.readouterr().out
    np.savez(tmp_path / "name.npz", image=X.numpy())
    assert main(["report", str(path), "-t", "cruise-npu-lite",
                 "--inputs", str(tmp_path / "name.npz")]) == 2
    err = capsys.readouterr().err
    assert "holds arrays ['image'] but three takes inputs ['x']" in err and "fix:" in err
    np.savez(tmp_path / "shape.npz", x=np.zeros((1, 3, 8, 8), "float32"))
    assert main(["report", str(path), "-t", "cruise-npu-lite",
                 "--inputs", str(tmp_path / "shape.npz")]) == 2
    err = capsys.readouterr().err
    assert "input 'x' has shape (1, 3, 8, 8) but three takes (1, 3, 16, 16)" in err
    assert main(["report", str(path), "-t", "cruise-npx"]) == 2
    assert "cruise-npx" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["report", str(path), "--min-npu-share", "90"])
    assert info.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err


# -- HTML ---------------------------------------------------------------------------------------
def test_html_is_self_contained_and_round_trips(broken):
    page = broken.to_html()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('<g class="node') >= 6 and "first error jump" in page
    for heading in ("Deployability", "Performance", "Accuracy", "Top hotspots", "Layer-wise"):
        assert f"<h2>{heading}</h2>" in page or f"<h3>{heading}" in page, heading
    again = Report.from_dict(json.loads(broken.to_json())).to_html()
    assert again.count('<g class="node') == page.count('<g class="node')
    with pytest.raises(tvm_cruise.CruiseError, match="not a tvm-cruise report"):
        Report.from_dict({"schema": "other"})


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed "
                    "(Debian: apt-get install chromium)")
def test_html_renders_in_headless_chromium_with_the_graph(broken, tmp_path):
    from PIL import Image

    page, shot = tmp_path / "r.html", tmp_path / "r.png"
    page.write_text(broken.to_html())
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1400,1600",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)

    def count(color: str) -> int:
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels.astype(int) - rgb).sum(axis=1) <= 6).sum())

    # nodes filled in the NPU's and the host's colours, the flagged one outlined red
    assert count(NPU_FILL) > 2000 and count(HOST_FILL) > 2000 and count(BAD) > 200


# -- other references and targets ---------------------------------------------------------------
def test_onnx_model_is_compared_with_onnx_runtime():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype("float32"), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype("float32"), "b")
    # an exporter's input name (TVM's importer renames it input_1; tvm-cruise keeps it)
    nodes = [helper.make_node("Conv", ["input.1", "w", "b"], ["c"], pads=[1, 1, 1, 1],
                              name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    proto = helper.make_model(helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                      [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w, b]),
        opset_imports=[helper.make_opsetid("", 17)])
    data = {"input.1": rng.standard_normal((1, 3, 8, 8)).astype("float32")}
    rep = tvm_cruise.report(onnx.shape_inference.infer_shapes(proto), "cruise-npu-lite",
                            inputs=data, repeat=1)
    assert rep.data["model"]["inputs"][0]["name"] == "input.1"
    assert rep.data["inputs"]["source"] == "user"
    acc = rep.accuracy
    assert acc["reference_kind"] == "onnxruntime" and acc["reference"].startswith("ONNX Runtime")
    assert acc["max_rel"] < FP16_BOUND and acc["layerwise"]["first_bad"] is None
    assert rep.data["verdict"]["status"] == "deploys"


def test_host_only_target():
    rep = _report("llvm")
    assert rep.data["verdict"]["status"] == "host-only" and rep.npu_share == 0.0
    assert rep.performance["npu"] is None and rep.accuracy["layerwise"] is None
    assert rep.accuracy["max_rel"] < 1e-5  # fp32 on the host
    host = rep.performance["host"]
    op_ids = {n["id"] for n in rep.data["graph"]["nodes"] if isinstance(n["id"], int)}
    assert {i for k in host["kernels"] for i in k["ops"]} == op_ids
    assert rep.performance["estimate"]["npu_simulated_ms"] == 0
    (gate,) = rep.gates(min_npu_share=0.1)
    assert not gate.ok and "0.0% of MACs" in gate.message
    assert "host only" in rep.table()


# -- pieces -------------------------------------------------------------------------------------
def test_metrics():
    ref = np.array([[0.1, 2.0, -1.0, 0.5, 0.3, 0.2, 0.0], [1.0, 0.0, 0.5, 0.2, 0.1, 0.3, 0.4]])
    same = accuracy.compare("y", ref.copy(), ref)
    assert same["max_abs"] == 0 and same["cosine"] == pytest.approx(1.0)
    assert math.isinf(same["sqnr_db"]) and same["top1_agreement"] == 1.0
    out = ref.copy()
    out[1, 2] = 1.5  # row 1's argmax moves to class 2; class 0 is still in its top 5
    m = accuracy.compare("y", out, ref)
    assert m["max_abs"] == pytest.approx(1.0) and m["max_rel"] == pytest.approx(0.5)
    assert m["top1_agreement"] == 0.5 and m["top5_agreement"] == 1.0
    assert m["sqnr_db"] == pytest.approx(10 * math.log10((ref ** 2).sum()))
    bad = accuracy.compare("y", np.full_like(ref, np.nan), ref)
    assert not bad["finite"] and math.isinf(bad["max_rel"]) and bad["top1_agreement"] is None
    assert accuracy.compare("z", np.ones((1, 4, 2, 2)), np.ones((1, 4, 2, 2)))[
        "top1_agreement"] is None  # not a classifier output


def test_input_checks_name_what_why_and_fix():
    info = [tvm_cruise.TensorInfo("x", (1, 3), "float32")]
    ok = accuracy.check_inputs({"arr_0": np.zeros((1, 3), "float32")}, info, "m")
    assert list(ok) == ["x"]
    with pytest.raises(InputMismatchError, match=r"is float64 but m takes float32; fix: "
                                                 r"convert it \(array.astype\('float32'\)\)"):
        accuracy.check_inputs([np.zeros((1, 3))], info, "m")
    with pytest.raises(InputMismatchError, match=r"missing \['x'\]; unknown \['y'\]\); fix:"):
        accuracy.check_inputs({"y": np.zeros((1, 3), "float32")}, info, "m")
    with pytest.raises(InputMismatchError, match="2 arrays given but m takes 1 inputs"):
        accuracy.check_inputs([np.zeros((1, 3))] * 2, info, "m")


def test_graph_groups_chains_into_layers():
    def op(i, kind, macs=0, device="npu", fn=0):
        return {"id": i, "name": f"n{i}", "op": kind, "device": device, "function": fn,
                "macs": macs}

    doc = {"nodes": [{"id": "input:x", "name": "x", "op": "input", "device": "io"},
                     op(0, "nn.conv2d", 10, "host", None), op(1, "add", 0, "host", None),
                     op(2, "nn.conv2d", 10), op(3, "add"), op(4, "nn.relu"),
                     op(5, "nn.conv2d", 10), op(6, "add"),
                     {"id": "output:0", "name": "output 0", "op": "output", "device": "io"}],
           "edges": [["input:x", 0], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [1, 6],
                     [6, "output:0"]]}
    groups, edges = graph.group(doc)
    assert [g.ids for g in groups] == [["input:x"], [0, 1], [2, 3, 4], [5], [6], ["output:0"]]
    assert (1, 4) in edges  # the residual from the host chain into the add
    width, height = graph.layout(groups, edges)
    assert [g.rank for g in groups] == [0, 1, 2, 3, 4, 5] and height > 5 * graph.ROW_H
    svg = graph.to_svg(doc, flagged={5})
    assert svg.count('<g class="node') == 6 and svg.count("edge boundary") == 2
    assert "first error jump" in svg and 'class="node bad"' in svg


def test_value_tensors_follow_the_emitter_and_traced_dram_holds_every_layer():
    spec = accelerators()["cruise-npu-lite"]
    rng = np.random.default_rng(0)
    x = Value("x", (1, 4, 6, 6))
    y1, y2 = Value("y1", (1, 8, 6, 6)), Value("y2", (1, 8, 6, 6))
    flat = Value("flat", (1, 288), alias_of=y2)
    y3 = Value("y3", (1, 5))
    conv = {"strides": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}
    layers = [Layer("conv2d", [x], y1, dict(conv), weight=rng.standard_normal((8, 4, 3, 3))),
              Layer("conv2d", [y1], y2, dict(conv), weight=rng.standard_normal((8, 8, 3, 3))),
              Layer("reshape", [y2], flat),
              Layer("dense", [flat], y3, weight=rng.standard_normal((288, 5)) / 10)]
    g = Graph("probe", [x], [y3, y1], layers)  # y1 is both an output and an input of a2
    emitter = Emitter(spec, g)
    program = emitter.emit()
    found = value_tensors(program, g)
    assert found and all(emitter.tensors[k] == v for k, v in found.items())
    inp = rng.standard_normal(x.shape).astype(np.float16)
    outs, stats, dram = simulator.Simulator(spec).run_traced(program, [inp])
    plain, plain_stats = simulator.Simulator(spec).run(program, [inp])
    assert all(np.array_equal(a, b) for a, b in zip(outs, plain))
    assert stats.cycles == plain_stats.cycles
    np.testing.assert_array_equal(dram[found[id(y1)]].reshape(-1), outs[1].reshape(-1))
    np.testing.assert_array_equal(dram[found[id(y3)]].reshape(-1), outs[0].reshape(-1))
    assert program.tensors[found[id(y2)]].kind == "scratch"


def test_winograd_transforms_are_attributed_to_their_convolution():
    """A convolution computed by Winograd runs as three host kernels (schedules.winograd):
    the report puts all three on the convolution's op (the output transform also on the
    epilogue fused into it), no call unmapped."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(64, 16, 1)).eval()
    rep = tvm_cruise.report(model, "llvm", example_inputs=(torch.randn(1, 64, 16, 16),),
                            repeat=1)
    host = rep.performance["host"]
    assert host["unmapped_calls"] == 0
    wino = [k for k in host["kernels"] if "winograd" in k["symbol"]]
    if not wino:
        from tvm_cruise.autotune.host import prepared_host_module
        from tvm_cruise.schedules.cpu import vector_shape

        _, target, _ = prepared_host_module(model, "llvm",
                                            example_inputs=(torch.randn(1, 64, 16, 16),))
        assert vector_shape(target)[0] != 8  # used on AVX2 only
        pytest.skip("Winograd is used on 8-lane (AVX2) CPUs only")
    transforms = {tuple(k["ops"]) for k in wino if "output" not in k["symbol"]}
    assert len(wino) == 3 and len(transforms) == 1
    ((conv,),) = transforms  # the input transform and the products: the conv alone
    (output,) = [k for k in wino if "output" in k["symbol"]]
    assert conv in output["ops"]  # the output transform: the conv and its fused epilogue
    names = {n["id"]: n for n in rep.data["graph"]["nodes"]}
    assert "conv2d" in json.dumps(names[conv]).lower()
