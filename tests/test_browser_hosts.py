"""The hosts page in a real browser against a real daphne, Redis and database (no BPF: the hosts
are seeded heartbeats)."""

import pytest
import redis
from playwright.sync_api import expect

from probes import schema
from tests.browser import HOSTILE, LIVE_DEADLINE_MS, SHOTS, VIEWPORT, chromium, log_in_as, seeded_web

# Heartbeats "now", as workers on four hosts would send them: web-1 runs everything but TLS (no
# libssl) and had postgres throttled; web-2 is quiet; db-1 stopped cleanly; the last one is hostile.
SEED_HOSTS = f"""
from obsweb.telemetry.aggregate import apply_records
from tests.factories import agent, now_ns

NO_LIBSSL = "no libssl found in /usr/lib"
OVER_BUDGET = "worker at 7.1 % of one core, over its 5 % budget: postgres cost the most (2.9 %)"

def probes(**special):
    states = {{p: {{"desired": True, "actual": True, "error": None, "throttled": None,
                    "events_per_s": 42.0, "cpu_percent": 0.4}} for p in {schema.PROBES!r}}}
    for name, state in special.items():
        states[name] = states[name] | state
    return states

apply_records([
    agent(host="web-1", ts=now_ns(3), **{{"agent.events_seen": 10000}}),
    agent(host="web-1", ts=now_ns(1), **{{
        "agent.events_seen": 16000, "agent.events_dropped": 1830, "agent.cpu_percent": 7.1,
        "agent.probes": probes(
            http={{"events_per_s": 2950.0, "cpu_percent": 3.8}},
            tls={{"actual": False, "error": NO_LIBSSL, "events_per_s": 0.0, "cpu_percent": 0.0}},
            postgres={{"actual": False, "throttled": OVER_BUDGET}},
        ),
    }}),
    agent(host="web-2", ts=now_ns(1), **{{"agent.kernel": "6.1.0-18-amd64", "agent.cpu_percent": 1.2,
                                           "agent.probes": probes()}}),
    agent(host="db-1", ts=now_ns(1), **{{"agent.stopping": True, "agent.probes": probes()}}),
    agent(host={HOSTILE!r}, ts=now_ns(1), **{{"agent.probes": probes()}}),
])
from obsweb.fleet.models import Host
Host.objects.filter(name="web-1").update(cpu_budget_percent=5.0)
"""


USERS = (
    "from django.contrib.auth.models import User\n"
    "User.objects.create_user('viewer', password='viewer-pass')\n"
    "User.objects.create_user('staff', password='staff-pass', is_staff=True)\n"
)


@pytest.fixture
def web(tmp_path, redis_url):
    # Seeded heartbeats do not repeat: keep them "up" for the length of the test.
    with seeded_web(
        tmp_path, redis_url, USERS + SEED_HOSTS, HOST_STALE_AFTER_S="120", HOST_DOWN_AFTER_S="600"
    ) as web:
        yield web


@pytest.fixture
def control(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def page():
    with chromium() as browser:
        yield browser.new_page(viewport=VIEWPORT)


def log_in(page, web, who: str):
    log_in_as(page, web.url, who, f"{who}-pass", next_path="/hosts/")


def probe(page, host: str, name: str):
    """The probe cell of `name` on `host`: the probes row right after the host's row."""
    row = page.locator("#host-rows tr.host-row", has=page.locator("th.name", has_text=host))
    return row.locator("xpath=following-sibling::tr[1]").locator(
        "li.probe", has=page.locator(f"text='{name}'")
    )


def test_staff_switch_a_probe_and_the_row_updates_without_reload(web, page, control):
    log_in(page, web, "staff")
    expect(page.locator("#live-status")).to_have_text("live")
    expect(page.locator("#host-rows th.name")).to_have_count(4)
    page.evaluate("window.__loadedOnce = true")
    http = probe(page, "web-2", "http")
    expect(http.locator("button.switch")).to_have_text("on")

    http.locator("button.switch").click()

    expect(probe(page, "web-2", "http").locator("button.switch")).to_have_text(
        "off", timeout=LIVE_DEADLINE_MS
    )
    expect(probe(page, "web-2", "http")).to_contain_text("applying…")
    expect(page.locator("#hosts-notice")).to_have_text("http off on web-2.")
    assert control.hget(schema.control_key("web-2"), "http") == "0"
    assert page.evaluate("window.__loadedOnce") is True, "the page reloaded"
    assert page.evaluate("typeof window.__xss") == "undefined"

    # The worker takes it up: its next heartbeat reports http off, and the row follows by itself.
    web.shell(
        "from obsweb.telemetry.aggregate import apply_records\n"
        "from tests.factories import agent, now_ns\n"
        "apply_records([agent(host='web-2', ts=now_ns(0), **{'agent.probes': "
        "{'http': {'desired': False, 'actual': False, 'error': None}}})])\n"
    )
    expect(probe(page, "web-2", "http").locator(".state")).to_have_text("off", timeout=LIVE_DEADLINE_MS)
    expect(probe(page, "web-2", "http")).not_to_contain_text("applying…")


def test_viewer_sees_states_without_enabled_toggles(web, page):
    log_in(page, web, "viewer")
    expect(page.locator("#host-rows th.name")).to_have_count(4)
    expect(page.locator("#host-rows th.name", has_text=HOSTILE)).to_have_count(1)

    switches = page.locator("button.switch")
    expect(switches).to_have_count(4 * len(schema.PROBES))
    assert page.locator("button.switch:enabled").count() == 0
    assert page.locator("form.js-control").count() == 0
    expect(probe(page, "web-1", "tls")).to_contain_text("no libssl found in /usr/lib")
    expect(probe(page, "web-1", "postgres")).to_contain_text("over its 5 % budget")
    expect(page.locator("#host-rows tr.host-row", has_text="db-1")).to_contain_text("stopped")
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_screenshot_of_the_hosts_page_for_staff(web, page):
    log_in(page, web, "staff")
    expect(page.locator("#live-status")).to_have_text("live")
    expect(page.locator("#host-rows th.name")).to_have_count(4)
    page.screenshot(path=str(SHOTS / "hosts.png"))
    page.screenshot(path=str(SHOTS / "hosts-full.png"), full_page=True)
