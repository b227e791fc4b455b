import os
import signal
import threading
import time

import msgpack
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command

from obsweb.dashboard import live
from obsweb.dashboard.constants import OVERVIEW_GROUP
from obsweb.fleet.models import Host
from obsweb.telemetry import histogram
from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.ingest import Ingester
from obsweb.telemetry.models import Edge, Endpoint, IngestedBatch, RequestSample, Rollup, Service
from obsweb.telemetry.records import to_datetime
from probes import schema
from tests.factories import MINUTE_NS, T0, agent, client_request, db_request, flow, request


def publish(client: redis.Redis, records: list[dict]) -> str:
    return client.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: schema.pack_batch(records)}).decode()


def ingest_once():
    call_command("ingest", "--once")


def pending(client: redis.Redis) -> int:
    return client.xpending(schema.RECORDS_STREAM, schema.INGEST_GROUP)["pending"]


def overview_listener(channel: str = "test.overview"):
    """A channel in the dashboard's overview group, as an open overview page would have."""
    layer = get_channel_layer()
    async_to_sync(layer.group_add)(OVERVIEW_GROUP, channel)
    return layer, channel


def received(layer, channel: str, n: int) -> list[dict]:
    """n messages, received in one event loop: channels_redis mixes up receives across loops."""

    async def receive():
        return [await layer.receive(channel) for _ in range(n)]

    return async_to_sync(receive)()


def rollup(route="/users/{id}", status=200, minute=T0) -> Rollup:
    return Rollup.objects.get(endpoint__route=route, status_code=status, minute=to_datetime(minute))


def test_it_rolls_up_server_requests_per_minute_endpoint_and_status(stream):
    publish(
        stream,
        [
            request(duration_ns=1_000_000),
            request(duration_ns=3_000_000, ts=T0 + 59 * 10**9),
            request(**{"http.response.status_code": 500, "error": True}),
            request(ts=T0 + MINUTE_NS),
        ],
    )
    ingest_once()

    ok = rollup()
    assert (ok.count, ok.errors, ok.request_bytes, ok.response_bytes) == (2, 0, 240, 1120)
    assert ok.duration_sum_ns == 4_000_000
    assert histogram.count(ok.histogram) == 2
    assert histogram.quantile(ok.histogram, 1) == pytest.approx(3_000_000, rel=0.02)
    assert (rollup(status=500).count, rollup(status=500).errors) == (1, 1)
    assert rollup(minute=T0 + MINUTE_NS).count == 1
    assert pending(stream) == 0


def test_it_registers_the_service_its_host_and_endpoint(stream):
    publish(stream, [request(), request(host="h2", ts=T0 + 30 * 10**9)])
    ingest_once()

    service = Service.objects.get(name="shop-api")
    assert (service.protocol, service.external) == ("http", False)
    assert sorted(service.hosts.values_list("name", flat=True)) == ["h1", "h2"]
    assert service.last_seen == to_datetime(T0 + 30 * 10**9)
    endpoint = Endpoint.objects.get(service=service)
    assert (endpoint.protocol, endpoint.method, endpoint.route) == ("http", "GET", "/users/{id}")


def test_it_names_non_http_endpoints_by_operation_and_collection_or_topic(stream):
    kafka = db_request(
        **{
            "service.name": "kafka",
            "network.protocol.name": "kafka",
            "db.operation.name": "produce",
            "messaging.destination.name": "orders",
        }
    )
    del kafka["db.collection.name"]
    publish(stream, [db_request(), kafka])
    ingest_once()

    assert Endpoint.objects.get(service__name="postgres").operation == "SELECT"
    assert Endpoint.objects.get(service__name="postgres").target == "users"
    assert Endpoint.objects.get(service__name="kafka").target == "orders"
    assert Rollup.objects.get(service__name="postgres").status_code == 0


def test_it_counts_keep_alive_requests_of_one_connection_one_by_one(stream):
    publish(stream, [request(**{"client.port": 51234}) for _ in range(3)])
    ingest_once()

    assert rollup().count == 3


