"""Fan-out to open pages: the open-incidents banner on every page, and report progress on the
incident page. Best effort: a broadcast that fails is logged, and never undoes what it announced."""

import logging
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from obsweb.incidents import constants as c
from obsweb.incidents.models import Incident, Report

log = logging.getLogger(__name__)


def banner() -> dict:
    """{"open": n, "subjects": [the newest BANNER_SUBJECTS open incidents' subjects]}: what the
    banner shows, server-rendered and broadcast alike. One query on every page: open incidents
    are few (at most one per service or host), so their subjects are read, not counted apart."""
    subjects = list(
        Incident.objects.filter(state=c.OPEN).order_by("-opened_at", "-id").values_list("subject", flat=True)
    )
    return {"open": len(subjects), "subjects": subjects[: c.BANNER_SUBJECTS]}


def _send(message: dict) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(c.INCIDENTS_GROUP, message)
    except Exception:  # the channel layer is Redis: down, pages just miss one update
        log.exception("could not tell open pages about %s", message.get("type"))


def broadcast_incidents() -> None:
    """An incident opened, changed or resolved: every page's banner, and incident pages, update."""
    _send({"type": "incidents.changed", "sent_at_ns": time.time_ns()} | banner())


def broadcast_report(report: Report) -> None:
    """One step of a report build, for the incident page's progress bar."""
    _send(
        {
            "type": "report.progress",
            "report": report.pk,
            "incident": report.incident_id,
            "status": report.status,
            "progress": report.progress,
        }
    )
