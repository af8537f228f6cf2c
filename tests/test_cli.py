"""The tvm-cruise command line, end to end through the installed console script."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli


def test_targets():
    proc = run_cli("targets")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["cruise-npu", "cruise-npu-lite", "cruise-npu-cuda",
                                              "cruise-npu-lite-cuda", "llvm", "cuda"]
    as_json = json.loads(run_cli("targets", "--json").stdout)
    assert as_json[0]["accelerator"] == "cruise-npu" and as_json[4]["accelerator"] == "-"


def test_models_and_env():
    assert "perception-cnn" in run_cli("models").stdout
    out = run_cli("env").stdout
    assert "TVM_CRUISE_LOG_LEVEL" in out and "TVM_CRUISE_TUNING_LOGS" in out


def test_compile_run_inspect_round_trip(tmp_path):
    art = tmp_path / "m.so"
    proc = run_cli("compile", "perception-cnn", "--target", "cruise-npu", "-o", art)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {art}" in proc.stdout and "target    cruise-npu" in proc.stdout
    # compile verifies every NPU function against the fp32 host build by default
    assert "verification: each NPU program (simulated)" in proc.stdout
    assert "BEYOND BOUND" not in proc.stdout and "all within bound" in proc.stdout
    proc = run_cli("run", art, "--save", tmp_path / "out.npz", "--repeat", "2")
    assert proc.returncode == 0, proc.stderr
    assert "seeded random inputs (seed 0)" in proc.stdout
    assert "relu_4: float32[1, 128, 16, 32]" in proc.stdout
    assert "measured wall time on this machine" in proc.stdout
    assert "NPU statistics on cruise-npu at 1000 MHz (simulated by the cycle model" in proc.stdout
    first = np.load(tmp_path / "out.npz")["relu_4"]
    # Same seed, same inputs, same outputs; explicit inputs by name give the same too.
    import tvm_cruise

    x = tvm_cruise.load(art).random_inputs(0)["x"]
    np.savez(tmp_path / "in.npz", x=x)
    proc = run_cli("run", art, "--inputs", tmp_path / "in.npz", "--save", tmp_path / "o2.npz")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o2.npz")["relu_4"], first)
    meta = json.loads(run_cli("inspect", art, "--json").stdout)
    assert meta["target"]["name"] == "cruise-npu"
    assert meta["verification"] and all(c["ok"] for c in meta["verification"])
    assert "input     x: float32[1x3x128x256]" in run_cli("inspect", art).stdout


def test_compile_onnx_with_legacy_host_string(tmp_path):
    onnx_path = tmp_path / "p.onnx"
    proc = run_cli("export-onnx", "perception-cnn", "-o", onnx_path)
    assert proc.returncode == 0 and onnx_path.is_file(), proc.stderr
    art = tmp_path / "p.so"
    proc = run_cli("compile", onnx_path, "--target", "cruise-npu-lite", "--host",
                   "llvm -mcpu=x86-64-v3 -num-cores=2", "-o", art, "--no-verify")
    assert proc.returncode == 0, proc.stderr
    assert '"mcpu": "x86-64-v3"' in proc.stdout and "(onnx)" in proc.stdout
    assert "verification:" not in proc.stdout and "verified" not in proc.stdout
    proc = run_cli("run", art)
    assert proc.returncode == 0 and "y: float32[1, 128, 16, 32]" in proc.stdout, proc.stderr


@pytest.mark.parametrize("args, message", [
    (("compile", "perception-cnn", "--target", "cruise-nup"),
     "unknown target 'cruise-nup'; valid targets: cruise-npu, cruise-npu-lite"),
    (("compile", "mobilenet.onnx"), "neither an existing file nor a bundled model"),
    (("compile", "perception-cnn", "--host", "llvm -mcpu=pentium-9000"),
     "not a CPU LLVM knows"),
    (("run", "nothing.so"), "no such artifact file"),
    (("export-onnx", "mobilenet"), "unknown reference model 'mobilenet'"),
])
def test_errors_are_one_line_with_exit_2(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_inputs_file(tmp_path):
    art = tmp_path / "m.so"
    assert run_cli("compile", "perception-cnn", "--target", "llvm", "-o", art).returncode == 0
    np.savez(tmp_path / "wrong.npz", image=np.zeros((1, 3, 128, 256), "float32"))
    proc = run_cli("run", art, "--inputs", tmp_path / "wrong.npz")
    assert proc.returncode == 2 and "holds arrays ['image'] but the model's inputs are ['x']" \
        in proc.stderr
    (tmp_path / "garbage.npz").write_bytes(b"nope")
    proc = run_cli("run", art, "--inputs", tmp_path / "garbage.npz")
    assert proc.returncode == 2 and "not a readable .npz file" in proc.stderr


def test_bad_input_shape_flag():
    proc = run_cli("compile", "perception-cnn", "--input-shape", "x:1x3")
    assert proc.returncode == 2 and "must look like NAME=1x3x224x224" in proc.stderr


def test_compile_prints_placement_and_no_fallback_fails(tmp_path):
    proc = run_cli("compile", "resnet18", "--target", "cruise-npu-lite", "-o", tmp_path / "r.so")
    assert proc.returncode == 0, proc.stderr
    assert "placement of resnet18 on cruise-npu-lite" in proc.stdout
    assert "cruise-npu-lite: conv2d kernel (7, 7) > 5 is not supported" in proc.stdout
    assert "69/70 ops" in proc.stdout
    assert "NPU statistics on cruise-npu-lite at 800 MHz" in proc.stdout
    proc = run_cli("compile", "resnet18", "--target", "cruise-npu-lite", "--no-fallback",
                   "-o", tmp_path / "r2.so")
    assert proc.returncode == 2
    assert "1 ops of resnet18 would fall back to the host on cruise-npu-lite" in proc.stderr
    assert "conv1 (relax.nn.conv2d): cruise-npu-lite: conv2d kernel (7, 7) > 5" in proc.stderr
    assert not (tmp_path / "r2.so").exists()


def test_analyze_json():
    proc = run_cli("analyze", "perception-cnn", "--target", "cruise-npu", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["summary"]["mac_share"] == 1.0 and report["functions"] == 1
    assert {o["source"] for o in report["ops"]} >= {"features.0.0", "features.4.2"}
    proc = run_cli("analyze", "perception-cnn", "--target", "llvm")
    assert proc.returncode == 2 and "has no accelerator" in proc.stderr


def test_npu_disasm_and_simulate(tmp_path):
    from tvm_cruise.npu import ProgramBuilder
    from tvm_cruise.targets import accelerators

    b = ProgramBuilder(accelerators()["cruise-npu-lite"])
    x = b.input("x", "int8", (16, 10, 10))
    w = b.constant("w", np.ones((8, 16, 3, 3), np.int8))
    y = b.output("acc", "int32", (8, 8, 8))
    b.dma_load(x, 0, (16, 10, 10))
    b.dma_load(w, 0x8000, (8, 16, 3, 3))
    b.sync(dma=True)
    b.conv(0, 0x8000, 0x10000, 16, 10, 10, 8, 8, 8, (3, 3), dtype="int8")
    b.sync(compute=True)
    b.dma_store(y, 0x10000, (8, 8, 8))
    b.sync(dma=True)
    path = tmp_path / "conv.crnpu"
    path.write_bytes(b.build().to_bytes())
    proc = run_cli("npu", "disasm", path)
    assert proc.returncode == 0, proc.stderr
    assert "accelerator cruise-npu-lite" in proc.stdout
    assert "CONV      inp=0x0 w=0x8000 acc=0x10000 cin=16" in proc.stdout
    proc = run_cli("npu", "simulate", path)
    assert proc.returncode == 0, proc.stderr
    # K = 144: ceil(144/16) = 9 passes * 64 px (int8 rate 1) + 144 weight rows loaded
    # + 16 fill = 736 conv cycles (SRAM reads: 1600 + 1152 B of operands and 8 passes * 8
    # columns * 64 px * 4 B of partial sums, ceil(19136/128) = 150 cycles, do not bound it)
    assert "simulated on cruise-npu-lite" in proc.stdout and "CONV      x1" in proc.stdout
    assert "736 cycles" in proc.stdout
    path.write_bytes(path.read_bytes()[:-3])
    proc = run_cli("npu", "disasm", path)
    assert proc.returncode == 2 and "truncated" in proc.stderr
