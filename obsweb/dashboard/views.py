"""Dashboard pages: server-rendered for the window in `?since=`/`?until=`, live by default."""

from datetime import UTC, datetime

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from obsweb.dashboard import first_run, formats, hosts, layout
from obsweb.dashboard.constants import (
    CHART_MINUTE_FORMAT,
    LIVE_WINDOW,
    LIVE_WINDOW_LABEL,
    OVERVIEW_SOCKET_PATH,
    SAMPLE_ROWS,
)
from obsweb.dashboard.overview import service_rows
from obsweb.telemetry import queries, traces, usage
from obsweb.telemetry.aggregate import EXTERNAL_PROTOCOL_TCP
from obsweb.telemetry.models import Endpoint, Service
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


def _first_run(shown: bool) -> dict | None:
    """The getting-started checklist while no service was ever recorded (first_run.py), else None."""
    return first_run.checklist() if not shown and first_run.is_first_run() else None


@require_GET
@login_required
def overview(request):
    try:
        start, end, live = _window(request)
    except queries.WindowError as exc:
        return render(request, "dashboard/overview.html", {"window_error": str(exc)}, status=400)
    services = service_rows(start, end)
    context = _window_context(start, end, live) | {
        "services": services,
        "fleet": hosts.fleet_state(start, end, live=live),
        "first_run": _first_run(bool(services)),
        "live_config": {"live": live, "socket_path": OVERVIEW_SOCKET_PATH},
    }
    return render(request, "dashboard/overview.html", context)


@require_GET
@login_required
def service_map(request):
    try:
        start, end, live = _window(request)
    except queries.WindowError as exc:
        return render(request, "dashboard/map.html", {"window_error": str(exc)}, status=400)
    drawing = layout.service_map(
        queries.service_summaries(start, end),
        queries.edge_summaries(start, end),
        cpu=usage.cpu_percent_by_service(start, end),
    )
    context = _window_context(start, end, live) | {
        "service_map": drawing,
        "first_run": _first_run(bool(drawing["nodes"])),
    }
    return render(request, "dashboard/map.html", context)


@require_GET
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
    edges = queries.edge_summaries(start, end, service=service)
    dependencies = [edge for edge in edges if edge["source"] == name]
    samples = {"since": start, "until": end, "service": name, "limit": SAMPLE_ROWS}
    context |= _window_context(start, end, live) | {
        "window": timeseries["window"],
        "charts": _chart_data(timeseries),
        "http_endpoints": [row for row in endpoints if "route" in row],
        "other_endpoints": [_with_target(row) for row in endpoints if "route" not in row],
        "target_name": queries.TARGET_NAMES.get(service.protocol, queries.DEFAULT_TARGET_NAME),
        "callers": [edge for edge in edges if edge["target"] == name],
        "dependencies": dependencies,
        "bottleneck": _dominant_dependency(dependencies, endpoints),
        "resource_charts": _resource_chart_data(usage.service_resource_series(service, start, end)),
        "tcp_health": _tcp_health_rows(name, edges),
        "queues": usage.queue_rates(start, end, service) if service.protocol in QUEUE_PROTOCOLS else None,
        "failing": [_sample_row(s) for s in queries.request_samples(error=True, **samples)],
        "slowest": [_sample_row(s) for s in queries.request_samples(slowest_first=True, **samples)],
        "live_config": {
            "live": live,
            "socket_path": OVERVIEW_SOCKET_PATH,
            "series_url": reverse("dashboard:service-series", args=[name]),
        },
    }
    return render(request, "dashboard/service.html", context)


@require_GET
@login_required
def service_series(request, name):
    """The live service page's charts and headline numbers, fetched when the ingester says
    there is news (static/obsweb/service.js); numbers formatted as the page formats them."""
    if not Service.objects.filter(name=name).exists():
        return JsonResponse({"detail": f"no service named {name!r}"}, status=404)
    start, end = queries.parse_window(LIVE_WINDOW, None)
    timeseries = queries.service_timeseries(name, start, end)
    window = timeseries["window"]
    stats = {
        "requests": formats.count(window["requests"]),
        "rps": formats.rate(window["rps"]),
        "error_rate": formats.percent(window["error_rate"]),
        "p50_ms": formats.ms(window["p50_ms"]),
        "p90_ms": formats.ms(window["p90_ms"]),
        "p99_ms": formats.ms(window["p99_ms"]),
    }
    return JsonResponse({"charts": _chart_data(timeseries), "stats": stats})


