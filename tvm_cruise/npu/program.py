"""NPU programs: the binary format, its validating reader, and a builder (assembler).

Format in docs/npu_isa.md. Serialization is deterministic: the same program always gives
the same bytes. The reader refuses anything it cannot vouch for before a single
instruction runs.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import NpuProgramError
from ..targets.spec import AcceleratorSpec
from . import isa

MAGIC = b"CRUISNPU"
FORMAT_VERSION = (1, 0)
_HEADER = struct.Struct("<8sHHI32s32s32sIIQ")  # 128 bytes
_TENSOR = struct.Struct("<BBBB4IQQ24s")          # 64 bytes
HEADER_BYTES, TENSOR_BYTES = _HEADER.size, _TENSOR.size
CONST_ALIGN = 64
KINDS = ("input", "output", "constant", "scratch")
MAX_DIM = 1 << 30
# DRAM limits (docs/npu_isa.md, "Program format"): the NPU addresses 4 GiB of DRAM (32-bit
# byte addresses); one tensor may take at most a quarter of it. The reader refuses larger
# declarations before anything is allocated for them.
DRAM_BYTES = 1 << 32
MAX_TENSOR_BYTES = DRAM_BYTES // 4


@dataclass(frozen=True)
class TensorDecl:
    """A DRAM tensor of a program."""

    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    const_offset: int = 0
    const_bytes: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # exact (np.prod wraps around at 2^63)

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class Program:
    accelerator: str
    spec_hash: str
    tensors: list[TensorDecl]
    instructions: list[isa.Instruction]
    constants: bytes = b""
    format_version: tuple[int, int] = FORMAT_VERSION
    _bytes: bytes | None = field(default=None, repr=False, compare=False)

    # -- views ----------------------------------------------------------------------
    def of_kind(self, kind: str) -> list[int]:
        return [i for i, t in enumerate(self.tensors) if t.kind == kind]

    @property
    def inputs(self) -> list[TensorDecl]:
        return [self.tensors[i] for i in self.of_kind("input")]

    @property
    def outputs(self) -> list[TensorDecl]:
        return [self.tensors[i] for i in self.of_kind("output")]

    def constant(self, index: int) -> np.ndarray:
        t = self.tensors[index]
        raw = self.constants[t.const_offset:t.const_offset + t.const_bytes]
        return np.frombuffer(raw, dtype=t.dtype).reshape(t.shape)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.to_bytes()[HEADER_BYTES:]).hexdigest()

    # -- serialization ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        if self._bytes is not None:
            return self._bytes
        body = bytearray()
        for t in self.tensors:
            shape = list(t.shape) + [1] * (4 - len(t.shape))
            body += _TENSOR.pack(KINDS.index(t.kind), isa.dtype_code(t.dtype), len(t.shape), 0,
                                 *shape, t.const_offset, t.const_bytes,
                                 t.name.encode()[:24].ljust(24, b"\0"))
        for instr in self.instructions:
            body += instr.encode()
        body += self.constants
        name = self.accelerator.encode()
        header = _HEADER.pack(MAGIC, *self.format_version, 0, name.ljust(32, b"\0"),
                              bytes.fromhex(self.spec_hash), hashlib.sha256(body).digest(),
                              len(self.tensors), len(self.instructions), len(self.constants))
        self._bytes = bytes(header) + bytes(body)
        return self._bytes

    @classmethod
    def from_bytes(cls, data: bytes | np.ndarray, spec: AcceleratorSpec | None = None,
                   where: str = "NPU program") -> "Program":
        """Parse and validate; ``spec`` (when given) must be the one it was built for."""
        data = bytes(data) if not isinstance(data, bytes) else data
        if len(data) < HEADER_BYTES:
            raise NpuProgramError(f"{where}: truncated ({len(data)} bytes, the header alone "
                                  f"is {HEADER_BYTES}); recompile the model")
        (magic, major, minor, _, name, spec_hash, content_hash, n_tensors, n_instr,
         n_const) = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise NpuProgramError(f"{where}: not a Cruise NPU program (magic {magic!r}, "
                                  f"expected {MAGIC!r})")
        if major != FORMAT_VERSION[0]:
            raise NpuProgramError(
                f"{where}: program format {major}.{minor}, but this tvm-cruise runs format "
                f"{FORMAT_VERSION[0]}.x; recompile the model with this tvm-cruise")
        try:
            accelerator = name.rstrip(b"\0").decode()
        except UnicodeDecodeError:
            raise NpuProgramError(f"{where}: corrupt header (accelerator name)") from None
        if spec is not None and accelerator != spec.name:
            raise NpuProgramError(
                f"{where}: built for accelerator {accelerator!r}, refused by {spec.name!r}; "
                f"compile the model for target {spec.name!r}")
        if spec is not None and spec_hash.hex() != spec.spec_hash:
            raise NpuProgramError(
                f"{where}: built for another version of the {spec.name} spec (hash "
                f"{spec_hash.hex()[:12]}, this one is {spec.spec_hash[:12]}); recompile the "
                "model")
        expected = HEADER_BYTES + n_tensors * TENSOR_BYTES + n_instr * isa.INSTR_BYTES + n_const
        if len(data) != expected:
            raise NpuProgramError(
                f"{where}: {'truncated' if len(data) < expected else 'oversized'}: "
                f"{len(data)} bytes where the header announces {expected}")
        if hashlib.sha256(data[HEADER_BYTES:]).digest() != content_hash:
            raise NpuProgramError(f"{where}: corrupt (content hash mismatch); recompile or "
                                  "re-copy it")
        pos = HEADER_BYTES
        tensors, dram = [], 0
        for i in range(n_tensors):
            kind, code, rank, _, *rest = _TENSOR.unpack_from(data, pos)
            shape, const_offset, const_bytes, tname = rest[:4], rest[4], rest[5], rest[6]
            pos += TENSOR_BYTES
            if kind >= len(KINDS) or code not in isa.DTYPES or not 0 <= rank <= 4:
                raise NpuProgramError(f"{where}: tensor {i} has an unknown kind, dtype or rank")
            try:
                decoded = tname.rstrip(b"\0").decode()
            except UnicodeDecodeError:
                raise NpuProgramError(f"{where}: tensor {i} has a corrupt name") from None
            if any(not 0 < d <= MAX_DIM for d in shape[:rank]):
                raise NpuProgramError(f"{where}: tensor {i} ({decoded}) has an invalid shape "
                                      f"{list(shape[:rank])} (each dimension 1 to {MAX_DIM})")
            decl = TensorDecl(decoded, KINDS[kind], str(isa.DTYPES[code]), tuple(shape[:rank]),
                              const_offset, const_bytes)
            if decl.nbytes > MAX_TENSOR_BYTES:
                raise NpuProgramError(
                    f"{where}: tensor {i} ({decoded}) declares {decl.dtype}{list(decl.shape)}, "
                    f"{decl.nbytes} B: over the limit of {MAX_TENSOR_BYTES} B (1 GiB) for one "
                    "NPU tensor; the program is corrupt, or the model too large for the NPU")
            dram += decl.nbytes
            if dram > DRAM_BYTES:
                raise NpuProgramError(
                    f"{where}: tensors 0..{i} declare {dram} B of DRAM, over the {DRAM_BYTES} B "
                    "(4 GiB) the NPU addresses; the program is corrupt, or the model too large "
                    "for the NPU")
            if decl.kind == "constant" and (const_bytes != decl.nbytes
                                            or const_offset + const_bytes > n_const):
                raise NpuProgramError(f"{where}: constant tensor {i} ({decoded}) lies outside "
                                      "the constant section")
            tensors.append(decl)
        instructions = []
        for i in range(n_instr):
            instr = isa.Instruction.decode(data[pos:pos + isa.INSTR_BYTES])
            pos += isa.INSTR_BYTES
            if instr.opcode not in isa.OPS:
                raise NpuProgramError(f"{where}: instruction {i} has unknown opcode "
                                      f"0x{instr.opcode:02x}")
            if instr.info.engine == "dma" and instr.fields[0] >= n_tensors:
                raise NpuProgramError(f"{where}: instruction {i} ({instr.name}) names tensor "
                                      f"{instr.fields[0]} of {n_tensors}")
            instructions.append(instr)
        program = cls(accelerator, spec_hash.hex(), tensors, instructions, data[pos:],
                      (major, minor))
        program._bytes = data
        return program


# -- the builder ---------------------------------------------------------------------------------
class ProgramBuilder:
    """Assemble a program instruction by instruction.

    Examples
    --------
    >>> b = ProgramBuilder(spec)                                      # doctest: +SKIP
    >>> x = b.input("x", "float16", (4, 8)); y = b.output("y", "float16", (4, 8))
    >>> b.dma_load(x, sram=0, dims=(4, 8)); b.sync(dma=True)
    >>> b.act(0, 256, 32, "float16", "relu"); b.sync(compute=True)
    >>> b.dma_store(y, sram=256, dims=(4, 8)); program = b.build()
    """

    def __init__(self, spec: AcceleratorSpec):
        self.spec = spec
        self.tensors: list[TensorDecl] = []
        self.instructions: list[isa.Instruction] = []
        self._consts = bytearray()

    # tensors
    def _add(self, decl: TensorDecl) -> int:
        self.tensors.append(decl)
        return len(self.tensors) - 1

    def input(self, name: str, dtype, shape) -> int:
        return self._add(TensorDecl(name, "input", str(np.dtype(dtype)), tuple(shape)))

    def output(self, name: str, dtype, shape) -> int:
        return self._add(TensorDecl(name, "output", str(np.dtype(dtype)), tuple(shape)))

    def scratch(self, name: str, dtype, shape) -> int:
        return self._add(TensorDecl(name, "scratch", str(np.dtype(dtype)), tuple(shape)))

    def constant(self, name: str, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        isa.dtype_code(array.dtype)
        pad = (-len(self._consts)) % CONST_ALIGN
        self._consts += b"\0" * pad
        offset = len(self._consts)
        self._consts += array.tobytes()
        return self._add(TensorDecl(name, "constant", str(array.dtype), tuple(array.shape),
                                    offset, array.nbytes))

    def emit(self, instr: isa.Instruction) -> isa.Instruction:
        self.instructions.append(instr)
        return instr

    # data movement
    def _dma(self, name, tensor, sram, dims, dram_strides, sram_strides, offset):
        dims = tuple(dims)
        if not 1 <= len(dims) <= 4:
            raise ValueError("a DMA box has 1 to 4 dimensions")
        shape = self.tensors[tensor].shape
        dram_strides = tuple(dram_strides) if dram_strides is not None else _dense(dims) \
            if tuple(dims) == tuple(shape) else _dense_in(shape, len(dims))
        sram_strides = tuple(sram_strides) if sram_strides is not None else _dense(dims)
        pad = 4 - len(dims)
        d = (1,) * pad + dims
        ds = (0,) * pad + tuple(dram_strides)
        ss = (0,) * pad + tuple(sram_strides)
        return self.emit(isa.make(name, tensor=tensor, offset=offset, sram=sram,
                                  d0=d[0], d1=d[1], d2=d[2], d3=d[3],
                                  ds0=ds[0], ds1=ds[1], ds2=ds[2], ds3=ds[3],
                                  ss0=ss[0], ss1=ss[1], ss2=ss[2], ss3=ss[3]))

    def dma_load(self, tensor: int, sram: int, dims, dram_strides=None, sram_strides=None,
                 offset: int = 0):
        return self._dma("DMA_LOAD", tensor, sram, dims, dram_strides, sram_strides, offset)

    def dma_store(self, tensor: int, sram: int, dims, dram_strides=None, sram_strides=None,
                  offset: int = 0):
        return self._dma("DMA_STORE", tensor, sram, dims, dram_strides, sram_strides, offset)

    def fill(self, sram: int, count: int, dtype, value=0):
        code = isa.dtype_code(dtype)
        bits = int(np.array(value, dtype=isa.DTYPES[code]).view(
            {1: np.uint8, 2: np.uint16, 4: np.uint32}[isa.DTYPES[code].itemsize]))
        return self.emit(isa.make("FILL", code, sram=sram, count=count, value=bits))

    def sync(self, dma: bool = False, compute: bool = False):
        flags = (isa.FLAG_SYNC_DMA if dma else 0) | (isa.FLAG_SYNC_COMPUTE if compute else 0)
        return self.emit(isa.Instruction(isa.OPCODES["SYNC"], flags))

    # MAC array
    def conv(self, inp, w, acc, cin, hin, win, cout, hout, wout, kernel, stride=(1, 1),
             dilation=(1, 1), dtype="float16", accumulate=False):
        flags = isa.dtype_code(dtype) | (isa.FLAG_ACCUMULATE if accumulate else 0)
        return self.emit(isa.make("CONV", flags, inp=inp, w=w, acc=acc, cin=cin, hin=hin,
                                  win=win, cout=cout, hout=hout, wout=wout,
                                  k=isa.pair(*kernel), s=isa.pair(*stride),
                                  d=isa.pair(*dilation)))

    def dwconv(self, inp, w, acc, c, hin, win, hout, wout, kernel, stride=(1, 1),
               dilation=(1, 1), dtype="float16", accumulate=False):
        flags = isa.dtype_code(dtype) | (isa.FLAG_ACCUMULATE if accumulate else 0)
        return self.emit(isa.make("DWCONV", flags, inp=inp, w=w, acc=acc, c=c, hin=hin,
                                  win=win, hout=hout, wout=wout, k=isa.pair(*kernel),
                                  s=isa.pair(*stride), d=isa.pair(*dilation)))

    def gemm(self, a, b, acc, m, k, n, dtype="float16", accumulate=False):
        flags = isa.dtype_code(dtype) | (isa.FLAG_ACCUMULATE if accumulate else 0)
        return self.emit(isa.make("GEMM", flags, a=a, b=b, acc=acc, m=m, k=k, n=n))

    # vector unit
    def epilogue(self, acc, out, channels, pixels, bias=None, act="none", lo=0.0, hi=0.0,
                 channel_last=False, residual=None):
        return self.emit(isa.make(
            "EPILOGUE", isa.FLAG_CHANNEL_LAST if channel_last else 0, acc=acc, out=out,
            channels=channels, pixels=pixels, bias=isa.NONE if bias is None else bias,
            act=isa.ACTIVATION_NAMES.index(act), lo=isa.f32_bits(lo), hi=isa.f32_bits(hi),
            residual=isa.NONE if residual is None else residual))

    def requant(self, acc, out, channels, pixels, mult, shift, bias=None, zp=0, lo=-128,
                hi=127, channel_last=False):
        return self.emit(isa.make(
            "REQUANT", isa.FLAG_CHANNEL_LAST if channel_last else 0, acc=acc, out=out,
            channels=channels, pixels=pixels, bias=isa.NONE if bias is None else bias,
            mult=mult, shift=shift, zp=zp, lo=lo, hi=hi))

    def eltwise(self, a, b, out, channels, pixels, op, dtype="float16", broadcast="none",
                shift=0):
        return self.emit(isa.make(
            "ELTWISE", isa.dtype_code(dtype), a=a, b=b, out=out, channels=channels,
            pixels=pixels, op=isa.ELTWISE_NAMES.index(op),
            broadcast=isa.BROADCAST_NAMES.index(broadcast), shift=shift))

    def act(self, inp, out, count, dtype="float16", func="relu", lo=0.0, hi=0.0, lut=None):
        return self.emit(isa.make(
            "ACT", isa.dtype_code(dtype), inp=inp, out=out, count=count,
            func=isa.ACTIVATION_NAMES.index(func), lo=isa.f32_bits(lo), hi=isa.f32_bits(hi),
            lut=isa.NONE if lut is None else lut))

    def pool(self, inp, out, c, hin, win, hout, wout, kernel, stride, pad=(0, 0),
             kind="max", dtype="float16", count_pad=False):
        flags = isa.dtype_code(dtype) | (isa.FLAG_POOL_AVG if kind == "avg" else 0) | \
            (isa.FLAG_POOL_COUNT_PAD if count_pad else 0)
        return self.emit(isa.make("POOL", flags, inp=inp, out=out, c=c, hin=hin, win=win,
                                  hout=hout, wout=wout, k=isa.pair(*kernel),
                                  s=isa.pair(*stride), pad=isa.pair(*pad)))

    def build(self) -> Program:
        return Program(self.spec.name, self.spec.spec_hash, list(self.tensors),
                       list(self.instructions), bytes(self._consts))


def _dense(dims) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(dims):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def _dense_in(shape, rank) -> tuple[int, ...]:
    """Strides of the last ``rank`` dims of a dense tensor of ``shape``."""
    full = _dense(shape)
    return full[len(full) - rank:]