def test_it_counts_client_calls_as_edges_to_the_peer_service(stream):
    publish(stream, [client_request(), client_request(**{"http.response.status_code": 502, "error": True})])
    ingest_once()

    edge = Edge.objects.get(source__name="nginx", target__name="shop-api", protocol="http")
    assert (edge.count, edge.errors, edge.bytes) == (2, 1, 2 * (120 + 560))
    assert histogram.count(edge.histogram) == 2
    assert not Rollup.objects.exists()  # the callee's own records make its rollups


def test_it_shows_an_unresolved_callee_as_an_external_address(stream):
    publish(
        stream, [client_request(**{"peer.service": None, "server.address": "10.0.0.9", "server.port": 443})]
    )
    ingest_once()

    edge = Edge.objects.get()
    assert (edge.target.name, edge.target.external) == ("10.0.0.9:443", True)
    assert not edge.source.external


def test_it_counts_client_flows_as_tcp_connections(stream):
    publish(stream, [flow(), flow(**{"peer.service": None, "server.address": "::1", "server.port": 6379})])
    ingest_once()

    shop = Edge.objects.get(target__name="shop-api")
    assert (shop.protocol, shop.count, shop.bytes, shop.duration_sum_ns) == ("tcp", 1, 2100, 5_000_000)
    assert Edge.objects.get(target__name="[::1]:6379").target.external


def test_it_ignores_server_side_flows_and_flow_events_before_close(stream):
    ingester = Ingester(stream, "test-1")
    ingester.ensure_group()
    publish(stream, [flow(**{"span.kind": "server"}), flow(**{"flow.event": "open"})])

    ingester.process(ingester.read(block_ms=None))

    assert not Edge.objects.exists()
    assert (ingester.stats.ignored, ingester.stats.skipped) == (2, 0)


def test_it_keeps_every_error_and_slow_request_and_a_few_others(stream, settings):
    settings.SAMPLES_PER_ENDPOINT_MINUTE = 2
    settings.SLOW_REQUEST_MS = 100
    ordinary = [request(span_id=f"{i:016x}") for i in range(10)]
    server_error = request(**{"http.response.status_code": 503, "error": True})
    not_found = request(**{"http.response.status_code": 404})
    slow = request(duration_ns=150_000_000)
    failed_call = client_request(**{"http.response.status_code": 504, "error": True})
    publish(stream, [*ordinary, server_error, not_found, slow, failed_call])
    ingest_once()

    samples = RequestSample.objects.order_by("id")
    assert samples.count() == 2 + 4
    assert samples.filter(error=True).count() == 2
    assert samples.filter(status_code=404).count() == 1
    assert samples.filter(duration_ns=150_000_000).count() == 1
    assert samples.get(span_kind="client").endpoint is None
    first = samples.get(span_id=ordinary[0]["span_id"])
    assert first.attributes == ordinary[0]
    assert (first.trace_id, first.host, first.status_code) == (ordinary[0]["trace_id"], "h1", 200)


def test_the_per_minute_sample_bound_holds_across_batches(stream, settings):
    settings.SAMPLES_PER_ENDPOINT_MINUTE = 3
    publish(stream, [request() for _ in range(2)])
    ingest_once()
    publish(stream, [request() for _ in range(2)])
    publish(stream, [request(ts=T0 + MINUTE_NS)])
    ingest_once()

    assert RequestSample.objects.filter(ts__lt=to_datetime(T0 + MINUTE_NS)).count() == 3
    assert RequestSample.objects.filter(ts__gte=to_datetime(T0 + MINUTE_NS)).count() == 1


def test_it_records_agent_heartbeats_on_the_host(stream):
    publish(
        stream,
        [
            agent(),
            agent(
                ts=T0 + 5 * 10**9,
                **{"agent.events_seen": 600, "agent.events_dropped": 7, "agent.records_dropped": 3},
            ),
        ],
    )
    ingest_once()

    host = Host.objects.get(name="h1")
    assert (host.agent_version, host.kernel) == ("0.1.0", "6.18.0")
    assert host.probes == {"http": {"desired": True, "actual": True, "error": None}}
    assert (host.events_seen, host.events_dropped, host.events_per_s) == (600, 10, 100.0)
    assert host.last_seen == to_datetime(T0 + 5 * 10**9)


