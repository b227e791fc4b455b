"""`manage.py ingest`: the loop around obsweb.telemetry.ingest.Ingester.

Reads the records stream in the ingest consumer group until SIGTERM or SIGINT, which let the
current batch finish; rides out Redis and database outages with a capped backoff; reclaims
entries of dead consumers at start and every INGEST_RECLAIM_INTERVAL_S; logs its counters every 30 s.
"""

import logging
import os
import signal
import socket
import threading
import time

import redis
from django import db
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from obsweb.redis_client import redis_client
from obsweb.telemetry.ingest import DatabaseUnavailable, Ingester

log = logging.getLogger("obsweb.telemetry.ingest")

BLOCK_MS = 1000
STATS_EVERY_S = 30
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# Any of these turns on OTLP export (obsweb/telemetry/otel_export.py reads the details).
OTLP_ENDPOINT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def otlp_from_environment():
    """The OTLP export the environment asks for, or None; without an endpoint set the
    OpenTelemetry SDK (0.3 s of imports) is not even loaded."""
    if not any(os.environ.get(name) for name in OTLP_ENDPOINT_VARIABLES):
        return None
    from obsweb.telemetry import otel_export

    return otel_export.from_environment()


class Command(BaseCommand):
    help = "Consume probe records from the Redis stream into services, rollups, edges and samples."

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="process what is in the stream now, then exit"
        )

    def handle(self, *args, once: bool = False, **options):
        client = redis_client()
        otlp = otlp_from_environment()
        ingester = Ingester(
            client,
            consumer=f"{socket.gethostname()}-{os.getpid()}",
            claim_idle_ms=settings.INGEST_CLAIM_IDLE_MS,
            otlp=otlp,
        )
        try:
            if once:
                self._once(ingester)
            else:
                self._run(ingester)
        finally:
            if otlp:  # sends what is queued, waiting at most OTEL_BSP_EXPORT_TIMEOUT
                otlp.shutdown()
                log.info("OTLP export: %s", otlp.stats.line())

    def _once(self, ingester: Ingester) -> None:
        try:
            ingester.ensure_group()
            ingester.reclaim()
            while entries := ingester.read(block_ms=None):
                ingester.process(entries)
        except redis.RedisError as exc:
            raise CommandError(f"Redis at {settings.REDIS_URL} failed: {exc}") from exc
        except DatabaseUnavailable as exc:
            raise CommandError(f"the database does not answer: {exc}") from exc
        finally:
            ingester.broadcast_if_due(force=True)
            ingester.log_skips_if_due(force=True)
        log.info("ingest --once: %s", ingester.stats_line())

    def _run(self, ingester: Ingester) -> None:
        stopping = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        log.info("ingesting %s as consumer %s", settings.REDIS_URL, ingester.consumer)
        try:
            self._loop(ingester, stopping)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.info("stopped: %s", ingester.stats_line())

    def _loop(self, ingester: Ingester, stopping: threading.Event) -> None:
        backoff = BACKOFF_FIRST_S
        need_group = True
        reclaimed_at = stats_at = time.monotonic()
        entries = []  # held across a database outage, so they are retried, not re-read
        while not stopping.is_set():
            try:
                if need_group:  # at start, and after Redis came back (it may have lost the group)
                    ingester.ensure_group()
                    ingester.reclaim()
                    ingester.forget_idle_consumers()
                    ingester.publish_control()
                    need_group, reclaimed_at = False, time.monotonic()
                if not entries:
                    # A throttled broadcast is sent when due, not after a quiet second of blocking.
                    entries = ingester.read(block_ms=ingester.ms_until_broadcast(BLOCK_MS))
                if entries:
                    ingester.process(entries)
                    entries = []
                now = time.monotonic()
                if now - reclaimed_at >= settings.INGEST_RECLAIM_INTERVAL_S:
                    ingester.reclaim()
                    reclaimed_at = now
                ingester.broadcast_if_due()
                ingester.log_skips_if_due()
                if now - stats_at >= STATS_EVERY_S:
                    log.info("ingest: %s", ingester.stats_line())
                    stats_at = now
                if backoff > BACKOFF_FIRST_S:
                    log.info("recovered: ingesting again")
                backoff = BACKOFF_FIRST_S
            except redis.RedisError as exc:
                log.warning("Redis at %s failed (%s); retrying in %.1f s", settings.REDIS_URL, exc, backoff)
                need_group = True
                stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            except DatabaseUnavailable as exc:
                log.warning("the database does not answer (%s); retrying in %.1f s", exc, backoff)
                db.close_old_connections()
                stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
