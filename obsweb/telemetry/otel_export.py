"""Optional OTLP export from the ingester: stored request records as spans, and request metrics.

Off, at no cost, unless OTEL_EXPORTER_OTLP_ENDPOINT or a signal's own endpoint
(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) is set; the OTLP
exporters of the OpenTelemetry SDK read those, OTEL_EXPORTER_OTLP_PROTOCOL (grpc or
http/protobuf) and the headers, timeout, TLS and compression variables themselves.

The ingester hands over each batch after its database commit (`OtlpExport.add`), so only stored
records leave, each once: a replayed entry is a duplicate and is not handed over again. Export
never blocks ingest: records wait in a bounded queue that a thread drains in batches; when the
queue is full or the collector does not answer they are dropped and counted (`ExportStats`),
and what is still queued when the process stops is lost.

Spans are written by otlp_wire.py and sent by subclasses of the SDK's OTLP span exporters, so
endpoint, TLS, headers, timeout, compression and retries stay the SDK's: its own span encoding
costs more than storing the record. The subclasses use two internals of the pinned SDK version
(`_translate_data`, `_client`); tests/test_otel_export.py, against real receivers, catches a change.
Metrics are aggregated by otel_metrics.py and exported by the SDK's periodic reader.
"""

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from opentelemetry.exporter.otlp.proto.grpc import metric_exporter as grpc_metrics
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_traces
from opentelemetry.exporter.otlp.proto.http import metric_exporter as http_metrics
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from obsweb.telemetry.otel_metrics import RequestMetrics, RequestMetricsExporter, delta_preferred
from obsweb.telemetry.otlp_wire import SpanEncoder
from probes import schema

log = logging.getLogger(__name__)

PROTOCOL_GRPC = "grpc"
PROTOCOL_HTTP = "http/protobuf"  # the specification's default
INGESTER_SERVICE = "obsweb-ingest"  # the service name of the ingester's own counters
LOG_EVERY_S = 60.0  # drops and failures are logged at most this often, with their counts
# The SDK exporters log every failed attempt; a collector that is down for an hour is one line a minute.
SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.sdk.metrics._internal.export",
)


@dataclass
class ExportStats:
    """Counters since start, added to the ingester's stats line."""

    spans_exported: int = 0
    spans_dropped: int = 0  # queue full, export failed, or still queued at shutdown
    export_failures: int = 0  # failed export calls, spans and metrics

    def line(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in vars(self).items())


def from_environment() -> "OtlpExport | None":
    """The export the OTEL_* variables ask for, or None (nothing set, or OTEL_SDK_DISABLED=true)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    span_exporter = _exporter("TRACES") if _wanted("TRACES") else None
    metric_exporter = _exporter("METRICS") if _wanted("METRICS") else None
    if span_exporter is None and metric_exporter is None:
        return None
    return OtlpExport(
        span_exporter,
        metric_exporter,
        queue_size=settings.OTEL_BSP_MAX_QUEUE_SIZE,
        batch_size=settings.OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
        interval_s=settings.OTEL_BSP_SCHEDULE_DELAY / 1000,
        shutdown_timeout_s=settings.OTEL_BSP_EXPORT_TIMEOUT / 1000,
    )


def _wanted(signal: str) -> bool:
    """A signal is exported when an endpoint is set for it and OTEL_<SIGNAL>_EXPORTER is not none."""
    if os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _exporter(signal: str):
    """The SDK's OTLP exporter for the signal, over the protocol the variables name."""
    protocol = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", PROTOCOL_HTTP
    )
    protocol = protocol.strip().lower()
    if protocol == PROTOCOL_GRPC:
        return GrpcSpanExporter() if signal == "TRACES" else grpc_metrics.OTLPMetricExporter()
    if protocol == PROTOCOL_HTTP:
        return HttpSpanExporter() if signal == "TRACES" else http_metrics.OTLPMetricExporter()
    raise ImproperlyConfigured(
        f"OTEL_EXPORTER_OTLP_PROTOCOL (or OTEL_EXPORTER_OTLP_{signal}_PROTOCOL) must be "
        f"{PROTOCOL_GRPC} or {PROTOCOL_HTTP}, not {protocol!r}"
    )