def test_an_older_heartbeat_does_not_move_the_host_back(stream):
    publish(stream, [agent(ts=T0 + 5 * 10**9, **{"agent.events_seen": 600})])
    ingest_once()
    publish(stream, [agent()])
    ingest_once()

    assert Host.objects.get(name="h1").events_seen == 600


def test_bad_records_are_skipped_without_failing_their_batch(stream):
    ingester = Ingester(stream, "test-1")
    ingester.ensure_group()
    publish(
        stream,
        [
            {"kind": "mystery", "host": "h1", "ts": T0},
            request(**{"service.name": None}),
            request(duration_ns="slow"),
            request(error="yes"),
            request(ts=12),
            request(**{"response.bytes": -5}),
            {"no kind": True},
            request(),
        ],
    )
    ingester.process(ingester.read(block_ms=None))

    assert rollup().count == 1
    assert (ingester.stats.records, ingester.stats.skipped) == (1, 7)
    assert pending(stream) == 0


def test_odd_values_a_sender_may_pack_are_stored_as_json(stream):
    """msgpack allows bytes keys, NaN and extension types; none of them may stop the ingester."""
    ingester = Ingester(stream, "test-1")
    ingester.ensure_group()
    odd = request(error=True, **{"http.response.status_code": 500})
    odd.update({b"raw-key": b"\xff", "nan": float("nan"), "ext": msgpack.ExtType(5, b"x")})
    stream.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: msgpack.packb([odd], use_bin_type=True)})
    ingester.process(ingester.read(block_ms=None))

    sample = RequestSample.objects.get()
    assert sample.attributes["raw-key"] == "\ufffd"
    assert sample.attributes["nan"] is None
    assert sample.attributes["ext"] == [5, "x"]  # ExtType is a named tuple
    assert pending(stream) == 0


def test_replaying_an_entry_changes_nothing(stream):
    ingester = Ingester(stream, "test-1")
    ingester.ensure_group()
    publish(
        stream, [request(), client_request(), request(**{"http.response.status_code": 500, "error": True})]
    )
    entries = ingester.read(block_ms=None)
    ingester.process(entries)
    before = list(Rollup.objects.values()), list(Edge.objects.values()), RequestSample.objects.count()

    ingester.process(entries)

    assert (
        list(Rollup.objects.values()),
        list(Edge.objects.values()),
        RequestSample.objects.count(),
    ) == before
    assert IngestedBatch.objects.count() == 1
    assert (ingester.stats.entries, ingester.stats.duplicates) == (1, 1)


def test_a_garbage_entry_is_acked_and_skipped_while_the_good_one_is_stored(stream):
    stream.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: b"\xc1 not msgpack"})
    stream.xadd(schema.RECORDS_STREAM, {b"other": b"field"})
    stream.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: schema.pack_batch({"not": "a list"})})
    publish(stream, [request()])
    ingester = Ingester(stream, "test-1")
    ingester.ensure_group()

    ingester.process(ingester.read(block_ms=None))

    assert rollup().count == 1
    assert ingester.stats.undecodable == 3
    assert pending(stream) == 0


def test_entries_a_dead_consumer_left_pending_are_reclaimed(stream):
    Ingester(stream, "test-1").ensure_group()
    first, second = publish(stream, [request()]), publish(stream, [request()])
    dead = Ingester(stream, "dead-1")
    assert len(dead.read(block_ms=None)) == 2  # read, then never acknowledged
    assert pending(stream) == 2
    time.sleep(0.05)

    survivor = Ingester(stream, "alive-1", claim_idle_ms=20)
    assert survivor.reclaim() == 2

    assert rollup().count == 2
    assert pending(stream) == 0
    assert set(IngestedBatch.objects.values_list("stream_id", flat=True)) == {first, second}


