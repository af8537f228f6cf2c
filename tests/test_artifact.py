"""The artifact format: export, reload in a fresh process, determinism, refusals."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
import torch
import tvm

import tvm_cruise
from tvm_cruise import artifact
from tvm_cruise.errors import ArtifactError, BuildError

from conftest import run_python


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 5)).eval()
    inputs = (torch.randn(1, 3, 8, 8),)
    return model, inputs


@pytest.fixture(scope="module")
def small_art(small):
    model, inputs = small
    return tvm_cruise.build(model, target="cruise-npu-lite", example_inputs=inputs, name="small")


@pytest.mark.parametrize("suffix", [".so", ".tar"])
def test_export_load_in_fresh_process(built, reference, tmp_path, suffix):
    art = built("perception-cnn", "cruise-npu")
    _, inputs, _ = reference("perception-cnn")
    path = tmp_path / f"m{suffix}"
    art.export_library(path)
    np.savez(tmp_path / "in.npz", x=inputs[0].numpy())
    result = run_python(f"""
        import json, numpy as np, tvm_cruise
        art = tvm_cruise.load({str(path)!r})
        out = art.run(**dict(np.load({str(tmp_path / 'in.npz')!r})))
        np.save({str(tmp_path / 'out.npy')!r}, out)
        print(json.dumps({{"metadata": art.metadata, "inputs": [str(i) for i in art.input_info]}}))
    """)
    assert result["metadata"] == art.metadata
    assert result["inputs"] == ["x: float32[1x3x128x256]"]
    assert tvm_cruise.load(path).placement.to_dict() == art.placement.to_dict()
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), art.run(*inputs))


def test_metadata_contents(small_art):
    meta = small_art.metadata
    assert meta["format"] == {"name": "tvm-cruise-artifact", "version": list(artifact.FORMAT_VERSION)}
    assert meta["versions"]["tvm"] == tvm.__version__
    assert meta["versions"]["tvm_cruise"] == tvm_cruise.__version__
    assert meta["target"]["name"] == "cruise-npu-lite"
    assert meta["accelerator"]["spec_hash"] == \
        tvm_cruise.targets.get_accelerator("cruise-npu-lite").spec_hash
    assert meta["inputs"] == [{"name": "input", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert [o["shape"] for o in meta["outputs"]] == [[1, 5]]
    for room in ("placement", "extensions", "tuning"):
        assert room in meta
    assert small_art.embedded_metadata() == meta


def test_read_metadata_without_loading(small_art, tmp_path):
    for suffix in (".so", ".tar"):
        path = small_art.export_library(tmp_path / f"a{suffix}")
        assert tvm_cruise.read_metadata(path) == small_art.metadata


def test_builds_are_deterministic(small, small_art, tmp_path):
    model, inputs = small
    again = tvm_cruise.build(model, target="cruise-npu-lite", example_inputs=inputs, name="small")
    assert again.metadata == small_art.metadata
    assert artifact.encode_metadata(again.metadata) == artifact.encode_metadata(small_art.metadata)
    assert again._module.as_text() == small_art._module.as_text()
    torch.save(model, tmp_path / "model.pth")
    other = run_python(f"""
        import json, torch, tvm_cruise
        model = torch.load({str(tmp_path / 'model.pth')!r}, weights_only=False)
        art = tvm_cruise.build(model, target="cruise-npu-lite",
                               example_inputs=(torch.zeros(1, 3, 8, 8),), name="small")
        print(json.dumps({{"meta": art.metadata, "text": art._module.as_text()}}))
    """)
    assert other["meta"] == small_art.metadata
    assert other["text"] == small_art._module.as_text()


# -- refusals ---------------------------------------------------------------------------
def test_not_an_artifact(tmp_path):
    junk = tmp_path / "junk.so"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ArtifactError, match="is not a tvm-cruise artifact.*tvm-cruise compile"):
        tvm_cruise.load(junk)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(ArtifactError, match="is not a tvm-cruise artifact"):
        tvm_cruise.load(empty)
    with pytest.raises(ArtifactError, match="no such artifact file"):
        tvm_cruise.load(tmp_path / "missing.so")


def test_plain_tvm_library_is_not_ours(small, tmp_path):
    model, inputs = small
    mod = tvm_cruise.load_model(model, inputs).mod
    path = tmp_path / "plain.so"
    tvm.compile(mod, target="llvm").export_library(str(path))
    with pytest.raises(ArtifactError, match="holds no tvm-cruise metadata block"):
        tvm_cruise.load(path)


def _corrupt(src, dst, offset_from_magic, new_bytes):
    data = bytearray(src.read_bytes())
    pos = data.find(artifact.MAGIC)
    assert pos >= 0
    data[pos + offset_from_magic: pos + offset_from_magic + len(new_bytes)] = new_bytes
    dst.write_bytes(bytes(data))


def test_corrupt_metadata_is_refused(small_art, tmp_path):
    good = tmp_path / "good.so"
    small_art.export_library(good)
    header = len(artifact.MAGIC) + struct.calcsize("<HHI32s")
    bad = tmp_path / "bad.so"
    _corrupt(good, bad, header + 5, b"#")
    with pytest.raises(ArtifactError, match="metadata block is corrupt \\(checksum mismatch\\)"):
        tvm_cruise.load(bad)
    cut = tmp_path / "cut.so"
    data = good.read_bytes()
    cut.write_bytes(data[: data.find(artifact.MAGIC) + header + 10])
    with pytest.raises(ArtifactError, match="truncated"):
        tvm_cruise.read_metadata(cut)


def test_newer_format_major_is_refused(small_art, tmp_path):
    good, newer = tmp_path / "good.so", tmp_path / "newer.so"
    small_art.export_library(good)
    _corrupt(good, newer, len(artifact.MAGIC), struct.pack("<HH", 2, 0))
    with pytest.raises(ArtifactError, match="artifact format 2.0 is not readable by this "
                                            "tvm-cruise \\(format 1.x\\); rebuild"):
        tvm_cruise.load(newer)


def test_other_tvm_version_is_refused(small, tmp_path, monkeypatch):
    model, inputs = small
    monkeypatch.setattr(tvm, "__version__", "0.99.0")
    art = tvm_cruise.build(model, target="llvm", example_inputs=inputs)
    monkeypatch.undo()
    path = art.export_library(tmp_path / "old.so")
    with pytest.raises(ArtifactError, match="built with TVM 0.99.0 but this is TVM "
                                            f"{tvm.__version__}.*Rebuild it here"):
        tvm_cruise.load(path)


def test_cross_compiled_aarch64_host(small, tmp_path):
    model, inputs = small
    host = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78"}
    art = tvm_cruise.build(model, target="cruise-npu", example_inputs=inputs, host=host)
    assert art.host == host
    tar = art.export_library(tmp_path / "car.tar")
    meta = tvm_cruise.read_metadata(tar)
    assert meta["target"]["host"]["mtriple"] == "aarch64-linux-gnu"
    with pytest.raises(ArtifactError, match="built for a aarch64 host and this machine is x86_64"):
        tvm_cruise.load(tar)
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        with pytest.raises(BuildError, match="no cross-linker found.*export as .tar \\(car.tar\\)"):
            art.export_library(tmp_path / "car.so")


def test_export_suffixes(small_art, tmp_path):
    with pytest.raises(BuildError, match="use a .so .* or .tar"):
        small_art.export_library(tmp_path / "model.dll")
    path = small_art.export_library(tmp_path / "model.so")
    loaded = tvm_cruise.load(path)
    copy = loaded.export_library(tmp_path / "copy.so")
    assert tvm_cruise.read_metadata(copy) == small_art.metadata
    with pytest.raises(BuildError, match="can only be copied as one"):
        loaded.export_library(tmp_path / "copy.tar")


def test_decode_rejects_foreign_json():
    payload = json.dumps({"format": {"name": "something-else"}}).encode()
    import hashlib

    blob = artifact.MAGIC + struct.pack("<HHI32s", *artifact.FORMAT_VERSION, len(payload),
                                        hashlib.sha256(payload).digest()) + payload
    with pytest.raises(ArtifactError, match="not tvm-cruise artifact metadata"):
        artifact.decode_metadata(blob)
