"""Dashboard pages: server-rendered for the window in `?since=`/`?until=`, live by default."""

from datetime import UTC, datetime

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from obsweb.dashboard import layout
from obsweb.dashboard.constants import (
    CHART_MINUTE_FORMAT,
    LIVE_WINDOW,
    LIVE_WINDOW_LABEL,
    OVERVIEW_SOCKET_PATH,
    SAMPLE_ROWS,
)
from obsweb.fleet.models import Host
from obsweb.telemetry import queries
from obsweb.telemetry.models import Service
from probes import schema


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


@login_required
def service_detail(request, name):
    service = Service.objects.filter(name=name).prefetch_related("hosts").first()
    if service is None:
        return render(request, "dashboard/service_missing.html", {"name": name}, status=404)
    context = {"service": service, "hosts": sorted(host.name for host in service.hosts.all())}
    try:
        start, end, live = _window(request)
    except queries.WindowError as exc:
        return render(request, "dashboard/service.html", context | {"window_error": str(exc)}, status=400)

    timeseries = queries.service_timeseries(name, start, end)
    http = service.protocol in ("", schema.PROTO_HTTP)
    sort = queries.SORT_REQUESTS if http else queries.SORT_TOTAL_TIME
    endpoints = queries.endpoint_summaries(name, start, end, sort=sort) or []
    edges = queries.edge_summaries(start, end)
    samples = {"since": start, "until": end, "service": name, "limit": SAMPLE_ROWS}
    context |= _window_context(start, end, live) | {
        "window": timeseries["window"],
        "charts": _chart_data(timeseries),
        "http_endpoints": [row for row in endpoints if "route" in row],
        "other_endpoints": [_with_target(row) for row in endpoints if "route" not in row],
        "target_name": queries.TARGET_NAMES.get(service.protocol, queries.DEFAULT_TARGET_NAME),
        "callers": [edge for edge in edges if edge["target"] == name],
        "dependencies": [edge for edge in edges if edge["source"] == name],
        "failing": [_sample_row(s) for s in queries.request_samples(error=True, **samples)],
        "slowest": [_sample_row(s) for s in queries.request_samples(slowest_first=True, **samples)],
    }
    return render(request, "dashboard/service.html", context)


def _chart_data(timeseries: dict) -> dict:
    """The per-minute series for static/obsweb/service.js; minutes as plotly reads them (UTC)."""
    keys = ("requests", "errors", "p50_ms", "p90_ms", "p99_ms")
    return {"minutes": [m.strftime(CHART_MINUTE_FORMAT) for m in timeseries["minutes"]]} | {
        key: timeseries[key] for key in keys
    }


def _with_target(row: dict) -> dict:
    """A non-HTTP endpoint row with its table, topic or collection under one key for the template."""
    names = {*queries.TARGET_NAMES.values(), queries.DEFAULT_TARGET_NAME}
    return row | {"target": next((row[name] for name in sorted(names) if name in row), "")}


def _sample_row(attrs: dict) -> dict:
    """What one stored request sample shows in a table: what was asked, how it ended, how long."""
    if attrs.get(schema.HTTP_METHOD):
        route = attrs.get(schema.HTTP_ROUTE) or attrs.get(schema.URL_PATH) or ""
        what = f"{attrs[schema.HTTP_METHOD]} {route}".strip()
    else:
        target = attrs.get(schema.DB_COLLECTION) or attrs.get(schema.MESSAGING_DESTINATION)
        what = " ".join(str(part) for part in (attrs.get(schema.DB_OPERATION), target) if part)
    status = attrs.get(schema.HTTP_STATUS)
    outcome = (
        str(status)
        if status
        else attrs.get(schema.ERROR_TYPE) or ("error" if attrs.get(schema.ERROR) else "")
    )
    ts = attrs.get(schema.TS)
    return {
        "when": datetime.fromtimestamp(ts / 1e9, UTC) if ts else None,
        "what": what,
        "query": attrs.get(schema.DB_QUERY_SUMMARY) or attrs.get(schema.DB_QUERY_TEXT) or "",
        "outcome": outcome,
        "error": bool(attrs.get(schema.ERROR)),
        "duration_ms": attrs[schema.DURATION_NS] / 1e6 if attrs.get(schema.DURATION_NS) is not None else None,
        "host": attrs.get(schema.HOST, ""),
        "trace_id": attrs.get(schema.TRACE_ID) or "",
    }