def test_the_command_reclaims_at_start(stream):
    Ingester(stream, "test-1").ensure_group()
    publish(stream, [request()])
    Ingester(stream, "dead-1").read(block_ms=None)

    ingest_once()  # claims only entries idle for a minute: this one is not yet

    assert not Rollup.objects.exists()
    assert pending(stream) == 1


def test_it_tells_open_overview_pages_about_new_requests(stream):
    layer, channel = overview_listener()
    publish(stream, [request(ts=T0 + 5 * 10**9), request(ts=T0 + 7 * 10**9)])
    publish(stream, [agent(ts=T0 + 9 * 10**9)])

    ingest_once()

    (message,) = received(layer, channel, 1)
    assert message["latest_ts_ns"] == T0 + 7 * 10**9


def test_it_broadcasts_at_most_once_per_interval_and_then_the_newest_ts(stream):
    layer, channel = overview_listener()
    ingester = Ingester(stream, "test-1", broadcast_interval_s=0.5)
    ingester.ensure_group()

    for offset in (1, 2, 3):
        publish(stream, [request(ts=T0 + offset * 10**9)])
        ingester.process(ingester.read(block_ms=None))
    ingester.broadcast_if_due()  # not yet due
    time.sleep(0.5)
    ingester.broadcast_if_due()
    first, second = received(layer, channel, 2)

    assert (first["latest_ts_ns"], second["latest_ts_ns"]) == (T0 + 10**9, T0 + 3 * 10**9)


@pytest.mark.parametrize(("broadcast_s", "next_in_s"), [(0.0, 0.25), (0.05, 0.5), (0.2, 1.0)])
def test_broadcasts_come_as_often_as_a_tenth_of_the_time_allows(stream, monkeypatch, broadcast_s, next_in_s):
    """Every 0.25 s while a broadcast is cheap, ten times what it took when it is not, and at
    least once per broadcast_interval_s."""
    monkeypatch.setattr(live, "broadcast_overview", lambda _ts: time.sleep(broadcast_s))
    ingester = Ingester(stream, "test-1", broadcast_interval_s=1.0)
    ingester.ensure_group()
    publish(stream, [request(ts=T0)])
    ingester.process(ingester.read(block_ms=None))  # broadcasts: the first is due at once

    assert ingester.ms_until_broadcast(5000) == 5000  # nothing new to tell
    publish(stream, [request(ts=T0 + 10**9)])
    ingester.process(ingester.read(block_ms=None))
    # Counted from the start of the last broadcast.
    assert (next_in_s - broadcast_s) * 1000 - 100 <= ingester.ms_until_broadcast(5000) <= next_in_s * 1000


def test_skipped_records_are_logged_once_per_minute_with_their_reasons(stream, caplog):
    ingester = Ingester(stream, "test-1")
    ingester.ensure_group()
    for _ in range(2):
        publish(stream, [request(duration_ns="slow"), {"kind": "mystery"}])
        ingester.process(ingester.read(block_ms=None))
        ingester.log_skips_if_due()

    (line,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "skipped 2 records" in line
    assert "duration_ns is str, not int (1)" in line and "unknown kind 'mystery' (1)" in line


def test_apply_records_stores_a_batch_without_redis(db):
    host_use = {"kind": "resource", "host": "h1", "ts": T0, "resource.scope": "host"}
    applied = apply_records([request(), request(), agent(), host_use, {"kind": "flow", "flow.event": "open"}])

    assert (applied.records, applied.request_records, applied.ignored) == (4, 2, 1)
    assert applied.latest_request_ts == request()["ts"]
    assert rollup().count == 2


def test_the_command_finishes_its_batch_and_exits_on_sigterm(stream):
    publish(stream, [request()])
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    timer.start()
    try:
        call_command("ingest")  # returns, rather than raising SystemExit or being killed
    finally:
        timer.cancel()

    assert rollup().count == 1
    assert pending(stream) == 0
    assert signal.getsignal(signal.SIGTERM) is before
