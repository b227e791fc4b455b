"""Regenerate the MongoDB wire captures in tests/captures/mongodb/.

Run by hand from the repository root, never by the tests (they only read the .bin files):

    .venv/bin/python -m tests.captures.record_mongodb [--out DIR]

The real driver, pymongo, talks to a real MongoDB-wire server (tests/servers/mongodb.py starts
SecantusDB, since no mongod is installable here) through a recording proxy on 127.0.0.1 that
forwards every byte unchanged and notes each message it carries, framed by the messageLength of
its 16-byte header: deliberately simpler than probes/protocols/mongodb.py, because the code under
test must not frame its own test data. Each exchange is saved as NAME_request.bin and
NAME_response.bin: the exact bytes of one request and of the reply whose responseTo is that
request's requestID. Everything stays on loopback.

pymongo 4.20 opens every connection with an OP_MSG handshake (hello_handshake); the legacy
OP_QUERY handshake answered by OP_REPLY (hello_legacy), which other drivers and older pymongo
still send, comes from Debian's python3-pymongo (3.11) run by /usr/bin/python3.

One file is ENCODED, NOT CAPTURED, because the server does not offer compression:
encoded_zlib_find_request.bin wraps the captured find request's body in OP_COMPRESSED with
pymongo's own pymongo.message._compress and zlib, byte for byte what pymongo sends to a mongod
that offers zlib (only its requestID is random).

The literals below are fake, and distinctive on purpose: the tests check that no value sent in a
request (FAKE_PASSWORD above all) ever comes out of the parser.
"""

import argparse
import itertools
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import bson
import pymongo
from pymongo import MongoClient
from pymongo.compression_support import ZlibContext
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.message import _compress

from tests.servers.mongodb import mongodb_server

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "mongodb"
TIMEOUT_MS = 10_000
SLOW_APP = "obsweb-slow-client"
SLOW_BLOCK_MS = 300
SETTLE_S = 0.2  # lets the last replies cross the proxy before looking for them
TAKE_TIMEOUT_S = 5.0  # an awaitable hello is answered only after maxAwaitTimeMS
HEARTBEAT_MS = 500  # pymongo's smallest: the monitor's awaitable hello waits this long
LEGACY_PYTHON = "/usr/bin/python3"  # with Debian's python3-pymongo 3.11: OP_QUERY handshakes
LEGACY_HANDSHAKE = """
import sys, pymongo
client = pymongo.MongoClient("127.0.0.1", int(sys.argv[1]), serverSelectionTimeoutMS=10000)
client.admin.command("ping")
client.close()
"""

FAKE_USER_EMAIL = "alice.fake@example.com"
FAKE_PASSWORD = "fake-password-3f9a1c"
FAKE_USER_NAME = "reporting-fake-user"
ORDERS = [
    {"_id": 1, "user": FAKE_USER_EMAIL, "total": 120, "status": "pending"},
    {"_id": 2, "user": FAKE_USER_EMAIL, "total": 30, "status": "shipped"},
    {"_id": 3, "user": "bob.fake@example.com", "total": 250, "status": "pending"},
    {"_id": 4, "user": "carol.fake@example.com", "total": 45, "status": "pending"},
    {"_id": 5, "user": "bob.fake@example.com", "total": 75, "status": "shipped"},
]
OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013


@dataclass(frozen=True)
class Wire:
    connection: int
    from_client: bool
    data: bytes
    at: float  # time.monotonic() when its last byte arrived

    @property
    def request_id(self) -> int:
        return struct.unpack_from("<i", self.data, 4)[0]

    @property
    def response_to(self) -> int:
        return struct.unpack_from("<i", self.data, 8)[0]

    @property
    def op_code(self) -> int:
        return struct.unpack_from("<i", self.data, 12)[0]

    def command(self) -> dict:
        """The command (or reply) document, decoded with pymongo's bson: {} if there is none."""
        if self.op_code == OP_MSG:
            pos = 20
            while pos < len(self.data):
                kind, pos = self.data[pos], pos + 1
                size = struct.unpack_from("<i", self.data, pos)[0]
                if kind == 0:
                    return bson.decode(self.data[pos : pos + size])
                pos += size
        elif self.op_code == OP_QUERY:
            start = self.data.index(b"\x00", 20) + 1 + 8  # namespace, numberToSkip, numberToReturn
            size = struct.unpack_from("<i", self.data, start)[0]
            return bson.decode(self.data[start : start + size])
        elif self.op_code == OP_REPLY:
            size = struct.unpack_from("<i", self.data, 36)[0]
            return bson.decode(self.data[36 : 36 + size])
        return {}


