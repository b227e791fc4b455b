"""Regenerate the real PostgreSQL captures in tests/captures/postgres/.

Run by hand from the repository root, never by the tests (they only read the .bin files):

    .venv/bin/python -m tests.captures.record_postgres [--out DIR]

Starts a throwaway PostgreSQL (tests/servers/databases.py) with four kinds of login: the
superuser trusted on loopback, a SCRAM-SHA-256 user, an MD5 user and a user whose password
travels in clear (pg_hba "password"). A recording relay between psycopg 3 (libpq) and the server
keeps each exchange the way the kernel sees one: what the client sent until the server answered
is the request, what the server sent until the client spoke again is the response.
NAME.request.bin and NAME.response.bin hold one exchange, uncut (the tests cut them to the
kernel's 1024 / 256 bytes themselves); an exchange the server does not answer has no response
file.

Recorded: the startup of each login (SSLRequest, StartupMessage, SASL, MD5, cleartext, a wrong
password), simple and extended queries, a prepared statement and its later execution by name, a
pipeline, a transaction, failing queries (a missing table, a unique violation whose DETAIL quotes
the value), pg_sleep, a query cancelled by a CancelRequest, a query longer than the capture, and
Terminate. The passwords and values are fake, on purpose: the tests check that they never
survive parsing.
"""

import argparse
import threading
from pathlib import Path

import psycopg

from tests.servers.databases import DATABASE, POSTGRES_ADMIN, postgres_server, recording_relay

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "postgres"

EMAIL = "alice@example.com"
SCRAM_USER, MD5_USER, CLEARTEXT_USER = "scram_user", "md5_user", "cleartext_user"
FAKE_PASSWORD = "fake-pg-password-5b1e"  # every login user's password
WRONG_PASSWORD = "fake-wrong-password-0c77"
INIT_SQL = (
    f"CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{FAKE_PASSWORD}'",
    "SET password_encryption = 'md5'",
    f"CREATE ROLE {MD5_USER} LOGIN PASSWORD '{FAKE_PASSWORD}'",
    "SET password_encryption = 'scram-sha-256'",
    f"CREATE ROLE {CLEARTEXT_USER} LOGIN PASSWORD '{FAKE_PASSWORD}'",
)
EXTRA_HBA = (f"host all {CLEARTEXT_USER} 127.0.0.1/32 password",)
CANCEL_REQUEST_CODE = (80877102).to_bytes(4, "big")
SCHEMA = (
    "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text NOT NULL)",
    "CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users, total numeric)",
)


class Recorder:
    def __init__(self, relay, out: Path):
        self.relay, self.out = relay, out

    def connect(
        self, user: str = POSTGRES_ADMIN, password: str | None = None, **kwargs
    ) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.relay.port,
            dbname=DATABASE,
            user=user,
            password=password,
            sslmode="prefer",  # libpq's default: an SSLRequest first, which this server declines
            gssencmode="disable",  # no Kerberos here; libpq would skip it anyway without a ticket
            application_name="obsweb-capture",
            connect_timeout=10,
            **kwargs,
        )

    def save(self, *names: str | None):
        """Save the exchanges recorded since the last call under `names`, in order; None skips one."""
        exchanges = self.relay.take()
        if len(exchanges) != len(names):
            shapes = [(len(e.request), len(e.response), e.request[:1]) for e in exchanges]
            raise SystemExit(f"expected {len(names)} exchanges for {names}, recorded {shapes}")
        for name, exchange in zip(names, exchanges, strict=True):
            if name is not None:
                self.write(name, exchange)

    def write(self, name: str, exchange):
        (self.out / f"{name}.request.bin").write_bytes(exchange.request)
        if exchange.response:
            (self.out / f"{name}.response.bin").write_bytes(exchange.response)
        print(f"{name}: {len(exchange.request)} + {len(exchange.response)} bytes")


