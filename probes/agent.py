"""The probe worker's lifecycle: attach, drain, publish, heartbeat, obey the control hash, detach."""

import json
import logging
import os
import platform
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from probes import AGENT_VERSION, schema
from probes.cost import CostMeter, Costs, most_expensive
from probes.identity import ServiceNames, SocketTable
from probes.programs.block_io import BlockIO
from probes.programs.bpf_stats import enable_run_time_stats
from probes.programs.sched import Sched
from probes.programs.socket_trace import (
    PROTO_HTTP,
    PROTO_KAFKA,
    PROTO_MONGODB,
    PROTO_MYSQL,
    PROTO_POSTGRES,
    PROTO_REDIS,
    SLOT_FLOWS,
    SLOT_TLS,
    SocketTrace,
)
from probes.programs.tcp_stats import TcpStats
from probes.publisher import DEFAULT_BUFFER_LIMIT, Publisher
from probes.records import RecordBuilder
from probes.redact import Policy
from probes.resources import RESOURCE_INTERVAL_S, TAKE_INTERVAL_S, ConnectionBytes, ResourceCollector
from probes.scope import CgroupScope

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.05  # ring buffer drained on this timer: events never wake us
BUSY_POLL_EVENTS = 2000  # a poll this full means we are behind: poll again without sleeping
HEARTBEAT_INTERVAL_S = 2.0  # the web marks a host stale after 5 s and down after 10 s of silence
TLS_RESCAN_INTERVAL_S = 5.0  # new processes mapping libssl are hooked this often
HEALTHY_LOOP_AGE_S = 5.0  # /healthz fails when the main loop has not turned for this long
CONTROL_RETRY_S = 1.0
PROGRAM_RETRY_S = 30.0  # a program that failed to compile or attach is tried again after this long
# The kernel switch (bpf/socket_trace.c `switches` slot) of each probe the socket program serves.
SOCKET_PROBE_SLOTS = {
    schema.PROBE_HTTP: PROTO_HTTP,
    schema.PROBE_POSTGRES: PROTO_POSTGRES,
    schema.PROBE_MYSQL: PROTO_MYSQL,
    schema.PROBE_REDIS: PROTO_REDIS,
    schema.PROBE_MONGODB: PROTO_MONGODB,
    schema.PROBE_KAFKA: PROTO_KAFKA,
    schema.PROBE_TCP: SLOT_FLOWS,
}
EVENT_SLOTS = SOCKET_PROBE_SLOTS | {schema.PROBE_TLS: SLOT_TLS}  # where each probe's events are counted


