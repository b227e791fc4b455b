"""What an empty dashboard says before the first service: has a probe reported, has it seen events.

One function for the server-rendered page and the live broadcast, so the checklist turns green on
an open page as heartbeats arrive (overview.js sets the texts as textContent). Host names are
reported by agents: templates escape them.
"""

from datetime import datetime

from django.utils import timezone

from obsweb.dashboard import formats
from obsweb.fleet.models import Host
from obsweb.telemetry.models import Service


def is_first_run() -> bool:
    """No service has ever been recorded: the page explains how to get one."""
    return not Service.objects.exists()


def checklist(now: datetime | None = None) -> dict:
    """{"probe": step, "events": step}, a step being {"ok": bool, "text": str}."""
    now = now or timezone.now()
    hosts = list(Host.objects.filter(last_seen__isnull=False).order_by("name"))
    return {"probe": _probe_step(hosts, now), "events": _events_step(hosts, now)}


def _probe_step(hosts: list[Host], now: datetime) -> dict:
    if not hosts:
        return {
            "ok": False,
            "text": "No probe has reported yet: start the stack with make run (the probe worker needs "
            "root); its host appears under Hosts within seconds of its first heartbeat "
            "(GET /api/v1/hosts). If it does not, read the probe worker's output.",
        }
    up = [host for host in hosts if host.status(now) == Host.UP]
    if not up:
        last = max(hosts, key=lambda host: host.last_seen)
        return {
            "ok": False,
            "text": f"No probe is reporting: the last heartbeat came from {last.name} at "
            f"{formats.utc_time(last.last_seen, now)}. Is its probe worker still running?",
        }
    attached = {host.name: sorted(p for p, s in host.probes.items() if s.get("actual")) for host in up}
    if not any(attached.values()):
        return {
            "ok": False,
            "text": f"The probe worker on {_names(up)} reports, but no probe is attached: "
            "the Hosts page shows why.",
        }
    host = next(host for host in up if attached[host.name])
    more = f" and {len(up) - 1} more hosts" if len(up) > 1 else ""
    return {"ok": True, "text": f"Probe attached on {host.name}{more}: {', '.join(attached[host.name])}."}


def _events_step(hosts: list[Host], now: datetime) -> dict:
    seen = sum(host.events_seen for host in hosts)
    if not seen:
        return {
            "ok": False,
            "text": "No events seen yet: once a probe is attached, any TCP traffic on its host "
            "counts, for example curl http://127.0.0.1:8000/healthz.",
        }
    rate = sum(host.events_per_s for host in hosts if host.status(now) == Host.UP)
    return {
        "ok": True,
        "text": f"{formats.count(seen)} events seen ({formats.per_second(rate)}/s): services appear "
        "here as soon as their first requests are counted.",
    }


def _names(hosts: list[Host]) -> str:
    return ", ".join(host.name for host in hosts)
