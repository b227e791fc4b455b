"""One batch of records, aggregated in memory and then written with a fixed number of statements.

`apply_records(records)` aggregates a batch in memory (one accumulator per row key) and then
writes each row key once: one query fetches the existing rows (locked, on PostgreSQL), one
prepared UPDATE adds to them and one prepared INSERT adds the rest. Per-record work is plain
Python on dicts, so a record costs microseconds and a batch a fixed number of statements.

A record that cannot be used (unknown kind, missing key, wrong type) is counted and skipped,
never failing its batch.
"""

import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.db.models.functions import TruncMinute

from obsweb.fleet.models import AuditEntry, DroppedEvents, Host
from obsweb.telemetry import histogram, tcp_health
from obsweb.telemetry.bulk import fetch_in, insert_rows, update_rows
from obsweb.telemetry.cumulative import Cumulative
from obsweb.telemetry.listeners import Listeners
from obsweb.telemetry.models import Edge, Endpoint, RequestSample, Rollup, Service
from obsweb.telemetry.paths import RecentSpans, Span, connection_key
from obsweb.telemetry.records import (
    NS_PER_MINUTE,
    SkippedRecord,
    _amount,
    _error,
    _jsonable,
    _opt_amount,
    _opt_int,
    _opt_str,
    _req_int,
    _req_str,
    _request_count,
    _text,
    _ts,
    to_datetime,
)
from obsweb.telemetry.resources import Resources
from probes import schema

EXTERNAL_PROTOCOL_TCP = "tcp"  # edges built from flow records

SAMPLE_FIELDS = ["ts", "service", "endpoint", "host", "span_kind", "status_code", "error", "duration_ns",
                 "trace_id", "span_id", "parent_span_id", "connection", "attributes"]  # fmt: skip
HEARTBEAT_FIELDS = ["last_seen", "agent_version", "kernel", "probes", "events_seen", "events_dropped",
                    "events_per_s", "cpu_percent", "stopped"]  # fmt: skip
# db.query.text is cut to the kernel's 1 KiB capture; more than this is no query the probes send.
QUERY_MAX_CHARS = 4096
QUERY_HASH_CHARS = 16


# Row keys use names, not ids, so aggregation needs no database; ids are resolved once per batch.
# EndpointKey: (service, protocol, method, route, operation, target, query_hash)
# RollupKey: (minute_ns, EndpointKey, status_code)
# EdgeKey: (minute_ns, source, target, protocol)


@dataclass(slots=True)
class ServiceSeen:
    last_seen_ns: int = 0
    protocol: str = ""  # set only by server-side records: the protocol the service serves
    external: bool = False
    hosts: set = field(default_factory=set)


@dataclass(slots=True)
class Totals:
    count: int = 0
    errors: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    duration_sum_ns: int = 0
    histogram: dict = field(default_factory=dict)


@dataclass(slots=True)
class SampleCandidate:
    record: dict
    ts: int
    service: str
    endpoint: tuple | None
    status_code: int
    error: bool
    duration_ns: int
    connection: str = ""
    span: Span | None = None  # with `recent`: its place in request paths
    service_id: int | None = None  # resolved when its batch is written; a later batch may keep it
    endpoint_id: int | None = None


@dataclass
class Applied:
    """What one `apply_records` call wrote."""

    records: int = 0
    request_records: int = 0
    latest_request_ts: int | None = None
    skipped: Counter = field(default_factory=Counter)  # reason -> records
    ignored: int = 0  # records deliberately not stored (server-side close flows, unknown flow events)
    heartbeats: int = 0  # agent records applied to their hosts
    # Hosts whose worker should be told its desired state again (obsweb.fleet.control): it just
    # registered, or it reports a desired state that is not the database's (Redis lost the hash).
    hosts_to_tell: set = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Exchange:
    """What every request record says, read and checked once for both ends of a call."""

    ts: int
    service: str
    host: str
    protocol: str
    duration: int
    count: int
    status: int
    error: bool
    request_bytes: int
    response_bytes: int


def _exchange(r: dict) -> Exchange:
    status = _opt_int(r, schema.HTTP_STATUS) or 0
    return Exchange(
        ts=_ts(r),
        service=_req_str(r, schema.SERVICE),
        host=_req_str(r, schema.HOST),
        protocol=_req_str(r, schema.PROTOCOL, 32),
        duration=_amount(r, schema.DURATION_NS),
        count=_request_count(r),
        status=status,
        error=_error(r, status),
        request_bytes=_opt_amount(r, schema.REQUEST_BYTES),
        response_bytes=_opt_amount(r, schema.RESPONSE_BYTES),
    )


