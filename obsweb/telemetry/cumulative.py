"""Totals since first seen per Prometheus label set, kept by the ingester for GET /metrics.

Why rows of running totals written by the ingester, not sums of rollups at scrape time:
- Prometheus counters must never go down. Minute rollups are pruned after ROLLUP_RETENTION_DAYS,
  so a sum over them would drop at every prune, and Prometheus reads a drop as a counter reset
  (rate() then adds the whole remaining total as if it had just happened).
- They are written in the transaction that writes the rollups and the IngestedBatch markers, so a
  replayed stream entry adds nothing twice, and any number of ingesters in the consumer group add
  to the same rows (locked with SELECT ... FOR UPDATE on PostgreSQL; two ingesters inserting the
  same new row make one batch fail on the unique constraint, and the ingester retries it, as for
  rollups).
- A scrape reads one row per series instead of merging 7 days of rollup histograms.
- The `le` buckets are counted from each record's own duration, so they are exact. The rollups'
  sketch could not give exact buckets: a sketch bucket straddling an `le` bound cannot be split.

Cardinality: a service gets at most METRICS_MAX_SERIES_PER_SERVICE label sets of its own. Traffic
under a new label set past that goes to the service's overflow set (route or operation "other",
method "_OTHER", no status code). The choice is made once, when a label set first appears, and sticks:
choosing the busiest routes again at every scrape would move counts in and out of "other", and both
series would then go down at times. Within a batch, the busiest new label sets get the free places.
"""

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings

from obsweb.telemetry.bulk import fetch_in, insert_rows, update_rows
from obsweb.telemetry.models import EdgeTotal, ServerTotal
from probes import schema

NS_PER_S = 1_000_000_000
# OpenTelemetry's default explicit bucket bounds for http.server.request.duration, in seconds.
BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
BOUNDS_NS = tuple(round(bound * NS_PER_S) for bound in BOUNDS_S)
# OpenTelemetry: a method the instrumentation does not know is "_OTHER" (it keeps methods bounded).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "_OTHER"
OTHER_NAME = "other"  # the route or operation of a service's overflow label set
FIELDS = ["count", "errors", "duration_sum_s", "buckets"]


@dataclass(slots=True)
class Observed:
    """One batch's share of a label set."""

    count: int = 0
    errors: int = 0
    duration_ns: int = 0  # summed per operation: the histogram's _sum must go with its _count
    buckets: list = field(default_factory=lambda: [0] * (len(BOUNDS_NS) + 1))

    def add(self, duration_ns: int, count: int, error: bool) -> None:
        self.count += count
        self.errors += error
        self.duration_ns += duration_ns * count
        # bisect_left: a duration equal to a bound belongs to it (Prometheus' `le` is <=).
        self.buckets[bisect_left(BOUNDS_NS, duration_ns)] += count

    def merge(self, other: "Observed") -> "Observed":
        self.count += other.count
        self.errors += other.errors
        self.duration_ns += other.duration_ns
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        return self

    def row(self) -> tuple:
        return (self.count, self.errors, self.duration_ns / NS_PER_S, self.buckets)


def _add_to(row, observed: Observed) -> None:
    row.count += observed.count
    row.errors += observed.errors
    row.duration_sum_s += observed.duration_ns / NS_PER_S
    row.buckets = [a + b for a, b in zip(row.buckets, observed.buckets, strict=True)]


def _overflow(key: tuple) -> tuple:
    service_id, protocol = key[:2]
    return (service_id, protocol, OTHER_METHOD if protocol == schema.PROTO_HTTP else "", OTHER_NAME, 0)


class Cumulative:
    """A batch's additions to the totals; `write` adds them in the caller's transaction."""

    def __init__(self):
        self.servers: dict[tuple, Observed] = {}  # (service, protocol, method, route or operation, status)
        self.edges: dict[tuple, Observed] = {}  # (source, target, protocol)

    def add_server(self, endpoint: tuple, duration_ns: int, count: int, status: int, error: bool) -> None:
        """A server-side request record of `endpoint` (aggregate's EndpointKey). Only HTTP's real
        status codes (100-599) and methods are label values, so garbage cannot add series."""
        service, protocol, method, route, operation = endpoint[:5]
        if protocol == schema.PROTO_HTTP:
            method = method if method in HTTP_METHODS else OTHER_METHOD
            key = (service, protocol, method, route, status if 100 <= status <= 599 else 0)
        else:
            key = (service, protocol, "", operation, 0)
        observed = self.servers.get(key)
        if observed is None:
            observed = self.servers[key] = Observed()
        observed.add(duration_ns, count, error)

    def add_edge(self, source: str, target: str, protocol: str, duration_ns: int, count: int, error: bool):
        key = (source, target, protocol)
        observed = self.edges.get(key)
        if observed is None:
            observed = self.edges[key] = Observed()
        observed.add(duration_ns, count, error)

    def write(self, services: dict[str, int]) -> None:
        """Add the batch to the stored totals; `services` maps names to ids (all of them known)."""
        if self.servers:
            self._write_servers(services)
        if self.edges:
            self._write_edges(services)

    def _write_servers(self, services: dict[str, int]) -> None:
        rows = fetch_in(
            ServerTotal.objects.select_for_update(), "service_id", {services[k[0]] for k in self.servers}
        )
        existing = {(r.service_id, r.protocol, r.method, r.name, r.status_code): r for r in rows}
        per_service = Counter(key[0] for key in existing if key != _overflow(key))
        cap = settings.METRICS_MAX_SERIES_PER_SERVICE
        updated, created = {}, {}
        # Busiest first, so that new label sets competing for the last places are chosen by traffic.
        for (service, *rest), observed in sorted(self.servers.items(), key=lambda kv: -kv[1].count):
            key = (services[service], *rest)
            if key not in existing and key not in created:
                if per_service[key[0]] >= cap:
                    key = _overflow(key)
                else:
                    per_service[key[0]] += 1
            row = existing.get(key)
            if row is not None:
                _add_to(row, observed)
                updated[key] = row
            else:
                created.setdefault(key, Observed()).merge(observed)
        update_rows(ServerTotal, list(updated.values()), FIELDS)
        insert_rows(
            ServerTotal,
            ["service", "protocol", "method", "name", "status_code", *FIELDS],
            [(*key, *observed.row()) for key, observed in created.items()],
        )

    def _write_edges(self, services: dict[str, int]) -> None:
        rows = fetch_in(
            EdgeTotal.objects.select_for_update(), "source_id", {services[k[0]] for k in self.edges}
        )
        existing = {(r.source_id, r.target_id, r.protocol): r for r in rows}
        updated, created = [], []
        for (source, target, protocol), observed in self.edges.items():
            key = (services[source], services[target], protocol)
            row = existing.get(key)
            if row is None:
                created.append((*key, *observed.row()))
            else:
                _add_to(row, observed)
                updated.append(row)
        update_rows(EdgeTotal, updated, FIELDS)
        insert_rows(EdgeTotal, ["source", "target", "protocol", *FIELDS], created)
