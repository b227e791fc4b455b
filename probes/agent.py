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
from probes.programs.bpf_stats import enable_run_time_stats
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
from probes.publisher import Publisher
from probes.records import RecordBuilder
from probes.redact import Policy
from probes.scope import CgroupScope

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.05  # ring buffer drained on this timer: events never wake us
BUSY_POLL_EVENTS = 2000  # a poll this full means we are behind: poll again without sleeping
HEARTBEAT_INTERVAL_S = 2.0  # the web marks a host stale after 5 s and down after 10 s of silence
TLS_RESCAN_INTERVAL_S = 5.0  # new processes mapping libssl are hooked this often
HEALTHY_LOOP_AGE_S = 5.0  # /healthz fails when the main loop has not turned for this long
CONTROL_RETRY_S = 1.0
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
    def __init__(self, redis_url: str, host: str, scope: CgroupScope | None = None):
        self.host = host
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.sockets = SocketTable()
        self.builder = RecordBuilder(host, ServiceNames(self.sockets), self.sockets)
        self.publisher = Publisher(self.client)
        self.trace = SocketTrace(self._on_exchange, self._on_flow, scope)
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

    # -- events -> records -------------------------------------------------
    # Probes switched off never reach here: the kernel opens no exchange for them.
    def _on_exchange(self, event) -> None:
        record = self.builder.exchange(event)
        if record is not None:
            self.publisher.add(record)

    def _on_flow(self, event) -> None:
        record = self.builder.flow(event)
        if record is not None:
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
        socket program (the uprobes hand plaintext to its pairing)."""
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
        costs = self.costs.probes if self.costs else {}
        return {
            p: {
                "desired": self.desired[p],
                "actual": actual[p],
                "error": self.probe_errors[p],
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
        self.costs = self.cost.update(
            process_cpu_ns=int((times.user + times.system) * 1e9),
            program_ns=self.trace.program_run_time_ns() if self.stats_fd is not None else None,
            events={probe: by_slot[slot] for probe, slot in EVENT_SLOTS.items()},
            tls_probe=schema.PROBE_TLS,
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
    def stats(self) -> dict:
        kernel = self.trace.counters()
        return {
            "events_seen": kernel["exchanges"] + kernel["flows"],
            "events_dropped": kernel["events_lost"] + kernel["flows_lost"],
            "events_skipped": self.builder.skipped + self.trace.malformed_events + self.trace.callback_errors,
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
        last_heartbeat = last_tls_scan = time.monotonic()
        while not self.stopping.is_set():
            started = time.monotonic()
            self.loop_at = started
            drained = self.trace.poll()
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
