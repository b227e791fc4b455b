"""What an alert rule's metric reads now, per subject, from rollups and heartbeats.

Service metrics read Rollup rows (per minute, per endpoint and status code), never request
samples: the rollups count every request, samples only some. A window of N minutes is the rollup
minutes that overlap the last N minutes (as everywhere in obsweb.telemetry.queries), so the
current, still-filling minute counts. A throughput drop compares whole minutes only: the last N
complete minutes against the same N minutes an hour (or a day) before, so a half-filled minute
never looks like a drop.

TCP retransmits read TcpHealth rows (per minute, per caller and callee), over the same window:
100 x retransmits / connections over every edge a service is an end of, either direction. Segments
are not counted anywhere, so per connection is the honest denominator. Connections are counted
from the clients' close records only, so an edge whose client is not traced (an external caller)
has retransmits but no connections: it is left out rather than divided by someone else's.

Host metrics read what the heartbeats left: Host.status() for host down, DroppedEvents for an
agent dropping events.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Sum

from obsweb.fleet.models import DroppedEvents, Host
from obsweb.incidents import constants as c
from obsweb.incidents.models import AlertRule
from obsweb.telemetry import histogram, queries
from obsweb.telemetry.models import Rollup, Service


@dataclass(frozen=True)
class Reading:
    """One subject's value for one rule; `value` None means no data (and `note` says why)."""

    subject_kind: str
    subject: str  # service or host name
    subject_id: int
    value: float | None
    requests: int | None = None  # connections, for TCP retransmits
    note: str = ""


@dataclass
class _Totals:
    requests: int = 0
    errors: int = 0
    matching: int = 0  # requests whose status code the rule names (status-code share)
    hist: dict | None = None


def readings(rule: AlertRule, now: datetime) -> list[Reading]:
    """Every subject the rule watches that has something to say now."""
    if rule.metric == c.TCP_RETRANSMIT_RATE:
        return _tcp_retransmits(rule, now)
    if rule.metric == c.HOST_DOWN:
        return _host_down(rule, now)
    if rule.metric == c.AGENT_DROPS:
        return _agent_drops(rule, now)
    if rule.metric == c.THROUGHPUT_DROP:
        return _throughput_drop(rule, now)
    return _service_metric(rule, now)


