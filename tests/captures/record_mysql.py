"""Regenerate the real MySQL-protocol captures in tests/captures/mysql/.

Run by hand from the repository root, never by the tests (they only read the .bin files):

    .venv/bin/python -m tests.captures.record_mysql [--out DIR]

Starts a throwaway MariaDB (tests/servers/databases.py) and puts a recording relay between real
clients and it: PyMySQL (text protocol: COM_QUERY with client-side quoting, COM_PING,
COM_INIT_DB, COM_QUIT) and MySQL Connector/Python in pure-Python mode (server-side prepared
statements: COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE; and an authentication switch,
since it starts with caching_sha2_password and MariaDB asks for mysql_native_password).

Each exchange is kept the way the kernel sees one: what the client sent until the server answered
is the request, what the server sent until the client spoke again is the response; the server's
greeting, sent before the client says anything, is an exchange with an empty request.
NAME.request.bin and NAME.response.bin hold one exchange, uncut (the tests cut them to the
kernel's 1024 / 256 bytes themselves); an empty direction has no file. The password and values
are fake, on purpose: the tests check that they never survive parsing.
"""

import argparse
from pathlib import Path

import mysql.connector
import pymysql

from tests.servers.databases import DATABASE, mysql_server, recording_relay

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "mysql"

EMAIL = "alice@example.com"
WRONG_PASSWORD = "fake-wrong-password-4d2a"
SCHEMA = (
    "CREATE TABLE obsweb.users (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100) UNIQUE NOT NULL,"
    " name VARCHAR(100) NOT NULL)",
    "INSERT INTO obsweb.users (email, name) VALUES ('alice@example.com', 'Alice')",
)


class Recorder:
    def __init__(self, relay, out: Path):
        self.relay, self.out = relay, out

    def save(self, *names: str | None):
        """Save the exchanges recorded since the last call under `names`, in order; None skips one."""
        exchanges = self.relay.take()
        if len(exchanges) != len(names):
            shapes = [(len(e.request), len(e.response), e.request[:5], e.response[:5]) for e in exchanges]
            raise SystemExit(f"expected {len(names)} exchanges for {names}, recorded {shapes}")
        for name, exchange in zip(names, exchanges, strict=True):
            if name is not None:
                self.write(name, exchange)

    def write(self, name: str, exchange):
        for direction, data in (("request", exchange.request), ("response", exchange.response)):
            if data:
                (self.out / f"{name}.{direction}.bin").write_bytes(data)
        print(f"{name}: {len(exchange.request)} + {len(exchange.response)} bytes")


def record_pymysql(rec: Recorder, user: str, password: str):
    def connect(password=password, **kwargs):
        return pymysql.connect(
            host="127.0.0.1",
            port=rec.relay.port,
            user=user,
            password=password,
            database=DATABASE,
            connect_timeout=10,
            **kwargs,
        )

    conn = connect(autocommit=True)
    rec.save("greeting", "handshake_response", "set_names")
    cursor = conn.cursor()

    cursor.execute("SELECT id, name FROM users WHERE email = %s", (EMAIL,))
    rec.save("select")
    cursor.execute("INSERT INTO users (email, name) VALUES (%s, %s)", ("obrien@example.com", "O'Brien"))
    rec.save("insert_escaped_quote")
    cursor.executemany(
        "INSERT INTO users (email, name) VALUES (%s, %s)",
        [(f"user{i}@example.com", f"User {i}") for i in range(5)],
    )
    rec.save("insert_many")
    try:
        cursor.execute("INSERT INTO users (email, name) VALUES (%s, %s)", (EMAIL, "Alice again"))
    except pymysql.err.IntegrityError:
        pass
    rec.save("duplicate_entry")
    try:
        cursor.execute("SELECT * FROM missing_table")
    except pymysql.err.ProgrammingError:
        pass
    rec.save("missing_table")
    cursor.execute("SELECT SLEEP(0.1)")
    rec.save("sleep")
    conn.begin()
    cursor.execute("UPDATE users SET name = %s WHERE email = %s", ("Alice B.", EMAIL))
    conn.commit()
    rec.save("begin", "update", "commit")
    conn.ping(reconnect=False)
    rec.save("ping")
    conn.select_db(DATABASE)
    rec.save("init_db")
    conn.close()
    rec.save("quit")

    try:
        connect(password=WRONG_PASSWORD)
    except pymysql.err.OperationalError:
        pass
    else:
        raise SystemExit("a wrong password was accepted")
    rec.save(None, "wrong_password")


def record_connector(rec: Recorder, user: str, password: str):
    """MySQL Connector/Python: server-side prepared statements, and an authentication switch
    (asked for caching_sha2_password, MariaDB switches it to mysql_native_password)."""
    conn = mysql.connector.connect(
        host="127.0.0.1",
        port=rec.relay.port,
        user=user,
        password=password,
        database=DATABASE,
        use_pure=True,
        autocommit=True,
        connection_timeout=10,
        auth_plugin="caching_sha2_password",
    )
    # After the login it sets the session up with two COM_QUERYs.
    rec.save(None, "connector_handshake_response", "auth_switch_response", None, None)
    cursor = conn.cursor(prepared=True)
    cursor.execute("SELECT id, name FROM users WHERE email = ?", (EMAIL,))
    cursor.fetchall()
    rec.save("connector_ping", "stmt_prepare", "stmt_reset", "stmt_execute")
    cursor.close()
    conn.close()
    rec.save("stmt_close_and_quit")  # neither is answered: one exchange, no response


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with mysql_server(init_sql=SCHEMA) as server, recording_relay(server.port) as relay:
        rec = Recorder(relay, args.out)
        record_pymysql(rec, server.user, server.password)
        record_connector(rec, server.user, server.password)


if __name__ == "__main__":
    main()
