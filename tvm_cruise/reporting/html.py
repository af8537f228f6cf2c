"""The report as one self-contained HTML page: inline CSS and SVG, no script, no URL.

Drawn from the JSON document only. Figures keep their basis everywhere: NPU times carry a
"simulated" badge, host times a "measured" one.
"""

from __future__ import annotations

import math
from html import escape

from .graph import HOST_COLORS, NPU_COLORS, to_svg
from .text import _si
from .timing import NO_SOURCE

CSS = """
:root { --npu: %(npu)s; --npu-bg: %(npu_bg)s; --host: %(host)s; --host-bg: %(host_bg)s;
  --bad: #d62839; --ink: #1d2430; --mute: #5d6775; --line: #dde2e8; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: #f6f7f9; }
header { padding: 20px 28px 8px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 2px; font-size: 22px; } h1 span { color: var(--mute); font-weight: 400; }
h2 { font-size: 17px; margin: 0 0 10px; } h3 { font-size: 14px; margin: 14px 0 6px; }
.meta { color: var(--mute); font-size: 12.5px; }
.verdict { margin: 12px 0 10px; padding: 10px 14px; border-radius: 8px; font-weight: 600;
  border-left: 6px solid var(--npu); background: var(--npu-bg); }
.verdict.deploys-with-fallback { border-color: var(--host); background: var(--host-bg); }
.verdict.host-only { border-color: #7a8594; background: #eceff3; }
.verdict.accuracy-risk { border-color: var(--bad); background: #fbe3e5; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px;
  min-width: 190px; }
.card b { display: block; font-size: 20px; } .card small { color: var(--mute); }
main { display: grid; grid-template-columns: min-content minmax(520px, 1fr);
  gap: 20px; padding: 18px 28px; align-items: start; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 14px 18px; margin-bottom: 18px; overflow-x: auto; }
.graph-panel { position: sticky; top: 10px; max-height: calc(100vh - 20px); overflow: auto; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12.5px; }
.legend i { display: inline-block; width: 14px; height: 10px; border-radius: 2px;
  margin-right: 5px; vertical-align: middle; }
svg.graph text { font-size: 10.5px; text-anchor: middle; fill: var(--ink); }
svg.graph .t1 { font-weight: 600; } svg.graph .t2 { fill: var(--mute); font-size: 9.5px; }
svg.graph .flag { fill: var(--bad); font-weight: 700; text-anchor: start; }
svg.graph .edge { fill: none; stroke: #9aa3b0; stroke-width: 1.2; }
svg.graph .edge.boundary { stroke: #6b4fbb; stroke-width: 1.8; stroke-dasharray: 5 3; }
table { border-collapse: collapse; width: 100%%; font-size: 12.5px; margin: 4px 0 8px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--mute); font-weight: 600; background: #fafbfc; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.bad td { background: #fbe3e5; }
.badge { display: inline-block; font-size: 11px; font-weight: 600; padding: 0 7px;
  border-radius: 9px; vertical-align: 1px; margin-left: 6px; }
.badge.sim { color: var(--npu); border: 1px solid var(--npu); }
.badge.meas { color: var(--host); border: 1px solid var(--host); }
.note { color: var(--mute); font-size: 12.5px; margin: 4px 0; }
.bar { height: 10px; border-radius: 3px; display: inline-block; vertical-align: middle; }
.stack { display: flex; height: 22px; border-radius: 5px; overflow: hidden; margin: 6px 0;
  font-size: 11.5px; color: #fff; font-weight: 600; }
.stack div { padding: 2px 8px; white-space: nowrap; overflow: hidden; }
details summary { cursor: pointer; color: var(--mute); font-size: 12.5px; }
footer { padding: 0 28px 24px; color: var(--mute); font-size: 12px; }
@media (max-width: 1100px) { main { grid-template-columns: 1fr; }
  .graph-panel { position: static; max-height: none; } }
""" % {"npu": NPU_COLORS[1], "npu_bg": NPU_COLORS[0], "host": HOST_COLORS[1],
       "host_bg": HOST_COLORS[0]}

