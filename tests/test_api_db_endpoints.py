"""GET /api/v1/services/<name>/endpoints for databases and queues: one row per normalized query."""

import pytest

from obsweb.api import serializers
from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.models import Endpoint
from tests.factories import (
    ALLOWED,
    api_client,
    kafka_request,
    mongodb_request,
    mysql_request,
    now_ns,
    postgres_error,
    postgres_request,
    redis_request,
)

USERS_BY_ID = "SELECT * FROM users WHERE id = ?"
USERS_REPORT = "SELECT count(*) FROM users WHERE created > ?"
MISSING_BY_ID = "SELECT * FROM missing WHERE id = ?"
DB_ENDPOINT_KEYS = {"id", "operation", "query", "query_summary", "requests", "errors", "p50_ms", "p90_ms",
                    "p99_ms", "total_ms", "status_codes"}  # fmt: skip


@pytest.fixture(autouse=True)
def api_settings(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


@pytest.fixture
def traffic(db):
    """PostgreSQL: a frequent fast query, a rare slow one, a failing one; one of each other protocol."""
    ts = now_ns(seconds_ago=60)
    apply_records(
        [
            *(postgres_request(ts=ts, duration_ns=ms * 1_000_000) for ms in (1, 1, 2, 4)),
            *(
                postgres_request(
                    ts=ts,
                    duration_ns=500_000_000,
                    **{"db.query.text": USERS_REPORT, "db.query.summary": "SELECT users"},
                )
                for _ in range(2)
            ),
            postgres_error(ts=ts, duration_ns=300_000),
            mysql_request(ts=ts),
            redis_request(ts=ts, **{"request.count": 10}),
            mongodb_request(ts=ts),
            kafka_request(ts=ts),
        ]
    )


def endpoints(client, service: str, **params) -> list[dict]:
    response = client.get(f"/api/v1/services/{service}/endpoints", params)
    assert response.status_code == 200, response.content
    return response.json()["endpoints"]


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_it_lists_a_databases_queries_to_staff_and_viewers(personas, traffic, persona, how):
    rows = endpoints(api_client(personas, persona, how), "postgres:5432")

    assert [row["query"] for row in rows] == [USERS_BY_ID, USERS_REPORT, MISSING_BY_ID]


def test_it_refuses_outsiders_with_401(personas, traffic):
    response = api_client(personas, "outsider").get("/api/v1/services/postgres:5432/endpoints")

    assert response.status_code == 401


def test_a_query_endpoint_has_the_documented_shape(personas, traffic):
    by_id = endpoints(api_client(personas, "viewer"), "postgres:5432")[0]

    assert by_id == {
        "id": Endpoint.objects.get(query=USERS_BY_ID).id,
        "operation": "SELECT",
        "table": "users",
        "query": USERS_BY_ID,
        "query_summary": "SELECT users",
        "requests": 4,
        "errors": 0,
        "p50_ms": pytest.approx(1, rel=0.02),
        "p90_ms": pytest.approx(2, rel=0.02),
        "p99_ms": pytest.approx(2, rel=0.02),
        "total_ms": 8.0,
        "status_codes": {"0": 4},
    }


@pytest.mark.parametrize(
    ("service", "target_key", "target", "operation"),
    [
        ("postgres:5432", "table", "users", "SELECT"),
        ("mysql:3306", "table", "orders", "UPDATE"),
        ("redis:6379", "table", "", "GET"),
        ("mongo:27017", "collection", "carts", "find"),
        ("kafka:9092", "topic", "orders", "Produce"),
    ],
)
def test_each_protocol_names_its_target_as_that_protocol_does(
    personas, traffic, service, target_key, target, operation
):
    row = endpoints(api_client(personas, "viewer"), service)[0]

    assert set(row) == DB_ENDPOINT_KEYS | {target_key}
    assert (row["operation"], row[target_key]) == (operation, target)
    assert set(row) <= set(serializers.EndpointSummary().fields)


def test_a_pipeline_counts_every_command(personas, traffic):
    (get,) = endpoints(api_client(personas, "viewer"), "redis:6379")

    assert (get["query"], get["requests"], get["errors"]) == ("GET ?", 10, 0)


def test_a_summary_the_record_lacked_is_the_operation_and_target(personas, traffic):
    client = api_client(personas, "viewer")

    assert endpoints(client, "redis:6379")[0]["query_summary"] == "GET"
    assert endpoints(client, "kafka:9092")[0]["query_summary"] == "Produce orders"
    assert endpoints(client, "kafka:9092")[0]["query"] == ""


def test_a_failing_query_counts_its_errors(personas, traffic):
    missing = endpoints(api_client(personas, "viewer"), "postgres:5432")[2]

    assert (missing["table"], missing["requests"], missing["errors"]) == ("missing", 1, 1)
    assert missing["total_ms"] == 0.3


def test_sort_total_time_lists_the_queries_that_take_the_most_time_first(personas, traffic):
    rows = endpoints(api_client(personas, "viewer"), "postgres:5432", sort="total_time")

    assert [(row["query"], row["total_ms"]) for row in rows] == [
        (USERS_REPORT, 1000.0),
        (USERS_BY_ID, 8.0),
        (MISSING_BY_ID, 0.3),
    ]


def test_sort_requests_is_the_default(personas, traffic):
    client = api_client(personas, "viewer")

    assert endpoints(client, "postgres:5432", sort="requests") == endpoints(client, "postgres:5432")


def test_it_rejects_an_unknown_sort_with_400_and_a_message(personas, traffic):
    response = api_client(personas, "viewer").get("/api/v1/services/postgres:5432/endpoints", {"sort": "p99"})

    assert response.status_code == 400
    assert response.json() == {"detail": 'sort: "p99" is not a valid choice.'}


def test_databases_and_queues_are_listed_as_services_with_their_protocol(personas, traffic):
    response = api_client(personas, "viewer").get("/api/v1/services")

    protocols = {row["name"]: row["protocol"] for row in response.json()["services"]}
    assert protocols == {
        "postgres:5432": "postgresql",
        "mysql:3306": "mysql",
        "redis:6379": "redis",
        "mongo:27017": "mongodb",
        "kafka:9092": "kafka",
    }


def test_the_query_count_does_not_grow_with_the_number_of_queries(personas, django_assert_max_num_queries):
    ts = now_ns(seconds_ago=60)
    apply_records([postgres_request(ts=ts, **{"db.query.text": f"SELECT c{i} FROM t"}) for i in range(30)])
    client = api_client(personas, "viewer", "token")

    # token lookup, service, sums, histograms, endpoints
    with django_assert_max_num_queries(5):
        assert len(endpoints(client, "postgres:5432", sort="total_time")) == 30