class Batch:
    """Accumulates one batch of records per row key; `write()` then stores it.

    With `recent` (the ingester's spans of the last seconds), a sampled request is stored with
    its whole path: the calls it made and the callers that made it, on any service.
    """

    def __init__(self, recent: RecentSpans | None = None, listeners: Listeners | None = None):
        self.recent = recent
        self.listeners = listeners  # with it, calls to another host resolve to the service there
        self.arrived: list[Span] = []  # this batch's spans, in arrival order (with `recent`)
        self.samples_per_minute = settings.SAMPLES_PER_ENDPOINT_MINUTE
        self.slow_ns = settings.SLOW_REQUEST_MS * 1_000_000
        self.services: dict[str, ServiceSeen] = {}
        self.rollups: dict[tuple, Totals] = {}
        self.queries: dict[tuple, tuple[str, str]] = {}  # EndpointKey -> (query, summary), first seen
        self.edges: dict[tuple, Totals] = {}
        self.kept: list[SampleCandidate] = []  # errors and slow requests: all of them
        self.reservoir: dict[tuple, list[SampleCandidate]] = {}  # (EndpointKey, minute_ns) -> a few
        self.agents: list[dict] = []
        self.resources = Resources()
        self.health = tcp_health.Health()
        self.cumulative = Cumulative()  # totals since first seen, for GET /metrics
        self.applied = Applied()
        self._add = {
            (schema.KIND_REQUEST, schema.SPAN_SERVER): self._add_server_request,
            (schema.KIND_REQUEST, schema.SPAN_CLIENT): self._add_client_request,
            (schema.KIND_FLOW, schema.SPAN_CLIENT): self._add_client_flow,
            (schema.KIND_FLOW, schema.SPAN_SERVER): self._add_server_flow,
        }

    def add(self, record: dict) -> None:
        kind = record.get(schema.KIND)
        if _not_stored(kind, record):
            self.applied.ignored += 1
            return
        try:
            if kind == schema.KIND_AGENT:
                self._add_agent(record)
            elif kind == schema.KIND_RESOURCE:
                self._add_resource(record)
            else:
                add = self._add.get((kind, record.get(schema.SPAN_KIND)))
                if add is None:
                    if kind in schema.KINDS:
                        span_kind = str(record.get(schema.SPAN_KIND))[:40]  # a sender's text: cut
                        raise SkippedRecord(f"{kind} record with span.kind {span_kind!r}")
                    raise SkippedRecord(f"unknown kind {str(kind)[:40]!r}")
                add(record)
        except SkippedRecord as exc:
            self.applied.skipped[str(exc)] += 1
            return
        self.applied.records += 1

    def _service(self, name: str, ts: int, host: str | None = None) -> ServiceSeen:
        seen = self.services.get(name)
        if seen is None:
            seen = self.services[name] = ServiceSeen()
        if ts > seen.last_seen_ns:
            seen.last_seen_ns = ts
        if host is not None:
            seen.hosts.add(host)
        return seen

    def _target(self, record: dict, ts: int) -> str:
        """The callee: the resolved peer service (by the caller's worker, else by `listeners`),
        else an external node named `address:port`."""
        peer = _opt_str(record, schema.PEER_SERVICE)
        address = _req_str(record, schema.SERVER_ADDRESS, 200) if not peer else ""
        port = _req_int(record, schema.SERVER_PORT) if not peer else 0
        if not peer and self.listeners is not None:
            peer = self.listeners.service_at(address, port)
        if peer:
            self._service(peer, 0)  # exists as a service, but was not seen serving in this record
            return peer
        name = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self._service(name, ts).external = True
        return name

    def _add_server_request(self, r: dict) -> None:
        x = _exchange(r)
        if x.protocol == schema.PROTO_HTTP:
            query = summary = ""
            method, route = _opt_str(r, schema.HTTP_METHOD, 32), _opt_str(r, schema.HTTP_ROUTE)
            endpoint = (x.service, x.protocol, method, route, "", "", "")
        else:
            target = _opt_str(r, schema.DB_COLLECTION) or _opt_str(r, schema.MESSAGING_DESTINATION)
            query = _opt_str(r, schema.DB_QUERY_TEXT, QUERY_MAX_CHARS)
            summary = _opt_str(r, schema.DB_QUERY_SUMMARY)
            operation = _opt_str(r, schema.DB_OPERATION, 64)
            endpoint = (x.service, x.protocol, "", "", operation, target, query_hash(query))

        self._service(x.service, x.ts, x.host).protocol = x.protocol
        if self.listeners is not None:
            self.listeners.learn(r.get(schema.SERVER_ADDRESS), r.get(schema.SERVER_PORT), x.service)
        minute = x.ts - x.ts % NS_PER_MINUTE
        key = (minute, endpoint, x.status)
        totals = self.rollups.get(key)
        if totals is None:
            totals = self.rollups[key] = Totals()
            if query or summary:
                self.queries.setdefault(endpoint, (query, summary))
        _tally(totals, x)
        self.cumulative.add_server(endpoint, x.duration, x.count, x.status, x.error)
        self._note_request(x.ts)

        sample = self._candidate(r, x, endpoint)
        if self._worth_keeping(x):
            self.kept.append(sample)
        else:
            few = self.reservoir.setdefault((endpoint, minute), [])
            if len(few) < self.samples_per_minute:
                few.append(sample)

    def _add_client_request(self, r: dict) -> None:
        x = _exchange(r)
        target = self._target(r, x.ts)
        self._service(x.service, x.ts, x.host)
        _tally(self._edge(x.ts, x.service, target, x.protocol), x)
        self.cumulative.add_edge(x.service, target, x.protocol, x.duration, x.count, x.error)
        self._note_request(x.ts)
        # The caller's view of a failing or slow call is kept: for external callees it is the only one.
        # Other calls are kept as part of a sampled request's path (with `recent`), never alone.
        worth_keeping = self._worth_keeping(x)
        if worth_keeping or self.recent is not None:
            sample = self._candidate(r, x, None)
            if worth_keeping:
                self.kept.append(sample)

    def _candidate(self, r: dict, x: Exchange, endpoint: tuple | None) -> SampleCandidate:
        connection = connection_key(r)
        sample = SampleCandidate(r, x.ts, x.service, endpoint, x.status, x.error, x.duration, connection)
        if self.recent is not None:
            span = Span(
                span_id=_text(r.get(schema.SPAN_ID), 16),
                parent_span_id=_text(r.get(schema.PARENT_SPAN_ID), 16),
                kind=r[schema.SPAN_KIND],
                connection=connection,
                start=x.ts,
                end=x.ts + x.duration,
                item=sample,
            )
            self.recent.add(span, time.monotonic_ns())
            self.arrived.append(span)
            sample.span = span
        return sample

    def _worth_keeping(self, x: Exchange) -> bool:
        """Every failing, client-erroring or slow request is kept whole."""
        return x.error or x.status >= 400 or x.duration > self.slow_ns

    def _add_client_flow(self, r: dict) -> None:
        ts = _ts(r)
        source = _req_str(r, schema.SERVICE)
        host = _req_str(r, schema.HOST)
        if r.get(schema.FLOW_EVENT) == schema.FLOW_EVENT_HEALTH:
            trouble = tcp_health.read(r)
            self._service(source, ts, host)
            self.health.add(ts, source, self._target(r, ts), trouble)
            return
        sent = _amount(r, schema.FLOW_BYTES_SENT)
        received = _amount(r, schema.FLOW_BYTES_RECEIVED)
        duration = _amount(r, schema.FLOW_DURATION_NS)
        target = self._target(r, ts)

        self._service(source, ts, host)
        totals = self._edge(ts, source, target, EXTERNAL_PROTOCOL_TCP)
        totals.count += 1  # one connection
        totals.request_bytes += sent
        totals.response_bytes += received
        totals.duration_sum_ns += duration
        histogram.add(totals.histogram, duration)
        self.health.edge(ts, source, target).connections += 1

    def _add_server_flow(self, r: dict) -> None:
        """A server's health record (its close records are not stored: see _not_stored), on the
        edge from its client: the client's service when resolved, else the client's address
        (its port is ephemeral: one node per connection would flood the map)."""
        ts = _ts(r)
        target = _req_str(r, schema.SERVICE)
        host = _req_str(r, schema.HOST)
        trouble = tcp_health.read(r)
        source = _opt_str(r, schema.PEER_SERVICE)
        if source:
            self._service(source, 0)
        else:
            source = _req_str(r, schema.CLIENT_ADDRESS, 200)
            self._service(source, ts).external = True
        self._service(target, ts, host)
        self.health.add(ts, source, target, trouble)

    def _add_resource(self, r: dict) -> None:
        ts = r.get(schema.TS)
        service = self.resources.add(r)
        if service is not None:
            self._service(service, ts, _req_str(r, schema.HOST))

    def _add_agent(self, r: dict) -> None:
        _ts(r)
        _req_str(r, schema.HOST)
        _req_int(r, schema.AGENT_EVENTS_SEEN)
        _opt_int(r, schema.AGENT_EVENTS_DROPPED)
        _opt_int(r, schema.AGENT_RECORDS_DROPPED)
        _opt_str(r, schema.AGENT_VERSION, 64)
        _opt_str(r, schema.AGENT_KERNEL, 128)
        probes = r.get(schema.AGENT_PROBES)
        if probes is not None and not isinstance(probes, dict):
            raise SkippedRecord(f"{schema.AGENT_PROBES} is {type(probes).__name__}, not a map")
        self.agents.append(r)

    def _edge(self, ts: int, source: str, target: str, protocol: str) -> Totals:
        key = (ts - ts % NS_PER_MINUTE, source, target, protocol)
        totals = self.edges.get(key)
        if totals is None:
            totals = self.edges[key] = Totals()
        return totals

    def _note_request(self, ts: int) -> None:
        applied = self.applied
        applied.request_records += 1
        if applied.latest_request_ts is None or ts > applied.latest_request_ts:
            applied.latest_request_ts = ts

    # --- writing ----------------------------------------------------------------------------

    def write(self) -> Applied:
        """Store the batch: a fixed number of statements per table, whatever the record count."""
        with transaction.atomic():
            hosts = _ensure_hosts(
                {h for seen in self.services.values() for h in seen.hosts}
                | {_req_str(r, schema.HOST) for r in self.agents}
                | self.resources.hosts()
            )
            services = self._write_services(hosts)
            endpoints = self._ensure_endpoints(services)
            self._write_rollups(services, endpoints)
            self._write_edges(services)
            self.cumulative.write(services)
            self.health.write(services)
            self.resources.write(hosts, services)
            self._write_samples(services, endpoints)
            self._write_agents(hosts)
        return self.applied

    def _write_services(self, hosts: dict[str, int]) -> dict[str, int]:
        if not self.services:
            return {}
        existing = {s.name: s for s in fetch_in(Service.objects.all(), "name", self.services)}
        created = [
            Service(
                name=name,
                external=seen.external,
                protocol=seen.protocol,
                last_seen=to_datetime(seen.last_seen_ns) if seen.last_seen_ns else None,
            )
            for name, seen in self.services.items()
            if name not in existing
        ]
        if created:
            # Another ingester may create the same service concurrently: ignore, then read the ids.
            Service.objects.bulk_create(created, ignore_conflicts=True)
            existing.update(
                (s.name, s) for s in fetch_in(Service.objects.all(), "name", [s.name for s in created])
            )
        changed = []
        for name, seen in self.services.items():
            service = existing[name]
            last_seen = to_datetime(seen.last_seen_ns) if seen.last_seen_ns else None
            moved = last_seen is not None and (service.last_seen is None or last_seen > service.last_seen)
            if moved:
                service.last_seen = last_seen
            if seen.protocol and seen.protocol != service.protocol:
                service.protocol = seen.protocol
                moved = True
            if moved:
                changed.append(service)
        if changed:
            update_rows(Service, changed, ["last_seen", "protocol"])
        links = [
            Service.hosts.through(service_id=existing[name].id, host_id=hosts[h])
            for name, seen in self.services.items()
            for h in seen.hosts
        ]
        if links:
            Service.hosts.through.objects.bulk_create(links, ignore_conflicts=True)
        return {name: service.id for name, service in existing.items()}

    def _ensure_endpoints(self, services: dict[str, int]) -> dict[tuple, int]:
        wanted = {key[1] for key in self.rollups}
        if not wanted:
            return {}
        service_ids = {services[key[0]] for key in wanted}
        names = {services[key[0]]: key[0] for key in wanted}

        def fetch(ids):
            rows = fetch_in(
                Endpoint.objects.values_list(
                    "id", "service_id", "protocol", "method", "route", "operation", "target", "query_hash"
                ),
                "service_id",
                ids,
            )
            return {(names[row[1]], *row[2:]): row[0] for row in rows}

        known = fetch(service_ids)
        missing = wanted - known.keys()
        if missing:
            Endpoint.objects.bulk_create(
                [self._new_endpoint(key, services) for key in missing], ignore_conflicts=True
            )
            known = fetch({services[key[0]] for key in missing}) | known
        return known

    def _new_endpoint(self, key: tuple, services: dict[str, int]) -> Endpoint:
        service, protocol, method, route, operation, target, digest = key
        query, summary = self.queries.get(key, ("", ""))
        return Endpoint(
            service_id=services[service],
            protocol=protocol,
            method=method,
            route=route,
            operation=operation,
            target=target,
            query=query,
            query_hash=digest,
            query_summary=summary,
        )

    def _write_rollups(self, services: dict[str, int], endpoints: dict[tuple, int]) -> None:
        if not self.rollups:
            return
        rows = fetch_in(
            Rollup.objects.select_for_update().filter(minute__in={_minute(key[0]) for key in self.rollups}),
            "endpoint_id",
            {endpoints[key[1]] for key in self.rollups},
        )
        existing = {(row.minute, row.endpoint_id, row.status_code): row for row in rows}
        updated, created = [], []
        for (minute_ns, endpoint, status), totals in self.rollups.items():
            minute, endpoint_id = _minute(minute_ns), endpoints[endpoint]
            row = existing.get((minute, endpoint_id, status))
            if row is None:
                created.append(
                    (minute, endpoint_id, services[endpoint[0]], status, totals.count, totals.errors,
                     totals.request_bytes, totals.response_bytes, totals.duration_sum_ns, totals.histogram)
                )  # fmt: skip
            else:
                row.count += totals.count
                row.errors += totals.errors
                row.request_bytes += totals.request_bytes
                row.response_bytes += totals.response_bytes
                row.duration_sum_ns += totals.duration_sum_ns
                histogram.merge(row.histogram, totals.histogram)
                updated.append(row)
        fields = ["count", "errors", "request_bytes", "response_bytes", "duration_sum_ns", "histogram"]
        update_rows(Rollup, updated, fields)
        insert_rows(Rollup, ["minute", "endpoint", "service", "status_code", *fields], created)

    def _write_edges(self, services: dict[str, int]) -> None:
        if not self.edges:
            return
        rows = fetch_in(
            Edge.objects.select_for_update().filter(minute__in={_minute(key[0]) for key in self.edges}),
            "source_id",
            {services[key[1]] for key in self.edges},
        )
        existing = {(row.minute, row.source_id, row.target_id, row.protocol): row for row in rows}
        updated, created = [], []
        for (minute_ns, source, target, protocol), totals in self.edges.items():
            key = (_minute(minute_ns), services[source], services[target], protocol)
            row = existing.get(key)
            traffic = totals.request_bytes + totals.response_bytes
            if row is None:
                created.append(
                    (*key, totals.count, totals.errors, traffic, totals.duration_sum_ns, totals.histogram)
                )
            else:
                row.count += totals.count
                row.errors += totals.errors
                row.bytes += traffic
                row.duration_sum_ns += totals.duration_sum_ns
                histogram.merge(row.histogram, totals.histogram)
                updated.append(row)
        fields = ["count", "errors", "bytes", "duration_sum_ns", "histogram"]
        update_rows(Edge, updated, fields)
        insert_rows(Edge, ["minute", "source", "target", "protocol", *fields], created)

    def _write_samples(self, services: dict[str, int], endpoints: dict[tuple, int]) -> None:
        chosen = list(self.kept)
        if self.reservoir:
            stored = self._reservoir_stored(endpoints)
            for (endpoint, minute_ns), few in self.reservoir.items():
                room = self.samples_per_minute - stored.get((endpoints[endpoint], _minute(minute_ns)), 0)
                chosen.extend(few[: max(room, 0)])
        for c in chosen if self.recent is None else (span.item for span in self.arrived):
            c.service_id = services[c.service]
            c.endpoint_id = endpoints[c.endpoint] if c.endpoint else None
        if self.recent is not None:
            chosen = [span.item for span in self.recent.keep_paths([c.span for c in chosen], self.arrived)]
        insert_rows(
            RequestSample,
            SAMPLE_FIELDS,
            [
                (
                    to_datetime(c.ts),
                    c.service_id,
                    c.endpoint_id,
                    _req_str(c.record, schema.HOST),
                    c.record[schema.SPAN_KIND],
                    c.status_code,
                    c.error,
                    c.duration_ns,
                    _text(c.record.get(schema.TRACE_ID), 32),
                    _text(c.record.get(schema.SPAN_ID), 16),
                    _text(c.record.get(schema.PARENT_SPAN_ID), 16),
                    c.connection,
                    _jsonable(c.record),
                )
                for c in chosen
            ],
        )

    def _reservoir_stored(self, endpoints: dict[tuple, int]) -> dict[tuple, int]:
        """Reservoir samples already stored per (endpoint id, minute), so the bound holds across batches."""
        minutes = [key[1] for key in self.reservoir]
        rows = fetch_in(
            RequestSample.objects.filter(
                ts__gte=to_datetime(min(minutes)),
                ts__lt=to_datetime(max(minutes) + NS_PER_MINUTE),
                error=False,
                status_code__lt=400,
                duration_ns__lte=self.slow_ns,
            )
            .annotate(minute=TruncMinute("ts", tzinfo=UTC))
            .values("endpoint_id", "minute")
            .annotate(n=Count("id"))
            .values_list("endpoint_id", "minute", "n"),
            "endpoint_id",
            {endpoints[key[0]] for key in self.reservoir},
        )
        return {(endpoint_id, minute): n for endpoint_id, minute, n in rows}

    def _write_agents(self, hosts: dict[str, int]) -> None:
        if not self.agents:
            return
        names = {_req_str(r, schema.HOST) for r in self.agents}
        rows = {h.name: h for h in Host.objects.filter(id__in={hosts[name] for name in names})}
        changed, drops, audits = {}, [], []
        for r in sorted(self.agents, key=lambda r: r[schema.TS]):
            host = rows[_req_str(r, schema.HOST)]
            if host.last_seen is None or _drifted(host, r):
                self.applied.hosts_to_tell.add(host.name)
            if _heartbeat(host, r, drops, audits):
                changed[host.name] = host
                self.applied.heartbeats += 1
        update_rows(Host, list(changed.values()), HEARTBEAT_FIELDS)
        DroppedEvents.objects.bulk_create(drops)
        AuditEntry.objects.bulk_create(audits)


