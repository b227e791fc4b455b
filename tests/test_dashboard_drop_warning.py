import re
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.html import escape

from obsweb.fleet.models import DroppedEvents, Host
from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.tasks import prune_telemetry
from tests.factories import agent, now_ns
from tests.seed import seed_service

HOSTILE = "<script>alert(1)</script>"
PAGES = ["/", "/map/", "/services/checkout/"]


@pytest.fixture
def viewer_client(client, personas):
    client.force_login(personas["viewer"])
    seed_service("checkout")
    return client


def heartbeats(host: str, *beats: tuple[float, int, int]) -> None:
    """Heartbeats of `host`'s agent as (seconds ago, events dropped, records dropped), cumulative."""
    apply_records(
        [
            agent(
                host=host,
                ts=now_ns(seconds_ago),
                **{"agent.events_dropped": events, "agent.records_dropped": records},
            )
            for seconds_ago, events, records in beats
        ]
    )


def warnings_of(html: str) -> list[str]:
    box = re.search(r'<div class="fleet-warnings" id="fleet-warnings".*?</div>', html, re.S).group(0)
    return re.findall(r'<li class="fleet-warning[^"]*">(.*?)</li>', box, re.S)


def test_it_shows_no_warning_to_anonymous_visitors_on_the_login_page(client, personas):
    heartbeats("web-1", (10, 0, 0), (5, 50, 0))
    assert client.get("/").status_code == 302
    html = client.get("/accounts/login/").content.decode()
    assert "fleet-warnings" not in html and "web-1" not in html


@pytest.mark.parametrize("path", PAGES)
def test_it_warns_when_agent_dropped_events_in_window(viewer_client, path):
    heartbeats("web-1", (12, 0, 0), (7, 40, 0), (2, 1200, 34))

    response = viewer_client.get(path)

    assert response.status_code == 200
    (warning,) = warnings_of(response.content.decode())
    assert warning.startswith("agent on web-1 dropped 1,234 events since ")
    began = (timezone.now() - timedelta(seconds=12)).strftime("%H:%M")
    assert f"since {began}" in warning and " UTC: " in warning
    assert "missing from the counts, latencies and samples" in warning
    assert "kernel counters on the agent&#x27;s /metrics stay exact" in warning


def test_it_stays_quiet_when_no_agent_dropped_events(viewer_client):
    heartbeats("web-1", (6, 0, 0), (1, 0, 0))
    html = viewer_client.get("/").content.decode()
    assert warnings_of(html) == []
    assert 'id="fleet-warnings" role="status" hidden' in html


def test_it_counts_only_the_drops_reported_in_the_window(viewer_client):
    heartbeats("web-1", (3 * 3600, 0, 0), (3 * 3600 - 5, 500, 0), (600, 500, 0), (2, 520, 0))

    (live,) = warnings_of(viewer_client.get("/").content.decode())
    (six_hours,) = warnings_of(viewer_client.get("/", {"since": "-6h"}).content.decode())

    assert "dropped 20 events since " in live
    assert "dropped 520 events between " in six_hours
    assert warnings_of(viewer_client.get("/", {"since": "-2h", "until": "-1h"}).content.decode()) == []


def test_it_counts_all_drops_after_a_worker_restart(db):
    heartbeats("web-1", (20, 300, 0), (15, 310, 0))
    apply_records([agent(host="web-1", ts=now_ns(5), **{"agent.events_seen": 10, "agent.events_dropped": 7})])
    assert [row.count for row in DroppedEvents.objects.all()] == [300, 10, 7]


def test_it_warns_when_a_host_has_not_reported(viewer_client):
    Host.objects.create(name="web-2", last_seen=timezone.now() - timedelta(seconds=130))
    Host.objects.create(name="web-3", last_seen=timezone.now() - timedelta(seconds=20))
    Host.objects.create(name="web-4", last_seen=timezone.now() - timedelta(seconds=3))

    warnings = warnings_of(viewer_client.get("/map/").content.decode())

    assert len(warnings) == 2
    assert warnings[0].startswith("web-2 has not reported for 2 min (last heartbeat ")
    assert warnings[1].startswith("web-3 has not reported for 20 s (last heartbeat ")
    assert "its traffic since then is missing here" in warnings[0]


def test_it_does_not_warn_about_silence_after_the_window(viewer_client):
    Host.objects.create(name="web-2", last_seen=timezone.now() - timedelta(minutes=30))
    assert warnings_of(viewer_client.get("/", {"since": "-2h", "until": "-1h"}).content.decode()) == []
    assert len(warnings_of(viewer_client.get("/", {"since": "-1h"}).content.decode())) == 1


def test_it_warns_on_pages_without_a_window_of_their_own(viewer_client):
    heartbeats("web-1", (6, 0, 0), (1, 3, 0))
    for response in (
        viewer_client.get("/services/nothing-here/"),
        viewer_client.get("/", {"since": "yesterday-ish"}),
    ):
        assert response.status_code in (400, 404)
        (warning,) = warnings_of(response.content.decode())
        assert warning.startswith("agent on web-1 dropped 3 events since ")


def test_it_escapes_hostile_host_names(viewer_client):
    heartbeats(HOSTILE, (10, 0, 0), (5, 3, 0))
    Host.objects.filter(name=HOSTILE).update(last_seen=timezone.now() - timedelta(minutes=5))

    html = viewer_client.get("/").content.decode()

    assert HOSTILE not in html
    warnings = warnings_of(html)
    assert warnings[0].startswith(f"agent on {escape(HOSTILE)} dropped 3 events")
    assert warnings[1].startswith(f"{escape(HOSTILE)} has not reported for 5 min")


def test_it_prunes_drop_counts_with_the_rollups(db, settings):
    settings.ROLLUP_RETENTION_DAYS = 7
    heartbeats("web-1", (9 * 86400, 0, 0), (9 * 86400 - 5, 8, 0), (10, 8, 0), (5, 9, 0))

    assert prune_telemetry()["dropped_events"] == 1
    assert [row.count for row in DroppedEvents.objects.all()] == [1]
