"""Two ingesters in one consumer group, one of them killed mid-way and started again: every record
published is counted exactly once, in the rollups, the edges, the resource use and the Prometheus
totals, and no stream entry is left pending.

The ingesters are the real `manage.py ingest` command (two processes, two consumer names) against
one real Redis and one database: a SQLite file in WAL mode, or, when DATABASE_URL names a
PostgreSQL server (`make test-postgres`), a fresh database on it. The records are published the
way a probe worker publishes them (probes.publisher.Publisher, entries of varying size) while both
ingesters run. A short INGEST_CLAIM_IDLE_MS lets the survivor and the restarted process take over
the entries the killed one left pending (XAUTOCLAIM) within a second or two.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

from obsweb.telemetry import histogram
from obsweb.telemetry.cumulative import Observed
from obsweb.telemetry.records import NS_PER_MINUTE
from probes import schema
from probes.publisher import Publisher
from tests.factories import T0, client_request, flow, postgres_request, request, resource
from tests.helpers import REPO, redis_server, stop

SERVER_REQUESTS = 40_000
CLIENT_REQUESTS = 8_000
DB_REQUESTS = 2_000  # pipelined: request.count 1-3 each
FLOWS = 2_000
RESOURCE_INTERVALS = 30  # per service, 10 s apart
SERVICES = [f"svc-{i}" for i in range(8)]
CALLERS = [f"gateway-{i}" for i in range(3)]
ROUTES = [f"/r{i}/{{id}}" for i in range(10)]
MINUTES = 20
KILLS = 2
WAIT_S = 180  # for both ingesters to drain the stream

# Prints what the ingesters stored, as JSON, with names instead of ids (run in a subprocess on the
# test's database: the test process's own Django database is pytest-django's).
DUMP = """
import json
from obsweb.telemetry.models import Edge, EdgeTotal, ResourceUsage, Rollup, ServerTotal
def minute(row):
    return int(row.minute.timestamp()) * 10**9
