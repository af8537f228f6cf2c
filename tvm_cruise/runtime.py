"""``CompiledModel``: run, inspect, export and reload a compiled model."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import env
from .artifact import METADATA_FUNCTION, check_compatible, describe, read_metadata
from .errors import ArtifactError, BuildError, InputMismatchError
from .frontend import TensorInfo
from .targets import build_machine_arch, host_arch


def _to_numpy(value: Any, info: TensorInfo) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == object:
        raise InputMismatchError(f"input {info.name!r}: could not convert a "
                                 f"{type(value).__name__} to an array")
    if tuple(arr.shape) != info.shape:
        raise InputMismatchError(
            f"input {info.name!r} has shape {tuple(arr.shape)} but the model was compiled for "
            f"{info.shape}; fix: reshape the input or rebuild the model for the new shape")
    if str(arr.dtype) != info.dtype:
        raise InputMismatchError(
            f"input {info.name!r} has dtype {arr.dtype} but the model expects {info.dtype}; "
            f"fix: convert it (x.astype('{info.dtype}') or tensor.to(torch.{info.dtype}))")
    # np.ascontiguousarray makes a 0-d array 1-d, which a () parameter refuses.
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def flatten_outputs(result) -> list[np.ndarray]:
    """A VM result (a tensor or nested tuples of them) as a flat list of numpy arrays."""
    if hasattr(result, "numpy"):
        return [result.numpy()]
    out = []
    for item in result:
        out.extend(flatten_outputs(item))
    return out


_flatten = flatten_outputs


def seeded_inputs(infos, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of ``infos``' shapes and dtypes, by name: N(0, 1) floats, integers in
    [0, 10), random bools."""
    rng = np.random.default_rng(seed)
    out = {}
    for info in infos:
        if np.issubdtype(np.dtype(info.dtype), np.floating):
            out[info.name] = rng.standard_normal(info.shape).astype(info.dtype)
        elif info.dtype == "bool":
            out[info.name] = rng.integers(0, 2, info.shape).astype(bool)
        else:
            out[info.name] = rng.integers(0, 10, info.shape).astype(info.dtype)
    return out


