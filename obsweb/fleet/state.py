"""What a host is doing and what it should do, as one dict: the API's host object (DESIGN.md: API,
GET /api/v1/hosts) and what the hosts page shows, so the two never disagree."""

import math
from datetime import datetime

from django.utils import timezone

from obsweb.fleet.models import Host
from probes import schema


def host_summaries(now: datetime | None = None) -> list[dict]:
    """Every host that has sent a heartbeat or has a desired state, by name; one query."""
    now = now or timezone.now()
    return [host_summary(host, now) for host in Host.objects.order_by("name")]


def host_summary(host: Host, now: datetime | None = None) -> dict:
    """One host: its status now, what its agent last reported, and per probe desired vs actual."""
    status = host.status(now or timezone.now())
    return {
        "name": host.name,
        "status": status,
        "stopped": host.stopped,
        "last_seen": host.last_seen,
        "agent_version": host.agent_version,
        "kernel": host.kernel,
        "probes": {probe: probe_state(host, probe) for probe in schema.PROBES},
        # A host that stopped reporting has no current rate: its last one would mislead.
        "events_per_s": None if status == Host.DOWN else host.events_per_s,
        "dropped": host.events_dropped,
        "cpu_percent": None if status == Host.DOWN else host.cpu_percent,
        "cpu_budget_percent": host.cpu_budget_percent,
    }


def probe_state(host: Host, probe: str) -> dict:
    """Desired (the database) next to what the agent's last heartbeat said; None for what it did
    not say (older agents send no throttled, events_per_s or cpu_percent)."""
    reported = last_report(host, probe)
    return {
        "desired": host.wants(probe),
        "actual": _typed(reported.get("actual"), bool),
        "error": _typed(reported.get("error"), str) or None,
        "throttled": _typed(reported.get("throttled"), str) or None,
        "events_per_s": _number(reported.get("events_per_s")),
        "cpu_percent": _number(reported.get("cpu_percent")),
    }


def last_report(host: Host, probe: str) -> dict:
    """What the agent's last heartbeat said about `probe` ({} for nothing), as received."""
    reported = host.probes.get(probe) if isinstance(host.probes, dict) else None
    return reported if isinstance(reported, dict) else {}


def applying(host: Host, probe: str) -> bool:
    """The worker has not yet reported the desired state of `probe` as its own (a change is on
    its way); False when its agent never said what it believed."""
    believed = last_report(host, probe).get("desired")
    return type(believed) is bool and believed != host.wants(probe)


def _typed(value, kind):
    return value if type(value) is kind else None


def _number(value) -> float | None:
    if type(value) in (int, float) and math.isfinite(value):
        return float(value)
    return None