print(json.dumps({
    "rollups": [[r.service.name, r.endpoint.route or r.endpoint.operation, r.status_code, minute(r),
                 r.count, r.errors, r.request_bytes, r.response_bytes, r.duration_sum_ns, r.histogram]
                for r in Rollup.objects.select_related("service", "endpoint")],
    "edges": [[e.source.name, e.target.name, e.protocol, minute(e), e.count, e.errors, e.bytes,
               e.duration_sum_ns, e.histogram] for e in Edge.objects.select_related("source", "target")],
    "server_totals": [[t.service.name, t.protocol, t.method, t.name, t.status_code, t.count, t.errors,
                       t.buckets] for t in ServerTotal.objects.select_related("service")],
    "edge_totals": [[t.source.name, t.target.name, t.protocol, t.count, t.errors, t.buckets]
                    for t in EdgeTotal.objects.select_related("source", "target")],
    "cpu": [[u.host.name, u.service.name if u.service else None, u.cpu_time_ns, u.disk_read_bytes]
            for u in ResourceUsage.objects.select_related("host", "service")],
}))
"""


def published_records(rng: random.Random) -> list[dict]:
    """The known set: requests over many services, routes, statuses and minutes, calls between
    services, pipelined database queries, connections and resource use, in time order."""
    records = []

    def ts():
        return T0 + rng.randrange(MINUTES * NS_PER_MINUTE)

    def duration():
        return int(10 ** rng.uniform(4.5, 9.7))  # 30 us to 5 s: every bucket kind, some slow ones

    for _ in range(SERVER_REQUESTS):
        status = rng.choice((200, 200, 200, 200, 201, 404, 500))
        records.append(
            request(**{"ts": ts(), "service.name": rng.choice(SERVICES), "http.route": rng.choice(ROUTES),
                       "http.response.status_code": status, "error": status >= 500,
                       "duration_ns": duration(), "request.bytes": rng.randrange(1000),
                       "response.bytes": rng.randrange(10_000), "host": rng.choice(("h1", "h2"))})
        )  # fmt: skip
    for _ in range(CLIENT_REQUESTS):
        status = rng.choice((200, 200, 200, 503))
        records.append(
            client_request(**{"ts": ts(), "service.name": rng.choice(CALLERS),
                              "peer.service": rng.choice(SERVICES), "http.response.status_code": status,
                              "error": status >= 500, "duration_ns": duration(),
                              "request.bytes": rng.randrange(1000), "response.bytes": rng.randrange(1000)})
        )  # fmt: skip
    for _ in range(DB_REQUESTS):
        failed = rng.random() < 0.1
        records.append(
            postgres_request(**{"ts": ts(), "duration_ns": duration(), "request.count": rng.randint(1, 3),
                                "error": failed, "db.operation.name": rng.choice(("SELECT", "UPDATE"))})
        )  # fmt: skip
    for _ in range(FLOWS):
        records.append(
            flow(**{"ts": ts(), "service.name": rng.choice(CALLERS), "peer.service": rng.choice(SERVICES),
                    "flow.bytes_sent": rng.randrange(10_000), "flow.bytes_received": rng.randrange(10_000),
                    "flow.duration_ns": duration()})
        )  # fmt: skip
    for service in SERVICES:
        for i in range(RESOURCE_INTERVALS):
            records.append(
                resource(**{"ts": T0 + (i + 1) * 10 * 10**9, "service.name": service, "host": "h1",
                            "process.cpu.time_ns": rng.randrange(10**9),
                            "disk.read_bytes": rng.randrange(10**6)})
            )  # fmt: skip
    records.sort(key=lambda r: r["ts"])  # a worker sends what it saw, roughly in time order
    return records


def expected_totals(records: list[dict]) -> dict:
    """What the stored rows must add up to, computed here without the ingester's code."""
    rollups = defaultdict(lambda: [0, 0, 0, 0, 0, {}])
    edges = defaultdict(lambda: [0, 0, 0, 0, {}])
    server_totals = defaultdict(Observed)
    edge_totals = defaultdict(Observed)
    cpu = defaultdict(lambda: [0, 0])
    for r in records:
        minute = r["ts"] - r["ts"] % NS_PER_MINUTE
        if r["kind"] == "resource":
            cpu["h1", r["service.name"]][0] += r["process.cpu.time_ns"]
            cpu["h1", r["service.name"]][1] += r["disk.read_bytes"]
            continue
        if r["kind"] == "flow":
            edge = edges[r["service.name"], r["peer.service"], "tcp", minute]
            bytes_ = r["flow.bytes_sent"] + r["flow.bytes_received"]
            _add(edge, 1, 0, bytes_, r["flow.duration_ns"], 1)
            continue
        count = r.get("request.count", 1)
        status = r.get("http.response.status_code", 0)
        protocol = r["network.protocol.name"]
        if r["span.kind"] == "client":
            bytes_ = r["request.bytes"] + r["response.bytes"]
            edge = edges[r["service.name"], r["peer.service"], protocol, minute]
            _add(edge, count, r["error"], bytes_, r["duration_ns"], count)
            edge_totals[r["service.name"], r["peer.service"], protocol].add(
                r["duration_ns"], count, r["error"]
            )
            continue
        name = r.get("http.route") or r["db.operation.name"]
        row = rollups[r["service.name"], name, status, minute]
        row[0] += count
        row[1] += r["error"]
        row[2] += r["request.bytes"]
        row[3] += r["response.bytes"]
        row[4] += r["duration_ns"]
        histogram.add(row[5], r["duration_ns"], count)
        method = r.get("http.request.method", "")
        server_totals[r["service.name"], protocol, method, name, status].add(
            r["duration_ns"], count, r["error"]
        )
    return {
        "rollups": {key: value for key, value in rollups.items()},
        "edges": {key: value for key, value in edges.items()},
        "server_totals": {key: [o.count, o.errors, o.buckets] for key, o in server_totals.items()},
        "edge_totals": {key: [o.count, o.errors, o.buckets] for key, o in edge_totals.items()},
        "cpu": {key: value for key, value in cpu.items()},
    }


def _add(edge: list, count: int, errors: int, bytes_: int, duration: int, n: int) -> None:
    edge[0] += count
    edge[1] += errors
    edge[2] += bytes_
    edge[3] += duration
    histogram.add(edge[4], duration, n)


