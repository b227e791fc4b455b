"""Regenerate the real Redis captures in tests/captures/redis/.

Run by hand, never by the tests (they only read the .bin files):

    .venv/bin/python tests/captures/record_redis.py [--out DIR]

Starts redis-server on a free loopback port with `requirepass` set (so every client
authenticates and AUTH / HELLO ... AUTH are on the wire), puts a small recording TCP proxy in
front of it, and drives real clients through the proxy: redis-py over RESP2 and RESP3 (its
handshakes, a pipeline of ten commands, a MULTI/EXEC transaction, error replies, DEBUG SLEEP,
CONFIG SET requirepass, MIGRATE ... AUTH, maps, sets and doubles) and redis-cli (AUTH, HELLO 3,
the other RESP3 reply types by DEBUG PROTOCOL, and inline commands through --pipe).

The proxy records each connection in turns, the way the kernel sees an exchange: what the client
sent until the server answered is one request, what the server sent until the client spoke again
is its response. NAME.request.bin and NAME.response.bin hold one such turn, uncut (the tests cut
them to the kernel's 1024 / 256 bytes themselves). Needs redis-server, redis-cli and redis-py.

The password and the values are fake, made up for the captures, on purpose: the tests check that
the password never survives parsing.
"""

import argparse
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "redis"
CLIENT_TIMEOUT_S = 30
CLIENT, SERVER = 0, 1

FAKE_PASSWORD = "fake-redis-password-7f3a9c"
WRONG_PASSWORD = "fake-wrong-password-19c2e4"
EMAIL_KEY, EMAIL = "user:42:email", "alice@example.com"
LARGE_KEY, LARGE_VALUE = "report:2024:blob", "0123456789abcdef" * 200  # 3200 bytes: past both cuts
RESP3_TYPES = ("bignum", "true", "false", "null", "verbatim", "attrib", "push")


class Conversation:
    """One proxied connection as a list of turns: [client bytes, server bytes]."""

    def __init__(self):
        self.turns: list[list[bytearray]] = []

    def add(self, side: int, data: bytes):
        # The client speaking after the server did starts the next exchange.
        if not self.turns or (side == CLIENT and self.turns[-1][SERVER]):
            self.turns.append([bytearray(), bytearray()])
        self.turns[-1][side] += data


