"""What each alert metric reads from seeded rollups and heartbeats, table-driven: fires, stays
quiet, or has no data (and says why)."""

import importlib

import pytest
from django.utils import timezone

from obsweb.incidents import constants as c
from obsweb.incidents import evaluation, measure
from obsweb.incidents.models import AlertRule
from obsweb.telemetry import histogram
from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.models import Endpoint, Rollup, Service
from tests.factories import health, now_ns
from tests.incidents import (
    ERROR_RULE,
    IN_MEMORY_LAYER,
    P99_RULE,
    ensure_default_rules,
    heartbeat,
    only_rule,
    steady_minute,
    tcp_traffic,
)
from tests.seed import current_minute, seed_sample, seed_service

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def in_memory_layer(settings, db):
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    ensure_default_rules()


def seed_status(name: str, status_code: int, n: int, minutes_ago: int = 0) -> None:
    """`n` requests of `name` answered `status_code` in one minute."""
    service, _ = Service.objects.get_or_create(name=name, defaults={"protocol": "http"})
    endpoint, _ = Endpoint.objects.get_or_create(service=service, protocol="http", method="GET", route="/")
    Rollup.objects.create(
        minute=current_minute(minutes_ago),
        endpoint=endpoint,
        service=service,
        status_code=status_code,
        count=n,
        errors=n if status_code >= 500 else 0,
        duration_sum_ns=n * 1_000_000,
        histogram=histogram.add({}, 1e6, n),
    )


def traffic_per_minute(name: str, requests: int, minutes_ago: range) -> None:
    for minute in minutes_ago:
        seed_service(name, requests=requests, minutes_ago=minute)


ERROR_RATE = {"metric": c.ERROR_RATE, "threshold": 5, "min_requests": 10}
# (rule fields, what traffic to seed, expected value for "checkout": a number (within 2 %),
# None for no data, or "absent" when the rule has nothing to say about it at all)
CASES = {
    "error rate 20 % fires": (ERROR_RATE, lambda: seed_service("checkout", requests=50, errors=10), 20.0),
    "error rate 4 % is quiet": (ERROR_RATE, lambda: seed_service("checkout", requests=100, errors=4), 4.0),
    "10 requests are not more than 10": (
        ERROR_RATE,
        lambda: seed_service("checkout", requests=10, errors=10),
        None,
    ),
    "errors before the window do not count": (
        ERROR_RATE,
        lambda: seed_service("checkout", requests=50, errors=50, minutes_ago=7),
        "absent",
    ),
    "request samples alone are never read": (
        ERROR_RATE,
        lambda: [seed_sample("checkout", status=500) for _ in range(20)],
        "absent",
    ),
    "p99 of 6 s fires": (
        {"metric": c.P99_LATENCY, "threshold": 5000},
        lambda: seed_service("checkout", requests=20, latency_ms=6000),
        6000.0,
    ),
    "p50 of 120 ms fires above 100 ms": (
        {"metric": c.P50_LATENCY, "threshold": 100},
        lambda: seed_service("checkout", requests=20, latency_ms=120),
        120.0,
    ),
    "p90 of 50 ms is quiet under 100 ms": (
        {"metric": c.P90_LATENCY, "threshold": 100},
        lambda: seed_service("checkout", requests=20, latency_ms=50),
        50.0,
    ),
    "5xx share of 30 %": (
        {"metric": c.STATUS_SHARE, "status_codes": "5xx", "threshold": 25},
        lambda: (
            seed_status("checkout", 200, 70),
            seed_status("checkout", 503, 20),
            seed_status("checkout", 500, 10),
        ),
        30.0,
    ),
    "one code's share counts that code only": (
        {"metric": c.STATUS_SHARE, "status_codes": "503", "threshold": 25},
        lambda: (
            seed_status("checkout", 200, 70),
            seed_status("checkout", 503, 20),
            seed_status("checkout", 500, 10),
        ),
        20.0,
    ),
    "4xx share": (
        {"metric": c.STATUS_SHARE, "status_codes": "4xx", "threshold": 10},
        lambda: (seed_status("checkout", 200, 60), seed_status("checkout", 404, 40)),
        40.0,
    ),
    "throughput down 90 % from an hour before": (
        {"metric": c.THROUGHPUT_DROP, "baseline": c.BASELINE_HOUR, "threshold": 50, "min_requests": 100},
        lambda: (
            traffic_per_minute("checkout", 10, range(1, 6)),
            traffic_per_minute("checkout", 100, range(61, 66)),
        ),
        90.0,
    ),
    "the filling minute is no drop": (
        {"metric": c.THROUGHPUT_DROP, "baseline": c.BASELINE_HOUR, "threshold": 50, "min_requests": 100},
        lambda: (
            traffic_per_minute("checkout", 100, range(1, 6)),
            seed_service("checkout", requests=1, minutes_ago=0),
            traffic_per_minute("checkout", 100, range(61, 66)),
        ),
        0.0,
    ),
    "traffic that stopped is a 100 % drop": (
        {"metric": c.THROUGHPUT_DROP, "baseline": c.BASELINE_HOUR, "threshold": 50, "min_requests": 100},
        lambda: traffic_per_minute("checkout", 100, range(61, 66)),
        100.0,
    ),
    "a quiet baseline is no data": (
        {"metric": c.THROUGHPUT_DROP, "baseline": c.BASELINE_HOUR, "threshold": 50, "min_requests": 100},
        lambda: (
            traffic_per_minute("checkout", 1, range(1, 6)),
            traffic_per_minute("checkout", 10, range(61, 66)),
        ),
        None,
    ),
}


