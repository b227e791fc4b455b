"""Hostile captured text in every string field of every record kind: HTML and script payloads,
100 KB strings, control characters and NUL, invalid UTF-8 and raw bytes. Packed as the worker packs
a batch and decoded by the ingester's own path, it must cost no more than its own record, be stored
within a stated bound and without NUL (PostgreSQL refuses it in text and JSON, failing the batch),
and show as text, never as markup, on every page and API answer that displays it: in Django's
renderer, and in Chromium for the pages whose JavaScript draws it.

Other control characters are stored as sent (tests/test_metrics_endpoint.py reads a newline back
unchanged): every page must still link to a name holding one.
"""

import json
import re
import time
from functools import partial
from urllib.parse import quote

import pytest
from django.db.models import CharField, JSONField, TextField
from django.urls import reverse
from django.utils.html import escape
from playwright.sync_api import expect

from obsweb.fleet.models import AuditEntry, Host
from obsweb.telemetry import records as record_fields
from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.ingest import Ingester
from obsweb.telemetry.models import (
    Edge,
    EdgeTotal,
    Endpoint,
    RequestSample,
    Rollup,
    ServerTotal,
    Service,
)
from probes import schema
from tests import factories
from tests.browser import HOSTILE, SHOTS, VIEWPORT, chromium, log_in_as, seeded_web
from tests.incidents import IN_MEMORY_LAYER, ensure_default_rules

# --- what hostile text looks like ---------------------------------------------------------------

# Each leaves a different context it may be shown in: element, <script> island, attribute, plotly.
MARKUP = {
    "tag": HOSTILE,
    "script": "</script><script>window.__xss=2</script>",
    "attribute": "\"'><svg onload=window.__xss=3>",
    "plotly": '<a href="javascript:window.__xss=4">x</a>',
}
HUGE = "<b>" + "x" * 100_000  # 100 KB
CONTROL = "a\x00b\nc\rd\te\x1b[31mf\x7fg\x01"  # NUL, newline, escape sequence, DEL
PAYLOADS = MARKUP | {"100 KB": HUGE, "control characters": CONTROL}
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")
STORED_CONTROL = CONTROL.replace("\x00", "\ufffd")  # NUL shown as U+FFFD, the rest as sent
# Invalid UTF-8 a sender could put in a msgpack str or bin: a stray byte, a lone surrogate as
# CESU-8 encodes it (UTF-8 refuses it), a NUL.
INVALID_UTF8 = b"\xff<img src=x onerror=window.__xss=1>\xed\xa0\x80\x00"

# Every string field the worker sends (probes/schema.py). Those that choose how a record is read
# (kind, span.kind, flow.event, resource.scope, network.protocol.name) are tested apart: a hostile
# one may make the record unusable, which must be counted, not fatal.
TEXT_FIELDS = [
    schema.HOST, schema.SERVICE, schema.SERVER_ADDRESS, schema.CLIENT_ADDRESS, schema.HTTP_METHOD,
    schema.URL_PATH, schema.HTTP_ROUTE, schema.DB_SYSTEM, schema.DB_OPERATION, schema.DB_COLLECTION,
    schema.DB_QUERY_TEXT, schema.DB_QUERY_SUMMARY, schema.MESSAGING_DESTINATION, schema.MESSAGING_SYSTEM,
    schema.USER_AGENT, schema.TRACE_ID, schema.SPAN_ID, schema.PARENT_SPAN_ID, schema.PEER_SERVICE,
    schema.ERROR_TYPE, schema.DB_RESPONSE_STATUS, schema.FLOW_FAILURE, schema.AGENT_VERSION,
    schema.AGENT_KERNEL, schema.AGENT_CONTROL_ERROR,
]  # fmt: skip
CHOOSING_FIELDS = [schema.KIND, schema.SPAN_KIND, schema.FLOW_EVENT, schema.RESOURCE_SCOPE, schema.PROTOCOL]


def postgres_client(**attrs) -> dict:
    return factories.caller_side(factories.postgres_request(), **attrs)


def server_health(**attrs) -> dict:
    return factories.health(**{schema.SPAN_KIND: schema.SPAN_SERVER, **attrs})


