"""Retention (DESIGN.md: Storage): run by Celery beat, see CELERY_BEAT_SCHEDULE in settings."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from obsweb.fleet.models import DroppedEvents
from obsweb.incidents.constants import RESOLVED
from obsweb.incidents.models import Incident
from obsweb.telemetry.models import Edge, IngestedBatch, RequestSample, ResourceUsage, Rollup, TcpHealth

log = logging.getLogger(__name__)

# Long enough to outlive any replay: entries are reclaimed after a minute, trimmed well before two days.
INGESTED_BATCH_RETENTION = timedelta(days=2)


@shared_task
def prune_telemetry() -> dict[str, int]:
    """Delete samples, rollups, edges, resource use, TCP health, drop counts, replay markers and
    resolved incidents older than their retention; return the counts. Drop counts live as long as
    the rollups whose completeness they qualify. An incident goes with its timeline, webhooks and
    reports (reports have a shorter retention of their own: incidents.prune_reports)."""
    now = timezone.now()
    rollups_before = now - timedelta(days=settings.ROLLUP_RETENTION_DAYS)
    incidents_before = now - timedelta(days=settings.INCIDENT_RETENTION_DAYS)
    resolved_long_ago = Incident.objects.filter(state=RESOLVED, resolved_at__lt=incidents_before)
    deleted = {
        "samples": RequestSample.objects.filter(
            ts__lt=now - timedelta(hours=settings.SAMPLE_RETENTION_HOURS)
        ).delete()[0],
        "rollups": Rollup.objects.filter(minute__lt=rollups_before).delete()[0],
        "edges": Edge.objects.filter(minute__lt=rollups_before).delete()[0],
        "resource_usage": ResourceUsage.objects.filter(minute__lt=rollups_before).delete()[0],
        "tcp_health": TcpHealth.objects.filter(minute__lt=rollups_before).delete()[0],
        "dropped_events": DroppedEvents.objects.filter(at__lt=rollups_before).delete()[0],
        "ingested_batches": IngestedBatch.objects.filter(
            ingested_at__lt=now - INGESTED_BATCH_RETENTION
        ).delete()[0],
        # The incidents alone, not the timeline entries, webhooks and reports that went with them.
        "incidents": resolved_long_ago.delete()[1].get(Incident._meta.label, 0),
    }
    log.info("pruned telemetry: %s", deleted)
    return deleted