@pytest.mark.parametrize(("fields", "seed", "expected"), CASES.values(), ids=CASES.keys())
def test_service_metrics_read_the_rollups(fields, seed, expected):
    rule = only_rule(**fields)
    steady_minute()
    seed()

    readings = {r.subject: r for r in measure.readings(rule, timezone.now())}

    if expected == "absent":
        assert "checkout" not in readings
        return
    reading = readings["checkout"]
    assert reading.subject_kind == c.SUBJECT_SERVICE
    if expected is None:
        assert reading.value is None
        assert "rule needs >" in reading.note
    else:
        assert reading.value == pytest.approx(expected, rel=0.02, abs=1e-9)
    assert rule.fires(reading.value) == (expected not in (None, "absent") and expected > rule.threshold)


def test_a_rule_for_one_service_reads_only_that_service():
    seed_service("checkout", requests=50, errors=25)
    payments = seed_service("payments", requests=50, errors=25)
    rule = only_rule(**ERROR_RATE, service=payments)

    assert [r.subject for r in measure.readings(rule, timezone.now())] == ["payments"]


def test_external_peers_are_not_watched():
    seed_service("checkout", requests=50, errors=25)
    Service.objects.filter(name="checkout").update(external=True)

    assert measure.readings(only_rule(**ERROR_RATE), timezone.now()) == []


HOST_CASES = {
    "silent for a minute is down": ({"metric": c.HOST_DOWN, "threshold": 0}, {"seconds_ago": 60}, True),
    "a fresh heartbeat is up": ({"metric": c.HOST_DOWN, "threshold": 0}, {"seconds_ago": 1}, False),
    "a worker that stopped is down at once": (
        {"metric": c.HOST_DOWN, "threshold": 0},
        {"seconds_ago": 1, "stopped": True},
        True,
    ),
    "down, but not for longer than the threshold": (
        {"metric": c.HOST_DOWN, "threshold": 300},
        {"seconds_ago": 60},
        False,
    ),
    "500 events dropped": (
        {"metric": c.AGENT_DROPS, "threshold": 100},
        {"seconds_ago": 1, "dropped_recently": 500},
        True,
    ),
    "50 events dropped": (
        {"metric": c.AGENT_DROPS, "threshold": 100},
        {"seconds_ago": 1, "dropped_recently": 50},
        False,
    ),
}


@pytest.mark.parametrize(("fields", "host", "fires"), HOST_CASES.values(), ids=HOST_CASES.keys())
def test_host_metrics_read_the_heartbeats(fields, host, fires):
    heartbeat("web-1", **host)
    heartbeat("web-2", seconds_ago=1)
    rule = only_rule(**fields)

    readings = {r.subject: r for r in measure.readings(rule, timezone.now())}

    assert set(readings) == {"web-1", "web-2"}
    assert readings["web-1"].subject_kind == c.SUBJECT_HOST
    assert rule.fires(readings["web-1"].value) is fires
    assert not rule.fires(readings["web-2"].value)


