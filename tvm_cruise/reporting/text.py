"""The report as terminal tables (drawn from the JSON document only)."""

from __future__ import annotations

import math

from .._format import si as _si
from .._format import size as _bytes
from .timing import NO_SOURCE


def _table(rows: list[tuple], right: set[int] = frozenset(), indent: str = "  ") -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _num(x, fmt: str = ".2e") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, fmt)


def _label(names: list[str]) -> str:
    if not names:
        return NO_SOURCE
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"


def render(doc: dict, layers: int = 8) -> str:
    t = doc["target"]
    lines = [f"tvm-cruise report: {doc['model']['name']} on {t['name']}"
             + (f" ({t['precision']} on {t['accelerator']}, fp32 on the host)"
                if t["accelerator"] else " (host only)"),
             f"verdict: {doc['verdict']['line']}", ""]
    lines += _deployability(doc) + [""] + _performance(doc) + [""] + _accuracy(doc, layers)
    return "\n".join(lines)


def _deployability(doc: dict) -> list[str]:
    dep = doc["deployability"]
    s = dep["summary"]
    lines = ["== Deployability"]
    if dep["accelerator"] is None:
        return lines + [f"  {dep['note']}"]
    acc = dep["accelerator"]
    total_ops = sum(s["ops"].values())
    total_macs = sum(s["macs"].values())
    lines += _table([("device", "ops", "MACs", "share of MACs"),
                     (acc, s["ops"][acc], _si(s["macs"][acc]), f"{s['mac_share']:.1%}"),
                     ("host", s["ops"]["host"], _si(s["macs"]["host"]),
                      f"{1 - s['mac_share']:.1%}" if total_macs else "-"),
                     ("total", total_ops, _si(total_macs), "")], right={1, 2, 3})
    b = s["boundary"]
    lines.append(f"  boundary: {b['tensors']} tensors cross between host and {acc} "
                 f"({b['to_accelerator']} in, {b['to_host']} out), {_bytes(b['bytes'])} "
                 f"per run in {doc['target']['precision']}")
    if dep["functions"]:
        lines.append(f"  {acc} functions: " + "; ".join(
            f"{f['function']} {f['ops']} ops ({f['layers']})" for f in dep["functions"]))
    if dep["host_ops"]:
        lines.append(f"  host ops ({len(dep['host_ops'])}), each with its reason:")
        rows = [("#", "operator", "relax op", "MACs", "reason")]
        rows += [(o["id"], o["name"], o["op"].replace("relax.", ""),
                  _si(o["macs"]) if o["macs"] else "", "; ".join(o["reasons"]))
                 for o in dep["host_ops"]]
        lines += _table(rows, right={0, 3}, indent="    ")
    else:
        lines.append("  host ops: none")
    return lines


def _performance(doc: dict) -> list[str]:
    perf = doc["performance"]
    lines = ["== Performance"]
    npu = perf["npu"]
    if npu:
        lines.append(f"  NPU functions on {npu['accelerator']} at {npu['clock_mhz']:g} MHz "
                     "(SIMULATED by the cycle model, not measured):")
        rows = [("fn", "calls", "layers", "cycles", "time ms", "util", "DMA KB", "SRAM KB",
                 "ops")]
        for f in npu["functions"]:
            rows.append((f["function"], f["calls"], f["npu_layers"], f["cycles"],
                         f"{f['time_ms_per_run']:.3f}", f"{f['utilization']:.1%}",
                         f"{f['dma_bytes'] / 1e3:.0f}", f"{f['sram_high_water'] / 1024:.0f}",
                         f["layers"]))
        tot = npu["total"]
        rows.append(("total", "", "", tot["cycles"], f"{tot['time_ms_per_run']:.3f}",
                     f"{tot['utilization']:.1%}", f"{tot['dma_bytes'] / 1e3:.0f}",
                     f"{tot['sram_high_water'] / 1024:.0f}", ""))
        lines += _table(rows, right=set(range(1, 8)), indent="    ")
    host = perf["host"]
    sched = host["schedules"]
    lines.append(f"  host kernels (MEASURED on this machine, median of {host['runs']} runs "
                 f"via vm.set_instrument): {len(host['kernels'])} calls, "
                 f"{host['total_ms']:.3f} ms; schedules: {sched['tuned']} tuned, "
                 f"{sched['default']} default, {sched['unscheduled']} unscheduled")
    rows = [("#", "kernel", "schedule", "median ms", "source ops")]
    rows += [(k["position"], k["symbol"], k["schedule"], f"{k['median_ms']:.3f}",
              _label(k["names"])) for k in host["kernels"]]
    if len(rows) > 1:
        lines += _table(rows, right={0, 3}, indent="    ")
    est = perf["estimate"]
    lines.append(f"  end-to-end estimate: {est['total_ms']:.3f} ms = host kernels "
                 f"{est['host_measured_ms']:.3f} ms (measured) + NPU "
                 f"{est['npu_simulated_ms']:.3f} ms (simulated); {est['basis']}, not one "
                 "measurement")
    wall = perf["wall"]
    lines.append(f"  measured wall time of whole runs here: median {wall['median_ms']:.2f} ms "
                 f"({wall['note']})")
    if npu:
        lines.append(f"  (the NPU simulator took {npu['simulator_wall_ms']:.1f} ms of this "
                     "CPU per run; VM builtins "
                     f"{host['builtins_ms']:.3f} ms measured; neither is in the estimate)")
    lines.append("  top hotspots:")
    rows = [("", "what", "basis", "time ms", "share", "layers")]
    rows += [(h["rank"], h["name"], h["basis"], f"{h['time_ms']:.3f}", f"{h['share']:.1%}",
              h["layers"]) for h in perf["hotspots"]]
    lines += _table(rows, right={0, 3, 4}, indent="    ")
    return lines


