"""Incidents from evaluations: one per service however often (or however concurrently) rules are
evaluated, rules grouped, resolved only after the grace period, every change on the timeline."""

from datetime import timedelta

import pytest
from django.utils import timezone

from obsweb.incidents import constants as c
from obsweb.incidents import evaluation, lifecycle
from obsweb.incidents.models import AlertRule, Incident, IncidentEvent
from obsweb.incidents.tasks import evaluate_alerts
from obsweb.telemetry.models import Rollup
from tests.incidents import (
    ERROR_RULE,
    IN_MEMORY_LAYER,
    P99_RULE,
    ensure_default_rules,
    heartbeat,
    only_rule,
    tcp_traffic,
)
from tests.seed import seed_service

pytestmark = pytest.mark.django_db
GRACE_S = 60


@pytest.fixture(autouse=True)
def incident_settings(settings, db):
    ensure_default_rules()
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    settings.INCIDENT_RESOLVE_GRACE_S = GRACE_S
    settings.INCIDENT_WEBHOOK_URL = ""


def kinds(incident: Incident) -> list[str]:
    return list(incident.events.values_list("kind", flat=True))


def failing(name: str = "checkout", errors: int = 10, latency_ms: float = 12.0) -> None:
    """`name` served 50 requests this minute, `errors` of them failed (and nothing else)."""
    Rollup.objects.filter(service__name=name, endpoint__route="/").delete()
    seed_service(name, requests=50, errors=errors, latency_ms=latency_ms)


def recovered(name: str = "checkout") -> None:
    failing(name, errors=0)


def test_a_firing_rule_opens_one_incident_for_the_service():
    failing()

    evaluate_alerts()

    incident = Incident.objects.get()
    assert (incident.subject_kind, incident.subject, incident.state) == (
        c.SUBJECT_SERVICE,
        "checkout",
        c.OPEN,
    )
    assert incident.service.name == "checkout"
    assert kinds(incident) == [c.EVENT_OPENED]
    opened = incident.events.get().text
    assert "Opened for service checkout" in opened
    assert f"{ERROR_RULE}: error rate (%) > 5 with > 10 requests in 5 min, measured 20 %" in opened
    (alert,) = incident.alerts.all()
    assert (alert.rule_name, alert.last_value, alert.firing) == (ERROR_RULE, 20.0, True)


def test_evaluating_again_and_again_changes_nothing():
    failing()

    for _ in range(3):
        evaluation.evaluate()

    incident = Incident.objects.get()
    assert kinds(incident) == [c.EVENT_OPENED]
    assert incident.alerts.count() == 1


def test_a_worker_that_lost_the_race_joins_the_incident_the_other_opened(monkeypatch):
    """Between one worker's look for an open incident and its insert, another worker commits one:
    the unique constraint refuses the second insert and the worker joins the first incident."""
    failing()
    evaluation.evaluate()  # the other worker
    first = Incident.objects.get()
    real_lookup, looks = lifecycle._open_incident, []

    def stale_first_look(subject):
        looks.append(subject)
        return None if len(looks) == 1 else real_lookup(subject)

    monkeypatch.setattr(lifecycle, "_open_incident", stale_first_look)
    evaluation.evaluate()

    assert len(looks) == 2, "the insert was not refused, so the worker never looked again"
    assert list(Incident.objects.values_list("pk", flat=True)) == [first.pk]
    assert kinds(first) == [c.EVENT_OPENED]


def test_rules_firing_for_the_same_service_share_its_incident():
    failing(latency_ms=6000)
    seed_service("payments", requests=50, errors=20)

    evaluation.evaluate()

    checkout = Incident.objects.get(subject="checkout")
    assert sorted(checkout.alerts.values_list("rule_name", flat=True)) == [ERROR_RULE, P99_RULE]
    assert kinds(checkout) == [c.EVENT_OPENED]
    assert ERROR_RULE in checkout.events.get().text and P99_RULE in checkout.events.get().text
    assert Incident.objects.get(subject="payments").alerts.count() == 1


