"""What each alert metric reads from seeded rollups and heartbeats, table-driven: fires, stays
quiet, or has no data (and says why)."""

import pytest
from django.utils import timezone

from obsweb.incidents import constants as c
from obsweb.incidents import evaluation, measure
from obsweb.incidents.models import AlertRule
from obsweb.telemetry import histogram
from obsweb.telemetry.models import Endpoint, Rollup, Service
from tests.incidents import (
    ERROR_RULE,
    IN_MEMORY_LAYER,
    P99_RULE,
    ensure_default_rules,
    heartbeat,
    only_rule,
    steady_minute,
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


def test_tcp_retransmits_have_no_data_and_the_rule_says_why():
    heartbeat("web-1", seconds_ago=1)
    rule = only_rule(metric=c.TCP_RETRANSMIT_RATE, threshold=1)

    evaluation.evaluate()

    rule.refresh_from_db()
    assert measure.readings(rule, timezone.now()) == []
    assert (rule.last_state, rule.last_detail) == (c.RULE_NO_DATA, c.TCP_NOT_MEASURED)


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
