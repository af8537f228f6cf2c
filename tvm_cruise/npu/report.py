"""Simulated NPU statistics of a compiled model (``art.npu_stats()``, CLI, demo).

Every figure here comes from the simulator's cycle model (docs/npu_isa.md) and is
labelled simulated; none is a wall-clock measurement.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NpuStats:
    accelerator: str
    clock_mhz: float
    programs: list[dict]
    totals: dict

    def to_dict(self) -> dict:
        return {"accelerator": self.accelerator, "simulated": True,
                "clock_mhz": self.clock_mhz, "programs": self.programs, "totals": self.totals}

    @property
    def time_us(self) -> float:
        return self.totals.get("cycles", 0) / self.clock_mhz

    def table(self, layers: bool = False) -> str:
        """Per-function (and optionally per-layer) simulated cycles, time, utilization."""
        head = (f"NPU statistics on {self.accelerator} at {self.clock_mhz:g} MHz "
                "(simulated by the cycle model, not measured)")
        rows = [("fn", "layers", "instr", "cycles", "time us", "util", "DMA KB", "SRAM KB")]
        for i, p in enumerate(self.programs):
            st = p["stats"]
            rows.append((f"f{i}", str(len(p["layers"])), str(p["instructions"]),
                         str(st["cycles"]), f"{st['time_us']:.1f}", f"{st['utilization']:.1%}",
                         f"{(st['dma_bytes_loaded'] + st['dma_bytes_stored']) / 1e3:.0f}",
                         f"{st['sram_high_water'] / 1024:.0f}"))
        t = self.totals
        rows.append(("total", "", "", str(t.get("cycles", 0)), f"{self.time_us:.1f}",
                     f"{t.get('utilization', 0):.1%}", f"{t.get('dma_bytes', 0) / 1e3:.0f}",
                     f"{t.get('sram_high_water', 0) / 1024:.0f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [head] + ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        if layers:
            lines.append("  per layer (MAC layers):")
            for i, p in enumerate(self.programs):
                for j, layer in enumerate(p["layers"]):
                    if layer["macs"]:
                        lines.append(f"    f{i}.{j:<3} {layer['kind']:<16} "
                                     f"{layer['macs'] / 1e6:8.1f} "
                                     f"M MACs {layer['cycles']:>9} cycles  "
                                     f"{layer['utilization']:.1%}")
        return "\n".join(lines)


def from_metadata(meta: dict) -> NpuStats | None:
    acc = meta.get("accelerator") or {}
    if not acc.get("programs"):
        return None
    stats = acc["programs"][0]["stats"]
    clock = stats.get("clock_mhz")
    if clock is None:  # artifacts before the clock was recorded: from the rounded time
        clock = round(stats["cycles"] / stats["time_us"], 3) if stats["time_us"] else 1.0
    return NpuStats(acc["accelerator"], float(clock), acc["programs"], acc.get("totals", {}))
