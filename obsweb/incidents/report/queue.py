"""Asking for a report: one row, built by a Celery worker after the commit."""

from django.db import transaction

from obsweb.incidents import constants as c
from obsweb.incidents.models import Incident, Report
from obsweb.incidents.tasks.build_report import build_report


def request_report(incident: Incident, user) -> tuple[Report, bool]:
    """A new report of `incident`, queued for tasks/build_report.py; or the one already waiting or
    being built (a double click builds one), with False."""
    unfinished = incident.reports.filter(status__in=(c.PENDING, c.RUNNING)).first()
    if unfinished is not None:
        return unfinished, False
    report = Report.objects.create(incident=incident, requested_by=user)
    transaction.on_commit(lambda: build_report.delay(report.pk))
    return report, True