TCP_RULE = {"metric": c.TCP_RETRANSMIT_RATE, "threshold": 10, "min_requests": 10}
# (connections nginx closed to shop-api, retransmits, how long ago, expected value per 100 connections
# for both ends: a number, None for no data, or "absent")
TCP_CASES = {
    "50 per 100 connections fire": ((20, 10, 5), 50.0),
    "5 per 100 connections are quiet": ((20, 1, 5), 5.0),
    "exactly the threshold is quiet": ((20, 2, 5), 10.0),
    "more retransmits than connections pass 100": ((20, 40, 5), 200.0),
    "10 connections are not more than 10": ((10, 10, 5), None),
    "retransmits before the window do not count": ((20, 10, 7 * 60), "absent"),
}


@pytest.mark.parametrize(("traffic", "expected"), TCP_CASES.values(), ids=TCP_CASES.keys())
def test_tcp_retransmits_read_the_tcp_health_of_both_ends(traffic, expected):
    rule = only_rule(**TCP_RULE)
    connections, retransmits, seconds_ago = traffic
    tcp_traffic(connections, retransmits, seconds_ago=seconds_ago)

    readings = {r.subject: r for r in measure.readings(rule, timezone.now())}

    if expected == "absent":
        assert readings == {}
        return
    assert set(readings) == {"nginx", "shop-api"}  # the caller's and the callee's edge alike
    for reading in readings.values():
        assert (reading.subject_kind, reading.requests) == (c.SUBJECT_SERVICE, connections)
        if expected is None:
            assert (reading.value, reading.note) == (None, "10 connections in 5 min, rule needs > 10")
        else:
            assert reading.value == pytest.approx(expected)
        assert rule.fires(reading.value) == (expected is not None and expected > rule.threshold)


def test_tcp_retransmits_add_up_a_services_edges_in_both_directions():
    tcp_traffic(20, 2, caller="nginx", callee="shop-api")  # shop-api called: 10 per 100
    tcp_traffic(30, 13, caller="shop-api", callee="postgres")  # shop-api calling: 43 per 100
    rule = only_rule(**TCP_RULE)

    readings = {r.subject: r.value for r in measure.readings(rule, timezone.now())}

    assert readings == pytest.approx({"nginx": 10.0, "postgres": 100 * 13 / 30, "shop-api": 100 * 15 / 50})


def test_retransmits_on_edges_without_counted_connections_are_left_out_and_said():
    """A caller that is not traced closes no connection we see: its edge has retransmits (counted
    by the server) but no connections, so dividing them by other edges' connections would lie."""
    server_side = {"span.kind": "server", "service.name": "shop-api", "peer.service": None,
                   "client.address": "10.0.0.7", "ts": now_ns(5), "flow.retransmits": 50}  # fmt: skip
    apply_records([health(**server_side)])
    rule = only_rule(**TCP_RULE, service=Service.objects.get(name="shop-api"))

    (reading,) = measure.readings(rule, timezone.now())

    assert (reading.subject, reading.value) == ("shop-api", None)
    assert reading.note == (
        "0 connections in 5 min, rule needs > 10 (50 retransmits on edges whose clients are not traced)"
    )
    tcp_traffic(20, 1, caller="nginx", callee="shop-api")
    (reading,) = measure.readings(rule, timezone.now())
    assert reading.value == pytest.approx(5.0)  # nginx's 20 connections, 1 retransmit; not 51


def test_a_tcp_rule_for_one_service_reads_only_that_service_and_no_external_peer():
    tcp_traffic(20, 10, caller="nginx", callee="shop-api")
    tcp_traffic(20, 10, caller="shop-api", callee=None, **{"server.address": "1.2.3.4", "server.port": 443})
    assert Service.objects.get(name="1.2.3.4:443").external

    every = only_rule(**TCP_RULE)
    assert [r.subject for r in measure.readings(every, timezone.now())] == ["nginx", "shop-api"]
    every.delete()
    nginx = only_rule(**TCP_RULE, service=Service.objects.get(name="nginx"))
    assert [r.subject for r in measure.readings(nginx, timezone.now())] == ["nginx"]


def test_a_tcp_rule_without_tcp_health_says_the_probe_may_be_off():
    seed_service("checkout", requests=50)
    rule = only_rule(**TCP_RULE)

    evaluation.evaluate()

    rule.refresh_from_db()
    assert (rule.last_state, rule.last_detail) == (c.RULE_NO_DATA, c.NO_DATA_NOTES[c.TCP_RETRANSMIT_RATE])
    assert rule.last_detail == "no TCP health records in the window: is the tcp probe on?"