def test_a_rule_that_starts_firing_later_joins_the_open_incident():
    failing()
    evaluation.evaluate()
    seed_service("checkout", requests=20, latency_ms=9000, route="/slow")

    evaluation.evaluate()

    incident = Incident.objects.get()
    assert kinds(incident) == [c.EVENT_OPENED, c.EVENT_FIRING]
    assert incident.events.last().text.startswith(f"Also firing: {P99_RULE}")


def test_it_resolves_only_after_the_condition_was_clear_for_the_grace_period():
    t0 = timezone.now()
    failing()
    evaluation.evaluate(t0)
    recovered()

    evaluation.evaluate(t0 + timedelta(seconds=15))  # clear: the grace period starts
    evaluation.evaluate(t0 + timedelta(seconds=15 + GRACE_S - 1))
    incident = Incident.objects.get()
    assert incident.state == c.OPEN
    assert incident.clear_since == t0 + timedelta(seconds=15)

    evaluation.evaluate(t0 + timedelta(seconds=15 + GRACE_S))

    incident.refresh_from_db()
    assert (incident.state, incident.resolved_at) == (c.RESOLVED, t0 + timedelta(seconds=15 + GRACE_S))
    assert kinds(incident) == [c.EVENT_OPENED, c.EVENT_CLEAR, c.EVENT_RESOLVED]
    assert not incident.alerts.get().firing
    assert incident.events.last().text == f"Resolved: every rule has been clear for {GRACE_S} s."


def test_firing_again_within_the_grace_period_restarts_it():
    t0 = timezone.now()
    failing()
    evaluation.evaluate(t0)
    recovered()
    evaluation.evaluate(t0 + timedelta(seconds=15))
    failing()
    evaluation.evaluate(t0 + timedelta(seconds=30))
    recovered()
    evaluation.evaluate(t0 + timedelta(seconds=45))

    evaluation.evaluate(t0 + timedelta(seconds=15 + GRACE_S))  # long enough after the first clear only

    incident = Incident.objects.get()
    assert incident.state == c.OPEN
    assert kinds(incident) == [c.EVENT_OPENED, c.EVENT_CLEAR, c.EVENT_REFIRED, c.EVENT_CLEAR]
    refired = incident.events.get(kind=c.EVENT_REFIRED).text
    assert refired.startswith(f"Firing again within the grace period. {ERROR_RULE}: error rate")
    evaluation.evaluate(t0 + timedelta(seconds=45 + GRACE_S))
    incident.refresh_from_db()
    assert incident.state == c.RESOLVED


def test_one_rule_clearing_while_another_fires_is_on_the_timeline():
    failing(latency_ms=6000)
    evaluation.evaluate()
    failing(errors=0, latency_ms=6000)  # no more errors, still slow

    evaluation.evaluate()

    incident = Incident.objects.get()
    assert incident.state == c.OPEN and incident.clear_since is None
    assert kinds(incident) == [c.EVENT_OPENED, c.EVENT_RULE_CLEAR]
    assert incident.events.last().text == f"{ERROR_RULE} no longer fires."


def test_a_rule_that_fires_again_while_another_kept_firing_is_on_the_timeline():
    failing(latency_ms=6000)
    evaluation.evaluate()
    failing(errors=0, latency_ms=6000)
    evaluation.evaluate()
    failing(latency_ms=6000)

    evaluation.evaluate()

    incident = Incident.objects.get()
    assert kinds(incident) == [c.EVENT_OPENED, c.EVENT_RULE_CLEAR, c.EVENT_FIRING]
    assert incident.events.last().text.startswith(f"Firing again: {ERROR_RULE}")


def test_a_new_failure_after_resolution_opens_a_new_incident(settings):
    settings.INCIDENT_RESOLVE_GRACE_S = 0
    failing()
    evaluation.evaluate()
    recovered()
    evaluation.evaluate()
    failing()

    evaluation.evaluate()

    states = list(Incident.objects.order_by("pk").values_list("state", flat=True))
    assert states == [c.RESOLVED, c.OPEN]


