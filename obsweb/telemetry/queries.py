"""The read side of telemetry, shared by the JSON API and the dashboard.

Sums come from database aggregation; percentiles come from merging the stored latency
histograms in Python, so they are exact to the sketch's 2 % for any window. Rollups are per
minute (truncated, UTC): a window includes every rollup minute that overlaps it, and rates
divide by the time those minutes cover up to now.
"""

import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import islice

from django.db.models import Q, Sum, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from obsweb.telemetry import histogram, series
from obsweb.telemetry.aggregate import EXTERNAL_PROTOCOL_TCP
from obsweb.telemetry.models import Edge, Endpoint, RequestSample, Rollup, Service, TcpHealth
from probes import schema

DEFAULT_SINCE = "-15m"
_RELATIVE = re.compile(r"^-(\d{1,7})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MINUTE = timedelta(minutes=1)
# What the non-HTTP endpoint's target is called, per protocol (DESIGN.md: API).
TARGET_NAMES = {
    schema.PROTO_POSTGRESQL: "table",
    schema.PROTO_MYSQL: "table",
    schema.PROTO_REDIS: "table",
    schema.PROTO_KAFKA: "topic",
    schema.PROTO_MONGODB: "collection",
}
DEFAULT_TARGET_NAME = "collection"
# How endpoint_summaries may order its rows, each busiest first.
SORT_REQUESTS = "requests"
SORT_TOTAL_TIME = "total_time"  # the sum of durations: where a database spends its time
ENDPOINT_SORTS = (SORT_REQUESTS, SORT_TOTAL_TIME)
HISTOGRAM_CHUNK = 2000  # rows fetched, and histograms decoded, at a time


class WindowError(ValueError):
    """A since/until the API answers with 400; the message says what is accepted."""


def _parse_time(value: str, name: str, now: datetime) -> datetime:
    match = _RELATIVE.match(value)
    if match:
        return now - timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise WindowError(
            f"{name}={value!r} is neither relative (-30s, -15m, -1h, -7d) nor an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# The queries turn a window's ends to UTC and step them by minutes: a day's margin from the ends
# of what a datetime holds keeps that from overflowing (since=0001-01-01T00:00:00+05:00 was a 500).
EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
OUT_OF_RANGE = f"since and until must lie between {EARLIEST.date()} and {LATEST.date()} (UTC)"


def parse_window(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    """(since, until) as aware datetimes: `since` defaults to -15m and `until` to now."""
    now = timezone.now()
    try:
        start = _parse_time(since or DEFAULT_SINCE, "since", now)
        end = _parse_time(until, "until", now) if until else now
    except OverflowError:  # since=-9999999d: before year 1
        raise WindowError(OUT_OF_RANGE) from None
    if start < EARLIEST or end > LATEST:
        raise WindowError(OUT_OF_RANGE)
    if start >= end:
        raise WindowError(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
    return start, end


def _minute_floor(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def _in_window(since: datetime, until: datetime) -> Q:
    """Rollup minutes that overlap [since, until)."""
    return Q(minute__gte=_minute_floor(since), minute__lt=until)


def _covered_seconds(since: datetime, until: datetime) -> float:
    """The time the overlapping minutes cover, up to now: the denominator of a rate."""
    end = _minute_floor(until)
    if end < until:
        end += MINUTE
    end = min(end, max(timezone.now(), until))
    return max((end - _minute_floor(since)).total_seconds(), 1.0)


_ms = series.quantile_ms


def _with_histograms(queryset, *fields: str):
    """(*fields, histogram) of each row, the histogram decoded.

    The stored JSON is fetched as text and a chunk of rows is decoded with one json.loads:
    the JSONField's converter, one call per row, took as long as the merging itself
    (bench/dashboard.py), and the read side handles a row per endpoint and minute.
    """
    rows = queryset.values_list(*fields, Cast("histogram", TextField())).iterator(chunk_size=HISTOGRAM_CHUNK)
    while chunk := list(islice(rows, HISTOGRAM_CHUNK)):
        hists = json.loads("[" + ",".join(row[-1] for row in chunk) + "]")
        for row, hist in zip(chunk, hists, strict=True):
            yield (*row[:-1], hist)


def _merged_histograms(queryset, key: str) -> dict:
    merged = defaultdict(dict)
    for group, hist in _with_histograms(queryset, key):
        histogram.merge(merged[group], hist)
    return merged


def service_summaries(since: datetime, until: datetime) -> list[dict]:
    """One row per non-external service with rollups in the window, busiest first."""
    rollups = Rollup.objects.filter(_in_window(since, until), service__external=False)
    sums = rollups.values("service_id").annotate(
        requests=Sum("count"),
        errors=Sum("errors"),
        client_errors=Sum("count", filter=Q(status_code__gte=400, status_code__lt=500), default=0),
    )
    hists = _merged_histograms(rollups, "service_id")
    services = Service.objects.prefetch_related("hosts").in_bulk([row["service_id"] for row in sums])
    seconds = _covered_seconds(since, until)
    rows = []
    for row in sums:
        service, hist, requests = services[row["service_id"]], hists[row["service_id"]], row["requests"]
        rows.append(
            {
                "name": service.name,
                "hosts": sorted(host.name for host in service.hosts.all()),
                "protocol": service.protocol,
                "requests": requests,
                "rps": round(requests / seconds, 3),
                "errors": row["errors"],
                "client_errors": row["client_errors"],
                "error_rate": row["errors"] / requests if requests else 0,
                "p50_ms": _ms(hist, 0.5),
                "p90_ms": _ms(hist, 0.9),
                "p99_ms": _ms(hist, 0.99),
            }
        )
    rows.sort(key=lambda r: (-r["requests"], r["name"]))
    return rows


def request_sparklines(until: datetime, minutes: int) -> dict[str, list[int]]:
    """Requests per minute of each service over the `minutes` minutes before `until`, oldest
    first (one query; at most minutes x services rows whatever the page's window)."""
    first = _minute_floor(until) - (minutes - 1) * MINUTE
    # Grouped by id, not by name: a join per rollup row cost more than the rest of the query.
    rows = (
        Rollup.objects.filter(minute__gte=first, minute__lte=until)
        .values_list("service_id", "minute")
        .annotate(n=Sum("count"))
    )
    lines: dict[int, list[int]] = defaultdict(lambda: [0] * minutes)
    for service_id, minute, n in rows:
        lines[service_id][int((minute - first) / MINUTE)] += n
    names = dict(Service.objects.filter(id__in=lines).values_list("id", "name"))
    return {names[service_id]: line for service_id, line in lines.items()}


def service_timeseries(service_name: str, since: datetime, until: datetime) -> dict:
    """Requests, errors and p50/p90/p99 of one service for every minute of the window.

    Lists under "minutes", "requests", "errors", "p50_ms", "p90_ms", "p99_ms", oldest first; a
    minute without requests has 0 and None. Under "window", the same numbers for the whole
    window with "rps" and "error_rate", from the same rows (one query for both).
    """
    rows = list(
        _with_histograms(
            Rollup.objects.filter(_in_window(since, until), service__name=service_name),
            "minute",
            "count",
            "errors",
        )
    )
    window = series.totals(rows)
    requests = window["requests"]
    window["rps"] = round(requests / _covered_seconds(since, until), 3)
    window["error_rate"] = window["errors"] / requests if requests else 0
    return series.per_minute(rows, since, until) | {"window": window}


def endpoint_summaries(
    service_name: str, since: datetime, until: datetime, sort: str = SORT_REQUESTS
) -> list[dict] | None:
    """One row per endpoint of the service with rollups in the window; None for an unknown service.

    Rows come busiest first: by requests, or with sort="total_time" by the sum of their durations.
    Each row carries that sum as total_ms; non-HTTP rows the query the endpoint stands for.
    """
    service = Service.objects.filter(name=service_name).first()
    if service is None:
        return None
    rollups = Rollup.objects.filter(_in_window(since, until), service=service)
    by_status = rollups.values("endpoint_id", "status_code").annotate(
        requests=Sum("count"), errors=Sum("errors"), duration_ns=Sum("duration_sum_ns")
    )
    hists = _merged_histograms(rollups, "endpoint_id")
    totals = defaultdict(lambda: {"requests": 0, "errors": 0, "duration_ns": 0, "status_codes": {}})
    for row in by_status:
        total = totals[row["endpoint_id"]]
        total["requests"] += row["requests"]
        total["errors"] += row["errors"]
        total["duration_ns"] += row["duration_ns"]
        codes = total["status_codes"]
        codes[str(row["status_code"])] = codes.get(str(row["status_code"]), 0) + row["requests"]
    ranked = []
    for endpoint in Endpoint.objects.filter(id__in=totals.keys()):
        total, hist = totals[endpoint.id], hists[endpoint.id]
        row = {
            **_endpoint_identity(endpoint),
            "requests": total["requests"],
            "errors": total["errors"],
            "p50_ms": _ms(hist, 0.5),
            "p90_ms": _ms(hist, 0.9),
            "p99_ms": _ms(hist, 0.99),
            "status_codes": dict(sorted(total["status_codes"].items())),
        }
        row["total_ms"] = round(total["duration_ns"] / 1e6, 3)
        busiest = total["duration_ns"] if sort == SORT_TOTAL_TIME else total["requests"]
        name = endpoint.route or endpoint.operation
        ranked.append(((-busiest, name, endpoint.method, endpoint.query, endpoint.target), row))
    ranked.sort(key=lambda pair: pair[0])
    return [row for _, row in ranked]


def _endpoint_identity(endpoint: Endpoint) -> dict:
    if endpoint.protocol == schema.PROTO_HTTP:
        return {"id": endpoint.id, "method": endpoint.method, "route": endpoint.route}
    return {
        "id": endpoint.id,
        "operation": endpoint.operation,
        TARGET_NAMES.get(endpoint.protocol, DEFAULT_TARGET_NAME): endpoint.target,
        "query": endpoint.query,
        # OpenTelemetry's low-cardinality summary, "{operation} {target}", where the record had none
        # (the Redis and Kafka parsers send none).
        "query_summary": endpoint.query_summary or f"{endpoint.operation} {endpoint.target}".strip(),
    }


def edge_summaries(since: datetime, until: datetime, service: Service | None = None) -> list[dict]:
    """One row per (caller, callee, protocol) with traffic in the window, busiest first;
    with `service`, only the calls it made or answered."""
    edges = Edge.objects.filter(_in_window(since, until))
    if service is not None:
        edges = edges.filter(Q(source=service) | Q(target=service))
    sums = edges.values("source_id", "target_id", "protocol").annotate(
        requests=Sum("count"), errors=Sum("errors"), bytes=Sum("bytes"), duration_ns=Sum("duration_sum_ns")
    )
    hists = defaultdict(dict)
    for source, target, protocol, hist in _with_histograms(edges, "source_id", "target_id", "protocol"):
        histogram.merge(hists[source, target, protocol], hist)
    sums = list(sums)
    health = tcp_health(since, until, service)
    # A pair with TCP trouble but no traffic (connects refused, say) still shows, as a tcp edge.
    seen = {(row["source_id"], row["target_id"]) for row in sums}
    sums += [_QUIET_TCP_EDGE | {"source_id": s, "target_id": t} for s, t in health.keys() - seen]
    ids = {row["source_id"] for row in sums} | {row["target_id"] for row in sums}
    services = Service.objects.in_bulk(ids)
    seconds = _covered_seconds(since, until)
    rows = []
    for row in sums:
        source, target = services[row["source_id"]], services[row["target_id"]]
        rows.append(
            {
                "source": source.name,
                "target": target.name,
                "protocol": row["protocol"],
                "requests": row["requests"],
                "errors": row["errors"],
                "p99_ms": _ms(hists[row["source_id"], row["target_id"], row["protocol"]], 0.99),
                "bytes": row["bytes"],
                "total_ms": round(row["duration_ns"] / 1e6, 3),
                "rps": round(row["requests"] / seconds, 3),
                "target_external": target.external,
                "tcp": health.get((row["source_id"], row["target_id"])) or NO_TCP_TROUBLE,
            }
        )
    rows.sort(key=lambda r: (-r["requests"], r["source"], r["target"], r["protocol"]))
    return rows


_QUIET_TCP_EDGE = {"protocol": EXTERNAL_PROTOCOL_TCP, "requests": 0, "errors": 0, "bytes": 0,
                   "duration_ns": 0}  # fmt: skip
NO_TCP_TROUBLE = {"connections": 0, "failures": 0, "failures_refused": 0, "failures_timeout": 0,
                  "retransmits": 0, "resets_sent": 0, "resets_received": 0, "rtt_ms": None}  # fmt: skip


def tcp_health(since: datetime, until: datetime, service: Service | None = None) -> dict[tuple, dict]:
    """(source id, target id) -> that pair's TCP health in the window (NO_TCP_TROUBLE's keys);
    with `service`, only the pairs it is an end of. One query."""
    health = TcpHealth.objects.filter(_in_window(since, until))
    if service is not None:
        health = health.filter(Q(source=service) | Q(target=service))
    fields = [name for name in NO_TCP_TROUBLE if name != "rtt_ms"]
    sums = health.values("source_id", "target_id").annotate(
        **{name: Sum(name) for name in fields}, rtt_sum_us=Sum("rtt_sum_us"), rtt_samples=Sum("rtt_samples")
    )
    return {
        (row["source_id"], row["target_id"]): {name: row[name] for name in fields}
        | {"rtt_ms": _mean_ms(row["rtt_sum_us"] / 1000, row["rtt_samples"])}
        for row in sums
    }


def _mean_ms(total_ms: float, n: int) -> float | None:
    return round(total_ms / n, 3) if n else None


def request_samples(
    service: str | None = None,
    status: int | None = None,
    min_duration_ms: float | None = None,
    limit: int = 100,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    error: bool | None = None,
    slowest_first: bool = False,
) -> list[dict]:
    """Stored request samples, newest first (or slowest first): each one's record attributes plus its "id".

    `error` keeps only failed (True) or only successful (False) requests.
    """
    samples = RequestSample.objects.all()
    if service is not None:
        samples = samples.filter(service__name=service)
    if status is not None:
        samples = samples.filter(status_code=status)
    if min_duration_ms is not None:
        samples = samples.filter(duration_ns__gte=int(min_duration_ms * 1_000_000))
    if since is not None:
        samples = samples.filter(ts__gte=since)
    if until is not None:
        samples = samples.filter(ts__lt=until)
    if error is not None:
        samples = samples.filter(error=error)
    order = ("-duration_ns", "-ts", "-id") if slowest_first else ("-ts", "-id")
    rows = samples.order_by(*order).values_list("id", "attributes")[:limit]
    return [{**attributes, "id": sample_id} for sample_id, attributes in rows]