def _tally(totals: Totals, x: Exchange) -> None:
    """Add one request record standing for `count` operations (pipelined ones) to `totals`.

    Every operation gets the record's duration in the histogram, so percentiles are per operation;
    errors and the duration sum are per record: one failing record is one error, and the sum is
    the time the exchanges took (what "top queries by total time" ranks), not count times it.
    """
    totals.count += x.count
    totals.errors += x.error
    totals.request_bytes += x.request_bytes
    totals.response_bytes += x.response_bytes
    totals.duration_sum_ns += x.duration
    histogram.add(totals.histogram, x.duration, x.count)


def _not_stored(kind, record: dict) -> bool:
    """Records that are valid but deliberately not stored (counted as ignored, not as skipped)."""
    if kind == schema.KIND_FLOW:
        # Server-side close flows: the client side of the same connection gives the edge when it
        # is traced, and when only the server side is, its request records still count the traffic.
        # Health events are stored from both ends (each sees its own retransmits and resets).
        # Other events: the close event carries the connection's final totals.
        if record.get(schema.FLOW_EVENT) == schema.FLOW_EVENT_HEALTH:
            return False
        return (
            record.get(schema.SPAN_KIND) == schema.SPAN_SERVER
            or record.get(schema.FLOW_EVENT, schema.FLOW_EVENT_CLOSE) != schema.FLOW_EVENT_CLOSE
        )
    return False


