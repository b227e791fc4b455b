"""Retention keeps the database bounded: ten days of steady traffic, pruned as Celery beat prunes,
leave every table that grows with time holding its retention's worth of rows, and the SQLite file
stops growing once each day's pruning frees what the next day writes.

The traffic is bench/rollup_data.py's (its fleet plan, histograms and writers) cut down to one
domain's services (checkout's gateway, web, api, svc, worker and its PostgreSQL, and the calls
among them), one minute in EVERY carrying the traffic of EVERY minutes, and a short request path
a minute, so ten days take seconds. The tables that generator does not write get rows at a steady
rate alongside: resource use, TCP health, drop counts, replay markers, and a resolved incident a
day with its timeline, webhooks and report (and one incident open all along, which must stay).
The days run in a process of their own (`manage.py shell`) on a SQLite file in WAL mode as
`make run` keeps it, Django's clock set to the end of each day when beat's pruning tasks run.
"""

import json
import os
import random
import subprocess
import sys
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

from django.apps import apps
from django.conf import settings
from django.db import connection

from bench import rollup_data
from obsweb.fleet.models import DroppedEvents, Host
from obsweb.incidents import constants as c
from obsweb.incidents.models import (
    Incident,
    IncidentAlert,
    IncidentEvent,
    Report,
    ReportFile,
    WebhookDelivery,
)
from obsweb.telemetry.models import (
    Edge,
    IngestedBatch,
    RequestSample,
    ResourceUsage,
    Rollup,
    Service,
    TcpHealth,
)
from obsweb.telemetry.tasks import INGESTED_BATCH_RETENTION
from tests import helpers

DAYS = 10
DOMAIN = "checkout"
EVERY = 30  # minutes; the generator's older days hold one minute in ten
# Request paths: one a minute, a front door and the services it calls (the benchmark's: eight a
# minute, four calls deep, would make request samples most of the run time).
TRACES_PER_MINUTE = 1
TRACE_DEPTH = 1
REPORT_BYTES = 64 * 1024  # a report's HTML with its charts inline is tens of kilobytes
RETENTION_ENV = {
    "SAMPLE_RETENTION_HOURS": "24",
    "ROLLUP_RETENTION_DAYS": "7",
    # Shorter than their defaults (30 and 90 days), so that ten days reach the steady state.
    "REPORT_RETENTION_DAYS": "3",
    "INCIDENT_RETENTION_DAYS": "5",
}
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


def retention() -> dict[str, tuple[str, timedelta]]:
    """Per model that grows with time: the field its age is read from, and how long it is kept."""
    rollups = timedelta(days=settings.ROLLUP_RETENTION_DAYS)
    return {
        RequestSample._meta.label: ("ts", timedelta(hours=settings.SAMPLE_RETENTION_HOURS)),
        Rollup._meta.label: ("minute", rollups),
        Edge._meta.label: ("minute", rollups),
        ResourceUsage._meta.label: ("minute", rollups),
        TcpHealth._meta.label: ("minute", rollups),
        DroppedEvents._meta.label: ("at", rollups),
        IngestedBatch._meta.label: ("ingested_at", INGESTED_BATCH_RETENTION),
        Report._meta.label: ("requested_at", timedelta(days=settings.REPORT_RETENTION_DAYS)),
        Incident._meta.label: ("resolved_at", timedelta(days=settings.INCIDENT_RETENTION_DAYS)),
    }


# Deleted with the row they belong to (on_delete=CASCADE).
PRUNED_WITH = {
    IncidentAlert._meta.label: Incident._meta.label,
    IncidentEvent._meta.label: Incident._meta.label,
    WebhookDelivery._meta.label: Incident._meta.label,
    ReportFile._meta.label: Report._meta.label,
}
# A row per thing seen or configured, not per minute: as many on day ten as on day one while the
# fleet stays the same. The audit log grows with what staff change, and is kept whole.
NOT_GROWING_WITH_TIME = {
    "telemetry.Service",
    "telemetry.Endpoint",
    "telemetry.ServerTotal",
    "telemetry.EdgeTotal",
    "fleet.Host",
    "fleet.AuditEntry",
    "fleet.RedactionPolicy",
    "incidents.AlertRule",
}


