"""Real OTLP receivers on loopback for tests and benches: gRPC (the collector's TraceService and
MetricsService, from the opentelemetry-proto package) and HTTP/protobuf (/v1/traces, /v1/metrics).

Each keeps every export request it received, decoded; `spans()` and `histogram_points()` flatten
them into plain tuples and dicts that tests compare.
"""

import contextlib
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.helpers import free_port


class Received:
    """What one receiver got, appended from its server threads."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.traces: list = []  # ExportTraceServiceRequest
        self.metrics: list = []  # ExportMetricsServiceRequest
        self.lock = threading.Lock()

    def add(self, kind: str, request) -> None:
        with self.lock:
            getattr(self, kind).append(request)

    def spans(self) -> list[dict]:
        """Every span received, with its resource's service.name and host.name."""
        found = []
        with self.lock:
            requests = list(self.traces)
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(
                            {
                                "service": resource.get("service.name"),
                                "host": resource.get("host.name"),
                                "scope": scope_spans.scope.name,
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "status": span.status.code,
                                "status_message": span.status.message,
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "attributes": _attributes(span.attributes),
                            }
                        )
        return found

    def histogram_points(self, name: str) -> list[dict]:
        """The data points of histogram `name` in the last metrics export (cumulative: the totals)."""
        with self.lock:
            requests = list(self.metrics)
        found = []
        for request in requests[-1:]:
            for resource_metrics in request.resource_metrics:
                resource = _attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name != name:
                            continue
                        for point in metric.histogram.data_points:
                            found.append(
                                {
                                    "service": resource.get("service.name"),
                                    "unit": metric.unit,
                                    "attributes": _attributes(point.attributes),
                                    "count": point.count,
                                    "sum": point.sum,
                                    "bucket_counts": list(point.bucket_counts),
                                }
                            )
        return found

    def metric_names(self) -> set[str]:
        with self.lock:
            requests = list(self.metrics)
        return {
            metric.name
            for request in requests
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(spans := self.spans()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return spans


def _attributes(pairs) -> dict:
    values = {}
    for pair in pairs:
        value = pair.value
        values[pair.key] = getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
    return values


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received):
        self.received = received

    def Export(self, request, context):  # noqa: N802 (the generated service's name)
        self.received.add("traces", request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received):
        self.received = received

    def Export(self, request, context):  # noqa: N802
        self.received.add("metrics", request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@contextlib.contextmanager
def grpc_receiver():
    """An OTLP/gRPC receiver on a free loopback port; yields its Received (endpoint http://host:port)."""
    port = free_port()
    received = Received(f"http://127.0.0.1:{port}")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(received), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(received), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield received
    finally:
        server.stop(grace=None)


# (request type, response type, where it is kept) per OTLP/HTTP path
_HTTP_PATHS = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "traces",
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "metrics",
    ),
}


@contextlib.contextmanager
def http_receiver():
    """An OTLP/HTTP (protobuf) receiver on a free loopback port; yields its Received (base endpoint)."""
    received = Received("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            known = _HTTP_PATHS.get(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if known is None or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(404 if known is None else 415)
                return
            request_type, response_type, kind = known
            received.add(kind, request_type.FromString(body))
            payload = response_type().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # quiet: one line per export would flood the test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
