"""Real kernel, real Redis, nginx and a Python backend on loopback: requests go in, the API and
the live overview websocket show them with exact counts, and secrets never leave the host."""

import asyncio
import http.client
import json
import re
import socket
import time

import pytest
import websockets

from tests.servers.http_backend import SLOW_SECONDS
from tests.stack import http_backend, nginx_proxy

pytestmark = pytest.mark.bpf

SECRET_TOKEN = "Bearer e2e-authz-5f0c9d2b7a"
SECRET_COOKIE = "sessionid=e2e-cookie-8e1f3a6c44"
# Long enough that it cannot turn up by chance in the database's binary pages (a bare "q3" once did).
SECRET_QUERY = "e2e-query-2b9d4c"
BACKEND = "e2e-backend"
WAIT_S = 30


@pytest.fixture(scope="module")
def stack(shared_stack):
    return shared_stack


@pytest.fixture(scope="module")
def proxied(stack):
    with http_backend(BACKEND, env=stack.env) as backend_port, nginx_proxy(backend_port) as nginx_port:
        yield nginx_port


def send(port: int, method: str, path: str, conn: http.client.HTTPConnection | None = None, **headers) -> int:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=b"x" * 10 if method == "POST" else None, headers=headers)
    response = conn.getresponse()
    response.read()
    if own:
        conn.close()
    return response.status


