"""The request-path pages: one request's waterfall, and the Sankey of an endpoint's paths."""

import pytest

from obsweb.telemetry.models import Endpoint
from probes import schema
from tests.seed import seed_sample, seed_service

HOSTILE = '"><img src=x onerror=alert(1)>'
ESCAPED = "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FRONT_TO_API = {schema.CLIENT_ADDRESS: "127.0.0.1", schema.CLIENT_PORT: 50000,
                schema.SERVER_ADDRESS: "127.0.0.1", schema.SERVER_PORT: 8001}  # fmt: skip


@pytest.fixture
def viewer_client(client, personas):
    client.force_login(personas["viewer"])
    return client


def span(service, kind, span_id, *, parent="", trace=TRACE, seconds_ago=10, duration_ms=10.0, **attrs):
    sample = seed_sample(
        service,
        duration_ms=duration_ms,
        seconds_ago=seconds_ago,
        **{schema.TRACE_ID: trace, schema.SPAN_ID: span_id, schema.PARENT_SPAN_ID: parent} | attrs,
    )
    sample.span_kind = kind
    sample.connection = "127.0.0.1:50000>127.0.0.1:8001" if attrs.get(schema.CLIENT_PORT) else ""
    sample.save()
    return sample


@pytest.fixture
def checkout(db):
    """frontend serves GET /checkout and calls api, whose server span has a trace id of its own:
    the two are joined by their TCP connection. api then calls a slow database."""
    seed_service("frontend", route="/checkout")
    span("frontend", "server", "f1", duration_ms=200, **{schema.HTTP_ROUTE: "/checkout"})
    span("frontend", "client", "f2", parent="f1", duration_ms=190,
         **{schema.HTTP_ROUTE: "/orders/{id}", schema.PEER_SERVICE: "api"}, **FRONT_TO_API)  # fmt: skip
    span("api", "server", "a1", trace="a" * 32, duration_ms=180,
         **{schema.HTTP_ROUTE: "/orders/{id}", "user_agent.original": HOSTILE}, **FRONT_TO_API)  # fmt: skip
    span("api", "client", "a2", parent="a1", trace="a" * 32, duration_ms=150,
         **{schema.HTTP_METHOD: None, schema.DB_OPERATION: "SELECT", schema.DB_COLLECTION: HOSTILE,
            schema.PEER_SERVICE: "postgres:5432"})  # fmt: skip
    span("api", "client", "a3", parent="a1", trace="a" * 32, duration_ms=2,
         **{schema.HTTP_METHOD: None, schema.DB_OPERATION: "GET",
            schema.PEER_SERVICE: "redis:6379"})  # fmt: skip


def test_it_sends_anonymous_visitors_to_login(client, checkout):
    response = client.get(f"/traces/{TRACE}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_it_draws_the_whole_path_from_either_trace_id(viewer_client, checkout):
    for trace in (TRACE, "a" * 32):
        response = viewer_client.get(f"/traces/{trace}/")
        assert response.status_code == 200
        names = [(s["service"], s["kind"], s["depth"]) for s in response.context["spans"]]
        assert names == [
            ("frontend", "server", 0),
            ("frontend", "client", 1),
            ("api", "server", 2),
            ("api", "client", 3),
            ("api", "client", 3),
        ]


def test_it_names_where_the_time_went_not_every_caller_above_it(viewer_client, checkout):
    response = viewer_client.get(f"/traces/{TRACE}/")
    bottleneck = response.context["bottleneck"]
    # frontend 200 ms > its call 190 > api 180 > its query 150 (whose server is not traced here)
    assert (bottleneck["service"], bottleneck["callee"]) == ("api", "postgres:5432")
    assert bottleneck["own_ms"] == pytest.approx(150)
    assert bottleneck["share"] == pytest.approx(0.75)
    assert "call to <strong>postgres:5432</strong>" in response.content.decode()


def test_it_escapes_captured_strings(viewer_client, checkout):
    html = viewer_client.get(f"/traces/{TRACE}/").content.decode()
    assert HOSTILE not in html
    assert ESCAPED in html or "\\u0022\\u003E\\u003Cimg" in html  # table text, or the JSON island


def test_it_answers_404_with_an_explanation_for_an_unknown_trace(viewer_client, db):
    response = viewer_client.get("/traces/%3Cb%3Ex%3Cb%3E/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "<b>x<b>" not in html and "&lt;b&gt;x&lt;b&gt;" in html and "Requests are sampled" in html


def test_the_api_gives_the_spans_with_their_linked_parents(viewer_client, checkout):
    body = viewer_client.get(f"/api/v1/traces/{TRACE}").json()
    parents = {s["span_id"]: s["parent_span_id"] for s in body["spans"]}
    assert parents == {"f1": "", "f2": "f1", "a1": "f2", "a2": "a1", "a3": "a1"}
    assert body["truncated"] is False


def test_the_paths_page_draws_the_calls_through_an_endpoint(viewer_client, checkout):
    endpoint = Endpoint.objects.get(service__name="frontend", route="/checkout")
    for sample in endpoint.service.samples.filter(span_kind="server"):
        sample.endpoint = endpoint
        sample.save()

    response = viewer_client.get(f"/services/frontend/paths/{endpoint.id}/?since=-1h")

    assert response.status_code == 200
    steps = {(s["source"][1], s["target"][1], s["requests"]) for s in response.context["paths"]["steps"]}
    assert steps == {("frontend", "api", 1), ("api", "postgres:5432", 1), ("api", "redis:6379", 1)}
    assert HOSTILE not in response.content.decode()


def test_the_paths_page_is_404_for_an_endpoint_of_another_service(viewer_client, checkout):
    endpoint = Endpoint.objects.get(service__name="frontend", route="/checkout")
    assert viewer_client.get(f"/services/api/paths/{endpoint.id}/").status_code == 404
