"""Records as a probe worker sends them (DESIGN.md: Records), and API clients per persona."""

import time

from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

T0 = 1_764_259_200 * 10**9  # 2025-11-27 16:00:00 UTC, the start of a minute
MINUTE_NS = 60 * 10**9

# Who may read the API, and how: every view is tested for each of these and for the outsider.
ALLOWED = [("staff", "session"), ("viewer", "session"), ("viewer", "token")]


def request(**attrs) -> dict:
    """A server-side HTTP request record; pass dotted keys as request(**{"http.route": "/x"})."""
    record = {
        "kind": "request",
        "host": "h1",
        "ts": T0 + 10**9,
        "service.name": "shop-api",
        "span.kind": "server",
        "server.address": "127.0.0.1",
        "server.port": 8001,
        "client.address": "127.0.0.1",
        "client.port": 51234,
        "network.protocol.name": "http",
        "http.request.method": "GET",
        "url.path": "/users/7?x=REDACTED",
        "http.route": "/users/{id}",
        "http.response.status_code": 200,
        "error": False,
        "duration_ns": 1_234_567,
        "request.bytes": 120,
        "response.bytes": 560,
        "user_agent.original": "curl/7.88.1",
        "tls": False,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "",
        "pid": 123,
        "tid": 123,
        "peer.service": None,
    }
    record.update(attrs)
    return record


def client_request(**attrs) -> dict:
    """The caller's side of a request: nginx calling shop-api, resolved as its peer."""
    record = request(
        **{
            "service.name": "nginx",
            "span.kind": "client",
            "client.port": 40000,
            "peer.service": "shop-api",
            "span_id": "1111111111111111",
        }
    )
    record.update(attrs)
    return record


def db_request(**attrs) -> dict:
    record = request(
        **{
            "service.name": "postgres",
            "server.port": 5432,
            "network.protocol.name": "postgresql",
            "db.system": "postgresql",
            "db.operation.name": "SELECT",
            "db.collection.name": "users",
            "db.query.text": "SELECT * FROM users WHERE id = ?",
        }
    )
    for key in (
        "http.request.method",
        "url.path",
        "http.route",
        "http.response.status_code",
        "user_agent.original",
    ):
        del record[key]
    record.update(attrs)
    return record


def postgres_request(**attrs) -> dict:
    """The PostgreSQL server's record of one query, literals already replaced on the host."""
    record = db_request(
        **{
            "service.name": "postgres:5432",
            "db.query.summary": "SELECT users",
            "duration_ns": 1_200_000,
            "request.bytes": 80,
            "response.bytes": 200,
            "request.count": 1,
        }
    )
    record.update(attrs)
    return record


def postgres_error(**attrs) -> dict:
    """A query that failed: undefined_table, as SQLSTATE in both error.type and the status code."""
    return postgres_request(
        **{
            "db.query.text": "SELECT * FROM missing WHERE id = ?",
            "db.collection.name": "missing",
            "db.query.summary": "SELECT missing",
            "error": True,
            "error.type": "42P01",
            "db.response.status_code": "42P01",
            **attrs,
        }
    )


def mysql_request(**attrs) -> dict:
    record = db_request(
        **{
            "service.name": "mysql:3306",
            "server.port": 3306,
            "network.protocol.name": "mysql",
            "db.system": "mysql",
            "db.operation.name": "UPDATE",
            "db.collection.name": "orders",
            "db.query.text": "UPDATE orders SET state = ? WHERE id = ?",
            "db.query.summary": "UPDATE orders",
        }
    )
    record.update(attrs)
    return record


def redis_request(**attrs) -> dict:
    """One Redis command; a pipeline is one record with request.count commands."""
    record = db_request(
        **{
            "service.name": "redis:6379",
            "server.port": 6379,
            "network.protocol.name": "redis",
            "db.system": "redis",
            "db.operation.name": "GET",
            "db.query.text": "GET ?",
        }
    )
    del record["db.collection.name"]
    record.update(attrs)
    return record


def mongodb_request(**attrs) -> dict:
    record = db_request(
        **{
            "service.name": "mongo:27017",
            "server.port": 27017,
            "network.protocol.name": "mongodb",
            "db.system": "mongodb",
            "db.operation.name": "find",
            "db.collection.name": "carts",
            "db.query.text": '{"find": "carts", "filter": {"user": "?"}}',
            "db.query.summary": "find carts",
        }
    )
    record.update(attrs)
    return record


