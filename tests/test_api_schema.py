import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator

from obsweb.api import serializers
from obsweb.telemetry.aggregate import apply_records
from tests.factories import ALLOWED, api_client, client_request, now_ns, request


@pytest.fixture(autouse=True)
def api_settings(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


def test_the_api_schema_generates_without_warnings_or_errors():
    GENERATOR_STATS.reset()
    with GENERATOR_STATS.silence():  # counted, not printed
        schema = SchemaGenerator(urlconf="obsweb.api.urls").get_schema(request=None, public=True)

    assert (dict(GENERATOR_STATS._warn_cache), dict(GENERATOR_STATS._error_cache)) == ({}, {})
    assert {
        "/api/v1/services",
        "/api/v1/services/{name}/endpoints",
        "/api/v1/edges",
        "/api/v1/requests",
        "/api/v1/hosts",
        "/api/v1/hosts/{name}",
        "/api/v1/hosts/{name}/probes",
        "/healthz",
    } <= set(schema["paths"])
    limit = next(p for p in schema["paths"]["/api/v1/requests"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "maximum": 1000, "minimum": 1, "default": 100}


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_it_serves_the_schema_to_staff_and_viewers(personas, persona, how):
    response = api_client(personas, persona, how).get("/api/schema/")

    assert response.status_code == 200
    assert b"/api/v1/services" in response.content


def test_it_refuses_the_schema_to_outsiders_with_401(personas):
    assert api_client(personas, "outsider").get("/api/schema/").status_code == 401


def test_the_documented_shapes_match_what_the_views_answer(personas):
    """The response serializers only document; this keeps them in step with the queries."""
    ts = now_ns(seconds_ago=60)
    apply_records([request(ts=ts), client_request(ts=ts)])
    client = api_client(personas, "viewer")

    (service,) = client.get("/api/v1/services").json()["services"]
    (edge,) = client.get("/api/v1/edges").json()["edges"]
    (endpoint,) = client.get("/api/v1/services/shop-api/endpoints").json()["endpoints"]

    assert set(service) == set(serializers.ServiceSummary().fields)
    assert set(edge) == set(serializers.EdgeSummary().fields)
    assert set(endpoint) <= set(serializers.EndpointSummary().fields)
    required = {name for name, field in serializers.EndpointSummary().fields.items() if field.required}
    assert required <= set(endpoint)