SIM = '<span class="badge sim">simulated</span>'
MEAS = '<span class="badge meas">measured</span>'


def _e(x) -> str:
    return escape(str(x))


def _num(x, fmt: str = ".2e") -> str:
    if x is None:
        return "&ndash;"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "&minus;inf"
    return format(x, fmt)


def _table(head: list[str], rows: list[list], numeric: set[int] = frozenset(),
           bad: set[int] = frozenset()) -> str:
    """Cells are trusted HTML (callers escape text); ``bad``: row indices to highlight."""
    out = ["<table><thead><tr>"]
    out += [f'<th class="n">{h}</th>' if i in numeric else f"<th>{h}</th>"
            for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for k, row in enumerate(rows):
        out.append('<tr class="bad">' if k in bad else "<tr>")
        out += [f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                for i, c in enumerate(row)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render(doc: dict) -> str:
    model, target = doc["model"], doc["target"]
    title = f"tvm-cruise report: {model['name']} on {target['name']}"
    body = [_header(doc), "<main>", _graph(doc), "<div>", _deployability(doc),
            _performance(doc), _accuracy(doc), "</div></main>", _footer(doc)]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


# -- header ---------------------------------------------------------------------------------
def _header(doc: dict) -> str:
    t, dep, acc = doc["target"], doc["deployability"], doc["accuracy"]
    est = doc["performance"]["estimate"]
    host = t["host"] or {}
    host_text = ", ".join(f"{k} {v}" for k, v in host.items()) if isinstance(host, dict) \
        else str(host)
    where = (f"{t['precision']} on {t['accelerator']}, fp32 on the host" if t["accelerator"]
             else "host only")
    meta = (f"{_e(where)} &middot; host: {_e(host_text)} &middot; tvm-cruise "
            f"{_e(doc['tool']['tvm_cruise'])}, TVM {_e(doc['tool']['tvm'])} &middot; inputs: "
            f"{_e(doc['inputs']['description'])}")
    s = dep["summary"]
    accel = dep["accelerator"]
    ops_total = sum(s["ops"].values())
    cards = [(f"{s['mac_share']:.1%}", f"of MACs on {accel or 'an accelerator'} "
              f"({s['ops'].get(accel, 0) if accel else 0}/{ops_total} ops)")]
    cards.append((f"{est['total_ms']:.2f} ms",
                  f"estimate: host {est['host_measured_ms']:.2f} ms measured + NPU "
                  f"{est['npu_simulated_ms']:.2f} ms simulated"))
    top1 = [o["top1_agreement"] for o in acc["outputs"] if o["top1_agreement"] is not None]
    cards.append((_num(acc["max_rel"]), f"max rel error vs {acc['reference_kind']}"
                  + (f", top-1 {min(top1):.0%}" if top1 else "")))
    bad = acc["layerwise"]["first_bad"] if acc["layerwise"] else None
    if acc["layerwise"] is not None:
        cards.append(("none" if bad is None else f"{bad['function']}"
                       + (f" layer {bad['layer']}" if bad["layer"] is not None else ""),
                       "first error jump (layer-wise)" if bad is None else
                       "first error jump: " + ", ".join(bad["names"][:2])))
    card_html = "".join(f"<div class='card'><b>{_e(v)}</b><small>{_e(k)}</small></div>"
                        for v, k in cards)
    return (f"<header><h1>{_e(doc['model']['name'])} <span>on {_e(t['name'])}</span></h1>"
            f"<div class='meta'>{meta}</div>"
            f"<div class='verdict {_e(doc['verdict']['status'])}'>"
            f"{_e(doc['verdict']['line'])}</div><div class='cards'>{card_html}</div></header>")


# -- graph ------------------------------------------------------------------------------------
def _graph(doc: dict) -> str:
    dep, acc = doc["deployability"], doc["accuracy"]
    reasons = {o["id"]: o["reasons"] for o in dep["host_ops"]}
    bad = acc["layerwise"]["first_bad"] if acc["layerwise"] else None
    flagged = set(bad["ops"]) if bad else set()
    accel = dep["accelerator"] or "accelerator"
    legend = (f"<div class='legend'><span><i style='background:{NPU_COLORS[0]};border:1px "
              f"solid {NPU_COLORS[1]}'></i>{_e(accel)}</span><span><i style='background:"
              f"{HOST_COLORS[0]};border:1px solid {HOST_COLORS[1]}'></i>host</span><span>"
              "<i style='background:none;border-top:2px dashed #6b4fbb;height:0'></i>"
              "host/accelerator boundary</span></div>")
    n_ops = sum(1 for n in doc["graph"]["nodes"] if isinstance(n["id"], int))
    return (f"<section class='graph-panel'><h2>Graph</h2>{legend}<p class='note'>{n_ops} ops "
            "in data-flow order; chains on one device are drawn as one node, a new node at "
            "each conv / matmul. Hover a node for its ops and reasons.</p>"
            f"{to_svg(doc['graph'], reasons, flagged)}</section>")


# -- sections ----------------------------------------------------------------------------------
def _deployability(doc: dict) -> str:
    dep = doc["deployability"]
    out = ["<section><h2>Deployability</h2>"]
    accel = dep["accelerator"]
    if accel is None:
        out.append(f"<p>{_e(dep['note'])}</p></section>")
        return "".join(out)
    s = dep["summary"]
    total_macs = sum(s["macs"].values())
    rows = [[_e(accel), s["ops"][accel], _si(s["macs"][accel]), f"{s['mac_share']:.1%}"],
            ["host", s["ops"]["host"], _si(s["macs"]["host"]),
             f"{1 - s['mac_share']:.1%}" if total_macs else "&ndash;"]]
    out.append(_table(["device", "ops", "MACs", "share of MACs"], rows, numeric={1, 2, 3}))
    b = s["boundary"]
    out.append(f"<p class='note'>{b['tensors']} tensors cross the host/{_e(accel)} boundary "
               f"({b['to_accelerator']} in, {b['to_host']} out): {b['bytes']:,} bytes per run "
               f"in {_e(doc['target']['precision'])}. {_e(dep.get('note') or '')}</p>")
    if dep["functions"]:
        rows = [[_e(f["function"]), f["ops"], _si(f["macs"]), _e(f["layers"])]
                for f in dep["functions"]]
        out.append(f"<h3>{_e(accel)} functions</h3>"
                   + _table(["fn", "ops", "MACs", "layers"], rows, numeric={1, 2}))
    out.append(f"<h3>Host ops ({len(dep['host_ops'])}), each with its reason</h3>")
    if dep["host_ops"]:
        rows = [[o["id"], _e(o["name"]), _e(o["op"].replace("relax.", "")),
                 _si(o["macs"]) if o["macs"] else "", "<br>".join(map(_e, o["reasons"]))]
                for o in dep["host_ops"]]
        out.append(_table(["#", "operator", "relax op", "MACs", "reason"], rows,
                          numeric={0, 3}))
    else:
        out.append("<p class='note'>none: every op runs on the accelerator</p>")
    out.append("</section>")
    return "".join(out)


def _performance(doc: dict) -> str:
    perf = doc["performance"]
    est, npu, host = perf["estimate"], perf["npu"], perf["host"]
    out = ["<section><h2>Performance</h2>"]
    total = est["total_ms"] or 1.0
    host_pct = 100 * est["host_measured_ms"] / total
    out.append(f"<h3>End-to-end estimate: {est['total_ms']:.3f} ms "
               f"<span class='note'>({_e(est['basis'])})</span></h3>"
               f"<div class='stack'><div style='width:{100 - host_pct:.1f}%;background:"
               f"{NPU_COLORS[1]}'>NPU {est['npu_simulated_ms']:.2f} ms simulated</div>"
               f"<div style='width:{host_pct:.1f}%;background:{HOST_COLORS[1]}'>host "
               f"{est['host_measured_ms']:.2f} ms measured</div></div>"
               f"<p class='note'>{_e(est['note'])}.</p>")
    if npu:
        rows = [[_e(f["function"]), f["calls"], f["npu_layers"], f"{f['cycles']:,}",
                 f"{f['time_ms_per_run']:.3f}", f"{f['utilization']:.1%}",
                 f"{f['dma_bytes'] / 1e3:,.0f}", f"{f['sram_high_water'] / 1024:,.0f}",
                 _e(f["layers"])] for f in npu["functions"]]
        t = npu["total"]
        rows.append(["<b>total</b>", "", "", f"{t['cycles']:,}", f"{t['time_ms_per_run']:.3f}",
                     f"{t['utilization']:.1%}", f"{t['dma_bytes'] / 1e3:,.0f}",
                     f"{t['sram_high_water'] / 1024:,.0f}", ""])
        out.append(f"<h3>NPU functions on {_e(npu['accelerator'])} at {npu['clock_mhz']:g} MHz"
                   f"{SIM}</h3>" + _table(
                       ["fn", "calls", "layers", "cycles", "time ms", "util", "DMA kB",
                        "SRAM KiB", "source layers"], rows, numeric=set(range(1, 8))))
    sched = host["schedules"]
    rows = [[k["position"], _e(k["symbol"]), _e(k["schedule"]), f"{k['median_ms']:.3f}",
             f"{k['min_ms']:.3f}", _e(_label(k["names"]))] for k in host["kernels"]]
    out.append(f"<h3>Host kernels{MEAS}</h3><p class='note'>{len(rows)} calls, "
               f"{host['total_ms']:.3f} ms; {sched['tuned']} tuned, {sched['default']} default "
               f"schedule, {sched['unscheduled']} unscheduled. {_e(host['method'])}.</p>"
               + _table(["#", "kernel", "schedule", "median ms", "min ms", "source ops"], rows,
                        numeric={0, 3, 4}))
    wall = perf["wall"]
    extra = (f" The NPU simulator took {npu['simulator_wall_ms']:.1f} ms of this CPU per run."
             if npu else "")
    out.append(f"<p class='note'>Measured wall time of whole runs: median "
               f"{wall['median_ms']:.2f} ms over {wall['runs']} runs ({_e(wall['note'])}).{extra}"
               f" VM builtins: {host['builtins_ms']:.3f} ms measured. Neither is in the "
               "estimate.</p>")
    top = max((h["time_ms"] for h in perf["hotspots"]), default=1.0) or 1.0
    rows = []
    for h in perf["hotspots"]:
        color = NPU_COLORS[1] if h["basis"] == "simulated" else HOST_COLORS[1]
        bar = (f"<span class='bar' style='width:{120 * h['time_ms'] / top:.0f}px;"
               f"background:{color}'></span>")
        rows.append([h["rank"], _e(h["name"]), SIM if h["basis"] == "simulated" else MEAS,
                     f"{h['time_ms']:.3f}", f"{h['share']:.1%}", bar, _e(h["layers"])])
    out.append("<h3>Top hotspots</h3>" + _table(
        ["", "what", "basis", "ms", "share", "", "source layers"], rows, numeric={0, 3, 4}))
    out.append("</section>")
    return "".join(out)


def _accuracy(doc: dict) -> str:
    acc = doc["accuracy"]
    out = [f"<section><h2>Accuracy</h2><p class='note'>Outputs vs {_e(acc['reference'])} on "
           f"{_e(acc['inputs'])}. max rel = max|out &minus; ref| / max|ref|.</p>"]
    rows = [[_e(o["name"]), "&times;".join(map(str, o["shape"])), _num(o["max_abs"]),
             _num(o["max_rel"]), _num(o["cosine"], ".6f"), _num(o["sqnr_db"], ".1f"),
             _num(o["top1_agreement"], ".0%"), _num(o["top5_agreement"], ".0%")]
            for o in acc["outputs"]]
    bad = {i for i, o in enumerate(acc["outputs"])
           if o["max_rel"] is None or o["max_rel"] > acc["bound"]}
    out.append(_table(["output", "shape", "max abs", "max rel", "cosine", "SQNR dB", "top-1",
                       "top-5"], rows, numeric=set(range(2, 8)), bad=bad))
    if acc.get("note"):
        out.append(f"<p class='note'>{_e(acc['note'])}</p>")
    lw = acc["layerwise"]
    if lw is None:
        out.append("<p class='note'>Layer-wise: nothing runs on an accelerator.</p></section>")
        return "".join(out)
    out.append(f"<h3>Layer-wise{SIM}</h3><p class='note'>{_e(lw['method'])}.</p>")
    first = lw["first_bad"]
    if first is None:
        out.append("<p><b>First error jump: none.</b> Every NPU function and layer is within "
                   "its bound.</p>")
    else:
        where = f"{first['function']} ({first['function_layers']})"
        if first["layer"] is not None:
            where += f", layer {first['layer']} {first['kind']}: {', '.join(first['names'])}"
        out.append(f"<p style='color:var(--bad)'><b>First error jump: {_e(where)}</b>, error "
                   f"{_num(first['error'])} &gt; bound {_num(first['bound'], '.1e')}.</p>")
    rows, bad = [], set()
    for k, f in enumerate(lw["functions"]):
        flagged = not f["ok"] or any(not c["ok"] for c in f["layer_checks"])
        bad |= {k} if flagged else set()
        rows.append([_e(f["function"]), _num(f["error"]), _num(f["fp16_floor"]),
                     _num(f["bound"], ".1e"), "BEYOND BOUND" if flagged else "ok",
                     _e(f["layers"])])
    out.append(_table(["fn", "error", "fp16 floor", "bound", "verdict", "source layers"], rows,
                      numeric={1, 2, 3}, bad=bad))
    for f in lw["functions"]:
        out.append(_layer_details(f))
    out.append("</section>")
    return "".join(out)


def _layer_details(f: dict) -> str:
    checks = f["layer_checks"]
    if not checks:
        return ""
    flagged = any(not c["ok"] for c in checks)
    rows = [[c["layer"], _e(c["kind"]), _num(c["error"]), _num(c["bound"], ".1e"),
             _e(", ".join(c["names"]))] for c in checks]
    bad = {i for i, c in enumerate(checks) if not c["ok"]}
    return (f"<details{' open' if flagged else ''}><summary>{_e(f['function'])}: "
            f"{len(checks)} layers{', ' + str(len(bad)) + ' beyond bound' if bad else ''}"
            f"</summary>{_sparkline(checks)}"
            + _table(["layer", "kind", "error", "bound", "source ops"], rows,
                     numeric={0, 2, 3}, bad=bad) + "</details>")


def _sparkline(checks: list[dict]) -> str:
    """Per-layer error on a log scale (1e-6 .. 10), the bound dashed: where it jumps."""
    width, height = max(120, 9 * len(checks)), 60

    def y(v) -> float:
        v = 10.0 if v is None else min(max(v, 1e-6), 10.0)
        return height - 4 - (math.log10(v) + 6) / 7 * (height - 8)

    bars = []
    for i, c in enumerate(checks):
        top = y(c["error"])
        color = "#d62839" if not c["ok"] else NPU_COLORS[1]
        bars.append(f'<rect x="{i * 9 + 1}" y="{top:.1f}" width="7" '
                    f'height="{height - 4 - top:.1f}" fill="{color}"><title>layer '
                    f'{c["layer"]} {_e(c["kind"])}: {_num(c["error"])}</title></rect>')
    bound = y(min(c["bound"] for c in checks))
    return (f'<svg class="spark" width="{width}" height="{height}" role="img" '
            f'aria-label="layer errors">{"".join(bars)}<line x1="0" x2="{width}" '
            f'y1="{bound:.1f}" y2="{bound:.1f}" stroke="#d62839" stroke-dasharray="4 3"/></svg>')


def _label(names: list[str]) -> str:
    if not names:
        return NO_SOURCE
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"


def _footer(doc: dict) -> str:
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in doc.get("timings_s", {}).items())
    return ("<footer>Simulated figures come from the NPU simulator's cycle model "
            "(docs/npu_isa.md) at the spec clock; measured figures were timed on the machine "
            "that made this report; the estimate adds the two and is labelled so. Schema "
            f"{_e(doc['schema'])} (docs/report.md). Report steps: {_e(timings)}.</footer>")
