import re
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from tests.seed import seed_service

PAGES = ["/", "/map/", "/services/checkout/"]
SINCE = "2026-03-01T09:30:00Z"
UNTIL = "2026-03-01T11:00:00Z"


@pytest.fixture
def viewer_client(client, personas):
    client.force_login(personas["viewer"])
    seed_service("checkout")
    return client


def picker_of(html: str) -> str:
    return re.search(r'<form class="picker".*?</form>', html, re.S).group(0)


def selected_option(html: str) -> str:
    return re.search(r'<option value="([^"]*)" selected>', picker_of(html)).group(1)


def input_value(html: str, input_id: str) -> str:
    return re.search(rf'id="{input_id}" value="([^"]*)"', picker_of(html)).group(1)


@pytest.mark.parametrize("path", PAGES)
def test_it_sends_anonymous_visitors_to_login_with_the_window(client, personas, path):
    response = client.get(path, {"since": SINCE, "until": UNTIL})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("path", PAGES)
def test_it_offers_live_presets_and_a_custom_range_on_every_page(viewer_client, path):
    html = viewer_client.get(path).content.decode()
    options = re.findall(r'<option value="([^"]*)"', picker_of(html))
    assert options == ["", "-15m", "-1h", "-6h", "-24h", "-7d", "custom"]
    assert selected_option(html) == ""
    assert 'id="window-custom" hidden' in html
    assert 'type="datetime-local" id="window-from"' in html


@pytest.mark.parametrize("path", PAGES)
def test_it_keeps_custom_range_in_the_url(viewer_client, path):
    response = viewer_client.get(path, {"since": SINCE, "until": UNTIL})

    assert response.status_code == 200
    html = response.content.decode()
    assert selected_option(html) == "custom"
    assert 'id="window-custom" hidden' not in html
    assert input_value(html, "window-from") == "2026-03-01T09:30"
    assert input_value(html, "window-to") == "2026-03-01T11:00"
    assert response.context["window_start"] == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert response.context["window_end"] == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert "2026-03-01 09:30 – 2026-03-01 11:00 UTC" in html


def test_it_carries_the_custom_range_across_nav_links(viewer_client):
    html = viewer_client.get("/", {"since": SINCE, "until": UNTIL}).content.decode()
    assert 'href="/map/?since=2026-03-01T09%3A30%3A00Z&amp;until=2026-03-01T11%3A00%3A00Z"' in html


def test_it_reads_custom_times_with_an_offset_or_no_zone_as_utc(viewer_client):
    window = {"since": "2026-03-01T10:30+01:00", "until": "2026-03-01T11:00"}
    html = viewer_client.get("/", window).content.decode()
    assert input_value(html, "window-from") == "2026-03-01T09:30"
    assert input_value(html, "window-to") == "2026-03-01T11:00"
    assert "2026-03-01 09:30 – 2026-03-01 11:00 UTC" in html


def test_it_treats_a_since_time_without_until_as_custom_up_to_now(viewer_client):
    since = (timezone.now() - timedelta(hours=2)).replace(second=0, microsecond=0)
    html = viewer_client.get("/", {"since": since.isoformat()}).content.decode()
    assert selected_option(html) == "custom"
    assert input_value(html, "window-from") == since.strftime("%Y-%m-%dT%H:%M")


def test_it_selects_a_preset_from_the_url(viewer_client):
    html = viewer_client.get("/map/", {"since": "-24h"}).content.decode()
    assert selected_option(html) == "-24h"
    assert 'id="window-custom" hidden' in html


def test_it_keeps_a_relative_window_that_is_no_preset(viewer_client):
    html = viewer_client.get("/", {"since": "-30m"}).content.decode()
    assert selected_option(html) == "-30m"
    assert '<option value="-30m" selected>Since -30m</option>' in html


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        (UNTIL, SINCE, "must be before until"),
        ("2026-03-01T25:99", UNTIL, "neither relative"),
        (SINCE, "not-a-time", "neither relative"),
    ],
)
def test_it_shows_the_window_error_for_a_bad_custom_range(viewer_client, path, since, until, message):
    response = viewer_client.get(path, {"since": since, "until": until})

    assert response.status_code == 400
    html = response.content.decode()
    assert "This time window cannot be shown" in html
    assert message in html
    assert selected_option(html) == "custom"  # the picker stays on the range, ready to fix


def test_it_fills_the_valid_half_of_a_bad_custom_range(viewer_client):
    html = viewer_client.get("/", {"since": SINCE, "until": "not-a-time"}).content.decode()
    assert input_value(html, "window-from") == "2026-03-01T09:30"
    assert input_value(html, "window-to") == ""


def test_it_does_not_listen_live_in_a_custom_window(viewer_client):
    response = viewer_client.get("/", {"since": SINCE, "until": UNTIL})
    assert b"obsweb/overview.js" not in response.content
    assert b'"live": false' in response.content


def test_it_prefills_the_custom_inputs_with_the_window_shown(viewer_client):
    response = viewer_client.get("/", {"since": "-1h"})
    html = response.content.decode()
    assert input_value(html, "window-from") == response.context["window_start"].strftime("%Y-%m-%dT%H:%M")
    assert input_value(html, "window-to") == response.context["window_end"].strftime("%Y-%m-%dT%H:%M")
    assert 'id="window-from" value="' in html and " disabled" in picker_of(html)
