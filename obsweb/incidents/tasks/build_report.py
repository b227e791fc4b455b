"""Build one incident report (HTML, PDF, JSON), started from the incident page or the API; its
progress reaches the incident page over the websocket (live.broadcast_report)."""

import logging

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from obsweb.incidents import constants as c
from obsweb.incidents import live
from obsweb.incidents.models import IncidentEvent, Report, ReportFile
from obsweb.incidents.report import build

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2000


def _progress(report: Report):
    def tell(percent: int, step: str) -> None:
        Report.objects.filter(pk=report.pk).update(progress=percent, step=step[:120])
        report.progress, report.step = percent, step
        live.broadcast_report(report)

    return tell


@shared_task(name="obsweb.incidents.build_report")
def build_report(report_id: int) -> str:
    # Claim it: a duplicate message (or a second worker) finds it running and leaves it alone.
    claimed = Report.objects.filter(pk=report_id, status=c.PENDING).update(
        status=c.RUNNING, started_at=timezone.now(), progress=1, step="starting"
    )
    report = Report.objects.select_related("incident").filter(pk=report_id).first()
    if not claimed or report is None:
        return "gone"
    live.broadcast_report(report)
    try:
        files, missing = build.build(report.incident, _progress(report))
    except Exception as exc:
        log.exception("report %s of incident %s failed", report.pk, report.incident_id)
        _finish(report, c.FAILED, f"{type(exc).__name__}: {exc}")
        return c.FAILED
    with transaction.atomic():
        for fmt, content in files.items():
            ReportFile.objects.create(report=report, format=fmt, content=content, size=len(content))
        _finish(report, c.DONE, missing)
        sizes = ", ".join(f"{fmt} {len(content) // 1024} KiB" for fmt, content in files.items())
        IncidentEvent.objects.create(
            incident_id=report.incident_id,
            kind=c.EVENT_REPORT,
            text=f"Report {report.pk} generated ({sizes}).",
        )
    return c.DONE


def _finish(report: Report, status: str, error: str) -> None:
    report.status, report.error, report.finished_at = status, error[:MAX_ERROR_CHARS], timezone.now()
    report.progress = 100 if status == c.DONE else report.progress
    report.step = "done" if status == c.DONE else "failed"
    report.save(update_fields=["status", "error", "finished_at", "progress", "step"])
    transaction.on_commit(lambda: live.broadcast_report(report))