class EncodedSpans(NamedTuple):
    """What the span exporters below take instead of ReadableSpans (see otlp_wire.py for why)."""

    payload: bytes  # an ExportTraceServiceRequest
    count: int  # spans in it


class GrpcSpanExporter(grpc_traces.OTLPSpanExporter):
    """The SDK's gRPC exporter (endpoint, TLS, headers, timeout, compression, retries), fed
    EncodedSpans: its stub wants a message, parsed from our bytes in C (~3 us a span)."""

    def _translate_data(self, data: EncodedSpans) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(data.payload)

    def _count_data(self, data: EncodedSpans) -> int:
        return data.count


class HttpSpanExporter(http_traces.OTLPSpanExporter):
    """The SDK's HTTP/protobuf exporter, fed EncodedSpans: its client sends bytes as they are
    (with the headers, compression, timeout and retries the variables ask for)."""

    def export(self, spans: EncodedSpans) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        ok = self._client.export(spans.payload).success
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class OtlpExport:
    """Spans and request metrics of committed request records, exported in the background."""

    def __init__(
        self,
        span_exporter: SpanExporter | None,
        metric_exporter=None,
        *,
        queue_size: int = 60_000,
        batch_size: int = 512,
        interval_s: float = 1.0,
        shutdown_timeout_s: float = 30.0,
    ):
        self.stats = ExportStats()
        self._lock = threading.Lock()  # the stats are counted from the ingest and export threads
        self._logged_at = time.monotonic()
        self._logged = (0, 0)  # (dropped, failures) at the last log line
        self.shutdown_timeout_s = shutdown_timeout_s
        _quiet_sdk_loggers()
        self.spans = span_exporter and SpanShipper(span_exporter, self, queue_size, batch_size, interval_s)
        self.metrics = metric_exporter and RequestMetrics(delta_preferred())
        self.meter_provider = metric_exporter and self._meter_provider(metric_exporter)

    def add(self, records: list[dict]) -> None:
        """Queue the request records of one committed stream entry (others are ignored)."""
        requests = [r for r in records if r.get(schema.KIND) == schema.KIND_REQUEST]
        if not requests:
            return
        if self.spans:
            self.spans.offer(requests)
        if self.metrics:
            self.metrics.record(requests)

    def shutdown(self) -> None:
        """Send what is queued, waiting at most shutdown_timeout_s per signal."""
        if self.spans:
            self.spans.shutdown(self.shutdown_timeout_s)
        if self.meter_provider:  # its reader exports once more on the way out
            self.meter_provider.shutdown(timeout_millis=self.shutdown_timeout_s * 1000)
        self.log_if_due(force=True)

    def count(self, exported: int = 0, dropped: int = 0, failures: int = 0) -> None:
        with self._lock:
            self.stats.spans_exported += exported
            self.stats.spans_dropped += dropped
            self.stats.export_failures += failures

    def log_if_due(self, force: bool = False) -> None:
        """One warning per LOG_EVERY_S at most, when spans were dropped or exports failed since the last."""
        now = time.monotonic()
        if not force and now - self._logged_at < LOG_EVERY_S:
            return
        current = (self.stats.spans_dropped, self.stats.export_failures)
        if current != self._logged:
            dropped, failures = (a - b for a, b in zip(current, self._logged, strict=True))
            log.warning(
                "OTLP export: %d spans dropped and %d exports failed in the last %.0f s (queue full or "
                "collector unreachable; check OTEL_EXPORTER_OTLP_ENDPOINT); totals: %s",
                dropped,
                failures,
                now - self._logged_at,
                self.stats.line(),
            )
        self._logged_at, self._logged = now, current

    def _meter_provider(self, metric_exporter) -> MeterProvider:
        """The SDK's periodic reader (OTEL_METRIC_EXPORT_INTERVAL, default 60 s) exports the request
        series and these export counters of the ingester itself."""
        exporter = RequestMetricsExporter(metric_exporter, self.metrics, self._metric_export_failed)
        provider = MeterProvider(
            metric_readers=[PeriodicExportingMetricReader(exporter)],
            resource=Resource.create({"service.name": INGESTER_SERVICE}),
        )
        meter = provider.get_meter("obsweb.ingest")
        for name in ("spans_exported", "spans_dropped", "export_failures"):
            meter.create_observable_counter(
                f"obsweb.otlp.{name}",
                callbacks=[self._observe(name)],
                unit="{span}" if "span" in name else "1",
            )
        return provider

    def _metric_export_failed(self) -> None:  # on the reader's thread
        self.count(failures=1)
        self.log_if_due()

    def _observe(self, name: str):
        return lambda _options: [Observation(getattr(self.stats, name))]


