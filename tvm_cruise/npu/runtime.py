"""The NPU runtime inside TVM: ``<key>.run`` global functions that the VM calls.

A compiled model calls ``call_dps_packed("<key>.run", (program, *inputs))``: the program is
a uint8 constant of the executable, the outputs are preallocated by the VM. Registering the
function under the same name from C++ (a driver for real silicon) would run the same
artifacts; here it is the simulator. Programs are parsed once and cached by content.
"""

from __future__ import annotations

import threading

import numpy as np

from ..errors import NpuExecutionError
from ..targets.spec import AcceleratorSpec
from .program import HEADER_BYTES, Program
from .simulator import RunStats, Simulator

_CACHE: dict[tuple, Program] = {}
_LOCK = threading.Lock()
_LAST_STATS: dict[str, RunStats] = {}
_REGISTERED: set[str] = set()


def function_name(spec: AcceleratorSpec) -> str:
    return f"{spec.key}.run"


def _program(spec: AcceleratorSpec, data: np.ndarray) -> Program:
    """Parse (and fully validate) a program the first time its bytes are seen.

    The key is the buffer's address and size plus its 128-byte header, which carries the
    sha256 of everything after it: the same key is the same program, so a VM calling with
    its constant again skips hashing megabytes of weights.
    """
    key = (spec.name, data.__array_interface__["data"][0], data.nbytes,
           data[:HEADER_BYTES].tobytes())
    with _LOCK:
        program = _CACHE.get(key)
    if program is None:
        program = Program.from_bytes(data.tobytes(), spec, where=f"{spec.name} program")
        with _LOCK:
            _CACHE[key] = program
    return program


def last_stats(spec: AcceleratorSpec) -> RunStats | None:
    """The simulated statistics of the last program ``<key>.run`` executed."""
    return _LAST_STATS.get(spec.name)


def register_runtime(spec: AcceleratorSpec) -> str:
    """Register ``<key>.run`` for ``spec`` with TVM (idempotent); returns its name."""
    import tvm_ffi

    name = function_name(spec)
    if name in _REGISTERED:
        return name
    simulator = Simulator(spec)

    def run(program, *args):
        prog = _program(spec, np.from_dlpack(program))
        n_in, n_out = len(prog.inputs), len(prog.outputs)
        if len(args) != n_in + n_out:
            raise NpuExecutionError(
                f"{name}: the program takes {n_in} inputs and {n_out} outputs, the call "
                f"passed {len(args)} tensors")
        # Programs declare tensors of rank <= 4 over the same dense bytes: reshape by size.
        inputs = []
        for arg, decl in zip(args[:n_in], prog.inputs):
            arr = np.from_dlpack(arg)
            inputs.append(arr.reshape(decl.shape) if arr.size == decl.size else arr)
        outputs, stats = simulator.run(prog, inputs)
        for dst, value in zip(args[n_in:], outputs):
            shape = tuple(dst.shape)
            if int(np.prod(shape)) != value.size:
                raise NpuExecutionError(f"{name}: output of {value.size} elements for a "
                                        f"tensor of shape {shape}")
            dst.copyfrom(np.ascontiguousarray(value).reshape(shape))
        _LAST_STATS[spec.name] = stats

    tvm_ffi.register_global_func(name, run, override=True)
    _REGISTERED.add(name)
    return name


def call_npu(spec: AcceleratorSpec, program: Program, args, out_types):
    """A Relax ``call_dps_packed`` of ``program`` on ``args`` (out_types: TensorTypes)."""
    from tvm import relax

    data = np.frombuffer(program.to_bytes(), dtype=np.uint8).copy()
    return relax.call_dps_packed(relax.ExternFunc(function_name(spec)),
                                 [relax.const(data, "uint8"), *args], out_types)
