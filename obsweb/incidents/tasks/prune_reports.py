"""Report retention (settings.REPORT_RETENTION_DAYS), run hourly by Celery beat."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from obsweb.incidents.models import Report

log = logging.getLogger(__name__)


@shared_task(name="obsweb.incidents.prune_reports")
def prune_reports() -> int:
    """Delete reports (with their files) requested longer ago than the retention; their count."""
    before = timezone.now() - timedelta(days=settings.REPORT_RETENTION_DAYS)
    deleted = Report.objects.filter(requested_at__lt=before).delete()[1].get("incidents.Report", 0)
    if deleted:
        log.info("pruned %s incident reports older than %s days", deleted, settings.REPORT_RETENTION_DAYS)
    return deleted