class RecordingProxy:
    """Forwards loopback connections to the server unchanged and notes every message both ways."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.wire: list[Wire] = []
        self.lock = threading.Lock()
        self.connections = itertools.count(1)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            number = next(self.connections)
            threading.Thread(target=self._pump, args=(client, upstream, number, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, number, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, connection: int, from_client: bool):
        pending = b""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                pending += data
                while len(pending) >= 4 and len(pending) >= (size := struct.unpack_from("<i", pending)[0]):
                    with self.lock:
                        self.wire.append(Wire(connection, from_client, pending[:size], time.monotonic()))
                    pending = pending[size:]
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()

    def take(self, name: str, command: str, op_code=OP_MSG, where=lambda doc: True, forget=True):
        """The first request of `command` seen since the last take, and its (first) reply.

        Then everything seen so far is forgotten, unless `forget` is False.
        """
        deadline = time.monotonic() + TAKE_TIMEOUT_S
        while True:
            time.sleep(SETTLE_S)
            with self.lock:
                wire = list(self.wire)
            request, reply = _find_exchange(wire, command, op_code, where)
            if reply or time.monotonic() > deadline:
                break
        if forget:
            with self.lock:
                self.wire.clear()
        if request is None:
            raise SystemExit(f"{name}: no {command!r} request was recorded; did pymongo change?")
        if reply is None:
            raise SystemExit(f"{name}: the {command!r} request got no reply through the proxy")
        return request, reply


def _find_exchange(wire: list[Wire], command: str, op_code: int, where):
    """(request, reply) for the first matching request; either None when not seen."""
    for request in wire:
        if not request.from_client or request.op_code != op_code:
            continue
        doc = request.command()
        if not doc or next(iter(doc)) != command or not where(doc):
            continue
        for reply in wire:
            if (
                not reply.from_client
                and reply.connection == request.connection
                and reply.response_to == request.request_id
            ):
                return request, reply
        return request, None
    return None, None


def save(out: Path, name: str, exchange: tuple[Wire, Wire]):
    request, reply = exchange
    for suffix, message in (("request", request), ("response", reply)):
        (out / f"{name}_{suffix}.bin").write_bytes(message.data)
    print(f"{name}: request {len(request.data)} bytes, response {len(reply.data)} bytes")


def record(out: Path, server_port: int):
    proxy = RecordingProxy(server_port)
    admin = MongoClient("127.0.0.1", server_port, serverSelectionTimeoutMS=TIMEOUT_MS)
    client = MongoClient(
        "127.0.0.1",
        proxy.port,
        serverSelectionTimeoutMS=TIMEOUT_MS,
        appname="obsweb-capture",
        heartbeatFrequencyMS=HEARTBEAT_MS,
    )
    try:
        orders = client.shop.orders
        client.admin.command("ping")
        handshake = proxy.take("hello_handshake", "ismaster", where=lambda d: "client" in d, forget=False)
        save(out, "hello_handshake", handshake)
        # The monitor's awaitable hello: exhaustAllowed, answered by moreToCome replies.
        awaitable = proxy.take("hello_awaitable", "hello", where=lambda d: "topologyVersion" in d)
        save(out, "hello_awaitable", awaitable)
        record_legacy_handshake(out, proxy)

        client.admin.command("hello")
        save(out, "hello", proxy.take("hello", "hello", where=lambda d: "topologyVersion" not in d))

        orders.insert_many(ORDERS)  # the documents travel in a kind-1 document sequence
        save(out, "insert", proxy.take("insert", "insert"))

        list(orders.find({"user": FAKE_USER_EMAIL, "total": {"$gt": 100}}).sort("total", -1).limit(10))
        save(out, "find", proxy.take("find", "find"))
        find_request = (out / "find_request.bin").read_bytes()

        # A filter longer than the kernel's 1024-byte capture, and a reply longer than its 256.
        list(orders.find({"_id": {"$in": list(range(1000, 1300))}, "status": "pending"}))
        save(out, "find_large", proxy.take("find_large", "find"))
        list(orders.find({}, {"user": 1, "total": 1}))
        save(out, "find_all", proxy.take("find_all", "find"))

        list(orders.find({"status": {"$in": ["pending", "shipped"]}}).batch_size(2))
        save(out, "getmore", proxy.take("getmore", "getMore"))

        orders.update_many({"status": "pending", "total": {"$lt": 50}}, {"$set": {"status": "cancelled"}})
        save(out, "update", proxy.take("update", "update"))

        orders.delete_one({"user": "bob.fake@example.com", "status": "shipped"})
        save(out, "delete", proxy.take("delete", "delete"))

        list(
            orders.aggregate(
                [
                    {"$match": {"status": {"$ne": "cancelled"}, "total": {"$gte": 10}}},
                    {"$group": {"_id": "$user", "spent": {"$sum": "$total"}}},
                    {"$sort": {"spent": -1}},
                ]
            )
        )
        save(out, "aggregate", proxy.take("aggregate", "aggregate"))

        try:
            orders.insert_one({"_id": 1, "user": FAKE_USER_EMAIL})
        except DuplicateKeyError:
            pass
        else:
            raise SystemExit("duplicate_key: the server accepted a duplicate _id")
        save(out, "duplicate_key", proxy.take("duplicate_key", "insert"))

        try:
            client.shop.command("frobnicate", "orders")
        except OperationFailure:
            pass
        save(out, "unknown_command", proxy.take("unknown_command", "frobnicate"))

        record_slow(out, proxy, admin)
        record_auth(out, proxy, client)

        save_encoded_compressed(out, find_request)
    finally:
        client.close()
        admin.close()
        proxy.close()


def record_legacy_handshake(out: Path, proxy: RecordingProxy):
    try:
        subprocess.run(
            [LEGACY_PYTHON, "-c", LEGACY_HANDSHAKE, str(proxy.port)],
            check=True,
            capture_output=True,
            timeout=TIMEOUT_MS / 1000 + 20,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"hello_legacy: {exc}; apt-get install python3-pymongo and run again") from exc
    save(out, "hello_legacy", proxy.take("hello_legacy", "ismaster", OP_QUERY, lambda d: "client" in d))


def record_slow(out: Path, proxy: RecordingProxy, admin: MongoClient):
    """A find the server holds for SLOW_BLOCK_MS, and one that runs out of its maxTimeMS."""
    admin.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={
            "failCommands": ["find"],
            "blockConnection": True,
            "blockTimeMS": SLOW_BLOCK_MS,
            "appName": SLOW_APP,
        },
    )
    slow = MongoClient("127.0.0.1", proxy.port, serverSelectionTimeoutMS=TIMEOUT_MS, appname=SLOW_APP)
    try:
        list(slow.shop.orders.find({"status": "pending"}).sort("_id", 1))
        request, reply = proxy.take("slow_find", "find")
        if reply.at - request.at < SLOW_BLOCK_MS / 1000:
            raise SystemExit(
                f"slow_find: answered in {reply.at - request.at:.3f}s; the failpoint did not hold it"
            )
        save(out, "slow_find", (request, reply))

        admin.admin.command("configureFailPoint", "maxTimeAlwaysTimeOut", mode={"times": 1})
        try:
            list(slow.shop.orders.find({"total": {"$gt": 0}}).max_time_ms(50))
        except OperationFailure as exc:
            if exc.code != 50:
                raise
        else:
            raise SystemExit("maxtime_find: the find did not time out")
        save(out, "maxtime_find", proxy.take("maxtime_find", "find"))
    finally:
        slow.close()


def record_auth(out: Path, proxy: RecordingProxy, client: MongoClient):
    """createUser with a password, then that user's SCRAM-SHA-256 login."""
    client.shop.command("createUser", FAKE_USER_NAME, pwd=FAKE_PASSWORD, roles=["read"])
    save(out, "create_user", proxy.take("create_user", "createUser"))
    user = MongoClient(
        "127.0.0.1",
        proxy.port,
        username=FAKE_USER_NAME,
        password=FAKE_PASSWORD,
        authSource="shop",
        authMechanism="SCRAM-SHA-256",
        serverSelectionTimeoutMS=TIMEOUT_MS,
    )
    try:
        user.shop.orders.find_one({"_id": 2})
        # pymongo starts SCRAM inside the handshake (speculativeAuthenticate) and continues alone.
        speculative = proxy.take(
            "hello_speculative_auth", "ismaster", where=lambda d: "speculativeAuthenticate" in d, forget=False
        )
        save(out, "hello_speculative_auth", speculative)
        save(out, "sasl_continue", proxy.take("sasl_continue", "saslContinue"))
    finally:
        user.close()


def save_encoded_compressed(out: Path, find_request: bytes):
    _request_id, message = _compress(OP_MSG, find_request[16:], ZlibContext(-1))
    (out / "encoded_zlib_find_request.bin").write_bytes(message)
    print(f"encoded_zlib_find_request: {len(message)} bytes (encoded with pymongo, not captured)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"pymongo {pymongo.version}")
    with mongodb_server() as port:
        record(args.out, port)


if __name__ == "__main__":
    main()