def test_disabling_the_rule_clears_its_incident():
    failing()
    evaluation.evaluate()
    AlertRule.objects.update(enabled=False)

    evaluation.evaluate()

    assert Incident.objects.get().clear_since is not None


def test_a_host_going_down_opens_an_incident_for_the_host():
    heartbeat("web-1", seconds_ago=120)
    only_rule(metric=c.HOST_DOWN, threshold=0)

    evaluation.evaluate()

    incident = Incident.objects.get()
    assert (incident.subject_kind, incident.subject, incident.host.name) == (c.SUBJECT_HOST, "web-1", "web-1")
    assert "s without heartbeat" in incident.events.get().text


TCP_RULE = {"metric": c.TCP_RETRANSMIT_RATE, "threshold": 10, "min_requests": 10, "name": "retransmits"}


def test_edges_retransmitting_above_the_threshold_open_one_incident_per_service():
    only_rule(**TCP_RULE)
    tcp_traffic(20, 10, caller="nginx", callee="shop-api")  # 50 per 100 connections
    tcp_traffic(40, 1, caller="worker", callee="queue")  # 2.5 per 100: below

    for _ in range(3):
        evaluate_alerts()

    incidents = {i.subject: i for i in Incident.objects.all()}
    assert sorted(incidents) == ["nginx", "shop-api"]  # both ends of the retransmitting edge
    for incident in incidents.values():
        assert (incident.subject_kind, incident.state, kinds(incident)) == (
            c.SUBJECT_SERVICE,
            c.OPEN,
            [c.EVENT_OPENED],
        )
        (alert,) = incident.alerts.all()
        assert (alert.rule_name, alert.last_value, alert.unit) == (
            "retransmits",
            50.0,
            "retransmits per 100 connections",
        )
        assert "measured 50 retransmits per 100 connections" in incident.events.get().text


def test_edges_retransmitting_below_the_threshold_open_nothing():
    rule = only_rule(**TCP_RULE)
    tcp_traffic(20, 2, caller="nginx", callee="shop-api")  # 10 per 100: not above 10

    evaluation.evaluate()
    evaluation.evaluate()

    assert not Incident.objects.exists()
    rule.refresh_from_db()
    assert (rule.last_state, rule.last_detail) == (c.RULE_OK, "ok for nginx, shop-api")


def test_a_tcp_incident_resolves_once_the_retransmits_age_out_of_the_window():
    only_rule(**TCP_RULE)
    tcp_traffic(20, 10)
    t0 = timezone.now()
    evaluation.evaluate(t0)

    later = t0 + timedelta(minutes=7)  # the window no longer holds those minutes
    evaluation.evaluate(later)
    evaluation.evaluate(later + timedelta(seconds=GRACE_S))

    assert set(Incident.objects.values_list("state", flat=True)) == {c.RESOLVED}


def test_acknowledging_is_noted_once(personas):
    failing()
    evaluation.evaluate()
    incident = Incident.objects.get()

    assert lifecycle.acknowledge(incident, personas["staff"]) is True
    assert lifecycle.acknowledge(incident, personas["staff"]) is False

    assert incident.acknowledged_by == personas["staff"]
    event = incident.events.last()
    assert (event.kind, event.actor, event.text) == (c.EVENT_ACKNOWLEDGED, "staff", "Acknowledged by staff.")


def test_comments_need_text(personas):
    failing()
    evaluation.evaluate()
    incident = Incident.objects.get()

    lifecycle.comment(incident, personas["staff"], "  rolled back the deploy  ")
    with pytest.raises(ValueError, match="needs some text"):
        lifecycle.comment(incident, personas["staff"], "   ")

    assert IncidentEvent.objects.filter(kind=c.EVENT_COMMENT).get().text == "rolled back the deploy"
