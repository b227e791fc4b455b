"""Redis through the real kernel: real redis-py against a real redis-server; commands counted
per operation (a pipeline by its commands), errors flagged, DEBUG SLEEP measured within 20 %,
and the AUTH password stored nowhere."""

import subprocess
import tempfile

import pytest
import redis

from tests.helpers import free_port, stop, wait_for_port
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
PASSWORD = "e2e-redis-pass-7f3a9c"
SLEEP_S = 0.2


def operations(stack, server: str) -> dict:
    found = {}
    for e in stack.endpoints(server):
        merged = found.setdefault(e["operation"], {"requests": 0, "errors": 0, "p50_ms": e["p50_ms"]})
        merged["requests"] += e["requests"]
        merged["errors"] += e["errors"]
    return found


def test_commands_pipelines_errors_and_latency_are_seen_and_auth_is_not(shared_stack):
    stack = shared_stack
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp,
             "--requirepass", PASSWORD, "--enable-debug-command", "yes"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        # redis-server rewrites its environment with its process title, so OTEL_SERVICE_NAME
        # cannot reach /proc/<pid>/environ: it is named by executable and port.
        server_name = f"redis-server:{port}"
        try:
            wait_for_port(port)
            client = redis.Redis(port=port, password=PASSWORD, protocol=2)
            for i in range(4):
                client.set(f"k{i}", i)
            for i in range(3):
                client.get(f"k{i}")
            pipe = client.pipeline(transaction=False)
            for _ in range(10):
                pipe.incrby("counter", 1)
            pipe.execute()
            client.lpush("list", "x")
            with pytest.raises(redis.ResponseError):
                client.incr("list")  # WRONGTYPE
            client.execute_command("DEBUG", "SLEEP", SLEEP_S)
            client.close()

            def seen():
                ops = operations(stack, server_name)
                return ops if ops.get("DEBUG") and ops.get("INCRBY", {}).get("requests", 0) >= 10 else None

            ops = wait_until(seen, "the Redis commands on the server", stack)
            assert ops["SET"]["requests"] == 4
            assert ops["GET"]["requests"] == 3
            assert ops["INCRBY"]["requests"] == 11  # ten pipelined in one exchange, one alone
            assert ops["INCRBY"]["errors"] == 1  # the WRONGTYPE
            assert abs(ops["DEBUG"]["p50_ms"] - SLEEP_S * 1000) <= 0.2 * SLEEP_S * 1000
            stored = repr(stack.api("/api/v1/requests", service=server_name, limit=1000))
            database = b"".join(p.read_bytes() for p in stack.tmp.glob("db.sqlite3*"))
            assert PASSWORD not in stored and PASSWORD.encode() not in database
        finally:
            stop(server)
