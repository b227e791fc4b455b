"""Resource records (schema.KIND_RESOURCE) summed per minute, host and service, then written as
ResourceUsage rows with the same fixed number of statements as the rest of a batch (aggregate.py).

A record's amounts are what happened during its interval, so a minute's row is their sum; memory is
read at the interval's end, so the row keeps the latest reading and the minute's highest.
"""

from dataclasses import dataclass

from obsweb.telemetry.bulk import fetch_in, insert_rows, update_rows
from obsweb.telemetry.models import ResourceUsage
from obsweb.telemetry.records import (
    NS_PER_MINUTE,
    SkippedRecord,
    _opt_amount,
    _opt_str,
    _req_str,
    _ts,
    to_datetime,
)
from probes import schema

# Record key -> ResourceUsage field: summed over the minute.
SUMMED = {
    schema.RESOURCE_INTERVAL_NS: "interval_ns",
    schema.CPU_TIME_NS: "cpu_time_ns",
    schema.RUNQ_WAIT_NS: "runq_wait_ns",
    schema.RUNQ_WAITS: "runq_waits",
    schema.NET_BYTES_SENT: "net_bytes_sent",
    schema.NET_BYTES_RECEIVED: "net_bytes_received",
    schema.DISK_READ_BYTES: "disk_read_bytes",
    schema.DISK_WRITE_BYTES: "disk_write_bytes",
    schema.DISK_READ_OPS: "disk_read_ops",
    schema.DISK_WRITE_OPS: "disk_write_ops",
    schema.DISK_WAIT_NS: "disk_wait_ns",
}
# The highest of the minute.
PEAKS = {schema.RUNQ_WAIT_MAX_NS: "runq_wait_max_ns", schema.RESOURCE_PROCESSES: "processes"}
# Read at an interval's end: the latest reading of the minute wins.
READINGS = {
    schema.MEMORY_RSS_BYTES: "rss_bytes",
    schema.MEMORY_TOTAL_BYTES: "memory_total_bytes",
    schema.MEMORY_AVAILABLE_BYTES: "memory_available_bytes",
    schema.CPU_COUNT: "cpu_count",
}
READ = SUMMED | PEAKS | READINGS
FIELDS = [*SUMMED.values(), *PEAKS.values(), *READINGS.values(), "rss_max_bytes", "memory_read_ns"]


@dataclass(slots=True)
class Usage:
    """One minute of one (host, service) as accumulated from records: ResourceUsage's fields."""

    interval_ns: int = 0
    cpu_time_ns: int = 0
    runq_wait_ns: int = 0
    runq_waits: int = 0
    runq_wait_max_ns: int = 0
    processes: int = 0
    rss_bytes: int | None = None
    rss_max_bytes: int | None = None
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    cpu_count: int | None = None
    memory_read_ns: int = 0
    net_bytes_sent: int = 0
    net_bytes_received: int = 0
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    disk_read_ops: int = 0
    disk_write_ops: int = 0
    disk_wait_ns: int = 0

    def merge(self, other) -> None:
        """Add `other` (a Usage or a stored ResourceUsage row) to this one."""
        for name in SUMMED.values():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in PEAKS.values():
            setattr(self, name, max(getattr(self, name), getattr(other, name)))
        self.rss_max_bytes = _max(self.rss_max_bytes, other.rss_max_bytes)
        if other.memory_read_ns >= self.memory_read_ns:
            self.memory_read_ns = other.memory_read_ns
            for name in READINGS.values():
                if getattr(other, name) is not None:
                    setattr(self, name, getattr(other, name))


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def read(record: dict) -> tuple[int, str, str | None, Usage]:
    """(minute_ns, host, service or None for the host's own record, its Usage), or SkippedRecord.

    Every amount may be absent (its probe is off): absent adds nothing.
    """
    ts = _ts(record)
    host = _req_str(record, schema.HOST)
    scope = _opt_str(record, schema.RESOURCE_SCOPE, 16) or schema.RESOURCE_SCOPE_SERVICE
    if scope == schema.RESOURCE_SCOPE_HOST:
        service = None
    elif scope == schema.RESOURCE_SCOPE_SERVICE:
        service = _req_str(record, schema.SERVICE)
    else:
        raise SkippedRecord(f"{schema.RESOURCE_SCOPE} {scope!r} is neither service nor host")
    usage = Usage(memory_read_ns=ts)
    for key, name in READ.items():
        if record.get(key) is not None:
            setattr(usage, name, _opt_amount(record, key))
    usage.rss_max_bytes = usage.rss_bytes
    return ts - ts % NS_PER_MINUTE, host, service, usage


class Resources:
    """A batch's resource records, one Usage per (minute_ns, host, service or None)."""

    def __init__(self):
        self.usage: dict[tuple, Usage] = {}

    def add(self, record: dict) -> str | None:
        """Accumulate one record; the service it is about, None for a host record."""
        minute, host, service, usage = read(record)
        key = (minute, host[:255], service)
        known = self.usage.get(key)
        if known is None:
            self.usage[key] = usage
        else:
            known.merge(usage)
        return service

    def hosts(self) -> set[str]:
        return {key[1] for key in self.usage}

    def write(self, hosts: dict[str, int], services: dict[str, int]) -> None:
        if not self.usage:
            return
        rows = fetch_in(
            ResourceUsage.objects.select_for_update().filter(
                minute__in={to_datetime(key[0]) for key in self.usage}
            ),
            "host_id",
            {hosts[key[1]] for key in self.usage},
        )
        existing = {(row.minute, row.host_id, row.service_id): row for row in rows}
        updated, created = [], []
        for (minute_ns, host, service), usage in self.usage.items():
            key = (to_datetime(minute_ns), hosts[host], services[service] if service else None)
            row = existing.get(key)
            if row is None:
                created.append((*key, *(getattr(usage, name) for name in FIELDS)))
            else:
                merged = Usage(**{name: getattr(row, name) for name in FIELDS})
                merged.merge(usage)
                for name in FIELDS:
                    setattr(row, name, getattr(merged, name))
                updated.append(row)
        update_rows(ResourceUsage, updated, FIELDS)
        insert_rows(ResourceUsage, ["minute", "host", "service", *FIELDS], created)
