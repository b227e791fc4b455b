"""Dashboard pages: server-rendered for the window in `?since=`/`?until=`, live by default."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from obsweb.dashboard import layout
from obsweb.dashboard.constants import LIVE_WINDOW, LIVE_WINDOW_LABEL, OVERVIEW_SOCKET_PATH
from obsweb.fleet.models import Host
from obsweb.telemetry import queries
from obsweb.telemetry.models import Service


def _window(request):
    """(start, end, live) from the query string; live when neither since nor until is given.

    Raises queries.WindowError with a message meant for the user.
    """
    since = request.GET.get("since") or None
    until = request.GET.get("until") or None
    live = since is None and until is None
    start, end = queries.parse_window(since or LIVE_WINDOW, until)
    return start, end, live


def _window_context(start, end, live) -> dict:
    return {"live": live, "window_start": start, "window_end": end, "live_window_label": LIVE_WINDOW_LABEL}


def _nothing_reported() -> bool:
    """True until the first host heartbeat or service arrives: the page then explains how to start."""
    return not (Host.objects.exists() or Service.objects.exists())


@login_required
def overview(request):
    try:
        start, end, live = _window(request)
    except queries.WindowError as exc:
        return render(request, "dashboard/overview.html", {"window_error": str(exc)}, status=400)
    services = queries.service_summaries(start, end)
    context = _window_context(start, end, live) | {
        "services": services,
        "nothing_reported": not services and _nothing_reported(),
        "live_config": {"live": live, "socket_path": OVERVIEW_SOCKET_PATH},
    }
    return render(request, "dashboard/overview.html", context)


@login_required
def service_map(request):
    try:
        start, end, live = _window(request)
    except queries.WindowError as exc:
        return render(request, "dashboard/map.html", {"window_error": str(exc)}, status=400)
    drawing = layout.service_map(queries.service_summaries(start, end), queries.edge_summaries(start, end))
    context = _window_context(start, end, live) | {
        "service_map": drawing,
        "nothing_reported": not drawing["nodes"] and _nothing_reported(),
    }
    return render(request, "dashboard/map.html", context)