def stored_totals(dump: dict) -> dict:
    cpu = defaultdict(lambda: [0, 0])  # summed over the minutes
    for host, service, cpu_ns, read_bytes in dump["cpu"]:
        if service is not None:
            cpu[host, service][0] += cpu_ns
            cpu[host, service][1] += read_bytes
    return {
        "rollups": {tuple(row[:4]): row[4:] for row in dump["rollups"]},
        "edges": {tuple(row[:4]): row[4:] for row in dump["edges"]},
        "server_totals": {tuple(row[:5]): row[5:] for row in dump["server_totals"]},
        "edge_totals": {tuple(row[:3]): row[3:] for row in dump["edge_totals"]},
        "cpu": dict(cpu),
    }


class Database:
    """The ingesters' database: a fresh one on the PostgreSQL server DATABASE_URL names, else a
    SQLite file (WAL, as settings.py configures it) in `tmp`."""

    def __init__(self, tmp: Path):
        base = os.environ.get("DATABASE_URL", "")
        self.postgres = base.startswith(("postgres://", "postgresql://"))
        self.admin_url = base
        if self.postgres:
            self.name = f"obsweb_scale_out_{os.getpid()}"
            self.url = urlunsplit(urlsplit(base)._replace(path=f"/{self.name}"))
        else:
            self.url = f"sqlite:///{tmp / 'db.sqlite3'}"

    def __enter__(self) -> "Database":
        if self.postgres:
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {self.name}")
                admin.execute(f"CREATE DATABASE {self.name}")
        return self

    def __exit__(self, *exc) -> None:
        if self.postgres:
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class Ingesters:
    """`manage.py ingest` processes, each its own consumer (named host-pid by the command)."""

    def __init__(self, env: dict, tmp: Path):
        self.env, self.tmp = env, tmp
        self.procs: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        log = open(self.tmp / f"ingest-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "ingest"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.tmp.glob("ingest-*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)


def consumer(proc: subprocess.Popen) -> str:
    return f"{socket.gethostname()}-{proc.pid}"


def pending_of(client: redis.Redis, name: str) -> int:
    for info in client.xinfo_consumers(schema.RECORDS_STREAM, schema.INGEST_GROUP):
        if info["name"].decode() == name:
            return info["pending"]
    return 0


def kill_if_pending(client: redis.Redis, proc: subprocess.Popen, timeout_s: float = 2.0) -> int | None:
    """SIGKILL `proc` at a moment it holds entries it has read and not yet acknowledged, and return
    how many it left pending; None when it held none within `timeout_s` (it acknowledged first)."""
    name = consumer(proc)
    deadline = time.monotonic() + timeout_s
    while pending_of(client, name) == 0:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return pending_of(client, name)


def wait_until_started(ingesters: "Ingesters", timeout_s: float = 60.0) -> None:
    """Until every ingester started so far reads the stream (it logs its consumer name)."""
    deadline = time.monotonic() + timeout_s
    while ingesters.logs().count("as consumer") < len(ingesters.procs):
        assert time.monotonic() < deadline, (
            f"the ingesters did not start in {timeout_s} s:\n{ingesters.logs()}"
        )
        time.sleep(0.1)


