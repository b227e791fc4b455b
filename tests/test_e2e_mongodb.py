"""MongoDB through the real kernel: real pymongo against a real MongoDB-wire server (SecantusDB,
mongod's storage engine); commands show up per collection with exact counts, errors flagged,
and a server-side delay measured within 20 %."""

import pytest

from tests.servers.mongodb import mongodb_server
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
SERVER = "e2e-mongodb"
SLOW_MS = 300


def operations(stack) -> dict:
    endpoints = stack.endpoints(SERVER)
    found = {}
    for e in endpoints:  # several query shapes of one command add up
        key = (e["operation"], e.get("collection", ""))
        merged = found.setdefault(key, {"requests": 0, "errors": 0, "p50_ms": []})
        merged["requests"] += e["requests"]
        merged["errors"] += e["errors"]
        merged["p50_ms"].append(e["p50_ms"])
    return found


def test_commands_are_counted_per_collection_with_errors_and_latency(shared_stack):
    stack = shared_stack
    from pymongo import MongoClient
    from pymongo.errors import DuplicateKeyError

    with mongodb_server(service_name=SERVER) as port:
        client = MongoClient("127.0.0.1", port, serverSelectionTimeoutMS=10_000)
        orders = client.shop.orders
        for i in range(3):
            orders.insert_one({"_id": i, "user": f"user-{i}@example.com", "total": i * 10})
        with pytest.raises(DuplicateKeyError):
            orders.insert_one({"_id": 0, "user": "again"})
        for i in range(4):
            assert orders.find_one({"_id": i % 3})
        orders.delete_one({"_id": 2})
        client.admin.command(
            "configureFailPoint", "failCommand", mode={"times": 1},
            data={"failCommands": ["count"], "blockConnection": True, "blockTimeMS": SLOW_MS},
        )  # fmt: skip
        client.shop.command("count", "slow")
        client.close()

        def seen():
            ops = operations(stack)
            return ops if ops.get(("delete", "orders")) and ops.get(("count", "slow")) else None

        ops = wait_until(seen, "the commands on the server", stack)
        assert ops[("insert", "orders")]["requests"] == 4
        assert ops[("insert", "orders")]["errors"] == 1  # the duplicate key
        assert ops[("find", "orders")]["requests"] == 4
        assert ops[("delete", "orders")]["requests"] == 1
        (slow_p50,) = ops[("count", "slow")]["p50_ms"]
        assert abs(slow_p50 - SLOW_MS) <= 0.2 * SLOW_MS
        stored = repr(stack.api("/api/v1/requests", service=SERVER, limit=1000))
        assert "example.com" not in stored  # values never leave the host