def record_logins(rec: Recorder):
    conn = rec.connect()
    rec.save("ssl_request", "startup_trust")
    conn.close()
    rec.save("terminate")

    conn = rec.connect(SCRAM_USER, FAKE_PASSWORD)
    rec.save(None, "startup_scram", "sasl_initial_response", "sasl_response")
    conn.close()
    rec.save(None)

    conn = rec.connect(MD5_USER, FAKE_PASSWORD)
    rec.save(None, "startup_md5", "md5_password")
    conn.close()
    rec.save(None)

    conn = rec.connect(CLEARTEXT_USER, FAKE_PASSWORD)
    rec.save(None, "startup_cleartext", "cleartext_password")
    conn.close()
    rec.save(None)

    try:
        rec.connect(SCRAM_USER, WRONG_PASSWORD)
    except psycopg.OperationalError:
        pass
    else:
        raise SystemExit("a wrong password was accepted")
    # The SCRAM proof fails in the last exchange. libpq then retries without SSL when
    # sslmode=prefer, and fails again: keep the first attempt's last exchange.
    exchanges = rec.relay.take()
    print("wrong password exchanges:", [(len(e.request), len(e.response)) for e in exchanges])
    rec.write("wrong_password", exchanges[3])


def record_queries(rec: Recorder):
    conn = rec.connect(autocommit=True)
    rec.save(None, None)

    conn.execute("SELECT id, name FROM users WHERE email = %s", [EMAIL])
    rec.save("extended_select")

    psycopg.ClientCursor(conn).execute("SELECT id, name FROM users WHERE email = %s", [EMAIL])
    rec.save("simple_select")

    conn.execute("INSERT INTO users (email, name) VALUES (%s, %s) RETURNING id", ["bob@example.com", "Bob"])
    rec.save("extended_insert")

    try:
        conn.execute("INSERT INTO users (email, name) VALUES (%s, %s)", [EMAIL, "Alice again"])
    except psycopg.errors.UniqueViolation:
        pass
    rec.save("unique_violation")

    try:
        conn.execute("SELECT * FROM missing_table")
    except psycopg.errors.UndefinedTable:
        pass
    rec.save("missing_table")

    conn.execute("SELECT pg_sleep(0.1)")
    rec.save("pg_sleep")

    query = "SELECT id, email FROM users WHERE name = %s"
    conn.execute(query, ["Alice"], prepare=True)  # Parse + Sync alone, then Bind by name
    rec.save("prepare", "execute_prepared")

    with conn.pipeline():
        conn.execute("UPDATE users SET name = %s WHERE email = %s", ["Alice B.", EMAIL])
        conn.execute("SELECT count(*) FROM users WHERE name LIKE %s", ["A%"])
        conn.execute("DELETE FROM orders WHERE total < %s", [10])
    rec.save("pipeline")

    with conn.transaction():
        conn.execute("INSERT INTO orders (user_id, total) VALUES (%s, %s)", [1, 42.5])
    rec.save("begin", "transaction_insert", "commit")

    ids = ", ".join(str(i) for i in range(1000, 1300))
    long_query = f"SELECT id, email, name FROM users WHERE id IN ({ids}) AND email = %s"
    psycopg.ClientCursor(conn).execute(long_query, [EMAIL])
    rec.save("long_simple_query")

    record_cancel(rec, conn)
    conn.close()
    rec.save(None)


def record_cancel(rec: Recorder, conn: psycopg.Connection):
    """A pg_sleep cancelled from another connection: libpq opens one to the same address (with
    its own SSLRequest) and sends a CancelRequest, which the server never answers; the sleeping
    query ends in ErrorResponse 57014. cancel_safe(), not cancel(): the latter blocks in libpq
    holding the GIL, so the relay's threads could not forward the request."""
    timer = threading.Timer(0.5, conn.cancel_safe)
    timer.start()
    try:
        conn.execute("SELECT pg_sleep(5)")
    except psycopg.errors.QueryCanceled:
        pass
    timer.join()
    exchanges = rec.relay.take(settle_s=0.3)
    cancel = [e for e in exchanges if e.request[4:8] == CANCEL_REQUEST_CODE]
    cancelled = [e for e in exchanges if e.request.startswith(b"Q")]
    if len(cancel) != 1 or len(cancelled) != 1:
        raise SystemExit(f"expected a CancelRequest and the cancelled query, recorded {exchanges}")
    rec.write("cancel_request", cancel[0])
    rec.write("cancelled_query", cancelled[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with postgres_server(init_sql=INIT_SQL, extra_hba=EXTRA_HBA) as server:
        with psycopg.connect(
            host="127.0.0.1", port=server.port, dbname=DATABASE, user=POSTGRES_ADMIN
        ) as admin:
            for statement in SCHEMA:
                admin.execute(statement)
            admin.execute("INSERT INTO users (email, name) VALUES (%s, %s)", [EMAIL, "Alice"])
        with recording_relay(server.port) as relay:
            rec = Recorder(relay, args.out)
            record_logins(rec)
            record_queries(rec)


if __name__ == "__main__":
    main()
