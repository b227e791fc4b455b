"""OTLP export from the ingester, to real receivers on loopback (tests/otlp.py): spans with the
records' ids, kinds and attributes, request metrics, and an ingester that never waits for them."""

import logging
import time

import pytest
import redis
from django.core.management import call_command
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from obsweb.telemetry import otel_export, otel_metrics
from obsweb.telemetry.ingest import Ingester
from obsweb.telemetry.models import Rollup
from probes import schema
from tests import otlp
from tests.factories import T0, caller_side, client_request, postgres_request, request
from tests.helpers import free_port

NGINX_SPAN = "aaaaaaaaaaaaaaaa"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request, monkeypatch):
    """A real receiver of the protocol, and the standard variables pointing the ingester at it."""
    start = otlp.grpc_receiver if request.param == "grpc" else otlp.http_receiver
    with start() as received:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", received.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", request.param)
        yield received


def publish(client: redis.Redis, records: list[dict]) -> None:
    client.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: schema.pack_batch(records)})


def a_call_path() -> list[dict]:
    """nginx serves GET /checkout and calls shop-api on the way (its client span, the child)."""
    server = request(
        **{"service.name": "nginx", "span_id": NGINX_SPAN, "http.route": "/checkout", "host": "edge-1"}
    )
    client = client_request(**{"parent_span_id": NGINX_SPAN, "ts": T0 + 10**9 + 1000, "host": "edge-1"})
    failing = request(**{"http.response.status_code": 503, "error": True, "error.type": "503"})
    failing["span_id"] = "3333333333333333"
    return [server, client, failing]


def by_id(spans: list[dict]) -> dict:
    return {span["span_id"]: span for span in spans}


def test_it_exports_each_stored_request_as_a_span_with_the_records_ids_and_parent_links(stream, receiver):
    publish(stream, a_call_path())
    call_command("ingest", "--once")  # its shutdown sends what is queued

    spans = by_id(receiver.wait_for_spans(3))
    assert set(spans) == {NGINX_SPAN, "1111111111111111", "3333333333333333"}
    server, client = spans[NGINX_SPAN], spans["1111111111111111"]
    assert server["trace_id"] == client["trace_id"] == TRACE
    assert (server["kind"], client["kind"]) == (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT)
    assert (server["parent_span_id"], client["parent_span_id"]) == ("", NGINX_SPAN)
    assert (server["service"], server["host"], client["service"]) == ("nginx", "edge-1", "nginx")
    assert server["name"] == "GET /checkout"
    # The worker stamps a record with the time the request was seen: the span starts there.
    assert (server["start"], server["end"]) == (T0 + 10**9, T0 + 10**9 + 1_234_567)


def test_it_marks_errors_and_keeps_the_records_attributes(stream, receiver):
    publish(stream, a_call_path())
    call_command("ingest", "--once")

    spans = by_id(receiver.wait_for_spans(3))
    failing, ok = spans["3333333333333333"], spans[NGINX_SPAN]
    assert (failing["status"], failing["status_message"]) == (Status.STATUS_CODE_ERROR, "503")
    assert ok["status"] == Status.STATUS_CODE_UNSET
    assert failing["service"] == "shop-api"
    assert failing["attributes"] == {
        "server.address": "127.0.0.1",
        "server.port": 8001,
        "client.address": "127.0.0.1",
        "client.port": 51234,
        "network.protocol.name": "http",
        "http.request.method": "GET",
        "url.path": "/users/7?x=REDACTED",
        "http.route": "/users/{id}",
        "http.response.status_code": 503,
        "error.type": "503",
        "request.bytes": 120,
        "response.bytes": 560,
        "user_agent.original": "curl/7.88.1",
        "tls": False,
        "process.pid": 123,
        "thread.id": 123,
    }
    assert spans["1111111111111111"]["attributes"]["peer.service"] == "shop-api"


def test_it_exports_request_counts_and_durations_per_service_route_and_status(stream, receiver, monkeypatch):
    publish(stream, [request(duration_ns=2_000_000) for _ in range(4)] + [caller_side(postgres_request())])
    publish(stream, [request(**{"http.response.status_code": 500, "error": True, "error.type": "500"})])
    call_command("ingest", "--once")  # the reader exports once more as it shuts down

    points = receiver.histogram_points("http.server.request.duration")
    ok = [p for p in points if p["attributes"]["http.response.status_code"] == 200]
    failed = [p for p in points if p["attributes"]["http.response.status_code"] == 500]
    assert len(ok) == len(failed) == 1
    assert (ok[0]["service"], ok[0]["unit"], ok[0]["count"]) == ("shop-api", "s", 4)
    assert ok[0]["sum"] == pytest.approx(0.008)
    assert ok[0]["attributes"] == {
        "http.request.method": "GET",
        "http.route": "/users/{id}",
        "http.response.status_code": 200,
    }
    assert ok[0]["bucket_counts"][0] == 4  # 2 ms is under the first bound, 5 ms
    assert (failed[0]["count"], failed[0]["attributes"]["error.type"]) == (1, "500")
    db_points = receiver.histogram_points("db.client.operation.duration")
    assert [(p["service"], p["count"], p["attributes"]["db.system"]) for p in db_points] == [
        ("shop-api", 1, "postgresql")
    ]
    assert "obsweb.otlp.spans_exported" in receiver.metric_names()  # the ingester's own counters