def _dominant_dependency(dependencies: list[dict], endpoints: list[dict]) -> dict | None:
    """The downstream service where this one spends most of its serving time, and that share.

    Calls are made while serving requests, so the calls' summed durations over the requests'
    summed durations is the share of latency spent waiting on that dependency (near enough:
    calls made in parallel or in the background can push it past 100 %, hence the cap)."""
    serving_ms = sum(row["total_ms"] for row in endpoints)
    calls = [edge for edge in dependencies if edge["protocol"] != EXTERNAL_PROTOCOL_TCP]  # connections
    if not calls or not serving_ms:
        return None
    slowest = max(calls, key=lambda edge: edge["total_ms"])
    return {"target": slowest["target"], "share": min(1.0, slowest["total_ms"] / serving_ms)}


def _chart_data(timeseries: dict) -> dict:
    """The per-minute series for static/obsweb/service.js; minutes as plotly reads them (UTC)."""
    keys = ("requests", "errors", "p50_ms", "p90_ms", "p99_ms")
    return {"minutes": [m.strftime(CHART_MINUTE_FORMAT) for m in timeseries["minutes"]]} | {
        key: timeseries[key] for key in keys
    }


QUEUE_PROTOCOLS = (schema.PROTO_KAFKA, schema.PROTO_REDIS)  # services whose page shows queue rates


def _resource_chart_data(resources: dict) -> dict | None:
    """The service's resource series for static/obsweb/service_resources.js; None when no record
    came in the window (the cpu and disk probes off, or the service not running)."""
    keys = [key for key in resources if key != "minutes"]
    if all(value is None for key in keys for value in resources[key]):
        return None
    return {"minutes": [m.strftime(CHART_MINUTE_FORMAT) for m in resources["minutes"]]} | {
        key: resources[key] for key in keys
    }


def _tcp_health_rows(name: str, edges: list[dict]) -> list[dict]:
    """One row per caller or callee whose connections with this service the tcp probe saw:
    connections, failed connects, retransmits, resets and RTT (the same on every protocol of a pair)."""
    rows = {}
    for edge in edges:
        tcp = edge["tcp"]
        if not (tcp["connections"] or tcp["failures"] or tcp["retransmits"] or tcp["resets_sent"]
                or tcp["resets_received"] or tcp["rtt_ms"] is not None):  # fmt: skip
            continue
        upstream = edge["target"] == name
        rows[edge["source"], edge["target"]] = tcp | {
            "peer": edge["source"] if upstream else edge["target"],
            "direction": "caller" if upstream else "callee",
        }
    return sorted(rows.values(), key=lambda row: (row["direction"], row["peer"]))


def _with_target(row: dict) -> dict:
    """A non-HTTP endpoint row with its table, topic or collection under one key for the template."""
    names = {*queries.TARGET_NAMES.values(), queries.DEFAULT_TARGET_NAME}
    return row | {"target": next((row[name] for name in sorted(names) if name in row), "")}


def _sample_row(attrs: dict) -> dict:
    """What one stored request sample shows in a table: what was asked, how it ended, how long."""
    ts = attrs.get(schema.TS)
    return {
        "when": datetime.fromtimestamp(ts / 1e9, UTC) if ts else None,
        "what": traces.span_name(attrs),
        "query": attrs.get(schema.DB_QUERY_TEXT) or attrs.get(schema.DB_QUERY_SUMMARY) or "",
        "outcome": _outcome(attrs),
        "error": bool(attrs.get(schema.ERROR)),
        "duration_ms": attrs[schema.DURATION_NS] / 1e6 if attrs.get(schema.DURATION_NS) is not None else None,
        "host": attrs.get(schema.HOST, ""),
        # Outgoing calls (the caller's view of a failing or slow call) name whom they called.
        "called": traces.callee_name(attrs) if attrs.get(schema.SPAN_KIND) == schema.SPAN_CLIENT else "",
        "trace_id": attrs.get(schema.TRACE_ID) or "",
    }


