"""Helpers for the incident tests: rules, host heartbeats, TCP traffic, and a real loopback webhook
receiver."""

import contextlib
import importlib
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.utils import timezone

from obsweb.fleet.models import DroppedEvents, Host
from obsweb.incidents.models import AlertRule
from obsweb.telemetry.aggregate import apply_records
from tests import factories

ERROR_RULE = "Error rate above 5 %"  # installed by migration 0002_default_rules
P99_RULE = "p99 latency above 5 s"


def ensure_default_rules() -> None:
    """The rules migration 0002 installs: a transactional test run before this one (a websocket
    test) flushes every table, migrated rows included."""
    migration = importlib.import_module("obsweb.incidents.migrations.0002_default_rules")
    for rule in migration.DEFAULT_RULES:
        AlertRule.objects.get_or_create(name=rule["name"], defaults=rule)


def tcp_traffic(
    connections: int,
    retransmits: int,
    *,
    seconds_ago: float = 5,
    caller: str = "nginx",
    callee: str | None = "shop-api",
    **attrs,
) -> None:
    """`caller` closed `connections` connections to `callee` `seconds_ago`, and one of them
    retransmitted `retransmits` times: through the real ingest path into TcpHealth. `attrs` go
    into every record (`callee` None and a server.address: an external peer)."""
    ends = {"service.name": caller, "peer.service": callee, "ts": factories.now_ns(seconds_ago)} | attrs
    records = [factories.flow(**ends) for _ in range(connections)]
    if retransmits:
        records.append(factories.health(**ends | {"flow.retransmits": retransmits}))
    apply_records(records)


# Broadcasts go to an in-process channel layer: no Redis needed for what they announce.
IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def only_rule(**fields) -> AlertRule:
    """The one enabled rule: every other rule (the defaults too) is disabled."""
    AlertRule.objects.update(enabled=False)
    fields.setdefault("name", f"test {fields['metric']}")
    return AlertRule.objects.create(**fields)


def heartbeat(name: str, seconds_ago: float, *, stopped: bool = False, dropped_recently: int = 0) -> Host:
    """A host whose agent last reported `seconds_ago`, and dropped `dropped_recently` events just
    before that."""
    at = timezone.now() - timedelta(seconds=seconds_ago)
    host, _ = Host.objects.update_or_create(name=name, defaults={"last_seen": at, "stopped": stopped})
    if dropped_recently:
        DroppedEvents.objects.create(
            host=host, after=at - timedelta(seconds=2), at=at, count=dropped_recently
        )
    return host


class Receiver(BaseHTTPRequestHandler):
    """Answers each POST with the next status of `server.statuses` (the last one repeats)."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        with server.lock:
            server.received.append({"headers": dict(self.headers), "body": json.loads(body)})
            status = server.statuses[min(len(server.received), len(server.statuses)) - 1]
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def webhook_receiver(*statuses: int):
    """A real HTTP server on 127.0.0.1 answering POSTs with `statuses` in turn; yields the server
    (its .url, and .received: every request's headers and JSON body)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.statuses, server.received, server.lock = list(statuses) or [200], [], threading.Lock()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def steady_minute() -> None:
    """Wait out the last seconds of a minute, so what a test seeds "n minutes ago" and what the
    rules read as "n minutes ago" are the same minute."""
    second = timezone.now().second + timezone.now().microsecond / 1e6
    if second > 57:
        time.sleep(60.2 - second)