def test_it_does_not_export_a_replayed_entry_again(stream, receiver):
    publish(stream, [request()])
    call_command("ingest", "--once")
    assert len(receiver.wait_for_spans(1)) == 1
    # The same entry delivered again (a consumer died after the commit, before its XACK).
    stream.xgroup_setid(schema.RECORDS_STREAM, schema.INGEST_GROUP, "0")
    call_command("ingest", "--once")

    time.sleep(0.2)
    assert len(receiver.spans()) == 1
    assert Rollup.objects.get().count == 1


def test_a_record_without_ids_gets_random_ones_as_otlp_requires(stream, receiver):
    publish(stream, [request(trace_id="", span_id=None, parent_span_id="not-hex")])
    call_command("ingest", "--once")

    [span] = receiver.wait_for_spans(1)
    assert len(span["trace_id"]) == 32 and int(span["trace_id"], 16) != 0
    assert len(span["span_id"]) == 16 and int(span["span_id"], 16) != 0
    assert span["parent_span_id"] == ""


def test_nothing_is_exported_or_even_loaded_without_an_endpoint(stream, monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    from obsweb.telemetry.management.commands.ingest import otlp_from_environment

    assert otlp_from_environment() is None


def test_only_the_signals_with_an_endpoint_are_exported(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    export = otel_export.from_environment()
    try:
        assert export.spans is not None and export.meter_provider is None
    finally:
        export.shutdown()


def test_it_refuses_an_unknown_protocol(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ImproperlyConfigured, match="grpc or http/protobuf"):
        otel_export.from_environment()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_ingest_goes_on_promptly_and_counts_the_drops_when_the_collector_is_down(
    stream, monkeypatch, protocol, caplog
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    export = otel_export.OtlpExport(
        otel_export._exporter("TRACES"), otel_export._exporter("METRICS"), shutdown_timeout_s=1.0
    )
    ingester = Ingester(stream, "c1", otlp=export)
    ingester.ensure_group()
    for i in range(5):
        publish(stream, [request(ts=T0 + i * 10**6 + j) for j in range(400)])

    started = time.monotonic()
    ingester.process(ingester.read(block_ms=None))
    ingesting = time.monotonic() - started
    with caplog.at_level(logging.WARNING):
        export.shutdown()
    stopping = time.monotonic() - started - ingesting

    assert Rollup.objects.get().count == 2000
    assert ingesting < 5.0
    assert stopping < 4.0  # two signals, each waiting at most shutdown_timeout_s, and a margin
    assert (export.stats.spans_exported, export.stats.spans_dropped) == (0, 2000)
    assert export.stats.export_failures >= 1
    assert "spans_dropped 2000" in ingester.stats_line()
    ours = [r for r in caplog.records if r.name == otel_export.log.name]
    assert len(ours) == 1 and "2000 spans dropped" in ours[0].getMessage()


def test_the_queue_holds_at_most_its_bound_and_counts_the_rest(stream):
    export = otel_export.OtlpExport(BlockedExporter(), queue_size=100, batch_size=10, shutdown_timeout_s=0.5)
    ingester = Ingester(stream, "c1", otlp=export)
    ingester.ensure_group()
    publish(stream, [request(ts=T0 + j) for j in range(250)])

    ingester.process(ingester.read(block_ms=None))

    assert len(export.spans._queue) <= 100
    assert export.stats.spans_dropped >= 150
    export.shutdown()  # gives up on the slow collector after 0.5 s
    assert export.stats.spans_dropped >= 240  # all but the batch still in flight
    export.spans._thread.join(5)
    assert export.stats.spans_dropped + export.stats.spans_exported == 250


class BlockedExporter(otel_export.SpanExporter):
    """A collector that takes its time: the export thread sits in its first call."""

    def export(self, spans):
        time.sleep(2)
        return otel_export.SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def test_series_past_the_limit_fold_into_one_overflow_series(monkeypatch):
    monkeypatch.setattr(otel_metrics, "MAX_SERIES", 3)
    metrics = otel_metrics.RequestMetrics()
    metrics.record([request(**{"http.route": f"/r{i}"}) for i in range(10)])

    [resource] = metrics.collect()
    [metric] = resource.scope_metrics[0].metrics
    counts = {p.attributes.get("http.route", "overflow"): p.count for p in metric.data.data_points}
    assert counts == {"/r0": 1, "/r1": 1, "/r2": 1, "overflow": 7}
