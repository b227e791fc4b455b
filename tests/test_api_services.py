from datetime import timedelta

import pytest

from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.records import to_datetime
from tests.factories import ALLOWED, T0, api_client, client_request, db_request, now_ns, request

URL = "/api/v1/services"
SERVICE_KEYS = {
    "name",
    "hosts",
    "protocol",
    "requests",
    "rps",
    "errors",
    "client_errors",
    "error_rate",
    "p50_ms",
    "p90_ms",
    "p99_ms",
}


@pytest.fixture(autouse=True)
def api_settings(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


@pytest.fixture
def traffic(db):
    """Within the default window: shop-api on two hosts (one 404, one 500) and a smaller postgres."""
    ts = now_ns(seconds_ago=60)
    apply_records(
        [
            *(request(ts=ts, duration_ns=ms * 1_000_000) for ms in range(1, 101)),
            request(ts=ts, host="h2", **{"http.response.status_code": 404}),
            request(ts=ts, **{"http.response.status_code": 500, "error": True}),
            *(db_request(ts=ts) for _ in range(3)),
            client_request(ts=ts, **{"peer.service": None, "server.address": "10.0.0.9", "server.port": 443}),
        ]
    )


def services(client, **params) -> list[dict]:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()["services"]


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_it_lists_services_to_staff_and_viewers(personas, traffic, persona, how):
    rows = services(api_client(personas, persona, how))

    assert [row["name"] for row in rows] == ["shop-api", "postgres"]


def test_it_refuses_outsiders_with_401(personas, traffic):
    response = api_client(personas, "outsider").get(URL)

    assert response.status_code == 401
    assert "detail" in response.json()


def test_it_answers_the_documented_shape(personas, traffic):
    (shop, postgres) = services(api_client(personas, "viewer"))

    assert set(shop) == SERVICE_KEYS
    assert shop["hosts"] == ["h1", "h2"]
    assert (shop["protocol"], postgres["protocol"]) == ("http", "postgresql")
    assert (shop["requests"], postgres["requests"]) == (102, 3)


def test_it_counts_server_errors_apart_from_client_errors(personas, traffic):
    shop = services(api_client(personas, "viewer"))[0]

    assert (shop["errors"], shop["client_errors"]) == (1, 1)
    assert shop["error_rate"] == pytest.approx(1 / 102)


def test_percentiles_come_from_the_merged_histograms(personas, traffic):
    shop = services(api_client(personas, "viewer"))[0]

    # 100 requests of 1..100 ms plus two of 1.23 ms: the lower nearest ranks are 49.0, 89.0 and 98.0 ms.
    assert shop["p50_ms"] == pytest.approx(49, rel=0.02)
    assert shop["p90_ms"] == pytest.approx(89, rel=0.02)
    assert shop["p99_ms"] == pytest.approx(98, rel=0.02)


def test_it_leaves_out_external_services(personas, traffic):
    assert "10.0.0.9:443" not in {row["name"] for row in services(api_client(personas, "viewer"))}


def test_it_divides_requests_by_the_minutes_the_window_covers(personas):
    apply_records([request(ts=T0 + 10**9) for _ in range(30)])
    window = {
        "since": to_datetime(T0 + 20 * 10**9).isoformat(),
        "until": to_datetime(T0 + 40 * 10**9).isoformat(),
    }

    (shop,) = services(api_client(personas, "viewer"), **window)

    assert shop["requests"] == 30  # the whole overlapping minute
    assert shop["rps"] == 0.5


def test_a_window_without_traffic_is_an_empty_list(personas, traffic):
    assert (
        services(api_client(personas, "viewer"), since="2020-01-01T00:00:00Z", until="2020-01-02T00:00:00")
        == []
    )


def test_it_accepts_relative_and_iso_windows(personas, traffic):
    client = api_client(personas, "viewer")
    since = (to_datetime(now_ns()) - timedelta(hours=1)).isoformat()

    assert len(services(client, since="-1h")) == len(services(client, since=since)) == 2
    assert services(client, since="-10m", until="-5m") == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "since='yesterday' is neither relative"),
        ({"since": "-15x"}, "since='-15x'"),
        ({"since": "-1h", "until": "-2h"}, "must be before until"),
        ({"until": "2020-13-01"}, "until='2020-13-01'"),
    ],
)
def test_it_rejects_a_bad_window_with_400_and_a_message(personas, params, message):
    response = api_client(personas, "viewer").get(URL, params)

    assert response.status_code == 400
    assert message in response.json()["detail"]


# Past the ends of what a datetime holds, turning the window to UTC or stepping it by a minute
# overflowed: a 500 (found by tests/test_api_fuzz.py).
@pytest.mark.parametrize(
    "params",
    [
        {"since": "2000-01-01T00:00:00Z", "until": "-1000000d"},
        {"since": "0001-01-01T00:00:00+05:00"},
        {"since": "-1h", "until": "9999-12-31T23:59:00-05:00"},
    ],
)
def test_a_window_beyond_the_calendar_is_a_400_not_a_500(personas, params):
    response = api_client(personas, "viewer").get(URL, params)

    assert response.status_code == 400
    assert response.json()["detail"] == "since and until must lie between 0001-01-02 and 9999-12-30 (UTC)"


def test_the_query_count_does_not_grow_with_the_number_of_services(personas, django_assert_max_num_queries):
    ts = now_ns(seconds_ago=60)
    apply_records([request(ts=ts, host=f"h{i}", **{"service.name": f"svc-{i}"}) for i in range(30)])
    client = api_client(personas, "viewer", "token")

    # token lookup, sums, histograms, services, their hosts
    with django_assert_max_num_queries(5):
        assert len(services(client)) == 30
