"""HTTP/1.x the way real clients and servers speak it, through the real kernel: HEAD, 100-continue,
chunked responses, requests split over several writes, large heads and pipelining, each counted
exactly once with its route and status."""

import socket
import subprocess
import time

import pytest

from tests.stack import http_backend
from tests.test_e2e_pipeline import by_route, wait_until

pytestmark = pytest.mark.bpf
SERVICE = "http-cases"


def exchange(port: int, *pieces: bytes, responses: int = 1) -> bytes:
    """Write the pieces as separate syscalls, then read until `responses` status lines came."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            s.sendall(piece)
            time.sleep(0.02)  # separate segments, separate reads on the server
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"HTTP/1.1 ") < responses and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: cases\r\n" + extra + b"\r\n"


@pytest.fixture(scope="module")
def routes(shared_stack):
    stack = shared_stack
    with http_backend(SERVICE, env=stack.env) as port:
        for _ in range(2):
            assert exchange(port, b"HEAD /users/1 HTTP/1.1\r\nHost: cases\r\n\r\n").startswith(
                b"HTTP/1.1 200"
            )
        for _ in range(2):
            assert b"third" in exchange(port, get("/chunked"))
        # The request line and headers in three writes.
        assert exchange(port, b"GET /users/10", b"1 HTTP/1.1\r\nHost: ca", b"ses\r\n\r\n").startswith(
            b"HTTP/1.1 200"
        )
        # A 16 KiB header: the kernel captures the first KiB, the route is in it.
        assert exchange(port, get("/users/11", b"X-Big: " + b"a" * 16384 + b"\r\n")).startswith(
            b"HTTP/1.1 200"
        )
        # Three requests in one write (pipelining): three responses.
        assert exchange(port, get("/users/12") * 3, responses=3).count(b"HTTP/1.1 200") == 3
        # curl asks for 100 Continue before sending the body.
        status = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect: 100-continue",
             "--data-binary", "x" * 2000, f"http://127.0.0.1:{port}/boom"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        assert status == "500"

        def all_counted():
            endpoints = stack.endpoints(SERVICE)  # [] until the service is first seen
            return by_route(endpoints) if sum(e["requests"] for e in endpoints) >= 10 else None

        found = wait_until(all_counted, "10 requests of the HTTP cases", stack)
        time.sleep(1)  # anything counted twice would arrive by now
        yield by_route(stack.api(f"/api/v1/services/{SERVICE}/endpoints")["endpoints"]) or found


def test_head_requests_are_counted_under_head(routes):
    assert routes[("HEAD", "/users/{id}")]["status_codes"] == {"200": 2}


def test_a_chunked_response_is_one_exchange(routes):
    assert routes[("GET", "/chunked")]["status_codes"] == {"200": 2}


def test_split_large_and_pipelined_requests_are_each_counted(routes):
    # one split over three writes, one with a 16 KiB header, three pipelined in one write
    assert routes[("GET", "/users/{id}")]["status_codes"] == {"200": 5}


def test_100_continue_is_not_taken_for_the_response(routes):
    assert routes[("POST", "/boom")]["status_codes"] == {"500": 1}


def test_nothing_else_was_counted(routes):
    assert sum(e["requests"] for e in routes.values()) == 10
