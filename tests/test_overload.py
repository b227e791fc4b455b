"""Overload with the real kernel: tiny Redis requests as fast as redis-benchmark can send them,
more events than the probe worker can take in user space. The kernel's counters stay exact, the
events user space could not take are counted as dropped, the dashboard says so, and Redis keeps
serving.

Redis and redis-benchmark run in a simulated host (network namespace plus cgroup) watched by a
worker scoped to it, so the kernel's counters hold this traffic and nothing else: every command
is one exchange on the server side and one on the client side."""

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers import redis_command
from tests.hosts import SimulatedHost, simulated_host
from tests.stack import Stack, obsweb_stack
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf

HOST = "overload-host"
REDIS_PORT = 6379  # inside the host's own network namespace
REQUESTS = 200_000
CLIENTS = 20
FLOOD_CONNECTIONS = 30_000  # per flood; each request on a connection of its own
WAIT_S = 90


def kernel_counters(metrics_port: int) -> dict[str, int]:
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return {
        name: int(float(value))
        for name, value in re.findall(
            r'^obsweb_agent_kernel_events_total\{counter="(\w+)"\} (\S+)$', text, re.M
        )
    }


def gets_served(netns: str) -> int:
    """Redis's own count of the GETs it ran, asked from outside the watched cgroup (so this
    client's side of the INFO exchange is not traced; Redis's side is)."""
    info = subprocess.run(
        ["ip", "netns", "exec", netns, "redis-cli", "-p", str(REDIS_PORT), "INFO", "commandstats"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    match = re.search(r"^cmdstat_get:calls=(\d+),", info, re.M)
    return int(match.group(1)) if match else 0


@dataclass
class Watched:
    """The stack, the simulated host running Redis, and the worker scoped to that host."""

    stack: Stack
    host: SimulatedHost
    worker: subprocess.Popen
    metrics_port: int

    def benchmark(self, *args: str) -> subprocess.CompletedProcess:
        done = self.host.run(["redis-benchmark", "-p", str(REDIS_PORT), "-q", *args], timeout=300)
        assert done.returncode == 0, done.stderr
        return done


@pytest.fixture(scope="module")
def watched():
    with (
        obsweb_stack(with_worker=False) as stack,
        simulated_host("overload") as host,
        tempfile.TemporaryDirectory() as tmp,
    ):
        server = host.spawn(redis_command(REDIS_PORT, tmp), stdout=subprocess.DEVNULL)
        host.wait_for_port(REDIS_PORT)
        worker = stack.start_worker(HOST, cgroup=host.cgroup)
        metrics_port = int(worker.args[worker.args.index("--metrics-port") + 1])
        yield Watched(stack, host, worker, metrics_port)
        server.terminate()


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


def test_the_kernel_counts_every_request_exactly_while_user_space_drops_and_says_so(watched):
    before_kernel = kernel_counters(watched.metrics_port)
    before_gets = gets_served(watched.host.netns)
    started = time.monotonic()
    bench = watched.benchmark("-t", "get", "-n", str(REQUESTS), "-c", str(CLIENTS))
    took = time.monotonic() - started
    gets = gets_served(watched.host.netns) - before_gets
    time.sleep(1)  # the last exchanges end at the clients' reads
    after_kernel = kernel_counters(watched.metrics_port)

    rate = float(re.search(r"GET: ([\d.]+) requests per second", bench.stdout.replace("\r", "\n")).group(1))
    kernel = {name: after_kernel[name] - before_kernel[name] for name in after_kernel}
    lost = kernel["events_lost"]
    print(
        f"{REQUESTS} GETs from {CLIENTS} clients in {took:.1f} s (redis-benchmark: {rate:,.0f} req/s, "
        f"{2 * rate:,.0f} kernel events/s); kernel exchanges {kernel['exchanges']:,}, lost {lost:,} "
        f"({lost / kernel['exchanges']:.1%}); Redis served {gets:,} GETs"
    )
    started = time.monotonic()

    def warning_of_every_drop():
        """The dashboard's drop warning, once the heartbeats sent after the load reached it."""
        found = re.search(
            rf"agent on {HOST} dropped ([\d,]+) events",
            watched.stack.viewer_session().get(f"{watched.stack.web}/", timeout=60).text,
        )
        return found if found and int(found.group(1).replace(",", "")) >= lost else None

    warning = wait_until(
        warning_of_every_drop,
        "the dashboard's warning of every drop",
        watched.stack,
        WAIT_S,
        f"worker-{HOST}",
    )
    print(f"dashboard, {time.monotonic() - started:.1f} s later: {warning.group(0)}")

    # Each GET is two exchanges, the client's and the server's. Besides them the kernel saw
    # redis-benchmark's CONFIG GET pipeline at start (one exchange each side: a pipeline is
    # one) and Redis's side of the two INFOs above.
    assert gets == REQUESTS
    assert kernel["exchanges"] == 2 * gets + 2 + 2
    assert lost > 0, "the worker kept up: this load did not overload it"
    assert watched.worker.poll() is None


def test_a_flood_of_new_connections_leaves_the_worker_memory_flat(watched):
    """Every request on a new connection (-k 0): the kernel's connection maps are LRU with fixed
    sizes, and the worker keeps nothing per connection once it closed."""
    kernel_before = kernel_counters(watched.metrics_port)
    rss = [rss_mib(watched.worker.pid)]
    for _ in range(2):
        watched.benchmark("-t", "ping_mbulk", "-n", str(FLOOD_CONNECTIONS), "-c", str(CLIENTS), "-k", "0")
        rss.append(rss_mib(watched.worker.pid))
    flows = kernel_counters(watched.metrics_port)["flows"] - kernel_before["flows"]
    print(
        f"{2 * FLOOD_CONNECTIONS:,} new connections ({flows:,} flows counted by the kernel, both ends): "
        f"worker RSS {' -> '.join(f'{r:.1f}' for r in rss)} MiB"
    )
    assert flows >= 2 * 2 * FLOOD_CONNECTIONS
    assert rss[2] - rss[1] < 16, (
        "the second flood grew the worker again: something keeps per-connection state"
    )
    assert rss[2] - rss[0] < 64
    assert watched.worker.poll() is None