def kafka_request(**attrs) -> dict:
    """A Kafka Produce to the topic "orders": a messaging record, no db.* query."""
    record = db_request(
        **{
            "service.name": "kafka:9092",
            "server.port": 9092,
            "network.protocol.name": "kafka",
            "messaging.system": "kafka",
            "db.operation.name": "Produce",
            "messaging.destination.name": "orders",
        }
    )
    for key in ("db.system", "db.collection.name", "db.query.text"):
        del record[key]
    record.update(attrs)
    return record


def caller_side(server_record: dict, **attrs) -> dict:
    """The same call as the caller (shop-api) saw it: a client record whose peer is the server."""
    record = {
        **server_record,
        "service.name": "shop-api",
        "span.kind": "client",
        "client.port": 40001,
        "peer.service": server_record["service.name"],
        "span_id": "2222222222222222",
    }
    record.update(attrs)
    return record


def flow(**attrs) -> dict:
    record = {
        "kind": "flow",
        "host": "h1",
        "ts": T0 + 10**9,
        "service.name": "nginx",
        "span.kind": "client",
        "server.address": "127.0.0.1",
        "server.port": 8001,
        "client.address": "127.0.0.1",
        "client.port": 40000,
        "peer.service": "shop-api",
        "flow.event": "close",
        "flow.bytes_sent": 100,
        "flow.bytes_received": 2000,
        "flow.duration_ns": 5_000_000,
        "flow.requests": 3,
        "pid": 1,
    }
    record.update(attrs)
    return record


def health(**attrs) -> dict:
    """The tcp probe's health record of one troubled connection: nginx's side of a call to shop-api."""
    record = flow(**{"flow.event": "health", "flow.retransmits": 2, "flow.resets_sent": 0,
                     "flow.resets_received": 1, "flow.failure": None, "flow.rtt_us": 1500})  # fmt: skip
    for key in ("flow.bytes_sent", "flow.bytes_received", "flow.duration_ns", "flow.requests"):
        del record[key]
    record.update(attrs)
    return record


def resource(**attrs) -> dict:
    """shop-api's use of host h1 over a 10 s interval, as the cpu and disk probes report it."""
    record = {
        "kind": "resource",
        "host": "h1",
        "ts": T0 + 10 * 10**9,
        "resource.scope": "service",
        "service.name": "shop-api",
        "resource.interval_ns": 10 * 10**9,
        "process.count": 2,
        "process.cpu.time_ns": 3 * 10**9,  # 30 % of one core over 10 s
        "sched.runq.wait_ns": 40_000_000,
        "sched.runq.waits": 20,
        "sched.runq.wait_max_ns": 9_000_000,
        "process.memory.rss_bytes": 100 * 2**20,
        "network.bytes_sent": 1000,
        "network.bytes_received": 4000,
        "disk.read_bytes": 8192,
        "disk.write_bytes": 4096,
        "disk.read_ops": 2,
        "disk.write_ops": 1,
        "disk.wait_ns": 3_000_000,
    }
    record.update(attrs)
    return record


def host_resource(**attrs) -> dict:
    """Host h1 as a whole over the same interval."""
    record = resource(
        **{
            "resource.scope": "host",
            "process.cpu.time_ns": 12 * 10**9,
            "system.memory.total_bytes": 8 * 2**30,
            "system.memory.available_bytes": 5 * 2**30,
            "system.cpu.count": 2,
        }
    )
    del record["service.name"], record["process.memory.rss_bytes"], record["process.count"]
    record.update(attrs)
    return record


def agent(**attrs) -> dict:
    record = {
        "kind": "agent",
        "host": "h1",
        "ts": T0,
        "agent.version": "0.1.0",
        "agent.kernel": "6.18.0",
        "agent.probes": {"http": {"desired": True, "actual": True, "error": None}},
        "agent.events_seen": 100,
        "agent.events_dropped": 0,
        "agent.events_skipped": 2,
        "agent.records_dropped": 0,
        "agent.lag_s": 0.05,
    }
    record.update(attrs)
    return record


def now_ns(seconds_ago: float = 0) -> int:
    return time.time_ns() - int(seconds_ago * 10**9)


def api_client(personas: dict, persona: str, how: str = "session") -> APIClient:
    """An API client acting as `persona`, by session or by token; the outsider sends no credentials."""
    client = APIClient()
    user = personas[persona]
    if user is None:
        return client
    if how == "session":
        client.force_login(user)
    else:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client
