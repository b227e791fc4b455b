"""The empty dashboard before the first service: has a probe reported, has it seen events, how to
get traffic (make demo); the live overview carries the same checklist until a service appears."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from obsweb.dashboard import live
from obsweb.fleet.models import Host
from tests.seed import seed_service

HOSTILE = "<b>web-1</b>"


@pytest.fixture
def viewer_client(client, personas):
    client.force_login(personas["viewer"])
    return client


def reported(name: str, seconds_ago: float, **fields) -> Host:
    return Host.objects.create(name=name, last_seen=timezone.now() - timedelta(seconds=seconds_ago), **fields)


def step(html: str, name: str) -> tuple[str, str]:
    """(class, text) of one checklist item."""
    found = re.search(rf'<li id="first-run-{name}" class="step ([\w-]+)">(.*?)</li>', html, re.S)
    assert found, f"no {name} step in the page"
    return found.group(1), found.group(2)


def test_it_says_no_probe_has_reported_and_how_to_start(viewer_client):
    html = viewer_client.get("/").content.decode()
    assert '<h2 id="first-run-title">No probe has reported yet</h2>' in html
    state, text = step(html, "probe")
    assert state == "step-waiting"
    assert "make run" in text and "heartbeat" in text and "needs root" in text
    assert step(html, "events") == (
        "step-waiting",
        "No events seen yet: once a probe is attached, any TCP traffic on its host counts, "
        "for example curl http://127.0.0.1:8000/healthz.",
    )
    assert "<code>make demo</code>" in html
    assert "without a reload" in html  # the live page switches to the table by itself


def test_it_names_the_attached_probes_of_a_reporting_host(viewer_client):
    probes = {"http": {"actual": True}, "tls": {"actual": True}, "mysql": {"actual": False}}
    reported("web-1", 1, probes=probes)
    html = viewer_client.get("/").content.decode()
    assert '<h2 id="first-run-title">Waiting for the first services</h2>' in html
    assert step(html, "probe") == ("step-ok", "Probe attached on web-1: http, tls.")
    assert step(html, "events")[0] == "step-waiting"


def test_it_counts_the_events_seen_before_any_service(viewer_client):
    reported("web-1", 1, probes={"http": {"actual": True}}, events_seen=12345, events_per_s=41.5)
    state, text = step(viewer_client.get("/").content.decode(), "events")
    assert state == "step-ok"
    assert text.startswith("12,345 events seen (42/s)")


def test_it_says_when_the_only_probe_stopped_reporting(viewer_client):
    reported("web-1", 600, probes={"http": {"actual": True}})
    state, text = step(viewer_client.get("/").content.decode(), "probe")
    assert state == "step-waiting"
    assert text.startswith("No probe is reporting: the last heartbeat came from web-1 at ")
    assert text.endswith("Is its probe worker still running?")


def test_it_says_when_a_host_reports_without_an_attached_probe(viewer_client):
    reported("web-1", 1, probes={"http": {"actual": False, "error": "no BTF"}})
    state, text = step(viewer_client.get("/").content.decode(), "probe")
    assert (state, text) == (
        "step-waiting",
        "The probe worker on web-1 reports, but no probe is attached: the Hosts page shows why.",
    )


def test_it_escapes_host_names(viewer_client):
    reported(HOSTILE, 1, probes={"http": {"actual": True}})
    html = viewer_client.get("/").content.decode()
    assert HOSTILE not in html
    assert "Probe attached on &lt;b&gt;web-1&lt;/b&gt;: http." in html


def test_the_map_shows_the_same_checklist(viewer_client):
    html = viewer_client.get("/map/").content.decode()
    assert step(html, "probe")[0] == "step-waiting"
    assert "<code>make demo</code>" in html
    assert "without a reload" not in html  # the map page is not live


def test_it_is_gone_once_a_service_was_recorded(viewer_client):
    seed_service("checkout", minutes_ago=120)
    html = viewer_client.get("/?since=-15m").content.decode()
    assert "first-run" not in html
    assert "No requests in this window" in html


@pytest.fixture
def broadcasts(monkeypatch):
    """What broadcast_overview sends, instead of a channel layer."""
    sent = []

    class Layer:
        async def group_send(self, group, message):
            sent.append(message)

    monkeypatch.setattr(live, "get_channel_layer", Layer)
    return sent


def test_the_live_overview_carries_the_checklist_until_the_first_service(db, broadcasts):
    reported("web-1", 1, probes={"http": {"actual": True}}, events_seen=10)
    live.broadcast_overview(None)
    seed_service("checkout")
    live.broadcast_overview(None)

    before, after = broadcasts
    assert before["services"] == []
    assert before["first_run"]["probe"] == {"ok": True, "text": "Probe attached on web-1: http."}
    assert before["first_run"]["events"]["ok"] is True
    assert [s["name"] for s in after["services"]] == ["checkout"]
    assert after["first_run"] is None
