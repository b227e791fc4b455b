"""One webhook delivery, retried with exponential backoff until it succeeds or runs out of
attempts (WEBHOOK_MAX_ATTEMPTS, WEBHOOK_RETRY_BASE_S); a final failure joins the timeline."""

import logging

from celery import shared_task
from django.conf import settings

from obsweb.incidents import constants as c
from obsweb.incidents import live, webhooks
from obsweb.incidents.models import IncidentEvent, WebhookDelivery

log = logging.getLogger(__name__)


def backoff_s(attempts: int) -> int:
    """Seconds before the next attempt after `attempts` failed ones: base, 2 x base, 4 x base ..."""
    return settings.WEBHOOK_RETRY_BASE_S * 2 ** (attempts - 1)


@shared_task(bind=True, name="obsweb.incidents.send_webhook", max_retries=None)
def send_webhook(self, delivery_id: int) -> str:
    delivery = WebhookDelivery.objects.filter(pk=delivery_id, status=c.PENDING).first()
    if delivery is None:  # delivered or given up already (a duplicate message)
        return "gone"
    if webhooks.attempt(delivery):
        return c.DELIVERED
    log.warning(
        "webhook %s for incident %s, attempt %s of %s: %s",
        delivery.event,
        delivery.incident_id,
        delivery.attempts,
        settings.WEBHOOK_MAX_ATTEMPTS,
        delivery.last_error,
    )
    if delivery.attempts < settings.WEBHOOK_MAX_ATTEMPTS:
        raise self.retry(countdown=backoff_s(delivery.attempts))
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=c.FAILED)
    IncidentEvent.objects.create(
        incident_id=delivery.incident_id,
        kind=c.EVENT_WEBHOOK_FAILED,
        text=f"Webhook {delivery.event} to {delivery.url} failed after {delivery.attempts} attempts: "
        f"{delivery.last_error}",
    )
    live.broadcast_incidents()
    return c.FAILED
