"""Records into the Redis Stream (probes/publisher.py), against a real redis-server that each test
starts, stops and starts again on the same port as it needs."""

import time

import pytest
import redis

from probes import schema
from probes.publisher import RETRY_INTERVAL_S, Publisher
from tests import helpers

BATCH = schema.BATCH_MAX_RECORDS
DELIVERY_TIMEOUT_S = RETRY_INTERVAL_S + 3.0  # a publisher that saw Redis fail waits this long to retry


def record(seq: int) -> dict:
    return {schema.KIND: schema.KIND_REQUEST, schema.HOST: "web-1", schema.SERVICE: "nginx", "seq": seq}


def client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)  # as the worker's


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def stream_batches(url: str) -> list[list[dict]]:
    """Every stream entry, decoded as the ingester decodes it."""
    entries = client_for(url).xrange(schema.RECORDS_STREAM)
    return [schema.unpack_batch(fields[schema.RECORDS_FIELD]) for _id, fields in entries]


def sequence(batches: list[list[dict]]) -> list[int]:
    return [r["seq"] for batch in batches for r in batch]


def add(publisher: Publisher, seqs: range) -> None:
    """Add records the way the worker does: flushing between bursts."""
    for seq in seqs:
        publisher.add(record(seq))
        if seq % 250 == 0:
            publisher.flush()


def flush_until_empty(publisher: Publisher) -> None:
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while publisher.buffered and time.monotonic() < deadline:
        publisher.flush(force=True)
        time.sleep(0.05)
    assert publisher.buffered == 0, f"{publisher.buffered} records still buffered after {DELIVERY_TIMEOUT_S}s"


@pytest.fixture
def same_port(monkeypatch):
    """Makes the next helpers.redis_server() listen on `port`, where a stopped one listened."""

    def use(port: int) -> None:
        monkeypatch.setattr(helpers, "free_port", lambda: port)

    return use


def test_it_sends_full_batches_at_once_and_keeps_the_rest_open():
    with helpers.redis_server() as url:
        publisher = Publisher(client_for(url))
        for seq in range(2 * BATCH + 1):
            publisher.add(record(seq))
        publisher.flush()
        assert [len(batch) for batch in stream_batches(url)] == [BATCH, BATCH]
        assert (publisher.published, publisher.buffered) == (2 * BATCH, 1)

        publisher.flush(force=True)
        batches = stream_batches(url)
        assert [len(batch) for batch in batches] == [BATCH, BATCH, 1]
        assert sequence(batches) == list(range(2 * BATCH + 1))
        assert batches[2] == [record(2 * BATCH)]
        assert (publisher.published, publisher.buffered) == (2 * BATCH + 1, 0)


def test_it_sends_a_partial_batch_once_it_is_old_enough():
    with helpers.redis_server() as url:
        publisher = Publisher(client_for(url))
        for seq in range(3):
            publisher.add(record(seq))
        publisher.flush()
        assert stream_batches(url) == []
        assert publisher.buffered == 3

        time.sleep(schema.BATCH_MAX_AGE_S)
        publisher.flush()
        assert stream_batches(url) == [[record(0), record(1), record(2)]]
        assert publisher.buffered == 0


def test_it_sends_a_partial_batch_when_forced():
    with helpers.redis_server() as url:
        publisher = Publisher(client_for(url))
        publisher.add(record(0))
        publisher.flush(force=True)
        assert stream_batches(url) == [[record(0)]]


def test_it_sends_nothing_when_there_is_nothing_to_send():
    with helpers.redis_server() as url:
        publisher = Publisher(client_for(url))
        publisher.flush(force=True)
        assert stream_batches(url) == []
        assert (publisher.published, publisher.redis_up) == (0, True)


def test_it_buffers_while_redis_is_down_and_sends_everything_once_when_it_is_back(same_port):
    with helpers.redis_server() as url:
        publisher = Publisher(client_for(url))
        publisher.add(record(-1))
        publisher.flush(force=True)  # connected, and the connection is then cut
        assert publisher.published == 1

    for burst in range(3):
        add(publisher, range(burst * 1500, (burst + 1) * 1500))
        publisher.flush()
        assert publisher.buffered == (burst + 1) * 1500
    assert (publisher.redis_up, publisher.published, publisher.dropped) == (False, 1, 0)

    same_port(port_of(url))
    with helpers.redis_server() as restarted:
        assert restarted == url
        flush_until_empty(publisher)
        batches = stream_batches(url)
        assert sequence(batches) == list(range(4500))  # each exactly once, in order
        assert all(len(batch) <= BATCH for batch in batches)
        assert (publisher.redis_up, publisher.published, publisher.dropped) == (True, 4501, 0)


def test_it_drops_the_newest_records_past_its_buffer_limit_and_counts_them(same_port):
    port = helpers.free_port()  # nothing listens here yet
    publisher = Publisher(client_for(f"redis://127.0.0.1:{port}/0"), buffer_limit=2500)
    add(publisher, range(4500))
    publisher.flush(force=True)
    # The third batch filled the buffer half way through; everything after it was dropped.
    assert (publisher.buffered, publisher.dropped) == (2500, 2000)

    same_port(port)
    with helpers.redis_server() as url:
        flush_until_empty(publisher)
        assert sequence(stream_batches(url)) == list(range(2500))
        assert publisher.published + publisher.dropped == 4500


def test_it_never_holds_more_than_its_buffer_limit_in_sealed_batches():
    publisher = Publisher(client_for(f"redis://127.0.0.1:{helpers.free_port()}/0"), buffer_limit=BATCH)
    add(publisher, range(10 * BATCH))
    publisher.flush(force=True)
    assert (publisher.buffered, publisher.dropped) == (BATCH, 9 * BATCH)
