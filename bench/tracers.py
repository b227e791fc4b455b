"""The system under test and the tracers compared on it.

bench_stack() starts the obsweb stack without a worker (tests/stack.py: Redis, SQLite, ingester,
daphne), the test HTTP backend, and two nginx (1 worker, static file, keep-alive): one plain, one
with TLS. tracer() attaches one configuration for the length of a `with`:

    off            nothing traces
    obsweb-all     our probe worker, every probe on (the default)
    obsweb-http    our probe worker with only the http and tls probes (HTTPS needs tls to see HTTP)
    bpftrace       bench/peers/syscalls.bt: the same syscall tracepoints, aggregating in the kernel
    tcplife        bcc's tcplife-bpfcc (sock:inet_sock_set_state), output to /dev/null
    tcptracer      bcc's tcptracer-bpfcc (kprobes on tcp connect/accept/close), output to /dev/null
    sslsniff       bcc's sslsniff-bpfcc (uprobes on SSL_read/SSL_write), output to /dev/null

Every process started here is stopped when its `with` exits, also on Ctrl-C or SIGTERM.
"""

import contextlib
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from common import BENCH, wait_attached

from probes import schema
from tests.helpers import stop
from tests.stack import Stack, http_backend, nginx_proxy, obsweb_stack

OFF = "off"
OBSWEB_ALL = "obsweb-all"
OBSWEB_HTTP = "obsweb-http"
BPFTRACE = "bpftrace"
TCPLIFE = "tcplife"
TCPTRACER = "tcptracer"
SSLSNIFF = "sslsniff"
OBSWEB = (OBSWEB_ALL, OBSWEB_HTTP)
PEERS = {
    BPFTRACE: ["bpftrace", str(BENCH / "peers" / "syscalls.bt")],
    TCPLIFE: ["tcplife-bpfcc"],
    TCPTRACER: ["tcptracer-bpfcc"],
    SSLSNIFF: ["sslsniff-bpfcc"],
}
TLS_ONLY = {SSLSNIFF}  # meaningless on plain HTTP: it hooks libssl only
# The worker of each obsweb configuration reports as its own host, whose desired probes the
# database holds (the ingester rewrites a host's control hash from the database when it registers).
HOSTS = {OBSWEB_ALL: "bench-all", OBSWEB_HTTP: "bench-http"}
HTTP_ONLY_PROBES = {probe: probe in (schema.PROBE_HTTP, schema.PROBE_TLS) for probe in schema.PROBES}
STATIC_PATH = "/static/index.html"


@dataclass
class Bench:
    stack: Stack
    http_port: int
    https_port: int

    def url(self, tls: bool) -> str:
        return f"https://127.0.0.1:{self.https_port}{STATIC_PATH}" if tls else self.http_url

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}{STATIC_PATH}"

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.stack.redis_url)

    def service(self, tls: bool = False) -> str:
        return f"nginx:{self.https_port if tls else self.http_port}"


@contextlib.contextmanager
def bench_stack():
    with (
        obsweb_stack(with_worker=False) as stack,
        http_backend("bench-backend", env=stack.env) as backend,
        nginx_proxy(backend) as http_port,
        nginx_proxy(backend, tls=True) as https_port,
    ):
        yield Bench(stack, http_port, https_port)


def start_worker(bench: Bench, config: str) -> subprocess.Popen:
    bench.stack.host_name = HOSTS[config]  # so the stack keeps this worker's metrics port
    return bench.stack.start_worker()


def stop_worker(bench: Bench, proc: subprocess.Popen) -> None:
    stop(proc, timeout=30)
    with contextlib.suppress(ValueError):
        bench.stack.procs.remove(proc)


def configure_http_only(bench: Bench, timeout: float = 60.0) -> None:
    """Register the obsweb-http host and switch every probe but http and tls off for it, through
    the API as an admin would; its worker reads that state whenever it starts."""
    host = HOSTS[OBSWEB_HTTP]
    proc = start_worker(bench, OBSWEB_HTTP)
    try:
        deadline = time.monotonic() + timeout
        while host not in {h["name"] for h in bench.stack.api("/api/v1/hosts")["hosts"]}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"host {host} did not register within {timeout:.0f} s")
            time.sleep(0.5)
        response = bench.stack.patch(f"/api/v1/hosts/{host}/probes", HTTP_ONLY_PROBES)
        response.raise_for_status()
        while True:
            actual = {p: s["actual"] for p, s in bench.stack.worker_health()["probes"].items()}
            if not any(actual[p] for p, wanted in HTTP_ONLY_PROBES.items() if not wanted):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {host} still runs {actual} after the probes were set")
            time.sleep(0.5)
    finally:
        stop_worker(bench, proc)


