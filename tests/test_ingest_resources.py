"""Resource records and TCP health flow records through the real ingest path (aggregate.Batch, the
Ingester's transaction and replay protection) into ResourceUsage and TcpHealth rows."""

import pytest

from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.ingest import Ingester
from obsweb.telemetry.models import Edge, ResourceUsage, Service, TcpHealth
from obsweb.telemetry.records import to_datetime
from obsweb.telemetry.tasks import prune_telemetry
from tests.factories import MINUTE_NS, T0, flow, health, host_resource, now_ns, resource


def usage(service="shop-api", minute=T0) -> ResourceUsage:
    return ResourceUsage.objects.get(service__name=service, minute=to_datetime(minute))


def test_it_sums_a_services_intervals_per_minute_and_keeps_the_latest_memory(db):
    apply_records(
        [
            resource(),
            resource(ts=T0 + 20 * 10**9, **{"process.memory.rss_bytes": 300, "process.count": 5}),
            resource(ts=T0 + 30 * 10**9, **{"process.memory.rss_bytes": 200, "process.count": 1}),
            resource(ts=T0 + MINUTE_NS + 10**9),
        ]
    )

    row = usage()
    assert (row.cpu_time_ns, row.runq_wait_ns, row.runq_waits) == (9 * 10**9, 120_000_000, 60)
    assert (row.net_bytes_sent, row.disk_read_ops, row.disk_wait_ns, row.interval_ns) == (
        3000,
        6,
        9_000_000,
        30 * 10**9,
    )
    assert (row.rss_bytes, row.rss_max_bytes, row.processes) == (200, 100 * 2**20, 5)
    assert row.host.name == "h1"
    assert usage(minute=T0 + MINUTE_NS).cpu_time_ns == 3 * 10**9
    assert list(Service.objects.get(name="shop-api").hosts.values_list("name", flat=True)) == ["h1"]


def test_it_adds_a_later_batch_to_the_same_minute_without_losing_the_latest_memory(db):
    apply_records([resource(ts=T0 + 30 * 10**9, **{"process.memory.rss_bytes": 500})])
    apply_records([resource(ts=T0 + 10 * 10**9, **{"process.memory.rss_bytes": 700})])  # arrived late

    row = usage()
    assert (row.cpu_time_ns, row.rss_bytes, row.rss_max_bytes) == (6 * 10**9, 500, 700)


def test_it_keeps_host_records_as_host_rows(db):
    apply_records([host_resource(), host_resource(**{"system.memory.available_bytes": 4 * 2**30})])

    (row,) = ResourceUsage.objects.filter(service=None)
    assert (row.cpu_time_ns, row.cpu_count, row.memory_total_bytes) == (24 * 10**9, 2, 8 * 2**30)
    assert row.memory_available_bytes == 4 * 2**30
    assert not Service.objects.exists()


def test_it_skips_resource_records_it_cannot_use(db):
    applied = apply_records(
        [
            resource(**{"resource.scope": "galaxy"}),
            resource(**{"service.name": None}),
            resource(**{"process.cpu.time_ns": -1}),
            resource(**{"disk.read_bytes": "lots"}),
        ]
    )

    assert (applied.records, sum(applied.skipped.values())) == (0, 4)
    assert not ResourceUsage.objects.exists()


def test_a_resource_record_without_a_probes_amounts_adds_nothing_for_them(db):
    apply_records([resource(**{"disk.read_bytes": None, "disk.read_ops": None})])

    assert (usage().disk_read_bytes, usage().disk_read_ops, usage().cpu_time_ns) == (0, 0, 3 * 10**9)


