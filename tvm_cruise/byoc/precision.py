"""Mixed precision: per-layer precision overrides by name (``layer_precision=``).

``build(model, target, precision="int8", layer_precision={"conv1": "fp16", "fc": "fp32"})``
keeps the build's precision for every layer but the named ones:

- ``"fp32"``: the layer runs on the host in fp32 (placement rule ``precision-override``);
- ``"fp16"`` / ``"int8"``: the layer runs on the accelerator in that precision. Layers of
  one precision form their own accelerator functions (one NPU program each, with its own
  dtype); tensors crossing between programs of different precisions go through the host
  (cast, or quantize / dequantize with the int8 scales).

A key names operators the way the placement report does: the torch module path or ONNX
node name (``source``), the FX / ONNX node (``node``), or ``#N`` for the report's op id;
shell-style wildcards (``layer1.*``) match several. An override applies to the whole
layer the partitioner fuses an operator into (``conv1``'s bias add and ReLU follow it), so
a layer never mixes precisions. A key that matches nothing is an error (with the names
that come closest), so a typo never leaves a layer in the wrong precision.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Mapping

import tvm
from tvm import relax

from ..errors import BuildError

LAYER_PRECISIONS = ("fp32", "fp16", "int8")
HOST_PRECISION = "fp32"
PRECISION_ATTR = "tvm_cruise.precision"   # on an accelerator function of another precision
_SUFFIX = "__"                            # codegen "<key>__<precision>" while merging


@dataclass(frozen=True)
class Override:
    """Why an operator runs in a precision other than the build's."""

    precision: str
    key: str                  # the layer_precision key that named it
    via: str | None = None    # the named operator, when this one is fused into its layer

    def reason(self) -> str:
        named = f"layer_precision[{self.key!r}] = {self.precision!r}"
        fused = f" (fused into one layer with {self.via})" if self.via else ""
        where = "runs on the host in fp32" if self.precision == HOST_PRECISION else \
            f"runs on the accelerator in {self.precision}"
        return f"{named}: {where}{fused}"


def check_layer_precision(layer_precision: Mapping[str, str] | None) -> dict[str, str]:
    """The validated overrides (``{}`` for None)."""
    if layer_precision is None:
        return {}
    if not isinstance(layer_precision, Mapping):
        raise BuildError(f"layer_precision={type(layer_precision).__name__} is not a mapping; "
                         "fix: pass a dict {layer name: 'fp32' | 'fp16' | 'int8'}, e.g. "
                         "{'conv1': 'fp16'}")
    out = {}
    for key, value in layer_precision.items():
        if not isinstance(key, str) or not key:
            raise BuildError(f"layer_precision key {key!r} is not a layer name; fix: use the "
                             "names of the placement report (torch module path, ONNX node "
                             "name, FX node, or '#N' for op id N)")
        if value not in LAYER_PRECISIONS:
            raise BuildError(f"layer_precision[{key!r}] = {value!r} is not a precision; use "
                             f"one of {', '.join(LAYER_PRECISIONS)}")
        out[key] = value
    return out


def _matches(key: str, op_id: int, source: str, node: str) -> bool:
    if key.startswith("#"):
        return key[1:].isdigit() and int(key[1:]) == op_id
    return any(name and fnmatch.fnmatchcase(name, key) for name in (source, node))


def resolve(ops: list[tuple[int, str, str]], layer_precision: Mapping[str, str],
            accelerator: str) -> dict[int, Override]:
    """``{op id: Override}`` for the operators ``(id, source, node)`` the keys name.

    Raises ``BuildError`` for a key matching no operator, or an operator two keys give
    different precisions.
    """
    found: dict[int, Override] = {}
    for key, precision in layer_precision.items():
        hits = [i for i, source, node in ops if _matches(key, i, source, node)]
        if not hits:
            names = sorted({n for _, s, nd in ops for n in (s, nd) if n})
            close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
            hint = (f"; the closest names are {', '.join(repr(c) for c in close)}" if close
                    else f"; its operators are named e.g. {', '.join(map(repr, names[:6]))}")
            raise BuildError(f"layer_precision key {key!r} names no operator of the model"
                             f"{hint}; fix: use a name from the placement report (tvm-cruise "
                             f"analyze MODEL --target {accelerator}), or '#N' for op N")
        for i in hits:
            if i in found and found[i].precision != precision:
                raise BuildError(f"layer_precision: operator #{i} is named by "
                                 f"{found[i].key!r} ({found[i].precision}) and {key!r} "
                                 f"({precision}); fix: make the keys disjoint")
            found.setdefault(i, Override(precision, key))
    return found