def _heartbeat(host: Host, r: dict, drops: list[DroppedEvents], audits: list[AuditEntry]) -> bool:
    """Apply one agent heartbeat to `host`, adding new drops it reports to `drops` and the probes
    its worker throttled or let run again to `audits`; False for one older than what is stored."""
    ts = r[schema.TS]
    seen = r[schema.AGENT_EVENTS_SEEN]
    when = to_datetime(ts)
    if host.last_seen is not None and when <= host.last_seen:
        return False
    dropped = (r.get(schema.AGENT_EVENTS_DROPPED) or 0) + (r.get(schema.AGENT_RECORDS_DROPPED) or 0)
    if new_drops := DroppedEvents.from_heartbeat(host, when, seen, dropped):
        drops.append(new_drops)
    if host.last_seen is not None and seen >= host.events_seen:
        elapsed_s = (when - host.last_seen).total_seconds()
        host.events_per_s = (seen - host.events_seen) / elapsed_s
    else:
        host.events_per_s = 0.0  # first heartbeat, or the worker restarted and its counters did
    host.last_seen = when
    host.events_seen = seen
    host.events_dropped = dropped
    host.agent_version = _opt_str(r, schema.AGENT_VERSION, 64)
    host.kernel = _opt_str(r, schema.AGENT_KERNEL, 128)
    probes = _jsonable(r.get(schema.AGENT_PROBES) or {})
    audits.extend(_throttle_changes(host, host.probes, probes, when))
    host.probes = probes
    host.cpu_percent = _percent(r.get(schema.AGENT_CPU_PERCENT))
    host.stopped = r.get(schema.AGENT_STOPPING) is True
    return True


