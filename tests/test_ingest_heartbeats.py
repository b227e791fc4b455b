"""Heartbeats and the control plane: worker CPU, a clean stop, throttled probes in the audit log,
the hosts page's tick, and telling workers their desired state again when they lost it."""

from datetime import timedelta

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from obsweb.dashboard.constants import HOSTS_GROUP
from obsweb.fleet.models import AuditEntry, Host
from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.ingest import Ingester
from probes import schema
from tests.factories import T0, agent, now_ns

THROTTLED = "worker at 7.1 % of one core, over its 5 % budget: tls cost the most (4.2 %)"


@pytest.fixture
def stream(control_redis, redis_url, settings, db):
    """A Redis with an empty records stream, wired as the ingester's and the channel layer's."""
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    }
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def ingest(client: redis.Redis, records: list[dict], ingester: Ingester | None = None) -> Ingester:
    ingester = ingester or Ingester(client, "test-1")
    ingester.ensure_group()
    client.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: schema.pack_batch(records)})
    ingester.process(ingester.read(block_ms=None))
    return ingester


def beat(seconds: int, **attrs) -> dict:
    """web-1's heartbeat `seconds` after T0."""
    return agent(host="web-1", ts=T0 + seconds * 10**9, **attrs)


def probes(tls_throttled: str | None = None, **tls) -> dict:
    return {
        "http": {"desired": True, "actual": True, "error": None, "throttled": None},
        "tls": {"desired": True, "actual": tls_throttled is None, "error": None, "throttled": tls_throttled}
        | tls,
    }


def test_it_stores_the_workers_cpu_and_treats_a_missing_or_bad_one_as_unknown(db):
    apply_records([beat(0, **{"agent.cpu_percent": 4.5}), agent(host="old-1", ts=T0)])
    assert Host.objects.get(name="web-1").cpu_percent == 4.5
    assert Host.objects.get(name="old-1").cpu_percent is None  # an agent from before the budget

    apply_records([beat(2, **{"agent.cpu_percent": "lots"})])
    host = Host.objects.get(name="web-1")
    assert (host.cpu_percent, host.last_seen.timestamp()) == (None, T0 / 1e9 + 2)  # the heartbeat counts


def test_a_worker_that_says_it_is_stopping_is_down_at_once(db):
    apply_records([agent(host="web-1", ts=now_ns(1), **{"agent.stopping": True})])
    host = Host.objects.get(name="web-1")
    assert (host.stopped, host.status()) == (True, "down")

    apply_records([agent(host="web-1", ts=now_ns(0))])  # restarted: an ordinary heartbeat
    host = Host.objects.get(name="web-1")
    assert (host.stopped, host.status()) == (False, "up")


@pytest.mark.parametrize(
    ("seconds_ago", "status"), [(4.5, "up"), (5.5, "stale"), (9.5, "stale"), (10.5, "down")]
)
def test_a_killed_worker_is_stale_after_5_seconds_and_down_after_10(db, seconds_ago, status):
    host = Host.objects.create(name="web-1", last_seen=timezone.now() - timedelta(seconds=seconds_ago))
    assert host.status() == status


def test_a_throttled_probe_is_audited_once_with_its_reason_and_again_when_it_runs(db):
    apply_records([beat(0, **{"agent.probes": probes()})])
    apply_records([beat(2, **{"agent.probes": probes(THROTTLED)})])
    apply_records([beat(4, **{"agent.probes": probes(THROTTLED)})])  # still throttled: nothing new
    apply_records([beat(6, **{"agent.probes": probes()})])

    rows = list(
        AuditEntry.objects.values_list("actor", "host__name", "setting", "probe", "old", "new", "reason")
    )
    assert rows == [
        ("agent web-1", "web-1", "tls", "tls", "off", "on", f"no longer throttled (was: {THROTTLED})"),
        ("agent web-1", "web-1", "tls", "tls", "on", "off", THROTTLED),
    ]
    assert AuditEntry.objects.filter(user__isnull=False).count() == 0
    assert AuditEntry.objects.first().at.timestamp() == T0 / 1e9 + 6  # when the heartbeat said so


def test_old_heartbeats_without_throttle_keys_write_no_audit(db):
    apply_records([beat(0), beat(2), beat(4, **{"agent.probes": {"http": "garbage"}})])
    assert not AuditEntry.objects.exists()


def test_heartbeats_are_written_in_a_fixed_number_of_queries(db, django_assert_max_num_queries):
    def batch(hosts: int, offset: int) -> list[dict]:
        return [
            agent(
                host=f"web-{i:02}",
                ts=T0 + (offset + step) * 10**9,
                **{"agent.probes": probes(THROTTLED if step else None)},
            )
            for i in range(hosts)
            for step in (0, 1)
        ]

    apply_records(batch(30, 0))  # register them
    with django_assert_max_num_queries(8) as few:
        apply_records(batch(2, 10))
    with django_assert_max_num_queries(len(few.captured_queries)):
        apply_records(batch(30, 20))
    # Each batch throttles every host in its second heartbeat, after running it in its first.
    assert (AuditEntry.objects.filter(new="off").count(), AuditEntry.objects.filter(new="on").count()) == (
        62,
        32,
    )


def test_the_ingester_ticks_the_hosts_page_after_heartbeats(stream):
    layer = get_channel_layer()
    async_to_sync(layer.group_add)(HOSTS_GROUP, "test.hosts")

    ingest(stream, [beat(0)])

    message = async_to_sync(layer.receive)("test.hosts")
    assert message["type"] == "hosts.changed"


def test_the_ingester_tells_a_new_host_its_desired_state(stream, control_redis, control_channel):
    ingest(stream, [beat(0)])

    stored = control_redis.hgetall(schema.control_key("web-1"))
    assert {stored[p] for p in schema.PROBES} == {"1"}
    assert schema.CONTROL_REDACTION in stored
    assert control_channel() == ["web-1"]


def test_the_ingester_repairs_a_lost_control_hash_once_per_interval(stream, control_redis, control_channel):
    apply_records([beat(0)])
    Host.objects.filter(name="web-1").update(desired_probes={"http": False})  # no hash: Redis lost it

    # The worker came back with the defaults: it reports http desired on.
    ingester = ingest(stream, [beat(2, **{"agent.probes": probes()})])
    ingest(stream, [beat(4, **{"agent.probes": probes()})], ingester)

    assert control_redis.hget(schema.control_key("web-1"), "http") == "0"
    assert control_channel() == ["web-1"]  # once: the next heartbeat may not have seen it yet


def test_the_ingester_rewrites_every_hash_when_it_connects(stream, control_redis, control_channel):
    Host.objects.create(name="web-1", cpu_budget_percent=3.0)
    Host.objects.create(name="web-2", desired_probes={"tls": False})

    Ingester(stream, "test-1").publish_control()

    assert control_redis.hget(schema.control_key("web-1"), schema.CONTROL_CPU_BUDGET) == "3.0"
    assert control_redis.hget(schema.control_key("web-2"), "tls") == "0"
    assert control_channel() == [schema.CONTROL_ALL_HOSTS]
