"""The read side of resource use (ResourceUsage), of TCP health per service (TcpHealth) and of queue
traffic, for the API, the dashboard and incident reports.

Shares the window rules of obsweb.telemetry.queries: a window holds every minute that overlaps it,
and rates divide by the time those minutes cover up to now. CPU is in % of one core.
"""

from collections import defaultdict
from datetime import UTC, datetime

from django.db.models import F, Max, Min, Sum
from django.utils import timezone

from obsweb.telemetry import series
from obsweb.telemetry.models import ResourceUsage, Rollup, Service, TcpHealth
from obsweb.telemetry.queries import _covered_seconds, _in_window, _mean_ms
from probes import schema

NS_PER_S = 10**9
TOP_CPU_SERVICES = 10  # lines in the resources page's CPU chart

SUMS = ("cpu_time_ns", "runq_wait_ns", "runq_waits", "net_bytes_sent", "net_bytes_received",
        "disk_read_bytes", "disk_write_bytes", "disk_read_ops", "disk_write_ops", "disk_wait_ns")  # fmt: skip


def _sums(queryset, *group: str):
    return queryset.values(*group).annotate(
        **{name: Sum(name) for name in SUMS}, runq_wait_max_ns=Max("runq_wait_max_ns")
    )


def _amounts(row: dict, seconds: float) -> dict:
    """What a summed row says, as the API names it."""
    disk_ops = row["disk_read_ops"] + row["disk_write_ops"]
    return {
        "cpu_percent": round(100 * row["cpu_time_ns"] / NS_PER_S / seconds, 2),
        "cpu_seconds": round(row["cpu_time_ns"] / NS_PER_S, 3),
        "runq_wait_avg_ms": _mean_ms(row["runq_wait_ns"] / 1e6, row["runq_waits"]),
        "runq_wait_max_ms": round(row["runq_wait_max_ns"] / 1e6, 3),
        "net_bytes_sent": row["net_bytes_sent"],
        "net_bytes_received": row["net_bytes_received"],
        "disk_read_bytes": row["disk_read_bytes"],
        "disk_write_bytes": row["disk_write_bytes"],
        "disk_ops": disk_ops,
        "disk_wait_avg_ms": _mean_ms(row["disk_wait_ns"] / 1e6, disk_ops),
    }


def resource_summaries(since: datetime, until: datetime, host: str | None = None) -> dict:
    """{"services": [...], "hosts": [...]}: what each service and each host used in the window,
    busiest CPU first; with `host`, on that host only. Four queries."""
    usage = ResourceUsage.objects.filter(_in_window(since, until))
    if host is not None:
        usage = usage.filter(host__name=host)
    seconds = _covered_seconds(since, until)
    by_service = usage.filter(service__isnull=False)
    sums = _sums(by_service, "service_id").annotate(rss_bytes=Max("rss_max_bytes"))
    hosts_of = defaultdict(set)
    for service_id, host_name in by_service.values_list("service_id", "host__name").distinct():
        hosts_of[service_id].add(host_name)
    names = dict(Service.objects.filter(id__in=hosts_of).values_list("id", "name"))
    services = [
        {"name": names[row["service_id"]], "hosts": sorted(hosts_of[row["service_id"]])}
        | _amounts(row, seconds)
        | {"rss_bytes": row["rss_bytes"]}
        for row in sums
    ]
    services.sort(key=lambda r: (-r["cpu_percent"], r["name"]))
    host_sums = _sums(usage.filter(service__isnull=True), "host__name").annotate(
        cpu_count=Max("cpu_count"),
        memory_total_bytes=Max("memory_total_bytes"),
        memory_available_bytes=Min("memory_available_bytes"),
    )
    hosts = [
        {"name": row["host__name"]}
        | _amounts(row, seconds)
        | {key: row[key] for key in ("cpu_count", "memory_total_bytes", "memory_available_bytes")}
        for row in host_sums
    ]
    hosts.sort(key=lambda r: (-r["cpu_percent"], r["name"]))
    return {"services": services, "hosts": hosts}


