"""The service map as plain data: where nodes, arrows and labels go, how big and what colour.

Framework-free on purpose (twin test: tests/unit/test_layout.py). Positions depend only on
names and on who calls whom, never on traffic numbers, so a refresh moves nothing unless the
topology changes: services sit on an inner circle sorted by name (on several rings when there
are too many for one), and each external peer sits on an outer ring beside the service that
calls it, so its arrow points outward instead of across the map.
"""

import math
from collections import defaultdict

from obsweb.dashboard import formats

INNER_RADIUS = 1.0
OUTER_GAP = 0.75  # from the outermost ring of services to the ring of external peers
OUTER_RADIUS = INNER_RADIUS + OUTER_GAP  # the peers' ring while the services fit on one
RING_CAPACITY = 40  # services on the inner ring; a ring of radius r holds RING_CAPACITY * r
RING_GAP = 0.5
MAX_PEER_STEP = 0.5  # radians between neighbouring external peers of one service
MIN_NODE_PX = 16
MAX_NODE_PX = 56
PARALLEL_OFFSET = 0.04  # A->B and B->A are drawn side by side, this far apart each
LABEL_ALONG = 0.5  # edge labels sit halfway, or at LABEL_ALONG_PAIRED from the caller ...
LABEL_ALONG_PAIRED = 0.35  # ... when the callee calls back, so the two labels do not overlap

# Error rate (0..1) -> colour: green at zero, amber at the default alert threshold (5 %),
# red from 20 % up, linear in between.
COLOUR_STOPS = [
    (0.0, (46, 160, 67)),
    (0.05, (227, 160, 8)),
    (0.20, (207, 34, 46)),
]
# CPU (% of one core) -> colour, for the map's "colour by CPU": amber at half a core, red from one.
CPU_COLOUR_STOPS = [(0.0, COLOUR_STOPS[0][1]), (50.0, COLOUR_STOPS[1][1]), (100.0, COLOUR_STOPS[2][1])]
NO_DATA_COLOUR = "rgb(150, 158, 168)"


def circle_positions(names, radius: float) -> dict[str, tuple[float, float]]:
    """Names sorted and spread evenly on a circle, the first at the top, going clockwise."""
    ordered = sorted(set(names))
    return {
        name: _polar(radius, math.pi / 2 - 2 * math.pi * i / len(ordered)) for i, name in enumerate(ordered)
    }


def ring_positions(names) -> dict[str, tuple[float, float]]:
    """Names sorted and spread on rings from INNER_RADIUS out, each as full as its size allows,
    so neighbours stay about 2 pi / RING_CAPACITY apart however many there are."""
    ordered, positions, radius = sorted(set(names)), {}, INNER_RADIUS
    while ordered:
        capacity = int(RING_CAPACITY * radius / INNER_RADIUS)
        ring, ordered = ordered[:capacity], ordered[capacity:]
        positions |= circle_positions(ring, radius)
        radius += RING_GAP
    return positions


def outer_radius(positions: dict) -> float:
    """Where external peers go: OUTER_GAP beyond the outermost service."""
    return max([INNER_RADIUS, *(math.hypot(x, y) for x, y in positions.values())]) + OUTER_GAP


