"""From stream entries to rows: the ingester's logic, testable without the command loop.

Two layers:
- `apply_records(records)` aggregates a batch in memory (one accumulator per row key) and then
  writes each row key once: one query fetches the existing rows (locked, on PostgreSQL), one
  prepared UPDATE adds to them and one prepared INSERT adds the rest. Per-record work is plain
  Python on dicts, so a record costs microseconds and a batch a fixed number of statements.
- `Ingester` reads the Redis Stream with a consumer group, writes a set of entries in one
  transaction together with their `IngestedBatch` rows (so a replay changes nothing),
  acknowledges after the commit, reclaims entries left pending by dead consumers, and
  fans a throttled "new data" signal out to the dashboard.

A record that cannot be used (unknown kind, missing key, wrong type) is counted and skipped,
never failing its batch; an entry that cannot be decoded is counted, logged and acknowledged,
never blocking the entries after it.
"""

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import redis
from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import Count
from django.db.models.functions import TruncMinute

from obsweb.dashboard import live
from obsweb.fleet.models import Host
from obsweb.telemetry import histogram
from obsweb.telemetry.models import Edge, Endpoint, IngestedBatch, RequestSample, Rollup, Service
from probes import schema

log = logging.getLogger(__name__)

NS_PER_S = 10**9
NS_PER_MINUTE = 60 * NS_PER_S
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A ts outside 2000..2100 is a corrupt record, and would overflow datetime well before 2**63.
TS_MIN = 946_684_800 * NS_PER_S
TS_MAX = 4_102_444_800 * NS_PER_S
EXTERNAL_PROTOCOL_TCP = "tcp"  # edges built from flow records
FLOW_EVENT_CLOSE = "close"  # the flow event that carries a connection's final totals
SQL_CHUNK = 500  # ids per IN (...) list: well below every backend's parameter limit
SAMPLE_FIELDS = ["ts", "service", "endpoint", "host", "span_kind", "status_code", "error", "duration_ns",
                 "trace_id", "span_id", "parent_span_id", "attributes"]  # fmt: skip
HEARTBEAT_FIELDS = ["last_seen", "agent_version", "kernel", "probes", "events_seen", "events_dropped",
                    "events_per_s"]  # fmt: skip


class SkippedRecord(Exception):
    """A record the ingester cannot use; the message is the reason, logged once per minute."""


# --- reading record attributes --------------------------------------------------------------


def _req_int(record: dict, key: str) -> int:
    value = record.get(key)
    if type(value) is not int:  # not isinstance: a bool is an int
        if value is None:
            raise SkippedRecord(f"missing {key}")
        raise SkippedRecord(f"{key} is {type(value).__name__}, not int")
    return value


def _opt_int(record: dict, key: str) -> int | None:
    value = record.get(key)
    if value is None or type(value) is int:
        return value
    raise SkippedRecord(f"{key} is {type(value).__name__}, not int")


def _req_str(record: dict, key: str, max_length: int = 255) -> str:
    value = record.get(key)
    if type(value) is not str or not value:
        if value is None or value == "":
            raise SkippedRecord(f"missing {key}")
        raise SkippedRecord(f"{key} is {type(value).__name__}, not str")
    return value[:max_length]


def _opt_str(record: dict, key: str, max_length: int = 255) -> str:
    """The value, cut to the column's length (a longer one would fail the batch on PostgreSQL), or ""."""
    value = record.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise SkippedRecord(f"{key} is {type(value).__name__}, not str")
    return value[:max_length]


def _ts(record: dict) -> int:
    ts = _req_int(record, schema.TS)
    if not TS_MIN <= ts < TS_MAX:
        raise SkippedRecord(f"{schema.TS} {ts} is not a time between 2000 and 2100")
    return ts


def _duration(record: dict, key: str) -> int:
    duration = _req_int(record, key)
    if duration < 0:
        raise SkippedRecord(f"{key} is negative")
    return duration


