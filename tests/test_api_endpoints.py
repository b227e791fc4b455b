import pytest

from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.models import Endpoint
from tests.factories import ALLOWED, api_client, db_request, now_ns, request


@pytest.fixture(autouse=True)
def api_settings(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


@pytest.fixture
def traffic(db):
    ts = now_ns(seconds_ago=60)
    apply_records(
        [
            *(request(ts=ts, duration_ns=10_000_000) for _ in range(4)),
            request(ts=ts, **{"http.response.status_code": 500, "error": True}),
            request(
                ts=ts,
                **{"http.request.method": "POST", "http.route": "/orders", "http.response.status_code": 201},
            ),
            *(db_request(ts=ts) for _ in range(2)),
            db_request(
                ts=ts,
                **{
                    "service.name": "kafka",
                    "network.protocol.name": "kafka",
                    "db.operation.name": "produce",
                    "db.collection.name": None,
                    "messaging.destination.name": "orders",
                },
            ),
        ]
    )


def endpoints(client, service: str, **params) -> list[dict]:
    response = client.get(f"/api/v1/services/{service}/endpoints", params)
    assert response.status_code == 200, response.content
    return response.json()["endpoints"]


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_it_lists_a_services_endpoints_to_staff_and_viewers(personas, traffic, persona, how):
    rows = endpoints(api_client(personas, persona, how), "shop-api")

    assert [(row["method"], row["route"]) for row in rows] == [("GET", "/users/{id}"), ("POST", "/orders")]


def test_it_refuses_outsiders_with_401(personas, traffic):
    assert api_client(personas, "outsider").get("/api/v1/services/shop-api/endpoints").status_code == 401


def test_an_http_endpoint_has_the_documented_shape(personas, traffic):
    users = endpoints(api_client(personas, "viewer"), "shop-api")[0]

    assert users == {
        "id": Endpoint.objects.get(route="/users/{id}").id,
        "method": "GET",
        "route": "/users/{id}",
        "requests": 5,
        "errors": 1,
        "p50_ms": pytest.approx(10, rel=0.02),
        "p90_ms": pytest.approx(10, rel=0.02),
        "p99_ms": pytest.approx(10, rel=0.02),
        "total_ms": pytest.approx(4 * 10 + 1.235, abs=0.001),  # four of 10 ms, the failing one of 1.2
        "status_codes": {"200": 4, "500": 1},
    }


def test_other_protocols_name_the_operation_and_its_table_or_topic(personas, traffic):
    client = api_client(personas, "viewer")

    (select,) = endpoints(client, "postgres")
    (produce,) = endpoints(client, "kafka")

    assert (select["operation"], select["table"], select["requests"]) == ("SELECT", "users", 2)
    assert select["status_codes"] == {"0": 2}
    assert (produce["operation"], produce["topic"]) == ("produce", "orders")
    assert "route" not in select and "method" not in produce


def test_an_unknown_service_is_a_404_with_a_message(personas, traffic):
    response = api_client(personas, "viewer").get("/api/v1/services/nope/endpoints")

    assert response.status_code == 404
    assert response.json() == {"detail": "no service named 'nope'"}


def test_a_known_service_without_traffic_in_the_window_has_no_endpoints(personas, traffic):
    assert endpoints(api_client(personas, "viewer"), "shop-api", since="-10m", until="-5m") == []


def test_it_rejects_a_bad_window_with_400(personas, traffic):
    response = api_client(personas, "viewer").get("/api/v1/services/shop-api/endpoints", {"since": "soon"})

    assert response.status_code == 400
    assert "since='soon'" in response.json()["detail"]