def _throttled(probes: dict, probe: str) -> str:
    """Why the worker switched `probe` off over its CPU budget, "" when it did not."""
    state = probes.get(probe)
    reason = state.get("throttled") if isinstance(state, dict) else None
    return reason if isinstance(reason, str) else ""


def _throttle_changes(host: Host, before: dict, after: dict, when: datetime) -> list[AuditEntry]:
    """An audit entry per probe the worker throttled (off, with its reason) or let run again (on)."""
    actor = f"agent {host.name}"[:255]
    entries = []
    for probe in sorted(before.keys() | after.keys(), key=str):
        was, now = _throttled(before, probe), _throttled(after, probe)
        if bool(was) == bool(now):
            continue
        old, new, reason = ("on", "off", now) if now else ("off", "on", f"no longer throttled (was: {was})")
        entries.append(
            AuditEntry(
                at=when,
                actor=actor,
                host=host,
                setting=str(probe)[:64],
                probe=str(probe)[:32],
                old=old,
                new=new,
                reason=reason,
            )
        )
    return entries


def _drifted(host: Host, r: dict) -> bool:
    """The worker reports a desired probe state or CPU budget other than the database's."""
    probes = r.get(schema.AGENT_PROBES)
    if isinstance(probes, dict):
        for probe, state in probes.items():
            desired = state.get("desired") if isinstance(state, dict) else None
            if probe in schema.PROBES and type(desired) is bool and desired != host.wants(probe):
                return True
    if schema.AGENT_CPU_BUDGET in r:
        return _percent(r[schema.AGENT_CPU_BUDGET]) != host.cpu_budget_percent
    return False


