"""What an incident report says, as one JSON-ready dict (docs/schemas/incident-report.schema.json).

Everything comes from rollups, edges, TCP health, resource use, heartbeats and the few request
samples shown, each query aggregated in the database or cut by a LIMIT, so memory stays bounded
however many samples the incident left (tests/test_incident_report_build.py measures it with 100k).

The report covers the incident with some context: from REPORT_BEFORE before it opened until
REPORT_AFTER after it resolved (or now, while open); TCP health and resource use (host_health.py)
cover the same window. Rollups are per minute, so the window's numbers cover every minute that
overlaps it.
"""

from datetime import UTC, datetime, timedelta

from django.utils import timezone

from obsweb.dashboard import layout
from obsweb.fleet import state
from obsweb.fleet.models import Host
from obsweb.incidents import constants as c
from obsweb.incidents.models import Incident
from obsweb.incidents.report import host_health
from obsweb.telemetry import queries, traces
from obsweb.telemetry.models import RequestSample, Service
from probes import schema

SCHEMA_VERSION = 2  # 2: TCP health and resource use measured
REPORT_BEFORE = timedelta(minutes=15)
REPORT_AFTER = timedelta(minutes=5)
TOP_REQUESTS = 10  # failing and slowest requests shown, each with its request path
MAX_PATH_SPANS = 40  # spans of one request path shown
MAX_CHARTED_SERVICES = 6
MAX_AFFECTED_SERVICES = 50
ROLE_SUBJECT = "subject"
ROLE_CALLER = "caller"
ROLE_CALLEE = "callee"
ROLE_ON_HOST = "on host"


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat() if when else None


def report_window(incident: Incident, now: datetime) -> tuple[datetime, datetime]:
    until = min(now, (incident.resolved_at or now) + REPORT_AFTER)
    return incident.opened_at - REPORT_BEFORE, until


def build(incident: Incident, progress=lambda percent, step: None) -> dict:
    """The report's contents; `progress(percent, step)` is told along the way (0-60)."""
    now = timezone.now()
    since, until = report_window(incident, now)
    progress(10, "summarizing services and calls")
    summaries = {row["name"]: row for row in queries.service_summaries(since, until)}
    edges, roles = affected(incident, since, until)
    services = [summaries[name] | {"role": role} for name, role in roles.items() if name in summaries]
    services += [_quiet_service(name, role) for name, role in roles.items() if name not in summaries]
    subject_totals = summaries.get(incident.subject) if incident.subject_kind == c.SUBJECT_SERVICE else None
    progress(25, "drawing charts")
    charted = list(roles)[:MAX_CHARTED_SERVICES]
    charts = [_chart(name, since, until) for name in charted]
    progress(40, "collecting failing and slowest requests with their paths")
    failing = _requests(incident, since, until, error=True)
    slowest = _requests(incident, since, until, slowest_first=True)
    progress(50, "reading probe state and drop counts")
    hosts = _hosts(roles, incident, since, until, now)
    progress(55, "reading TCP health and resource use")
    tcp = host_health.tcp_health(roles, edges, MAX_CHARTED_SERVICES, since, until, hosts)
    resources = host_health.resource_use(roles, MAX_CHARTED_SERVICES, since, until, hosts)
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": _iso(now),
        "incident": _incident(incident, now),
        "window": {"since": _iso(since), "until": _iso(until)},
        "summary": _summary(incident, subject_totals, charts, now)
        | {
            "affected_services": len(services),
            "affected_edges": len(edges),
        },
        "timeline": [
            {"at": _iso(e.at), "kind": e.kind, "text": e.text, "actor": e.actor}
            for e in incident.events.all()
        ],
        "affected_services": services,
        "affected_edges": edges,
        "service_map": layout.service_map([s for s in services if s["requests"]], edges),
        "charts": charts,
        "failing_requests": failing,
        "slowest_requests": slowest,
        "tcp_health": tcp,
        "resource_use": resources,
        "hosts": hosts,
        "limits": {
            "top_requests": TOP_REQUESTS,
            "path_spans": MAX_PATH_SPANS,
            "charted_services": MAX_CHARTED_SERVICES,
            "affected_services": MAX_AFFECTED_SERVICES,
        },
    }


