"""`make run`'s Redis users (scripts/redis_acl.py, scripts/run-redis.sh; SECURITY.md: Redis): the
probe worker's user can do what the worker does and nothing else, the app's user runs the ingester,
and a connection that does not log in can do nothing. Started the way `make run` starts it."""

import json
import os
import socket
import stat
import subprocess
import sys
import threading

import pytest
import redis
from django.core.management import call_command

from obsweb.telemetry.models import Rollup
from probes import schema
from probes.agent import Agent
from probes.publisher import Publisher
from tests import helpers
from tests.factories import request

HOST = "web-1"


def url_of(directory, user: str) -> str:
    return (directory / f"{user}.url").read_text().strip()


def client_as(directory, user: str) -> redis.Redis:
    return redis.Redis.from_url(url_of(directory, user), socket_timeout=2, socket_connect_timeout=2)


@pytest.fixture
def app(acl_redis):
    client = client_as(acl_redis, "obsweb")
    client.delete(schema.RECORDS_STREAM, schema.control_key(HOST), schema.agent_key(HOST), "obsweb:other")
    yield client
    client.close()


@pytest.fixture
def worker(acl_redis):
    client = client_as(acl_redis, "obsweb-probes")
    yield client
    client.close()


def test_it_keeps_the_passwords_to_their_owner(acl_redis):
    assert stat.S_IMODE(acl_redis.stat().st_mode) == 0o700
    for name in ("passwords.json", "users.acl", "obsweb.url", "obsweb-probes.url"):
        assert stat.S_IMODE((acl_redis / name).stat().st_mode) == 0o600, name
    passwords = json.loads((acl_redis / "passwords.json").read_text())
    assert not any(p in (acl_redis / "users.acl").read_text() for p in passwords.values())


def test_it_keeps_the_passwords_when_run_again(acl_redis):
    before = (acl_redis / "passwords.json").read_text()
    env = os.environ | {"OBSWEB_REDIS_PORT": (acl_redis / "port").read_text().strip()}
    subprocess.run(
        [sys.executable, "scripts/redis_acl.py", str(acl_redis)], cwd=helpers.REPO, env=env, check=True
    )
    assert (acl_redis / "passwords.json").read_text() == before
    assert client_as(acl_redis, "obsweb").ping()  # same port: it is obsweb's Redis


def test_it_refuses_connections_that_do_not_log_in(acl_redis):
    port = int((acl_redis / "port").read_text())
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"PING\r\nAUTH default x\r\nGET obsweb:other\r\n")
        answers = b""
        while answers.count(b"\r\n") < 3:
            answers += conn.recv(4096)
    assert [a.split(b" ")[0] for a in answers.splitlines()] == [b"-NOAUTH", b"-WRONGPASS", b"-NOAUTH"]


def test_the_worker_publishes_reads_its_control_hash_and_beats(acl_redis, app):
    app.hset(schema.control_key(HOST), mapping={"http": "0", schema.CONTROL_REDACTION: ""})
    agent = Agent(url_of(acl_redis, "obsweb-probes"), HOST)

    agent.read_desired()
    agent.heartbeat()
    agent.publisher.add(request(host=HOST))
    agent.publisher.flush(force=True)

    assert agent.desired["http"] is False and agent.desired["tls"] is True
    assert agent.publisher.published == 2 and agent.publisher.dropped == 0
    batches = [schema.unpack_batch(f[schema.RECORDS_FIELD]) for _, f in app.xrange(schema.RECORDS_STREAM)]
    assert [r[schema.KIND] for batch in batches for r in batch] == [schema.KIND_AGENT, schema.KIND_REQUEST]
    assert json.loads(app.get(schema.agent_key(HOST)))[schema.HOST] == HOST
    assert 0 < app.ttl(schema.agent_key(HOST)) <= schema.AGENT_KEY_TTL_S


def test_the_worker_hears_control_changes(acl_redis, app):
    agent = Agent(url_of(acl_redis, "obsweb-probes"), HOST)
    listener = threading.Thread(target=agent.listen_for_control, daemon=True)
    listener.start()
    try:
        assert agent.control_changed.wait(5)  # subscribed
        agent.control_changed.clear()
        deadline_hits = 0
        while not agent.control_changed.is_set() and deadline_hits < 50:
            app.publish(schema.CONTROL_CHANNEL, HOST)
            agent.control_changed.wait(0.1)
            deadline_hits += 1
        assert agent.control_changed.is_set()
    finally:
        agent.stopping.set()
        listener.join(5)


def test_a_plain_publisher_works_too(worker, app):
    publisher = Publisher(worker)
    publisher.add(request(host=HOST))
    publisher.flush(force=True)
    assert publisher.published == 1 and app.xlen(schema.RECORDS_STREAM) == 1


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("KEYS", "*"),
        ("SCAN", "0"),
        ("CONFIG", "GET", "dir"),
        ("CONFIG", "SET", "dir", "/tmp"),
        ("ACL", "LIST"),
        ("INFO",),
        ("CLIENT", "LIST"),
        ("SHUTDOWN",),
        ("MONITOR",),
        ("XREAD", "STREAMS", schema.RECORDS_STREAM, "0"),
        ("XRANGE", schema.RECORDS_STREAM, "-", "+"),
        ("XREADGROUP", "GROUP", schema.INGEST_GROUP, "c", "STREAMS", schema.RECORDS_STREAM, ">"),
        ("XTRIM", schema.RECORDS_STREAM, "MAXLEN", "0"),
        ("DEL", schema.RECORDS_STREAM),
        ("GET", schema.agent_key("other-host")),
        ("SET", schema.agent_key(HOST), "x", "GET"),
        ("GET", "obsweb:other"),
        ("HGETALL", "obsweb:other"),
        ("HSET", schema.control_key(HOST), "http", "1"),
        ("DEL", schema.control_key(HOST)),
        ("SET", "obsweb:other", "x"),
        ("PUBLISH", schema.CONTROL_CHANNEL, HOST),
        ("EVAL", "return 1", "0"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_the_worker_is_refused_everything_else(worker, app, command):
    app.xadd(schema.RECORDS_STREAM, {"f": "v"})
    app.xgroup_create(schema.RECORDS_STREAM, schema.INGEST_GROUP, id="0")
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.execute_command(*command)
    assert app.xlen(schema.RECORDS_STREAM) == 1


def test_the_worker_cannot_listen_to_other_channels(worker):
    pubsub = worker.pubsub()
    with pytest.raises(redis.exceptions.NoPermissionError):
        pubsub.subscribe("obsweb:other")
        pubsub.get_message(timeout=2)
    pubsub.close()


@pytest.mark.parametrize("command", [("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "dir"), ("ACL", "LIST")])
def test_the_app_is_refused_administration(app, command):
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.execute_command(*command)


def test_the_app_ingests_what_the_worker_published(acl_redis, app, worker, settings, db):
    settings.REDIS_URL = url_of(acl_redis, "obsweb")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL]},
        }
    }
    publisher = Publisher(worker)
    for _ in range(3):
        publisher.add(request(host=HOST))
    publisher.flush(force=True)

    call_command("ingest", "--once")

    assert sum(r.count for r in Rollup.objects.all()) == 3
    assert app.xpending(schema.RECORDS_STREAM, schema.INGEST_GROUP)["pending"] == 0
