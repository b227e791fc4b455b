"""The optional outgoing webhook: a JSON POST to settings.INCIDENT_WEBHOOK_URL when an incident
opens or resolves. One delivery row per message; tasks/send_webhook.py makes the attempts."""

import json
import urllib.error
import urllib.request

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from obsweb.incidents import constants as c
from obsweb.incidents.models import Incident, WebhookDelivery

USER_AGENT = "obsweb-incidents/1"
MAX_ERROR_CHARS = 500


def payload(incident: Incident, event: str) -> dict:
    """What the receiver gets: the event and the incident as GET /api/v1/incidents shows it, plus
    its rules. Subject names come from traffic: receivers must treat them as untrusted text."""
    alerts = incident.alerts.all()
    return {
        "event": event,
        "incident": {
            "id": incident.pk,
            "subject_kind": incident.subject_kind,
            "subject": incident.subject,
            "state": incident.state,
            "opened_at": incident.opened_at.isoformat(),
            "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
            "rules": [{"name": a.rule_name, "condition": a.condition, "value": a.last_value} for a in alerts],
            "path": incident.get_absolute_url(),
        },
        "sent_at": timezone.now().isoformat(),
    }


def schedule(incident_id: int, event: str) -> WebhookDelivery | None:
    """Queue `event` for the webhook (nothing without INCIDENT_WEBHOOK_URL); sent after commit."""
    url = settings.INCIDENT_WEBHOOK_URL
    if not url:
        return None
    incident = Incident.objects.get(pk=incident_id)
    delivery = WebhookDelivery.objects.create(
        incident=incident, event=event, url=url, payload=payload(incident, event)
    )
    from obsweb.incidents.tasks.send_webhook import send_webhook  # the task imports this module

    transaction.on_commit(lambda: send_webhook.delay(delivery.pk))
    return delivery


def attempt(delivery: WebhookDelivery) -> bool:
    """POST the delivery once and record how it went; True when the receiver answered 2xx."""
    body = json.dumps(delivery.payload).encode()
    request = urllib.request.Request(
        delivery.url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    error = ""
    try:
        with urllib.request.urlopen(request, timeout=settings.WEBHOOK_TIMEOUT_S) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        error = f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    now = timezone.now()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_error = error[:MAX_ERROR_CHARS]
    if not error:
        delivery.status, delivery.delivered_at = c.DELIVERED, now
    delivery.save(update_fields=["attempts", "last_attempt_at", "last_error", "status", "delivered_at"])
    return not error
