"""The placement report: every operator, where it runs, and why.

Available as ``art.placement`` (also after ``tvm_cruise.load``), from
``tvm_cruise.byoc.analyze(model, target)`` without building, and printed by the CLI.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .._format import si as _si
from .._format import size as _bytes

HOST = "host"


@dataclass
class OpPlacement:
    id: int
    source: str          # what the user calls it: torch module path or ONNX node name
    node: str            # torch FX node / ONNX node the op came from
    op: str              # Relax operator
    device: str          # the accelerator's name or "host"
    function: int | None = None   # index of the accelerator function holding it
    pattern: str | None = None    # composite pattern that offloaded it
    macs: int = 0
    rules: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    precision: str | None = None  # accelerator ops in another precision than the build's

    @property
    def name(self) -> str:
        return self.source or self.node or f"op{self.id}"


@dataclass
class PlacementReport:
    model: str
    accelerator: str
    precision: str
    ops: list[OpPlacement]
    functions: int
    boundary: dict
    execution: str = ""

    # -- summaries --------------------------------------------------------------------
    def on(self, device: str) -> list[OpPlacement]:
        return [o for o in self.ops if o.device == device]

    @property
    def host_ops(self) -> list[OpPlacement]:
        return self.on(HOST)

    @property
    def accelerator_ops(self) -> list[OpPlacement]:
        return self.on(self.accelerator)

    @property
    def total_macs(self) -> int:
        return sum(o.macs for o in self.ops)

    @property
    def mac_share(self) -> float:
        """Share of MACs on the accelerator (1.0 when the model has no MACs at all)."""
        total = self.total_macs
        return sum(o.macs for o in self.accelerator_ops) / total if total else 1.0

    @property
    def op_share(self) -> float:
        return len(self.accelerator_ops) / len(self.ops) if self.ops else 1.0

    def summary(self) -> dict:
        acc = self.accelerator_ops
        return {
            "ops": {self.accelerator: len(acc), HOST: len(self.host_ops)},
            "op_share": round(self.op_share, 6),
            "macs": {self.accelerator: sum(o.macs for o in acc),
                     HOST: sum(o.macs for o in self.host_ops)},
            "mac_share": round(self.mac_share, 6),
            "functions": self.functions,
            "boundary": self.boundary,
        }

    # -- serialization ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"model": self.model, "accelerator": self.accelerator,
                "precision": self.precision, "execution": self.execution,
                "functions": self.functions, "boundary": self.boundary,
                "summary": self.summary(), "ops": [asdict(o) for o in self.ops]}

    @classmethod
    def from_dict(cls, data: dict) -> "PlacementReport":
        return cls(model=data["model"], accelerator=data["accelerator"],
                   precision=data["precision"], functions=data["functions"],
                   boundary=data["boundary"], execution=data.get("execution", ""),
                   ops=[OpPlacement(**o) for o in data["ops"]])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # -- text -------------------------------------------------------------------------
    def fallback_lines(self) -> list[str]:
        """One line per host op: name, op, and every reason."""
        return [f"{o.name} ({o.op}): {'; '.join(o.reasons)}" for o in self.host_ops]

    def table(self, max_rows: int | None = None) -> str:
        """The report for a terminal: one row per op, then the summary."""
        rows = [("#", "operator", "relax op", "device", "fn", "MACs", "reason")]
        for o in self.ops[:max_rows] if max_rows else self.ops:
            device = f"{o.device} ({o.precision})" if o.precision else o.device
            rows.append((str(o.id), o.name, o.op.replace("relax.", ""), device,
                         "" if o.function is None else f"f{o.function}",
                         _si(o.macs) if o.macs else "", "; ".join(o.reasons)))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = [f"placement of {self.model} on {self.accelerator} ({self.precision} on the "
                 f"accelerator, fp32 on the host)"]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) +
                         ("  " + r[6] if r[6] else ""))
        if max_rows and len(self.ops) > max_rows:
            lines.append(f"  ... {len(self.ops) - max_rows} more ops")
        s = self.summary()
        acc, host = s["ops"][self.accelerator], s["ops"][HOST]
        b = self.boundary
        lines.append(
            f"summary: {acc}/{len(self.ops)} ops ({self.op_share:.0%}) and "
            f"{_si(s['macs'][self.accelerator])}/{_si(self.total_macs)} MACs "
            f"({self.mac_share:.1%}) on {self.accelerator} in {self.functions} "
            f"function{'s' if self.functions != 1 else ''}; {host} ops on the host; "
            f"{b['tensors']} tensors cross the boundary ({_bytes(b['bytes'])}: "
            f"{b['to_accelerator']} in, {b['to_host']} out)")
        if self.execution:
            lines.append(f"note: {self.execution}")
        return "\n".join(lines)


