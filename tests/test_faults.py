"""Faults on the real stack with the real kernel: Redis stopped while traffic flows, and the
probe worker killed. (The ingester killed with -9 mid-batch is tests/test_ingest_scale_out.py;
the web process restarted under a browser is tests/test_web_restart.py.)"""

import http.client
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.helpers import redis_command, stop, wait_for_port
from tests.stack import http_backend, obsweb_stack
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf

BACKEND = "faults-backend"
OUTAGE_S = 30
ROUND = 25  # requests per round, on one keep-alive connection
# Records the worker may hold while Redis is away: a few rounds' worth, so the outage fills it.
BUFFER_RECORDS = 500
TRACEFS = Path("/sys/kernel/tracing")


@pytest.fixture(scope="module")
def stack():
    with obsweb_stack(with_worker=False) as stack:
        stack.start_worker(extra_args=("--buffer-records", str(BUFFER_RECORDS)))
        yield stack


@pytest.fixture(scope="module")
def restarted_redis():
    """Redis servers a test started again in place of the stack's; stopped after the module."""
    procs = []
    yield procs
    for proc in procs:
        stop(proc)


@pytest.fixture(scope="module")
def backend(stack):
    with http_backend(BACKEND, env=stack.env) as port:
        yield port


def send_round(port: int, n: int = ROUND) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(n):
        conn.request("GET", f"/users/{i}")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    conn.close()


def counted(stack) -> int:
    return sum(e["requests"] for e in stack.endpoints(BACKEND))


def worker_gauge(stack, name: str) -> float:
    match = re.search(rf"^{name}(?:_total)? (\S+)$", stack.worker_metrics(), re.M)
    return float(match.group(1))


def rss_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024


def test_redis_away_30_s_buffers_up_to_the_cap_then_counts_drops_and_loses_nothing_before_it(
    stack, backend, restarted_redis
):
    send_round(backend, 5)
    wait_until(lambda: counted(stack) == 5, "the first 5 requests", stack)
    client = redis.Redis.from_url(stack.redis_url)
    directory = client.config_get("dir")["dir"]
    port = client.connection_pool.connection_kwargs["port"]
    worker = stack.named["worker"]
    # SHUTDOWN SAVE writes the stream and its consumer group to disk, as a production Redis
    # with persistence would keep them; the restarted server loads them back.
    client.shutdown(save=True)

    stopped_at = time.monotonic()
    sent = sent_before_cap = 0
    rss_at_cap = None
    while time.monotonic() - stopped_at < OUTAGE_S:
        send_round(backend)
        sent += ROUND
        time.sleep(0.6)  # the worker drains its ring buffer every 50 ms and seals a batch at 200 ms
        if worker_gauge(stack, "obsweb_agent_records_dropped") == 0:
            sent_before_cap = sent  # every record so far is in the buffer
        elif rss_at_cap is None:
            rss_at_cap = rss_of(worker.pid)
    buffered = worker_gauge(stack, "obsweb_agent_records_buffered")
    dropped = worker_gauge(stack, "obsweb_agent_records_dropped")
    rss_at_end = rss_of(worker.pid)

    restarted_redis.append(subprocess.Popen(redis_command(port, directory), stdout=subprocess.DEVNULL))
    wait_for_port(port)
    outage_s = time.monotonic() - stopped_at
    # Everything sent before the cap, and none of what came after the round that reached it.
    got = wait_until(  # the ingester retries Redis with a backoff of up to 30 s
        lambda: (n := counted(stack)) >= 5 + sent_before_cap and n, "the buffered requests", stack, timeout=60
    )
    time.sleep(3)  # anything left in flight would land now
    got = counted(stack)
    send_round(backend, 10)
    wait_until(lambda: counted(stack) == got + 10, "10 requests sent after Redis came back", stack)
    host = stack.api(f"/api/v1/hosts/{stack.host_name}")
    warnings = stack.viewer_session().get(f"{stack.web}/", timeout=60).text

    assert rss_at_cap is not None, f"the buffer never filled: {sent} requests sent, {buffered} records held"
    print(
        f"outage {outage_s:.1f} s: sent {sent}, {sent_before_cap} before the cap of {BUFFER_RECORDS} "
        f"records; counted {got - 5}; worker buffered {buffered:.0f}, dropped {dropped:.0f}; "
        f"worker RSS {rss_at_cap / 2**20:.1f} MiB at the cap, "
        f"{rss_at_end / 2**20:.1f} MiB at the end"
    )
    assert 0 < sent_before_cap < sent, "the outage should fill the buffer part way through"
    assert sent_before_cap <= got - 5 < sent_before_cap + ROUND
    assert buffered <= BUFFER_RECORDS and dropped > 0
    assert rss_at_end - rss_at_cap < 20 * 2**20, "the worker kept growing past its buffer cap"
    assert host["dropped"] >= dropped
    assert f"agent on {stack.host_name} dropped" in warnings
    for name in ("ingest", "web", "worker"):
        assert stack.named[name].poll() is None, f"{name} died:\n{stack.log(name)[-3000:]}"
    assert "Traceback" not in stack.log("worker"), stack.log("worker")[-3000:]


def prog_ids_of(pid: int) -> set[int]:
    """The BPF programs process `pid` holds open (from its file descriptors' fdinfo)."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue  # closed meanwhile
        ids.update(int(m) for m in re.findall(r"^prog_id:\s*(\d+)", text, re.M))
    return ids


def loaded_prog_ids() -> set[int]:
    listing = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return {prog["id"] for prog in json.loads(listing.stdout)}


def probe_events() -> str:
    """uprobes and kprobes registered through tracefs (BCC falls back to these files when it cannot
    make a perf event; entries there outlive the process that wrote them). This kernel has no
    kprobe_events at all."""
    files = [TRACEFS / name for name in ("uprobe_events", "kprobe_events")]
    return "".join(path.read_text() for path in files if path.exists())


def test_a_killed_worker_leaves_no_bpf_program_behind_and_restarts_clean(stack, backend):
    events_before = probe_events()
    worker = stack.named["worker"]
    ours = prog_ids_of(worker.pid)
    assert len(ours) >= 10, f"the worker holds only {sorted(ours)}"
    assert ours <= loaded_prog_ids()

    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    deadline = time.monotonic() + 10  # the kernel frees programs after an RCU grace period
    while (left := ours & loaded_prog_ids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"programs {sorted(left)} outlived the killed worker"
    assert probe_events() == events_before

    restarted = stack.start_worker(extra_args=("--buffer-records", str(BUFFER_RECORDS)))
    probes = stack.worker_health()["probes"]
    assert all(state["actual"] for state in probes.values() if state["desired"]), probes
    assert not any(state["error"] for state in probes.values()), probes
    assert prog_ids_of(restarted.pid).isdisjoint(ours)
    before = counted(stack)
    send_round(backend, 10)
    wait_until(lambda: counted(stack) == before + 10, "10 requests after the restart", stack)