def _incident(incident: Incident, now: datetime) -> dict:
    return {
        "id": incident.pk,
        "subject_kind": incident.subject_kind,
        "subject": incident.subject,
        "state": incident.state,
        "opened_at": _iso(incident.opened_at),
        "resolved_at": _iso(incident.resolved_at),
        "duration_s": round(incident.duration_s(now), 3),
        "acknowledged_at": _iso(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by.get_username() if incident.acknowledged_by else None,
        "alerts": [
            {
                "rule": a.rule_name,
                "condition": a.condition,
                "unit": a.unit,
                "first_fired_at": _iso(a.first_fired_at),
                "last_fired_at": _iso(a.last_fired_at),
                "last_value": a.last_value,
                "firing": a.firing,
            }
            for a in incident.alerts.all()
        ],
    }


def affected(incident: Incident, since: datetime, until: datetime) -> tuple[list[dict], dict[str, str]]:
    """The calls into and out of the subject in the window, and each service involved with its
    role, the subject (or, for a host, the services on it) first."""
    if incident.subject_kind == c.SUBJECT_SERVICE:
        roles = {incident.subject: ROLE_SUBJECT}
    else:
        on_host = Service.objects.filter(hosts__name=incident.subject, external=False)
        roles = dict.fromkeys(on_host.values_list("name", flat=True)[:MAX_AFFECTED_SERVICES], ROLE_ON_HOST)
    centre = set(roles)
    edges = [
        e for e in queries.edge_summaries(since, until) if e["source"] in centre or e["target"] in centre
    ]
    for edge in edges:
        if len(roles) >= MAX_AFFECTED_SERVICES:
            break
        if edge["target"] in centre:
            roles.setdefault(edge["source"], ROLE_CALLER)
        if edge["source"] in centre:
            roles.setdefault(edge["target"], ROLE_CALLEE)
    edges = [e for e in edges if e["source"] in roles and e["target"] in roles]
    return edges, roles


def _quiet_service(name: str, role: str) -> dict:
    """A service in the report that served nothing in the window (a client, an external peer)."""
    return {
        "name": name,
        "role": role,
        "hosts": [],
        "protocol": "",
        "requests": 0,
        "rps": 0.0,
        "errors": 0,
        "client_errors": 0,
        "error_rate": 0,
        "p50_ms": None,
        "p90_ms": None,
        "p99_ms": None,
    }


def _chart(name: str, since: datetime, until: datetime) -> dict:
    series = queries.service_timeseries(name, since, until)
    keys = ("requests", "errors", "p50_ms", "p90_ms", "p99_ms")
    return {"service": name, "minutes": [_iso(m) for m in series["minutes"]]} | {k: series[k] for k in keys}


def _summary(incident: Incident, totals: dict | None, charts: list[dict], now: datetime) -> dict:
    during = None
    peak = None
    if incident.subject_kind == c.SUBJECT_SERVICE:
        end = incident.resolved_at or now
        window = queries.service_timeseries(incident.subject, incident.opened_at, end)["window"]
        during = {k: window[k] for k in ("requests", "errors", "error_rate", "p50_ms", "p90_ms", "p99_ms")}
        subject_chart = next((ch for ch in charts if ch["service"] == incident.subject), None)
        peak = _peak_error_rate(subject_chart)
    return {
        "headline": _headline(incident),
        "subject_totals": totals,
        "during_incident": during,
        "peak_error_rate": peak,
    }


def _peak_error_rate(chart: dict | None) -> dict | None:
    if not chart:
        return None
    rates = [
        (e / n, m) for m, n, e in zip(chart["minutes"], chart["requests"], chart["errors"], strict=True) if n
    ]
    if not rates:
        return None
    rate, minute = max(rates, key=lambda pair: pair[0])
    return {"minute": minute, "error_rate": rate}


def _headline(incident: Incident) -> str:
    alerts = list(incident.alerts.all())
    what = "; ".join(f"{a.rule_name} ({a.condition})" for a in alerts) or "no rule recorded"
    state = "resolved" if incident.resolved_at else "open"
    return f"{incident.subject_kind} {incident.subject}: {what}. Incident {state}."


def _requests(incident: Incident, since: datetime, until: datetime, **which) -> list[dict]:
    if incident.subject_kind == c.SUBJECT_SERVICE:
        rows = queries.request_samples(
            service=incident.subject, limit=TOP_REQUESTS, since=since, until=until, **which
        )
    else:
        rows = _host_samples(incident.subject, since, until, **which)
    return [_request(row) for row in rows]


def _host_samples(host: str, since, until, error: bool | None = None, slowest_first: bool = False) -> list:
    samples = RequestSample.objects.filter(host=host, ts__gte=since, ts__lt=until)
    if error is not None:
        samples = samples.filter(error=error)
    order = ("-duration_ns", "-ts", "-id") if slowest_first else ("-ts", "-id")
    rows = samples.order_by(*order).values_list("id", "attributes")[:TOP_REQUESTS]
    return [{**attributes, "id": sample_id} for sample_id, attributes in rows]


def _request(attrs: dict) -> dict:
    ts = attrs.get(schema.TS)
    trace_id = attrs.get(schema.TRACE_ID) or ""
    path, truncated = traces.request_path(trace_id) if trace_id else ([], False)
    return {
        "ts": _iso(datetime.fromtimestamp(ts / 1e9, UTC)) if ts else None,
        "service": str(attrs.get(schema.SERVICE) or ""),
        "host": str(attrs.get(schema.HOST) or ""),
        "name": traces.span_name(attrs),
        "url_path": str(attrs.get(schema.URL_PATH) or ""),
        "status_code": _int(attrs.get(schema.HTTP_STATUS)),
        "error_type": str(attrs.get(schema.ERROR_TYPE) or ""),
        "error": bool(attrs.get(schema.ERROR)),
        "duration_ms": attrs[schema.DURATION_NS] / 1e6 if attrs.get(schema.DURATION_NS) is not None else None,
        "trace_id": trace_id,
        "path": [_span(placed) for placed in path[:MAX_PATH_SPANS]],
        "path_truncated": truncated or len(path) > MAX_PATH_SPANS,
    }


def _int(value) -> int | None:
    return value if type(value) is int else None


def _span(placed: traces.PathSpan) -> dict:
    sample = placed.sample
    return {
        "service": sample.service.name,
        "kind": sample.span_kind,
        "name": placed.name,
        "depth": placed.depth,
        "start_offset_ms": round(placed.start_ms, 3),
        "duration_ms": round(placed.duration_ms, 3),
        "status_code": sample.status_code,
        "error": sample.error,
        "host": sample.host,
    }


def _hosts(roles: dict, incident: Incident, since, until, now) -> list[dict]:
    """The hosts of the affected services (the incident's host for a host incident): status,
    probes desired and actual, and the events their agents dropped in the window."""
    names = set(Service.objects.filter(name__in=roles).values_list("hosts__name", flat=True)) - {None}
    if incident.subject_kind == c.SUBJECT_HOST:
        names.add(incident.subject)
    rows = []
    for host in Host.objects.filter(name__in=names).with_drops(since, until).order_by("name"):
        summary = state.host_summary(host, now)
        rows.append(
            {
                "name": host.name,
                "status": summary["status"],
                "last_seen": _iso(host.last_seen),
                "agent_version": host.agent_version,
                "kernel": host.kernel,
                "events_dropped_in_window": host.drops,
                "events_dropped_total": host.events_dropped,
                "probes": {
                    name: {k: probe[k] for k in ("desired", "actual", "error", "throttled")}
                    for name, probe in summary["probes"].items()
                },
            }
        )
    return rows
