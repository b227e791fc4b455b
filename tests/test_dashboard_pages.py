import pytest
from django.utils.html import escape

from obsweb.telemetry import queries
from tests.seed import seed_edge, seed_service

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def viewer_client(client, personas):
    client.force_login(personas["viewer"])
    return client


@pytest.mark.parametrize("path", ["/", "/map/"])
def test_it_sends_anonymous_visitors_to_login(client, personas, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_it_shows_the_login_form(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password"' in response.content


@pytest.mark.parametrize("path", ["/", "/map/"])
def test_it_shows_pages_to_a_viewer(viewer_client, path):
    assert viewer_client.get(path).status_code == 200


def test_it_lists_services_with_their_numbers(viewer_client):
    seed_service("checkout", host="web-1", requests=200, errors=20, latency_ms=40.0)
    seed_service("payments", host="web-2", requests=50, latency_ms=3.0)

    response = viewer_client.get("/")

    rows = {s["name"]: s for s in response.context["services"]}
    assert set(rows) == {"checkout", "payments"}
    html = response.content.decode()
    assert '<span class="svc">checkout</span>' in html
    assert "web-1" in html and "web-2" in html
    assert '<td class="num bad">10.00</td>' in html  # 20 of 200 failed
    assert '<td class="num">200</td>' in html


def test_it_explains_how_to_start_when_no_probe_has_reported(viewer_client):
    html = viewer_client.get("/").content.decode()
    assert "No probe has reported yet" in html
    assert "make run" in html
    assert "heartbeat" in html
    assert "curl http://127.0.0.1:8000/healthz" in html
    assert '<table id="services" class="services" hidden>' in html


def test_it_says_the_window_is_empty_when_services_are_idle(viewer_client):
    seed_service("checkout", minutes_ago=120)
    html = viewer_client.get("/?since=-15m").content.decode()
    assert "No requests in this window" in html
    assert "No probe has reported yet" not in html


@pytest.mark.parametrize("path", ["/", "/map/"])
def test_it_rejects_a_bad_window_with_a_message(viewer_client, path):
    with pytest.raises(queries.WindowError) as expected:
        queries.parse_window("yesterday-ish", None)

    response = viewer_client.get(path, {"since": "yesterday-ish"})

    assert response.status_code == 400
    html = response.content.decode()
    assert "This time window cannot be shown" in html
    assert escape(str(expected.value)) in html


def test_it_escapes_captured_service_names(viewer_client):
    seed_service(HOSTILE)
    seed_edge(HOSTILE, "checkout")

    for path in ("/", "/map/", "/?since=-1h"):
        html = viewer_client.get(path).content.decode()
        assert HOSTILE not in html, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in viewer_client.get("/").content.decode()


def test_it_listens_live_only_without_a_past_window(viewer_client):
    assert b"obsweb/overview.js" in viewer_client.get("/").content
    past = viewer_client.get("/?since=-1h")
    assert b"obsweb/overview.js" not in past.content
    assert b'"live": false' in past.content


def test_it_keeps_the_window_across_nav_links(viewer_client):
    html = viewer_client.get("/?since=-6h").content.decode()
    assert 'href="/map/?since=-6h"' in html
    assert 'href="/?since=-6h"' in html
    assert '<option value="-6h" selected>' in html


def test_it_links_admin_for_staff_only(client, personas):
    client.force_login(personas["viewer"])
    assert b'href="/admin/"' not in client.get("/").content
    client.force_login(personas["staff"])
    assert b'href="/admin/"' in client.get("/").content


def test_it_logs_out_with_a_post_form(viewer_client):
    html = viewer_client.get("/").content.decode()
    assert '<form class="logout" method="post" action="/accounts/logout/">' in html


def test_it_draws_the_map_from_services_and_edges(viewer_client):
    seed_service("checkout", requests=100)
    seed_service("payments", requests=30)
    seed_edge("checkout", "payments", requests=30)
    seed_edge("checkout", "10.0.0.9:5432", protocol="postgresql", requests=12, external=True)

    response = viewer_client.get("/map/")

    drawing = response.context["service_map"]
    assert [n["name"] for n in drawing["nodes"]] == ["10.0.0.9:5432", "checkout", "payments"]
    assert {(e["source"], e["target"]) for e in drawing["edges"]} == {
        ("checkout", "payments"),
        ("checkout", "10.0.0.9:5432"),
    }
    html = response.content.decode()
    assert 'id="service-map-data"' in html
    assert "/static/plotly/plotly.min.js" in html
    assert "/static/obsweb/map.js" in html


def test_it_shows_an_empty_map_with_instructions(viewer_client):
    html = viewer_client.get("/map/").content.decode()
    assert "No probe has reported yet" in html
    assert "plotly.min.js" not in html


def test_it_renders_the_overview_in_a_bounded_number_of_queries(viewer_client, django_assert_max_num_queries):
    for i in range(20):
        seed_service(f"svc-{i:02}", host=f"web-{i % 3}", requests=10 + i)
    with django_assert_max_num_queries(12):
        response = viewer_client.get("/")
    assert len(response.context["services"]) == 20


def test_it_draws_a_sparkline_of_the_last_30_minutes_per_service(viewer_client):
    seed_service("checkout", requests=30, minutes_ago=10)
    seed_service("checkout", requests=60)

    response = viewer_client.get("/")

    (row,) = response.context["services"]
    assert row["sparkline_peak"] == 60
    points = row["sparkline"].split()
    assert len(points) == 30
    assert points[-1].endswith(",1") and points[-11].endswith(",12")  # 60 at the top, 30 halfway
    assert f'<polyline points="{row["sparkline"]}"/>' in response.content.decode()
