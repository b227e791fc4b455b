"""Ingesting database and queue requests: pipelines, one endpoint per normalized query, errors."""

import hashlib

import pytest

from obsweb.telemetry import histogram
from obsweb.telemetry.aggregate import QUERY_MAX_CHARS, apply_records
from obsweb.telemetry.models import Edge, Endpoint, RequestSample, Rollup, Service
from tests.factories import (
    MINUTE_NS,
    T0,
    caller_side,
    kafka_request,
    mongodb_request,
    postgres_error,
    postgres_request,
    redis_request,
    request,
)

USERS_BY_ID = "SELECT * FROM users WHERE id = ?"
USERS_BY_EMAIL = "SELECT name FROM users WHERE email = ?"


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_a_pipelined_redis_record_counts_every_command(db):
    apply_records(
        [redis_request(**{"request.count": 10}, duration_ns=2_000_000), redis_request(duration_ns=500_000)]
    )

    (get,) = Rollup.objects.filter(service__name="redis:6379")
    assert (get.count, get.errors, get.duration_sum_ns) == (11, 0, 2_500_000)
    assert histogram.count(get.histogram) == 11
    assert histogram.quantile(get.histogram, 0.5) == pytest.approx(2_000_000, rel=0.02)
    assert (get.endpoint.operation, get.endpoint.query) == ("GET", "GET ?")


def test_a_failing_pipeline_is_one_error(db):
    apply_records([redis_request(**{"request.count": 5, "error": True, "error.type": "WRONGTYPE"})])

    assert Rollup.objects.values_list("count", "errors").get() == (5, 1)


def test_the_callers_side_of_a_pipeline_counts_every_command_on_its_edge(db):
    apply_records([caller_side(redis_request(**{"request.count": 10})), caller_side(postgres_request())])

    redis = Edge.objects.get(target__name="redis:6379")
    assert (redis.source.name, redis.protocol, redis.count) == ("shop-api", "redis", 10)
    assert histogram.count(redis.histogram) == 10
    assert Edge.objects.get(target__name="postgres:5432").protocol == "postgresql"
    assert not Rollup.objects.exists()


def test_literal_variants_of_a_query_are_one_endpoint_with_summed_counts_and_latency(db):
    # The host replaced the literals of `... id = 7` and `... id = 8`: both arrive as the same text.
    apply_records([postgres_request(duration_ns=1_000_000), postgres_request(duration_ns=3_000_000)])
    apply_records([postgres_request(duration_ns=2_000_000, ts=T0 + MINUTE_NS)])  # a later batch

    endpoint = Endpoint.objects.get(service__name="postgres:5432")
    assert (endpoint.protocol, endpoint.operation, endpoint.target) == ("postgresql", "SELECT", "users")
    assert (endpoint.query, endpoint.query_hash) == (USERS_BY_ID, sha16(USERS_BY_ID))
    assert endpoint.query_summary == "SELECT users"
    rollups = Rollup.objects.filter(endpoint=endpoint)
    assert sorted(rollups.values_list("count", "duration_sum_ns")) == [(1, 2_000_000), (2, 4_000_000)]
    merged = histogram.merge({}, rollups[0].histogram)
    histogram.merge(merged, rollups[1].histogram)
    assert histogram.quantile(merged, 1) == pytest.approx(3_000_000, rel=0.02)


def test_a_different_query_on_the_same_table_is_another_endpoint(db):
    apply_records(
        [
            postgres_request(),
            postgres_request(**{"db.query.text": USERS_BY_EMAIL}),
            postgres_request(**{"db.query.text": USERS_BY_EMAIL}),
        ]
    )

    counts = dict(Rollup.objects.values_list("endpoint__query", "count"))
    assert counts == {USERS_BY_ID: 1, USERS_BY_EMAIL: 2}
    assert set(Endpoint.objects.values_list("operation", "target")) == {("SELECT", "users")}


def test_a_failed_postgres_query_is_sampled_with_its_error_type(db):
    failed = postgres_error()
    apply_records([failed])

    sample = RequestSample.objects.get()
    assert (sample.error, sample.status_code) == (True, 0)
    assert sample.attributes["error.type"] == sample.attributes["db.response.status_code"] == "42P01"
    assert sample.attributes == failed
    rollup = Rollup.objects.get()
    assert (rollup.status_code, rollup.count, rollup.errors) == (0, 1, 1)
    assert rollup.endpoint.target == "missing"


def test_a_kafka_produce_is_an_endpoint_named_by_its_topic(db):
    apply_records([kafka_request(), kafka_request()])

    endpoint = Endpoint.objects.get()
    assert (endpoint.protocol, endpoint.operation, endpoint.target) == ("kafka", "Produce", "orders")
    assert (endpoint.query, endpoint.query_hash) == ("", "")
    assert endpoint.rollups.get().count == 2


def test_a_service_is_marked_with_the_protocol_it_serves(db):
    apply_records([mongodb_request(), caller_side(mongodb_request()), request()])

    assert dict(Service.objects.values_list("name", "protocol")) == {
        "mongo:27017": "mongodb",
        "shop-api": "http",
    }


def test_an_overlong_query_text_is_cut_and_hashed_as_stored(db):
    long_query = "SELECT " + ", ".join(f"c{i}" for i in range(2000)) + " FROM wide"
    apply_records([postgres_request(**{"db.query.text": long_query})])

    endpoint = Endpoint.objects.get()
    assert endpoint.query == long_query[:QUERY_MAX_CHARS]
    assert endpoint.query_hash == sha16(long_query[:QUERY_MAX_CHARS])


@pytest.mark.parametrize(
    ("count", "reason"),
    [
        (0, "request.count is not positive"),
        (-3, "request.count is not positive"),
        ("10", "request.count is str, not int"),
        (2.0, "request.count is float, not int"),
        (True, "request.count is bool, not int"),
        (10**7, "request.count is over 1000000"),
    ],
)
def test_a_record_with_a_bad_request_count_is_skipped_with_the_reason(db, count, reason):
    applied = apply_records(
        [redis_request(**{"request.count": count}), caller_side(redis_request(**{"request.count": count}))]
    )

    assert applied.skipped == {reason: 2}
    assert not Rollup.objects.exists() and not Edge.objects.exists()