class Agent:
    def __init__(
        self,
        redis_url: str,
        host: str,
        scope: CgroupScope | None = None,
        buffer_records: int = DEFAULT_BUFFER_LIMIT,
    ):
        self.host = host
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.sockets = SocketTable()
        self.builder = RecordBuilder(host, ServiceNames(self.sockets), self.sockets)
        self.publisher = Publisher(self.client, buffer_records)
        self.trace = SocketTrace(self._on_exchange, self._on_flow, self.builder.names.process_changed, scope)
        # Programs serving one probe each, loaded on first use and then attached and detached
        # with it (the tcp probe is the socket program's flows plus tcp_stats).
        self.sched = Sched()
        self.block_io = BlockIO()
        self.tcp_stats = TcpStats(self._on_health, scope)
        self.programs = {
            schema.PROBE_CPU: self.sched,
            schema.PROBE_DISK: self.block_io,
            schema.PROBE_TCP: self.tcp_stats,
        }
        self.program_errors: dict[str, str | None] = dict.fromkeys(self.programs)
        self.program_failed_at: dict[str, float] = {}
        self.scope = scope
        self.resources = ResourceCollector(host, self.builder.names, scope)
        self.connection_bytes = ConnectionBytes()
        self.net_baseline_needed = True  # the connection map's bytes so far are not this interval's
        self.interval_started = time.monotonic()
        self.desired = dict.fromkeys(schema.PROBES, True)
        self.cpu_budget: float | None = None
        self.probe_errors: dict[str, str | None] = dict.fromkeys(schema.PROBES)
        self.control_error: str | None = None  # a control hash field that could not be used
        self.cost = CostMeter()
        self.costs: Costs | None = None
        self.stats_fd = enable_run_time_stats()
        self.control_changed = threading.Event()
        self.loop_at = time.monotonic()
        self.stopping = threading.Event()
        self.resource_records = 0

    # -- events -> records -------------------------------------------------
    # Probes switched off never reach here: the kernel opens no exchange for them.
    def _on_exchange(self, event) -> None:
        record = self.builder.exchange(event)
        if record is not None:
            self.publisher.add(record)

    def _on_flow(self, event) -> None:
        if self.collecting_resources():  # the connection's last bytes, which no map read will see
            key = (event.pid << 32) | event.fd
            sent, received = self.connection_bytes.closed(
                key, event.opened_ns, event.bytes_sent, event.bytes_recv
            )
            self.resources.add_net(event.pid, sent, received)
        record = self.builder.flow(event)
        if record is not None:
            self.publisher.add(record)

    def _on_health(self, event) -> None:
        record = self.builder.health(event)
        if record is None:
            return
        if self.scope is not None and not event.tgid and not self.scope.contains(record[schema.PID]):
            return  # accepted by another host's process on this machine (connects are scoped in the kernel)
        self.publisher.add(record)

    # -- control -------------------------------------------------------------
    def read_desired(self) -> None:
        """Desired state from `obs:control:<host>` (schema.control_key): probes, CPU budget, redaction."""
        try:
            stored = self.client.hgetall(schema.control_key(self.host))
        except redis.RedisError:
            return  # keep what we have; the publisher reports Redis being down
        desired = {probe: stored.get(probe.encode()) != b"0" for probe in schema.PROBES}
        budget, budget_error = _budget(stored.get(schema.CONTROL_CPU_BUDGET.encode()))
        policy, policy_error = Policy.from_control(stored.get(schema.CONTROL_REDACTION.encode()))
        self.builder.set_redaction(policy)  # a no-op when unchanged
        error = "; ".join(e for e in (budget_error, policy_error) if e) or None
        if error and error != self.control_error:
            log.warning("control hash for %s: %s", self.host, error)
        self.control_error = error
        if desired != self.desired or budget != self.cpu_budget:
            self.cost.throttled.clear()  # the operator acted: their new state holds until re-measured
            self.cost.over_budget_intervals = 0
        self.desired, self.cpu_budget = desired, budget

    def running(self, probe: str) -> bool:
        return self.desired[probe] and probe not in self.cost.throttled

    def apply_desired(self, rescan_tls: bool = True) -> None:
        """Attach what is wanted and switch each probe in the kernel; the TLS probe also needs the
        socket program (the uprobes hand plaintext to its pairing).

        The single-probe programs come first: compiling them takes seconds, and while they compile
        the main loop drains nothing, so the socket program (whose attached state tells the world
        the worker is tracing) is attached last, just before the loop drains it."""
        self.apply_programs()
        want = any(self.running(p) for p in schema.PROBES)
        if want and not self.trace.attached:
            try:
                self.trace.attach()
                for probe in SOCKET_PROBE_SLOTS:
                    self.probe_errors[probe] = None
            except Exception as exc:  # BCC raises bare Exception on compile/attach failure
                log.error("could not attach socket_trace on %s: %s", self.host, exc)
                for probe in SOCKET_PROBE_SLOTS:
                    self.probe_errors[probe] = f"attach failed: {exc}"
        elif not want and self.trace.attached:
            self.trace.poll()
            self.trace.detach()
        if self.trace.attached:
            self.trace.set_switches({slot: self.running(p) for p, slot in SOCKET_PROBE_SLOTS.items()})
        self.apply_tls(rescan_tls)

    def apply_programs(self) -> None:
        """Attach each single-probe program while its probe runs; detach it (after taking what it
        holds) when it stops. A failure is reported as the probe's error and retried later."""
        for probe, program in self.programs.items():
            want = self.running(probe)
            if want and not program.attached:
                measuring = self.collecting_resources()
                failed_at = self.program_failed_at.get(probe)
                if failed_at is not None and time.monotonic() - failed_at < PROGRAM_RETRY_S:
                    continue
                try:
                    program.attach()
                    if not measuring and self.collecting_resources():
                        self.interval_started = time.monotonic()  # nothing was measured before this
                    self.program_errors[probe] = None
                    self.program_failed_at.pop(probe, None)
                except Exception as exc:  # BCC raises bare Exception on compile/attach failure
                    log.error(
                        "could not attach %s for probe %s on %s: %s", program.source, probe, self.host, exc
                    )
                    self.program_errors[probe] = f"{program.source}: attach failed: {exc}"[:500]
                    self.program_failed_at[probe] = time.monotonic()
            elif not want and program.attached:
                program.detach()
                if program is self.tcp_stats:
                    self.tcp_stats.poll()  # events queued before the detach still become records
                else:
                    self.take_resources()
            if not want:
                self.program_errors[probe] = None

    def apply_tls(self, rescan: bool) -> None:
        """Hook libssl while TLS is wanted; `rescan` looks for processes started since."""
        if not self.trace.attached:
            return
        if not self.running(schema.PROBE_TLS):
            self.trace.detach_tls()
            self.probe_errors[schema.PROBE_TLS] = None
            return
        if not rescan and self.trace.tls_libraries:
            return
        failed = self.trace.attach_tls()
        if failed:
            self.probe_errors[schema.PROBE_TLS] = "; ".join(failed)[:500]
        elif not self.trace.tls_libraries:
            self.probe_errors[schema.PROBE_TLS] = "no running process maps libssl yet"
        else:
            self.probe_errors[schema.PROBE_TLS] = None

    def listen_for_control(self) -> None:
        """Wake the main loop when the web app publishes a change for this host (thread)."""
        wanted = {self.host.encode(), schema.CONTROL_ALL_HOSTS.encode()}
        while not self.stopping.is_set():
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(schema.CONTROL_CHANNEL)
                self.control_changed.set()  # (re)subscribed: a change may have been missed meanwhile
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("data") in wanted:
                        self.control_changed.set()
            except redis.RedisError as exc:
                log.debug("control channel unavailable (%s); retrying", exc)
                self.stopping.wait(CONTROL_RETRY_S)

    def probe_states(self) -> dict:
        switches = self.trace.switches()
        actual = {p: self.trace.attached and switches[slot] for p, slot in SOCKET_PROBE_SLOTS.items()}
        actual[schema.PROBE_TLS] = bool(self.trace.tls_libraries)
        actual[schema.PROBE_CPU] = self.sched.attached
        actual[schema.PROBE_DISK] = self.block_io.attached
        actual[schema.PROBE_TCP] = actual[schema.PROBE_TCP] and self.tcp_stats.attached
        costs = self.costs.probes if self.costs else {}
        return {
            p: {
                "desired": self.desired[p],
                "actual": actual[p],
                "error": self.probe_errors[p] or self.program_errors.get(p),
                "throttled": self.cost.throttled.get(p),
                "events_per_s": costs[p].events_per_s if p in costs else 0.0,
                "cpu_percent": costs[p].cpu_percent if p in costs else None,
            }
            for p in schema.PROBES
        }

    # -- cost ----------------------------------------------------------------------
    def measure_costs(self) -> None:
        """CPU and events per probe over the last interval; over budget, switch the priciest off."""
        times = os.times()
        by_slot = self.trace.events_by_slot()
        events = {probe: by_slot[slot] for probe, slot in EVENT_SLOTS.items()}
        events[schema.PROBE_TCP] += self.tcp_stats.counters()["tcp_health_events"]
        program_ns = None
        if self.stats_fd is not None:
            program_ns = self.trace.program_run_time_ns() or {"socket": 0, "tls": 0}
            for probe, program in self.programs.items():
                program_ns[probe] = program_ns.get(probe, 0) + (program.run_time_ns() or 0)
        self.costs = self.cost.update(
            process_cpu_ns=int((times.user + times.system) * 1e9),
            program_ns=program_ns,
            events=events,
            tls_probe=schema.PROBE_TLS,
            kernel_events={
                schema.PROBE_CPU: self.sched.counters()["switches"],
                schema.PROBE_DISK: self.block_io.counters()["disk_ios"],
            },
        )
        if self.costs is not None and self.cost.over_budget(self.costs, self.cpu_budget):
            self.throttle()

    def throttle(self) -> None:
        running = [p for p in schema.PROBES if self.running(p)]
        probe = most_expensive(self.costs, running)
        if probe is None:
            return
        at = time.strftime("%H:%M:%S", time.gmtime())
        cost = self.costs.probes[probe].cpu_percent
        reason = (
            f"switched off at {at} UTC: the worker used {self.costs.cpu_percent:.1f} % CPU, over its "
            f"budget of {self.cpu_budget:g} %; {probe} cost the most ({cost:.1f} %)"
        )
        log.warning("%s: %s", probe, reason)
        self.cost.throttled[probe] = reason
        self.cost.over_budget_intervals = 0
        self.apply_desired(rescan_tls=False)

    # -- heartbeat -------------------------------------------------------------
    # -- resources -----------------------------------------------------------------
    def collecting_resources(self) -> bool:
        return self.sched.attached or self.block_io.attached

    def take_resources(self) -> None:
        """Move the kernel's per-process totals into this interval (every TAKE_INTERVAL_S)."""
        self.resources.add_cpu(self.sched.take())
        self.resources.add_disk(self.block_io.take())

    def emit_resources(self, now: float) -> None:
        """The interval's resource records, one per service and one for the host."""
        self.take_resources()
        measured = tuple(
            name
            for name, on in (
                ("cpu", self.sched.attached),
                ("disk", self.block_io.attached),
                ("net", self.trace.attached),
            )
            if on
        )
        if "net" in measured and self.collecting_resources():
            moved = self.connection_bytes.update(self.trace.connection_bytes())
            if self.net_baseline_needed:
                moved, self.net_baseline_needed = {}, False
            for tgid, (sent, received) in moved.items():
                self.resources.add_net(tgid, sent, received)
        else:
            self.net_baseline_needed = True
        interval_ns = int((now - self.interval_started) * 1e9)
        self.interval_started = now
        records = self.resources.records(time.time_ns(), interval_ns, measured)
        if self.collecting_resources():
            for record in records:
                self.publisher.add(record)
            self.resource_records += len(records)

    def stats(self) -> dict:
        kernel = self.trace.counters()
        for program in self.programs.values():
            kernel |= program.counters()
        return {
            "events_seen": kernel["exchanges"] + kernel["flows"] + kernel["tcp_health_events"],
            "events_dropped": kernel["events_lost"] + kernel["flows_lost"] + kernel["tcp_health_events_lost"],
            "events_skipped": self.builder.skipped
            + self.trace.malformed_events
            + self.trace.callback_errors
            + self.tcp_stats.malformed_events
            + self.tcp_stats.callback_errors,
            "records_dropped": self.publisher.dropped,
            "records_published": self.publisher.published,
            "records_buffered": self.publisher.buffered,
            "kernel": kernel,
        }

    def heartbeat(self, stopping: bool = False) -> None:
        stats = self.stats()
        record = {
            schema.KIND: schema.KIND_AGENT,
            schema.HOST: self.host,
            schema.TS: time.time_ns(),
            schema.AGENT_VERSION: AGENT_VERSION,
            schema.AGENT_KERNEL: platform.release(),
            schema.AGENT_PROBES: self.probe_states(),
            schema.AGENT_EVENTS_SEEN: stats["events_seen"],
            schema.AGENT_EVENTS_DROPPED: stats["events_dropped"],
            schema.AGENT_EVENTS_SKIPPED: stats["events_skipped"],
            schema.AGENT_RECORDS_DROPPED: stats["records_dropped"],
            schema.AGENT_LAG_S: self.publisher.lag_s(),
            schema.AGENT_CPU_PERCENT: self.costs.cpu_percent if self.costs else None,
            schema.AGENT_CPU_BUDGET: self.cpu_budget,
            schema.AGENT_STOPPING: stopping,
            schema.AGENT_CONTROL_ERROR: self.control_error,
        }
        self.publisher.add(record)
        try:
            self.client.set(schema.agent_key(self.host), json.dumps(record), ex=schema.AGENT_KEY_TTL_S)
        except redis.RedisError:
            pass  # the record itself waits in the publisher's buffer

    # -- main loop ---------------------------------------------------------------
    def run(self) -> None:
        self.read_desired()
        self.sockets.refresh(force=True)
        self.apply_desired()
        threading.Thread(target=self.listen_for_control, name="control", daemon=True).start()
        last_heartbeat = last_tls_scan = last_take = time.monotonic()
        while not self.stopping.is_set():
            started = time.monotonic()
            self.loop_at = started
            drained = self.trace.poll()
            self.tcp_stats.poll()
            if started - self.interval_started >= RESOURCE_INTERVAL_S:
                last_take = started
                self.emit_resources(started)
            elif started - last_take >= TAKE_INTERVAL_S:
                last_take = started
                self.take_resources()
            self.publisher.flush()
            if self.control_changed.is_set():  # a change published for this host: apply it now
                self.control_changed.clear()
                self.read_desired()
                self.apply_desired(rescan_tls=False)
                self.heartbeat()
                self.publisher.flush(force=True)
            if started - last_heartbeat >= HEARTBEAT_INTERVAL_S:
                last_heartbeat = started
                rescan = started - last_tls_scan >= TLS_RESCAN_INTERVAL_S
                last_tls_scan = started if rescan else last_tls_scan
                self.read_desired()  # in case a published change was missed
                self.apply_desired(rescan_tls=rescan)
                self.sockets.refresh(force=True)  # keeps own_ports current for new Redis sockets
                self.measure_costs()
                self.heartbeat()
            if drained < BUSY_POLL_EVENTS:
                self.stopping.wait(max(0.0, POLL_INTERVAL_S - (time.monotonic() - started)))
        self.shutdown()

    def shutdown(self) -> None:
        if self.trace.attached:
            self.trace.poll()
            self.trace.detach()
        self.tcp_stats.poll()
        for program in self.programs.values():
            program.unload()
        self.heartbeat(stopping=True)
        self.publisher.flush(force=True)
        log.info(
            "stopped; %d records published, %d dropped", self.publisher.published, self.publisher.dropped
        )

    def healthy(self) -> bool:
        return time.monotonic() - self.loop_at < HEALTHY_LOOP_AGE_S

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())