def obsweb_models() -> list:
    return [m for m in apps.get_models() if m.__module__.startswith("obsweb.")]


# --- what runs in the simulating process ----------------------------------------------------------


def small_fleet(rng: random.Random) -> rollup_data.Fleet:
    """The benchmark's fleet plan, keeping DOMAIN's services and the calls among them."""
    fleet = rollup_data.plan_fleet(rng)
    services = [s for s in fleet.services if s.domain == DOMAIN]
    names = {s.name for s in services}
    for service in services:
        service.callees = [e for e in service.callees if e.target.name in names]
    edges = [e for s in services for e in s.callees]
    return rollup_data.Fleet(fleet.hosts, services, edges, fleet.profiles)


def steady_minutes(day_start: datetime) -> list[tuple[datetime, int]]:
    """The day's minutes that hold rows: (minute, how many minutes of traffic its rows carry)."""
    return [(day_start + (k * EVERY + EVERY - 1) * MINUTE, EVERY) for k in range(24 * 60 // EVERY)]


class IndexesKept:
    """Stands in for rollup_data.deferred_indexes: the indexes stay, as when the ingester writes.
    Dropping and building them around each day's rows would free and reuse pages as no running
    obsweb does, and the file's size is what is measured."""

    def __init__(self, model):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@contextmanager
def clock(now: datetime):
    """Django's now() (retention cut-offs, auto_now_add fields) at `now`."""
    with mock.patch("django.utils.timezone.now", return_value=now):
        yield


def write_traffic(fleet: rollup_data.Fleet, pools: list, day_start: datetime, rng: random.Random) -> None:
    """One day of rollups, edges and request samples, by the benchmark's generator."""
    now = day_start + DAY
    minutes = steady_minutes(day_start)
    with (
        mock.patch.object(rollup_data, "deferred_indexes", IndexesKept),
        mock.patch.object(rollup_data, "TRACES_PER_MINUTE", TRACES_PER_MINUTE),
        mock.patch.object(rollup_data, "MAX_DEPTH", TRACE_DEPTH),
    ):
        _, failures = rollup_data.write_rollups(fleet, minutes, now, pools, rng)
        rollup_data.write_edges(fleet, minutes, pools, rng)
        rollup_data.write_samples(fleet, now, failures, rng)


def write_fleet_rows(fleet: rollup_data.Fleet, day_start: datetime) -> None:
    """What the benchmark does not generate, at a steady rate: per minute with traffic, resource
    use of every host and service, TCP health of every edge and a replay marker; every hour, a
    drop count per host."""
    hosts = dict(Host.objects.values_list("name", "id"))
    usage, health, drops, batches = [], [], [], []
    for minute, _ in steady_minutes(day_start):
        usage += [{"minute": minute, "host": h, "service": None, "cpu_count": 2} for h in hosts.values()]
        usage += [
            {"minute": minute, "host": hosts[fleet.hosts[s.hosts[0]]], "service": s.id, "cpu_time_ns": 10**9}
            for s in fleet.services
        ]
        health += [
            {"minute": minute, "source": e.source.id, "target": e.target.id, "connections": 40}
            for e in fleet.edges
        ]
        batches.append({"stream_id": f"{minute.timestamp():.0f}-0", "ingested_at": minute})
        if minute.minute == 59:
            drops += [
                {"host": h, "after": minute - 5 * MINUTE, "at": minute, "count": 3} for h in hosts.values()
            ]
    for model, rows in (
        (ResourceUsage, usage),
        (TcpHealth, health),
        (DroppedEvents, drops),
        (IngestedBatch, batches),
    ):
        rollup_data._insert_objects(model, rows)


def write_incident(service: Service, opened: datetime) -> None:
    """An incident that resolved half an hour after it opened, as evaluation and the report task
    leave one: the rule that fired, its timeline, two webhooks and a report in HTML."""
    resolved = opened + 30 * MINUTE
    incident = Incident.objects.create(
        subject_kind=c.SUBJECT_SERVICE,
        subject=service.name,
        service=service,
        state=c.RESOLVED,
        opened_at=opened,
        resolved_at=resolved,
        last_firing_at=opened + 20 * MINUTE,
        clear_since=opened + 20 * MINUTE,
    )
    IncidentAlert.objects.create(
        incident=incident,
        rule_name="Error rate above 5 %",
        condition="error rate (%) > 5 with > 10 requests in 5 min",
        first_fired_at=opened,
        last_fired_at=opened + 20 * MINUTE,
        last_value=12.5,
        firing=False,
    )
    for kind, at in ((c.EVENT_OPENED, opened), (c.EVENT_RESOLVED, resolved)):
        IncidentEvent.objects.create(incident=incident, at=at, kind=kind, text=f"{kind} {service.name}")
    for event in (c.WEBHOOK_OPENED, c.WEBHOOK_RESOLVED):
        WebhookDelivery.objects.create(
            incident=incident, event=event, url="https://hooks.invalid/x", payload={"event": event}
        )
    report = Report.objects.create(
        incident=incident, requested_at=resolved, status=c.DONE, progress=100, finished_at=resolved
    )
    content = random.randbytes(REPORT_BYTES)  # charts compress badly: no page-saving runs of zeros
    ReportFile.objects.create(report=report, format=c.FORMAT_HTML, content=content, size=len(content))


def run_beat_pruning() -> list[str]:
    """Every pruning task in beat's schedule, run as a Celery worker runs it; their names."""
    from obsweb.celery import app

    app.loader.import_default_modules()
    names = [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values() if ".prune" in entry["task"]]
    for name in names:
        app.tasks[name]()
    return names


def measure(now: datetime) -> dict:
    """Rows per model, rows older than their retention, and the database's size on disk."""
    too_old = {
        label: apps.get_model(label).objects.filter(**{f"{field}__lt": now - kept}).count()
        for label, (field, kept) in retention().items()
    }
    with connection.cursor() as cursor:
        pages = {}
        for name in ("page_size", "page_count", "freelist_count"):
            cursor.execute(f"PRAGMA {name}")
            pages[name] = cursor.fetchone()[0]
    path = Path(connection.settings_dict["NAME"])
    wal = path.with_name(path.name + "-wal")
    return {
        "rows": {m._meta.label: m.objects.count() for m in obsweb_models()},
        "too_old": too_old,
        "open_incidents": Incident.objects.filter(state=c.OPEN).count(),
        "file_bytes": path.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        **pages,
    }


def simulate(days: int) -> dict:
    """`days` days of steady traffic up to today, each pruned at its end as beat would; what
    measure() found after each day's pruning, and the pruning tasks that ran."""
    rng = random.Random(rollup_data.SEED)
    rollup_data._tune_for_bulk_load()  # no fsync: a crash means running the test again
    first_day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - days * DAY
    fleet = small_fleet(rng)
    rollup_data.write_inventory(fleet, first_day)
    pools = [rollup_data.HistogramPool(latency, rng) for latency in fleet.profiles]
    busiest = Service.objects.get(name=max(fleet.services, key=lambda s: s.per_minute).name)
    quietest = Service.objects.get(name=min(fleet.services, key=lambda s: s.per_minute).name)
    # Open all along: no retention applies to an incident that has not resolved.
    Incident.objects.create(
        subject_kind=c.SUBJECT_SERVICE,
        subject=quietest.name,
        service=quietest,
        opened_at=first_day,
        last_firing_at=first_day,
    )
    measured, pruned_by = [], []
    for day in range(days):
        day_start = first_day + day * DAY
        write_traffic(fleet, pools, day_start, rng)
        write_fleet_rows(fleet, day_start)
        write_incident(busiest, day_start + 12 * 60 * MINUTE)
        with clock(day_start + DAY):
            pruned_by = run_beat_pruning()
            measured.append(measure(day_start + DAY))
    return {"days": measured, "pruned_by": pruned_by}


# --- the tests ------------------------------------------------------------------------------------


def simulated_days(tmp_path: Path) -> dict:
    """simulate(DAYS) in a process of its own, on a fresh SQLite file whose size it can measure."""
    env = os.environ | RETENTION_ENV
    env |= {
        "DJANGO_SETTINGS_MODULE": "obsweb.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'retention.sqlite3'}",
        "SECRET_KEY": "retention-test-only",
    }
    code = (
        "import json\n"
        "from django.core.management import call_command\n"
        "from tests.test_retention_bounds import DAYS, simulate\n"
        "call_command('migrate', verbosity=0)\n"
        "print('RESULT ' + json.dumps(simulate(DAYS)))\n"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=helpers.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"the simulation failed:\n{done.stdout}\n{done.stderr}"
    (result,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(result.removeprefix("RESULT "))


def summary(days: list[dict]) -> str:
    lines = []
    for day, d in enumerate(days, start=1):
        rows = {label.split(".")[1]: n for label, n in d["rows"].items() if n}
        lines.append(
            f"day {day:2}: file {d['file_bytes'] / 2**20:.1f} MiB + WAL {d['wal_bytes'] / 2**20:.1f} MiB, "
            f"{d['freelist_count']} of {d['page_count']} pages free; {rows}"
        )
    return "\n".join(lines)


def test_every_model_says_how_long_its_rows_are_kept():
    models = {m._meta.label for m in obsweb_models()}
    classified = retention().keys() | PRUNED_WITH.keys() | NOT_GROWING_WITH_TIME
    assert models - classified == set(), "new models: add them to retention() or say why they need none"
    assert classified - models == set()


def test_ten_days_of_traffic_pruned_as_beat_prunes_stay_at_their_retention(tmp_path):
    simulated = simulated_days(tmp_path)
    days = simulated["days"]
    print(summary(days))

    assert {"obsweb.telemetry.tasks.prune_telemetry", "obsweb.incidents.prune_reports"} <= set(
        simulated["pruned_by"]
    )
    for day, measured in enumerate(days, start=1):
        assert measured["too_old"] == dict.fromkeys(retention(), 0), f"rows past their retention on day {day}"
    # One more day, pruned again: every table that grows with time holds about what it held.
    ninth, tenth = days[-2]["rows"], days[-1]["rows"]
    for label in retention().keys() | PRUNED_WITH.keys():
        assert tenth[label] > 0, f"{label}: no rows written, so nothing shown"
        assert abs(tenth[label] - ninth[label]) <= 0.05 * ninth[label], (
            f"{label}: {ninth[label]} rows after day 9, {tenth[label]} after day 10"
        )
    assert [d["open_incidents"] for d in days] == [1] * DAYS
    assert {label: tenth[label] for label in NOT_GROWING_WITH_TIME} == {
        label: days[0]["rows"][label] for label in NOT_GROWING_WITH_TIME
    }
    # Seven days of rollups, not ten: pruning keeps them level, not a generator running dry.
    one_day = days[0]["rows"]["telemetry.Rollup"]
    assert 6.5 * one_day < tenth["telemetry.Rollup"] < 7.5 * one_day
    # SQLite puts the pages a prune frees on its free list and the next day's rows reuse them:
    # from day 8 on (rollups pruned daily) the file and its WAL grow by less than a quarter of
    # what one day added while the week filled up.
    on_disk = [d["file_bytes"] + d["wal_bytes"] for d in days]
    filling_per_day = (on_disk[6] - on_disk[2]) / 4
    assert on_disk[-1] - on_disk[7] < filling_per_day / 4, f"bytes on disk after each day: {on_disk}"