# One builder per record kind and side, as the worker sends them (tests/factories.py).
KINDS = {
    "http server": factories.request,
    "http client": factories.client_request,
    "postgresql": factories.postgres_error,
    "postgresql client": postgres_client,
    "mysql": factories.mysql_request,
    "redis": factories.redis_request,
    "mongodb": factories.mongodb_request,
    "kafka": factories.kafka_request,
    "flow": factories.flow,
    "health": factories.health,
    "server health": server_health,
    "resource": factories.resource,
    "host resource": factories.host_resource,
    "agent": factories.agent,
}

REQUEST_KINDS = sum(build()[schema.KIND] == schema.KIND_REQUEST for build in KINDS.values())


def kept_whole(record: dict) -> dict:
    """A request slow enough to be stored as a sample whatever else the batch holds."""
    slow = {schema.DURATION_NS: 2 * 10**9} if record[schema.KIND] == schema.KIND_REQUEST else {}
    return record | slow


def hostile(record: dict, text) -> dict:
    """`record` with every text field it has set to `text`, kept whole, and for a heartbeat its
    probe reports too."""
    record = kept_whole(record) | {key: text for key in TEXT_FIELDS if key in record}
    if record[schema.KIND] == schema.KIND_AGENT:
        record[schema.AGENT_CONTROL_ERROR] = text
        record[schema.AGENT_PROBES] = {
            "http": {"desired": True, "actual": False, "error": text, "throttled": None},
            "tls": {"desired": True, "actual": False, "error": None, "throttled": text},
            text: {"desired": True, "actual": True, "error": text, "throttled": text},
        }
    return record


def witness(name: str = "witness") -> dict:
    """A plain request sent alongside the hostile ones: it must be stored whatever they did."""
    return factories.request(**{schema.SERVICE: name})


# --- through the ingester ------------------------------------------------------------------------


def ingest(stream, *payloads: bytes) -> Ingester:
    """Each payload as one stream entry, read and processed by an Ingester as `manage.py ingest` does."""
    ingester = Ingester(stream, "hostile-1")
    ingester.ensure_group()
    for payload in payloads:
        stream.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: payload})
    ingester.process(ingester.read(block_ms=None))
    return ingester


def pending(stream) -> int:
    return stream.xpending(schema.RECORDS_STREAM, schema.INGEST_GROUP)["pending"]


def with_raw_bytes(records: list[dict], raw: bytes) -> bytes:
    """The batch packed by the worker's pack_batch, with the placeholder str "RAW…" (as long as
    `raw`) replaced by `raw` in place: a msgpack str holding bytes no UTF-8 encoder would write."""
    placeholder = "R" * len(raw)
    records = [{k: placeholder if v == "RAW" else v for k, v in r.items()} for r in records]
    payload = schema.pack_batch(records)
    assert payload.count(placeholder.encode()) == 1
    return payload.replace(placeholder.encode(), raw)


STORED = [Service, Endpoint, Rollup, Edge, RequestSample, ServerTotal, EdgeTotal, Host, AuditEntry]


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def stored_texts():
    """(table.column, text, its bound) for every string the ingester stored, JSON keys included:
    a column's max_length, else records.TEXT_MAX_CHARS."""
    for model in STORED:
        fields = [f for f in model._meta.concrete_fields if isinstance(f, CharField | TextField | JSONField)]
        for row in model.objects.values_list(*[f.attname for f in fields]):
            for field, value in zip(fields, row, strict=True):
                bound = field.max_length if isinstance(field, CharField) else record_fields.TEXT_MAX_CHARS
                for text in _strings(value):
                    yield f"{model.__name__}.{field.name}", text, bound


def assert_stored_safely() -> None:
    """No stored string is longer than its bound or holds a NUL."""
    bad = [
        (where, text[:40], len(text), bound)
        for where, text, bound in stored_texts()
        if len(text) > bound or "\x00" in text
    ]
    assert bad == []


def assert_reasons_bounded(ingester: Ingester) -> None:
    """Skip reasons are counted by their text and logged every minute: a sender must not choose
    their size, nor write control characters into the log."""
    reasons = list(ingester._skips)
    assert reasons and all(len(r) <= 200 and not CONTROL_CHARS.search(r) for r in reasons), reasons


def assert_witness_stored(name: str = "witness") -> None:
    assert Rollup.objects.get(service__name=name).count == 1, f"{name}'s request was lost"


