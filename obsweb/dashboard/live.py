"""Fan-out of fresh numbers to open dashboard pages, called by the ingester after each commit."""

import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from obsweb.dashboard import first_run, hosts
from obsweb.dashboard.constants import HOSTS_GROUP, LIVE_WINDOW, OVERVIEW_GROUP
from obsweb.dashboard.overview import service_rows
from obsweb.telemetry import queries


def broadcast_overview(latest_ts_ns: int | None) -> None:
    """Send the services table, the hosts strip, the host warnings and, before the first service,
    the getting-started checklist for the live window to every open overview page.

    One group_send per call (each costs ~1-2 ms on Redis), so the caller must rate-limit:
    the ingester calls this at most 4 times a second, less often when it is slow
    (ingest.BROADCAST_SHARE), and tasks.refresh_live_overview every few
    seconds. `latest_ts_ns` is the newest record timestamp in the commit, so pages can show how
    far behind the kernel they are; None when no new record came.
    """
    since, until = queries.parse_window(LIVE_WINDOW, None)
    fleet = hosts.fleet_state(since, until, live=True)
    services = service_rows(since, until)
    message = {
        "type": "overview.update",
        "services": services,
        "hosts": fleet["hosts"],
        "warnings": fleet["warnings"],
        # The empty page's checklist, while there is nothing else to show (first_run.py).
        "first_run": first_run.checklist() if not services and first_run.is_first_run() else None,
        "latest_ts_ns": latest_ts_ns,
        "sent_at_ns": time.time_ns(),
    }
    async_to_sync(get_channel_layer().group_send)(OVERVIEW_GROUP, message)


def broadcast_hosts() -> None:
    """Tell every open hosts page that heartbeats arrived; each fetches its rows (server-rendered,
    so nothing captured is ever built into HTML in the browser). Rate-limited by the caller."""
    async_to_sync(get_channel_layer().group_send)(
        HOSTS_GROUP, {"type": "hosts.changed", "sent_at_ns": time.time_ns()}
    )
