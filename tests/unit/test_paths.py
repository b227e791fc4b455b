"""Request paths: the thread and connection links, and which spans the ingester keeps together."""

from obsweb.telemetry.paths import RecentSpans, Span, SpanIndex, connection_key, path_of
from probes import schema

MS = 1_000_000
FRONT_TO_API = "127.0.0.1:50000>127.0.0.1:8001"
API_TO_DB = "127.0.0.1:50001>127.0.0.1:5432"


def server(span_id, connection, start, end):
    return Span(span_id, "", schema.SPAN_SERVER, connection, start * MS, end * MS)


def client(span_id, parent, connection, start, end):
    return Span(span_id, parent, schema.SPAN_CLIENT, connection, start * MS, end * MS)


def checkout():
    """frontend serves /checkout (s1), calls api (c1), api serves it (s2) and calls the db (c2, s3)."""
    return {
        "s1": server("s1", "127.0.0.1:40000>127.0.0.1:8000", 0, 100),
        "c1": client("c1", "s1", FRONT_TO_API, 5, 95),
        "s2": server("s2", FRONT_TO_API, 6, 94),
        "c2": client("c2", "s2", API_TO_DB, 10, 90),
        "s3": server("s3", API_TO_DB, 11, 89),
    }


def index_of(spans) -> SpanIndex:
    index = SpanIndex()
    for span in spans:
        index.add(span)
    return index


def test_it_links_a_call_to_the_request_its_thread_was_serving():
    spans = checkout()
    index = index_of(spans.values())
    assert index.parent(spans["c1"]) is spans["s1"]
    assert index.children(spans["s1"]) == [spans["c1"]]


def test_it_links_the_two_ends_of_a_connection_by_time():
    spans = checkout()
    later = server("s2-next", FRONT_TO_API, 96, 99)  # the next request on the same keep-alive connection
    index = index_of([*spans.values(), later])
    assert index.parent(spans["s2"]) is spans["c1"]
    assert index.children(spans["c1"]) == [spans["s2"]]
    assert index.parent(later) is None


def test_it_walks_a_whole_path_from_any_span():
    spans = checkout()
    index = index_of(spans.values())
    assert {s.span_id for s in path_of([spans["c2"]], index)} == {"s1", "c1", "s2", "c2", "s3"}


def test_it_stops_walking_at_the_limit():
    spans = checkout()
    assert len(path_of([spans["s1"]], index_of(spans.values()), limit=2)) == 2


def test_it_keeps_the_whole_path_of_a_sampled_request():
    spans = checkout()
    recent = RecentSpans()
    for span in spans.values():
        recent.add(span, now_ns=0)
    kept = recent.keep_paths([spans["s1"]], list(spans.values()))
    assert sorted(s.span_id for s in kept) == ["c1", "c2", "s1", "s2", "s3"]
    assert recent.keep_paths([spans["s1"]], []) == []  # each span is stored once


def test_it_keeps_a_caller_that_arrives_after_its_callee_was_kept():
    spans = checkout()
    recent = RecentSpans()
    for name in ("s2", "c2", "s3"):
        recent.add(spans[name], now_ns=0)
    assert len(recent.keep_paths([spans["s2"]], [])) == 3
    for name in ("c1", "s1"):
        recent.add(spans[name], now_ns=1)
    joined = recent.keep_paths([], [spans["c1"], spans["s1"]])
    assert [s.span_id for s in joined] == ["c1", "s1"]


def test_it_does_not_keep_unrelated_requests():
    spans = checkout()
    other = server("other", "127.0.0.1:40001>127.0.0.1:8000", 0, 5)
    recent = RecentSpans()
    for span in [*spans.values(), other]:
        recent.add(span, now_ns=0)
    kept = recent.keep_paths([spans["s1"]], [*spans.values(), other])
    assert other not in kept


def test_it_forgets_spans_after_two_windows():
    spans = checkout()
    recent = RecentSpans(window_ns=10)
    recent.add(spans["c1"], now_ns=0)
    recent.add(spans["s2"], now_ns=11)  # rotates: c1 is in the previous generation
    assert recent.parent(spans["s2"]) is spans["c1"]
    recent.add(spans["s3"], now_ns=22)  # rotates again: c1 is gone
    assert recent.parent(spans["s2"]) is None


def test_it_bounds_memory_by_span_count():
    recent = RecentSpans(max_spans=2)
    for i in range(5):
        recent.add(server(f"s{i}", "", 0, 1), now_ns=0)
    assert len(recent.current) + len(recent.previous) <= 4


def record(**ends):
    return {
        schema.CLIENT_ADDRESS: "127.0.0.1",
        schema.CLIENT_PORT: 50000,
        schema.SERVER_ADDRESS: "127.0.0.1",
        schema.SERVER_PORT: 8001,
    } | ends


def test_connection_key_names_both_ends():
    assert connection_key(record()) == FRONT_TO_API


def test_connection_key_writes_ipv4_mapped_addresses_as_ipv4():
    assert connection_key(record(**{schema.SERVER_ADDRESS: "::ffff:127.0.0.1"})) == FRONT_TO_API


def test_connection_key_is_empty_when_an_end_is_unknown():
    assert connection_key(record(**{schema.CLIENT_ADDRESS: ""})) == ""
    assert connection_key(record(**{schema.CLIENT_PORT: 0})) == ""
    assert connection_key(record(**{schema.SERVER_ADDRESS: "<script>"})) == ""
    assert connection_key({}) == ""


def test_the_ingester_matches_connection_ends_among_recent_spans_only():
    """A busy keep-alive connection: the far end of the newest call is found at once, and old
    spans on the connection are not scanned (ingest stays linear)."""
    recent = RecentSpans()
    for i in range(1000):
        recent.add(server(f"old{i}", FRONT_TO_API, i * 10, i * 10 + 5), now_ns=0)
    call = client("c", "s1", FRONT_TO_API, 20_000, 20_010)
    far_end = server("s", FRONT_TO_API, 20_001, 20_009)
    recent.add(far_end, now_ns=0)
    recent.add(call, now_ns=0)
    assert recent.children(call) == [far_end]
    early = client("early", "s0", FRONT_TO_API, 9, 16)
    assert recent.children(early) == []  # its far end is older than the recent spans looked at
