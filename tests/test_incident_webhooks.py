"""The outgoing webhook, against a real HTTP server on loopback: a JSON POST when an incident opens
or resolves, retried with backoff, and a final failure visible on the incident page."""

import socket

import pytest

from obsweb.celery import app
from obsweb.incidents import constants as c
from obsweb.incidents import evaluation
from obsweb.incidents.models import Incident, WebhookDelivery
from obsweb.incidents.tasks.send_webhook import backoff_s
from obsweb.telemetry.models import Rollup
from tests.incidents import ERROR_RULE, IN_MEMORY_LAYER, ensure_default_rules, webhook_receiver
from tests.seed import seed_service

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def eager_celery(settings, db):
    """Tasks run in the test's process as they are queued (retries too, without their countdown)."""
    ensure_default_rules()
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    settings.INCIDENT_RESOLVE_GRACE_S = 0
    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def fire(django_capture_on_commit_callbacks) -> Incident:
    seed_service("checkout", requests=50, errors=10)
    with django_capture_on_commit_callbacks(execute=True):
        evaluation.evaluate()
    return Incident.objects.get()


def test_it_posts_the_incident_as_json_when_it_opens_and_resolves(
    settings, django_capture_on_commit_callbacks
):
    with webhook_receiver(200) as receiver:
        settings.INCIDENT_WEBHOOK_URL = receiver.url
        incident = fire(django_capture_on_commit_callbacks)
        Rollup.objects.filter(status_code=500).delete()
        with django_capture_on_commit_callbacks(execute=True):
            evaluation.evaluate()

    opened, resolved = (request["body"] for request in receiver.received)
    assert opened["event"] == c.WEBHOOK_OPENED
    assert opened["incident"] | {"rules": None} == {
        "id": incident.pk,
        "subject_kind": "service",
        "subject": "checkout",
        "state": "open",
        "opened_at": incident.opened_at.isoformat(),
        "resolved_at": None,
        "rules": None,
        "path": f"/incidents/{incident.pk}/",
    }
    assert [rule["name"] for rule in opened["incident"]["rules"]] == [ERROR_RULE]
    assert (resolved["event"], resolved["incident"]["state"]) == (c.WEBHOOK_RESOLVED, "resolved")
    assert receiver.received[0]["headers"]["Content-Type"] == "application/json"
    assert list(WebhookDelivery.objects.values_list("status", "attempts")) == [(c.DELIVERED, 1)] * 2


def test_it_retries_until_the_receiver_answers(settings, django_capture_on_commit_callbacks):
    with webhook_receiver(500, 503, 200) as receiver:
        settings.INCIDENT_WEBHOOK_URL = receiver.url
        fire(django_capture_on_commit_callbacks)

    assert len(receiver.received) == 3
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (c.DELIVERED, 3, "")


def test_it_gives_up_after_the_last_attempt_and_says_so_on_the_incident_page(
    settings, client, personas, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    with webhook_receiver(500) as receiver:
        settings.INCIDENT_WEBHOOK_URL = receiver.url
        incident = fire(django_capture_on_commit_callbacks)

    assert len(receiver.received) == 3
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        c.FAILED,
        3,
        "HTTP 500 Internal Server Error",
    )
    event = incident.events.get(kind=c.EVENT_WEBHOOK_FAILED)
    assert event.text == (
        f"Webhook incident.opened to {receiver.url} failed after 3 attempts: HTTP 500 Internal Server Error"
    )
    client.force_login(personas["viewer"])
    html = client.get(f"/incidents/{incident.pk}/").content.decode()
    assert 'id="webhooks"' in html
    assert '<td class="what bad">HTTP 500 Internal Server Error</td>' in html


def test_an_unreachable_receiver_is_a_failure_too(settings, django_capture_on_commit_callbacks):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        settings.INCIDENT_WEBHOOK_URL = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
        fire(django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (c.FAILED, 2)
    assert "Connection refused" in delivery.last_error


def test_no_webhook_is_sent_without_a_url(settings, django_capture_on_commit_callbacks):
    settings.INCIDENT_WEBHOOK_URL = ""

    fire(django_capture_on_commit_callbacks)

    assert not WebhookDelivery.objects.exists()


def test_the_wait_between_attempts_doubles(settings):
    settings.WEBHOOK_RETRY_BASE_S = 10

    assert [backoff_s(attempts) for attempts in (1, 2, 3, 4)] == [10, 20, 40, 80]
