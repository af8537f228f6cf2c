"""The artifact: one ``.so`` (or ``.tar``) holding the compiled model and its metadata.

The metadata is a JSON document inside a framed block (magic, format version, length,
sha256) stored as a constant that the Relax function ``__tvm_cruise_metadata__`` returns.
It therefore lives inside TVM's serialized executable and survives any export TVM supports.
Because the block is framed, ``read_metadata`` finds it by scanning the file's bytes, which
works without loading the library: on a machine of another architecture, and before TVM is
asked to load a file from an incompatible version.

Format versioning: ``FORMAT_VERSION = (major, minor)``. A reader accepts any minor of its
own major (unknown fields are kept and ignored); another major is refused.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError

FORMAT_NAME = "tvm-cruise-artifact"
FORMAT_VERSION = (1, 0)
METADATA_FUNCTION = "__tvm_cruise_metadata__"
MAGIC = b"TVM-CRUISE-META\x00"
_HEADER = struct.Struct("<HHI32s")  # major, minor, payload length, sha256(payload)
_MAX_PAYLOAD = 64 << 20


def encode_metadata(metadata: dict) -> bytes:
    """Frame ``metadata`` (canonical JSON: sorted keys, so builds are byte-identical)."""
    payload = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()
    major, minor = FORMAT_VERSION
    return MAGIC + _HEADER.pack(major, minor, len(payload), hashlib.sha256(payload).digest()) \
        + payload


def decode_metadata(blob: bytes, where: str = "artifact") -> dict:
    """Parse one framed block starting at ``blob[0]``; raise ArtifactError if damaged."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _HEADER.size:
        raise ArtifactError(f"{where}: metadata block is truncated")
    major, minor, length, digest = _HEADER.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + _HEADER.size
    payload = blob[start:start + length]
    if length > _MAX_PAYLOAD or len(payload) != length:
        raise ArtifactError(f"{where}: metadata block is truncated or corrupt "
                            f"(length field {length}, {len(payload)} bytes present); rebuild it")
    if hashlib.sha256(payload).digest() != digest:
        raise ArtifactError(f"{where}: metadata block is corrupt (checksum mismatch); the file "
                            "was damaged after it was built; rebuild or re-copy it")
    if major != FORMAT_VERSION[0]:
        raise ArtifactError(
            f"{where}: artifact format {major}.{minor} is not readable by this tvm-cruise "
            f"(format {FORMAT_VERSION[0]}.x); rebuild the model with this version "
            "(tvm-cruise compile ...) or install the tvm-cruise that built it")
    try:
        meta = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{where}: metadata is not valid JSON; rebuild it") from None
    if not isinstance(meta, dict) or meta.get("format", {}).get("name") != FORMAT_NAME:
        raise ArtifactError(f"{where}: metadata block is not tvm-cruise artifact metadata")
    return meta


def metadata_constant(metadata: dict):
    """The metadata block as a uint8 Relax constant."""
    from tvm import relax

    return relax.const(np.frombuffer(encode_metadata(metadata), dtype="uint8").copy(), "uint8")


def attach_metadata(mod, metadata: dict):
    """Add ``__tvm_cruise_metadata__() -> uint8[n]`` to a Relax module."""
    from tvm import relax

    bb = relax.BlockBuilder()
    with bb.function(METADATA_FUNCTION, []):
        out = bb.emit(metadata_constant(metadata))
        bb.emit_func_output(out)
    func = bb.get()[METADATA_FUNCTION].with_attr("global_symbol", METADATA_FUNCTION)
    mod = mod.clone() if hasattr(mod, "clone") else mod
    mod[METADATA_FUNCTION] = func
    return mod


def _scan(data: bytes, where: str) -> dict | None:
    pos = data.find(MAGIC)
    if pos < 0:
        return None
    return decode_metadata(data[pos:], where)


def read_metadata(path: str | Path) -> dict:
    """Read an artifact's metadata without loading it (works for any host architecture).

    Examples
    --------
    >>> meta = tvm_cruise.read_metadata("model.so")          # doctest: +SKIP
    >>> meta["target"]["name"], meta["inputs"]               # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    meta = None
    if tarfile.is_tarfile(path):
        try:
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        fobj = tar.extractfile(member)
                        meta = _scan(fobj.read(), f"{path}:{member.name}") if fobj else None
                        if meta is not None:
                            break
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ArtifactError(f"{path}: damaged tar archive ({err}); re-export it") from None
    else:
        meta = _scan(path.read_bytes(), str(path))
    if meta is None:
        raise ArtifactError(
            f"{path} is not a tvm-cruise artifact (it holds no tvm-cruise metadata block); "
            "build one with tvm_cruise.build(...).export_library(path) or "
            "`tvm-cruise compile MODEL -o path`")
    return meta


def check_compatible(meta: dict, where: str) -> None:
    """Refuse an artifact this installation cannot run."""
    import tvm

    built_with = meta.get("versions", {}).get("tvm")
    if built_with != tvm.__version__:
        raise ArtifactError(
            f"{where} was built with TVM {built_with} but this is TVM {tvm.__version__}; the "
            "VM bytecode is TVM-version specific. Rebuild it here (tvm-cruise compile ...) or "
            f"run it with apache-tvm=={built_with}")


def describe(meta: dict) -> str:
    """A few human-readable lines about an artifact."""
    from .frontend import TensorInfo

    lines = [
        f"model     {meta['model']['name']} ({meta['model']['source_format']})",
        f"target    {meta['target']['name']}  host: {json.dumps(meta['target']['host'])}",
        f"built by  tvm-cruise {meta['versions']['tvm_cruise']}, TVM {meta['versions']['tvm']},"
        f" format {'.'.join(map(str, meta['format']['version']))}",
    ]
    lines += [f"input     {TensorInfo.from_dict(i)}" for i in meta["inputs"]]
    lines += [f"output    {TensorInfo.from_dict(o)}" for o in meta["outputs"]]
    acc = meta.get("accelerator", {})
    if acc.get("accelerator"):
        share = ""
        if meta.get("placement"):
            s = meta["placement"]["summary"]
            share = f", {s['mac_share']:.1%} of MACs"
        lines.append(f"accel     {acc['accelerator']} (spec {acc['spec_hash'][:12]}, "
                     f"{acc['precision']}): {acc['offloaded_functions']} offloaded "
                     f"functions{share}")
        lines.append(f"          {acc['execution']}")
    tuning = meta.get("tuning", {})
    if tuning:
        default = tuning.get("default_scheduled", 0)
        lines.append(f"kernels   {tuning['tuned_kernels']}/{tuning['host_kernels']} host kernels "
                     "tuned" + (f" ({default} more with the default CPU schedule)" if default
                                else "")
                     + (f", {tuning['npu_layers_tuned']}/{tuning['npu_layers']} NPU "
                        "layers with searched tiles" if tuning.get("npu_layers") else ""))
    checks = meta.get("verification")
    if checks is not None:
        beyond = [c["function"] for c in checks if not c["ok"]]
        worst = max((c["error"] for c in checks), default=0.0)
        lines.append(f"verified  {len(checks)} offloaded functions against the fp32 host build"
                     f" (worst rel. error {worst:.1e}); "
                     + (f"BEYOND BOUND: {', '.join(beyond)}" if beyond else "all within bound"))
    return "\n".join(lines)


def json_default(value: Any):
    """JSON encoder hook for numpy scalars and tuples inside metadata."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
