import pytest

from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.records import to_datetime
from tests.factories import ALLOWED, T0, api_client, client_request, flow, now_ns

URL = "/api/v1/edges"
EDGE_KEYS = {
    "source",
    "target",
    "total_ms",
    "protocol",
    "requests",
    "errors",
    "p99_ms",
    "bytes",
    "rps",
    "target_external",
    "tcp",  # TCP health of the pair: tests/test_api_resources.py
}


@pytest.fixture(autouse=True)
def api_settings(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


@pytest.fixture
def traffic(db):
    """nginx calls shop-api three times (one 502) over one connection, and an external API once."""
    ts = now_ns(seconds_ago=60)
    apply_records(
        [
            client_request(ts=ts, duration_ns=2_000_000),
            client_request(ts=ts, duration_ns=4_000_000),
            client_request(
                ts=ts, duration_ns=100_000_000, **{"http.response.status_code": 502, "error": True}
            ),
            flow(ts=ts),
            client_request(ts=ts, **{"peer.service": None, "server.address": "10.0.0.9", "server.port": 443}),
        ]
    )


def edges(client, **params) -> list[dict]:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()["edges"]


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_it_lists_edges_to_staff_and_viewers(personas, traffic, persona, how):
    rows = edges(api_client(personas, persona, how))

    assert [(row["source"], row["target"], row["protocol"]) for row in rows] == [
        ("nginx", "shop-api", "http"),
        ("nginx", "10.0.0.9:443", "http"),
        ("nginx", "shop-api", "tcp"),
    ]


def test_it_refuses_outsiders_with_401(personas, traffic):
    assert api_client(personas, "outsider").get(URL).status_code == 401


def test_an_edge_has_the_documented_shape(personas, traffic):
    http = edges(api_client(personas, "viewer"))[0]

    assert set(http) == EDGE_KEYS
    assert (http["requests"], http["errors"], http["bytes"]) == (3, 1, 3 * (120 + 560))
    assert http["p99_ms"] == pytest.approx(4, rel=0.02)  # lower nearest rank of three
    assert http["total_ms"] > 0
    assert http["target_external"] is False


def test_it_marks_callees_it_could_not_resolve_as_external(personas, traffic):
    external = edges(api_client(personas, "viewer"))[1]

    assert (external["target"], external["target_external"]) == ("10.0.0.9:443", True)


def test_a_tcp_edge_counts_connections_and_their_bytes(personas, traffic):
    tcp = edges(api_client(personas, "viewer"))[2]

    assert (tcp["requests"], tcp["bytes"], tcp["p99_ms"]) == (1, 2100, pytest.approx(5, rel=0.02))


def test_it_sums_minutes_and_divides_by_the_time_they_cover(personas):
    apply_records([client_request(ts=T0 + 10**9), *(client_request(ts=T0 + 61 * 10**9) for _ in range(2))])
    window = {"since": to_datetime(T0).isoformat(), "until": to_datetime(T0 + 120 * 10**9).isoformat()}

    (edge,) = edges(api_client(personas, "viewer"), **window)

    assert (edge["requests"], edge["rps"]) == (3, 0.025)


def test_it_rejects_a_bad_window_with_400(personas, traffic):
    response = api_client(personas, "viewer").get(URL, {"since": "-1h", "until": "-1h"})

    assert response.status_code == 400
    assert "must be before until" in response.json()["detail"]


def test_the_query_count_does_not_grow_with_the_number_of_edges(personas, django_assert_max_num_queries):
    ts = now_ns(seconds_ago=60)
    apply_records([client_request(ts=ts, **{"peer.service": f"svc-{i}"}) for i in range(30)])
    client = api_client(personas, "viewer", "token")

    # token lookup, sums, histograms, tcp health, services
    with django_assert_max_num_queries(5):
        assert len(edges(client)) == 30
