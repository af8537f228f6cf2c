"""The Cruise NPU instruction set: opcodes, encoding, field names (docs/npu_isa.md)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

INSTR_BYTES = 64
NUM_FIELDS = 15
NONE = 0xFFFFFFFF
_INSTR = struct.Struct("<BBH15I")

# dtype codes
INT8, FLOAT16, INT32, FLOAT32 = 0, 1, 2, 3
DTYPES = {INT8: np.dtype("int8"), FLOAT16: np.dtype("float16"), INT32: np.dtype("int32"),
          FLOAT32: np.dtype("float32")}
DTYPE_CODES = {str(v): k for k, v in DTYPES.items()}
ACC_DTYPE = {INT8: INT32, FLOAT16: FLOAT32}

# flags
FLAG_ACCUMULATE = 0x10      # CONV / DWCONV / GEMM: add to the accumulators
FLAG_CHANNEL_LAST = 0x01    # EPILOGUE / REQUANT: accumulators are [pixels][channels]
FLAG_POOL_AVG = 0x10        # POOL: average (else max)
FLAG_POOL_COUNT_PAD = 0x20  # POOL: average divides by kh*kw
FLAG_SYNC_DMA, FLAG_SYNC_COMPUTE = 0x01, 0x02

# activation functions (EPILOGUE, ACT)
ACT_NONE, ACT_RELU, ACT_CLIP, ACT_SIGMOID, ACT_TANH, ACT_SILU, ACT_GELU = range(7)
ACTIVATION_NAMES = ("none", "relu", "clip", "sigmoid", "tanh", "silu", "gelu")
# element-wise ops and broadcast modes (ELTWISE)
ELT_ADD, ELT_SUB, ELT_MUL, ELT_MAX, ELT_MIN = range(5)
ELTWISE_NAMES = ("add", "subtract", "multiply", "maximum", "minimum")
BCAST_NONE, BCAST_CHANNEL, BCAST_SCALAR, BCAST_PIXEL = range(4)
BROADCAST_NAMES = ("none", "channel", "scalar", "pixel")


@dataclass(frozen=True)
class OpInfo:
    code: int
    name: str
    engine: str          # "dma", "compute" or "sync"
    fields: tuple[str, ...]


OPS = {op.code: op for op in (
    OpInfo(0x01, "DMA_LOAD", "dma", ("tensor", "offset", "sram", "d0", "d1", "d2", "d3",
                                     "ds0", "ds1", "ds2", "ds3", "ss0", "ss1", "ss2", "ss3")),
    OpInfo(0x02, "DMA_STORE", "dma", ("tensor", "offset", "sram", "d0", "d1", "d2", "d3",
                                      "ds0", "ds1", "ds2", "ds3", "ss0", "ss1", "ss2", "ss3")),
    OpInfo(0x03, "FILL", "compute", ("sram", "count", "value")),
    OpInfo(0x10, "CONV", "compute", ("inp", "w", "acc", "cin", "hin", "win", "cout", "hout",
                                     "wout", "k", "s", "d")),
    OpInfo(0x11, "DWCONV", "compute", ("inp", "w", "acc", "c", "hin", "win", "hout", "wout",
                                       "k", "s", "d")),
    OpInfo(0x12, "GEMM", "compute", ("a", "b", "acc", "m", "k", "n")),
    OpInfo(0x20, "EPILOGUE", "compute", ("acc", "out", "channels", "pixels", "bias", "act",
                                         "lo", "hi", "residual")),
    OpInfo(0x21, "REQUANT", "compute", ("acc", "out", "channels", "pixels", "bias", "mult",
                                        "shift", "zp", "lo", "hi")),
    OpInfo(0x22, "ELTWISE", "compute", ("a", "b", "out", "channels", "pixels", "op",
                                        "broadcast", "shift")),
    OpInfo(0x23, "ACT", "compute", ("inp", "out", "count", "func", "lo", "hi", "lut")),
    OpInfo(0x24, "POOL", "compute", ("inp", "out", "c", "hin", "win", "hout", "wout", "k",
                                     "s", "pad")),
    OpInfo(0x30, "SYNC", "sync", ()),
)}
OPCODES = {op.name: op.code for op in OPS.values()}


@dataclass(frozen=True)
class Instruction:
    opcode: int
    flags: int = 0
    fields: tuple[int, ...] = (0,) * NUM_FIELDS

    @property
    def info(self) -> OpInfo:
        return OPS[self.opcode]

    @property
    def name(self) -> str:
        return self.info.name

    def field(self, name: str) -> int:
        return self.fields[self.info.fields.index(name)]

    def encode(self) -> bytes:
        return _INSTR.pack(self.opcode, self.flags, 0, *self.fields)

    @classmethod
    def decode(cls, data: bytes) -> "Instruction":
        opcode, flags, _, *fields = _INSTR.unpack(data)
        return cls(opcode, flags, tuple(fields))


def make(name: str, flags: int = 0, **values) -> Instruction:
    """Build an instruction by mnemonic and field names (missing fields are 0)."""
    info = OPS[OPCODES[name]]
    unknown = set(values) - set(info.fields)
    if unknown:
        raise ValueError(f"{name} has no fields {sorted(unknown)}; it has {info.fields}")
    fields = [0] * NUM_FIELDS
    for i, fname in enumerate(info.fields):
        fields[i] = u32(values.get(fname, 0))
    return Instruction(info.code, flags, tuple(fields))


# -- value packing ---------------------------------------------------------------------------
def u32(value) -> int:
    """Store an int (two's complement) or a field value as u32."""
    value = int(value)
    if not -(1 << 31) <= value < (1 << 32):
        raise ValueError(f"{value} does not fit a 32-bit field")
    return value & 0xFFFFFFFF


def s32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def pair(hi: int, lo: int) -> int:
    if not (0 <= hi < 1 << 16 and 0 <= lo < 1 << 16):
        raise ValueError(f"({hi}, {lo}) does not fit two 16-bit halves")
    return hi << 16 | lo


def unpair(value: int) -> tuple[int, int]:
    return value >> 16, value & 0xFFFF


def f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", float(value)))[0]


def bits_f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def dtype_code(dtype) -> int:
    name = str(np.dtype(dtype))
    if name not in DTYPE_CODES:
        raise ValueError(f"the NPU has no dtype {name}; it has {sorted(DTYPE_CODES)}")
    return DTYPE_CODES[name]
