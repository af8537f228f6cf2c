"""The model's operator graph for the report: data flow, grouping into layers, layout, SVG.

``extract`` reads the graph off the prepared Relax module (tagged exactly as the
partitioner tags it, so node ids are the placement report's op ids). Everything after
that works on the report's JSON (``graph`` section), so a saved report renders again.

Grouping keeps a large model readable: a chain of ops (one producer, one consumer each) on
the same device and NPU function becomes one node, and a new node starts at every op with
MACs (a conv or matmul opens a layer). ResNet-18 draws as ~30 nodes instead of 70 ops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from .._format import si as _si

HOST = "host"
MAX_LAYER_GROUPS = 90  # beyond this, chains merge across MAC ops too (one node per chain)

# (fill, stroke) per device class
NPU_COLORS = ("#d5f0ea", "#1f8a78")
HOST_COLORS = ("#fde3c8", "#d1711b")
IO_COLORS = ("#eceff3", "#7a8594")


# -- extraction (TVM) ------------------------------------------------------------------
def extract(prepared, placement=None) -> dict:
    """``{"nodes": [...], "edges": [[src, dst], ...]}`` of ``prepared``'s ``main``.

    Nodes are ops (id, name, op, device, function, macs) plus ``"input:<name>"`` and
    ``"output:<i>"`` ends; an edge means a tensor flows from one to the other.
    """
    from tvm import relax

    from ..byoc.ops import op_calls, op_id, op_source, tag_ops
    from ..byoc.rules import macs

    tagged = tag_ops(prepared)
    main = tagged["main"]
    where = {o.id: o for o in placement.ops} if placement is not None else {}
    nodes = [{"id": f"input:{p.name}", "name": p.name, "op": "input", "device": "io"}
             for p in main.params]
    for call in op_calls(main):
        idx = op_id(call)
        placed = where.get(idx)
        path, node = op_source(call)
        nodes.append({"id": idx, "name": placed.name if placed else (path or node or f"op{idx}"),
                      "op": call.op.name.replace("relax.", ""),
                      "device": placed.device if placed else HOST,
                      "function": placed.function if placed else None,
                      "macs": placed.macs if placed else int(macs(call))})
    producers: dict = {p: {f"input:{p.name}"} for p in main.params}
    edges: set = set()

    def sources(expr) -> set:
        if isinstance(expr, relax.Var):
            return producers.get(expr, set())
        if isinstance(expr, relax.Tuple):
            return set().union(*(sources(f) for f in expr.fields)) if expr.fields else set()
        if isinstance(expr, relax.TupleGetItem):
            return sources(expr.tuple_value)
        if isinstance(expr, relax.Call):
            return set().union(*(sources(a) for a in expr.args)) if expr.args else set()
        return set()

    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            idx = op_id(value) if isinstance(value, relax.Call) else None
            if idx is None:
                producers[binding.var] = sources(value)
                continue
            for src in sources(value):
                edges.add((src, idx))
            producers[binding.var] = {idx}
    outputs = main.body.body
    fields = outputs.fields if isinstance(outputs, relax.Tuple) else [outputs]
    for i, f in enumerate(fields):
        nodes.append({"id": f"output:{i}", "name": f"output {i}", "op": "output",
                      "device": "io"})
        for src in sources(f):
            edges.add((src, f"output:{i}"))
    order = {n["id"]: k for k, n in enumerate(nodes)}
    return {"nodes": nodes, "edges": sorted(([a, b] for a, b in edges),
                                            key=lambda e: (order[e[1]], order[e[0]]))}


# -- grouping ----------------------------------------------------------------------------
@dataclass
class Group:
    key: int
    nodes: list[dict] = field(default_factory=list)
    rank: int = 0
    x: float = 0.0
    y: float = 0.0

    @property
    def device(self) -> str:
        return self.nodes[0]["device"]

    @property
    def function(self):
        return self.nodes[0].get("function")

    @property
    def ids(self) -> list:
        return [n["id"] for n in self.nodes]

    @property
    def macs(self) -> int:
        return sum(n.get("macs") or 0 for n in self.nodes)

    @property
    def title(self) -> str:
        lead = next((n for n in self.nodes if n.get("macs")), self.nodes[0])
        return lead["name"]

    @property
    def kinds(self) -> str:
        seen: list[str] = []
        for n in self.nodes:
            short = n["op"].split(".")[-1]
            if short not in seen:
                seen.append(short)
        return "+".join(seen)


def group(graph: dict, break_at_macs: bool = True) -> tuple[list[Group], list[tuple]]:
    """Chains of ops on one device (and NPU function) as groups, in topological order;
    returns ``(groups, edges between groups)``."""
    nodes = {n["id"]: n for n in graph["nodes"]}
    succ: dict = {k: [] for k in nodes}
    pred: dict = {k: [] for k in nodes}
    for a, b in graph["edges"]:
        succ[a].append(b)
        pred[b].append(a)
    owner: dict = {}
    groups: list[Group] = []
    for key, node in nodes.items():  # nodes are listed in topological order
        ps = pred[key]
        if node["device"] != "io" and len(ps) == 1 and ps[0] in owner:
            up = nodes[ps[0]]
            g = owner[ps[0]]
            same_place = (up["device"] == node["device"] and
                          up.get("function") == node.get("function"))
            opens_layer = break_at_macs and node.get("macs") and g.macs
            if len(succ[ps[0]]) == 1 and same_place and not opens_layer and \
                    g.nodes[-1]["id"] == ps[0]:
                g.nodes.append(node)
                owner[key] = g
                continue
        g = Group(len(groups), [node])
        groups.append(g)
        owner[key] = g
    if break_at_macs and len(groups) > MAX_LAYER_GROUPS:
        return group(graph, break_at_macs=False)
    edges = sorted({(owner[a].key, owner[b].key) for a, b in graph["edges"]
                    if owner[a] is not owner[b]})
    return groups, edges


# -- layout ------------------------------------------------------------------------------
NODE_W, NODE_H, COL_W, ROW_H, MARGIN = 210, 34, 236, 52, 24


def layout(groups: list[Group], edges: list[tuple]) -> tuple[int, int]:
    """Place groups in ranks (longest path from the inputs), ordered in a rank by the mean
    position of their producers; returns the drawing's ``(width, height)``."""
    preds: dict[int, list[int]] = {g.key: [] for g in groups}
    for a, b in edges:
        preds[b].append(a)
    for g in groups:  # groups are in topological order
        g.rank = max((groups[p].rank + 1 for p in preds[g.key]), default=0)
    ranks: dict[int, list[Group]] = {}
    for g in groups:
        ranks.setdefault(g.rank, []).append(g)
    width_cols = max(len(r) for r in ranks.values()) if ranks else 1
    width = 2 * MARGIN + width_cols * COL_W
    for rank in sorted(ranks):
        row = ranks[rank]
        row.sort(key=lambda g: (sum(groups[p].x for p in preds[g.key]) /
                                len(preds[g.key]) if preds[g.key] else 0.0, g.key))
        for col, g in enumerate(row):
            g.x = width / 2 + (col - (len(row) - 1) / 2) * COL_W
            g.y = MARGIN + rank * ROW_H
    height = 2 * MARGIN + (max(ranks) + 1 if ranks else 1) * ROW_H
    return int(width), int(height)


