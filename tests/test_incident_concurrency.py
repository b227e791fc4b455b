"""Two Celery worker processes (two pool processes each) evaluating the rules at once, on
PostgreSQL where two transactions really can race: exactly one incident opens, with one timeline
entry, one alert and one webhook (retried by Celery until the receiver takes it)."""

import subprocess
import sys
import time

import psycopg
import pytest
import redis
from celery import Celery

from tests.helpers import REPO, stop
from tests.incidents import webhook_receiver
from tests.servers.databases import DATABASE, postgres_server

EVALUATIONS = 40
SEED = (
    "from tests.seed import seed_service\n"
    "seed_service('checkout', requests=50, errors=10)\n"  # 20 % errors: the default rule fires
)


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def postgres_env(redis_url, tmp_path):
    with postgres_server() as pg, webhook_receiver(500, 500, 200) as receiver:
        dsn = f"postgresql://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/{DATABASE}"
        env = {
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "obsweb.settings",
            "DATABASE_URL": dsn,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "concurrency-test-only",
            "INCIDENT_WEBHOOK_URL": receiver.url,
            "WEBHOOK_RETRY_BASE_S": "1",
            "PYTHONUNBUFFERED": "1",
        }
        redis.Redis.from_url(redis_url).flushdb()
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "shell", "-c", SEED)
        yield env, dsn, receiver


def test_two_workers_evaluating_at_once_open_exactly_one_incident(postgres_env, redis_url, tmp_path):
    env, dsn, receiver = postgres_env
    workers = []
    for name in ("one", "two"):
        log = open(tmp_path / f"worker-{name}.log", "wb")
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "obsweb",
                    "worker",
                    "-n",
                    f"{name}@%h",
                    "--concurrency",
                    "2",
                    "-l",
                    "info",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],  # fmt: skip
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        _wait_for(
            lambda: all("ready." in (tmp_path / f"worker-{n}.log").read_text() for n in ("one", "two")), 60
        )
        sender = Celery(broker=redis_url)
        for _ in range(EVALUATIONS):
            sender.send_task("obsweb.incidents.evaluate_alerts")
        broker = redis.Redis.from_url(redis_url)
        _wait_for(lambda: broker.llen("celery") == 0 and len(receiver.received) >= 3, 60)
        time.sleep(3)  # evaluations still running, and any duplicate webhook, would show by now
    finally:
        for worker in workers:
            stop(worker, timeout=20)
    logs = "".join((tmp_path / f"worker-{n}.log").read_text() for n in ("one", "two"))

    assert logs.count("succeeded") >= EVALUATIONS, logs[-3000:]
    assert rows(dsn, "SELECT subject, state FROM incidents_incident") == [("checkout", "open")]
    assert rows(dsn, "SELECT kind, count(*) FROM incidents_incidentevent GROUP BY kind") == [("opened", 1)]
    assert rows(dsn, "SELECT count(*) FROM incidents_incidentalert") == [(1,)]
    assert rows(dsn, "SELECT event, status, attempts FROM incidents_webhookdelivery") == [
        ("incident.opened", "delivered", 3)
    ]
    assert [r["body"]["event"] for r in receiver.received] == ["incident.opened"] * 3
    joins = logs.count("another worker opened its incident first")
    print(f"\n{EVALUATIONS} evaluations on 2 workers x 2 processes; lost races that joined: {joins}")


def _wait_for(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s")
