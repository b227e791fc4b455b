"""A call from one host to another through the real kernel: two simulated hosts (a network
namespace and a cgroup each) joined by a veth pair, a worker scoped to each, one shared stack.

An HTTP client in host A calls the backend in host B across the veth, on one keep-alive
connection and on new connections. The API shows one edge client -> server with exactly the
calls made (neither worker counts the other's traffic), a request path with the client's span
on A and the server's span on B matched by their TCP connection, and both hosts.
"""

import os
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, free_port
from tests.hosts import simulated_host
from tests.stack import obsweb_stack
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
KEEP_ALIVE = 10  # calls on one connection
FRESH = 10  # calls on a connection each
CALLS = KEEP_ALIVE + FRESH
ADDRESS_A, ADDRESS_B = "10.231.0.1", "10.231.0.2"
CLIENT, SERVER, WARMUP = "xhost-client", "xhost-server", "xhost-warmup"
CLIENT_SCRIPT = """
import http.client, sys
host, port, keep_alive, fresh = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def call(connection, i):
    connection.request("GET", f"/users/{i}")
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
shared = http.client.HTTPConnection(host, port, timeout=10)
for i in range(keep_alive):
    call(shared, i)
shared.close()
for i in range(fresh):
    connection = http.client.HTTPConnection(host, port, timeout=10)
    call(connection, keep_alive + i)
    connection.close()
"""


def join(a, b) -> None:
    """A veth pair from a to b, ADDRESS_A in a and ADDRESS_B in b; it goes with the namespaces."""
    end_a, end_b = f"xa{os.getpid() % 100_000}", f"xb{os.getpid() % 100_000}"
    commands = [
        ["ip", "link", "add", end_a, "type", "veth", "peer", "name", end_b],
        ["ip", "link", "set", end_a, "netns", a.netns],
        ["ip", "link", "set", end_b, "netns", b.netns],
        ["ip", "-n", a.netns, "addr", "add", f"{ADDRESS_A}/24", "dev", end_a],
        ["ip", "-n", b.netns, "addr", "add", f"{ADDRESS_B}/24", "dev", end_b],
        ["ip", "-n", a.netns, "link", "set", end_a, "up"],
        ["ip", "-n", b.netns, "link", "set", end_b, "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True, timeout=10)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "link", "delete", end_a], capture_output=True, timeout=10)
        raise RuntimeError(f"{' '.join(exc.cmd)} failed: {exc.stderr.decode(errors='replace')}") from exc


def call(host, service: str, port: int, keep_alive: int, fresh: int) -> None:
    env = {**os.environ, "OTEL_SERVICE_NAME": service}
    argv = [sys.executable, "-c", CLIENT_SCRIPT, ADDRESS_B, str(port), str(keep_alive), str(fresh)]
    done = host.run(argv, env=env, timeout=60)
    assert done.returncode == 0, done.stderr


def requests_served(stack) -> int:
    return sum(e["requests"] for e in stack.endpoints(SERVER))


def edges_from(stack, source: str) -> list[dict]:
    return [e for e in stack.api("/api/v1/edges", since="-15m")["edges"] if e["source"] == source]


@pytest.fixture(scope="module")
def cross_host():
    with obsweb_stack(with_worker=False) as stack, simulated_host("a") as a, simulated_host("b") as b:
        join(a, b)
        port = free_port()
        server = [sys.executable, str(REPO / "tests/servers/http_backend.py"), str(port), ADDRESS_B]
        stack.procs.append(b.spawn(server, {**os.environ, "OTEL_SERVICE_NAME": SERVER}))
        b.wait_for_port(port, address=ADDRESS_B)
        stack.start_worker("host-a", cgroup=a.cgroup)
        stack.start_worker("host-b", cgroup=b.cgroup)
        # The server is known once it has been seen serving: calls to it resolve from then on.
        call(a, WARMUP, port, 1, 0)
        wait_until(lambda: requests_served(stack) == 1, "the warm-up call served", stack)
        call(a, CLIENT, port, KEEP_ALIVE, FRESH)
        wait_until(
            lambda: sum(e["requests"] for e in edges_from(stack, CLIENT)) >= CALLS,
            f"{CALLS} calls on the edge {CLIENT} -> {SERVER}",
            stack,
        )
        time.sleep(1.0)  # anything counted twice would arrive within a flush or two
        yield stack


def test_one_edge_from_the_client_on_a_to_the_server_on_b_counts_every_call_once(cross_host):
    (edge,) = [e for e in edges_from(cross_host, CLIENT) if e["protocol"] == "http"]
    assert (edge["target"], edge["requests"], edge["errors"]) == (SERVER, CALLS, 0)
    assert requests_served(cross_host) == CALLS + 1  # and the warm-up's


def test_the_client_and_server_spans_of_one_call_make_one_path_across_hosts(cross_host):
    served = cross_host.api("/api/v1/requests", service=SERVER, since="-15m", limit=50)["requests"]
    assert served, "no sampled request of the server"
    paths = [cross_host.api(f"/api/v1/traces/{r['trace_id']}")["spans"] for r in served]
    crossing = [spans for spans in paths if {s["service"] for s in spans} == {CLIENT, SERVER}]
    assert crossing, f"no path holds both the client's and the server's span: {paths[:3]}"
    spans = crossing[0]
    client = next(s for s in spans if s["service"] == CLIENT)
    server = next(s for s in spans if s["service"] == SERVER)
    assert (client["host"], client["kind"]) == ("host-a", "client")
    assert (server["host"], server["kind"]) == ("host-b", "server")
    assert server["parent_span_id"] == client["span_id"]
    assert client["attributes"]["server.address"] == server["attributes"]["server.address"] == ADDRESS_B
    assert client["attributes"]["client.port"] == server["attributes"]["client.port"]


def test_the_hosts_api_lists_both_hosts(cross_host):
    hosts = {h["name"]: h for h in cross_host.api("/api/v1/hosts")["hosts"]}
    assert {"host-a", "host-b"} <= hosts.keys()
    assert hosts["host-a"]["status"] == hosts["host-b"]["status"] == "up"