def wait_until_drained(client: redis.Redis, entries: int, ingesters: Ingesters, live: list) -> None:
    """Until every entry was delivered to a consumer and acknowledged, while the `live` ingesters run."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        (group,) = client.xinfo_groups(schema.RECORDS_STREAM)
        if group["lag"] == 0 and group["pending"] == 0 and group["entries-read"] == entries:
            return
        for proc in live:
            assert proc.poll() is None, f"an ingester died:\n{ingesters.logs()[-4000:]}"
        time.sleep(0.1)
    raise TimeoutError(f"stream not drained in {WAIT_S} s: {group}\n{ingesters.logs()[-4000:]}")


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def publish(client: redis.Redis, records: list[dict], rng: random.Random, on_entry) -> int:
    """Publish `records` as a worker would, in entries of varying size (a busy worker fills 1000,
    a quiet one flushes what 200 ms brought), a little at a time; calls on_entry(records published
    so far) after each entry; returns the number of entries."""
    publisher = Publisher(client)
    entries = 0
    position = 0
    while position < len(records):
        size = rng.choice((1000, 1000, rng.randint(1, 999)))
        for record in records[position : position + size]:
            publisher.add(record)
        position += size
        publisher.flush(force=True)
        assert not publisher.waiting, "Redis refused an entry"
        entries += 1
        on_entry(min(position, len(records)))
        time.sleep(0.01)
    assert publisher.published == len(records) and publisher.dropped == 0
    return entries


def test_two_ingesters_with_one_killed_count_every_record_exactly_once():
    rng = random.Random(10)
    records = published_records(rng)
    want = expected_totals(records)

    with tempfile.TemporaryDirectory(prefix="obsweb-scale-out-") as tmp_name, redis_server() as redis_url:
        tmp = Path(tmp_name)
        with Database(tmp) as database:
            env = {
                **os.environ,
                "DATABASE_URL": database.url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": "scale-out-test-key",
                "PYTHONUNBUFFERED": "1",
                "INGEST_CLAIM_IDLE_MS": "5000",
                "INGEST_RECLAIM_INTERVAL_S": "1",
            }
            manage(env, "migrate", "--noinput")
            client = redis.Redis.from_url(redis_url)
            ingesters = Ingesters(env, tmp)
            try:
                survivor, victim = ingesters.start(), ingesters.start()
                left_pending = []  # per kill: the entries the killed ingester had not acknowledged

                survivor_stopped = False

                def kill_mid_way(published: int) -> None:
                    """At each third of the records: stop the survivor (SIGSTOP), so the entry published
                    next can only go to the victim, then kill the victim while it holds it."""
                    nonlocal victim, survivor_stopped
                    if len(left_pending) == KILLS:
                        return
                    if not survivor_stopped:
                        if published >= (len(left_pending) + 1) * len(records) // 3:
                            survivor.send_signal(signal.SIGSTOP)
                            survivor_stopped = True
                        return
                    left = kill_if_pending(client, victim)
                    if left is None:
                        return  # it wrote that entry before we looked: try with the next one
                    left_pending.append(left)
                    survivor.send_signal(signal.SIGCONT)
                    survivor_stopped = False
                    victim = ingesters.start()
                    wait_until_started(ingesters)

                wait_until_started(ingesters)
                try:
                    entries = publish(client, records, rng, kill_mid_way)
                finally:
                    survivor.send_signal(signal.SIGCONT)
                assert len(left_pending) == KILLS, f"{entries} entries were too few to kill {KILLS} times"
                wait_until_drained(client, entries, ingesters, [survivor, victim])
                stop(survivor)
                stop(victim)
                still_pending = client.xpending(schema.RECORDS_STREAM, schema.INGEST_GROUP)["pending"]
                dump = json.loads(manage(env, "shell", "-c", DUMP).splitlines()[-1])
                logs = ingesters.logs()
            finally:
                ingesters.stop_all()
                client.close()

            assert sum(left_pending) > 0, "no kill left an entry pending: nothing was reclaimed"
            assert "reclaimed" in logs
            assert still_pending == 0
            assert " failed 0" in logs and "refused by the database" not in logs, logs[-4000:]
            got = stored_totals(dump)
            for table in want:
                missing = want[table].keys() - got[table].keys()
                extra = got[table].keys() - want[table].keys()
                assert not missing and not extra, (
                    f"{table}: missing {list(missing)[:5]}, extra {list(extra)[:5]}"
                )
                wrong = {k: (got[table][k], v) for k, v in want[table].items() if got[table][k] != list(v)}
                assert not wrong, f"{table}: {len(wrong)} rows differ, e.g. {list(wrong.items())[:2]}"
            operations = sum(r.get("request.count", 1) for r in records if r["kind"] == "request")
            counted = sum(row[0] for row in got["rollups"].values())
            counted += sum(row[0] for key, row in got["edges"].items() if key[2] != "tcp")
            assert counted == operations
