"""The traffic the ingester has counted, as Prometheus metric families (served by GET /metrics).

Names follow OpenTelemetry's semantic conventions as Prometheus spells them (dots to underscores,
the unit as a suffix): `http_server_request_duration_seconds` for HTTP, labelled with
`http_request_method`, `http_route` and `http_response_status_code`. The other protocols have no
server-side convention, so they share `obsweb_server_request_duration_seconds` with `protocol`
and `operation` (these are measured at the server, not the client: `db_client_*` would mislead).
Edges, the calls one service made to another as the caller saw them, are `obsweb_edge_*`.

Every value comes from the totals obsweb.telemetry.cumulative keeps since first seen, so counters
only ever go up; a scrape costs two queries, whatever the number of series.

Caps (settings): the METRICS_MAX_SERVICES busiest services and METRICS_MAX_EDGES busiest edges
are exposed and the rest left out, counted in `obsweb_metrics_omitted_series`. Leaving a series
out is safe for counters (it goes stale); folding it into another series would not be, so
per-service label sets are folded into "other" by the ingester instead, once and for good.
"""

from collections import defaultdict
from itertools import accumulate

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from obsweb.telemetry.cumulative import BOUNDS_S
from obsweb.telemetry.models import EdgeTotal, ServerTotal
from probes import schema

LE = [floatToGoString(bound) for bound in BOUNDS_S] + ["+Inf"]
TOTALS = ["count", "errors", "duration_sum_s", "buckets"]


def _buckets(counts: list[int]) -> list[tuple[str, int]]:
    """Stored per-bucket counts as Prometheus' cumulative `le` buckets (the last is +Inf: the count)."""
    return list(zip(LE, accumulate(counts), strict=True))


def _busiest(rows: list[tuple], key, limit: int) -> tuple[list[tuple], int]:
    """The rows of the `limit` busiest groups (by summed count), and how many groups were left out."""
    traffic = defaultdict(int)
    for row in rows:
        traffic[key(row)] += row[-len(TOTALS)]  # each row ends with TOTALS, count first
    if len(traffic) <= limit:
        return rows, 0
    kept = set(sorted(traffic, key=lambda group: (-traffic[group], group))[:limit])
    return [row for row in rows if key(row) in kept], len(traffic) - limit


class TrafficCollector:
    """A prometheus_client collector over the stored totals; register it on a registry of its own."""

    def collect(self):
        servers = list(
            ServerTotal.objects.values_list(
                "service__name", "protocol", "method", "name", "status_code", *TOTALS
            )
        )
        edges = list(EdgeTotal.objects.values_list("source__name", "target__name", "protocol", *TOTALS))
        servers, services_omitted = _busiest(servers, lambda row: row[0], settings.METRICS_MAX_SERVICES)
        edges, edges_omitted = _busiest(edges, lambda row: row[:3], settings.METRICS_MAX_EDGES)
        yield from _server_families(servers)
        yield from _edge_families(edges)
        omitted = GaugeMetricFamily(
            "obsweb_metrics_omitted_series",
            "Services and edges left out of this exposition by METRICS_MAX_SERVICES and METRICS_MAX_EDGES",
            labels=["kind"],
        )
        omitted.add_metric(["service"], services_omitted)
        omitted.add_metric(["edge"], edges_omitted)
        yield omitted


def _server_families(rows):
    http = HistogramMetricFamily(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests, measured at the server's syscalls",
        labels=["service", "http_request_method", "http_route", "http_response_status_code"],
    )
    other = HistogramMetricFamily(
        "obsweb_server_request_duration_seconds",
        "Duration of requests served over protocols other than HTTP (databases, caches, brokers)",
        labels=["service", "protocol", "operation"],
    )
    requests, errors = defaultdict(int), defaultdict(int)
    for service, protocol, method, name, status, count, failed, duration_s, buckets in rows:
        if protocol == schema.PROTO_HTTP:
            # An empty label value is the same as no label to Prometheus: 0 means "no status code".
            labels = [service, method, name, str(status) if status else ""]
            http.add_metric(labels, _buckets(buckets), duration_s)
        else:
            other.add_metric([service, protocol, name], _buckets(buckets), duration_s)
        requests[service, protocol] += count
        errors[service, protocol] += failed
    yield http
    yield other
    yield _counter("obsweb_server_requests", "Requests served", ["service", "protocol"], requests)
    yield _counter(
        "obsweb_server_errors",
        "Requests served that failed: HTTP 5xx and protocol errors (4xx are not errors here)",
        ["service", "protocol"],
        errors,
    )


def _edge_families(rows):
    labels = ["source", "target", "protocol"]
    durations = HistogramMetricFamily(
        "obsweb_edge_request_duration_seconds",
        "Duration of calls between services, as the caller saw them",
        labels=labels,
    )
    requests, errors = {}, {}
    for source, target, protocol, count, failed, duration_s, buckets in rows:
        durations.add_metric([source, target, protocol], _buckets(buckets), duration_s)
        requests[source, target, protocol] = count
        errors[source, target, protocol] = failed
    yield _counter("obsweb_edge_requests", "Calls from one service to another", labels, requests)
    yield _counter("obsweb_edge_errors", "Calls from one service to another that failed", labels, errors)
    yield durations


def _counter(name: str, documentation: str, labels: list[str], values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family