def cpu_percent_by_service(since: datetime, until: datetime) -> dict[str, float]:
    """Each service's CPU in % of one core, averaged over the window (the map's colour). One query."""
    seconds = _covered_seconds(since, until)
    rows = (
        ResourceUsage.objects.filter(_in_window(since, until), service__isnull=False)
        .values_list("service__name")
        .annotate(cpu=Sum("cpu_time_ns"))
    )
    return {name: round(100 * cpu / NS_PER_S / seconds, 2) for name, cpu in rows}


def _minute_seconds(minute: datetime, now: datetime) -> float:
    """The seconds of `minute` that have passed: 60, less for the current one."""
    return min(60.0, max((now - minute).total_seconds(), 1.0))


def service_resource_series(service: Service, since: datetime, until: datetime) -> dict:
    """Per minute of the window, oldest first, summed over the service's hosts: "cpu_percent",
    "rss_bytes", "net_bytes_sent", "net_bytes_received", "disk_read_bytes", "disk_write_bytes",
    "disk_ops", "runq_wait_avg_ms"; a minute without records has None throughout (the probe was
    off or the service not running). Under "minutes" the minutes (UTC). One query."""
    rows = _sums(ResourceUsage.objects.filter(_in_window(since, until), service=service), "minute").annotate(
        rss_bytes=Sum("rss_bytes")
    )
    by_minute = {row["minute"].astimezone(UTC): row for row in rows}
    minutes = series.minutes_between(since, until)
    now = timezone.now()
    keys = ("cpu_percent", "net_bytes_sent", "net_bytes_received", "disk_read_bytes", "disk_write_bytes",
            "disk_ops", "runq_wait_avg_ms")  # fmt: skip
    out = {"minutes": minutes, "rss_bytes": []} | {key: [] for key in keys}
    for minute in minutes:
        row = by_minute.get(minute)
        amounts = _amounts(row, _minute_seconds(minute, now)) if row else {}
        for key in keys:
            out[key].append(amounts.get(key))
        out["rss_bytes"].append(row["rss_bytes"] if row else None)
    return out


def cpu_by_service(services: list[str], since: datetime, until: datetime) -> dict:
    """{"minutes": [...], "services": {name: [cpu % per minute]}} for the named services. One query."""
    minutes = series.minutes_between(since, until)
    index = {minute: i for i, minute in enumerate(minutes)}
    now = timezone.now()
    lines = {name: [None] * len(minutes) for name in services}
    rows = (
        ResourceUsage.objects.filter(_in_window(since, until), service__name__in=services)
        .values_list("service__name", "minute")
        .annotate(cpu=Sum("cpu_time_ns"))
    )
    for name, minute, cpu in rows:
        i = index.get(minute.astimezone(UTC))
        if i is not None:
            lines[name][i] = round(100 * cpu / NS_PER_S / _minute_seconds(minute, now), 2)
    return {"minutes": minutes, "services": lines}


TCP_COUNTS = ("connections", "failures", "failures_refused", "failures_timeout", "retransmits",
              "resets_sent", "resets_received")  # fmt: skip
_TCP_SUMS = (*TCP_COUNTS, "rtt_sum_us", "rtt_samples")