class RecordingProxy:
    """Relays every connection to Redis and records both directions, turn by turn.

    Each chunk is recorded before it is forwarded, so once a client has read its reply the
    whole exchange is recorded and `take()` returns it.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.conversations: list[Conversation] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def take(self) -> list[tuple[bytes, bytes]]:
        """Every (request, response) recorded since the last take, connection by connection."""
        with self.lock:
            exchanges = [(bytes(c), bytes(s)) for conv in self.conversations for c, s in conv.turns]
            for conv in self.conversations:
                conv.turns.clear()
        return exchanges

    def close(self):
        self.listener.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=CLIENT_TIMEOUT_S)
            conversation = Conversation()
            with self.lock:
                self.conversations.append(conversation)
            for src, dst, side in ((client, server, CLIENT), (server, client, SERVER)):
                threading.Thread(target=self._relay, args=(src, dst, side, conversation), daemon=True).start()

    def _relay(self, src: socket.socket, dst: socket.socket, side: int, conversation: Conversation):
        try:
            while data := src.recv(65536):
                with self.lock:
                    conversation.add(side, data)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the half-close on: redis-cli --pipe waits for it
        except OSError:
            pass


class Recorder:
    def __init__(self, out: Path, proxy: RecordingProxy):
        self.out, self.proxy = out, proxy

    def client(self, **options) -> redis.Redis:
        """A redis-py client on its own connection, opened (handshake done) and not yet recorded."""
        options.setdefault("password", FAKE_PASSWORD)
        # redis-py retries failed connections, a wrong password included (eleven AUTHs by
        # default): one attempt, so that one action is one exchange on the wire.
        options.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.Redis(
            host="127.0.0.1",
            port=self.proxy.port,
            single_connection_client=True,
            socket_timeout=CLIENT_TIMEOUT_S,
            **options,
        )

    def take_expected(self, what: str, *commands: str) -> list[tuple[bytes, bytes]]:
        """The exchanges recorded since the last take, checked to be `commands` in that order."""
        exchanges = self.proxy.take()
        sent = [_command_words(request) for request, _ in exchanges]
        if len(sent) != len(commands) or not all(
            w.startswith(c) for w, c in zip(sent, commands, strict=True)
        ):
            raise SystemExit(f"{what}: expected {list(commands)} on the wire, got {sent}")
        return exchanges

    def save_next(self, name: str, action=None):
        """Run `action`, then save the one exchange it caused as NAME.request/response.bin."""
        if action is not None:
            action()
        exchanges = self.proxy.take()
        if len(exchanges) != 1:
            raise SystemExit(f"{name}: expected one exchange on the wire, got {len(exchanges)}")
        self.save(name, *exchanges[0])

    def save(self, name: str, request: bytes, response: bytes):
        for suffix, data in (("request", request), ("response", response)):
            (self.out / f"{name}.{suffix}.bin").write_bytes(data)
        print(f"{name}: request {len(request)} bytes, response {len(response)} bytes")


def record_resp2(rec: Recorder, closed_port: int):
    rec.proxy.take()
    r = rec.client(protocol=2)
    # Redis 7.0 predates CLIENT SETINFO: redis-py's handshake gets two errors, and ignores them.
    handshake = rec.take_expected("redis-py handshake", "AUTH", "CLIENT SETINFO", "CLIENT SETINFO")
    rec.save("redis_py_auth", *handshake[0])
    rec.save("redis_py_client_setinfo", *handshake[1])

    rec.save_next("redis_py_set", lambda: r.set(EMAIL_KEY, EMAIL))
    rec.save_next("redis_py_get", lambda: r.get(EMAIL_KEY))
    rec.save_next("redis_py_get_missing", lambda: r.get("user:43:email"))
    rec.save_next("redis_py_set_large", lambda: r.set(LARGE_KEY, LARGE_VALUE))
    rec.save_next("redis_py_get_large", lambda: r.get(LARGE_KEY))
    r.hset("user:42", mapping={"name": "Alice", "email": EMAIL, "plan": "pro"})
    rec.proxy.take()
    rec.save_next("redis_py_hgetall", lambda: r.hgetall("user:42"))

    # Pipelines take a connection of their own from the pool: open it (handshake) beforehand.
    r.pipeline(transaction=False).ping().execute()
    rec.proxy.take()
    pipe = r.pipeline(transaction=False)
    pipe.incr("visits").set("session:9f1c", "token-abc", ex=60).get("session:9f1c")
    pipe.hset("cart:42", "book", 2).hgetall("cart:42").lpush("queue", "job-1", "job-2")
    pipe.lrange("queue", 0, -1).expire("queue", 300).ttl("queue").delete("queue")
    rec.save_next("redis_py_pipeline", pipe.execute)

    def transaction():
        tx = r.pipeline(transaction=True)
        tx.set("counter", "1").lpush("counter", "x").incr("counter")
        try:
            tx.execute()
        except redis.ResponseError:
            pass  # LPUSH on a string fails inside EXEC; that is the point

    rec.save_next("redis_py_transaction", transaction)
    rec.save_next("redis_py_wrongtype", lambda: _expect_error(r.lpush, EMAIL_KEY, "x"))
    rec.save_next(
        "redis_py_unknown_command",
        lambda: _expect_error(r.execute_command, "NOSUCHCOMMAND", "secret-argument"),
    )
    rec.save_next("redis_py_debug_sleep", lambda: r.execute_command("DEBUG", "SLEEP", "0.1"))
    rec.save_next("redis_py_config_set_requirepass", lambda: r.config_set("requirepass", FAKE_PASSWORD))
    # Nothing listens on closed_port: Redis answers -IOERR after sending the credentials nowhere.
    rec.save_next(
        "redis_py_migrate_auth",
        lambda: _expect_error(r.migrate, "127.0.0.1", closed_port, EMAIL_KEY, 0, 100, auth=FAKE_PASSWORD),
    )
    r.close()
    rec.proxy.take()

    def wrong_password():
        try:
            rec.client(protocol=2, password=WRONG_PASSWORD)
        except redis.AuthenticationError:
            return
        raise SystemExit("Redis accepted the wrong password")

    rec.save_next("redis_py_wrongpass", wrong_password)

    anonymous = rec.client(protocol=2, password=None)
    rec.proxy.take()
    rec.save_next("redis_py_noauth", lambda: _expect_error(anonymous.get, EMAIL_KEY))
    anonymous.close()


def record_resp3(rec: Recorder):
    rec.proxy.take()
    r = rec.client(protocol=3)
    # On RESP3 redis-py 8 also asks for maintenance notifications (Redis 7.0 does not know them).
    handshake = rec.take_expected(
        "redis-py RESP3 handshake",
        "HELLO 3 AUTH",
        "CLIENT MAINT_NOTIFICATIONS",
        "CLIENT SETINFO",
        "CLIENT SETINFO",
    )
    rec.save("resp3_hello_auth", *handshake[0])
    rec.save("resp3_client_maint_notifications", *handshake[1])

    rec.save_next("resp3_hgetall", lambda: r.hgetall("user:42"))
    r.sadd("tags", "red", "green", "blue")
    r.zadd("scores", {"alice": 3.25})
    rec.proxy.take()
    rec.save_next("resp3_smembers", lambda: r.smembers("tags"))
    rec.save_next("resp3_zscore", lambda: r.zscore("scores", "alice"))
    rec.save_next("resp3_wrongtype", lambda: _expect_error(r.lpush, EMAIL_KEY, "x"))
    r.close()


def record_redis_cli(rec: Recorder):
    base = [
        "redis-cli",
        "-h",
        "127.0.0.1",
        "-p",
        str(rec.proxy.port),
        "-a",
        FAKE_PASSWORD,
        "--no-auth-warning",
    ]
    rec.proxy.take()
    run(base + ["PING"])
    exchanges = rec.take_expected("redis-cli", "AUTH", "PING")
    rec.save("redis_cli_auth", *exchanges[0])
    rec.save("redis_cli_ping", *exchanges[1])

    # The RESP3 reply types the commands above did not produce, from DEBUG PROTOCOL, by redis-cli
    # -3 (redis-py 8 cannot read attributes at all).
    for kind in RESP3_TYPES:
        # redis-cli 7.0 fails on two of them (exit status 1) after they are on the wire, which is
        # all that matters here: it reads a big number but cannot print it ("Unknown reply type:
        # 13"), and its hiredis refuses attributes ('Protocol error, got "|" as reply type byte').
        run(base + ["-3", "DEBUG", "PROTOCOL", kind], check=kind not in ("bignum", "attrib"))
        exchanges = rec.take_expected("redis-cli -3", "AUTH", "HELLO 3", "DEBUG PROTOCOL")
        if kind == RESP3_TYPES[0]:
            rec.save("redis_cli_hello3", *exchanges[1])
        rec.save(f"resp3_debug_protocol_{kind}", *exchanges[2])

    # --pipe sends stdin as it is (here: inline commands, as typed in telnet) and then its own
    # ECHO of a random marker in RESP, whose reply tells it all replies have arrived. Whether that
    # is one write or two depends on timing, so everything after AUTH is saved as one exchange.
    inline = (
        b'SET greeting "hello world"\r\nGET greeting\r\nINCR visits\r\nEXISTS greeting visits\r\nPING\r\n'
    )
    run(base + ["--pipe"], stdin=inline)
    exchanges = rec.proxy.take()
    if not exchanges or not _command_words(exchanges[0][0]).startswith("AUTH"):
        raise SystemExit(f"redis-cli --pipe: expected AUTH first, got {exchanges[:1]}")
    rec.save(
        "redis_cli_pipe_inline",
        b"".join(req for req, _ in exchanges[1:]),
        b"".join(resp for _, resp in exchanges[1:]),
    )


def _command_words(request: bytes) -> str:
    """ "CLIENT SETINFO LIB-NAME redis-py" for the first command of a request sent as RESP (a rough
    reading for checking the recording, independent of the parser under test)."""
    if not request.startswith(b"*"):
        return request.split(b"\r\n", 1)[0].decode(errors="replace")
    lines = request.split(b"\r\n")
    count = int(lines[0][1:])
    return " ".join(line.decode(errors="replace") for line in lines[2 : 2 + 2 * count : 2])


def _expect_error(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except (redis.ResponseError, redis.AuthenticationError):  # -NOAUTH is the latter
        return
    raise SystemExit(f"{call.__name__}{args} did not fail as expected")


def run(cmd: list[str], stdin: bytes = b"", check: bool = True):
    result = subprocess.run(cmd, input=stdin, capture_output=True, timeout=CLIENT_TIMEOUT_S)
    if check and result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, what: str):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start listening on 127.0.0.1:{port}")


def start_redis(tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--requirepass", FAKE_PASSWORD,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(tmp),
            "--logfile", str(tmp / "redis.log"),
            "--enable-debug-command", "local",  # DEBUG SLEEP / PROTOCOL; the proxy is local too
        ],
    )  # fmt: skip
    wait_for_port(port, "redis-server")
    return proc, port


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})"
    )
    args = parser.parse_args()
    missing = [tool for tool in ("redis-server", "redis-cli") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)}; install them (apt redis-server redis-tools)")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="obsweb-redis-captures-"))
    server, port = start_redis(tmp)
    proxy = RecordingProxy(port)
    try:
        rec = Recorder(args.out, proxy)
        record_resp2(rec, closed_port=free_port())
        record_resp3(rec)
        record_redis_cli(rec)
    finally:
        proxy.close()
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
