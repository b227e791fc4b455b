"""No secret captured from traffic reaches Redis, the database, an incident report or a log
(SECURITY.md: What is redacted), without a kernel: exchanges as the kernel hands them over (real
captures where tests/captures has them, crafted ones otherwise) go through the real worker
redaction (RecordBuilder with the host's Policy), the real Publisher, the real ingester and the
real report builder, and then everything they stored or logged is searched for each secret.

The real-kernel version for HTTP headers and query values is
tests/test_e2e_pipeline.py::test_secrets_never_reach_redis_or_the_database.
"""

import io
import json
import logging
import struct
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from obsweb.incidents import constants as c
from obsweb.incidents.models import Incident, Report
from obsweb.incidents.report import pdf
from obsweb.incidents.tasks.build_report import build_report
from obsweb.telemetry.models import RequestSample, Service
from probes import schema
from probes.programs.socket_trace import PROTO_POSTGRES, PROTO_REDIS, ROLE_CLIENT
from probes.publisher import Publisher
from probes.redact import Policy
from tests.incidents import IN_MEMORY_LAYER
from tests.unit.test_records import REQ_NS, builder_on, http_event

CAPTURES = Path(__file__).resolve().parent / "captures"
BEARER = "bearer-secret-6d1f0a"
COOKIE = "cookie-secret-93bb2e"
QUERY_TOKEN = "query-secret-41c7d5"
URL_PASSWORD = "url-secret-0e8a4c"  # postgres://app:<this>@... in a request path and query
SQL_PASSWORD = "sql-secret-77f2b1"  # a literal in SQL text
DSN_PASSWORD = "dsn-secret-5a90c3"  # a connection string inside SQL text
PG_LOGIN_PASSWORD = "fake-pg-password-5b1e"  # tests/captures/postgres/cleartext_password
REDIS_PASSWORDS = ("fake-redis-password-7f3a9c", "fake-wrong-password-19c2e4")  # tests/captures/redis
SECRETS = (
    BEARER,
    COOKIE,
    QUERY_TOKEN,
    URL_PASSWORD,
    SQL_PASSWORD,
    DSN_PASSWORD,
    PG_LOGIN_PASSWORD,
    *REDIS_PASSWORDS,
)
REDIS_AUTH_CAPTURES = (
    "redis_cli_auth",
    "redis_py_auth",
    "redis_py_wrongpass",
    "resp3_hello_auth",
    "redis_py_migrate_auth",
    "redis_py_config_set_requirepass",
)

HTTP_REQUEST = (
    f"GET /connect/postgres://app:{URL_PASSWORD}@db/shop?token={QUERY_TOKEN}"
    f"&dsn=redis://:{URL_PASSWORD}@cache HTTP/1.1\r\n"
    "Host: shop\r\n"
    f"Authorization: Bearer {BEARER}\r\n"
    f"Cookie: session={COOKIE}\r\n"
    f"X-Api-Key: {BEARER}\r\n"
    "User-Agent: curl/8.0\r\n\r\n"
).encode()
HTTP_500 = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"


def pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def pg_query(sql: str) -> bytes:
    return pg_message(b"Q", sql.encode() + b"\0")


PG_ERROR = pg_message(b"E", b"SERROR\0C28P01\0Mpassword authentication failed\0\0") + pg_message(b"Z", b"I")
SQL_TEXTS = (
    f"ALTER ROLE app PASSWORD '{SQL_PASSWORD}'",
    f"SELECT * FROM users WHERE name = 'a' AND password = '{SQL_PASSWORD}'",
    f"SELECT dblink_connect('postgres://app:{DSN_PASSWORD}@db/shop')",
)


def capture(protocol: str, name: str) -> tuple[bytes, bytes]:
    request = (CAPTURES / protocol / f"{name}.request.bin").read_bytes()
    response_path = CAPTURES / protocol / f"{name}.response.bin"
    return request, response_path.read_bytes() if response_path.exists() else b""