def _outcome(attrs: dict) -> str:
    """How an exchange ended, in a word: its HTTP status, its protocol's error type, or "error"."""
    status = attrs.get(schema.HTTP_STATUS)
    if status:
        return str(status)
    return attrs.get(schema.ERROR_TYPE) or ("error" if attrs.get(schema.ERROR) else "")


@require_GET
@login_required
def trace_detail(request, trace_id):
    """One request's path as a waterfall: the request, the calls it made, and theirs."""
    path, truncated = traces.request_path(trace_id)
    if not path:
        return render(request, "dashboard/trace_missing.html", {"trace_id": trace_id}, status=404)
    spans = [_path_row(placed) for placed in path]
    context = {
        "trace_id": trace_id,
        "spans": spans,
        "root": spans[0],
        "truncated": truncated,
        "bottleneck": _bottleneck(path),
        "waterfall": [
            {
                k: row[k]
                for k in ("label", "service", "what", "kind", "start_ms", "duration_ms", "error", "depth")
            }
            for row in spans
        ],
    }
    return render(request, "dashboard/trace.html", context)


def _path_row(placed: traces.PathSpan) -> dict:
    sample, attrs = placed.sample, placed.sample.attributes
    return {
        "label": f"{sample.service.name}: {placed.name or sample.span_kind}",
        "service": sample.service.name,
        "what": placed.name,
        "query": attrs.get(schema.DB_QUERY_TEXT) or attrs.get(schema.DB_QUERY_SUMMARY) or "",
        "kind": sample.span_kind,
        "peer": attrs.get(schema.PEER_SERVICE) or "",
        "depth": placed.depth,
        "indent_em": placed.depth * 1.25,
        "start_ms": placed.start_ms,
        "duration_ms": placed.duration_ms,
        "outcome": _outcome(attrs),
        "error": sample.error,
        "host": sample.host,
        "when": sample.ts,
        "trace_id": sample.trace_id,
    }


def _bottleneck(path: list[traces.PathSpan]) -> dict | None:
    """Where the request's time went: the span with the most time of its own (its duration less
    its calls'), so a slow database shows as the database, not as every caller above it. A
    client span's own time is the network, or an untraced callee."""
    own = {id(p): p.duration_ms for p in path}
    for placed in path:
        if placed.parent is not None:
            own[id(placed.parent)] -= placed.duration_ms
    slowest = max(path, key=lambda p: own[id(p)])
    total = path[0].duration_ms
    if len(path) < 2 or not total:
        return None
    client = slowest.sample.span_kind == schema.SPAN_CLIENT
    return {
        "service": slowest.sample.service.name,
        "callee": traces.callee_name(slowest.sample.attributes) if client else "",
        "what": slowest.name,
        "own_ms": max(own[id(slowest)], 0.0),
        "share": min(1.0, max(own[id(slowest)], 0.0) / total),
    }


@require_GET
@login_required
def endpoint_paths(request, name, endpoint_id):
    """Every path through one endpoint as a Sankey, from its recent sampled requests."""
    endpoint = Endpoint.objects.select_related("service").filter(pk=endpoint_id, service__name=name).first()
    if endpoint is None:
        return render(request, "dashboard/service_missing.html", {"name": name}, status=404)
    context = {"service": endpoint.service, "endpoint": endpoint}
    try:
        start, end, live = _window(request)
    except queries.WindowError as exc:
        return render(request, "dashboard/paths.html", context | {"window_error": str(exc)}, status=400)
    paths = traces.endpoint_paths(endpoint.pk, start, end)
    context |= _window_context(start, end, live) | {"paths": paths, "endpoint_name": _endpoint_name(endpoint)}
    return render(request, "dashboard/paths.html", context)


def _endpoint_name(endpoint: Endpoint) -> str:
    if endpoint.route or endpoint.method:
        return f"{endpoint.method} {endpoint.route}".strip()
    return endpoint.query_summary or " ".join(p for p in (endpoint.operation, endpoint.target) if p)
