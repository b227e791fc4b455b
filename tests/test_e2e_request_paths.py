"""Request paths through the real kernel: frontend -> api -> PostgreSQL and Redis, assembled from
the thread that served each request and the two ends of each TCP connection, with no tracing
header sent by the apps."""

import pytest
import requests

from tests.servers.shop import API, FRONTEND, Customer, shop
from tests.stack import obsweb_stack
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
CHECKOUTS = 12
SLOW_QUERY_MS = 150  # tests/servers/shop.py ORDER_SQL sleeps this long


@pytest.fixture(scope="module")
def traced():
    with obsweb_stack() as stack, shop(env=stack.env) as s:
        customer = Customer(s)
        try:
            customer.shop(checkouts=CHECKOUTS)
        finally:
            customer.close()
        yield stack, s


def checkout_trace(stack) -> list[dict]:
    """The spans of one sampled GET /checkout whose path reached the database."""

    def sampled():
        for sample in stack.api("/api/v1/requests", service=FRONTEND, limit=50)["requests"]:
            if sample.get("http.route") == "/checkout" and sample.get("span.kind") == "server":
                spans = stack.api(f"/api/v1/traces/{sample['trace_id']}")["spans"]
                if any(s["service"].startswith("postgres:") for s in spans):
                    return spans
        return None

    return wait_until(sampled, "a sampled /checkout with its whole path", stack)


def test_it_assembles_the_whole_path_of_a_request(traced):
    stack, s = traced
    spans = checkout_trace(stack)
    by_id = {span["span_id"]: span for span in spans}

    def caller_of(span):
        return by_id.get(span["parent_span_id"])

    # The path starts at the test's own call (this process is a client the probe sees too).
    customer = spans[0]
    assert (customer["kind"], customer["name"], customer["parent_span_id"]) == ("client", "GET /checkout", "")
    root = next(x for x in spans if x["service"] == FRONTEND and x["kind"] == "server")
    assert caller_of(root) is customer
    api_server = next(x for x in spans if x["service"] == API and x["kind"] == "server")
    frontend_call = caller_of(api_server)
    assert (frontend_call["service"], frontend_call["kind"]) == (FRONTEND, "client")
    assert caller_of(frontend_call) is root
    database = next(x for x in spans if x["service"] == s.postgres)
    redis = next(x for x in spans if x["service"] == s.redis)
    assert caller_of(caller_of(database)) is api_server
    assert caller_of(caller_of(redis)) is api_server
    assert [x["depth"] for x in (customer, root, frontend_call, api_server, database)] == [0, 1, 2, 3, 5]


def test_the_slow_query_is_the_longest_call_of_the_api(traced):
    stack, s = traced
    spans = checkout_trace(stack)
    api_server = next(x for x in spans if x["service"] == API and x["kind"] == "server")
    calls = [x for x in spans if x["parent_span_id"] == api_server["span_id"]]
    longest = max(calls, key=lambda x: x["duration_ms"])
    assert longest["attributes"]["peer.service"] == s.postgres
    assert SLOW_QUERY_MS <= longest["duration_ms"] <= api_server["duration_ms"]
    # Each span starts within its caller and ends before it.
    by_id = {x["span_id"]: x for x in spans}
    for span in spans[1:]:
        caller = by_id[span["parent_span_id"]]

        def end(x):
            return x["start_offset_ms"] + x["duration_ms"]

        assert caller["start_offset_ms"] <= span["start_offset_ms"] + 1
        assert end(span) <= end(caller) + 1


def test_an_unknown_trace_is_404(traced):
    stack, _ = traced
    response = requests.get(
        f"{stack.web}/api/v1/traces/0123456789abcdef",
        headers={"Authorization": f"Token {stack.token}"},
        timeout=10,
    )
    assert response.status_code == 404
    assert "no stored request" in response.json()["detail"]


def test_the_trace_page_and_the_endpoint_paths_page_show_the_path(traced):
    stack, s = traced
    spans = checkout_trace(stack)
    session = stack.viewer_session()

    page = session.get(f"{stack.web}/traces/{spans[0]['trace_id']}/", timeout=10)
    assert page.status_code == 200
    assert "Most time spent" in page.text and f"<strong>{s.postgres}</strong> itself" in page.text

    (checkout,) = [e for e in stack.endpoints(FRONTEND) if e.get("route") == "/checkout"]
    paths = session.get(f"{stack.web}/services/{FRONTEND}/paths/{checkout['id']}/", timeout=10)
    assert paths.status_code == 200
    assert 'id="sankey"' in paths.text
    assert f'"{API}"' in paths.text and s.postgres in paths.text
