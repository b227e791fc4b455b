"""Real PostgreSQL and MariaDB servers on loopback for tests, plus a recording TCP relay.

    with postgres_server() as (port, user, password): ...
    with mysql_server() as (port, user, password): ...

Each server runs from a fresh temporary directory on a free 127.0.0.1 port and is stopped and
removed on exit. The yielded user owns (PostgreSQL) or has every right on (MariaDB) the database
DATABASE and logs in with its password over TCP: SCRAM-SHA-256 on PostgreSQL, where POSTGRES_ADMIN
is trusted on loopback for setup; mysql_native_password on MariaDB. Waits are bounded; a missing
server binary is a RuntimeError that says what to install.

RecordingRelay sits between a real client and a real server and keeps what each side sent, as
exchanges: the bytes one side sent before the other answered. tests/captures/record_*.py use it.
"""

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

from tests.helpers import free_port

DATABASE = "obsweb"
USER = "obsweb"
PASSWORD = "obsweb-test-password"  # fake, on purpose: tests look for it in what parsers return
POSTGRES_ADMIN = "postgres"  # the superuser, trusted on loopback without a password
POSTGRES_OS_USER = "postgres"  # the server refuses to run as root
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
# A server for tests: nothing in it needs to survive a crash.
POSTGRES_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "20",
    "shared_buffers": "16MB",
}
INSTALL_HINT = {
    "postgres": "PostgreSQL server binaries (initdb, postgres) are not installed: "
    "apt-get install -y postgresql",
    "mysql": "MariaDB server binaries (mariadb-install-db, mariadbd) are not installed: "
    "apt-get install -y mariadb-server",
}


class DatabaseServer(NamedTuple):
    port: int
    user: str
    password: str


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_binary(name: str) -> str:
    """The path of a PostgreSQL server program; Debian keeps them off PATH, per major version."""
    found = shutil.which(name)
    if found is None:
        versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major_version)
        found = versions[-1] if versions else None
    if found is None:
        raise RuntimeError(INSTALL_HINT["postgres"])
    return found


def _major_version(path: str) -> int:
    version = Path(path).parent.parent.name  # /usr/lib/postgresql/15/bin/initdb
    return int(version) if version.isdigit() else 0


