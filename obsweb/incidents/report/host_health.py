"""The report's TCP health and resource use sections, over the report window (the incident plus the
margin the other charts use), for the affected services.

TCP health comes from TcpHealth rows (the tcp probe), per affected service over every edge it is an
end of, and per affected call; resource use from ResourceUsage rows (the cpu and disk probes), per
affected service and per host of the report. Where a service has no row, the section names it and
asks about its probe rather than showing zeros: a probe that was off and a service that was idle
look alike in the rows, so the probe state of the hosts is said next to it.
"""

from datetime import UTC, datetime

from obsweb.telemetry import usage
from obsweb.telemetry.models import Service
from probes import schema

TCP_CHARTED = ("connections", "failures", "retransmits", "resets_sent", "resets_received", "rtt_ms")
RESOURCE_CHARTED = ("cpu_percent", "rss_bytes", "net_bytes_sent", "net_bytes_received", "disk_read_bytes",
                    "disk_write_bytes", "disk_ops", "runq_wait_avg_ms")  # fmt: skip
RESOURCE_AMOUNTS = ("hosts", "cpu_percent", "cpu_seconds", "rss_bytes", "net_bytes_sent",
                    "net_bytes_received", "disk_read_bytes", "disk_write_bytes", "disk_ops",
                    "disk_wait_avg_ms", "runq_wait_avg_ms", "runq_wait_max_ms")  # fmt: skip
HOST_AMOUNTS = ("cpu_percent", "cpu_count", "memory_total_bytes", "memory_available_bytes", "net_bytes_sent",
                "net_bytes_received", "disk_read_bytes", "disk_write_bytes", "runq_wait_avg_ms")  # fmt: skip
TCP_RECORDS, TCP_QUESTION = "TCP health records", "is the tcp probe on?"
RESOURCE_RECORDS, RESOURCE_QUESTION = "resource records", "are the cpu and disk probes on?"
TCP_NOTE = (
    "Per service, every TCP edge it is an end of, calling or called, including edges to services "
    "outside this report; per call, the caller and callee pairs of the affected calls. Connections "
    "are those a traced client closed; failures are failed connects (refused / timed out); "
    "retransmits and resets are counted by whichever end saw them, so with both ends traced one "
    "reset counts as sent and as received. RTT is the mean smoothed RTT the kernel reported."
)
RESOURCE_NOTE = (
    "Per service, summed over its hosts: CPU in % of one core averaged over the report window, RSS "
    "the highest resident memory one host reported, network the bytes written to and read from TCP "
    "sockets, disk the block I/O it issued, run-queue wait the time runnable but waiting for a CPU. "
    "External peers run on no traced host: they have no resource use."
)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def probe_off(hosts: list[dict], services: list[str], *probes: str) -> list[str]:
    """The report's hosts (contents._hosts rows) that run one of `services` and on which one of
    `probes` is not reported running."""
    if not services:
        return []
    theirs = set(Service.objects.filter(name__in=services).values_list("hosts__name", flat=True))
    return [
        host["name"]
        for host in hosts
        if host["name"] in theirs
        and any(not (host["probes"].get(probe) or {}).get("actual") for probe in probes)
    ]


def _why_none(what: str, names: list[str], off: list[str], question: str) -> str:
    """`No TCP health records for a, b in the window: is the tcp probe on?`, and where the probe is
    not reported running; without `names`, about the whole report."""
    whose = f" for {', '.join(names)}" if names else ""
    text = f"No {what}{whose} in the window: {question}"
    if off:
        text += f" Not reported running on {', '.join(off)} (see probe state)."
    return text


def tcp_health(roles: dict[str, str], edges: list[dict], charts: int, since, until, hosts) -> dict:
    """The TCP health section: per affected service, per affected call, and per-minute charts of
    the first `charts` services that have records."""
    health = usage.service_tcp_health(list(roles), since, until)
    totals = health["totals"]
    services = [{"name": name, "role": role} | totals[name] for name, role in roles.items() if name in totals]
    calls = {}
    for edge in edges:  # one per caller and callee: TCP health is the same on every protocol of a pair
        tcp = edge["tcp"]
        if any(tcp[count] for count in usage.TCP_COUNTS) or tcp["rtt_ms"] is not None:
            calls[edge["source"], edge["target"]] = {"source": edge["source"], "target": edge["target"]} | tcp
    minutes = [_iso(m) for m in health["minutes"]]
    missing = [name for name in roles if name not in totals]
    off = probe_off(hosts, missing, schema.PROBE_TCP)
    return {
        "measured": bool(services),
        "note": TCP_NOTE if services else _why_none(TCP_RECORDS, [], off, TCP_QUESTION),
        "services": services,
        "calls": sorted(calls.values(), key=lambda call: (call["source"], call["target"])),
        "without_records": missing,
        "without_records_note": _why_none(TCP_RECORDS, missing, off, TCP_QUESTION)
        if services and missing
        else "",
        "charts": [
            {"service": row["name"], "minutes": minutes}
            | {key: health["series"][row["name"]][key] for key in TCP_CHARTED}
            for row in services[:charts]
        ],
    }


def resource_use(roles: dict[str, str], charts: int, since, until, hosts) -> dict:
    """The resource use section: per affected service and per host of the report, and per-minute
    charts of the first `charts` services that have records."""
    summaries = usage.resource_summaries(since, until)
    by_name = {row["name"]: row for row in summaries["services"]}
    services = [
        {"name": name, "role": role} | {key: by_name[name][key] for key in RESOURCE_AMOUNTS}
        for name, role in roles.items()
        if name in by_name
    ]
    host_names = {host["name"] for host in hosts}
    host_rows = [
        {"name": row["name"]} | {key: row[key] for key in HOST_AMOUNTS}
        for row in summaries["hosts"]
        if row["name"] in host_names
    ]
    external = set(Service.objects.filter(name__in=roles, external=True).values_list("name", flat=True))
    missing = [name for name in roles if name not in by_name and name not in external]
    off = probe_off(hosts, missing, schema.PROBE_CPU, schema.PROBE_DISK)
    measured = bool(services or host_rows)
    note = RESOURCE_NOTE if measured else _why_none(RESOURCE_RECORDS, [], off, RESOURCE_QUESTION)
    missing_note = (
        _why_none(RESOURCE_RECORDS, missing, off, RESOURCE_QUESTION) if measured and missing else ""
    )
    charted = [row["name"] for row in services[:charts]]
    rows = {
        s.name: usage.service_resource_series(s, since, until)
        for s in Service.objects.filter(name__in=charted)
    }
    return {
        "measured": measured,
        "note": note,
        "services": services,
        "hosts": host_rows,
        "without_records": missing,
        "without_records_note": missing_note,
        "charts": [
            {"service": row["name"], "minutes": [_iso(m) for m in rows[row["name"]]["minutes"]]}
            | {key: rows[row["name"]][key] for key in RESOURCE_CHARTED}
            for row in services[:charts]
        ],
    }
