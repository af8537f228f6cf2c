"""Targets, hosts, accelerator specs."""

from __future__ import annotations

import json

import pytest
import tvm

import tvm_cruise
from tvm_cruise.errors import SpecError, UnknownTargetError
from tvm_cruise.targets import (AcceleratorSpec, accelerators, default_host, get_target,
                                resolve_target, translate_legacy)

ALL = ["cruise-npu", "cruise-npu-lite", "cruise-npu-cuda", "cruise-npu-lite-cuda", "llvm",
       "cuda"]


def test_list_targets_names_and_descriptions():
    targets = [t for t in tvm_cruise.list_targets() if not t.name.startswith("test-")]
    assert [t.name for t in targets] == ALL  # (test-npu: registered by test_byoc)
    assert all(t.description and "\n" not in t.description for t in targets)


@pytest.mark.parametrize("name", ["cruise-npu", "cruise-npu-lite"])
def test_tag_resolves_with_accelerator_key(name):
    target = tvm.target.Target(name)
    assert target.kind.name == "llvm"
    assert target.keys[0] == accelerators()[name].key
    assert "cpu" in target.keys
    assert target.attrs["mcpu"] == default_host()["mcpu"]


@pytest.mark.parametrize("name", ["cruise-npu-cuda", "cruise-npu-lite-cuda"])
def test_cuda_tag_resolves(name):
    target = tvm.target.Target(name)
    assert target.kind.name == "cuda" and "gpu" in target.keys
    assert target.attrs["arch"] == "sm_87"
    assert target.host.kind.name == "llvm"


def test_accelerators_differ_in_keys():
    keys = {tvm.target.Target(n).keys[0] for n in ("cruise-npu", "cruise-npu-lite")}
    assert keys == {"cruise_npu", "cruise_npu_lite"}


@pytest.mark.parametrize("bad", ["cruise-nup", "npu", "LLVM", ""])
def test_unknown_target_lists_valid_ones(bad):
    with pytest.raises(UnknownTargetError) as info:
        resolve_target(bad)
    text = str(info.value)
    assert f"unknown target {bad!r}" in text
    for name in ALL:
        assert name in text


def test_unknown_target_kind():
    with pytest.raises(UnknownTargetError, match="target kind 'rocm' is not supported"):
        resolve_target({"kind": "rocm"})


@pytest.mark.parametrize("text, expected", [
    ("llvm -mcpu=cortex-a78 -mtriple=aarch64-linux-gnu",
     {"kind": "llvm", "mcpu": "cortex-a78", "mtriple": "aarch64-linux-gnu"}),
    ("llvm -mcpu=znver3 -num-cores=4", {"kind": "llvm", "mcpu": "znver3", "num-cores": 4}),
    ("llvm -mattr=+avx2,+fma", {"kind": "llvm", "mattr": ["+avx2", "+fma"]}),
    ("llvm", {"kind": "llvm"}),
])
def test_legacy_strings_translate(text, expected):
    assert translate_legacy(text) == expected


@pytest.mark.parametrize("text, message", [
    ("-mcpu=x", "must start with a target kind"),
    ("llvm mcpu", "must look like -key=value"),
    ("llvm -num-cores=two", "-num-cores needs an integer"),
])
def test_legacy_string_errors(text, message):
    with pytest.raises(UnknownTargetError, match=message):
        translate_legacy(text)


# LLVM feature names and the /proc/cpuinfo flags of the same x86 instructions
_X86_FEATURES = {"sse4.2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma",
                 "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vnni": "avx512_vnni"}


def test_default_host_is_this_machine():
    import platform
    from pathlib import Path

    cg = tvm.target.codegen
    cfg = resolve_target("cruise-npu").host_config
    assert cfg == default_host()
    # a CPU LLVM knows for this machine's triple, not the "generic" fallback
    assert cfg["mcpu"] in list(cg.llvm_get_cpu_archlist(tvm.target.Target("llvm")))
    assert cfg["mcpu"] != "generic"
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.exists():
        return
    # code built for the default host may use the CPU model's instructions: every one of
    # them must be one this machine has, as the kernel reports it
    flags = set(next(line for line in cpuinfo.read_text().splitlines()
                     if line.startswith("flags")).split(":", 1)[1].split())
    target = tvm.target.Target(cfg)
    claimed = [f for f in _X86_FEATURES if cg.llvm_cpu_has_features(f, target)]
    if "sse4_2" in flags:  # a resolved model, not a baseline like x86-64
        assert "sse4.2" in claimed, (cfg["mcpu"], claimed)
    assert [f for f in claimed if _X86_FEATURES[f] not in flags] == [], (cfg["mcpu"], flags)