# -- SVG ---------------------------------------------------------------------------------
def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _edge_path(a: Group, b: Group) -> str:
    x1, y1, x2, y2 = a.x, a.y + NODE_H, b.x, b.y
    if b.rank - a.rank > 1 and abs(x1 - x2) < COL_W / 2:
        # a skip connection: bow out beside the nodes it passes
        side = NODE_W / 2 + 18
        return (f"M{x1 + NODE_W / 2 - 12:.0f},{y1 - 6:.0f} C{x1 + side:.0f},{y1 + 10:.0f} "
                f"{x2 + side:.0f},{y2 - 10:.0f} {x2 + NODE_W / 2 - 12:.0f},{y2 + 6:.0f}")
    mid = (y1 + y2) / 2
    return f"M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}"


def _tooltip(g: Group, reasons: dict) -> str:
    lines = []
    for n in g.nodes:
        where = n["device"] + (f" f{n['function']}" if n.get("function") is not None else "")
        macs = f", {_si(n['macs'])} MACs" if n.get("macs") else ""
        lines.append(f"#{n['id']} {n['name']} ({n['op']}) on {where}{macs}")
        for reason in reasons.get(n["id"], []):
            lines.append(f"    host because: {reason}")
    return "\n".join(lines)


def to_svg(graph: dict, reasons: dict | None = None, flagged: set | None = None) -> str:
    """The graph as an inline SVG element: nodes coloured by device, tensors crossing
    between host and accelerator dashed, the group holding a ``flagged`` op outlined red."""
    groups, edges = group(graph)
    width, height = layout(groups, edges)
    flagged = flagged or set()
    width += 130 if flagged else 0  # room for the label beside the flagged node
    out = [f'<svg class="graph" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="operator graph">',
           '<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" '
           'fill="#8a94a3"/></marker></defs>']
    for a, b in edges:
        ga, gb = groups[a], groups[b]
        crossing = "io" not in (ga.device, gb.device) and ga.device != gb.device
        cls = "edge boundary" if crossing else "edge"
        out.append(f'<path class="{cls}" d="{_edge_path(ga, gb)}" marker-end="url(#arrow)"/>')
    for g in groups:
        fill, stroke = (IO_COLORS if g.device == "io" else HOST_COLORS if g.device == HOST
                        else NPU_COLORS)
        bad = bool(flagged & set(g.ids))
        x0, y0 = g.x - NODE_W / 2, g.y
        sub = g.kinds if len(g.nodes) > 1 or g.device != "io" else ""
        if g.function is not None:
            sub = f"f{g.function} \u00b7 {sub}"
        if g.macs:
            sub += f" \u00b7 {_si(g.macs)} MACs"
        out.append(f'<g class="node {"bad" if bad else ""}" data-device="{escape(g.device)}">'
                   f'<title>{escape(_tooltip(g, reasons or {}))}</title>'
                   f'<rect x="{x0:.0f}" y="{y0:.0f}" width="{NODE_W}" height="{NODE_H}" '
                   f'rx="6" fill="{fill}" stroke="{"#d62839" if bad else stroke}" '
                   f'stroke-width="{3 if bad else 1.4}"/>'
                   f'<text x="{g.x:.0f}" y="{y0 + 14:.0f}" class="t1">'
                   f'{escape(_short(g.title, 30))}</text>'
                   f'<text x="{g.x:.0f}" y="{y0 + 27:.0f}" class="t2">'
                   f'{escape(_short(sub, 36))}</text></g>')
        if bad:
            out.append(f'<text x="{x0 + NODE_W + 6:.0f}" y="{y0 + 21:.0f}" class="flag">'
                       '\u25c0 first error jump</text>')
    out.append("</svg>")
    return "\n".join(out)