def to_datetime(ts_ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=ts_ns // 1000)


_PLAIN = (str, int, float, bool, type(None))


def _jsonable(value):
    """Records are redacted on the host, but msgpack may still carry raw bytes: store them as text."""
    if isinstance(value, dict) and all(type(v) in _PLAIN for v in value.values()):
        return value  # the common case, checked without copying
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- in-memory aggregation of one batch -----------------------------------------------------

# Row keys use names, not ids, so aggregation needs no database; ids are resolved once per batch.
# EndpointKey: (service, protocol, method, route, operation, target)
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


@dataclass
class Applied:
    """What one `apply_records` call wrote."""

    records: int = 0
    request_records: int = 0
    latest_request_ts: int | None = None
    skipped: Counter = field(default_factory=Counter)  # reason -> records
    ignored: int = 0  # records deliberately not stored (resource, server-side flows)


class Batch:
    """Accumulates one batch of records per row key; `write()` then stores it."""

    def __init__(self):
        self.samples_per_minute = settings.SAMPLES_PER_ENDPOINT_MINUTE
        self.slow_ns = settings.SLOW_REQUEST_MS * 1_000_000
        self.services: dict[str, ServiceSeen] = {}
        self.rollups: dict[tuple, Totals] = {}
        self.edges: dict[tuple, Totals] = {}
        self.kept: list[SampleCandidate] = []  # errors and slow requests: all of them
        self.reservoir: dict[tuple, list[SampleCandidate]] = {}  # (EndpointKey, minute_ns) -> a few
        self.agents: list[dict] = []
        self.applied = Applied()
        self._add = {
            (schema.KIND_REQUEST, schema.SPAN_SERVER): self._add_server_request,
            (schema.KIND_REQUEST, schema.SPAN_CLIENT): self._add_client_request,
            (schema.KIND_FLOW, schema.SPAN_CLIENT): self._add_client_flow,
        }

    def add(self, record: dict) -> None:
        kind = record.get(schema.KIND)
        if _not_stored(kind, record):
            self.applied.ignored += 1
            return
        try:
            if kind == schema.KIND_AGENT:
                self._add_agent(record)
            else:
                add = self._add.get((kind, record.get(schema.SPAN_KIND)))
                if add is None:
                    if kind in schema.KINDS:
                        raise SkippedRecord(f"{kind} record with span.kind {record.get(schema.SPAN_KIND)!r}")
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
        """The callee: the resolved peer service, else an external node named `address:port`."""
        peer = _opt_str(record, schema.PEER_SERVICE)
        if peer:
            self._service(peer, 0)  # exists as a service, but was not seen serving in this record
            return peer
        address = _req_str(record, schema.SERVER_ADDRESS, 200)
        port = _req_int(record, schema.SERVER_PORT)
        name = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self._service(name, ts).external = True
        return name

    def _add_server_request(self, r: dict) -> None:
        ts = _ts(r)
        name = _req_str(r, schema.SERVICE)
        host = _req_str(r, schema.HOST)
        protocol = _req_str(r, schema.PROTOCOL, 32)
        duration = _duration(r, schema.DURATION_NS)
        status = _opt_int(r, schema.HTTP_STATUS) or 0
        error = _error(r, status)
        if protocol == schema.PROTO_HTTP:
            endpoint = (
                name,
                protocol,
                _opt_str(r, schema.HTTP_METHOD, 32),
                _opt_str(r, schema.HTTP_ROUTE),
                "",
                "",
            )
        else:
            target = _opt_str(r, schema.DB_COLLECTION) or _opt_str(r, schema.MESSAGING_DESTINATION)
            endpoint = (name, protocol, "", "", _opt_str(r, schema.DB_OPERATION, 64), target)
        request_bytes = _opt_int(r, schema.REQUEST_BYTES) or 0
        response_bytes = _opt_int(r, schema.RESPONSE_BYTES) or 0

        self._service(name, ts, host).protocol = protocol
        minute = ts - ts % NS_PER_MINUTE
        key = (minute, endpoint, status)
        totals = self.rollups.get(key)
        if totals is None:
            totals = self.rollups[key] = Totals()
        totals.count += 1
        totals.errors += error
        totals.request_bytes += request_bytes
        totals.response_bytes += response_bytes
        totals.duration_sum_ns += duration
        histogram.add(totals.histogram, duration)
        self._note_request(ts)

        if error or status >= 400 or duration > self.slow_ns:
            self.kept.append(SampleCandidate(r, ts, name, endpoint, status, error, duration))
        else:
            few = self.reservoir.setdefault((endpoint, minute), [])
            if len(few) < self.samples_per_minute:
                few.append(SampleCandidate(r, ts, name, endpoint, status, error, duration))

    def _add_client_request(self, r: dict) -> None:
        ts = _ts(r)
        source = _req_str(r, schema.SERVICE)
        host = _req_str(r, schema.HOST)
        protocol = _req_str(r, schema.PROTOCOL, 32)
        duration = _duration(r, schema.DURATION_NS)
        status = _opt_int(r, schema.HTTP_STATUS) or 0
        error = _error(r, status)
        request_bytes = _opt_int(r, schema.REQUEST_BYTES) or 0
        response_bytes = _opt_int(r, schema.RESPONSE_BYTES) or 0
        target = self._target(r, ts)

        self._service(source, ts, host)
        totals = self._edge(ts, source, target, protocol)
        totals.count += 1
        totals.errors += error
        totals.request_bytes += request_bytes
        totals.response_bytes += response_bytes
        totals.duration_sum_ns += duration
        histogram.add(totals.histogram, duration)
        self._note_request(ts)
        # The caller's view of a failing or slow call is kept: for external callees it is the only one.
        # Ordinary client-side calls are not sampled: the callee's server-side samples stand for them.
        if error or status >= 400 or duration > self.slow_ns:
            self.kept.append(SampleCandidate(r, ts, source, None, status, error, duration))

    def _add_client_flow(self, r: dict) -> None:
        ts = _ts(r)
        source = _req_str(r, schema.SERVICE)
        host = _req_str(r, schema.HOST)
        sent = _req_int(r, schema.FLOW_BYTES_SENT)
        received = _req_int(r, schema.FLOW_BYTES_RECEIVED)
        duration = _duration(r, schema.FLOW_DURATION_NS)
        target = self._target(r, ts)

        self._service(source, ts, host)
        totals = self._edge(ts, source, target, EXTERNAL_PROTOCOL_TCP)
        totals.count += 1  # one connection
        totals.request_bytes += sent
        totals.response_bytes += received
        totals.duration_sum_ns += duration
        histogram.add(totals.histogram, duration)

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
                | {r[schema.HOST][:255] for r in self.agents}
            )
            services = self._write_services(hosts)
            endpoints = self._ensure_endpoints(services)
            self._write_rollups(services, endpoints)
            self._write_edges(services)
            self._write_samples(services, endpoints)
            self._write_agents(hosts)
        return self.applied

    def _write_services(self, hosts: dict[str, int]) -> dict[str, int]:
        if not self.services:
            return {}
        existing = {s.name: s for s in _fetch_in(Service.objects.all(), "name", self.services)}
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
                (s.name, s) for s in _fetch_in(Service.objects.all(), "name", [s.name for s in created])
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
            _update_rows(Service, changed, ["last_seen", "protocol"])
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
            rows = _fetch_in(
                Endpoint.objects.values_list(
                    "id", "service_id", "protocol", "method", "route", "operation", "target"
                ),
                "service_id",
                ids,
            )
            return {(names[row[1]], *row[2:]): row[0] for row in rows}

        known = fetch(service_ids)
        missing = wanted - known.keys()
        if missing:
            Endpoint.objects.bulk_create(
                [
                    Endpoint(
                        service_id=services[service],
                        protocol=protocol,
                        method=method,
                        route=route,
                        operation=operation,
                        target=target,
                    )
                    for service, protocol, method, route, operation, target in missing
                ],
                ignore_conflicts=True,
            )
            known = fetch({services[key[0]] for key in missing}) | known
        return known

    def _write_rollups(self, services: dict[str, int], endpoints: dict[tuple, int]) -> None:
        if not self.rollups:
            return
        rows = _fetch_in(
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
        _update_rows(Rollup, updated, fields)
        _insert_rows(Rollup, ["minute", "endpoint", "service", "status_code", *fields], created)

    def _write_edges(self, services: dict[str, int]) -> None:
        if not self.edges:
            return
        rows = _fetch_in(
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
        _update_rows(Edge, updated, fields)
        _insert_rows(Edge, ["minute", "source", "target", "protocol", *fields], created)

    def _write_samples(self, services: dict[str, int], endpoints: dict[tuple, int]) -> None:
        chosen = list(self.kept)
        if self.reservoir:
            stored = self._reservoir_stored(endpoints)
            for (endpoint, minute_ns), few in self.reservoir.items():
                room = self.samples_per_minute - stored.get((endpoints[endpoint], _minute(minute_ns)), 0)
                chosen.extend(few[: max(room, 0)])
        _insert_rows(
            RequestSample,
            SAMPLE_FIELDS,
            [
                (
                    to_datetime(c.ts),
                    services[c.service],
                    endpoints[c.endpoint] if c.endpoint else None,
                    c.record[schema.HOST][:255],
                    c.record[schema.SPAN_KIND],
                    c.status_code,
                    c.error,
                    c.duration_ns,
                    _text(c.record.get(schema.TRACE_ID), 32),
                    _text(c.record.get(schema.SPAN_ID), 16),
                    _text(c.record.get(schema.PARENT_SPAN_ID), 16),
                    _jsonable(c.record),
                )
                for c in chosen
            ],
        )

    def _reservoir_stored(self, endpoints: dict[tuple, int]) -> dict[tuple, int]:
        """Reservoir samples already stored per (endpoint id, minute), so the bound holds across batches."""
        minutes = [key[1] for key in self.reservoir]
        rows = _fetch_in(
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
        rows = {
            h.name: h for h in Host.objects.filter(id__in={hosts[r[schema.HOST][:255]] for r in self.agents})
        }
        changed = {}
        for r in sorted(self.agents, key=lambda r: r[schema.TS]):
            host = rows[r[schema.HOST][:255]]
            if _heartbeat(host, r):
                changed[host.name] = host
        _update_rows(Host, list(changed.values()), HEARTBEAT_FIELDS)


def _not_stored(kind, record: dict) -> bool:
    """Records that are valid but deliberately not stored (counted as ignored, not as skipped)."""
    if kind == schema.KIND_RESOURCE:
        return True  # no model holds per-service resource use yet
    if kind == schema.KIND_FLOW:
        # Server-side flows: the client side of the same connection gives the edge when it is
        # traced, and when only the server side is, its request records still count the traffic.
        # Events other than close: the close event carries the connection's final totals.
        return (
            record.get(schema.SPAN_KIND) == schema.SPAN_SERVER
            or record.get(schema.FLOW_EVENT, FLOW_EVENT_CLOSE) != FLOW_EVENT_CLOSE
        )
    return False


def _error(record: dict, status: int) -> bool:
    error = record.get(schema.ERROR)
    if error is None:
        return schema.is_error_status(status)
    if type(error) is not bool:
        raise SkippedRecord(f"{schema.ERROR} is {type(error).__name__}, not bool")
    return error


def _heartbeat(host: Host, r: dict) -> bool:
    """Apply one agent heartbeat to `host`; False for one older than what is stored."""
    ts = r[schema.TS]
    seen = r[schema.AGENT_EVENTS_SEEN]
    when = to_datetime(ts)
    if host.last_seen is not None and when <= host.last_seen:
        return False
    if host.last_seen is not None and seen >= host.events_seen:
        elapsed_s = (when - host.last_seen).total_seconds()
        host.events_per_s = (seen - host.events_seen) / elapsed_s
    else:
        host.events_per_s = 0.0  # first heartbeat, or the worker restarted and its counters did
    host.last_seen = when
    host.events_seen = seen
    host.events_dropped = (r.get(schema.AGENT_EVENTS_DROPPED) or 0) + (
        r.get(schema.AGENT_RECORDS_DROPPED) or 0
    )
    host.agent_version = _opt_str(r, schema.AGENT_VERSION, 64)
    host.kernel = _opt_str(r, schema.AGENT_KERNEL, 128)
    host.probes = _jsonable(r.get(schema.AGENT_PROBES) or {})
    return True


def _ensure_hosts(names: set[str]) -> dict[str, int]:
    if not names:
        return {}
    known = dict(_fetch_in(Host.objects.values_list("name", "id"), "name", names))
    missing = names - known.keys()
    if missing:
        Host.objects.bulk_create([Host(name=name) for name in missing], ignore_conflicts=True)
        known.update(_fetch_in(Host.objects.values_list("name", "id"), "name", missing))
    return known


# Fields whose Python values (str, int, bool, None) every database driver takes as they are;
# the others (datetimes, JSON) go through the field's own preparation for the backend.
_NATIVE_FIELDS = {"CharField", "IntegerField", "BigIntegerField", "BooleanField", "FloatField", "ForeignKey"}


def _preparers(db, fields: list) -> list:
    def native(value):
        return value

    return [
        native if f.get_internal_type() in _NATIVE_FIELDS else partial(f.get_db_prep_save, connection=db)
        for f in fields
    ]


def _insert_rows(model, field_names: list[str], rows: list[tuple]) -> None:
    """Insert rows of values (in field_names order) with one prepared INSERT, executemany.

    Not QuerySet.bulk_create: building a model instance and preparing every field through the
    compiler cost ~100 us per sample row, most of a batch's time; this path costs a tenth.
    """
    if not rows:
        return
    db = connections[model.objects.db]
    quote = db.ops.quote_name
    fields = [model._meta.get_field(name) for name in field_names]
    prepare = _preparers(db, fields)
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        quote(model._meta.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    params = [[p(value) for p, value in zip(prepare, row, strict=True)] for row in rows]
    with db.cursor() as cursor:
        cursor.executemany(sql, params)


def _update_rows(model, rows: list, field_names: list[str]) -> None:
    """Write `field_names` of existing `rows` back with one prepared UPDATE executed per row.

    Not QuerySet.bulk_update: its CASE WHEN expressions took ~85 % of a batch's time (Django
    builds and compiles an expression per row and field), where executemany reuses one statement.
    """
    if not rows:
        return
    db = connections[model.objects.db]
    quote = db.ops.quote_name
    fields = [model._meta.get_field(name) for name in field_names]
    prepare = _preparers(db, fields)
    sql = "UPDATE {} SET {} WHERE {} = %s".format(
        quote(model._meta.db_table),
        ", ".join(f"{quote(f.column)} = %s" for f in fields),
        quote(model._meta.pk.column),
    )
    pairs = list(zip(prepare, fields, strict=True))
    params = [[p(getattr(row, f.attname)) for p, f in pairs] + [row.pk] for row in rows]
    with db.cursor() as cursor:
        cursor.executemany(sql, params)


def _fetch_in(queryset, field_name: str, values) -> list:
    """queryset.filter(field__in=values), in chunks that stay under every backend's parameter limit."""
    values = list(values)
    rows = []
    for start in range(0, len(values), SQL_CHUNK):
        rows.extend(queryset.filter(**{f"{field_name}__in": values[start : start + SQL_CHUNK]}))
    return rows


_minutes: dict[int, datetime] = {}


def _minute(minute_ns: int) -> datetime:
    dt = _minutes.get(minute_ns)
    if dt is None:
        if len(_minutes) > 10_000:
            _minutes.clear()
        dt = _minutes[minute_ns] = to_datetime(minute_ns)
    return dt


def _text(value, max_length: int) -> str:
    return value[:max_length] if isinstance(value, str) else ""


def apply_records(records) -> Applied:
    """Aggregate and store `records` (an iterable of dicts) in one transaction."""
    batch = Batch()
    for record in records:
        batch.add(record)
    return batch.write()


# --- the stream consumer --------------------------------------------------------------------


class DatabaseUnavailable(Exception):
    """The database does not answer: retry the same entries later, acknowledge nothing."""


def database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


@dataclass
class IngestStats:
    """Counters since start, logged every 30 s by the command."""

    entries: int = 0  # stream entries written
    records: int = 0  # records stored
    skipped: int = 0  # records that could not be used
    ignored: int = 0  # records deliberately not stored
    duplicates: int = 0  # entries replayed after they were already written
    undecodable: int = 0  # entries acknowledged without being written
    failed: int = 0  # entries the database refused, acknowledged after retries

    def line(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in vars(self).items())


class Ingester:
    """One consumer of the records stream in the ingest consumer group."""

    def __init__(
        self,
        client: redis.Redis,
        consumer: str,
        *,
        read_count: int = 50,
        claim_idle_ms: int = 60_000,
        broadcast_interval_s: float = 1.0,
        skip_log_interval_s: float = 60.0,
    ):
        self.redis = client
        self.consumer = consumer
        self.read_count = read_count
        self.claim_idle_ms = claim_idle_ms
        self.broadcast_interval_s = broadcast_interval_s
        self.skip_log_interval_s = skip_log_interval_s
        self.stats = IngestStats()
        self._skips: Counter = Counter()
        self._skips_logged_at = float("-inf")
        self._broadcast_at = float("-inf")
        self._broadcast_ts: int | None = None  # newest request ts not yet announced

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(schema.RECORDS_STREAM, schema.INGEST_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, block_ms: int | None = 1000) -> list:
        """New entries for this consumer; block_ms None returns at once."""
        answer = self.redis.xreadgroup(
            schema.INGEST_GROUP,
            self.consumer,
            {schema.RECORDS_STREAM: ">"},
            count=self.read_count,
            block=block_ms,
        )
        return [entry for _stream, entries in answer or [] for entry in entries]

    def reclaim(self) -> int:
        """Take over and process entries pending longer than claim_idle_ms (their consumer died)."""
        processed = 0
        start = "0-0"
        while True:
            start, entries, *_deleted = self.redis.xautoclaim(
                schema.RECORDS_STREAM,
                schema.INGEST_GROUP,
                self.consumer,
                self.claim_idle_ms,
                start_id=start,
                count=self.read_count,
            )
            if entries:
                log.info("reclaimed %d pending entries from dead consumers", len(entries))
                self.process(entries)
                processed += len(entries)
            if start in (b"0-0", "0-0"):
                return processed

    def forget_idle_consumers(self, idle_ms: int = 3_600_000) -> None:
        """Each process joins under a new name; drop the names that left nothing pending."""
        for info in self.redis.xinfo_consumers(schema.RECORDS_STREAM, schema.INGEST_GROUP):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if name != self.consumer and info["pending"] == 0 and info["idle"] > idle_ms:
                self.redis.xgroup_delconsumer(schema.RECORDS_STREAM, schema.INGEST_GROUP, name)

    def process(self, entries: list) -> None:
        """Write decodable entries, acknowledge them after the commit, and acknowledge the garbage.

        Raises DatabaseUnavailable (nothing written, nothing acknowledged but the garbage) when the
        database does not answer; the caller retries the same entries after a pause.
        """
        batches, garbage = [], []
        for entry_id, fields in entries:
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            try:
                if fields is None:  # trimmed from the stream while it was pending
                    raise ValueError("entry was deleted from the stream")
                payload = fields.get(schema.RECORDS_FIELD)
                if payload is None:
                    raise ValueError(f"no field {schema.RECORDS_FIELD!r}")
                batches.append((entry_id, schema.unpack_batch(payload)))
            except ValueError as exc:
                log.warning("stream entry %s skipped and acknowledged: %s", entry_id, exc)
                self.stats.undecodable += 1
                garbage.append(entry_id)
        if garbage:
            self._ack(garbage)
        if batches:
            self._write(batches)

    def _write(self, batches: list, attempts: int = 2) -> None:
        for attempt in range(attempts):
            try:
                applied, duplicates = self._commit(batches)
                break
            except DatabaseError as exc:
                if not database_answers():
                    raise DatabaseUnavailable(str(exc)) from exc
                # Concurrent ingesters can race on a new row (unique constraint): the retry sees it.
                if attempt + 1 < attempts:
                    log.info("retrying %d entries after %s", len(batches), exc)
                    continue
                if len(batches) > 1:
                    for one in batches:  # find the entry the database refuses; write the others
                        self._write([one])
                    return
                log.error(
                    "stream entry %s refused by the database (%s); acknowledged and dropped",
                    batches[0][0],
                    exc,
                )
                self.stats.failed += 1
                self._ack([batches[0][0]])
                return
        self._ack([entry_id for entry_id, _ in batches])
        self.stats.entries += len(batches) - duplicates
        self.stats.duplicates += duplicates
        self.stats.records += applied.records
        self.stats.ignored += applied.ignored
        self.stats.skipped += sum(applied.skipped.values())
        self._skips.update(applied.skipped)
        if applied.latest_request_ts is not None:
            self._broadcast_ts = max(self._broadcast_ts or 0, applied.latest_request_ts)
            self.broadcast_if_due()

    def _commit(self, batches: list) -> tuple[Applied, int]:
        ids = [entry_id for entry_id, _ in batches]
        with transaction.atomic():
            done = set(_fetch_in(IngestedBatch.objects.values_list("stream_id", flat=True), "stream_id", ids))
            fresh = [(entry_id, records) for entry_id, records in batches if entry_id not in done]
            batch = Batch()
            for _entry_id, records in fresh:
                for record in records:
                    batch.add(record)
            applied = batch.write()
            IngestedBatch.objects.bulk_create([IngestedBatch(stream_id=entry_id) for entry_id, _ in fresh])
        return applied, len(batches) - len(fresh)

    def _ack(self, ids: list[str]) -> None:
        self.redis.xack(schema.RECORDS_STREAM, schema.INGEST_GROUP, *ids)

    def broadcast_if_due(self, force: bool = False) -> None:
        """Tell the dashboard there is new data, at most once per broadcast_interval_s."""
        if self._broadcast_ts is None:
            return
        now = time.monotonic()
        if not force and now - self._broadcast_at < self.broadcast_interval_s:
            return
        latest, self._broadcast_ts, self._broadcast_at = self._broadcast_ts, None, now
        try:
            live.broadcast_overview(latest)
        except Exception:  # the dashboard going quiet must not stop ingestion
            log.exception("live broadcast failed; ingestion goes on")

    def ms_until_broadcast(self, longest_ms: int) -> int:
        """How long a blocking read may wait without delaying a due broadcast."""
        if self._broadcast_ts is None:
            return longest_ms
        due_in = self.broadcast_interval_s - (time.monotonic() - self._broadcast_at)
        return max(1, min(longest_ms, int(due_in * 1000)))

    def log_skips_if_due(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._skips or (not force and now - self._skips_logged_at < self.skip_log_interval_s):
            return
        reasons = ", ".join(f"{reason} ({n})" for reason, n in self._skips.most_common(10))
        log.warning("skipped %d records since the last report: %s", sum(self._skips.values()), reasons)
        self._skips.clear()
        self._skips_logged_at = now
