"""Stored request paths: the spans of one request, and the paths through one endpoint.

The ingester stores a sampled request with its whole path (obsweb/telemetry/paths.py); here
the stored spans are found again by the same links, level by level, a few queries per level.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q

from obsweb.telemetry import histogram
from obsweb.telemetry.models import RequestSample
from obsweb.telemetry.paths import MAX_PATH_SPANS, Span, SpanIndex, path_of
from probes import schema

MAX_LEVELS = 16  # calls nested deeper than this are not followed
CLOCK_SKEW = timedelta(seconds=1)  # how far another host's clock may be off when matching ends
PATHS_PER_ENDPOINT = 200  # the most recent sampled requests a Sankey is drawn from


@dataclass
class PathSpan:
    """One span of a request path, placed for a waterfall."""

    sample: RequestSample
    parent: "PathSpan | None"
    depth: int
    start_ms: float  # from the start of the path's first span

    @property
    def name(self) -> str:
        return span_name(self.sample.attributes)

    @property
    def duration_ms(self) -> float:
        return self.sample.duration_ns / 1e6


def span_name(attrs: dict) -> str:
    """What one exchange asked, in a few words: `GET /users/{id}`, `SELECT users`, `GET order:?`."""
    if attrs.get(schema.HTTP_METHOD):
        route = attrs.get(schema.HTTP_ROUTE) or attrs.get(schema.URL_PATH) or ""
        return f"{attrs[schema.HTTP_METHOD]} {route}".strip()
    target = attrs.get(schema.DB_COLLECTION) or attrs.get(schema.MESSAGING_DESTINATION)
    return " ".join(str(part) for part in (attrs.get(schema.DB_OPERATION), target) if part)


def _span(sample: RequestSample) -> Span:
    start = int(sample.ts.timestamp() * 1e9)
    return Span(
        span_id=sample.span_id,
        parent_span_id=sample.parent_span_id,
        kind=sample.span_kind,
        connection=sample.connection,
        start=start,
        end=start + sample.duration_ns,
        item=sample,
    )


def _linked_rows(frontier: list[RequestSample], seen: set[int]) -> list[RequestSample]:
    """Stored spans one link away from `frontier` (a superset: the index picks the real ones)."""
    parents = {r.parent_span_id for r in frontier if r.span_kind == schema.SPAN_CLIENT and r.parent_span_id}
    servers = {r.span_id for r in frontier if r.span_kind == schema.SPAN_SERVER and r.span_id}
    connections = {r.connection for r in frontier if r.connection}
    match = Q(pk__in=[])
    if parents:
        match |= Q(span_id__in=parents)
    if servers:
        match |= Q(parent_span_id__in=servers)
    if connections:
        first = min(r.ts for r in frontier) - CLOCK_SKEW
        last = max(r.ts + timedelta(microseconds=r.duration_ns / 1000) for r in frontier) + CLOCK_SKEW
        match |= Q(connection__in=connections, ts__gte=first, ts__lte=last)
    rows = RequestSample.objects.filter(match).exclude(pk__in=seen).select_related("service")
    return list(rows[:MAX_PATH_SPANS])


def _stored_path(seeds: list[RequestSample]) -> tuple[list[Span], SpanIndex, bool]:
    """The spans linked to `seeds`, the index that links them, and whether the walk was cut."""
    index, seen = SpanIndex(), set()
    frontier = seeds
    for _level in range(MAX_LEVELS):
        for row in frontier:
            index.add(_span(row))
            seen.add(row.pk)
        if len(seen) >= MAX_PATH_SPANS:
            break
        frontier = _linked_rows(frontier, seen)
        if not frontier:
            break
    starts = [s for s in index.by_id.values() if s.item in seeds] or [_span(r) for r in seeds]
    spans = path_of(starts, index)
    return spans, index, bool(frontier) or len(spans) >= MAX_PATH_SPANS


def request_path(trace_id: str) -> tuple[list[PathSpan], bool]:
    """The spans of the request path holding trace `trace_id` in waterfall order (each span
    after its parent, siblings by start time), and whether it was cut at MAX_PATH_SPANS."""
    seeds = list(RequestSample.objects.filter(trace_id=trace_id).select_related("service")[:MAX_PATH_SPANS])
    if not seeds:
        return [], False
    spans, index, truncated = _stored_path(seeds)
    return _waterfall(spans, index), truncated


def _waterfall(spans: list[Span], index: SpanIndex) -> list[PathSpan]:
    members = {id(s) for s in spans}
    children = defaultdict(list)
    roots = []
    for span in spans:
        parent = index.parent(span)
        if parent is not None and id(parent) in members:
            children[id(parent)].append(span)
        else:
            roots.append(span)
    origin = min(s.start for s in spans)
    ordered: list[PathSpan] = []

    def visit(span: Span, parent: PathSpan | None, depth: int) -> None:
        placed = PathSpan(span.item, parent, depth, (span.start - origin) / 1e6)
        ordered.append(placed)
        for child in sorted(children[id(span)], key=lambda s: s.start):
            visit(child, placed, depth + 1)

    for root in sorted(roots, key=lambda s: s.start):
        visit(root, None, 0)
    return ordered


def endpoint_paths(endpoint_id: int, since: datetime, until: datetime) -> dict:
    """The calls made while serving one endpoint, as a Sankey: for each (caller, callee) step of
    the paths of its most recent sampled requests, how many requests took it and its latency.

    Nodes are (depth, who, what), so a service met twice on a path shows twice and the diagram
    has no cycles. Counts are of sampled requests (`requests`), not of all requests.
    """
    window = Q(ts__gte=since, ts__lt=until)
    seeds = list(
        RequestSample.objects.filter(window, endpoint_id=endpoint_id, span_kind=schema.SPAN_SERVER)
        .select_related("service")
        .order_by("-ts")[:PATHS_PER_ENDPOINT]
    )
    steps: dict[tuple, dict] = defaultdict(lambda: {"requests": 0, "histogram": {}})
    for seed in seeds:
        spans, index, _truncated = _stored_path([seed])
        for caller, callee, duration_ns in _calls(_waterfall(spans, index)):
            step = steps[(caller, callee)]
            step["requests"] += 1
            histogram.add(step["histogram"], duration_ns)
    return {
        "requests": len(seeds),
        "steps": [
            {"source": source, "target": target, "requests": step["requests"], "p50_ms": _p50_ms(step)}
            for (source, target), step in steps.items()
        ],
    }


def _calls(path: list[PathSpan]):
    """(caller node, callee node, duration ns) of each call on one path. A call traced at both
    ends is one step (the callee's server span stands for it); a call to an untraced callee is
    its client span, named after the peer."""
    answered = {id(p.parent) for p in path if p.parent is not None and _is_client(p.parent)}
    for placed in path:
        if _is_client(placed) and id(placed) in answered:
            continue
        caller = placed.parent
        if caller is not None and _is_client(caller):
            caller = caller.parent
        if caller is not None:
            yield _node(caller), _node(placed), placed.sample.duration_ns


def _is_client(placed: PathSpan) -> bool:
    return placed.sample.span_kind == schema.SPAN_CLIENT


def _node(placed: PathSpan) -> tuple[int, str, str]:
    who = callee_name(placed.sample.attributes) if _is_client(placed) else placed.sample.service.name
    return (placed.depth, who, placed.name)


def callee_name(attrs: dict) -> str:
    """Who a client span called: the resolved peer service, else its address and port."""
    return (
        attrs.get(schema.PEER_SERVICE)
        or f"{attrs.get(schema.SERVER_ADDRESS)}:{attrs.get(schema.SERVER_PORT)}"
    )


def _p50_ms(step: dict) -> float | None:
    value = histogram.quantile(step["histogram"], 0.5)
    return None if value is None else value / 1e6
