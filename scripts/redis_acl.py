#!/usr/bin/env python3
"""Redis users for `make run` (SECURITY.md: Redis): `redis_acl.py DIR` writes, in DIR (mode 0700):

- passwords.json: one generated password per user, made once and kept (mode 0600);
- users.acl: the ACL file redis-server loads (--aclfile), passwords stored as SHA-256 (0600);
- <user>.url: the REDIS_URL each process runs with, password included (0600);
- port: the port obsweb's Redis listens on.

Users: `default` is switched off, so a connection that does not log in can do nothing;
APP_USER is the web app, ingester and Celery (every key and channel, no administration);
PROBES_USER is the root probe worker on every host, allowed exactly what probes/agent.py and
probes/publisher.py send and nothing that reads telemetry back or changes the control plane.

The port is OBSWEB_REDIS_PORT (default 6379), unless another Redis that does not know our users
already listens there (Debian starts one when redis-server is installed): then a free port.
Standard library only: it runs before anything else is installed or started.
"""

import hashlib
import json
import os
import secrets
import socket
import sys
from pathlib import Path

APP_USER = "obsweb"
PROBES_USER = "obsweb-probes"
DEFAULT_PORT = 6379
HOST = "127.0.0.1"
DB = 0

# Commands and keys per user, in redis-server's ACL syntax (Redis >= 7.0, for %R~/%W~).
# The probe worker: XADD (with MAXLEN ~) into the records stream, write-only, so it cannot read
# other hosts' telemetry back; HGETALL/HGET of the control hashes, read-only; SET ... EX (and
# EXPIRE) of its heartbeat key, write-only; SUBSCRIBE to the control channel; the connection
# handshake. redis-py also sends CLIENT SETINFO (Redis >= 7.2) and ignores the refusal.
PROBES_RULES = (
    "resetkeys resetchannels -@all "
    "+xadd +hgetall +hget +set +expire +subscribe +unsubscribe +ping +hello +auth +select "
    "+client|setname +reset "
    "%W~obs:records %R~obs:control:* %W~obs:agent:* &obs:control"
)
# The web app, ingester and Celery workers: everything on every key and channel (stream groups,
# control hashes, channel layer, Celery broker queues and pidbox) except the commands that
# administer, flush or enumerate the server (FLUSHALL, KEYS, CONFIG, DEBUG, SHUTDOWN, ...).
APP_RULES = "resetkeys resetchannels ~* &* +@all -@dangerous"
# Nothing without logging in.
DEFAULT_RULES = "off resetkeys resetchannels -@all"


def acl_text(passwords: dict[str, str]) -> str:
    """The users.acl contents for these passwords (stored hashed, as Redis allows)."""

    def line(user: str, rules: str) -> str:
        digest = hashlib.sha256(passwords[user].encode()).hexdigest()
        return f"user {user} on #{digest} {rules}"

    return "\n".join(
        [
            f"user default {DEFAULT_RULES}",
            line(APP_USER, APP_RULES),
            line(PROBES_USER, PROBES_RULES),
            "",
        ]
    )


def url(user: str, password: str, port: int) -> str:
    return f"redis://{user}:{password}@{HOST}:{port}/{DB}"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_CREAT


def passwords_in(directory: Path) -> dict[str, str]:
    """The kept passwords, with any missing one generated (64 hex digits: URL-safe)."""
    path = directory / "passwords.json"
    passwords = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for user in (APP_USER, PROBES_USER):
        if not isinstance(passwords.get(user), str) or len(passwords[user]) < 32:
            passwords[user] = secrets.token_hex(32)
            changed = True
    if changed or not path.exists():
        write_private(path, json.dumps(passwords, indent=1) + "\n")
    return passwords


def answers_as(port: int, user: str, password: str) -> bool | None:
    """None when nothing listens on the port; else whether AUTH as `user` succeeds there."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as conn:
            args = [b"AUTH", user.encode(), password.encode()]
            conn.sendall(b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
            return conn.recv(64).startswith(b"+OK")
    except ConnectionRefusedError:
        return None
    except OSError:
        return False


def choose_port(preferred: int, passwords: dict[str, str]) -> int:
    if answers_as(preferred, APP_USER, passwords[APP_USER]) is not False:
        return preferred  # free, or obsweb's Redis from an earlier run still listening
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    print(
        f"redis_acl: {HOST}:{preferred} is another Redis (not obsweb's users); obsweb's runs on :{port}",
        file=sys.stderr,
    )
    return port


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR   (make run uses .local/redis)", file=sys.stderr)
        return 2
    directory = Path(argv[1]).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    passwords = passwords_in(directory)
    try:
        preferred = int(os.environ.get("OBSWEB_REDIS_PORT", DEFAULT_PORT))
    except ValueError:
        print("OBSWEB_REDIS_PORT must be a port number", file=sys.stderr)
        return 2
    port = choose_port(preferred, passwords)
    write_private(directory / "users.acl", acl_text(passwords))
    for user in (APP_USER, PROBES_USER):
        write_private(directory / f"{user}.url", url(user, passwords[user], port) + "\n")
    (directory / "port").write_text(f"{port}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
