"""Processes being born, replaced and reused, through the real kernel.

- A pre-forking server (tests/servers/prefork.py, the way PostgreSQL serves): each child's
  exchange carries its own connection's addresses, whichever of the child's first read and the
  parent's close comes first. A child once took over the connection its server had accepted
  before on the same fd, so PostgreSQL's queries went missing from request paths.
- A long run leaves no trace in the kernel's per-thread and per-connect maps: thousands of refused
  connects (a dependency down, retried) once filled the map that gives a connecting socket its
  local address, and every later client connection lost its port, so no path crossed it.
- A client that execs (an entrypoint script exec'ing the program) is named as what it runs now,
  not as the shell it was when first seen: names are cached per pid, and the kernel reports execs
  and exits so the cache forgets them.
"""

import socket
import subprocess

import pytest

from tests.helpers import REPO, free_port, stop, wait_for_port
from tests.stack import PYTHON, http_backend
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
SERVICE = "prefork-e2e"
CONNECTIONS = 8  # two of each pair of orders, twice
REFUSED_CONNECTS = 5000  # more than the 4,096 sockets the kernel keeps while they connect
RETRYING, RETRIED = "retrying-e2e", "retried-e2e"  # a target of its own: 5 samples per route and minute
RETRYING_CLIENT = """
import http.client, resource, socket, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
closed = socket.socket()
closed.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
refused = []  # kept open, so that each is a socket of its own in the kernel, as retries over hours are
for _ in range({connects}):
    s = socket.socket()
    try:
        s.connect(closed.getsockname())
    except ConnectionRefusedError:
        refused.append(s)
assert len(refused) == {connects}, len(refused)
conn = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
conn.request("GET", "/users/1")
assert conn.getresponse().status == 200
print(conn.sock.getsockname()[1], flush=True)
time.sleep({linger_s})
"""
EXECED, TARGET = "execed-e2e", "exec-target-e2e"
# A shell busy this long is seen by the cpu probe's one-second takes, which name it "sh".
SHELL_BUSY_LOOPS = 600_000  # about 1.2 s in dash here
REQUESTS = 5
LINGER_S = 3  # the client stays until its records are named: a name is read from the live process
CLIENT = """
import http.client, time
conn = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
for n in range({requests}):
    conn.request("GET", f"/users/{{n}}")
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
time.sleep({linger_s})
"""


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


def test_a_client_is_named_as_what_it_runs_after_exec(shared_stack):
    """A server is named afresh at its first answered request (a new port); a client only when
    the kernel reports its exec, or after a minute."""
    with http_backend(TARGET, env=shared_stack.env) as port:
        busy = f"i=0; while [ $i -lt {SHELL_BUSY_LOOPS} ]; do i=$((i+1)); done"
        script = f'{busy}; exec env OTEL_SERVICE_NAME={EXECED} "$@"'
        env = {k: v for k, v in shared_stack.env.items() if k != "OTEL_SERVICE_NAME"}
        client = [PYTHON, "-c", CLIENT.format(port=port, requests=REQUESTS, linger_s=LINGER_S)]
        done = subprocess.run(["sh", "-c", script, "sh", *client], env=env, timeout=60)
        assert done.returncode == 0

        def counted():
            edges = shared_stack.api("/api/v1/edges", since="-15m")["edges"]
            by_source = {
                e["source"]: e["requests"] for e in edges if (e["target"], e["protocol"]) == (TARGET, "http")
            }
            return by_source if sum(by_source.values()) >= REQUESTS else None

        assert wait_until(counted, f"{REQUESTS} requests to {TARGET}", shared_stack) == {EXECED: REQUESTS}


def test_refused_connects_leave_later_connections_their_local_port(shared_stack):
    with http_backend(RETRIED, env=shared_stack.env) as port:
        script = RETRYING_CLIENT.format(connects=REFUSED_CONNECTS, port=port, linger_s=LINGER_S)
        done = subprocess.run(
            [PYTHON, "-c", script],
            env=shared_stack.env | {"OTEL_SERVICE_NAME": RETRYING},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        client_port = int(done.stdout)

        def sampled():
            samples = shared_stack.api("/api/v1/requests", service=RETRYING, limit=50)["requests"]
            return [s for s in samples if s.get("url.path") == "/users/1"]

        (call,) = wait_until(sampled, f"the GET of {RETRYING}", shared_stack)
        assert (call["span.kind"], call["client.port"], call["server.port"]) == ("client", client_port, port)