def test_a_tcp_rule_says_what_it_measures():
    rule = only_rule(**TCP_RULE)

    assert rule.condition() == "TCP retransmits per 100 connections > 10 with > 10 connections in 5 min"
    assert (rule.unit, rule.is_host_metric) == ("retransmits per 100 connections", False)
    rule.threshold = 250  # no percentage: may pass 100
    rule.full_clean()


def test_the_migration_unscopes_and_disables_tcp_rules_that_watched_a_host():
    """Before 0004 the TCP rule was a host metric (that never had data); a host's scope cannot
    carry over to a per-service metric, so such a rule waits, disabled, for an admin."""
    from django.apps import apps

    migration = importlib.import_module("obsweb.incidents.migrations.0004_tcp_retransmits_per_connection")
    host = heartbeat("web-1", seconds_ago=1)
    AlertRule.objects.create(name="old", metric=c.TCP_RETRANSMIT_RATE, threshold=1, host=host)

    migration.unscope_host_rules(apps, None)

    old = AlertRule.objects.get(name="old")
    assert (old.host, old.enabled, old.last_state) == (None, False, c.RULE_NO_DATA)
    assert old.last_detail.startswith(
        "was scoped to host web-1: TCP retransmits are now measured per service"
    )
    old.full_clean()  # a valid rule again
    assert AlertRule.objects.get(name=ERROR_RULE).enabled  # other rules untouched


def test_each_evaluation_notes_what_each_rule_found():
    seed_service("checkout", requests=50, errors=10)
    seed_service("payments", requests=50)
    seed_service("search", requests=3, errors=3)

    evaluation.evaluate()

    error_rule, p99_rule = AlertRule.objects.get(name=ERROR_RULE), AlertRule.objects.get(name=P99_RULE)
    assert (error_rule.last_state, error_rule.last_detail) == (c.RULE_FIRING, "firing for checkout")
    assert (p99_rule.last_state, p99_rule.last_detail) == (c.RULE_OK, "ok for checkout, payments, search")
    assert error_rule.last_evaluated_at is not None


def test_the_default_rules_are_installed_by_the_migration():
    rules = {rule.name: rule for rule in AlertRule.objects.all()}

    assert rules[ERROR_RULE].condition() == "error rate (%) > 5 with > 10 requests in 5 min"
    assert rules[P99_RULE].condition() == "p99 latency (ms) > 5000 in 5 min"
    assert (rules[ERROR_RULE].service, rules[ERROR_RULE].enabled) == (None, True)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"metric": c.HOST_DOWN, "service": "svc"}, "service", "host metric"),
        ({"metric": c.ERROR_RATE, "host": "web-1"}, "host", "service metric"),
        ({"metric": c.STATUS_SHARE, "status_codes": "5x"}, "status_codes", "5xx"),
        ({"metric": c.ERROR_RATE, "status_codes": "5xx"}, "status_codes", "only a status-code share"),
        ({"metric": c.ERROR_RATE, "threshold": 150}, "threshold", "between 0 and 100"),
        ({"metric": c.TCP_RETRANSMIT_RATE, "host": "web-1"}, "host", "service metric"),
    ],
)
def test_a_rule_that_cannot_work_is_refused(fields, field, message):
    from django.core.exceptions import ValidationError

    if "service" in fields:
        fields["service"] = Service.objects.create(name=fields["service"])
    if "host" in fields:
        fields["host"] = heartbeat(fields["host"], seconds_ago=1)
    rule = AlertRule(name="bad", threshold=fields.pop("threshold", 5), **fields)

    with pytest.raises(ValidationError) as refused:
        rule.full_clean()

    assert message in " ".join(refused.value.message_dict[field])


def test_beat_evaluates_the_rules_on_the_configured_interval(settings):
    from obsweb.celery import app

    app.loader.import_default_modules()
    entry = settings.CELERY_BEAT_SCHEDULE["evaluate-alerts"]

    assert entry["task"] in app.tasks
    assert entry["schedule"] == settings.ALERT_EVALUATION_INTERVAL_S == 15
    assert settings.CELERY_BEAT_SCHEDULE["prune-reports"]["task"] in app.tasks