@contextlib.contextmanager
def postgres_server(init_sql: tuple[str, ...] = (), extra_hba: tuple[str, ...] = ()):
    """A throwaway PostgreSQL; yields DatabaseServer(port, user, password).

    `init_sql` statements (one per line, no newlines inside) run as the superuser before the
    server starts; `extra_hba` lines go first in pg_hba.conf, so they win over the defaults.
    """
    initdb, postgres = postgres_binary("initdb"), postgres_binary("postgres")
    port = free_port()
    as_owner = _run_as(POSTGRES_OS_USER)
    with tempfile.TemporaryDirectory(prefix="obsweb-postgres-") as tmp_name:
        tmp, data = Path(tmp_name), Path(tmp_name) / "data"
        _give_to(tmp, POSTGRES_OS_USER)
        _run(
            [initdb, "-D", str(data), "-U", POSTGRES_ADMIN, "-A", "trust", "-E", "UTF8", "--no-locale", "-N"],
            as_owner,
            "initdb",
        )
        hba = [
            *extra_hba,
            f"local all {POSTGRES_ADMIN} trust",
            f"host all {POSTGRES_ADMIN} 127.0.0.1/32 trust",
            "host all all 127.0.0.1/32 md5",  # SCRAM for SCRAM secrets, MD5 for MD5 ones
        ]
        (data / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        setup = [
            f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'",
            f"CREATE DATABASE {DATABASE} OWNER {USER}",
            *init_sql,
        ]
        _run(
            [postgres, "--single", "-D", str(data), "-j", POSTGRES_ADMIN],
            as_owner,
            "postgres --single",
            stdin=";\n\n".join(setup) + ";\n",
        )
        server = [postgres, "-D", str(data), "-p", str(port), "-k", str(tmp)]
        server += [f"--{name}={value}" for name, value in POSTGRES_SETTINGS.items()]
        with open(tmp / "postgres.log", "wb") as log:
            proc = subprocess.Popen(server, stdout=log, stderr=subprocess.STDOUT, **as_owner)
        try:
            pg_isready = [postgres_binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
            _wait_ready(proc, tmp / "postgres.log", "postgres", lambda: _succeeds(pg_isready))
            yield DatabaseServer(port, USER, PASSWORD)
        finally:
            _stop(proc, signal.SIGINT)  # fast shutdown: SIGTERM would wait for clients to leave


# --- MariaDB ----------------------------------------------------------------------------------


def mysql_binary(name: str) -> str:
    """The path of a MariaDB program; mariadbd lives in /usr/sbin, which not every PATH has."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(INSTALL_HINT["mysql"])
    return found


@contextlib.contextmanager
def mysql_server(init_sql: tuple[str, ...] = ()):
    """A throwaway MariaDB; yields DatabaseServer(port, user, password).

    `init_sql` statements run as root at startup (--init-file), before the port opens.
    """
    install_db, mariadbd = mysql_binary("mariadb-install-db"), mysql_binary("mariadbd")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="obsweb-mariadb-") as tmp_name:
        tmp, data = Path(tmp_name), Path(tmp_name) / "data"
        user = ["--user=root"] if os.geteuid() == 0 else []
        _run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                *user,
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ],
            {},
            "mariadb-install-db",
        )
        setup = [
            f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
            f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'",
            f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'127.0.0.1'",
            *init_sql,
        ]
        (tmp / "init.sql").write_text(";\n".join(setup) + ";\n")
        log = tmp / "mariadbd.log"
        server = [mariadbd, "--no-defaults", f"--datadir={data}", *user, f"--port={port}"]
        server += [f"--{name}={value}" for name, value in mariadb_settings(tmp, log).items()]
        proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, log, "mariadbd", lambda: _port_open(port))
            yield DatabaseServer(port, USER, PASSWORD)
        finally:
            _stop(proc, signal.SIGTERM)


def mariadb_settings(tmp: Path, log: Path) -> dict:
    return {
        "bind-address": "127.0.0.1",
        "socket": tmp / "mysqld.sock",
        "pid-file": tmp / "mysqld.pid",
        "log-error": log,
        "tmpdir": tmp,
        "init-file": tmp / "init.sql",
        "skip-name-resolve": "ON",
        "innodb-buffer-pool-size": "16M",
    }


# --- a recording relay ------------------------------------------------------------------------


class Exchange(NamedTuple):
    request: bytes  # what the client sent before the server answered (b"" when the server spoke first)
    response: bytes  # what the server sent before the client spoke again


class RecordingRelay:
    """A TCP relay from a free loopback port to `target_port` that records both directions.

    Chunks are recorded before they are forwarded, so when a client call returns, everything it
    sent and received is recorded. take() turns what was recorded since the last take() into
    exchanges, per connection, in the order the connections spoke.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.chunks: list[tuple[int, str, bytes]] = []  # (connection, "c" or "s", bytes)
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            with self.lock:
                self.connections += 1
                number = self.connections
            for source, sink, side in ((client, server, "c"), (server, client, "s")):
                threading.Thread(target=self._relay, args=(number, source, sink, side), daemon=True).start()

    def _relay(self, number: int, source: socket.socket, sink: socket.socket, side: str):
        source.settimeout(None)
        try:
            while data := source.recv(65536):
                with self.lock:
                    self.chunks.append((number, side, data))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def take(self, settle_s: float = 0.1) -> list[Exchange]:
        """The exchanges recorded since the last take(). Waits `settle_s` first, for bytes a
        client sent without waiting for an answer (a Terminate, a COM_QUIT)."""
        time.sleep(settle_s)
        with self.lock:
            chunks, self.chunks = self.chunks, []
        turns: list[list[bytes]] = []  # [request, response], in the order they started
        current: dict[int, list[bytes]] = {}  # connection -> its turn being filled
        for number, side, data in chunks:
            turn = current.get(number)
            if turn is None or (side == "c" and turn[1]):  # the client speaks after an answer
                turn = current[number] = [b"", b""]
                turns.append(turn)
            turn[0 if side == "c" else 1] += data
        return [Exchange(request, response) for request, response in turns]

    def close(self):
        self.listener.close()


@contextlib.contextmanager
def recording_relay(target_port: int):
    relay = RecordingRelay(target_port)
    try:
        yield relay
    finally:
        relay.close()


# --- helpers ----------------------------------------------------------------------------------


def _run_as(os_user: str) -> dict:
    """Popen arguments that run a program as `os_user` when we are root (postgres refuses root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": os_user, "group": os_user, "extra_groups": []}


def _give_to(path: Path, os_user: str):
    if os.geteuid() == 0:
        shutil.chown(path, os_user, os_user)


def _run(cmd: list[str], popen_args: dict, what: str, stdin: str | None = None):
    result = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=START_TIMEOUT_S, **popen_args
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _succeeds(cmd: list[str]) -> bool:
    return subprocess.run(cmd, timeout=5).returncode == 0


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_ready(proc: subprocess.Popen, log: Path, what: str, ready) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if ready():
            return
        time.sleep(0.1)
    _stop(proc, signal.SIGKILL)
    raise RuntimeError(f"{what} was not ready after {START_TIMEOUT_S} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen, sig: int):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