class CompiledModel:
    """A compiled model: ``run`` it, read its signature and metadata, export it.

    Returned by :func:`tvm_cruise.build` and :func:`tvm_cruise.load`.

    Examples
    --------
    >>> art = tvm_cruise.build("perception-cnn", target="cruise-npu")    # doctest: +SKIP
    >>> out = art.run(np.zeros((1, 3, 128, 256), "float32"))             # doctest: +SKIP
    >>> art.export_library("model.so"); tvm_cruise.load("model.so")      # doctest: +SKIP
    """

    def __init__(self, module, metadata: dict, path: str | None = None):
        self._module = module
        self.metadata = metadata
        self.path = path
        self._vm = None

    # -- signature and metadata ---------------------------------------------------
    @property
    def input_info(self) -> list[TensorInfo]:
        return [TensorInfo.from_dict(d) for d in self.metadata["inputs"]]

    @property
    def output_info(self) -> list[TensorInfo]:
        return [TensorInfo.from_dict(d) for d in self.metadata["outputs"]]

    @property
    def target(self) -> str:
        return self.metadata["target"]["name"]

    @property
    def host(self) -> dict:
        return self.metadata["target"]["host"]

    @property
    def placement(self):
        """Where each operator runs, and why (a ``byoc.PlacementReport``; None for a
        host-only target)."""
        from .byoc.report import PlacementReport

        data = self.metadata.get("placement")
        return PlacementReport.from_dict(data) if data else None

    def npu_stats(self):
        """Simulated NPU statistics per offloaded function and in total (a
        ``npu.report.NpuStats``; None when nothing runs on an accelerator).

        Cycles, time at the spec's clock and utilization come from the simulator's cycle
        model: they are simulated, never wall time.
        """
        from .npu.report import from_metadata

        return from_metadata(self.metadata)

    @property
    def verification(self):
        """The build-time check of each offloaded function (``build(verify=True)``): a list
        of ``verify.FunctionCheck`` (simulated NPU output vs the fp32 host build of the same
        function on seeded inputs); None when the build did not verify."""
        from .verify import FunctionCheck

        checks = self.metadata.get("verification")
        return None if checks is None else [FunctionCheck(**c) for c in checks]

    @property
    def is_cuda(self) -> bool:
        return self.metadata["target"]["host_kind"] == "cuda"

    def random_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded random inputs of the right shapes and dtypes, by input name."""
        return seeded_inputs(self.input_info, seed)

    def describe(self) -> str:
        return describe(self.metadata)

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.input_info))
        return f"<CompiledModel {self.metadata['model']['name']} target={self.target} ({ins})>"

    # -- execution ----------------------------------------------------------------
    def _device(self):
        import tvm

        if self.is_cuda:
            dev = tvm.cuda(0)
            if not dev.exist:
                raise BuildError(
                    f"this model was compiled for a CUDA host ({self.target}) and no CUDA GPU "
                    "is visible here; run it on a machine with an NVIDIA GPU and driver, or "
                    "rebuild for an LLVM host (e.g. --target cruise-npu)")
            return dev
        return tvm.cpu(0)

    @property
    def vm(self):
        """The ``relax.VirtualMachine`` (created on first use)."""
        if self._vm is None:
            from tvm import relax

            self._vm = relax.VirtualMachine(self._module, self._device())
        return self._vm

    def instrumented_vm(self, instrument):
        """A new ``relax.VirtualMachine`` of this model with ``instrument`` set
        (``vm.set_instrument``: called before and after every call the VM makes);
        ``self.vm`` stays uninstrumented."""
        from tvm import relax

        vm = relax.VirtualMachine(self._module, self._device())
        vm.set_instrument(instrument)
        return vm

    def device_arguments(self, *inputs, **named) -> list:
        """The inputs, checked against the signature, as TVM tensors on the model's device
        (what ``vm["main"]`` takes)."""
        import tvm

        dev = self._device()
        return [tvm.runtime.tensor(a, dev) for a in self._arguments(inputs, named)]

    def _arguments(self, inputs: Sequence[Any], named: dict) -> list[np.ndarray]:
        infos = self.input_info
        if len(inputs) > len(infos):
            raise InputMismatchError(
                f"{len(inputs)} positional inputs given but the model takes {len(infos)}: "
                f"{', '.join(map(str, infos))}")
        values: dict[str, Any] = {}
        for info, value in zip(infos, inputs):
            values[info.name] = value
        for key, value in named.items():
            if key not in {i.name for i in infos}:
                raise InputMismatchError(f"unknown input {key!r}; the model's inputs are "
                                         f"{', '.join(i.name for i in infos)}")
            if key in values:
                raise InputMismatchError(f"input {key!r} given both by position and by name")
            values[key] = value
        missing = [i.name for i in infos if i.name not in values]
        if missing:
            raise InputMismatchError(f"missing inputs {missing}; the model takes "
                                     f"{', '.join(map(str, infos))}")
        return [_to_numpy(values[i.name], i) for i in infos]

    def run(self, *inputs, **named):
        """Run the model. Numpy arrays or torch tensors in; numpy out.

        Returns one array, or a list when the model has several outputs.
        """
        import tvm

        dev = self._device()
        args = [tvm.runtime.tensor(a, dev) for a in self._arguments(inputs, named)]
        outs = _flatten(self.vm["main"](*args))
        return outs[0] if len(outs) == 1 else outs

    def time_run(self, *inputs, repeat: int = 20, warmup: int = 3, **named) -> dict:
        """Measured wall time of ``main`` (inputs already on the device), in ms."""
        import tvm

        dev = self._device()
        args = [tvm.runtime.tensor(a, dev) for a in self._arguments(inputs, named)]
        func = self.vm["main"]
        for _ in range(warmup):
            func(*args)
        dev.sync()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            func(*args)
            dev.sync()
            times.append((time.perf_counter() - start) * 1e3)
        return {"min_ms": min(times), "median_ms": statistics.median(times), "runs": repeat}

    def embedded_metadata(self) -> dict:
        """The metadata as the executable itself returns it (a consistency check)."""
        from .artifact import decode_metadata

        blob = self.vm[METADATA_FUNCTION]().numpy().tobytes()
        return decode_metadata(blob, self.path or "compiled model")

    # -- export -------------------------------------------------------------------
    def export_library(self, path: str | os.PathLike) -> str:
        """Write the artifact: ``.so`` (shared library) or ``.tar`` (object files).

        A host of another architecture needs a cross-linker for ``.so``
        (``TVM_CRUISE_CROSS_CC``); ``.tar`` needs none and is linked on the device.
        """
        path = Path(path)
        suffix = "".join(path.suffixes[-1:]).lower()
        if suffix not in (".so", ".tar"):
            raise BuildError(f"cannot export to {path.name!r}: use a .so (shared library) or "
                             ".tar (object files, for cross-compiled hosts) file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.path is not None:  # a loaded artifact: its file is the artifact
            if Path(self.path).suffix.lower() != suffix:
                raise BuildError(f"{self.path} was loaded from a {Path(self.path).suffix} file "
                                 f"and can only be copied as one; rebuild to get a {suffix}")
            if Path(self.path).resolve() != path.resolve():
                shutil.copyfile(self.path, path)
            return str(path)
        kwargs = {}
        arch = host_arch(self.host)
        if suffix == ".so" and arch != build_machine_arch():
            cc = env.CROSS_CC.get() or shutil.which(f"{arch}-linux-gnu-gcc")
            if not cc:
                raise BuildError(
                    f"cannot link a .so for a {arch} host on this {build_machine_arch()} machine: "
                    f"no cross-linker found ({arch}-linux-gnu-gcc or {env.CROSS_CC.name}). "
                    f"Fix: export as .tar ({path.with_suffix('.tar').name}) and link on the "
                    "device, or install a cross toolchain")
            from tvm.contrib import cc as _cc

            kwargs["fcompile"] = _cc.cross_compiler(cc)
        self._module.export_library(str(path), **kwargs)
        return str(path)


def load(path: str | os.PathLike) -> CompiledModel:
    """Load an artifact written by ``CompiledModel.export_library``.

    Refuses (with :class:`ArtifactError`) a file that is not a tvm-cruise artifact, one from
    an incompatible format or TVM version, and one built for another CPU architecture.
    """
    import tvm

    path = Path(path)
    meta = read_metadata(path)
    check_compatible(meta, str(path))
    arch = host_arch(meta["target"]["host"])
    if arch != build_machine_arch():
        raise ArtifactError(
            f"{path} was built for a {arch} host and this machine is {build_machine_arch()}; "
            "copy it to the device and load it there (tvm_cruise.read_metadata reads its "
            "metadata anywhere)")
    try:
        module = tvm.runtime.load_module(str(path))
    except Exception as err:
        raise ArtifactError(f"{path}: TVM could not load the library: {err}") from None
    model = CompiledModel(module, meta, path=str(path))
    if not model.is_cuda:
        embedded = model.embedded_metadata()
        if embedded != meta:
            raise ArtifactError(f"{path}: the metadata found in the file does not match the one "
                                "the executable returns; the file is damaged or was edited")
    return model
