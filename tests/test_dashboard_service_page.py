from datetime import timedelta

import pytest
from django.utils import timezone

from obsweb.telemetry import queries
from tests.seed import seed_edge, seed_query, seed_sample, seed_service

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
def viewer_client(client, personas):
    client.force_login(personas["viewer"])
    return client


def test_it_sends_anonymous_visitors_to_login(client, personas):
    seed_service("checkout")
    response = client.get("/services/checkout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/services/checkout/"


def test_it_shows_the_service_to_a_viewer(viewer_client):
    seed_service("checkout", host="web-1", requests=200, errors=20, latency_ms=40.0)

    response = viewer_client.get("/services/checkout/")

    assert response.status_code == 200
    window = response.context["window"]
    assert (window["requests"], window["errors"], window["error_rate"]) == (200, 20, 0.1)
    assert window["p50_ms"] == pytest.approx(40.0, rel=0.02)
    html = response.content.decode()
    assert '<h1 class="service-name">checkout</h1>' in html
    assert "Hosts: web-1" in html
    assert '<dd class="bad" data-stat="error_rate">10.00</dd>' in html


def test_it_answers_404_for_an_unknown_service(viewer_client):
    response = viewer_client.get("/services/nope/")
    assert response.status_code == 404
    assert "No service is called" in response.content.decode()


def test_it_escapes_a_hostile_service_name(viewer_client):
    seed_service(HOSTILE)
    seed_edge(HOSTILE, "checkout")
    seed_sample(HOSTILE, route=HOSTILE, status=500)

    for path in ("/services/%3Cscript%3Ealert(1)%3C/script%3E/", "/services/checkout/"):
        response = viewer_client.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        assert HOSTILE not in html, path
        assert ESCAPED in html, path
    unknown = viewer_client.get("/services/%3Cb%3Ex%3C/b%3E/").content.decode()
    assert "<b>x</b>" not in unknown and "&lt;b&gt;x&lt;/b&gt;" in unknown


def test_it_draws_the_charts_from_a_data_island(viewer_client):
    seed_service("checkout", requests=30, errors=3, minutes_ago=2)
    seed_service("checkout", requests=50)

    response = viewer_client.get("/services/checkout/?since=-5m")

    charts = response.context["charts"]
    assert len(charts["minutes"]) in (5, 6)  # -5m starts mid-minute unless run on the second
    assert charts["requests"][-1] == 50 and charts["requests"][-3] == 30
    assert charts["errors"][-3] == 3
    assert charts["p99_ms"][-2] is None
    html = response.content.decode()
    assert 'id="service-charts-data"' in html
    assert "/static/plotly/plotly.min.js" in html
    assert "/static/obsweb/service.js" in html


def test_it_leaves_charts_out_when_nothing_was_served(viewer_client):
    seed_service("checkout", minutes_ago=120)
    html = viewer_client.get("/services/checkout/?since=-15m").content.decode()
    assert "No requests served in this window" in html
    assert "plotly.min.js" not in html


def test_it_lists_endpoints_busiest_first_with_status_codes(viewer_client):
    seed_service("checkout", route="/quiet", requests=5)
    seed_service("checkout", route="/busy", requests=80, errors=4)

    response = viewer_client.get("/services/checkout/")

    assert [e["route"] for e in response.context["http_endpoints"]] == ["/busy", "/quiet"]
    html = response.content.decode()
    assert html.index("<code>/busy</code>") < html.index("<code>/quiet</code>")
    assert "500 ×4" in html and "200 ×76" in html


def test_it_lists_top_queries_by_total_time(viewer_client):
    seed_query("postgres", "SELECT * FROM users WHERE id = ?", requests=100, latency_ms=1.0)
    seed_query("postgres", "SELECT * FROM orders", target="orders", requests=5, latency_ms=400.0)

    response = viewer_client.get("/services/postgres/")

    rows = response.context["other_endpoints"]
    assert [r["target"] for r in rows] == ["orders", "users"]  # 2 s beats 100 ms in total
    html = response.content.decode()
    assert "Top queries by total time" in html
    assert html.index("SELECT * FROM orders") < html.index("SELECT * FROM users WHERE id = ?")
    assert '<th scope="col">Table</th>' in html


def test_it_lists_callers_and_dependencies_with_links(viewer_client):
    seed_service("checkout")
    seed_edge("frontend", "checkout", requests=40)
    seed_edge("checkout", "payments", requests=20, errors=2, latency_ms=80)
    seed_edge("checkout", "10.0.0.9:5432", protocol="postgresql", requests=12, external=True)
    seed_edge("frontend", "search", requests=9)  # not this service's business

    response = viewer_client.get("/services/checkout/?since=-1h")

    assert [e["source"] for e in response.context["callers"]] == ["frontend"]
    assert {e["target"] for e in response.context["dependencies"]} == {"payments", "10.0.0.9:5432"}
    html = response.content.decode()
    assert 'href="/services/frontend/?since=-1h"' in html
    assert 'href="/services/payments/?since=-1h"' in html
    assert 'href="/services/10.0.0.9:5432/?since=-1h"' in html
    assert "search" not in html


def test_it_shows_failing_requests_newest_first_and_the_slowest(viewer_client):
    seed_service("checkout")
    seed_sample("checkout", route="/old-failure", status=503, seconds_ago=60)
    seed_sample("checkout", route="/new-failure", status=500, seconds_ago=5)
    seed_sample("checkout", route="/slow", duration_ms=900.0)
    for i in range(12):
        seed_sample("checkout", route=f"/quick-{i}", duration_ms=1.0 + i)

    response = viewer_client.get("/services/checkout/")

    failing = response.context["failing"]
    assert [s["what"] for s in failing] == ["GET /new-failure", "GET /old-failure"]
    assert [s["outcome"] for s in failing] == ["500", "503"]
    slowest = response.context["slowest"]
    assert len(slowest) == 10
    assert slowest[0]["what"] == "GET /slow" and slowest[0]["duration_ms"] == 900.0
    assert "GET /quick-0" not in [s["what"] for s in slowest]


def test_it_shows_the_error_type_of_a_failed_query(viewer_client):
    seed_query("postgres", "SELECT * FROM nope")
    seed_sample(
        "postgres",
        status=0,
        **{
            "http.request.method": None,
            "http.route": None,
            "db.operation.name": "SELECT",
            "db.collection.name": "nope",
            "error": True,
            "error.type": "42P01",
        },
    )

    failing = viewer_client.get("/services/postgres/").context["failing"]

    assert [(s["what"], s["outcome"]) for s in failing] == [("SELECT nope", "42P01")]


def test_it_rejects_a_bad_window_with_a_message(viewer_client):
    seed_service("checkout")
    response = viewer_client.get("/services/checkout/", {"since": "yesterday-ish"})
    assert response.status_code == 400
    assert "This time window cannot be shown" in response.content.decode()


def test_it_links_service_names_from_the_overview(viewer_client):
    seed_service("checkout")
    html = viewer_client.get("/?since=-1h").content.decode()
    assert '<a href="/services/checkout/?since=-1h"><span class="svc">checkout</span></a>' in html


def test_the_timeseries_query_covers_every_minute_of_the_window(db):
    seed_service("checkout", requests=7, minutes_ago=1)
    seed_service("other", requests=99)
    until = timezone.now()

    got = queries.service_timeseries("checkout", until - timedelta(minutes=3), until)

    assert got["requests"][-2:] == [7, 0]
    assert len(got["minutes"]) == len(got["p99_ms"]) == len(got["errors"])
    assert got["window"]["requests"] == 7


def test_it_renders_the_service_page_in_a_bounded_number_of_queries(
    viewer_client, django_assert_max_num_queries
):
    for i in range(10):
        seed_service("checkout", route=f"/r{i}", host=f"web-{i % 3}", requests=10 + i)
        seed_edge(f"caller-{i}", "checkout")
        seed_edge("checkout", f"dep-{i}")
        seed_sample("checkout", route=f"/r{i}", status=500 if i % 2 else 200)
    # 15, plus TCP health and resource use (tests/test_dashboard_resources.py), plus the incidents banner
    with django_assert_max_num_queries(18):
        response = viewer_client.get("/services/checkout/")
    assert len(response.context["http_endpoints"]) == 10
    assert len(response.context["callers"]) == len(response.context["dependencies"]) == 10


def test_it_listens_live_only_in_the_live_window(viewer_client):
    seed_service("checkout", requests=5)
    live = viewer_client.get("/services/checkout/").content.decode()
    past = viewer_client.get("/services/checkout/?since=-1h").content.decode()
    assert "/static/obsweb/live.js" in live and 'id="live-status"' in live
    assert "/static/obsweb/live.js" not in past and 'id="live-status"' not in past


def test_the_live_series_gives_charts_and_formatted_numbers(viewer_client):
    seed_service("checkout", requests=1200, errors=30, latency_ms=40.0)

    response = viewer_client.get("/services/checkout/series.json")

    assert response.status_code == 200
    body = response.json()
    assert sum(body["charts"]["requests"]) == 1200
    assert body["stats"]["requests"] == "1,200"
    assert body["stats"]["error_rate"] == "2.50"


def test_the_live_series_is_404_for_an_unknown_service_and_needs_login(client, viewer_client):
    assert viewer_client.get("/services/nope/series.json").status_code == 404
    client.logout()
    assert client.get("/services/checkout/series.json").status_code == 302


def test_it_links_sampled_requests_to_their_path_and_endpoints_to_their_paths(viewer_client):
    seed_service("checkout", route="/pay", requests=5)
    seed_sample("checkout", route="/pay", status=500, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")

    html = viewer_client.get("/services/checkout/").content.decode()

    assert 'href="/traces/4bf92f3577b34da6a3ce929d0e0e4736/"' in html
    endpoint = viewer_client.get("/services/checkout/").context["http_endpoints"][0]
    assert f'href="/services/checkout/paths/{endpoint["id"]}/"' in html


def test_it_names_the_dependency_that_dominates_latency(viewer_client):
    seed_service("checkout", requests=10, latency_ms=100.0)
    seed_edge("checkout", "payments", requests=10, latency_ms=80.0)
    seed_edge("checkout", "redis", protocol="redis", requests=10, latency_ms=1.0)

    response = viewer_client.get("/services/checkout/")

    assert response.context["bottleneck"]["target"] == "payments"
    assert response.context["bottleneck"]["share"] == pytest.approx(0.8, rel=0.05)
    assert "of this service's serving time is spent waiting on" in response.content.decode()