@contextlib.contextmanager
def paused(proc: subprocess.Popen):
    """SIGSTOP a process for the `with` (the ingester: it runs elsewhere in production)."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def tracer(bench: Bench, config: str, drop_records: bool = True):
    """Attach `config`; yields the tracing process (None for off). With `drop_records`, records the
    worker wrote to Redis are trimmed after it stops (the overhead runs keep the ingester paused)."""
    if config == OFF:
        yield None
        return
    if config in OBSWEB:
        proc = start_worker(bench, config)
        try:
            yield proc
        finally:
            stop_worker(bench, proc)
            if drop_records:
                bench.redis.xtrim(schema.RECORDS_STREAM, maxlen=0)
        return
    log = open(bench.stack.tmp / f"{config}.log", "wb")
    command = patched_sslsniff(bench.stack.tmp) if config == SSLSNIFF else PEERS[config]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, cwd=bench.stack.tmp)
    try:
        wait_attached(proc, config)
        yield proc
    finally:
        stop(proc, timeout=15.0, sig=signal.SIGINT)  # bcc tools and bpftrace detach and exit on Ctrl-C
        log.close()


def patched_sslsniff(tmp: Path) -> list[str]:
    """bcc 0.26's sslsniff does not compile against Linux >= 6.1 headers: its BPF text calls the
    kernel's min() macro, whose type check expands to a helper call. A copy with that one
    expression spelled out as a ternary runs; nothing else changes."""
    source = Path(shutil.which("sslsniff-bpfcc") or "/usr/sbin/sslsniff-bpfcc").read_text()
    fixed = source.replace(
        "min((size_t)MAX_BUF_SIZE, (size_t)len)",
        "((size_t)len < (size_t)MAX_BUF_SIZE ? (size_t)len : (size_t)MAX_BUF_SIZE)",
    )
    copy = tmp / "sslsniff-patched.py"
    copy.write_text(fixed)
    return ["/usr/bin/python3", str(copy)]  # Debian's python3, where python3-bpfcc lives


def peer_error(bench: Bench, config: str) -> str:
    """The last line a peer wrote to stderr (why it failed), if any."""
    log = bench.stack.tmp / f"{config}.log"
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1] if lines else "no output"


def kernel_counters(bench: Bench) -> dict[str, float]:
    """The running worker's exact kernel-side counters and record drops, from its /metrics."""
    text = bench.stack.worker_metrics()
    counters = {
        name: float(value)
        for name, value in re.findall(r'obsweb_agent_kernel_events_total\{counter="(\w+)"\} (\S+)', text)
    }
    for name in ("records_dropped", "records_published"):
        found = re.search(rf"^obsweb_agent_{name}_total (\S+)", text, re.M)
        counters[name] = float(found.group(1)) if found else 0.0
    return counters


# --- wrk -------------------------------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, seconds: float, connections: int, threads: int = 2) -> dict:
    """wrk at saturation: requests/s and its latency percentiles (closed loop: queueing included)."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))
    elapsed = re.search(r"requests in ([\d.]+)(ms|s|m)", out)
    took = float(elapsed.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[elapsed.group(2)]
    latency = {}
    for p in ("50", "99"):
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        latency[f"p{p}_ms"] = float(found.group(1)) * UNITS[found.group(2)] if found else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "rps": requests / took,
        **latency,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


# --- the ingester catching up ----------------------------------------------------------------------


def ingest_backlog(bench: Bench) -> int:
    """Stream entries the ingester has not acknowledged yet (delivered or not)."""
    client = bench.redis
    groups = client.xinfo_groups(schema.RECORDS_STREAM)
    group = next(
        (g for g in groups if g["name"] in (schema.INGEST_GROUP, schema.INGEST_GROUP.encode())), None
    )
    if group is None:
        return client.xlen(schema.RECORDS_STREAM)
    lag = group.get("lag")
    if lag is None:  # Redis could not tell (entries deleted): count what is after the group's cursor
        lag = len(client.xrange(schema.RECORDS_STREAM, min=f"({group['last-delivered-id'].decode()}"))
    return lag + group["pending"]


def wait_ingested(bench: Bench, service: str, expected: int, timeout: float = 120.0, still_s: float = 10.0):
    """Wait until `service`'s count in the rollups reaches `expected` with every stream entry
    acknowledged, or has not moved for `still_s` (some were lost); answers (count, seconds
    waited). A worker behind its ring buffer keeps publishing for seconds after the load stops,
    so a short quiet spell does not mean it is done."""
    started = time.monotonic()
    last, since = None, started
    while True:
        now = time.monotonic()
        counted = requests_counted(bench, service)
        if counted >= expected and ingest_backlog(bench) == 0:
            return counted, now - started
        if counted != last:
            last, since = counted, now
        elif now - since >= still_s and ingest_backlog(bench) == 0:
            return counted, since - started
        if now - started > timeout:
            raise TimeoutError(f"the rollups of {service} still moved after {timeout:.0f} s")
        time.sleep(0.5)


def requests_counted(bench: Bench, service: str) -> int:
    """What the rollups hold for `service` over the last hour (through the API)."""
    services = bench.stack.api("/api/v1/services", since="-1h")["services"]
    return next((s["requests"] for s in services if s["name"] == service), 0)