class SpanShipper:
    """A bounded queue of request records and the thread that sends them as spans."""

    def __init__(
        self, exporter: SpanExporter, owner: OtlpExport, queue_size: int, batch_size: int, interval_s
    ):
        self.exporter = exporter
        self.owner = owner
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.encoder = SpanEncoder()
        self._queue: deque[dict] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._abandoned = False  # shutdown timed out: stop sending, count the rest as dropped
        self._raised_logged_at = float("-inf")
        self._thread = threading.Thread(target=self._run, name="otlp-spans", daemon=True)
        self._thread.start()

    def offer(self, records: list[dict]) -> None:
        """Queue what fits, drop and count the rest; never waits."""
        with self._lock:
            room = max(0, self.queue_size - len(self._queue))
            self._queue.extend(records[:room])
            queued = len(self._queue)
        if len(records) > room:
            self.owner.count(dropped=len(records) - room)
        if queued >= self.batch_size:
            self._wake.set()

    def shutdown(self, timeout_s: float) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # the collector does not answer: abandon the rest
            self._abandoned = True
            self._drop_queued()
            self.exporter.shutdown()  # also cuts short the exporter's retry backoff
            self._thread.join(timeout_s)  # a batch still in flight is counted when its call returns
        else:
            self.exporter.shutdown()

    def _run(self) -> None:
        while True:
            # Woken by a full batch, else once per interval: send the full batches and the rest.
            self._wake.wait(self.interval_s)
            self._wake.clear()
            while not self._abandoned and (batch := self._take()):
                self._send(batch)
                if len(batch) < self.batch_size:
                    break
            self.owner.log_if_due()
            if self._abandoned:
                self._drop_queued()
                return
            if self._stopping and not self._queue:
                return

    def _drop_queued(self) -> None:
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
        self.owner.count(dropped=left)

    def _take(self) -> list[dict]:
        with self._lock:
            n = min(self.batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _send(self, records: list[dict]) -> None:
        count = 0
        try:
            payload, count = self.encoder.request(records)
            ok = count == 0 or self.exporter.export(EncodedSpans(payload, count)) is SpanExportResult.SUCCESS
        except Exception:  # a bug here must not kill the thread (and fill the queue for good)
            # Shutting down an exporter mid-retry can make its next attempt raise: expected then.
            if not self._abandoned and time.monotonic() - self._raised_logged_at >= LOG_EVERY_S:
                log.exception("OTLP span export raised (logged once per %.0f s)", LOG_EVERY_S)
                self._raised_logged_at = time.monotonic()
            ok = False
        if ok:  # records without a usable time are not sent: dropped
            self.owner.count(exported=count, dropped=len(records) - count)
        else:
            self.owner.count(dropped=len(records), failures=1)


def _quiet_sdk_loggers() -> None:
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerInterval) for f in logger.filters):
            logger.addFilter(OncePerInterval(LOG_EVERY_S))


class OncePerInterval(logging.Filter):
    """Lets one record through per interval: the first failure says why, the counters say how often."""

    def __init__(self, interval_s: float):
        super().__init__()
        self.interval_s = interval_s
        self.passed_at = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.passed_at < self.interval_s:
            return False
        self.passed_at = now
        return True