@pytest.mark.parametrize("text", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_every_text_field_of_every_kind_is_stored_bounded_and_without_nul(stream, text):
    batch = [hostile(build(), text) for build in KINDS.values()] + [witness()]

    ingester = ingest(stream, schema.pack_batch(batch))

    assert (ingester.stats.undecodable, ingester.stats.failed, pending(stream)) == (0, 0, 0)
    assert ingester.stats.skipped == 0, ingester._skips
    assert ingester.stats.records + ingester.stats.ignored == len(batch)
    assert_witness_stored()
    assert_stored_safely()
    # Stored as text, as captured: escaping is the renderer's job; cut to the column when too long.
    name = Service.objects.exclude(name__in=["witness", "shop-api"]).values_list("name", flat=True)
    if text in MARKUP.values():
        assert text in name
        assert RequestSample.objects.filter(host=text).count() == REQUEST_KINDS  # each one kept whole
    if text is HUGE:
        assert HUGE[:255] in name
        assert Endpoint.objects.get(protocol="http", service__name=HUGE[:255]).route == HUGE[:255]
        attributes = RequestSample.objects.filter(service__name=HUGE[:255]).first().attributes
        assert attributes[schema.USER_AGENT] == HUGE[: record_fields.TEXT_MAX_CHARS]
    if text is CONTROL:
        assert STORED_CONTROL in name
        assert RequestSample.objects.filter(host=STORED_CONTROL).count() == REQUEST_KINDS


def test_a_hostile_field_that_chooses_how_a_record_is_read_costs_only_that_record(stream):
    batch = [
        hostile(build(), text) | {key: text}
        for build in KINDS.values()
        for key in CHOOSING_FIELDS
        for text in (HUGE, CONTROL)
        if key in build()
    ] + [witness()]

    ingester = ingest(stream, schema.pack_batch(batch))

    assert (ingester.stats.undecodable, ingester.stats.failed, pending(stream)) == (0, 0, 0)
    stats = ingester.stats
    assert stats.records + stats.skipped + stats.ignored == len(batch)
    assert stats.skipped > 0
    assert_witness_stored()
    assert_stored_safely()
    assert_reasons_bounded(ingester)


def test_raw_bytes_in_any_text_field_are_decoded_or_cost_only_their_record(stream):
    """A worker bug could send bytes (msgpack bin) where text belongs: a column refuses them (the
    record is counted as skipped), the stored record (sample attributes) decodes them with U+FFFD."""
    batch = [
        kept_whole(build()) | {key: INVALID_UTF8}
        for build in KINDS.values()
        for key in TEXT_FIELDS + CHOOSING_FIELDS
        if key in build()
    ] + [witness()]

    ingester = ingest(stream, schema.pack_batch(batch))

    stats = ingester.stats
    assert (stats.undecodable, stats.failed, pending(stream)) == (0, 0, 0)
    assert stats.records + stats.skipped + stats.ignored == len(batch)
    assert_reasons_bounded(ingester)
    assert_witness_stored()
    assert_stored_safely()
    agents = {s.attributes.get(schema.USER_AGENT) for s in RequestSample.objects.all()} - {None}
    assert agents == {"curl/7.88.1", "\ufffd<img src=x onerror=window.__xss=1>\ufffd\ufffd\ufffd\ufffd"}


def test_invalid_utf8_in_a_msgpack_str_never_stops_the_ingester_nor_the_entries_after_it(stream):
    before = schema.pack_batch([witness("before")])
    bad = with_raw_bytes([factories.request(**{schema.USER_AGENT: "RAW"})], INVALID_UTF8)
    after = schema.pack_batch([witness("after")])

    ingester = ingest(stream, before, bad, after)

    assert (ingester.stats.records, ingester.stats.undecodable) == (3, 0)
    assert pending(stream) == 0
    assert_witness_stored("before")
    assert_witness_stored("after")


def test_invalid_utf8_in_a_msgpack_str_costs_only_its_own_record(stream):
    bad = with_raw_bytes(
        [witness(), factories.request(**{schema.SERVICE: "shop-api", schema.USER_AGENT: "RAW"})], INVALID_UTF8
    )

    ingest(stream, bad)

    assert_witness_stored()
    assert_stored_safely()


def test_the_worker_cannot_pack_a_lone_surrogate():
    """So the only way one arrives is as invalid UTF-8 (CESU-8 bytes), tested above."""
    with pytest.raises(UnicodeEncodeError):
        schema.pack_batch([factories.request(**{schema.SERVICE: "\ud800"})])


# --- on the pages ---------------------------------------------------------------------------------

# Hostile names and texts where each page shows them; each sets window.__xss if it ever runs.
WEB = HOSTILE  # an HTTP service
DATABASE = "\"'><svg onload=window.__xss=2>"  # the PostgreSQL server it calls
QUEUE = "</script><script>window.__xss=3</script>"  # the Kafka broker it produces to
HOST_NAME = '<iframe srcdoc="<script>parent.__xss=4</script>">'
NAMED_BY_PROCESS = "feed\nworker"  # a process may name itself with a newline (prctl, OTEL_SERVICE_NAME)
ROUTE = '/<a href="javascript:window.__xss=5">x</a>'
METHOD = "<b onmouseover=__xss=6>"
QUERY = 'SELECT "<img src=x onerror=window.__xss=7>" FROM t WHERE id = ?'
COLLECTION = "<svg/onload=window.__xss=8>"
ERROR_TYPE = "<script>window.__xss=9</script>"
TRACE = "</b><img src=x onerror=__xss=1>"  # 31 characters, one of them "/"
SPAN = "<i>x</i><u>y</u>"  # 16
KERNEL = "6.1<script>window.__xss=10</script>"
PROBE_ERROR = "<img src=x onerror=window.__xss=11>"
SHOWN = [WEB, DATABASE, QUEUE, HOST_NAME, ROUTE, METHOD, QUERY, COLLECTION, ERROR_TYPE, TRACE, SPAN,
         KERNEL, PROBE_ERROR, HUGE[:255]]  # fmt: skip


def hostile_traffic() -> list[dict]:
    """Half a minute ago: WEB failing 20 requests (one traced through its call to DATABASE, found
    by the TCP connection), producing to QUEUE, its connections retransmitting; resources and a
    heartbeat of HOST_NAME with a failed and a throttled probe; NAMED_BY_PROCESS; a 100 KB name."""
    t = factories.now_ns(30)
    on_host = {schema.HOST: HOST_NAME}
    web = on_host | {schema.SERVICE: WEB}
    served = [
        factories.request(**web | {
            schema.TS: t + i * 10**6, schema.HTTP_METHOD: METHOD, schema.HTTP_ROUTE: ROUTE,
            schema.URL_PATH: HUGE, schema.USER_AGENT: HUGE if i else CONTROL, schema.HTTP_STATUS: 500,
            schema.ERROR: True, schema.ERROR_TYPE: ERROR_TYPE, schema.DURATION_NS: 50_000_000,
            schema.TRACE_ID: TRACE if i == 0 else "", schema.SPAN_ID: SPAN if i == 0 else f"{i:016x}",
            schema.CLIENT_PORT: 50000 + i,
        })
        for i in range(20)
    ]  # fmt: skip
    query = factories.postgres_error(**on_host | {
        schema.SERVICE: DATABASE, schema.TS: t + 11_000_000, schema.DURATION_NS: 18_000_000,
        schema.CLIENT_PORT: 40001, schema.SPAN_ID: "d" * 16, schema.TRACE_ID: "",
        schema.DB_QUERY_TEXT: QUERY, schema.DB_COLLECTION: COLLECTION, schema.ERROR_TYPE: ERROR_TYPE,
        schema.DB_QUERY_SUMMARY: f"SELECT {COLLECTION}", schema.DB_RESPONSE_STATUS: ERROR_TYPE,
    })  # fmt: skip
    call = factories.caller_side(query, **web | {
        schema.TS: t + 10_000_000, schema.DURATION_NS: 20_000_000, schema.CLIENT_PORT: 40001,
        schema.SPAN_ID: "c" * 16, schema.PARENT_SPAN_ID: SPAN, schema.TRACE_ID: TRACE,
    })  # fmt: skip
    produce = factories.kafka_request(**on_host | {
        schema.SERVICE: QUEUE, schema.TS: t, schema.MESSAGING_DESTINATION: COLLECTION,
    })  # fmt: skip
    connections = web | {schema.PEER_SERVICE: DATABASE, schema.TS: t}
    heartbeat = factories.agent(**on_host | {
        schema.TS: factories.now_ns(1), schema.AGENT_VERSION: METHOD, schema.AGENT_KERNEL: KERNEL,
        schema.AGENT_CONTROL_ERROR: PROBE_ERROR,
        schema.AGENT_PROBES: {
            "http": {"desired": True, "actual": False, "error": PROBE_ERROR, "throttled": None},
            "tls": {"desired": True, "actual": False, "error": None, "throttled": PROBE_ERROR},
        },
    })  # fmt: skip
    return [
        *served,
        query,
        call,
        produce,
        factories.caller_side(produce, **web),
        factories.flow(**connections),
        factories.health(**connections),
        factories.resource(**web | {schema.TS: t}),
        factories.host_resource(**on_host | {schema.TS: t}),
        heartbeat,
        factories.request(**{schema.SERVICE: NAMED_BY_PROCESS, schema.TS: t}),
        factories.request(**{schema.SERVICE: HUGE, schema.TS: t}),
    ]


def seed_hostile_traffic() -> dict:
    """hostile_traffic() packed as the worker packs it, decoded as the ingester decodes it and
    stored, then one alert evaluation (WEB fails every request: an incident opens). Also run by
    `manage.py shell` for the browser test; returns the ids its pages need."""
    from obsweb.incidents import evaluation

    applied = apply_records(schema.unpack_batch(schema.pack_batch(hostile_traffic())))
    assert not applied.skipped, applied.skipped
    evaluation.evaluate()
    return page_ids()


def page_ids() -> dict:
    from obsweb.incidents.models import Incident

    return {
        "endpoint": Endpoint.objects.get(service__name=WEB, protocol=schema.PROTO_HTTP).pk,
        "incident": Incident.objects.get(subject=WEB).pk,
    }


def page_paths(ids: dict) -> dict[str, str]:
    """Every page showing captured text: what it is -> its path (reversed: a name that cannot be
    linked to fails here as it would on the page)."""
    service = partial(reverse, "dashboard:service")
    return {
        "overview": "/",
        "map": "/map/",
        "http service": service(args=[WEB]),
        "database service": service(args=[DATABASE]),
        "queue service": service(args=[QUEUE]),
        "service named with a newline": service(args=[NAMED_BY_PROCESS]),
        "paths": reverse("dashboard:endpoint-paths", args=[WEB, ids["endpoint"]]),
        "trace": reverse("dashboard:trace", args=[TRACE]),
        "hosts": "/hosts/",
        "hosts rows": "/hosts/rows/",
        "audit log": "/hosts/audit/",
        "resources": "/resources/",
        "incidents": "/incidents/",
        "incident": reverse("incidents:detail", args=[ids["incident"]]),
        "rules": "/incidents/rules/",
    }


API_PATHS = [
    "/api/v1/services",
    "/api/v1/edges",
    "/api/v1/resources",
    "/api/v1/hosts",
    "/api/v1/incidents",
    "/api/v1/requests?service=" + quote(WEB, safe=""),
    f"/api/v1/services/{quote(WEB, safe='')}/endpoints",
    f"/api/v1/services/{quote(DATABASE, safe='')}/endpoints",
    f"/api/v1/hosts/{quote(HOST_NAME, safe='')}",
]
NUMBERS_ONLY = f"/api/v1/services/{quote(WEB, safe='')}/resources"  # found by a hostile name, though


@pytest.fixture
def staff_client(client, personas, settings):
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    ensure_default_rules()
    client.force_login(personas["staff"])
    return client


def test_every_page_shows_captured_text_escaped_and_every_api_answer_as_json(staff_client):
    ids = seed_hostile_traffic()

    for page, path in page_paths(ids).items():
        response = staff_client.get(path)
        assert response.status_code == 200, f"{page}: {path}"
        html = response.content.decode()
        assert [text for text in SHOWN if text in html] == [], f"{page} shows markup from traffic"
        assert any(escape(text) in html for text in SHOWN), f"{page} shows no captured text"
    for path in API_PATHS:
        response = staff_client.get(path, HTTP_ACCEPT="application/json")
        assert response.status_code == 200, path
        assert response["Content-Type"] == "application/json"
        assert response["X-Content-Type-Options"] == "nosniff"  # never sniffed as HTML
        answer = json.dumps(response.json(), ensure_ascii=False)
        assert any(text in answer for text in SHOWN), f"{path} answers no captured text, as sent"
    assert staff_client.get(NUMBERS_ONLY).json()["cpu_percent"]


# --- in a browser ---------------------------------------------------------------------------------

SEED = (
    "import json\n"
    "from django.contrib.auth.models import User\n"
    "from tests.test_hostile_fields import seed_hostile_traffic\n"
    "User.objects.create_user('staff', password='staff-pass', is_staff=True)\n"
    "ids = seed_hostile_traffic()\n"
)


@pytest.fixture
def hostile_web(tmp_path, redis_url):
    """daphne serving hostile_traffic() (stored through the ingest path) to a staff user."""
    ids = tmp_path / "ids.json"
    with seeded_web(tmp_path, redis_url, SEED + f"open({str(ids)!r}, 'w').write(json.dumps(ids))\n") as web:
        web.ids = json.loads(ids.read_text())
        yield web


class Watched:
    """A page's dialogs, console errors, uncaught exceptions and failed responses, as they happen."""

    def __init__(self, page):
        self.problems = []
        page.on("dialog", self.dialog)
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught {exc}"))
        page.on("console", lambda msg: self.problems.append(msg.text) if msg.type == "error" else None)
        page.on("response", self.response)

    def dialog(self, dialog) -> None:
        self.problems.append(f"dialog {dialog.message!r}")
        dialog.dismiss()

    def response(self, response) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status} {response.url}")


