import re
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.html import escape

from obsweb.fleet.models import Host
from obsweb.telemetry.aggregate import apply_records
from tests.factories import agent, now_ns
from tests.seed import seed_service

HOSTILE = '<img src=x onerror="window.__xss=1">'


@pytest.fixture
def viewer_client(client, personas):
    client.force_login(personas["viewer"])
    return client


def reported(name: str, seconds_ago: float, **fields) -> Host:
    """A host whose agent's last heartbeat arrived `seconds_ago`."""
    return Host.objects.create(name=name, last_seen=timezone.now() - timedelta(seconds=seconds_ago), **fields)


def strip_of(html: str) -> str:
    return re.search(r'<section class="hosts-strip".*?</section>', html, re.S).group(0)


def test_it_sends_anonymous_visitors_to_login(client, personas):
    reported("web-1", 1)
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_it_shows_the_strip_to_a_viewer(viewer_client):
    reported("web-1", 1)
    response = viewer_client.get("/")
    assert response.status_code == 200
    assert [chip["name"] for chip in response.context["fleet"]["hosts"]] == ["web-1"]


def test_it_explains_how_to_start_when_no_host_has_reported(viewer_client):
    strip = strip_of(viewer_client.get("/").content.decode())
    assert '<ul id="host-list" class="host-list" hidden>' in strip
    assert "No probe worker has reported yet" in strip
    assert "<code>make run</code>" in strip


def test_it_leaves_out_hosts_that_never_sent_a_heartbeat(viewer_client):
    seed_service("checkout", host="web-1")  # known from request records only

    response = viewer_client.get("/")

    assert response.context["fleet"]["hosts"] == []
    assert "No probe worker has reported yet" in strip_of(response.content.decode())


def test_it_shows_one_chip_per_host_with_its_numbers(viewer_client):
    apply_records(
        [
            agent(host="web-1", ts=now_ns(7), **{"agent.events_seen": 1000}),
            agent(host="web-1", ts=now_ns(2), **{"agent.events_seen": 1250, "agent.events_dropped": 4}),
            agent(host="db-1", ts=now_ns(3), **{"agent.kernel": "6.1.0-18-amd64", "agent.version": "0.2.0"}),
        ]
    )

    response = viewer_client.get("/")

    chips = {chip["name"]: chip for chip in response.context["fleet"]["hosts"]}
    assert list(chips) == ["db-1", "web-1"]
    assert chips["web-1"]["status"] == "up"
    assert chips["web-1"]["events_per_s"] == pytest.approx(50, rel=0.01)
    assert chips["web-1"]["dropped"] == 4
    assert chips["db-1"]["dropped"] == 0
    assert "agent 0.2.0" in chips["db-1"]["title"] and "kernel 6.1.0-18-amd64" in chips["db-1"]["title"]
    strip = strip_of(response.content.decode())
    assert '<li class="host host-up" title="status up · last heartbeat ' in strip
    assert '<span class="host-name">web-1</span>' in strip
    assert '<span class="host-rate">50 events/s</span>' in strip
    assert '<span class="host-dropped bad">4 dropped</span>' in strip
    assert '<span class="host-dropped">0 dropped</span>' in strip


@pytest.mark.parametrize(
    ("seconds_ago", "status"),
    [(0, "up"), (4.5, "up"), (5.5, "stale"), (9.5, "stale"), (10.5, "down"), (3600, "down")],
)
def test_it_marks_host_stale_after_5_seconds_and_down_after_10(db, seconds_ago, status):
    assert reported("web-1", seconds_ago).status() == status


def test_it_marks_a_host_without_heartbeat_down(db):
    assert Host.objects.create(name="web-1").status() == "down"


def test_it_reads_the_status_thresholds_from_settings(db, settings):
    settings.HOST_STALE_AFTER_S = 30
    settings.HOST_DOWN_AFTER_S = 300
    host = reported("web-1", 20)
    now = timezone.now()
    assert host.status(now) == "up"
    assert host.status(now + timedelta(seconds=20)) == "stale"
    assert host.status(now + timedelta(seconds=290)) == "down"


def test_it_colours_chips_by_status_and_hides_the_rate_of_a_down_host(viewer_client):
    reported("a-up", 1, events_per_s=1234.4)
    reported("b-stale", 7, events_per_s=1234.4)
    reported("c-down", 600, events_per_s=1234.4)

    strip = strip_of(viewer_client.get("/").content.decode())

    assert re.findall(r'<li class="host (host-\w+)"', strip) == ["host-up", "host-stale", "host-down"]
    assert strip.count('<span class="host-rate">1,234 events/s</span>') == 2
    assert '<span class="host-rate">– events/s</span>' in strip


def test_it_escapes_hostile_host_names(viewer_client):
    reported(HOSTILE, 1, agent_version=HOSTILE, kernel='6.1" onmouseover="x')

    html = viewer_client.get("/").content.decode()

    assert HOSTILE not in html
    assert 'onmouseover="x' not in html
    assert f'<span class="host-name">{escape(HOSTILE)}</span>' in strip_of(html)


def test_it_shows_the_strip_in_a_past_window_with_that_windows_drops(viewer_client):
    apply_records(
        [
            agent(host="web-1", ts=now_ns(3 * 3600)),
            agent(host="web-1", ts=now_ns(3 * 3600 - 5), **{"agent.events_dropped": 9}),
            agent(host="web-1", ts=now_ns(1), **{"agent.events_dropped": 9}),
        ]
    )
    (six_hours,) = viewer_client.get("/", {"since": "-6h"}).context["fleet"]["hosts"]
    (one_hour,) = viewer_client.get("/", {"since": "-1h"}).context["fleet"]["hosts"]
    assert six_hours["dropped"] == 9
    assert (one_hour["dropped"], one_hour["status"]) == (0, "up")


def test_it_renders_the_strip_in_a_bounded_number_of_queries(viewer_client, django_assert_max_num_queries):
    for i in range(30):
        apply_records([agent(host=f"web-{i:02}", ts=now_ns(2), **{"agent.events_dropped": i})])
    with django_assert_max_num_queries(12):
        response = viewer_client.get("/")
    assert len(response.context["fleet"]["hosts"]) == 30