def _accuracy(doc: dict, layers: int) -> list[str]:
    acc = doc["accuracy"]
    lines = [f"== Accuracy vs {acc['reference']} on {acc['inputs']}"]
    rows = [("output", "shape", "max abs", "max rel", "cosine", "SQNR dB", "top-1", "top-5")]
    for o in acc["outputs"]:
        rows.append((o["name"], "x".join(map(str, o["shape"])), _num(o["max_abs"]),
                     _num(o["max_rel"]), _num(o["cosine"], ".6f"), _num(o["sqnr_db"], ".1f"),
                     _num(o["top1_agreement"], ".0%"), _num(o["top5_agreement"], ".0%")))
    lines += _table(rows, right=set(range(2, 8)))
    if acc.get("note"):
        lines.append(f"  note: {acc['note']}")
    lw = acc["layerwise"]
    if lw is None:
        lines.append("  layer-wise: nothing runs on an accelerator")
        return lines
    lines.append("  layer-wise: each NPU function on the model's real activations vs TVM's "
                 "fp32 host build of it:")
    rows = [("fn", "error", "fp16 floor", "bound", "verdict", "layers")]
    for f in lw["functions"]:
        rows.append((f["function"], _num(f["error"]), _num(f["fp16_floor"]),
                     _num(f["bound"], ".1e"),
                     "ok" if f["ok"] and not _bad_layers(f) else "BEYOND BOUND", f["layers"]))
    lines += _table(rows, right={1, 2, 3}, indent="    ")
    for f in lw["functions"]:
        bad = _bad_layers(f)
        if bad:
            lines.append(f"    {f['function']}: {len(bad)} of {len(f['layer_checks'])} layers "
                         "beyond bound (errors carry through later layers); first ones:")
            rows = [("layer", "kind", "error", "bound", "source")]
            rows += [(c["layer"], c["kind"], _num(c["error"]), _num(c["bound"], ".1e"),
                      ", ".join(c["names"][:3])) for c in bad[:layers]]
            lines += _table(rows, right={0, 2, 3}, indent="      ")
        if not f["runtime_matches_simulator"]:
            lines.append(f"    note: {f['function']}: the registered runtime's outputs differ "
                         "from the simulator's for the same program and inputs")
    bad = lw["first_bad"]
    if bad is None:
        worst = lw["worst"]
        lines.append("  first error jump: none, every NPU function and layer is within its "
                     f"bound (largest error: {worst['function']} {_num(worst['error'])})")
    else:
        where = f"{bad['function']} ({bad['function_layers']})"
        if bad["layer"] is not None:
            where += f", layer {bad['layer']} {bad['kind']} [{', '.join(bad['names'])}]"
        lines.append(f"  first error jump: {where}: error {_num(bad['error'])} > bound "
                     f"{_num(bad['bound'], '.1e')}")
    if lw["functions_checked"] != lw["functions_offloaded"]:
        lines.append(f"  note: {lw['functions_checked']} of {lw['functions_offloaded']} NPU "
                     "functions were called in this run")
    return lines


def _bad_layers(f: dict) -> list[dict]:
    return [c for c in f["layer_checks"] if not c["ok"]]
