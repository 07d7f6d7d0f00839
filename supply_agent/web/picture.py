"""The picture of what an incident affects: its pools, nodes, pods and customers in four columns, with
a line where the incident's own records join two of them (an alert naming a node and its pool; a gate
decision whose targets hold a node and a pod or a customer). Drawn on the server as SVG markup (no
script, no style attribute), every label escaped, at most ``MAX`` entities a column."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import Markup

COLUMNS = ("pool", "node", "pod", "customer")
MAX = 30
ROW, BOX_H, COL_W, GAP = 26, 20, 220, 32
W = 20 + 4 * COL_W + 3 * GAP
FILL = {"pool": "#dbe9ff", "node": "#e8ecf3", "pod": "#eef7ee", "customer": "#fde7c8"}


def edges_of(
    alerts: Iterable[Mapping[str, Any]], decisions: Iterable[Mapping[str, Any]]
) -> set[tuple[str, str, str, str]]:
    """The joins the records show: (kind, value, kind, value), left column first."""
    out: set[tuple[str, str, str, str]] = set()
    for labels in alerts:
        node = labels.get("node")
        pool = labels.get("pool") or labels.get("supply-agent.io/pool")
        if node and pool:
            out.add(("pool", str(pool), "node", str(node)))
    for targets in decisions:
        for node in targets.get("nodes") or []:
            for pod in targets.get("pods") or []:
                out.add(("node", str(node), "pod", str(pod)))
            for customer in targets.get("customers") or []:
                out.add(("node", str(node), "customer", str(customer)))
    return out


def _label(text: str, width: int = 26) -> str:
    short = text if len(text) <= width else text[: width - 1] + "…"
    return html.escape(short, quote=True)


def entity_svg(entities: Mapping[str, list[str]], edges: set[tuple[str, str, str, str]]) -> Markup:
    """The SVG, or an empty string when the incident records no entity."""
    shown = {kind: list(entities.get(kind, []))[:MAX] for kind in COLUMNS}
    rows = max((len(v) for v in shown.values()), default=0)
    if rows == 0:
        return Markup("")
    height = 40 + rows * ROW
    where: dict[tuple[str, str], tuple[int, int]] = {}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="entity-map" role="img" width="{W}" height="{height}" '
        f'viewBox="0 0 {W} {height}"><title>what the incident affects</title>'
    ]
    for c, kind in enumerate(COLUMNS):
        x = 10 + c * (COL_W + GAP)
        total = len(entities.get(kind, []))
        more = f" (first {MAX} of {total})" if total > MAX else f" ({total})"
        parts.append(
            f'<text x="{x}" y="16" font-size="12" font-weight="600" fill="#5b6474">{kind}s{more}</text>'
        )
        for r, value in enumerate(shown[kind]):
            y = 28 + r * ROW
            where[(kind, value)] = (x, y)
            parts.append(
                f'<g><title>{html.escape(value, quote=True)}</title><rect x="{x}" y="{y}" width="{COL_W}" '
                f'height="{BOX_H}" rx="4" fill="{FILL[kind]}" stroke="#c5ccd8"/>'
                f'<text x="{x + 6}" y="{y + 14}" font-size="12" fill="#1d2330">{_label(value)}</text></g>'
            )
    for a_kind, a, b_kind, b in sorted(edges):
        if (a_kind, a) in where and (b_kind, b) in where:
            (x1, y1), (x2, y2) = where[(a_kind, a)], where[(b_kind, b)]
            parts.insert(
                1,
                f'<line x1="{x1 + COL_W}" y1="{y1 + BOX_H // 2}" x2="{x2}" y2="{y2 + BOX_H // 2}" '
                f'stroke="#8a94a6" stroke-width="1"/>',
            )
    parts.append("</svg>")
    return Markup("".join(parts))
