"""The first run in a real browser: the empty overview ticks its checklist as the first heartbeat
arrives, then shows the first services, all without a reload."""

import pytest
from playwright.sync_api import expect

from tests.browser import LIVE_DEADLINE_MS, chromium, log_in_as, seeded_web

SEED = (
    "from django.contrib.auth.models import User\n"
    "User.objects.create_user('viewer', password='viewer-pass')\n"
)
HEARTBEAT = (
    "from django.utils import timezone\n"
    "from obsweb.dashboard.live import broadcast_overview\n"
    "from obsweb.fleet.models import Host\n"
    "Host.objects.create(name='web-1', last_seen=timezone.now(), probes={'http': {'actual': True}},\n"
    "                    events_seen=120, events_per_s=12)\n"
    "broadcast_overview(None)\n"
)
FIRST_SERVICE = (
    "import time\n"
    "from obsweb.dashboard.live import broadcast_overview\n"
    "from tests.seed import seed_service\n"
    "seed_service('web', host='web-1', requests=30)\n"
    "broadcast_overview(time.time_ns())\n"
)


@pytest.fixture
def web(tmp_path, redis_url):
    with seeded_web(tmp_path, redis_url, SEED, HOST_STALE_AFTER_S="60", HOST_DOWN_AFTER_S="120") as web:
        yield web


def test_the_empty_overview_turns_into_the_services_table_without_a_reload(web):
    with chromium() as browser:
        page = browser.new_page()
        log_in_as(page, web.url, "viewer", "viewer-pass")
        expect(page.locator("#first-run-title")).to_have_text("No probe has reported yet")
        expect(page.locator("#services")).to_be_hidden()
        expect(page.locator("#live-status")).to_have_text("live")
        page.evaluate("window.__loadedOnce = true")

        web.shell(HEARTBEAT)
        expect(page.locator("#first-run-title")).to_have_text(
            "Waiting for the first services", timeout=LIVE_DEADLINE_MS
        )
        expect(page.locator("#first-run-probe")).to_have_class("step step-ok")
        expect(page.locator("#first-run-probe")).to_have_text("Probe attached on web-1: http.")
        expect(page.locator("#first-run-events")).to_contain_text("120 events seen")

        web.shell(FIRST_SERVICE)
        expect(page.locator("#services tbody tr", has_text="web")).to_be_visible(timeout=LIVE_DEADLINE_MS)
        expect(page.locator("#services-empty")).to_be_hidden()
        assert page.evaluate("window.__loadedOnce") is True, "the page reloaded instead of updating"