def wait_until(check, what: str, stack, timeout: float = WAIT_S, worker: str = "worker"):
    """`check()` once it is truthy; else fail after `timeout` s with the tails of the logs of
    `worker` (the name stack.spawn gave it) and the ingester."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(
        f"timed out waiting for {what}; last={last!r}\nworker log:\n{stack.log(worker)[-3000:]}\n"
        f"ingest log:\n{stack.log('ingest')[-3000:]}"
    )


@pytest.fixture(scope="module")
def traffic(stack, proxied):
    """18 requests through nginx: 10 on one keep-alive connection, 404s, 500s and slow ones."""
    keep_alive = http.client.HTTPConnection("127.0.0.1", proxied, timeout=10)
    for i in range(10):
        path = f"/users/{i}?token={SECRET_QUERY}{i}"
        assert send(proxied, "GET", path, conn=keep_alive, Authorization=SECRET_TOKEN) == 200
    keep_alive.close()
    for _ in range(3):
        assert send(proxied, "GET", "/missing", Cookie=SECRET_COOKIE) == 404
    for _ in range(2):
        assert send(proxied, "POST", "/boom") == 500
    for _ in range(3):
        assert send(proxied, "GET", "/slow") == 200

    def all_counted():
        endpoints = stack.endpoints(BACKEND)  # [] until the service is first seen
        return endpoints if sum(e["requests"] for e in endpoints) >= 18 else None

    return wait_until(all_counted, "18 backend requests in the API", stack)


def by_route(endpoints):
    return {(e["method"], e["route"]): e for e in endpoints}


def test_it_counts_every_request_with_its_route_and_status(traffic):
    routes = by_route(traffic)
    assert set(routes) == {("GET", "/users/{id}"), ("GET", "/missing"), ("POST", "/boom"), ("GET", "/slow")}
    assert routes[("GET", "/users/{id}")]["requests"] == 10
    assert routes[("GET", "/users/{id}")]["status_codes"] == {"200": 10}
    assert routes[("GET", "/missing")]["status_codes"] == {"404": 3}
    assert routes[("POST", "/boom")]["status_codes"] == {"500": 2}
    assert routes[("POST", "/boom")]["errors"] == 2
    assert routes[("GET", "/slow")]["requests"] == 3


def test_it_measures_latency_at_the_syscall(traffic):
    slow = by_route(traffic)[("GET", "/slow")]
    expected_ms = SLOW_SECONDS * 1000
    for key in ("p50_ms", "p99_ms"):
        assert abs(slow[key] - expected_ms) <= 0.2 * expected_ms, slow
    fast = by_route(traffic)[("GET", "/users/{id}")]
    assert fast["p99_ms"] < expected_ms / 2, fast


def test_services_show_backend_and_proxy_with_errors(stack, proxied, traffic):
    services = {s["name"]: s for s in stack.api("/api/v1/services")["services"]}
    backend = services[BACKEND]
    assert backend["requests"] == 18
    assert backend["errors"] == 2
    assert backend["client_errors"] == 3
    assert backend["hosts"] == [stack.host_name]
    nginx = services[f"nginx:{proxied}"]
    assert nginx["requests"] == 18
    assert nginx["errors"] == 2


def test_the_proxy_to_backend_edge_is_counted(stack, proxied, traffic):
    edges = stack.api("/api/v1/edges")["edges"]
    http_edges = [e for e in edges if e["source"] == f"nginx:{proxied}" and e["target"] == BACKEND]
    assert [(e["protocol"], e["requests"], e["errors"]) for e in http_edges if e["protocol"] == "http"] == [
        ("http", 18, 2)
    ]


def test_secrets_never_reach_redis_or_the_database(stack, traffic):
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    stored = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"stream":
            stored += [repr(entry) for entry in client.xrange(key)]
        elif kind == b"string":
            stored.append(repr(client.get(key)))
        elif kind == b"hash":
            stored.append(repr(client.hgetall(key)))
        elif kind == b"list":
            stored.append(repr(client.lrange(key, 0, -1)))
    assert stored, "nothing in Redis: the check would prove nothing"
    database = b"".join(p.read_bytes() for p in stack.tmp.glob("db.sqlite3*"))
    assert b"/users/" in database, "no requests in the database: the check would prove nothing"
    for secret in (SECRET_TOKEN.split()[1], SECRET_COOKIE.split("=")[1], f"{SECRET_QUERY}3"):
        assert secret not in "".join(stored)
        assert secret.encode() not in database


def _login_cookie(stack) -> str:
    return "; ".join(f"{k}={v}" for k, v in stack.viewer_session().cookies.items())


def test_the_live_overview_receives_the_update(stack, proxied, traffic):
    cookie = _login_cookie(stack)
    url = f"ws://127.0.0.1:{stack.web_port}/ws/overview/"

    async def watch():
        origin = f"http://127.0.0.1:{stack.web_port}"
        async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": origin}) as ws:
            before = time.time_ns()
            for _ in range(5):
                send(proxied, "GET", "/users/99")
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=WAIT_S))
                arrived = time.time_ns()
                services = {s["name"]: s for s in message.get("services", [])}
                if (
                    message.get("latest_ts_ns", 0) >= before
                    and services.get(BACKEND, {}).get("requests", 0) >= 23
                ):
                    return message, arrived
            raise AssertionError("no websocket update with the new requests")

    message, arrived = asyncio.run(watch())
    latency_ms = (arrived - message["latest_ts_ns"]) / 1e6
    print(f"kernel event to websocket: {latency_ms:.0f} ms")
    assert latency_ms < 5000


def test_the_worker_survives_garbage_on_sockets_and_counts_it(stack, proxied, traffic):
    def kernel_counter(name):
        match = re.search(
            rf'obsweb_agent_kernel_events_total{{counter="{name}"}} (\S+)', stack.worker_metrics()
        )
        return float(match.group(1))

    unclassified = kernel_counter("unclassified_connections")
    with socket.create_connection(("127.0.0.1", proxied)) as s:
        s.sendall(bytes(range(256)) * 8)  # binary, not HTTP
        s.settimeout(2)
        try:
            s.recv(4096)
        except OSError:
            pass
    with socket.create_connection(("127.0.0.1", proxied)) as s:
        s.sendall(b"GET /truncat")  # a request cut in the middle of its first line
    with socket.create_connection(("127.0.0.1", proxied)) as s:
        s.settimeout(10)
        try:
            s.sendall(b"GET /huge HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (10 << 20) + b"\r\n\r\n")
            s.recv(4096)
        except OSError:
            pass  # nginx may reset mid-way; the worker is what we test
    assert send(proxied, "GET", "/users/100") == 200

    wait_until(lambda: kernel_counter("unclassified_connections") > unclassified, "garbage counted", stack)
    assert stack.worker_health()["status"] == "ok"
    assert stack.procs[-1].poll() is None, "worker died"

    def counted_after():
        endpoints = by_route(stack.api(f"/api/v1/services/{BACKEND}/endpoints")["endpoints"])
        return endpoints[("GET", "/users/{id}")]["requests"] >= 16

    wait_until(counted_after, "the request after the garbage", stack)
