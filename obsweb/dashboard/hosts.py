"""What the dashboard says about the hosts: the overview's hosts strip, the warnings every page
shows, and the rows of the hosts page.

Both come from one function, so the server-rendered page and the live broadcast agree; the texts
are built here and shown as text (templates escape them, overview.js sets textContent).
"""

from datetime import datetime

from django.utils import timezone

from obsweb.dashboard import formats
from obsweb.fleet import state
from obsweb.fleet.models import Host

WARNING_DROPPED = "dropped"
WARNING_SILENT = "silent"


def fleet_state(since: datetime, until: datetime, *, live: bool, now: datetime | None = None) -> dict:
    """{"hosts": [chip], "warnings": [warning]} for the window [since, until].

    A chip is one host that has sent a heartbeat: its status now, events/s, events dropped in the
    window and a hover text. A warning is {"host", "kind", "text"}: the host's agent dropped events
    in the window, or the host stopped reporting before the window's end (its traffic after that
    is missing). Hosts known only from request records, never from a heartbeat, are left out.
    """
    now = now or timezone.now()
    chips, warnings = [], []
    for host in Host.objects.filter(last_seen__isnull=False).with_drops(since, until).order_by("name"):
        status = host.status(now)
        chips.append(_chip(host, status, now))
        if host.drops:
            warnings.append(_dropped_warning(host, live, now))
        if status != Host.UP and host.last_seen < until:
            warnings.append(_silent_warning(host, now))
    return {"hosts": chips, "warnings": warnings}


def _chip(host: Host, status: str, now: datetime) -> dict:
    about = [
        f"status {status}",
        f"last heartbeat {formats.utc_time(host.last_seen, now)}",
        f"agent {host.agent_version or 'version unknown'}",
        f"kernel {host.kernel or 'unknown'}",
        f"{formats.count(host.events_dropped)} events dropped since the agent started",
    ]
    return {
        "name": host.name,
        "status": status,
        # A host that stopped reporting has no current rate: its last one would mislead.
        "events_per_s": None if status == Host.DOWN else host.events_per_s,
        "dropped": host.drops,
        "title": " · ".join(about),
    }


def _dropped_warning(host: Host, live: bool, now: datetime) -> dict:
    began = formats.utc_time(host.drops_began, now)
    when = f"since {began}" if live else f"between {began} and {formats.utc_time(host.drops_last, now)}"
    return {
        "host": host.name,
        "kind": WARNING_DROPPED,
        # Rollups and samples are built from event records, so a dropped event is a request they
        # miss; only the kernel's own counters (the agent's /metrics) count every exchange.
        "text": (
            f"agent on {host.name} dropped {formats.count(host.drops)} events {when}: "
            "their requests are missing from the counts, latencies and samples shown here "
            "(the kernel counters on the agent's /metrics stay exact)"
        ),
    }


def _silent_warning(host: Host, now: datetime) -> dict:
    if host.stopped:
        return {
            "host": host.name,
            "kind": WARNING_SILENT,
            "text": (
                f"the probe worker on {host.name} stopped at {formats.utc_time(host.last_seen, now)}: "
                "its traffic since then is missing here"
            ),
        }
    silent_s = (now - host.last_seen).total_seconds()
    return {
        "host": host.name,
        "kind": WARNING_SILENT,
        "text": (
            f"{host.name} has not reported for {formats.age(silent_s)} "
            f"(last heartbeat {formats.utc_time(host.last_seen, now)}): "
            "its traffic since then is missing here"
        ),
    }


# A probe's actual state on the hosts page, from the agent's last heartbeat.
PROBE_ON = "on"
PROBE_OFF = "off"
PROBE_ERROR = "error"
PROBE_THROTTLED = "throttled"
PROBE_UNKNOWN = "unknown"  # the agent never reported this probe (an older agent, or none yet)


def host_rows(now: datetime | None = None) -> list[dict]:
    """The hosts page: per host its summary (obsweb.fleet.state, as the API answers it) plus the
    texts the page shows, per probe its actual state in a word and the reason behind an error or
    a throttle. One query."""
    now = now or timezone.now()
    rows = []
    for host in Host.objects.order_by("name"):
        summary = state.host_summary(host, now)
        rows.append(
            summary
            | {
                "last_seen_text": formats.utc_time(host.last_seen, now) if host.last_seen else "never",
                "status_text": "stopped" if host.stopped else summary["status"],
                "probe_rows": [_probe_row(host, name, probe) for name, probe in summary["probes"].items()],
            }
        )
    return rows


def _probe_row(host: Host, name: str, probe: dict) -> dict:
    if probe["throttled"]:
        actual, reason = PROBE_THROTTLED, probe["throttled"]
    elif probe["error"]:
        actual, reason = PROBE_ERROR, probe["error"]
    elif probe["actual"] is None:
        actual, reason = PROBE_UNKNOWN, ""
    else:
        actual, reason = (PROBE_ON if probe["actual"] else PROBE_OFF), ""
    return probe | {"name": name, "state": actual, "reason": reason, "applying": state.applying(host, name)}
