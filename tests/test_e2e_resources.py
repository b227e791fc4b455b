"""Resource use and TCP health end to end on the real kernel: worker -> Redis -> ingester ->
database -> API, checked against what the test's own processes did.

The worker watches one cgroup of its own (--cgroup) and every workload runs in it, so what the API
shows is this test's processes only, whatever else the machine is busy with."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from probes.scope import cgroup2_root
from tests.helpers import free_port, stop
from tests.hosts import _empty as empty_cgroup
from tests.stack import PYTHON, obsweb_stack
from tests.test_e2e_pipeline import wait_until
from tests.test_kernel_resources import BURN, LOSSY_CLIENT, SINK, lossy_link

pytestmark = pytest.mark.bpf
BURN_S = 2.0
DISK_BYTES = 64 << 20
TRANSFER_BYTES = 3 << 20
# A process that is gone before the worker reads its /proc/<pid>/environ is named by its comm
# ("python3"), not by OTEL_SERVICE_NAME: each one here stays a moment after its last packet.
NAMED_LINGER = "import time\ntime.sleep(1.5)\n"
SERVE_ONE = (
    "import socket, sys\n"
    "s = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
    "print('listening', flush=True)\n"
    "s.settimeout(60)\n"
    "c, _ = s.accept()\n"
    "c.settimeout(30)\n"
    "while c.recv(65536):\n"
    "    pass\n"
    "c.close()\n"
) + NAMED_LINGER
SEND = (
    "import socket, sys\n"
    "c = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
    "c.sendall(b'x' * int(sys.argv[2]))\n"
    "c.shutdown(socket.SHUT_WR)\n"
    "assert c.recv(1) == b''\n"
    "c.close()\n"
) + NAMED_LINGER
DIAL = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
    "    sys.exit('the connect was not refused')\n"
    "except ConnectionRefusedError:\n"
    "    pass\n"
) + NAMED_LINGER


class Watched:
    """The stack with one worker scoped to a cgroup, and a way to run commands inside it."""

    def __init__(self, stack, cgroup: Path):
        self.stack, self.cgroup = stack, cgroup

    def command(self, argv: list[str]) -> list[str]:
        return ["sh", "-c", f'echo $$ > "{self.cgroup}/cgroup.procs" && exec "$@"', "sh", *argv]

    def named(self, service: str) -> dict:
        return {**os.environ, "OTEL_SERVICE_NAME": service}

    def resource_row(self, service: str) -> dict | None:
        rows = self.stack.api("/api/v1/resources", since="-15m")["services"]
        return next((row for row in rows if row["name"] == service), None)

    def edge(self, source: str, target: str) -> dict | None:
        edges = self.stack.api("/api/v1/edges", since="-15m")["edges"]
        return next((e for e in edges if (e["source"], e["target"]) == (source, target)), None)


@pytest.fixture(scope="module")
def watched():
    cgroup = cgroup2_root() / f"obsweb-{os.getpid()}-e2e-resources"
    cgroup.mkdir()
    try:
        with obsweb_stack(with_worker=False) as stack:
            stack.start_worker(cgroup=cgroup)  # returns once the cpu, disk and tcp programs run too
            yield Watched(stack, cgroup)
    finally:
        empty_cgroup(cgroup)


def test_a_cpu_burner_is_the_top_cpu_service_with_its_measured_cpu_time(watched):
    service = f"burner-{os.getpid()}"
    child = subprocess.Popen(
        watched.command([PYTHON, "-c", BURN.format(s=BURN_S)]), env=watched.named(service)
    )
    _pid, status, usage = os.wait4(child.pid, 0)
    assert status == 0
    measured_s = usage.ru_utime + usage.ru_stime

    def counted():
        row = watched.resource_row(service)
        return row if row and row["cpu_seconds"] >= measured_s * 0.85 else None

    row = wait_until(counted, f"{service}'s CPU time in /api/v1/resources", watched.stack, timeout=40)
    time.sleep(6)  # one more resource interval: nothing of the burner may arrive late
    row = watched.resource_row(service)
    top = watched.stack.api("/api/v1/resources", since="-15m")["services"][0]
    print(f"cpu via the API: {row['cpu_seconds']:.3f} s, wait4 {measured_s:.3f} s")
    assert top["name"] == service
    assert row["cpu_seconds"] == pytest.approx(measured_s, rel=0.15)
    assert row["hosts"] == [watched.stack.host_name]


def test_a_direct_write_shows_its_disk_bytes(watched):
    service = f"writer-{os.getpid()}"
    target = Path(tempfile.mkdtemp(prefix="obsweb-dd-", dir="/var/tmp"))  # the root disk, not tmpfs
    # The shell lives a moment before it becomes dd, so the worker reads its environment (its name).
    dd = f"sleep 1.5; exec dd if=/dev/zero of={target}/data bs=1M count={DISK_BYTES >> 20} oflag=direct"
    try:
        done = subprocess.run(watched.command(["sh", "-c", dd]), env=watched.named(service), timeout=60)
        assert done.returncode == 0
    finally:
        shutil.rmtree(target, ignore_errors=True)

    def counted():
        row = watched.resource_row(service)
        return row if row and row["disk_write_bytes"] >= DISK_BYTES * 0.9 else None

    row = wait_until(counted, f"{service}'s disk writes in /api/v1/resources", watched.stack, timeout=40)
    print(f"disk via the API: {row['disk_write_bytes']} bytes of {DISK_BYTES}")
    assert row["disk_write_bytes"] == pytest.approx(DISK_BYTES, rel=0.10)


def test_a_transfer_of_a_known_size_shows_its_bytes_on_its_edge(watched):
    sink, sender = f"sink-{os.getpid()}", f"sender-{os.getpid()}"
    port = free_port()
    server = subprocess.Popen(
        watched.command([PYTHON, "-c", SERVE_ONE, str(port)]),
        env=watched.named(sink),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline() == "listening\n"  # not a probe connect: it serves one client
        sent = subprocess.run(
            watched.command([PYTHON, "-c", SEND, str(port), str(TRANSFER_BYTES)]),
            env=watched.named(sender),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        server.wait(timeout=30)
    finally:
        stop(server)

    edge = wait_until(
        lambda: watched.edge(sender, sink), f"the edge {sender} -> {sink}", watched.stack, timeout=30
    )
    print(f"edge {sender} -> {sink}: {edge['bytes']} bytes for {TRANSFER_BYTES} sent, tcp {edge['tcp']}")
    assert edge["bytes"] == pytest.approx(TRANSFER_BYTES, rel=0.01)
    assert edge["tcp"]["connections"] == 1


def test_a_connect_to_a_closed_port_counts_as_a_failure_on_its_edge(watched):
    dialer = f"dialer-{os.getpid()}"
    closed_port = free_port()
    done = subprocess.run(
        watched.command([PYTHON, "-c", DIAL, str(closed_port)]),
        env=watched.named(dialer),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, f"the connect was not refused: {done.stderr}"
    target = f"127.0.0.1:{closed_port}"
    edge = wait_until(lambda: watched.edge(dialer, target), f"the edge {dialer} -> {target}", watched.stack)
    assert edge["tcp"]["failures"] == 1 and edge["tcp"]["failures_refused"] == 1


def test_retransmits_over_a_lossy_link_show_on_its_edge(watched):
    client = f"lossy-{os.getpid()}"
    port = free_port()
    with lossy_link(port) as (address, netns):
        sink = subprocess.Popen(["ip", "netns", "exec", netns, PYTHON, "-c", SINK, str(port)])
        try:
            done = subprocess.run(
                watched.command([PYTHON, "-c", LOSSY_CLIENT + NAMED_LINGER, address, str(port)]),
                env=watched.named(client),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, f"the transfer failed: {done.stderr}"
            sink.wait(timeout=30)
        finally:
            stop(sink)
    target = f"{address}:{port}"

    def retransmitted():
        edge = watched.edge(client, target)
        return edge if edge and edge["tcp"]["retransmits"] > 0 else None

    edge = wait_until(retransmitted, f"retransmits on the edge {client} -> {target}", watched.stack)
    print(f"edge {client} -> {target}: tcp {edge['tcp']}")
    assert edge["tcp"]["failures"] == 0