def test_it_counts_connections_and_client_side_trouble_on_the_callers_edge(db):
    apply_records(
        [
            flow(),
            flow(),
            health(),
            health(**{"flow.rtt_us": 2500, "flow.retransmits": 0, "flow.resets_sent": 1}),
            health(
                **{
                    "flow.failure": "refused",
                    "flow.rtt_us": None,
                    "flow.resets_received": 0,
                    "flow.retransmits": 0,
                }
            ),
            health(
                **{
                    "flow.failure": "timeout",
                    "flow.rtt_us": None,
                    "flow.resets_received": 0,
                    "flow.retransmits": 0,
                }
            ),
        ]
    )

    row = TcpHealth.objects.get(source__name="nginx", target__name="shop-api")
    assert (row.connections, row.failures, row.failures_refused, row.failures_timeout) == (2, 2, 1, 1)
    assert (row.retransmits, row.resets_sent, row.resets_received) == (2, 1, 2)
    assert (row.rtt_sum_us, row.rtt_samples) == (4000, 2)
    assert Edge.objects.get().count == 2  # health records are no connections of their own


def test_server_side_trouble_counts_on_the_edge_from_the_client(db):
    server = {"span.kind": "server", "service.name": "shop-api", "peer.service": None}
    apply_records(
        [
            health(**server | {"client.address": "10.0.0.7", "client.port": 51000}),
            health(**server | {"client.address": "10.0.0.7", "client.port": 51001}),
            health(**server | {"peer.service": "nginx"}),
            flow(**{"span.kind": "server"}),  # a server's close: the client's gives the edge
        ]
    )

    external = TcpHealth.objects.get(source__name="10.0.0.7", target__name="shop-api")
    assert (external.retransmits, external.resets_received, external.connections) == (4, 2, 0)
    assert Service.objects.get(name="10.0.0.7").external
    assert TcpHealth.objects.get(source__name="nginx").retransmits == 2
    assert not Edge.objects.exists()


def test_it_resolves_an_unknown_client_side_callee_as_an_external_address(db):
    apply_records([health(**{"peer.service": None, "server.address": "::1", "server.port": 6379})])

    assert TcpHealth.objects.get().target.name == "[::1]:6379"


def test_it_skips_health_records_it_cannot_use(db):
    applied = apply_records([health(**{"flow.retransmits": -3}), health(**{"flow.rtt_us": "fast"})])

    assert sum(applied.skipped.values()) == 2
    assert not TcpHealth.objects.exists() and not Service.objects.exists()


def test_a_replayed_stream_entry_changes_nothing(db):
    ingester = Ingester(client=None, consumer="test-1")
    entry = ("1700000000000-0", [resource(), host_resource(), flow(), health()])

    ingester._commit([entry])
    _applied, duplicates = ingester._commit([entry])

    assert duplicates == 1
    assert usage().cpu_time_ns == 3 * 10**9
    assert ResourceUsage.objects.count() == 2
    assert (TcpHealth.objects.get().connections, TcpHealth.objects.get().retransmits) == (1, 2)


def test_a_batch_is_written_in_a_fixed_number_of_queries(db, django_assert_max_num_queries):
    def batch(prefix, n):
        names = [f"{prefix}-{i}" for i in range(n)]
        return [resource(**{"service.name": name}) for name in names] + [
            health(**{"peer.service": name}) for name in names
        ]

    with django_assert_max_num_queries(30) as one:
        apply_records(batch("a", 1))
    with django_assert_max_num_queries(len(one.captured_queries)):
        apply_records(batch("b", 40))
    with django_assert_max_num_queries(len(one.captured_queries)):
        apply_records(batch("b", 40))  # every row there already: updates


@pytest.mark.parametrize("days_ago", [8])
def test_resource_use_and_tcp_health_are_pruned_with_the_minute_rollups(db, settings, days_ago):
    settings.ROLLUP_RETENTION_DAYS = 7
    old = now_ns(seconds_ago=days_ago * 86400)
    apply_records([resource(ts=old), health(ts=old), resource(ts=now_ns()), health(ts=now_ns())])

    deleted = prune_telemetry()

    assert (deleted["resource_usage"], deleted["tcp_health"]) == (1, 1)
    assert ResourceUsage.objects.count() == TcpHealth.objects.count() == 1
