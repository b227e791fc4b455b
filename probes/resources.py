"""Resource records (schema.KIND_RESOURCE): what each service used on this host per interval.

Per-process amounts come from the kernel every TAKE_INTERVAL_S (the cpu and disk programs'
totals, taken and cleared) and from the socket program's per-connection byte counters (read and
diffed each interval, plus each connection's final bytes when it closes). Processes are named
when first seen in an interval, while they are still alive, and summed per service name. Every
RESOURCE_INTERVAL_S one record per service (the TOP_SERVICES busiest by CPU; the rest summed
as OTHER, so cardinality stays bounded) and one for the host as a whole leave the worker.
"""

import os
from dataclasses import dataclass, fields
from pathlib import Path

from probes import schema
from probes.identity import PROC, ServiceNames
from probes.scope import CgroupScope

RESOURCE_INTERVAL_S = 5.0
TAKE_INTERVAL_S = 1.0  # kernel totals taken this often, so short-lived processes get their names
TOP_SERVICES = 50
OTHER = "other"  # services beyond the TOP_SERVICES busiest of an interval
KERNEL = "kernel"  # kernel threads: no executable behind them
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Which amounts each probe measures: a probe that is off leaves its keys out of the records.
CPU_KEYS = ("cpu_ns", "runq_wait_ns", "runq_waits", "runq_wait_max_ns", "rss_bytes")
DISK_KEYS = ("disk_read_bytes", "disk_write_bytes", "disk_read_ops", "disk_write_ops", "disk_wait_ns")
NET_KEYS = ("net_bytes_sent", "net_bytes_received")
RECORD_KEYS = {
    "cpu_ns": schema.CPU_TIME_NS,
    "runq_wait_ns": schema.RUNQ_WAIT_NS,
    "runq_waits": schema.RUNQ_WAITS,
    "runq_wait_max_ns": schema.RUNQ_WAIT_MAX_NS,
    "rss_bytes": schema.MEMORY_RSS_BYTES,
    "disk_read_bytes": schema.DISK_READ_BYTES,
    "disk_write_bytes": schema.DISK_WRITE_BYTES,
    "disk_read_ops": schema.DISK_READ_OPS,
    "disk_write_ops": schema.DISK_WRITE_OPS,
    "disk_wait_ns": schema.DISK_WAIT_NS,
    "net_bytes_sent": schema.NET_BYTES_SENT,
    "net_bytes_received": schema.NET_BYTES_RECEIVED,
}


@dataclass(slots=True)
class Usage:
    """What one process, or one service, used in one interval."""

    processes: int = 0
    cpu_ns: int = 0
    runq_wait_ns: int = 0
    runq_waits: int = 0
    runq_wait_max_ns: int = 0
    rss_bytes: int = 0
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    disk_read_ops: int = 0
    disk_write_ops: int = 0
    disk_wait_ns: int = 0
    net_bytes_sent: int = 0
    net_bytes_received: int = 0

    def add(self, other: "Usage") -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(mine, theirs) if f.name == "runq_wait_max_ns" else mine + theirs)


def top_services(by_service: dict[str, Usage], limit: int = TOP_SERVICES) -> dict[str, Usage]:
    """The `limit` services that used the most CPU, the rest summed under OTHER."""
    ranked = sorted(by_service.items(), key=lambda item: (-item[1].cpu_ns, item[0]))
    kept = dict(ranked[:limit])
    if len(ranked) > limit:
        other = kept.pop(OTHER, None) or Usage()
        for _name, usage in ranked[limit:]:
            other.add(usage)
        kept[OTHER] = other
    return kept


def memory_of_host(meminfo: str) -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo's text; None for a missing line."""
    values = {}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if name in ("MemTotal", "MemAvailable") and parts and parts[0].isdigit():
            values[name] = int(parts[0]) * 1024  # the kernel says "kB" and means KiB
    return values.get("MemTotal"), values.get("MemAvailable")


def rss_from_statm(statm: str, page_size: int = PAGE_SIZE) -> int:
    """Resident bytes from /proc/<pid>/statm (its second field counts pages)."""
    parts = statm.split()
    return int(parts[1]) * page_size if len(parts) > 1 and parts[1].isdigit() else 0


class ConnectionBytes:
    """Bytes per process from the socket program's connection map: each read is diffed against
    the previous one, and a closing connection's final totals against its last read, so every
    byte counts once. Keys are (tgid << 32 | fd); `opened_ns` tells a reused key from its past."""

    def __init__(self):
        self.last: dict[int, tuple[int, int, int]] = {}  # key -> (opened_ns, sent, received)

    def update(self, conns: dict[int, tuple[int, int, int]]) -> dict[int, tuple[int, int]]:
        """{tgid: (sent, received) since the previous update} from a full read of the map."""
        moved: dict[int, tuple[int, int]] = {}
        for key, now in conns.items():
            sent, received = self._delta(self.last.get(key), now)
            if sent or received:
                before = moved.get(key >> 32, (0, 0))
                moved[key >> 32] = (before[0] + sent, before[1] + received)
        self.last = conns
        return moved

    def closed(self, key: int, opened_ns: int, sent: int, received: int) -> tuple[int, int]:
        """A connection's final totals: what it moved since the last read."""
        return self._delta(self.last.pop(key, None), (opened_ns, sent, received))

    @staticmethod
    def _delta(before, now) -> tuple[int, int]:
        if before is None or before[0] != now[0]:
            return now[1], now[2]  # new since the last read (or the key was reused)
        return max(0, now[1] - before[1]), max(0, now[2] - before[2])


