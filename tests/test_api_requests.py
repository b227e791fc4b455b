import pytest

from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.records import to_datetime
from tests.factories import ALLOWED, T0, api_client, now_ns, postgres_error, request

URL = "/api/v1/requests"


@pytest.fixture(autouse=True)
def api_settings(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast
    settings.SLOW_REQUEST_MS = 1000


@pytest.fixture
def traffic(db):
    """Samples of two services: shop-api's ok, failed and slow requests, and one of billing."""
    ts = now_ns(seconds_ago=60)
    apply_records(
        [
            request(ts=ts - 3 * 10**9, span_id="000000000000000a"),
            request(
                ts=ts - 2 * 10**9,
                span_id="000000000000000b",
                **{"http.response.status_code": 500, "error": True},
            ),
            request(ts=ts - 10**9, span_id="000000000000000c", duration_ns=2_500_000_000),
            request(ts=ts, span_id="000000000000000d", **{"service.name": "billing"}),
        ]
    )


def samples(client, **params) -> list[dict]:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()["requests"]


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_it_lists_sampled_requests_newest_first_to_staff_and_viewers(personas, traffic, persona, how):
    rows = samples(api_client(personas, persona, how))

    assert [row["span_id"] for row in rows] == [f"000000000000000{c}" for c in "dcba"]


def test_it_refuses_outsiders_with_401(personas, traffic):
    assert api_client(personas, "outsider").get(URL).status_code == 401


def test_a_sample_is_the_record_as_received_plus_its_id(personas, traffic):
    row = samples(api_client(personas, "viewer"), service="billing")[0]
    expected = request(**{"service.name": "billing"}, span_id="000000000000000d")

    assert isinstance(row.pop("id"), int)
    assert row == {**expected, "ts": row["ts"]}


def test_it_filters_by_service_status_and_duration(personas, traffic):
    client = api_client(personas, "viewer")

    assert {row["service.name"] for row in samples(client, service="shop-api")} == {"shop-api"}
    assert [row["span_id"] for row in samples(client, status=500)] == ["000000000000000b"]
    assert [row["span_id"] for row in samples(client, min_duration_ms=2000)] == ["000000000000000c"]
    assert samples(client, service="nope") == []


def test_it_returns_at_most_limit_requests(personas, traffic):
    assert len(samples(api_client(personas, "viewer"), limit=2)) == 2


def test_it_applies_a_window_when_one_is_given(personas, traffic):
    apply_records([request(ts=T0 + 10**9)])
    client = api_client(personas, "viewer")

    assert len(samples(client)) == 5  # no window: any age
    assert len(samples(client, since="-15m")) == 4
    old = samples(client, since=to_datetime(T0).isoformat(), until=to_datetime(T0 + 60 * 10**9).isoformat())
    assert [row["ts"] for row in old] == [T0 + 10**9]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit: Ensure this value is greater than or equal to 1."),
        ({"limit": "1001"}, "limit: Ensure this value is less than or equal to 1000."),
        ({"limit": "many"}, "limit: A valid integer is required."),
        ({"status": "5xx"}, "status: A valid integer is required."),
        ({"min_duration_ms": "-1"}, "min_duration_ms: Ensure this value is greater than or equal to 0."),
        ({"since": "last week"}, "since='last week' is neither relative"),
    ],
)
def test_it_rejects_bad_parameters_with_400_and_a_message(personas, params, message):
    response = api_client(personas, "viewer").get(URL, params)

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_a_failed_database_query_is_listed_with_its_error_type_and_status(personas):
    apply_records([postgres_error(ts=now_ns(seconds_ago=60))])

    (row,) = samples(api_client(personas, "viewer"), service="postgres:5432")

    assert (row["error"], row["error.type"], row["db.response.status_code"]) == (True, "42P01", "42P01")
    assert (row["db.query.text"], row["network.protocol.name"]) == (
        "SELECT * FROM missing WHERE id = ?",
        "postgresql",
    )