def composites(fused) -> list[tuple[tvm.ir.GlobalVar, list[int]]]:
    """The composite functions of a ``FuseOpsByPattern`` result and their op ids."""
    from .patterns import composite_op_ids

    out = []
    for gv, func in fused.functions.items():
        if isinstance(func, relax.Function) and func.attrs is not None and \
                "Composite" in func.attrs:
            out.append((gv, composite_op_ids(func)))
    return out


def spread_to_layers(fused, overrides: dict[int, Override], names: dict[int, str]
                     ) -> dict[int, Override]:
    """``overrides`` extended to every operator fused into a layer with an overridden one.

    ``names`` gives each op id's report name (to say which operator pulled the others in).
    """
    out = dict(overrides)
    for _, ids in composites(fused):
        named = [i for i in ids if i in overrides]
        if not named:
            continue
        first = overrides[named[0]]
        clash = [i for i in named if overrides[i].precision != first.precision]
        if clash:
            raise BuildError(
                f"layer_precision: operators {named} are fused into one layer but named with "
                f"different precisions ({first.key!r}: {first.precision}, "
                f"{overrides[clash[0]].key!r}: {overrides[clash[0]].precision}); fix: give "
                "the whole layer one precision")
        for i in ids:
            if i not in out:
                out[i] = Override(first.precision, first.key, via=names.get(named[0]))
    return out


def mark_composites(fused, overrides: dict[int, Override], build_precision: str):
    """Composites of another (accelerator) precision get the codegen ``<key>__<precision>``,
    so ``MergeCompositeFunctions`` groups each precision into its own functions."""
    changed = {}
    for gv, ids in composites(fused):
        wanted = {overrides[i].precision for i in ids if i in overrides}
        if not wanted or wanted == {build_precision}:
            continue
        (precision,) = wanted  # spread_to_layers made layers uniform; fp32 ops never fuse
        func = fused[gv]
        key, name = str(func.attrs["Composite"]).split(".", 1)
        changed[gv] = func.with_attr("Composite", f"{key}{_SUFFIX}{precision}.{name}")
    if not changed:
        return fused
    return tvm.IRModule({gv: changed.get(gv, f) for gv, f in fused.functions.items()},
                        attrs=fused.attrs)


def restore_codegen(merged, key: str):
    """Accelerator functions merged under ``<key>__<precision>`` back to codegen ``key``,
    their precision in ``PRECISION_ATTR``."""
    prefix = key + _SUFFIX
    changed = {}
    for gv, func in merged.functions.items():
        if not (isinstance(func, relax.Function) and func.attrs is not None):
            continue
        codegen = str(func.attrs.get("Codegen", ""))
        if codegen.startswith(prefix):
            changed[gv] = func.with_attr("Codegen", key).with_attr(
                PRECISION_ATTR, codegen[len(prefix):])
    if not changed:
        return merged
    return tvm.IRModule({gv: changed.get(gv, f) for gv, f in merged.functions.items()},
                        attrs=merged.attrs)


def function_precision(func, default: str) -> str:
    """The precision an accelerator function computes in."""
    attrs = func.attrs if func.attrs is not None else {}
    return str(attrs[PRECISION_ATTR]) if PRECISION_ATTR in attrs else default


def pattern_name(composite: str) -> str:
    """A composite's pattern name without the precision marker (``cruise_npu.conv2d``)."""
    key, _, rest = composite.partition(".")
    return f"{key.split(_SUFFIX)[0]}.{rest}" if rest else composite