class ResourceCollector:
    """Per-process usage of the current interval, named per service at the interval's end."""

    def __init__(self, host: str, names: ServiceNames, scope: CgroupScope | None = None, proc: Path = PROC):
        self.host = host
        self.names = names
        self.scope = scope
        self.proc = proc
        self.me = os.getpid()
        self.processes: dict[int, Usage] = {}
        self.service_of: dict[int, str] = {}  # tgid -> service, for the processes in our scope

    def _usage(self, tgid: int, comm: str = "") -> Usage | None:
        if tgid not in self.service_of:
            service = self._name(tgid, comm)
            if service is None:
                # Not remembered: a process may join our cgroup after it started (a shell that
                # moves itself in, then execs), and counts from then on.
                return None
            self.service_of[tgid] = service
        usage = self.processes.get(tgid)
        if usage is None:
            usage = self.processes[tgid] = Usage(processes=1)
        return usage

    def _name(self, tgid: int, comm: str) -> str | None:
        if tgid == self.me or (self.scope is not None and not self.scope.contains(tgid)):
            return None
        base = self.proc / str(tgid)
        if base.exists():
            try:
                os.readlink(base / "exe")
            except FileNotFoundError:
                return KERNEL  # kernel threads have no executable
            except OSError:
                pass  # not ours to read: name it the usual way
        return self.names.name_for(tgid, comm)

    def add_cpu(self, taken: dict) -> None:
        """{tgid: probes.programs.sched.CpuUsage} from one take."""
        for tgid, cpu in taken.items():
            usage = self._usage(tgid, cpu.comm)
            if usage is not None:
                usage.cpu_ns += cpu.cpu_ns
                usage.runq_wait_ns += cpu.runq_wait_ns
                usage.runq_waits += cpu.runq_waits
                usage.runq_wait_max_ns = max(usage.runq_wait_max_ns, cpu.runq_wait_max_ns)

    def add_disk(self, taken: dict) -> None:
        """{tgid: probes.programs.block_io.DiskUsage} from one take."""
        for tgid, disk in taken.items():
            usage = self._usage(tgid, disk.comm)
            if usage is not None:
                usage.disk_read_bytes += disk.read_bytes
                usage.disk_write_bytes += disk.write_bytes
                usage.disk_read_ops += disk.read_ops
                usage.disk_write_ops += disk.write_ops
                usage.disk_wait_ns += disk.wait_ns

    def add_net(self, tgid: int, sent: int, received: int) -> None:
        usage = self._usage(tgid)
        if usage is not None:
            usage.net_bytes_sent += sent
            usage.net_bytes_received += received

    def _read_rss(self) -> None:
        for tgid, usage in self.processes.items():
            try:
                usage.rss_bytes = rss_from_statm((self.proc / str(tgid) / "statm").read_text())
            except OSError:
                usage.rss_bytes = 0  # gone, or a kernel thread: nothing resident of its own

    def records(self, ts_ns: int, interval_ns: int, measured: tuple[str, ...]) -> list[dict]:
        """The interval's records, then a fresh interval. `measured`: which of "cpu", "disk",
        "net" were on (their amounts are left out of the records otherwise)."""
        if "cpu" in measured:
            self._read_rss()
        by_service: dict[str, Usage] = {}
        host = Usage()
        for tgid, usage in self.processes.items():
            by_service.setdefault(self.service_of[tgid], Usage()).add(usage)
            host.add(usage)
        keys = [k for name, ks in (("cpu", CPU_KEYS), ("disk", DISK_KEYS), ("net", NET_KEYS)) for k in ks
                if name in measured]  # fmt: skip
        out = [
            self._record(ts_ns, interval_ns, service, usage, keys)
            for service, usage in top_services(by_service).items()
        ]
        host_record = self._record(ts_ns, interval_ns, None, host, keys)
        host_record[schema.CPU_COUNT] = os.cpu_count()
        try:
            total, available = memory_of_host((self.proc / "meminfo").read_text())
        except OSError:
            total = available = None
        host_record[schema.MEMORY_TOTAL_BYTES] = total
        host_record[schema.MEMORY_AVAILABLE_BYTES] = available
        out.append(host_record)
        self.processes.clear()
        self.service_of.clear()
        return out

    def _record(self, ts_ns: int, interval_ns: int, service: str | None, usage: Usage, keys) -> dict:
        record = {
            schema.KIND: schema.KIND_RESOURCE,
            schema.HOST: self.host,
            schema.TS: ts_ns,
            schema.RESOURCE_SCOPE: schema.RESOURCE_SCOPE_HOST
            if service is None
            else schema.RESOURCE_SCOPE_SERVICE,
            schema.RESOURCE_INTERVAL_NS: interval_ns,
            schema.RESOURCE_PROCESSES: usage.processes,
        }
        if service is not None:
            record[schema.SERVICE] = service
        for key in keys:
            record[RECORD_KEYS[key]] = getattr(usage, key)
        return record
