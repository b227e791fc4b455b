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
from probes.identity import ServiceNames, SocketTable
from probes.programs.socket_trace import SocketTrace
from probes.publisher import Publisher
from probes.records import RecordBuilder

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.05  # ring buffer drained on this timer: events never wake us
BUSY_POLL_EVENTS = 2000  # a poll this full means we are behind: poll again without sleeping
HEARTBEAT_INTERVAL_S = 5.0
HEALTHY_LOOP_AGE_S = 5.0  # /healthz fails when the main loop has not turned for this long
SOCKET_PROBES = (schema.PROBE_HTTP, schema.PROBE_TCP)  # both served by socket_trace.c


class Agent:
    def __init__(self, redis_url: str, host: str):
        self.host = host
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.sockets = SocketTable()
        self.builder = RecordBuilder(host, ServiceNames(self.sockets), self.sockets)
        self.publisher = Publisher(self.client)
        self.trace = SocketTrace(self._on_exchange, self._on_flow)
        self.desired = dict.fromkeys(schema.PROBES, True)
        self.probe_errors: dict[str, str | None] = dict.fromkeys(schema.PROBES)
        self.loop_at = time.monotonic()
        self.stopping = threading.Event()

    # -- events -> records -------------------------------------------------
    def _on_exchange(self, event) -> None:
        if not self.desired[schema.PROBE_HTTP]:
            return  # the program stays loaded for the TCP probe; per-probe kernel toggles: issue 6
        record = self.builder.exchange(event)
        if record is not None:
            self.publisher.add(record)

    def _on_flow(self, event) -> None:
        if not self.desired.get(schema.PROBE_TCP):
            return
        record = self.builder.flow(event)
        if record is not None:
            self.publisher.add(record)

    # -- control -------------------------------------------------------------
    def read_desired(self) -> None:
        """Desired probe state from `obs:control:<host>` ("1"/"0" per probe; absent means on)."""
        try:
            stored = self.client.hgetall(schema.control_key(self.host))
        except redis.RedisError:
            return  # keep what we have; the publisher reports Redis being down
        for probe in schema.PROBES:
            value = stored.get(probe.encode())
            self.desired[probe] = value != b"0"

    def apply_desired(self) -> None:
        want = any(self.desired[p] for p in SOCKET_PROBES)
        if want and not self.trace.attached:
            try:
                self.trace.attach()
                for probe in SOCKET_PROBES:
                    self.probe_errors[probe] = None
            except Exception as exc:  # BCC raises bare Exception on compile/attach failure
                log.error("could not attach socket_trace on %s: %s", self.host, exc)
                for probe in SOCKET_PROBES:
                    self.probe_errors[probe] = f"attach failed: {exc}"
        elif not want and self.trace.attached:
            self.trace.poll()
            self.trace.detach()
        self.apply_tls()

    def apply_tls(self) -> None:
        """Hook libssl when TLS is wanted; new libraries (new processes) are picked up each turn."""
        if not self.trace.attached:
            return
        if not self.desired[schema.PROBE_TLS]:
            self.trace.detach_tls()
            self.probe_errors[schema.PROBE_TLS] = None
            return
        failed = self.trace.attach_tls()
        if failed:
            self.probe_errors[schema.PROBE_TLS] = "; ".join(failed)[:500]
        elif not self.trace.tls_libraries:
            self.probe_errors[schema.PROBE_TLS] = "no running process maps libssl yet"
        else:
            self.probe_errors[schema.PROBE_TLS] = None

    def probe_states(self) -> dict:
        actual = {p: self.trace.attached for p in SOCKET_PROBES}
        actual[schema.PROBE_TLS] = bool(self.trace.tls_libraries)
        return {
            p: {
                "desired": self.desired[p],
                "actual": actual[p] and self.desired[p],
                "error": self.probe_errors[p],
            }
            for p in schema.PROBES
        }

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

    def heartbeat(self) -> None:
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
        last_heartbeat = 0.0
        while not self.stopping.is_set():
            started = time.monotonic()
            self.loop_at = started
            drained = self.trace.poll()
            self.publisher.flush()
            if started - last_heartbeat >= HEARTBEAT_INTERVAL_S:
                last_heartbeat = started
                self.read_desired()
                self.apply_desired()
                self.sockets.refresh(force=True)  # keeps own_ports current for new Redis sockets
                self.heartbeat()
            if drained < BUSY_POLL_EVENTS:
                self.stopping.wait(max(0.0, POLL_INTERVAL_S - (time.monotonic() - started)))
        self.shutdown()

    def shutdown(self) -> None:
        if self.trace.attached:
            self.trace.poll()
            self.trace.detach()
        self.heartbeat()
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