def service_tcp_health(names: list[str], since: datetime, until: datetime) -> dict:
    """TCP health of the named services, each over every edge it is an end of (calling or called):
    {"minutes": [...], "totals": {name: {count: n, ..., "rtt_ms"}}, "series": {name: {count: [n per
    minute], ..., "rtt_ms": [...]}}} with the counts of TCP_COUNTS. A minute without a row counts 0
    (nothing closed, nothing went wrong) and has no RTT; a service without a row in the window is
    absent (the tcp probe was off, or it made and took no connection). Two queries."""
    minutes = series.minutes_between(since, until)
    index = {minute: i for i, minute in enumerate(minutes)}
    health = TcpHealth.objects.filter(_in_window(since, until))
    sums = {f"sum_{name}": Sum(name) for name in _TCP_SUMS}
    calling = health.filter(source__name__in=names).values("source__name", "minute").annotate(**sums)
    # A service calling itself is one edge: counted once, as the caller.
    called = (
        health.filter(target__name__in=names)
        .exclude(source=F("target"))
        .values("target__name", "minute")
        .annotate(**sums)
    )
    per_minute: dict[str, list[list[int]]] = {}
    for rows, end in ((calling, "source__name"), (called, "target__name")):
        for row in rows:
            i = index.get(row["minute"].astimezone(UTC))
            if i is None:
                continue
            slots = per_minute.setdefault(row[end], [[0] * len(_TCP_SUMS) for _ in minutes])
            slots[i] = [have + row[f"sum_{name}"] for have, name in zip(slots[i], _TCP_SUMS, strict=True)]
    out = {"minutes": minutes, "totals": {}, "series": {}}
    for name, slots in per_minute.items():
        columns = dict(zip(_TCP_SUMS, zip(*slots, strict=True), strict=True))
        rtt_ms = [
            _mean_ms(total_us / 1000, n)
            for total_us, n in zip(columns["rtt_sum_us"], columns["rtt_samples"], strict=True)
        ]
        out["series"][name] = {count: list(columns[count]) for count in TCP_COUNTS} | {"rtt_ms": rtt_ms}
        out["totals"][name] = {count: sum(columns[count]) for count in TCP_COUNTS} | {
            "rtt_ms": _mean_ms(sum(columns["rtt_sum_us"]) / 1000, sum(columns["rtt_samples"]))
        }
    return out


# Queue traffic read off request rollups (DESIGN.md: Records): Kafka requests name their topic;
# Redis keys never leave the host (probes/redact.py), so Redis queues show per service only.
KAFKA_PRODUCE = frozenset({"Produce"})
KAFKA_CONSUME = frozenset({"Fetch"})
REDIS_PRODUCE = frozenset({"LPUSH", "RPUSH", "LPUSHX", "RPUSHX", "XADD", "PUBLISH", "SPUBLISH"})
REDIS_CONSUME = frozenset({"LPOP", "RPOP", "BLPOP", "BRPOP", "LMPOP", "BLMPOP", "LMOVE", "BLMOVE",
                           "RPOPLPUSH", "BRPOPLPUSH", "XREAD", "XREADGROUP"})  # fmt: skip
QUEUE_OPERATIONS = {
    schema.PROTO_KAFKA: (KAFKA_PRODUCE, KAFKA_CONSUME),
    schema.PROTO_REDIS: (REDIS_PRODUCE, REDIS_CONSUME),
}


def queue_rates(since: datetime, until: datetime, service: Service | None = None) -> list[dict]:
    """Produce and consume requests per destination: [{"service", "protocol", "destination"
    (Kafka topic; "" for Redis, whose keys are not recorded), "produced", "consumed",
    "produce_rps", "consume_rps"}], busiest first. Requests, not messages: one Produce may carry
    a batch, one Fetch return many. One query."""
    operations = {op for pair in QUEUE_OPERATIONS.values() for ops in pair for op in ops}
    rollups = Rollup.objects.filter(
        _in_window(since, until),
        endpoint__protocol__in=QUEUE_OPERATIONS,
        endpoint__operation__in=operations,
    )
    if service is not None:
        rollups = rollups.filter(service=service)
    rows = rollups.values_list(
        "service__name", "endpoint__protocol", "endpoint__target", "endpoint__operation"
    ).annotate(n=Sum("count"))
    queues: dict[tuple, dict] = {}
    for name, protocol, target, operation, n in rows:
        destination = target if protocol == schema.PROTO_KAFKA else ""
        queue = queues.setdefault(
            (name, protocol, destination),
            {"service": name, "protocol": protocol, "destination": destination, "produced": 0, "consumed": 0},
        )
        produce, consume = QUEUE_OPERATIONS[protocol]
        queue["produced"] += n if operation in produce else 0
        queue["consumed"] += n if operation in consume else 0
    seconds = _covered_seconds(since, until)
    rates = [
        queue
        | {
            "produce_rps": round(queue["produced"] / seconds, 3),
            "consume_rps": round(queue["consumed"] / seconds, 3),
        }
        for queue in queues.values()
    ]
    rates.sort(key=lambda q: (-(q["produced"] + q["consumed"]), q["service"], q["destination"]))
    return rates
