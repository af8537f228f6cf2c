"""Exception classes. Every message names what is wrong, why, and how to fix it."""

from __future__ import annotations


class CruiseError(Exception):
    """Base class of every error tvm-cruise raises on purpose."""


class UnknownTargetError(CruiseError, ValueError):
    """A target name or host description that tvm-cruise does not know."""


class UnknownModelError(CruiseError, ValueError):
    """A reference-model name that is not bundled."""


class ModelLoadError(CruiseError, ValueError):
    """The model could not be read or imported (format, unsupported op, bad file)."""


class UnsupportedOpError(ModelLoadError):
    """The model uses an operator the importer cannot convert."""


class CustomOpError(CruiseError, ValueError):
    """A custom operator (``tvm_cruise.relay_ops``) given operands or attributes it cannot take."""


class InputMismatchError(CruiseError, ValueError):
    """Inputs given to a compiled model do not match its signature."""


class ArtifactError(CruiseError, ValueError):
    """A file is not a tvm-cruise artifact, or was built by an incompatible version."""


class BuildError(CruiseError, RuntimeError):
    """Compilation or export failed for a reason the user can act on."""


class LoweringFailures(BuildError):
    """Layers an accelerator backend cannot lower: ``failures`` lists ``(op ids,
    reason)``. The build sends those ops back to the host, with the reason."""

    def __init__(self, function: str, failures: list):
        self.function = function
        self.failures = list(failures)
        lines = "; ".join(f"ops {list(ids)}: {why}" for ids, why in self.failures)
        super().__init__(f"NPU compiler: {len(self.failures)} layer(s) of {function} cannot "
                         f"be lowered: {lines}")


class DependencyError(CruiseError, RuntimeError):
    """An installed dependency has a version known to break tvm-cruise."""


class SpecError(CruiseError, ValueError):
    """An accelerator spec file is malformed or inconsistent."""


class NpuProgramError(CruiseError, ValueError):
    """An NPU program that is refused: foreign, another version, truncated or corrupt."""


class NpuExecutionError(CruiseError, RuntimeError):
    """An NPU program that stops while executing (names the instruction)."""


class SramAccessError(NpuExecutionError):
    """An instruction touches SRAM outside the accelerator's SRAM or misaligned."""


class HazardError(NpuExecutionError):
    """DMA and compute touch the same SRAM without a SYNC between them."""


def register_with_tvm() -> None:
    """Let every tvm-cruise error cross TVM's FFI as itself.

    An exception raised in Python code TVM calls back (a pass of a registered pipeline, a
    custom op's type inference) comes back through TVM's FFI, which rebuilds it by class
    name; unregistered classes arrive as a plain ``RuntimeError``."""
    import tvm_ffi

    pending = [CruiseError]
    while pending:
        cls = pending.pop()
        tvm_ffi.register_error(cls)
        pending.extend(cls.__subclasses__())
