"""Request paths: which spans belong to one request as it crosses processes and hosts.

Two links join spans, the same in the ingester (deciding what to keep) and in the trace view
(assembling what was kept):
- thread: a client span's `parent_span_id` names the server span its thread was serving when
  it made the call (the kernel's per-thread context, so both are on one host);
- connection: a server span is the far end of the client span on the same TCP connection (the
  same client and server address and port) whose time overlaps it, on any host.
A W3C `traceparent` sent by the apps gives spans a shared trace id; the links above work
without it.
"""

from collections import defaultdict, deque
from dataclasses import dataclass, field
from ipaddress import ip_address

from probes import schema

MAX_PATH_SPANS = 500  # a path bigger than this is cut (and says so) rather than walked forever
# Spans of one connection compared when matching its two ends: the most recent ones. A busy
# keep-alive connection holds thousands in the ingester's window, and a far end arrives within
# a few exchanges of its counterpart, so looking further back would only make ingest quadratic.
MAX_CANDIDATES = 64


def connection_key(record: dict) -> str:
    """ "client ip:port>server ip:port" of the exchange's TCP connection, "" when an end is unknown.

    IPv4-mapped IPv6 addresses are written as IPv4, so a dual-stack server's view of a
    connection matches its IPv4 client's."""
    try:
        client = _ip(record[schema.CLIENT_ADDRESS]), int(record[schema.CLIENT_PORT])
        server = _ip(record[schema.SERVER_ADDRESS]), int(record[schema.SERVER_PORT])
    except (KeyError, TypeError, ValueError):
        return ""
    if not (client[0] and client[1] and server[0] and server[1]):
        return ""
    return f"{client[0]}:{client[1]}>{server[0]}:{server[1]}"


def _ip(text) -> str:
    address = ip_address(text)
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


@dataclass(eq=False, slots=True)
class Span:
    """What linking needs to know of one exchange; `item` is what the caller keeps with it."""

    span_id: str
    parent_span_id: str
    kind: str  # schema.SPAN_SERVER or schema.SPAN_CLIENT
    connection: str
    start: int  # ns
    end: int
    item: object = None
    kept: bool = False


class SpanIndex:
    """Spans indexed by the two links. With `recent_only`, the two ends of a connection are
    matched among its most recent spans only (in arrival order), so lookups stay cheap."""

    def __init__(self, recent_only: int | None = None):
        self.recent_only = recent_only
        self.by_id: dict[str, Span] = {}
        self.by_parent: dict[str, list[Span]] = defaultdict(list)
        self.by_connection: dict[str, list[Span]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, span: Span) -> None:
        if span.span_id:
            self.by_id[span.span_id] = span
        if span.kind == schema.SPAN_CLIENT and span.parent_span_id:
            self.by_parent[span.parent_span_id].append(span)
        if span.connection:
            self.by_connection[span.connection].append(span)

    def parent(self, span: Span) -> Span | None:
        """The span this one was called from, when this index holds it."""
        if span.kind == schema.SPAN_CLIENT:
            return self.by_id.get(span.parent_span_id)
        return _best_overlap(span, self._on_connection(span), schema.SPAN_CLIENT)

    def children(self, span: Span) -> list[Span]:
        """The spans called from this one: a server span's outgoing calls, a client span's far end."""
        if span.kind == schema.SPAN_SERVER:
            return list(self.by_parent.get(span.span_id, ()))
        far_end = _best_overlap(span, self._on_connection(span), schema.SPAN_SERVER)
        return [far_end] if far_end else []

    def _on_connection(self, span: Span):
        spans = self.by_connection.get(span.connection, ())
        return spans[-self.recent_only :] if self.recent_only else spans


def _best_overlap(span: Span, candidates, kind: str) -> Span | None:
    """The span of `kind` among `candidates` whose time overlaps `span` most (none: None).

    Exchanges on one connection follow each other, so only the right one overlaps; taking the
    largest overlap rather than strict containment tolerates clock skew between hosts."""
    best, best_overlap = None, 0
    for other in candidates:
        if other.kind != kind:
            continue
        overlap = min(span.end, other.end) - max(span.start, other.start)
        if overlap > best_overlap:
            best, best_overlap = other, overlap
    return best


def path_of(seeds, index: SpanIndex, limit: int = MAX_PATH_SPANS) -> list[Span]:
    """Every span linked to `seeds` through `index`, up and down, at most `limit`."""
    seen = {id(s): s for s in seeds}
    todo = deque(seen.values())
    while todo and len(seen) < limit:
        span = todo.popleft()
        parent = index.parent(span)
        for other in ([parent] if parent else []) + index.children(span):
            if id(other) not in seen:
                seen[id(other)] = other
                todo.append(other)
    return list(seen.values())


@dataclass
class RecentSpans:
    """The spans of the last few seconds, so that when one span of a request is sampled the
    ingester keeps its whole path, and a caller arriving later joins a path already kept.

    Children arrive before their parents (a call ends before the request that made it), callers
    after their callees, and other hosts up to a batch interval late: `window_ns` covers that.
    Two generations of indexes rotate, so forgetting costs nothing per span.
    """

    window_ns: int = 5_000_000_000
    max_spans: int = 50_000  # per generation: memory stays bounded under any load
    current: SpanIndex = field(default_factory=lambda: SpanIndex(MAX_CANDIDATES))
    previous: SpanIndex = field(default_factory=lambda: SpanIndex(MAX_CANDIDATES))
    rotated_at: int = 0

    def add(self, span: Span, now_ns: int) -> None:
        if now_ns - self.rotated_at > self.window_ns or len(self.current) >= self.max_spans:
            self.previous, self.current, self.rotated_at = self.current, SpanIndex(MAX_CANDIDATES), now_ns
        self.current.add(span)

    def parent(self, span: Span) -> Span | None:
        return self.current.parent(span) or self.previous.parent(span)

    def children(self, span: Span) -> list[Span]:
        found = self.current.children(span) + self.previous.children(span)
        if span.kind == schema.SPAN_CLIENT and len(found) > 1:  # one far end: the better overlap
            found = [_best_overlap(span, found, schema.SPAN_SERVER)]
        return found

    def keep_paths(self, chosen: list[Span], arrived: list[Span]) -> list[Span]:
        """The spans to store: the whole paths of `chosen`, plus every span of `arrived` (this
        batch, in arrival order) linked to a path kept before. Each span is returned once."""
        kept = []
        for span in chosen:
            if not span.kept:
                kept += self._keep(path_of([span], self))
        for span in arrived:
            if span.kept:
                continue
            parent = self.parent(span)
            if (parent and parent.kept) or any(child.kept for child in self.children(span)):
                kept += self._keep(path_of([span], self))
        return kept

    @staticmethod
    def _keep(spans: list[Span]) -> list[Span]:
        fresh = [s for s in spans if not s.kept]
        for s in fresh:
            s.kept = True
        return fresh
