"""PostgreSQL and MariaDB through the real kernel, driven by their real clients (psycopg,
PyMySQL): queries grouped by their normalized text with exact counts, SQL errors flagged with
their SQLSTATE, a server-side sleep measured within 20 %, and no literal or password stored."""

import pytest

from tests.servers.databases import DATABASE, mysql_server, postgres_server
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
SECRET_EMAIL = "alice-7c1e@example.com"
SLEEP_S = 0.2


@pytest.fixture(scope="module")
def stack(shared_stack):
    return shared_stack


def queries(stack, service_prefix: str) -> dict:
    """{normalized query: endpoint} of the one server service whose name starts with the prefix."""
    names = [
        s["name"] for s in stack.api("/api/v1/services")["services"] if s["name"].startswith(service_prefix)
    ]
    return {e["query"]: e for name in names for e in stack.endpoints(name)}


def drive(cursor, placeholder: str, sleep_sql: str, errors: type) -> None:
    cursor.execute("CREATE TABLE users (id INT PRIMARY KEY, email TEXT)")
    for i in range(3):
        cursor.execute(f"INSERT INTO users VALUES ({i}, '{SECRET_EMAIL}')")  # literals, inline
    for i in range(5):
        cursor.execute(f"SELECT email FROM users WHERE id = {placeholder}", (i % 3,))
    with pytest.raises(errors):
        cursor.execute("SELECT * FROM missing_table")
    cursor.execute(sleep_sql)


def check(stack, prefix: str, select: str, missing_state: str, sleep: str) -> None:
    def seen():
        found = queries(stack, prefix)
        return found if sleep in found and select in found else None

    found = wait_until(seen, f"{prefix} queries", stack)
    assert found["INSERT INTO users VALUES (?, ?)"]["requests"] == 3
    assert found[select]["requests"] == 5
    assert found[select]["operation"] == "SELECT"
    assert found["SELECT * FROM missing_table"]["errors"] == 1
    assert abs(found[sleep]["p50_ms"] - SLEEP_S * 1000) <= 0.2 * SLEEP_S * 1000
    failing = stack.api(
        "/api/v1/requests", service=found[select]["service"] if "service" in found[select] else "", limit=1000
    )
    del failing
    everything = repr(stack.api("/api/v1/requests", limit=1000)) + repr(found)
    assert SECRET_EMAIL not in everything
    database = b"".join(p.read_bytes() for p in stack.tmp.glob("db.sqlite3*"))
    assert SECRET_EMAIL.encode() not in database and b"obsweb-test-password" not in database
    errors = [
        r
        for r in stack.api("/api/v1/requests", limit=1000)["requests"]
        if r.get("error.type") == missing_state
    ]
    assert errors, f"no sample with SQLSTATE {missing_state}"


def test_postgresql_queries_errors_and_latency(stack):
    import psycopg

    with postgres_server() as db:
        dsn = f"host=127.0.0.1 port={db.port} dbname={DATABASE} user={db.user} password={db.password}"
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
            drive(cursor, "%s", f"SELECT pg_sleep({SLEEP_S})", psycopg.errors.UndefinedTable)
        check(stack, "postgres", "SELECT email FROM users WHERE id = $1", "42P01", "SELECT pg_sleep(?)")


def test_mysql_queries_errors_and_latency(stack):
    import pymysql

    with mysql_server() as db:
        conn = pymysql.connect(
            host="127.0.0.1", port=db.port, user=db.user, password=db.password, database=DATABASE
        )
        with conn.cursor() as cursor:
            drive(cursor, "%s", f"SELECT SLEEP({SLEEP_S})", pymysql.err.ProgrammingError)
        conn.close()
        check(stack, "mariadbd", "SELECT email FROM users WHERE id = ?", "42S02", "SELECT SLEEP(?)")