def test_every_page_in_a_browser_shows_hostile_text_as_text_and_runs_none_of_it(hostile_web):
    started = time.monotonic()
    paths = page_paths(hostile_web.ids)
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        watched = Watched(page)
        log_in_as(page, hostile_web.url, "staff", "staff-pass")  # lands on the overview
        visited = []

        def visit(name: str, path: str, *shown: tuple[str, str]) -> None:
            """Open `path` (unless there); each (selector, text) must show `text` as text; nothing
            may have run."""
            visited.append(name)
            if page.url != hostile_web.url + path:
                page.goto(hostile_web.url + path)
            for selector, text in shown:
                expect(page.locator(selector).first, f"{name}: {selector}").to_contain_text(text)
            assert page.evaluate("typeof window.__xss") == "undefined", f"{name} ran captured markup"

        visit("overview", "/", ("#services", WEB), ("#services", "feed worker"), ("#services", HUGE[:255]),
              ("#host-list", HOST_NAME), ("#incident-banner", WEB))  # fmt: skip
        visit("map", paths["map"], ("#service-map", WEB), ("#service-map", DATABASE))
        visit("http service", paths["http service"], ("#endpoints", ROUTE), ("#endpoints", METHOD),
              ("#dependencies", DATABASE), ("#tcp-health", DATABASE), (".samples", ROUTE))  # fmt: skip
        visit("database service", paths["database service"], ("#top-queries", QUERY),
              ("#top-queries", COLLECTION), (".samples", ERROR_TYPE))  # fmt: skip
        visit("trace", paths["trace"], ("#spans", QUERY), ("#waterfall", WEB))
        # Plotly draws hover text as HTML: hover the request's bar (by position: its drag layer
        # sits above the bars), whose text is built from captured names.
        bar = page.locator("#waterfall .barlayer .point").first.bounding_box()
        page.mouse.move(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] / 2)
        expect(page.locator("#waterfall .hovertext")).to_contain_text(WEB)
        visit("paths", paths["paths"], ("#sankey", DATABASE))
        visit("hosts", paths["hosts"], ("#hosts", HOST_NAME), ("#hosts", KERNEL), ("#hosts", PROBE_ERROR))
        visit("resources", paths["resources"], ("main", HOST_NAME), ("#chart-cpu", WEB))
        visit("incident", paths["incident"], ("main", WEB))
        visit("API", "/api/v1/requests?limit=5&service=" + quote(WEB, safe=""), (".response-info", WEB))
        page.screenshot(path=str(SHOTS / "hostile-api.png"))

    assert watched.problems == []
    print(f"{len(visited)} pages in Chromium in {time.monotonic() - started:.1f} s, start and login included")
