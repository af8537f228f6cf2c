"""Accelerator backends: what shared code asks of an accelerator architecture.

A spec file (``targets/specs/*.json``) describes one accelerator as data: sizes, rates,
limits. Its ``architecture`` field names the backend that compiles for it; accelerators of
one architecture differ only in their specs (``cruise-npu`` and ``cruise-npu-lite`` share
the ``cruise-npu`` backend, ``tvm_cruise.npu``). The compile driver (``driver.py``), the
TVM registration, the CLI and the tuning jobs reach an accelerator only through this
interface, so a second architecture plugs in with one module that subclasses
:class:`Backend` and calls :func:`register_backend`, and no edit anywhere else.

>>> from tvm_cruise.backend import backend_for
>>> from tvm_cruise.targets import get_accelerator
>>> backend_for(get_accelerator("cruise-npu-lite")).architecture
'cruise-npu'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import SpecError


@dataclass(frozen=True)
class TunableLayer:
    """One layer whose tiles a tuning job may search (``Backend.tunable_layers``).

    ``signature`` keys its tuning record (with the spec hash); ``handle`` is the backend's
    own object for it, passed back to :meth:`Backend.search_layer`.
    """

    signature: str
    description: str
    handle: Any


class Backend:
    """The accelerator-side stages of a build, for one architecture.

    Every method takes the accelerator's spec: one backend serves every spec of its
    architecture. Subclasses implement them all (the defaults raise).
    """

    architecture: str = ""

    def register(self, spec) -> list[str]:
        """Register with TVM what ``spec``'s accelerator needs at compile and run time
        (pattern table, runtime functions). Idempotent; returns the registered names."""
        raise NotImplementedError

    def partition(self, mod, spec, precision: str, model: str, refused: dict[int, str],
                  layer_precision: dict[str, str] | None):
        """Split ``mod``: ``(partitioned module, byoc.PlacementReport)``. ``refused``
        maps op ids the backend could not lower before to why: they stay on the host."""
        raise NotImplementedError

    def conv2d_sram(self, spec, shapes, strides, padding, dilation, groups: int, dtype: str,
                    bias: bool, residual: bool) -> tuple[str, int] | None:
        """SRAM the smallest tiling of a conv2d needs (``shapes``: input, weight, output),
        by the backend's own SRAM model, with a fused bias / residual epilogue or without:
        ``(the tiling described, bytes)``. The rule ``conv2d-sram`` refuses a conv whose
        smallest tiling exceeds the spec's SRAM. None: no such limit (the default)."""
        return None

    def offloaded(self, partitioned, spec) -> list:
        """GlobalVars of the functions ``partition`` offloaded, in call order."""
        raise NotImplementedError

    def calibrated_functions(self, partitioned, functions, precision: str) -> list[str]:
        """Names of the offloaded functions that compute in int8 (need calibration)."""
        raise NotImplementedError

    def lower(self, partitioned, spec, functions, *, tilings=None, records=None,
              ranges=None):
        """Compile the offloaded functions and call them from the host graph:
        ``(module, [compiled function])``. Raises :class:`tvm_cruise.errors.
        LoweringFailures` naming every op it cannot lower (the driver sends those to the
        host and partitions again). A compiled function has ``summary()`` (a dict for the
        artifact) and ``input_scales`` (None unless it takes int8 inputs)."""
        raise NotImplementedError

    def run(self, spec, compiled, inputs: list) -> list:
        """Outputs of one compiled function on fp32 numpy ``inputs`` (build-time
        verification; the Cruise NPU runs its program in the simulator)."""
        raise NotImplementedError

    def totals(self, compiled: list) -> dict:
        """Whole-model statistics of the compiled functions (simulated or measured, as
        the dict says)."""
        raise NotImplementedError

    def tunable_layers(self, compiled: list) -> list[TunableLayer]:
        """The layers of ``compiled`` a tuning job may search, in program order."""
        raise NotImplementedError

    def tuned_layers(self, compiled: list) -> int:
        """How many of those layers a tuning record set."""
        raise NotImplementedError

    def search_layer(self, spec, layer: TunableLayer) -> dict:
        """Search ``layer``'s tiles: a record with at least ``tiling``, ``cycles``,
        ``default_cycles`` and ``candidates``."""
        raise NotImplementedError


_BACKENDS: dict[str, Callable[[], Backend]] = {}
_LOADED: dict[str, Backend] = {}


def register_backend(architecture: str, factory: Callable[[], Backend]) -> None:
    """Make ``architecture`` (the spec field) compile with ``factory()``'s backend.

    The factory runs on first use, so a backend's heavy imports wait until a spec of its
    architecture is compiled."""
    if architecture in _BACKENDS and _BACKENDS[architecture] is not factory:
        raise SpecError(f"a backend for architecture {architecture!r} is already registered")
    _BACKENDS[architecture] = factory


def architectures() -> list[str]:
    return sorted(_BACKENDS)


def backend_for(spec) -> Backend:
    """The backend of ``spec``'s architecture."""
    arch = spec.architecture
    if arch not in _LOADED:
        if arch not in _BACKENDS:
            raise SpecError(f"accelerator {spec.name!r} has architecture {arch!r}, which no "
                            f"backend compiles (known: {', '.join(architectures())}); fix: "
                            "import the module that registers it (register_backend) or use "
                            "a known architecture in the spec")
        _LOADED[arch] = _BACKENDS[arch]()
    return _LOADED[arch]


def _cruise_npu() -> Backend:
    from .npu.backend import CruiseNpuBackend

    return CruiseNpuBackend()


register_backend("cruise-npu", _cruise_npu)
