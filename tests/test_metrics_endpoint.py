"""GET /metrics: the traffic the ingester counted, in Prometheus' exposition format."""

import random
from bisect import bisect_left

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from obsweb import settings as obsweb_settings
from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.cumulative import BOUNDS_NS, BOUNDS_S
from obsweb.telemetry.ingest import Ingester
from obsweb.telemetry.models import Rollup
from obsweb.telemetry.tasks import prune_telemetry
from probes import schema
from tests.factories import client_request, kafka_request, now_ns, postgres_error, postgres_request, request

TOKEN = "metrics-token-for-tests-0123456789"
DAY_NS = 86400 * 10**9
HTTP = "http_server_request_duration_seconds"
OTHER = "obsweb_server_request_duration_seconds"
EDGE = "obsweb_edge_request_duration_seconds"


@pytest.fixture(autouse=True)
def token(settings):
    settings.OBSWEB_METRICS_TOKEN = TOKEN


def scrape(client: Client | None = None, **headers) -> str:
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content
    return response.content.decode()


def samples(text: str) -> dict:
    """{(sample name, frozenset of labels): value} of an exposition, parsed by prometheus_client."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict, name: str, **labels) -> float | None:
    return parsed.get((name, frozenset(labels.items())))


def http_labels(route="/users/{id}", status="200", method="GET", service="shop-api") -> dict:
    return {
        "service": service,
        "http_request_method": method,
        "http_route": route,
        "http_response_status_code": status,
    }


def buckets(parsed: dict, name: str, **labels) -> list[float]:
    return [value(parsed, f"{name}_bucket", **labels, le=le) for le in [*map(str, BOUNDS_S), "+Inf"]]


def test_it_exposes_exactly_what_was_ingested(db):
    apply_records(
        [
            request(duration_ns=3_000_000),
            request(duration_ns=40_000_000),
            request(**{"http.response.status_code": 500, "error": True, "duration_ns": 2_000_000_000}),
            postgres_request(duration_ns=1_000_000, **{"request.count": 3}),  # a pipeline of three
            postgres_error(),
            kafka_request(duration_ns=12_000_000),
            client_request(duration_ns=60_000_000),
            client_request(**{"http.response.status_code": 502, "error": True}),
        ]
    )

    parsed = samples(scrape())

    ok, failed = http_labels(), http_labels(status="500")
    assert value(parsed, f"{HTTP}_count", **ok) == 2
    assert value(parsed, f"{HTTP}_sum", **ok) == pytest.approx(0.043)
    assert buckets(parsed, HTTP, **ok) == [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    assert value(parsed, f"{HTTP}_count", **failed) == 1
    assert buckets(parsed, HTTP, **failed)[9:11] == [0, 1]  # 2 s: above 1 s, within 2.5 s
    assert value(parsed, "obsweb_server_requests_total", service="shop-api", protocol="http") == 3
    assert value(parsed, "obsweb_server_errors_total", service="shop-api", protocol="http") == 1

    select = {"service": "postgres:5432", "protocol": "postgresql", "operation": "SELECT"}
    assert value(parsed, f"{OTHER}_count", **select) == 4  # three pipelined and the failing one
    assert value(parsed, f"{OTHER}_sum", **select) == pytest.approx(3 * 0.001 + 0.0012)
    assert value(parsed, "obsweb_server_errors_total", service="postgres:5432", protocol="postgresql") == 1
    produce = {"service": "kafka:9092", "protocol": "kafka", "operation": "Produce"}
    assert buckets(parsed, OTHER, **produce)[:3] == [0, 0, 1]

    edge = {"source": "nginx", "target": "shop-api", "protocol": "http"}
    assert value(parsed, "obsweb_edge_requests_total", **edge) == 2
    assert value(parsed, "obsweb_edge_errors_total", **edge) == 1
    assert value(parsed, f"{EDGE}_count", **edge) == 2
    assert buckets(parsed, EDGE, **edge)[3:5] == [1, 2]  # 1.2 ms and 60 ms


def test_its_buckets_are_cumulative_exact_and_end_at_the_count(db):
    rng = random.Random(7)
    durations = [rng.randrange(0, 12 * 10**9) // rng.choice([1, 10, 100, 1000]) for _ in range(500)]
    durations += [0, *BOUNDS_NS]  # values on a bound belong to its bucket (le is <=)
    apply_records([request(duration_ns=d) for d in durations])

    parsed = samples(scrape())

    counts = buckets(parsed, HTTP, **http_labels())
    assert counts == [sum(d <= bound for d in durations) for bound in BOUNDS_NS] + [len(durations)]
    assert counts == sorted(counts)
    assert value(parsed, f"{HTTP}_count", **http_labels()) == len(durations)
    assert value(parsed, f"{HTTP}_sum", **http_labels()) == pytest.approx(sum(durations) / 1e9)


def test_its_counters_do_not_go_down_when_rollups_are_pruned(db, settings):
    settings.ROLLUP_RETENTION_DAYS = 7
    apply_records([request(ts=now_ns() - 8 * DAY_NS), client_request(ts=now_ns() - 8 * DAY_NS)])
    apply_records([request(ts=now_ns()), client_request(ts=now_ns())])
    before = samples(scrape())

    assert prune_telemetry()["rollups"] == 1
    after = samples(scrape())
    apply_records([request(ts=now_ns())])
    later = samples(scrape())

    assert Rollup.objects.count() == 1
    assert after == before
    assert value(before, f"{HTTP}_count", **http_labels()) == 2
    assert value(later, f"{HTTP}_count", **http_labels()) == 3
    assert value(after, "obsweb_edge_requests_total", source="nginx", target="shop-api", protocol="http") == 2


def test_a_replayed_stream_entry_is_counted_once(stream):
    ingester = Ingester(stream, "test-1")
    ingester.ensure_group()
    batch = schema.pack_batch([request(), request(), client_request()])
    stream.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: batch})
    entries = ingester.read(block_ms=None)
    ingester.process(entries)
    before = scrape()

    ingester.process(entries)

    assert scrape() == before
    assert value(samples(before), f"{HTTP}_count", **http_labels()) == 2


def test_label_sets_past_the_cap_fold_into_other_for_good(db, settings):
    settings.METRICS_MAX_SERIES_PER_SERVICE = 3
    # In one batch the busiest new label sets get the free places: /r0 (5 requests) to /r2 (3).
    apply_records([request(**{"http.route": f"/r{i}"}) for i in range(5) for _ in range(5 - i)])
    apply_records([request(**{"http.route": "/r9"}), request(**{"http.route": "/r0"})])

    parsed = samples(scrape())

    routes = {dict(labels)["http_route"] for name, labels in parsed if name == f"{HTTP}_count"}
    assert routes == {"/r0", "/r1", "/r2", "other"}
    assert value(parsed, f"{HTTP}_count", **http_labels("/r0")) == 6
    overflow = http_labels("other", status="", method="_OTHER")
    assert value(parsed, f"{HTTP}_count", **overflow) == 2 + 1 + 1  # /r3, /r4, /r9
    assert value(parsed, "obsweb_server_requests_total", service="shop-api", protocol="http") == 17


def test_unknown_methods_and_status_codes_add_no_series(db):
    apply_records(
        [
            request(**{"http.request.method": "BREW"}),
            request(**{"http.request.method": "X-EVIL"}),
            request(**{"http.response.status_code": 999}),
        ]
    )

    parsed = samples(scrape())

    assert value(parsed, f"{HTTP}_count", **http_labels(method="_OTHER")) == 2
    assert value(parsed, f"{HTTP}_count", **http_labels(status="")) == 1


def test_it_leaves_out_services_and_edges_past_the_caps_and_says_how_many(db, settings):
    settings.METRICS_MAX_SERVICES = 1
    settings.METRICS_MAX_EDGES = 1
    apply_records(
        [request(), request(), request(**{"service.name": "quiet"})]
        + [client_request(), client_request(), client_request(**{"service.name": "cron"})]
    )

    parsed = samples(scrape())

    services = {dict(labels)["service"] for name, labels in parsed if name == "obsweb_server_requests_total"}
    edges = {dict(labels)["source"] for name, labels in parsed if name == "obsweb_edge_requests_total"}
    assert (services, edges) == ({"shop-api"}, {"nginx"})
    assert value(parsed, "obsweb_metrics_omitted_series", kind="service") == 1
    assert value(parsed, "obsweb_metrics_omitted_series", kind="edge") == 1


def test_hostile_names_are_escaped_and_read_back_unchanged(db):
    route = '/a"b\\c\nd}{x="y"} 1\n# TYPE evil counter'
    service = 'evil"svc\\\n# HELP http_server_request_duration_seconds pwned'
    apply_records([request(**{"http.route": route, "service.name": service})])

    text = scrape()

    assert "\n# TYPE evil" not in text and "\n# HELP http_server_request_duration_seconds pwned" not in text
    assert r'http_route="/a\"b\\c\nd}{x=\"y\"} 1\n# TYPE evil counter"' in text
    assert value(samples(text), f"{HTTP}_count", **http_labels(route, service=service)) == 1


def test_a_scrape_costs_two_queries_whatever_the_series_count(db, django_assert_num_queries):
    apply_records(
        [request(**{"http.route": f"/r{i}", "service.name": f"s{i % 7}"}) for i in range(60)]
        + [client_request(**{"service.name": f"c{i}"}) for i in range(20)]
        + [postgres_request(**{"db.operation.name": f"OP{i}"}) for i in range(10)]
    )

    with django_assert_num_queries(2):
        text = scrape()

    assert text.count(f"{HTTP}_count{{") == 60


def test_a_staff_session_may_read_it(personas):
    client = Client()
    client.force_login(personas["staff"])

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")


def test_a_staff_session_may_read_it_when_no_token_is_configured(personas, settings):
    settings.OBSWEB_METRICS_TOKEN = None
    client = Client()
    client.force_login(personas["staff"])

    assert client.get("/metrics").status_code == 200


def test_a_viewer_session_is_forbidden(personas):
    client = Client()
    client.force_login(personas["viewer"])

    assert client.get("/metrics").status_code == 403


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer", f"Token {TOKEN}"],
)
def test_it_refuses_missing_or_wrong_credentials(db, authorization):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}

    response = Client().get("/metrics", **headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_viewers_api_token_does_not_open_it(personas):
    from rest_framework.authtoken.models import Token

    key = Token.objects.create(user=personas["viewer"]).key

    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


def test_no_bearer_token_opens_it_when_none_is_configured(db, settings):
    settings.OBSWEB_METRICS_TOKEN = None

    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 401


def test_it_answers_only_reads(db):
    assert Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


@pytest.mark.parametrize("bad", ["short", "has a space in it, long enough", "tab\tseparated-long-enough"])
def test_settings_refuse_a_weak_or_malformed_token(monkeypatch, bad):
    monkeypatch.setenv("OBSWEB_METRICS_TOKEN", bad)

    with pytest.raises(ImproperlyConfigured, match="OBSWEB_METRICS_TOKEN"):
        obsweb_settings._metrics_token()


def test_settings_read_the_token_from_a_file(monkeypatch, tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    monkeypatch.delenv("OBSWEB_METRICS_TOKEN", raising=False)
    monkeypatch.setenv("OBSWEB_METRICS_TOKEN_FILE", str(tmp_path / "token"))

    assert obsweb_settings._metrics_token() == TOKEN


def test_bounds_are_the_opentelemetry_defaults():
    assert BOUNDS_S == (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
    assert bisect_left(BOUNDS_NS, 5_000_000) == 0 and bisect_left(BOUNDS_NS, 5_000_001) == 1