def node_positions(services, externals, callers: dict[str, list[str]] | None = None):
    """Services on the inner rings (a lone one in the centre), external peers on the outer ring.

    `callers` maps an external peer to the services that call it; a peer is placed beside the
    first of them by name. Peers without a caller on the circle share the ring evenly.
    """
    services = sorted(set(services))
    positions = {services[0]: (0.0, 0.0)} if len(services) == 1 else ring_positions(services)
    outer = sorted(set(externals) - set(positions))
    if not services:
        return circle_positions(outer, INNER_RADIUS)
    outer_ring = outer_radius(positions)

    beside = defaultdict(list)
    unanchored = []
    for name in outer:
        anchors = sorted(
            c for c in (callers or {}).get(name, ()) if positions.get(c, (0.0, 0.0)) != (0.0, 0.0)
        )
        (beside[anchors[0]] if anchors else unanchored).append(name)
    positions.update(circle_positions(unanchored, outer_ring) if unanchored else {})
    sector = 2 * math.pi / min(len(services), RING_CAPACITY)  # between neighbouring services
    for anchor, peers in beside.items():
        x, y = positions[anchor]
        step = min(MAX_PEER_STEP, sector / (len(peers) + 1))
        for i, name in enumerate(peers):
            # Fan out on both sides of the anchor's ray, never on it: that is where its name sits.
            offset = (i // 2 + 0.5) * step * (-1 if i % 2 == 0 else 1)
            positions[name] = _polar(outer_ring, math.atan2(y, x) + offset)
    return positions


def label_side(x: float, y: float) -> str:
    """Where a node's name goes: away from the centre (below for the centre node itself)."""
    if abs(x) < 1e-9 and abs(y) < 1e-9:
        return "bottom"
    if abs(y) >= abs(x) * 0.7:
        return "top" if y > 0 else "bottom"
    return "right" if x > 0 else "left"


def node_size(requests: int, max_requests: int) -> float:
    """Marker diameter in px; the area grows with traffic and the busiest node gets MAX_NODE_PX."""
    if requests <= 0 or max_requests <= 0:
        return MIN_NODE_PX
    share = math.sqrt(min(requests, max_requests) / max_requests)
    return round(MIN_NODE_PX + (MAX_NODE_PX - MIN_NODE_PX) * share, 1)


def error_colour(error_rate: float | None) -> str:
    """`rgb(...)` from green (no errors) over amber (5 %) to red (20 % and more); grey without data."""
    return _scale_colour(error_rate, COLOUR_STOPS)


def cpu_colour(cpu_percent: float | None) -> str:
    """`rgb(...)` from green (idle) over amber (half a core) to red (a core and more); grey without data."""
    return _scale_colour(cpu_percent, CPU_COLOUR_STOPS)


def _scale_colour(value: float | None, stops: list) -> str:
    if value is None:
        return NO_DATA_COLOUR
    value = max(0.0, value)
    for (lo, lo_rgb), (hi, hi_rgb) in zip(stops, stops[1:], strict=False):
        if value <= hi:
            t = (value - lo) / (hi - lo)
            r, g, b = (round(a + (b - a) * t) for a, b in zip(lo_rgb, hi_rgb, strict=True))
            return f"rgb({r}, {g}, {b})"
    r, g, b = stops[-1][1]
    return f"rgb({r}, {g}, {b})"


def edge_label(edge: dict) -> str:
    """`proto rps p99`, e.g. `http 12.50/s p99 38.0 ms`; p99 left out when nothing was timed."""
    label = f"{edge['protocol'] or '?'} {formats.rate(edge['rps'])}/s"
    if edge.get("p99_ms") is not None:
        label += f" p99 {formats.ms(edge['p99_ms'])} ms"
    return label


def tcp_trouble_label(tcp: dict | None) -> str:
    """`3 retx, 1 rst, 2 failed`: the TCP trouble between two services, "" when there was none."""
    if not tcp:
        return ""
    resets = tcp["resets_sent"] + tcp["resets_received"]
    parts = [(tcp["retransmits"], "retx"), (resets, "rst"), (tcp["failures"], "failed")]
    return ", ".join(f"{n} {what}" for n, what in parts if n)


def service_map(services: list[dict], edges: list[dict], cpu: dict[str, float] | None = None) -> dict:
    """Nodes and arrows ready to draw, from `service_summaries` and `edge_summaries` rows, and
    each service's CPU (% of one core) for colouring by CPU.

    One arrow per (caller, callee); each protocol between them is one line of its label, and the
    pair's TCP trouble one more.
    """
    cpu = cpu or {}
    nodes = _collect_nodes(services, edges)
    callers = defaultdict(list)
    for edge in edges:
        callers[edge["target"]].append(edge["source"])
    positions = node_positions(
        [name for name, node in nodes.items() if not node["external"]],
        [name for name, node in nodes.items() if node["external"]],
        callers,
    )
    busiest = max((node["requests"] for node in nodes.values()), default=0)
    drawn_nodes = []
    for name in sorted(nodes):
        node = nodes[name]
        rate = node["errors"] / node["requests"] if node["requests"] else None
        x, y = positions[name]
        drawn_nodes.append(
            node
            | {
                "x": x,
                "y": y,
                "label_side": label_side(x, y),
                "error_rate": rate,
                "size": node_size(node["requests"], busiest),
                "colour": error_colour(rate),
                "cpu_percent": cpu.get(name),
                "cpu_colour": cpu_colour(cpu.get(name)),
            }
        )
    services = sum(not node["external"] for node in nodes.values())
    return {
        "nodes": drawn_nodes,
        "edges": _arrows(edges, positions),
        # Neighbouring services are this far apart (in layout units): markers are capped to it.
        "node_spacing": round(2 * math.pi * INNER_RADIUS / min(max(services, 2), RING_CAPACITY), 6),
    }


def _arrows(edges: list[dict], positions: dict) -> list[dict]:
    by_pair = defaultdict(list)
    for edge in sorted(edges, key=lambda e: (e["source"], e["target"], e["protocol"])):
        by_pair[edge["source"], edge["target"]].append(edge)
    arrows = []
    for (source, target), calls in sorted(by_pair.items()):
        paired = (target, source) in by_pair
        (x0, y0), (x1, y1) = positions[source], positions[target]
        nx, ny = _left_normal(x1 - x0, y1 - y0)
        shift = PARALLEL_OFFSET if paired else 0.0
        x0, y0, x1, y1 = x0 + nx * shift, y0 + ny * shift, x1 + nx * shift, y1 + ny * shift
        along = LABEL_ALONG_PAIRED if paired else LABEL_ALONG
        arrows.append(
            {
                "source": source,
                "target": target,
                "calls": [
                    {key: edge[key] for key in ("protocol", "requests", "errors", "rps", "p99_ms")}
                    | {"label": edge_label(edge)}
                    for edge in calls
                ],
                "x0": round(x0, 6),
                "y0": round(y0, 6),
                "x1": round(x1, 6),
                "y1": round(y1, 6),
                "label_x": round(x0 + (x1 - x0) * along, 6),
                "label_y": round(y0 + (y1 - y0) * along, 6),
                "tcp": calls[0].get("tcp"),  # the pair's, the same on every protocol
                "tcp_label": tcp_trouble_label(calls[0].get("tcp")),
            }
        )
    return arrows


def _collect_nodes(services: list[dict], edges: list[dict]) -> dict[str, dict]:
    """Every summarized service, plus every edge end that is not one: external peers, and clients
    that never served in the window. Those count what the edges carried to them."""
    nodes = {
        s["name"]: {key: s[key] for key in ("name", "protocol", "requests", "errors", "rps", "p99_ms")}
        | {"external": False}
        for s in services
    }
    peers: dict[str, dict] = {}
    for edge in edges:
        for name in (edge["source"], edge["target"]):
            if name not in nodes and name not in peers:
                peers[name] = {
                    "name": name,
                    "protocol": "",
                    "requests": 0,
                    "errors": 0,
                    "rps": 0.0,
                    "p99_ms": None,
                    "external": False,
                }
        peer = peers.get(edge["target"])
        if peer is not None:
            peer["external"] = peer["external"] or bool(edge.get("target_external"))
            peer["protocol"] = peer["protocol"] or edge["protocol"]
            peer["requests"] += edge["requests"]
            peer["errors"] += edge["errors"]
            peer["rps"] += edge["rps"]
    return nodes | peers


def _polar(radius: float, angle: float) -> tuple[float, float]:
    return (round(radius * math.cos(angle), 6), round(radius * math.sin(angle), 6))


def _left_normal(dx: float, dy: float) -> tuple[float, float]:
    length = math.hypot(dx, dy) or 1.0
    return (-dy / length, dx / length)
