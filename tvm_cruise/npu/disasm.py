"""Text form of NPU programs (``tvm-cruise npu disasm``)."""

from __future__ import annotations

from . import isa
from .program import Program

_PAIRS = {"k", "s", "d", "pad"}
_ADDRS = {"sram", "inp", "w", "acc", "a", "b", "out", "bias", "mult", "shift", "lut",
          "residual"}


def _flag_text(instr: isa.Instruction) -> str:
    name, flags = instr.name, instr.flags
    parts = []
    if name in ("CONV", "DWCONV", "GEMM", "ELTWISE", "ACT", "POOL", "FILL"):
        parts.append(str(isa.DTYPES[flags & 0x0F]))
    if name in ("CONV", "DWCONV", "GEMM") and flags & isa.FLAG_ACCUMULATE:
        parts.append("accumulate")
    if name in ("EPILOGUE", "REQUANT") and flags & isa.FLAG_CHANNEL_LAST:
        parts.append("channel_last")
    if name == "POOL":
        parts.append("avg" if flags & isa.FLAG_POOL_AVG else "max")
        if flags & isa.FLAG_POOL_COUNT_PAD:
            parts.append("count_pad")
    if name == "SYNC":
        parts += [n for bit, n in ((isa.FLAG_SYNC_DMA, "dma"), (isa.FLAG_SYNC_COMPUTE,
                                                                "compute")) if flags & bit]
    return " ".join(parts)


def format_instruction(instr: isa.Instruction, program: Program | None = None) -> str:
    fields = []
    for fname, value in zip(instr.info.fields, instr.fields):
        if fname == "tensor" and program is not None:
            fields.append(f"tensor={value}:{program.tensors[value].name}")
        elif value == isa.NONE:
            fields.append(f"{fname}=-")
        elif fname in _PAIRS:
            fields.append(f"{fname}={'x'.join(map(str, isa.unpair(value)))}")
        elif fname in _ADDRS:
            fields.append(f"{fname}=0x{value:x}")
        elif fname in ("lo", "hi") and instr.name in ("EPILOGUE", "ACT"):
            fields.append(f"{fname}={isa.bits_f32(value):g}")
        elif fname in ("zp", "lo", "hi"):
            fields.append(f"{fname}={isa.s32(value)}")
        elif fname == "act" or fname == "func":
            fields.append(f"{fname}={isa.ACTIVATION_NAMES[value] if value < 7 else value}")
        elif fname == "op" and instr.name == "ELTWISE":
            fields.append(f"op={isa.ELTWISE_NAMES[value] if value < 5 else value}")
        elif fname == "broadcast":
            fields.append(f"broadcast={isa.BROADCAST_NAMES[value] if value < 4 else value}")
        else:
            fields.append(f"{fname}={value}")
    flags = _flag_text(instr)
    return f"{instr.name:<9} {' '.join(fields)}" + (f"  [{flags}]" if flags else "")


def disassemble(program: Program) -> str:
    lines = [f"; Cruise NPU program, format {'.'.join(map(str, program.format_version))}, "
             f"accelerator {program.accelerator}, spec {program.spec_hash[:12]}",
             f"; {len(program.instructions)} instructions, {len(program.constants)} constant "
             f"bytes, content {program.content_hash[:12]}"]
    for i, t in enumerate(program.tensors):
        lines.append(f".tensor {i} {t.kind:<8} {t.name:<16} {t.dtype}{list(t.shape)}")
    for i, instr in enumerate(program.instructions):
        lines.append(f"{i:5d}  {format_instruction(instr, program)}")
    return "\n".join(lines)
