"""The partitioner: pattern conformance, one negative case per rule, the placement report."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_cruise
from tvm_cruise.byoc import RULES, analyze
from tvm_cruise.byoc.partition import accelerator_functions, partition
from tvm_cruise.byoc.report import HOST, PlacementReport
from tvm_cruise.pipeline import prepare_passes, run_passes
from tvm_cruise.targets import accelerators

from graphs import ACTIVATIONS, bias, const, conv, graph

ACCELERATORS = ["cruise-npu", "cruise-npu-lite"]
X = (1, 8, 16, 16)


def _partition(mod, acc, precision="fp16"):
    spec = accelerators()[acc] if isinstance(acc, str) else acc
    return partition(run_passes(mod, prepare_passes()), spec, precision, "test")


# -- conformance: every pattern a spec supports offloads ---------------------------------
def _conformance_cases(spec):
    ops = spec.ops
    acts = ops.get("activation", {}).get("functions", [])
    cases = []
    if "conv2d" in ops:
        cases += [
            ("conv2d", graph([X], lambda e, x: conv(x, 8, 16))),
            ("conv2d_bias", graph([X], lambda e, x: bias(e(conv(x, 8, 16)), 16))),
            ("conv2d_bias_add", graph([X], lambda e, x: relax.op.add(
                e(bias(e(conv(x, 8, 8)), 8)), x))),
            ("conv2d_add_act", graph([X], lambda e, x: relax.op.nn.relu(
                e(relax.op.add(e(conv(x, 8, 8)), x))))),
            ("conv2d_bias_add_act", graph([X], lambda e, x: relax.op.nn.relu(
                e(relax.op.add(e(bias(e(conv(x, 8, 8)), 8)), x))))),
            ("conv2d_bias", graph([X], lambda e, x: bias(e(conv(x, 8, 16, stride=2)), 16))),
        ]
        cases += [(f"conv2d_bias_act[{a}]", graph([X], lambda e, x, a=a: ACTIVATIONS[a](
            e(bias(e(conv(x, 8, 16)), 16))))) for a in acts]
        if ops["conv2d"]["depthwise"]:
            cases.append(("depthwise_conv2d_bias_act", graph([X], lambda e, x: relax.op.nn.relu(
                e(bias(e(conv(x, 8, 8, groups=8)), 8))))))
        if ops["conv2d"]["grouped"]:
            cases.append(("conv2d", graph([X], lambda e, x: conv(x, 8, 8, groups=2))))
    if "dense" in ops:
        cases += [
            ("dense", graph([(1, 64)], lambda e, x: relax.op.matmul(x, const((64, 32))))),
            ("dense_bias", graph([(1, 64)], lambda e, x: relax.op.add(
                e(relax.op.matmul(x, const((64, 32)))), const((32,))))),
        ]
        if "relu" in acts:
            cases.append(("dense_bias_act", graph([(1, 64)], lambda e, x: relax.op.nn.relu(
                e(relax.op.add(e(relax.op.matmul(x, const((64, 32)))), const((32,))))))))
    if "matmul" in ops:
        cases.append(("matmul", graph([(1, 4, 16, 8), (1, 4, 8, 16)],
                                      lambda e, a, b: relax.op.matmul(a, b))))
    if "pool2d" in ops:
        cases += [
            ("max_pool2d", graph([X], lambda e, x: relax.op.nn.max_pool2d(x, 2, 2))),
            ("avg_pool2d", graph([X], lambda e, x: relax.op.nn.avg_pool2d(x, 3, 1, 1))),
            ("global_avg_pool2d", graph([X], lambda e, x: relax.op.mean(x, [2, 3], True))),
            ("global_avg_pool2d", graph([X], lambda e, x: relax.op.nn.adaptive_avg_pool2d(
                x, (1, 1)))),
        ]
    if "elementwise" in ops:
        binary = {"add": relax.op.add, "subtract": relax.op.subtract,
                  "multiply": relax.op.multiply, "maximum": relax.op.maximum,
                  "minimum": relax.op.minimum}
        cases += [(f"elementwise[{n}]", graph([X, X], lambda e, a, b, n=n: binary[n](a, b)))
                  for n in ops["elementwise"]["ops"]]
        cases.append(("elementwise[channel]", graph([X], lambda e, x: relax.op.multiply(
            x, const((1, 8, 1, 1))))))
    cases += [(f"activation[{a}]", graph([X], lambda e, x, a=a: ACTIVATIONS[a](x)))
              for a in acts]
    if "concat" in ops:
        cases.append(("concat", graph([X, X], lambda e, a, b: relax.op.concat([a, b], axis=1))))
    if "resize" in ops:
        cases.append(("resize2d", graph([X], lambda e, x: relax.op.image.resize2d(
            x, (32, 32), method="nearest_neighbor"))))
    if "reshape" in ops:
        cases.append(("reshape", graph([X], lambda e, x: relax.op.reshape(x, (1, 8, 256)))))
    return cases


def _conformance_params():
    params = []
    for acc in ACCELERATORS:
        for name, mod in _conformance_cases(accelerators()[acc]):
            params.append(pytest.param(acc, name, mod, id=f"{acc}-{name}",
                                       marks=getattr(pytest.mark, acc.replace("-", "_"))))
    return params


@pytest.mark.parametrize("acc, pattern, mod", _conformance_params())
def test_supported_pattern_offloads(acc, pattern, mod):
    spec = accelerators()[acc]
    merged, report = _partition(mod, acc)
    assert report.host_ops == [], report.table()
    functions = accelerator_functions(merged, spec)
    assert len(functions) == 1
    assert merged[functions[0]].attrs["Codegen"] == spec.key
    expected = f"{spec.key}.{pattern.split('[')[0]}"
    assert expected in {o.pattern for o in report.ops}, report.table()


def test_activations_fuse_into_conv_only_when_listed():
    """The lite spec has no sigmoid: conv+bias offloads, the sigmoid stays with its reason."""
    mod = graph([X], lambda e, x: relax.op.sigmoid(e(bias(e(conv(x, 8, 16)), 16))))
    _, report = _partition(mod, "cruise-npu-lite")
    (host,) = report.host_ops
    assert host.op == "relax.sigmoid" and host.rules == ["activation-function"]
    assert {o.pattern for o in report.accelerator_ops} == {"cruise_npu_lite.conv2d_bias"}


# -- one negative case per rule ----------------------------------------------------------
TEST_SPEC = {
    "name": "test-npu", "key": "test_npu", "description": "test accelerator from a spec alone",
    "hardware": {"mac_array": [8, 8], "macs_per_cycle": {"float16": 32}, "clock_mhz": 500,
                 "sram_bytes": 65536, "sram_banks": 4, "dma_bytes_per_cycle": 8,
                 "dma_setup_cycles": 32, "dram_burst_bytes": 32, "issue_cycles": 2,
                 "vector_lanes": 8, "mac_pipeline_cycles": 8, "mac_weight_rows_per_cycle": 1,
                 "sram_read_bytes_per_cycle": 64},
    "dtypes": {"float16": {"accumulate": "float32"}},
    "max_rank": 4,
    "ops": {
        "conv2d": {"max_kernel": 3, "max_stride": 2, "max_dilation": 1, "max_padding": 1,
                   "depthwise": False, "grouped": False},
        "dense": {"max_rank": 2},
        "matmul": {"max_rank": 3},
        "pool2d": {"types": ["max"], "max_kernel": 2, "max_stride": 2, "global": False},
        "elementwise": {"ops": ["add"], "broadcast": "none"},
        "activation": {"functions": ["relu"]},
    },
}


@pytest.fixture(scope="module")
def test_npu():
    return tvm_cruise.register_accelerator(TEST_SPEC)


def _neg(rule, acc, build, op, message=None, precision="fp16"):
    return pytest.param(rule, acc, build, op, message, precision, id=rule)


def _pillar_scatter(features):
    from tvm_cruise.relay_ops import registry

    coords = np.array([[0, 0, 1, 2], [0, 0, 3, 3], [-1, -1, -1, -1]] * 2, dtype="int32")
    return registry.call("pillar_scatter", [features, relax.const(coords)], batch_size=1, ny=4,
                         nx=4)


NEGATIVE = [
    _neg("custom-op", "cruise-npu", lambda: graph([(6, 8)], lambda e, f: _pillar_scatter(f)),
         "relax.cruise.pillar_scatter", "cruise-npu: cruise.pillar_scatter is a tvm-cruise "
         "custom operator (PointPillars' scatter of pillar features to a BEV image); no "
         "accelerator instruction set implements it"),
    _neg("op-not-supported", "cruise-npu", lambda: graph([X], lambda e, x: relax.op.nn.softmax(x)),
         "relax.nn.softmax", "cruise-npu: nn.softmax is not supported (it runs: conv2d, dense"),
    _neg("dtype", "cruise-npu", lambda: graph([X], lambda e, x: conv(x, 8, 8)),
         "relax.nn.conv2d", "cruise-npu: nn.conv2d in float32 is not supported (it computes in "
         "int8, float16)", precision="fp32"),
    _neg("tensor-dtype", "cruise-npu",
         lambda: graph([X, X], lambda e, a, b: relax.op.add(a, b), dtype="int8"),
         "relax.add", "cruise-npu: add on int8 tensors runs on the host: under "
         "precision='fp16' the accelerator computes float16"),
    _neg("dynamic-shape", "cruise-npu",
         lambda: graph([("n", 8, 16, 16)], lambda e, x: relax.op.nn.relu(x)),
         "relax.nn.relu", "cruise-npu: nn.relu has a dynamic shape"),
    _neg("rank", "cruise-npu", lambda: graph([(2, 2, 2, 2, 2)] * 2, lambda e, a, b: relax.op.add(a, b)),
         "relax.add", "cruise-npu: add on a rank-5 tensor is not supported (at most rank 4)"),
    _neg("conv2d-layout", "cruise-npu",
         lambda: graph([(1, 16, 16, 8)], lambda e, x: conv(x, 8, 8, layout="NHWC")),
         "relax.nn.conv2d", "cruise-npu: conv2d layout NHWC/HWIO is not supported"),
    _neg("conv2d-kernel", "cruise-npu-lite", lambda: graph([X], lambda e, x: conv(x, 8, 8, k=7)),
         "relax.nn.conv2d", "cruise-npu-lite: conv2d kernel (7, 7) > 5 is not supported"),
    _neg("conv2d-stride", "cruise-npu-lite",
         lambda: graph([X], lambda e, x: conv(x, 8, 8, stride=4)),
         "relax.nn.conv2d", "cruise-npu-lite: conv2d stride (4, 4) > 2 is not supported"),
    _neg("conv2d-dilation", "cruise-npu-lite",
         lambda: graph([X], lambda e, x: conv(x, 8, 8, dilation=2, padding=2)),
         "relax.nn.conv2d", "cruise-npu-lite: conv2d dilation (2, 2) > 1 is not supported"),
    _neg("conv2d-padding", "cruise-npu-lite",
         lambda: graph([X], lambda e, x: conv(x, 8, 8, k=5, padding=3)),
         "relax.nn.conv2d", "cruise-npu-lite: conv2d padding (3, 3, 3, 3) > 2 is not supported"),
    _neg("conv2d-groups", "cruise-npu-lite",
         lambda: graph([X], lambda e, x: conv(x, 8, 8, groups=2)),
         "relax.nn.conv2d", "cruise-npu-lite: grouped conv2d (groups=2) is not supported"),
    _neg("conv2d-depthwise", "test-npu",
         lambda: graph([X], lambda e, x: conv(x, 8, 8, groups=8)),
         "relax.nn.conv2d", "test-npu: depthwise conv2d is not supported"),
    _neg("conv2d-sram", "cruise-npu-lite",
         lambda: graph([(1, 16, 4, 8192)], lambda e, x: conv(x, 16, 16)),
         "relax.nn.conv2d", "cruise-npu-lite: conv2d smallest tiling (16 output channels, 1 output "
         "row, 16 input channels, weights resident) needs"),
    _neg("dense-rank", "cruise-npu-lite",
         lambda: graph([(2, 8, 16)], lambda e, x: relax.op.matmul(x, const((16, 8)))),
         "relax.matmul", "cruise-npu-lite: dense on a rank-3 input is not supported (at most "
         "rank 2)"),
    _neg("matmul-activations", "cruise-npu-lite",
         lambda: graph([(1, 16, 8), (1, 8, 16)], lambda e, a, b: relax.op.matmul(a, b)),
         "relax.matmul", "cruise-npu-lite: matmul of two activations is not supported"),
    _neg("matmul-rank", "test-npu",
         lambda: graph([(2, 4, 16, 8), (2, 4, 8, 16)], lambda e, a, b: relax.op.matmul(a, b)),
         "relax.matmul", "test-npu: matmul on rank-4 operands is not supported (at most rank 3)"),
    _neg("pool-type", "test-npu",
         lambda: graph([X], lambda e, x: relax.op.nn.avg_pool2d(x, 2, 2)),
         "relax.nn.avg_pool2d", "test-npu: avg pooling is not supported (it runs: max)"),
    _neg("pool-layout", "cruise-npu",
         lambda: graph([(1, 16, 16, 8)], lambda e, x: relax.op.nn.max_pool2d(x, 2, 2,
                                                                            layout="NHWC")),
         "relax.nn.max_pool2d", "cruise-npu: pooling layout NHWC is not supported"),
    _neg("pool-kernel", "cruise-npu-lite",
         lambda: graph([X], lambda e, x: relax.op.nn.max_pool2d(x, 5, 1, 2)),
         "relax.nn.max_pool2d", "cruise-npu-lite: pooling window (5, 5) > 3 is not supported"),
    _neg("pool-stride", "cruise-npu-lite",
         lambda: graph([X], lambda e, x: relax.op.nn.max_pool2d(x, 3, 3)),
         "relax.nn.max_pool2d", "cruise-npu-lite: pooling stride (3, 3) > 2 is not supported"),
    _neg("pool-dilation", "cruise-npu",
         lambda: graph([X], lambda e, x: relax.op.nn.max_pool2d(x, 3, 1, 2, dilation=2)),
         "relax.nn.max_pool2d", "cruise-npu: pooling dilation (2, 2) is not supported"),
    _neg("pool-window", "cruise-npu",
         lambda: graph([X], lambda e, x: relax.op.nn.avg_pool2d(
             x, 3, 2, 1, ceil_mode=True, count_include_pad=True)),
         "relax.nn.avg_pool2d", "cruise-npu: pooling counting padding, the last window reaches "
         "past the padded input"),
    _neg("pool-global", "cruise-npu",
         lambda: graph([X], lambda e, x: relax.op.mean(x, [1], True)),
         "relax.mean", "cruise-npu: mean is not a global average pool over H and W"),
    _neg("elementwise-op", "cruise-npu-lite",
         lambda: graph([X, X], lambda e, a, b: relax.op.subtract(a, b)),
         "relax.subtract", "cruise-npu-lite: element-wise subtract is not supported (it runs: "
         "add, multiply)"),
    _neg("elementwise-broadcast", "cruise-npu-lite",
         lambda: graph([X, (1, 1, 16, 16)], lambda e, a, b: relax.op.add(a, b)),
         "relax.add", "cruise-npu-lite: element-wise add broadcasting (1, 8, 16, 16) with "
         "(1, 1, 16, 16) is not supported"),
    _neg("activation-function", "cruise-npu-lite",
         lambda: graph([X], lambda e, x: relax.op.sigmoid(x)),
         "relax.sigmoid", "cruise-npu-lite: activation sigmoid is not supported (it runs: relu, "
         "relu6, clip)"),
    _neg("concat-axis", "cruise-npu",
         lambda: graph([X, X], lambda e, a, b: relax.op.concat([a, b], axis=2)),
         "relax.concat", "cruise-npu: concat along axis 2 is not supported (axes [1] only)"),
    _neg("resize-method", "cruise-npu",
         lambda: graph([X], lambda e, x: relax.op.image.resize2d(x, (32, 32), method="cubic")),
         "relax.image.resize2d", "cruise-npu: resize method cubic is not supported"),
    _neg("resize-layout", "cruise-npu",
         lambda: graph([(1, 16, 16, 8)], lambda e, x: relax.op.image.resize2d(
             x, (32, 32), layout="NHWC", method="nearest_neighbor")),
         "relax.image.resize2d", "cruise-npu: resize layout NHWC is not supported"),
    _neg("resize-scale", "cruise-npu",
         lambda: graph([X], lambda e, x: relax.op.image.resize2d(x, (24, 24),
                                                                  method="nearest_neighbor")),
         "relax.image.resize2d", "cruise-npu: resize from (16, 16) to (24, 24) is not an "
         "integer scale up to 4x"),
]


@pytest.mark.parametrize("rule, acc, build, op, message, precision", NEGATIVE)
def test_rule_keeps_op_on_host_with_its_message(test_npu, rule, acc, build, op, message,
                                                precision):
    _, report = _partition(build(), acc, precision)
    hits = [o for o in report.host_ops if o.op == op]
    assert hits, report.table()
    entry = hits[0]
    assert entry.device == HOST and rule in entry.rules, report.table()
    assert any(r.startswith(message) or message in r for r in entry.reasons), entry.reasons


def test_every_rule_has_a_negative_case():
    covered = {p.values[0] for p in NEGATIVE}
    # npu-compiler is the NPU compiler's, not a spec limit: test_compiler_refusal_goes_to_host;
    # precision-override is the user's (test_mixed_precision.py)
    assert covered | {"npu-compiler", "precision-override"} == set(RULES)


def test_compiler_refusal_goes_to_host(monkeypatch):
    """An op the rules accept but the NPU compiler cannot lower runs on the host, the report
    quotes the compiler, and the build still gives the right numbers."""
    from tvm_cruise.npu.compiler.codegen import Emitter

    def broken(self, index, layer):
        raise tvm_cruise.BuildError("NPU compiler: injected failure for this test")

    monkeypatch.setattr(Emitter, "_pool", broken)
    mod = graph([X], lambda e, x: relax.op.nn.max_pool2d(e(conv(x, 8, 8)), 2, 2))
    art = tvm_cruise.build(mod, target="cruise-npu")
    pool = [o for o in art.placement.ops if o.op == "relax.nn.max_pool2d"][0]
    conv_op = [o for o in art.placement.ops if o.op == "relax.nn.conv2d"][0]
    assert pool.device == HOST and pool.rules == ["npu-compiler"], art.placement.table()
    assert "injected failure for this test" in pool.reasons[0]
    assert conv_op.device == "cruise-npu"
    x = np.random.default_rng(0).standard_normal(X).astype("float32")
    ref = tvm_cruise.build(mod, target="llvm").run(x)
    np.testing.assert_allclose(art.run(x), ref, atol=2e-2 * np.abs(ref).max())


# -- reference models ------------------------------------------------------------------
@pytest.mark.cruise_npu
@pytest.mark.parametrize("model", ["perception-cnn", "resnet18"])
def test_reference_cnns_offload_every_mac_on_cruise_npu(model):
    report = analyze(model, "cruise-npu")
    assert report.mac_share >= 0.95
    for op in report.ops:
        if op.op in ("relax.nn.conv2d", "relax.matmul"):
            assert op.device == "cruise-npu", op
    assert report.functions == 1


@pytest.mark.cruise_npu_lite
def test_lite_rejects_what_its_spec_rejects():
    report = analyze("resnet18", "cruise-npu-lite")
    (conv1,) = [o for o in report.host_ops if o.op == "relax.nn.conv2d"]
    assert conv1.source == "conv1"
    assert conv1.rules == ["conv2d-kernel", "conv2d-padding"]
    assert "cruise-npu-lite: conv2d kernel (7, 7) > 5 is not supported" in conv1.reasons
    assert 0.9 < report.mac_share < 1.0
    onnx_names = {o.node for o in analyze("perception-cnn", "cruise-npu-lite").ops}
    assert all(onnx_names)


def test_report_names_ops_as_the_user_knows_them(onnx_file):
    torch_report = analyze("resnet18", "cruise-npu")
    sources = {o.source for o in torch_report.ops}
    assert {"conv1", "layer1.0.conv1", "layer4.1.conv2", "fc"} <= sources
    onnx_report = analyze(onnx_file("perception-cnn"), "cruise-npu")
    assert all(o.node.startswith("node_") for o in onnx_report.ops), onnx_report.table()


def test_report_summary_and_boundary():
    # conv -> softmax (host) -> conv: two accelerator functions, 4 boundary tensors
    mod = graph([X], lambda e, x: conv(e(relax.op.nn.softmax(e(conv(x, 8, 8)))), 8, 8))
    merged, report = _partition(mod, "cruise-npu")
    assert report.functions == 2
    assert [o.device for o in report.ops] == ["cruise-npu", HOST, "cruise-npu"]
    assert report.boundary == {"tensors": 4, "to_accelerator": 2, "to_host": 2,
                               "bytes": 4 * 8 * 16 * 16 * 2}
    assert report.mac_share == 1.0 and report.op_share == pytest.approx(2 / 3)
    text = report.table()
    assert "2/3 ops (67%)" in text and "in 2 functions" in text
    again = PlacementReport.from_dict(report.to_dict())
    assert again.to_dict() == report.to_dict()


def test_empty_pattern_table_is_an_error(monkeypatch):
    from tvm_cruise.byoc import partition as part
    from tvm_cruise.errors import BuildError

    monkeypatch.setattr(part, "register_patterns", lambda spec: [])
    spec = accelerators()["cruise-npu"]
    fake = type(spec)(**{**spec.__dict__, "key": "cruise_npu_typo", "source": "x"})
    with pytest.raises(BuildError, match="no patterns are registered for accelerator"):
        part.patterns_for(fake)


def test_patterns_are_in_tvms_registry():
    from tvm.relax.backend.pattern_registry import get_patterns_with_prefix

    lite = [p.name for p in get_patterns_with_prefix("cruise_npu_lite.")]
    npu = [p.name for p in get_patterns_with_prefix("cruise_npu.")]
    assert "cruise_npu_lite.conv2d_bias_add_act" in lite
    assert "cruise_npu.matmul" in npu and "cruise_npu_lite.matmul" not in lite
    assert not set(lite) & set(npu)


# -- BatchNorm folding -------------------------------------------------------------------
def test_batchnorm_folds_into_conv_with_and_without_bias():
    import torch

    from tvm_cruise.models.zoo import seeded

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, padding=1, bias=True)
            self.bn_a = torch.nn.BatchNorm2d(8)
            self.b = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn_b = torch.nn.BatchNorm2d(8)
            self.bn_c = torch.nn.BatchNorm2d(8)  # not after a conv: scale and shift

        def forward(self, x):
            return self.bn_c(torch.relu(self.bn_b(self.b(torch.relu(self.bn_a(self.a(x)))))))

    net = seeded(Net, (1, 3, 16, 16), 5)
    x = torch.randn(1, 3, 16, 16)
    imported = tvm_cruise.load_model(net, (x,))
    prepared = run_passes(imported.mod, prepare_passes())
    from tvm_cruise.frontend import op_counts

    counts = op_counts(prepared)
    assert "relax.nn.batch_norm" not in counts
    assert counts == {"relax.add": 3, "relax.multiply": 1, "relax.nn.conv2d": 2,
                      "relax.nn.relu": 2}
    ex = tvm.compile(prepared, "llvm")
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy())).numpy()
    ref = net(x).detach().numpy()
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-5


# -- a third accelerator from a spec alone ------------------------------------------------
def test_third_accelerator_from_spec_alone(test_npu, reference):
    from conftest import rel_err

    assert "test-npu" in [t.name for t in tvm_cruise.list_targets()]
    assert tvm.target.Target("test-npu").keys[0] == "test_npu"
    report = analyze("perception-cnn", "test-npu")
    assert report.accelerator == "test-npu" and report.mac_share > 0.9
    module, inputs, ref = reference("perception-cnn")
    art = tvm_cruise.build(module, target="test-npu", example_inputs=inputs)
    assert art.placement.accelerator == "test-npu"
    assert rel_err(art.run(*inputs), ref) <= 1e-2
    stats = art.npu_stats()  # compiled and simulated for the spec's 8x8 array and 64 KiB
    assert stats.accelerator == "test-npu" and stats.clock_mhz == 500
    assert all(p["stats"]["sram_high_water"] <= 65536 for p in stats.programs)
    assert tvm_cruise.register_accelerator(TEST_SPEC) == test_npu  # idempotent
    with pytest.raises(tvm_cruise.SpecError, match="already registered with a "
                                                            "different spec"):
        tvm_cruise.register_accelerator({**TEST_SPEC, "max_rank": 3})