@pytest.mark.parametrize("host", [
    {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78"},
    "llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a78",
    json.dumps({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78"}),
])
def test_explicit_host_forms(host):
    resolved = resolve_target("cruise-npu-lite", host=host)
    assert resolved.host_config == {"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                    "mcpu": "cortex-a78"}
    assert resolved.tvm_target.keys[0] == "cruise_npu_lite"
    assert "arm_cpu" in resolved.tvm_target.keys


def test_legacy_string_as_target():
    resolved = resolve_target("llvm -mcpu=znver3")
    assert resolved.name == "llvm" and resolved.host_config == {"kind": "llvm", "mcpu": "znver3"}


def test_tvm_target_object_maps_back_to_cruise_target():
    assert resolve_target(tvm.target.Target("cruise-npu-lite")).name == "cruise-npu-lite"
    assert resolve_target(tvm.target.Target("cruise-npu-cuda")).name == "cruise-npu-cuda"
    assert resolve_target(tvm.target.Target("llvm")).name == "llvm"


def test_cuda_host_with_aarch64_cpu():
    resolved = resolve_target("cruise-npu-cuda", host="llvm -mtriple=aarch64-linux-gnu",
                              cuda_arch="sm_87")
    target = resolved.tvm_target
    assert target.kind.name == "cuda" and target.attrs["arch"] == "sm_87"
    assert str(target.host.attrs["mtriple"]) == "aarch64-linux-gnu"


@pytest.mark.parametrize("host, message", [
    ({"kind": "cuda"}, "must be an LLVM CPU target"),
    ({"kind": "llvm", "mcpu": "pentium-9000"}, "'pentium-9000' is not a CPU LLVM knows"),
    ({"kind": "llvm", "colour": "red"}, "is not a valid LLVM target"),
    (42, "host must be a dict"),
    ("{not json", "is not valid JSON"),
])
def test_bad_hosts(host, message):
    with pytest.raises(UnknownTargetError, match=message):
        resolve_target("cruise-npu", host=host)


def test_bad_cuda_arch():
    with pytest.raises(UnknownTargetError, match="must look like 'sm_87'"):
        resolve_target("cuda", cuda_arch="87")


# -- specs ------------------------------------------------------------------------------
def _spec_dict(**changes):
    data = accelerators()["cruise-npu"].to_dict()
    data.update(changes)
    return data


def test_spec_roundtrip_and_hash_is_stable():
    import hashlib
    from pathlib import Path

    spec = accelerators()["cruise-npu"]
    again = AcceleratorSpec.from_dict(spec.to_dict())
    assert again is not spec and again == spec and again.spec_hash == spec.spec_hash
    # the hash is the file's: sha256 of the spec file's JSON in canonical form
    path = Path(tvm_cruise.targets.__file__).parent / "specs" / "cruise-npu.json"
    canon = json.dumps(json.loads(path.read_text()), sort_keys=True, separators=(",", ":"))
    assert spec.spec_hash == hashlib.sha256(canon.encode()).hexdigest()
    assert spec.macs_per_cycle == 32 * 32
    changed = _spec_dict(hardware={**spec.to_dict()["hardware"], "sram_bytes": 1 << 20})
    assert AcceleratorSpec.from_dict(changed).spec_hash != spec.spec_hash


def test_specs_carry_the_documented_hardware():
    npu, lite = accelerators()["cruise-npu"], accelerators()["cruise-npu-lite"]
    assert npu.hardware["mac_array"] == (32, 32) and lite.hardware["mac_array"] == (16, 16)
    assert npu.hardware["sram_bytes"] == 2 << 20 and lite.hardware["sram_bytes"] == 256 << 10
    assert npu.hardware["clock_mhz"] == 1000 and lite.hardware["clock_mhz"] == 800
    assert npu.hardware["macs_per_cycle"] == {"int8": 1024, "float16": 512}
    assert lite.hardware["macs_per_cycle"] == {"int8": 256, "float16": 128}
    assert lite.ops["conv2d"]["max_dilation"] == 1 and lite.ops["conv2d"]["max_kernel"] == 5


def _hw(**changes):
    return {"hardware": {**accelerators()["cruise-npu"].to_dict()["hardware"], **changes}}


@pytest.mark.parametrize("changes, message", [
    ({"name": "Cruise NPU"}, "name 'Cruise NPU' must be lower-case"),
    ({"key": "cruise-npu"}, "key 'cruise-npu' must be a Python-style identifier"),
    ({"spec_version": 9}, "spec_version 9 is not supported"),
    ({"hardware": {"mac_array": [32, 32]}}, "hardware is missing macs_per_cycle, clock_mhz"),
    (_hw(mac_array=[32]), "mac_array must be \\[rows, cols\\]"),
    (_hw(clock_mhz=-1), "clock_mhz must be a positive number"),
    (_hw(sram_banks=3), "must split into sram_banks \\(3\\) equal banks"),
    (_hw(issue_cycles=1.5), "issue_cycles must be a whole number"),
    (_hw(macs_per_cycle={"int8": 1024}), "macs_per_cycle must give, for each dtype"),
    (_hw(macs_per_cycle={"int8": 1024, "float16": 300}), "a divisor of the array size 1024"),
    ({"dtypes": {"bfloat16": {}}}, "dtypes must be a non-empty subset"),
    ({"ops": {"fft": {}}}, "unknown op families \\['fft'\\]"),
    ({"colour": "red"}, "unknown fields \\['colour'\\]"),
])
def test_bad_specs_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        AcceleratorSpec.from_dict(_spec_dict(**changes))


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        AcceleratorSpec.from_file(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SpecError, match="is not valid JSON"):
        AcceleratorSpec.from_file(bad)


def test_get_target_unknown():
    with pytest.raises(UnknownTargetError, match="valid targets: cruise-npu, cruise-npu-lite"):
        get_target("vta")