def exchanges(keeps_sql_literals: bool):
    """Kernel events of every exchange. Under a policy that keeps SQL literals, the statements
    whose secret is a plain literal are left out: that policy keeps them, as SECURITY.md warns."""
    yield http_event(HTTP_REQUEST, HTTP_500)
    pg_login = capture("postgres", "cleartext_password")
    assert PG_LOGIN_PASSWORD.encode() in pg_login[0], "the capture no longer holds the password"
    texts = [sql for sql in SQL_TEXTS if not (keeps_sql_literals and SQL_PASSWORD in sql)]
    pairs = [pg_login] + [(pg_query(sql), PG_ERROR) for sql in texts]
    for request, response in pairs:
        event = http_event(
            request, response, role=ROLE_CLIENT, local=("127.0.0.1", 40000), remote=("127.0.0.1", 5432)
        )
        event.proto = PROTO_POSTGRES
        yield event
    for name in REDIS_AUTH_CAPTURES:
        request, response = capture("redis", name)
        assert any(p.encode() in request for p in REDIS_PASSWORDS), name
        event = http_event(
            request, response, role=ROLE_CLIENT, local=("127.0.0.1", 40001), remote=("127.0.0.1", 6379)
        )
        event.proto = PROTO_REDIS
        yield event


@pytest.fixture
def records(tmp_path):
    """The exchanges as the worker turns them into records: once under the default policy, once
    under one that keeps SQL literals and the `dsn` query value (connection-string passwords go
    whatever it says)."""
    out = []
    permissive = Policy(query_keys_kept=frozenset({"dsn"}), sql_literals="keep")
    for policy in (Policy(), permissive):
        builder = builder_on(tmp_path)
        builder.clock_offset_ns = time.time_ns() - REQ_NS - 30 * 10**9  # half a minute ago: in the report
        builder.set_redaction(policy)
        for event in exchanges(policy.keeps_sql_literals):
            record = builder.exchange(event)
            assert record is not None, f"the builder dropped an exchange: {builder.skipped}"
            out.append(record)
    return out


@pytest.fixture
def stored(stream, records, settings, monkeypatch, caplog, capsys):
    """The records published, ingested and reported on; returns (Redis text, database dump,
    report html + json, logs)."""
    caplog.set_level(logging.DEBUG)
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    settings.INCIDENT_WEBHOOK_URL = ""
    monkeypatch.setattr(pdf, "render", lambda html: b"%PDF-1.4 not printed in this test\n")

    publisher = Publisher(stream)
    for record in records:
        publisher.add(record)
    publisher.flush(force=True)
    assert publisher.published == len(records)
    redis_text = redis_contents(stream)

    call_command("ingest", "--once")
    assert RequestSample.objects.filter(error=True).count() >= 8, "errors are all sampled"

    reports = []
    now = timezone.now()
    for service in Service.objects.filter(external=False):
        incident = Incident.objects.create(
            subject_kind=c.SUBJECT_SERVICE,
            subject=service.name,
            service=service,
            opened_at=now,
            last_firing_at=now,
        )
        report = Report.objects.create(incident=incident)
        build_report(report.pk)
        report.refresh_from_db()
        assert report.status == c.DONE, report.error
        reports += [bytes(f.content) for f in report.files.filter(format__in=("html", "json"))]

    database = database_contents()
    logs = caplog.text + "".join(capsys.readouterr())
    return {"redis": redis_text, "database": database, "reports": b"\n".join(reports), "logs": logs}


def database_contents() -> str:
    """Every row of every table: SQLite's own dump (the test database lives in memory), or
    dumpdata on another database."""
    if connection.vendor == "sqlite":
        return "\n".join(connection.connection.iterdump())
    out = io.StringIO()
    call_command("dumpdata", stdout=out)
    return out.getvalue()


def redis_contents(client) -> bytes:
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"stream":
            found += [repr(entry).encode() for entry in client.xrange(key)]
            # msgpack keeps strings as they are, so the raw entries hold any secret verbatim; the
            # decoded records are searched too.
            found += [
                json.dumps(schema.unpack_batch(f[schema.RECORDS_FIELD]), default=str).encode()
                for _, f in client.xrange(key)
            ]
        elif kind == b"string":
            found.append(client.get(key))
        elif kind == b"hash":
            found.append(repr(client.hgetall(key)).encode())
    return b"\n".join(found)


def test_the_checks_see_the_captured_traffic(stored):
    """Without this, finding no secret would prove nothing."""
    assert b"/connect/postgres://REDACTED@db/shop" in stored["redis"]
    assert "/connect/postgres://REDACTED@db/shop" in stored["database"]
    assert "ALTER ROLE app PASSWORD ?" in stored["database"]
    assert "AUTH" in stored["database"]
    assert b"REDACTED@db" in stored["reports"] and b"<html" in stored["reports"].lower()
    assert "ingest --once" in stored["logs"]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("where", ["redis", "database", "reports", "logs"])
def test_no_secret_is_stored_reported_or_logged(stored, where, secret):
    found = stored[where]
    assert (secret.encode() if isinstance(found, bytes) else secret) not in found