def _percent(value) -> float | None:
    """A CPU share as reported, None when absent or not a finite number >= 0 (never failing the
    heartbeat: its liveness matters more than one figure)."""
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _ensure_hosts(names: set[str]) -> dict[str, int]:
    if not names:
        return {}
    known = dict(fetch_in(Host.objects.values_list("name", "id"), "name", names))
    missing = names - known.keys()
    if missing:
        Host.objects.bulk_create([Host(name=name) for name in missing], ignore_conflicts=True)
        known.update(fetch_in(Host.objects.values_list("name", "id"), "name", missing))
    return known


_query_hashes: dict[str, str] = {}


def query_hash(query: str) -> str:
    """The first 16 hex digits of the query text's sha256, "" for no text: part of an endpoint's identity.

    Memoized: the same few normalized queries recur constantly, and a dict lookup costs a fifth
    of hashing a 1 KiB text.
    """
    if not query:
        return ""
    digest = _query_hashes.get(query)
    if digest is None:
        if len(_query_hashes) > 10_000:
            _query_hashes.clear()
        digest = _query_hashes[query] = hashlib.sha256(query.encode()).hexdigest()[:QUERY_HASH_CHARS]
    return digest


_minutes: dict[int, datetime] = {}


def _minute(minute_ns: int) -> datetime:
    dt = _minutes.get(minute_ns)
    if dt is None:
        if len(_minutes) > 10_000:
            _minutes.clear()
        dt = _minutes[minute_ns] = to_datetime(minute_ns)
    return dt


def apply_records(records) -> Applied:
    """Aggregate and store `records` (an iterable of dicts) in one transaction."""
    batch = Batch()
    for record in records:
        batch.add(record)
    return batch.write()
