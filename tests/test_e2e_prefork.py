"""A pre-forking server through the real kernel (tests/servers/prefork.py, the way PostgreSQL
serves): each child's exchange carries its own connection's addresses, whichever of the child's
first read and the parent's close comes first. A child once took over the connection its server
had accepted before on the same fd, so PostgreSQL's queries went missing from request paths."""

import socket
import subprocess

import pytest

from tests.helpers import REPO, free_port, stop, wait_for_port
from tests.stack import PYTHON
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
SERVICE = "prefork-e2e"
CONNECTIONS = 8  # two of each pair of orders, twice


def get(port: int, path: str) -> int:
    """GET `path` on a new connection; the client's own port."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: prefork\r\n\r\n".encode())
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response
        return conn.getsockname()[1]


@pytest.fixture(scope="module")
def sent(shared_stack):
    """{path: the client port it was sent from}, one connection each."""
    port = free_port()
    server = subprocess.Popen(
        [PYTHON, str(REPO / "tests" / "servers" / "prefork.py"), str(port)],
        env=shared_stack.env | {"OTEL_SERVICE_NAME": SERVICE},
    )
    try:
        wait_for_port(port)
        # A route each (letters: digits would be normalized to one route): 5 samples are kept per
        # route and minute, so every exchange is stored.
        return {path: get(port, path) for path in (f"/{chr(ord('a') + i)}" for i in range(CONNECTIONS))}
    finally:
        stop(server)


def test_each_child_answers_on_its_own_connection(shared_stack, sent):
    def all_counted():
        return sum(e["requests"] for e in shared_stack.endpoints(SERVICE)) >= CONNECTIONS

    wait_until(all_counted, f"the {CONNECTIONS} exchanges of {SERVICE} counted", shared_stack)
    samples = shared_stack.api("/api/v1/requests", service=SERVICE, limit=50)["requests"]
    stored = {s["url.path"]: s["client.port"] for s in samples if s.get("span.kind") == "server"}
    assert stored == sent