class AgentCollector:
    """Prometheus view of the agent's own counters (not of the traffic it sees)."""

    def __init__(self, agent: Agent):
        self.agent = agent

    def collect(self):
        stats = self.agent.stats()
        kernel = CounterMetricFamily(
            "obsweb_agent_kernel_events", "Exact kernel-side counters", labels=["counter"]
        )
        for name, value in stats["kernel"].items():
            kernel.add_metric([name], value)
        yield kernel
        events = CounterMetricFamily(
            "obsweb_agent_probe_events", "Kernel events of the cpu, disk and tcp programs", labels=["probe"]
        )
        dropped = CounterMetricFamily(
            "obsweb_agent_probe_events_dropped",
            "Kernel events of the cpu, disk and tcp programs not counted in full or lost before user space",
            labels=["probe"],
        )
        k = stats["kernel"]
        for probe, seen, lost in (
            (schema.PROBE_CPU, k["switches"], k["cpu_totals_full"]),
            (schema.PROBE_DISK, k["disk_ios"], k["disk_unmatched"] + k["disk_totals_full"]),
            (schema.PROBE_TCP, k["tcp_health_events"], k["tcp_health_events_lost"]),
        ):
            events.add_metric([probe], seen)
            dropped.add_metric([probe], lost)
        yield events
        yield dropped
        yield CounterMetricFamily(
            "obsweb_agent_resource_records", "Resource records produced", value=self.agent.resource_records
        )
        for key, help_text in (
            ("events_skipped", "Kernel events that could not be turned into records"),
            ("records_published", "Records written to the Redis stream"),
            ("records_dropped", "Records dropped because Redis was away too long"),
        ):
            yield CounterMetricFamily(f"obsweb_agent_{key}", help_text, value=stats[key])
        yield GaugeMetricFamily(
            "obsweb_agent_records_buffered", "Records waiting for Redis", value=stats["records_buffered"]
        )
        yield GaugeMetricFamily(
            "obsweb_agent_up", "1 while the main loop turns", value=int(self.agent.healthy())
        )


def serve_metrics(agent: Agent, port: int) -> None:
    REGISTRY.register(AgentCollector(agent))
    start_http_server(port, addr=os.environ.get("OBSWEB_METRICS_ADDR", "0.0.0.0"))


def serve_health(agent: Agent, port: int) -> ThreadingHTTPServer:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/healthz":
                self.send_error(404)
                return
            ok = agent.healthy()
            body = json.dumps({"status": "ok" if ok else "stalled", "probes": agent.probe_states()}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # health checks every few seconds would drown the real logs

    server = ThreadingHTTPServer((os.environ.get("OBSWEB_HEALTH_ADDR", "0.0.0.0"), port), Health)
    threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()
    return server


def _budget(raw: bytes | None) -> tuple[float | None, str | None]:
    """The CPU budget from the control hash: (percent or None, error message or None)."""
    if not raw:
        return None, None
    try:
        value = float(raw)
    except ValueError:
        return None, f"{schema.CONTROL_CPU_BUDGET} {raw[:40]!r} is not a number; no budget applied"
    if not 0 < value <= 100 * (os.cpu_count() or 1):
        return None, f"{schema.CONTROL_CPU_BUDGET} {value:g} is out of range; no budget applied"
    return value, None
