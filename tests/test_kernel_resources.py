"""The cpu, disk and tcp programs on the real kernel: a real worker publishes resource and TCP
health records to a throwaway Redis, checked against what the test's own processes did.

The worker is scoped to a cgroup of its own (--cgroup) and every workload runs in it, so the
records hold this test's processes only, whatever else the machine is busy with."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis
import requests

from probes import schema
from probes.scope import cgroup2_root
from tests.helpers import REPO, free_port, redis_server, stop, wait_for_port
from tests.hosts import _empty as empty_cgroup

pytestmark = pytest.mark.bpf
PYTHON = sys.executable
ATTACH_TIMEOUT_S = 90  # four BPF programs compile at start: slow on a loaded 2-core machine
RECORDS_TIMEOUT_S = 20  # a resource interval is 5 s; the records are in Redis well within this
BURN_S = 2.0
DISK_BYTES = 64 << 20
TOGGLE_DEADLINE_S = 2.0
BURN = "import time\nstart = time.process_time()\nwhile time.process_time() - start < {s}:\n    pass\n"


class Worker:
    """A probe worker process and what it has published so far."""

    def __init__(self, redis_url: str, log: Path, cgroup: Path):
        self.client = redis.Redis.from_url(redis_url)
        self.health_port, self.metrics_port = free_port(), free_port()
        self.log_path = log
        args = [PYTHON, "-m", "probes", "--redis-url", redis_url, "--host-name", "kernel-test"]
        args += ["--metrics-port", str(self.metrics_port), "--health-port", str(self.health_port)]
        args += ["--cgroup", str(cgroup)]
        self.cgroup = cgroup
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        self.records: list[dict] = []
        self.last_id = "0-0"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the worker's cgroup."""
        return ["sh", "-c", f'echo $$ > "{self.cgroup}/cgroup.procs" && exec "$@"', "sh", *argv]

    def state(self, probe: str) -> dict:
        return requests.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5).json()["probes"][probe]

    def wait_attached(self, probes=(schema.PROBE_CPU, schema.PROBE_DISK, schema.PROBE_TCP)) -> None:
        wait_for_port(self.health_port, timeout=30)
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline:
            states = requests.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5).json()["probes"]
            if all(states[p]["actual"] for p in probes):
                return
            errors = {p: states[p]["error"] for p in probes if states[p]["error"]}
            if errors:
                raise AssertionError(f"the worker could not attach {errors}\n{self.log()}")
            time.sleep(0.3)
        raise AssertionError(f"probes {probes} not attached after {ATTACH_TIMEOUT_S} s:\n{self.log()}")

    def read(self) -> list[dict]:
        """Every record published so far (read incrementally)."""
        for _stream, entries in self.client.xread({schema.RECORDS_STREAM: self.last_id}) or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                self.records.extend(schema.unpack_batch(fields[schema.RECORDS_FIELD]))
        return self.records

    def wait_for(self, check, what: str, timeout: float = RECORDS_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check(self.read())
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\nworker log:\n{self.log()}")

    def resources_after(self, ts_ns: int) -> list[dict]:
        """Resource records of every interval up to the first that ended after `ts_ns` plus one
        take (so a process that exited at `ts_ns` is fully counted); waits for that interval."""
        settle = ts_ns + int(1.5e9)
        self.wait_for(
            lambda records: any(
                r[schema.KIND] == schema.KIND_RESOURCE and r[schema.TS] > settle for r in records
            ),
            "a resource interval ending after the workload",
        )
        return [r for r in self.records if r[schema.KIND] == schema.KIND_RESOURCE]


@pytest.fixture(scope="module")
def worker():
    cgroup = cgroup2_root() / f"obsweb-{os.getpid()}-kernel"
    cgroup.mkdir()
    try:
        with redis_server() as url, tempfile.TemporaryDirectory(prefix="obsweb-kernel-") as tmp:
            w = Worker(url, Path(tmp) / "worker.log", cgroup)
            try:
                w.wait_attached()
                yield w
            finally:
                stop(w.proc)
    finally:
        empty_cgroup(cgroup)


def service_records(records: list[dict], service: str) -> list[dict]:
    return [r for r in records if r.get(schema.SERVICE) == service]


def test_a_cpu_burning_process_is_the_top_service_with_its_cpu_time(worker):
    service = f"burner-{os.getpid()}"
    light = subprocess.Popen(
        worker.command([PYTHON, "-c", BURN.format(s=BURN_S / 10)]),
        env={**os.environ, "OTEL_SERVICE_NAME": f"light-{os.getpid()}"},
    )
    child = subprocess.Popen(
        worker.command([PYTHON, "-c", BURN.format(s=BURN_S)]),
        env={**os.environ, "OTEL_SERVICE_NAME": service},
    )
    _pid, status, usage = os.wait4(child.pid, 0)  # the shell exec'd the burner: same process
    light.wait(timeout=30)
    exited_ns = time.time_ns()
    assert status == 0
    measured_ns = int((usage.ru_utime + usage.ru_stime) * 1e9)

    records = worker.resources_after(exited_ns)
    mine = service_records(records, service)
    assert mine, f"no resource record for {service}"
    reported_ns = sum(r[schema.CPU_TIME_NS] for r in mine)
    busiest = max(mine, key=lambda r: r[schema.CPU_TIME_NS])
    same_interval = [r for r in records if r[schema.TS] == busiest[schema.TS] and r.get(schema.SERVICE)]
    top = max(same_interval, key=lambda r: r[schema.CPU_TIME_NS])
    print(f"cpu: reported {reported_ns / 1e9:.3f} s, wait4 {measured_ns / 1e9:.3f} s "
          f"({100 * (reported_ns - measured_ns) / measured_ns:+.1f} %)")  # fmt: skip
    assert top[schema.SERVICE] == service, f"top service was {top[schema.SERVICE]}: {same_interval}"
    assert reported_ns == pytest.approx(measured_ns, rel=0.15)
    assert all(r[schema.RESOURCE_SCOPE] == schema.RESOURCE_SCOPE_SERVICE for r in mine)
    assert busiest[schema.MEMORY_RSS_BYTES] >= 0 and busiest[schema.RESOURCE_PROCESSES] == 1
    host = [r for r in records if r[schema.RESOURCE_SCOPE] == schema.RESOURCE_SCOPE_HOST]
    assert host and host[-1][schema.CPU_COUNT] == os.cpu_count()
    assert 0 < host[-1][schema.MEMORY_AVAILABLE_BYTES] <= host[-1][schema.MEMORY_TOTAL_BYTES]


def test_direct_writes_are_charged_to_the_writing_service(worker):
    # On the root file system (/dev/vda here, ext4), not a tmpfs: O_DIRECT writes reach the disk.
    target = Path(tempfile.mkdtemp(prefix="obsweb-dd-", dir="/var/tmp"))
    service = f"writer-{os.getpid()}"
    # The shell lives a moment before it becomes dd, so the worker names the process while its
    # environment can still be read (a process gone within a second is named by its comm).
    dd = f"sleep 1.5; exec dd if=/dev/zero of={target}/data bs=1M count={DISK_BYTES >> 20} oflag=direct"
    try:
        done = subprocess.run(
            worker.command(["sh", "-c", dd]), env={**os.environ, "OTEL_SERVICE_NAME": service}, timeout=60
        )
        finished_ns = time.time_ns()
        assert done.returncode == 0
        records = worker.resources_after(finished_ns)
    finally:
        shutil.rmtree(target, ignore_errors=True)
    written = sum(r[schema.DISK_WRITE_BYTES] for r in service_records(records, service))
    ops = sum(r[schema.DISK_WRITE_OPS] for r in service_records(records, service))
    print(f"disk: {written} bytes written in {ops} ops ({100 * (written - DISK_BYTES) / DISK_BYTES:+.1f} %)")
    assert written == pytest.approx(DISK_BYTES, rel=0.10)
    assert ops > 0


REFUSED_CLIENT = (
    "import socket, sys\n"
    "c = socket.socket()\n"
    "c.bind(('127.0.0.1', 0))\n"
    "print(c.getsockname()[1], flush=True)\n"
    "try:\n"
    "    c.connect(('127.0.0.1', int(sys.argv[1])))\n"
    "except ConnectionRefusedError:\n"
    "    sys.exit(0)\n"
    "sys.exit(1)\n"
)


def test_a_connect_to_a_closed_port_is_a_refused_client_health_record(worker):
    closed_port = free_port()  # bound, then released: nothing listens there
    client = subprocess.run(
        worker.command([PYTHON, "-c", REFUSED_CLIENT, str(closed_port)]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert client.returncode == 0, f"the connect was not refused: {client.stderr}"
    client_port = int(client.stdout)

    def refused(records):
        return [
            r for r in records
            if r.get(schema.FLOW_EVENT) == schema.FLOW_EVENT_HEALTH and r[schema.CLIENT_PORT] == client_port
        ]  # fmt: skip

    (record,) = worker.wait_for(refused, f"a health record for the refused connect from port {client_port}")
    assert record[schema.KIND] == schema.KIND_FLOW
    assert record[schema.FLOW_FAILURE] == "refused"
    assert record[schema.SPAN_KIND] == schema.SPAN_CLIENT
    assert (record[schema.SERVER_ADDRESS], record[schema.SERVER_PORT]) == ("127.0.0.1", closed_port)
    assert record[schema.CLIENT_ADDRESS] == "127.0.0.1"
    assert record[schema.FLOW_RESETS_RECEIVED] == 1


@contextlib.contextmanager
def lossy_link(port: int, drop_percent: int = 20):
    """A network namespace joined to this one by a veth pair, whose input drops `drop_percent` of
    the TCP segments to `port` (nftables numgen: this kernel has no netem). Yields (the address
    inside, the namespace's name). Removed on exit, whatever happened."""
    if shutil.which("nft") is None:
        pytest.fail("nft is not installed: `make test` installs nftables (APT_TEST)")
    tag = os.getpid() % 100_000
    netns, outside, inside = f"obsweb-loss-{tag}", f"obl{tag}a", f"obl{tag}b"
    subnet = f"10.213.{tag % 250}"
    rule = (
        "add table inet obsweb_loss\n"
        "add chain inet obsweb_loss input { type filter hook input priority 0; policy accept; }\n"
        f"add rule inet obsweb_loss input tcp dport {port} numgen random mod 100 < {drop_percent} drop\n"
    )
    steps = [
        ["ip", "netns", "add", netns],
        ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
        ["ip", "link", "set", inside, "netns", netns],
        ["ip", "addr", "add", f"{subnet}.1/30", "dev", outside],
        ["ip", "link", "set", outside, "up"],
        ["ip", "-n", netns, "addr", "add", f"{subnet}.2/30", "dev", inside],
        ["ip", "-n", netns, "link", "set", inside, "up"],
        ["ip", "-n", netns, "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=10)
        subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rule.encode(), check=True, timeout=10
        )
        yield f"{subnet}.2", netns
    finally:
        # Deleting the namespace deletes its end of the pair, which takes the other end and the
        # nftables table with it.
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "delete", outside], capture_output=True, timeout=10)


SINK = (
    "import socket, sys\n"
    "s = socket.create_server(('0.0.0.0', int(sys.argv[1])))\n"
    "s.settimeout(30)\n"
    "c, _ = s.accept()\n"
    "c.settimeout(30)\n"
    "while c.recv(65536):\n"
    "    pass\n"
    "c.close()\n"
)


LOSSY_CLIENT = (
    "import socket, sys, time\n"
    "deadline = time.monotonic() + 10\n"
    "while True:  # the sink needs a moment to listen, and the link drops SYNs too\n"
    "    try:\n"
    "        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
    "        break\n"
    "    except OSError:\n"
    "        if time.monotonic() > deadline:\n"
    "            raise\n"
    "        time.sleep(0.2)\n"
    "print(c.getsockname()[1], flush=True)\n"
    "c.settimeout(30)\n"
    "c.sendall(b'x' * (4 << 20))  # ~64 GSO segments: 20 % loss cannot miss them all\n"
    "c.shutdown(socket.SHUT_WR)\n"
    "assert c.recv(1) == b''  # the sink read everything and closed\n"
    "c.close()\n"
)


def test_retransmits_over_a_lossy_link_are_reported_on_that_connection(worker):
    port = free_port()
    with lossy_link(port) as (address, netns):
        sink = subprocess.Popen(["ip", "netns", "exec", netns, PYTHON, "-c", SINK, str(port)])
        try:
            client = subprocess.run(
                worker.command([PYTHON, "-c", LOSSY_CLIENT, address, str(port)]),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert client.returncode == 0, f"the transfer failed: {client.stderr}"
            client_port = int(client.stdout)
            sink.wait(timeout=30)
        finally:
            stop(sink)

    def retransmitted(records):
        return [
            r for r in records
            if r.get(schema.FLOW_EVENT) == schema.FLOW_EVENT_HEALTH and r[schema.CLIENT_PORT] == client_port
        ]  # fmt: skip

    records = worker.wait_for(
        retransmitted, f"a health record for the lossy connection from port {client_port}"
    )
    print(f"retransmits on the lossy connection: {[r[schema.FLOW_RETRANSMITS] for r in records]}")
    record = records[0]
    assert record[schema.FLOW_RETRANSMITS] > 0
    assert record[schema.SPAN_KIND] == schema.SPAN_CLIENT
    assert (record[schema.SERVER_ADDRESS], record[schema.SERVER_PORT]) == (address, port)
    assert record[schema.FLOW_FAILURE] is None


def test_the_worker_counts_the_new_probes_events_in_its_metrics(worker):
    metrics = requests.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5).text
    samples = dict(
        line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("obsweb_agent_probe_events")
    )
    assert float(samples['obsweb_agent_probe_events_total{probe="cpu"}']) > 0
    assert float(samples['obsweb_agent_probe_events_total{probe="disk"}']) > 0
    assert float(samples['obsweb_agent_probe_events_total{probe="tcp"}']) > 0  # the refused connect
    assert 'obsweb_agent_probe_events_dropped_total{probe="tcp"}' in samples


@pytest.mark.parametrize("probe", [schema.PROBE_CPU, schema.PROBE_DISK, schema.PROBE_TCP])
def test_switching_a_probe_off_and_on_takes_effect_within_two_seconds(worker, probe):
    took = []
    for value in (False, True):
        worker.client.hset(schema.control_key("kernel-test"), probe, "1" if value else "0")
        worker.client.publish(schema.CONTROL_CHANNEL, "kernel-test")
        started = time.monotonic()
        while worker.state(probe)["actual"] is not value:
            assert time.monotonic() - started < TOGGLE_DEADLINE_S * 3, f"{probe} never became {value}"
            time.sleep(0.05)
        took.append(time.monotonic() - started)
    print(f"{probe} toggled off and on in {', '.join(f'{t:.2f} s' for t in took)}")
    assert max(took) <= TOGGLE_DEADLINE_S