def _minute_floor(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def _rollups(rule: AlertRule, first_minute: datetime, before: datetime):
    rollups = Rollup.objects.filter(minute__gte=first_minute, minute__lt=before, service__external=False)
    return rollups.filter(service_id=rule.service_id) if rule.service_id else rollups


def _service_totals(rule: AlertRule, now: datetime) -> dict[int, _Totals]:
    first = _minute_floor(now - timedelta(minutes=rule.window_minutes))
    latency = rule.metric in c.LATENCY_QUANTILES
    fields = ["service_id", "status_code", "count", "errors"] + (["histogram"] if latency else [])
    totals: dict[int, _Totals] = defaultdict(lambda: _Totals(hist={} if latency else None))
    for row in _rollups(rule, first, now).values_list(*fields).iterator(chunk_size=2000):
        service_id, status_code, count, errors = row[:4]
        total = totals[service_id]
        total.requests += count
        total.errors += errors
        if rule.metric == c.STATUS_SHARE and rule.matches_status(status_code):
            total.matching += count
        if latency:
            histogram.merge(total.hist, row[4])
    return totals


def _service_metric(rule: AlertRule, now: datetime) -> list[Reading]:
    totals = _service_totals(rule, now)
    names = dict(Service.objects.filter(id__in=totals).values_list("id", "name"))
    found = []
    for service_id, total in sorted(totals.items(), key=lambda item: names[item[0]]):
        if total.requests <= rule.min_requests:
            note = f"{total.requests} requests in {rule.window_minutes} min, rule needs > {rule.min_requests}"
            found.append(
                Reading(c.SUBJECT_SERVICE, names[service_id], service_id, None, total.requests, note)
            )
            continue
        found.append(
            Reading(c.SUBJECT_SERVICE, names[service_id], service_id, _value(rule, total), total.requests)
        )
    return found


def _value(rule: AlertRule, total: _Totals) -> float | None:
    if rule.metric == c.ERROR_RATE:
        return 100.0 * total.errors / total.requests
    if rule.metric == c.STATUS_SHARE:
        return 100.0 * total.matching / total.requests
    value_ns = histogram.quantile(total.hist, c.LATENCY_QUANTILES[rule.metric])
    return None if value_ns is None else value_ns / 1e6


def _throughput_drop(rule: AlertRule, now: datetime) -> list[Reading]:
    """(1 - requests now / requests then) in %, over whole minutes; negative when traffic grew."""
    end = _minute_floor(now)
    start = end - timedelta(minutes=rule.window_minutes)
    offset = timedelta(seconds=c.BASELINE_SECONDS[rule.baseline])
    current = dict(
        _rollups(rule, start, end)
        .values("service_id")
        .annotate(n=Sum("count"))
        .values_list("service_id", "n")
    )
    before = _rollups(rule, start - offset, end - offset).values("service_id").annotate(n=Sum("count"))
    baseline = dict(before.values_list("service_id", "n"))
    names = dict(Service.objects.filter(id__in=set(current) | set(baseline)).values_list("id", "name"))
    found = []
    for service_id in sorted(names, key=names.get):
        then, now_count = baseline.get(service_id, 0), current.get(service_id, 0)
        if then <= rule.min_requests:
            note = f"{then} requests in the baseline window, rule needs > {rule.min_requests}"
            found.append(Reading(c.SUBJECT_SERVICE, names[service_id], service_id, None, now_count, note))
            continue
        drop = 100.0 * (1 - now_count / then)
        found.append(Reading(c.SUBJECT_SERVICE, names[service_id], service_id, drop, now_count))
    return found


@dataclass
class _Tcp:
    connections: int = 0
    retransmits: int = 0
    uncounted: int = 0  # retransmits on edges without counted connections


def _tcp_totals(rule: AlertRule, now: datetime) -> dict[int, _Tcp]:
    """Per service (external peers left out): its edges' connections and retransmits, both ways."""
    since = now - timedelta(minutes=rule.window_minutes)
    pairs = queries.tcp_health(since, now, rule.service if rule.service_id else None)
    internal = set(
        Service.objects.filter(id__in={end for pair in pairs for end in pair}, external=False).values_list(
            "id", flat=True
        )
    )
    if rule.service_id:
        internal &= {rule.service_id}
    totals: dict[int, _Tcp] = defaultdict(_Tcp)
    for pair, tcp in pairs.items():
        for service_id in internal.intersection(pair):  # a set: a service calling itself counts once
            total = totals[service_id]
            if tcp["connections"]:
                total.connections += tcp["connections"]
                total.retransmits += tcp["retransmits"]
            else:
                total.uncounted += tcp["retransmits"]
    return totals


def _tcp_retransmits(rule: AlertRule, now: datetime) -> list[Reading]:
    """Retransmits per 100 connections of each service that had TCP health in the window."""
    totals = _tcp_totals(rule, now)
    names = dict(Service.objects.filter(id__in=totals).values_list("id", "name"))
    found = []
    for service_id, total in sorted(totals.items(), key=lambda item: names[item[0]]):
        name = names[service_id]
        if total.connections <= rule.min_requests:
            note = f"{total.connections} connections in {rule.window_minutes} min"
            note += f", rule needs > {rule.min_requests}"
            if total.uncounted:
                note += f" ({total.uncounted} retransmits on edges whose clients are not traced)"
            found.append(Reading(c.SUBJECT_SERVICE, name, service_id, None, total.connections, note))
            continue
        value = 100.0 * total.retransmits / total.connections
        found.append(Reading(c.SUBJECT_SERVICE, name, service_id, value, total.connections))
    return found


def _hosts(rule: AlertRule):
    hosts = Host.objects.filter(last_seen__isnull=False)  # known from heartbeats, not only records
    return hosts.filter(pk=rule.host_id) if rule.host_id else hosts


def _host_down(rule: AlertRule, now: datetime) -> list[Reading]:
    """Seconds since the last heartbeat of each host that is down; 0 for a host that is not."""
    found = []
    for host in _hosts(rule).order_by("name"):
        silent_s = (now - host.last_seen).total_seconds() if host.status(now) == Host.DOWN else 0.0
        found.append(Reading(c.SUBJECT_HOST, host.name, host.pk, max(silent_s, 0.0)))
    return found


def _agent_drops(rule: AlertRule, now: datetime) -> list[Reading]:
    since = now - timedelta(minutes=rule.window_minutes)
    drops = dict(
        DroppedEvents.objects.filter(at__gte=since, at__lte=now, host__in=_hosts(rule))
        .values("host_id")
        .annotate(n=Sum("count"))
        .values_list("host_id", "n")
    )
    return [
        Reading(c.SUBJECT_HOST, host.name, host.pk, float(drops.get(host.pk, 0)))
        for host in _hosts(rule).order_by("name")
    ]
