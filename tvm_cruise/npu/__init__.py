"""The Cruise NPU: instruction set, program format, simulator and its TVM runtime.

See docs/npu_isa.md. ``isa`` defines the instructions, ``program`` the binary format and a
builder, ``simulator`` executes programs and counts cycles (simulated figures),
``runtime`` registers ``<key>.run`` with TVM, ``disasm`` prints programs, ``report`` the
simulated statistics of a compiled model. ``compiler`` turns the functions the partitioner
(``tvm_cruise.byoc``) offloads into programs (docs/npu_compiler.md).
"""

from .program import Program, ProgramBuilder, TensorDecl
from .simulator import RunStats, Simulator

__all__ = ["Program", "ProgramBuilder", "RunStats", "Simulator", "TensorDecl"]
