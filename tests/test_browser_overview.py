"""The overview and the map in a real browser against a real daphne, Redis and database."""

import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser import HOSTILE, LIVE_DEADLINE_MS, SHOTS, VIEWPORT, chromium, log_in_as, seeded_web

SEED = (
    "from django.contrib.auth.models import User\n"
    "from tests.seed import seed_edge, seed_service\n"
    "User.objects.create_user('viewer', password='viewer-pass')\n"
    "seed_service('checkout', host='web-1', requests=600, errors=9, latency_ms=42)\n"
    "seed_service('payments', host='web-2', requests=240, errors=30, latency_ms=120)\n"
    "seed_service('redis:6379', host='web-2', protocol='redis', requests=900, latency_ms=0.3)\n"
    f"seed_service({HOSTILE!r}, host='web-1', requests=20)\n"
    "seed_edge('checkout', 'payments', requests=240, errors=30, latency_ms=120)\n"
    "seed_edge('checkout', 'redis:6379', protocol='redis', requests=900, latency_ms=0.3)\n"
    "seed_edge('payments', 'checkout', requests=12, latency_ms=30)\n"
    f"seed_edge({HOSTILE!r}, 'checkout', requests=20)\n"
    "seed_edge('payments', '93.184.216.34:443', requests=60, errors=1, latency_ms=310, external=True)\n"
)


@pytest.fixture
def web(tmp_path, redis_url):
    """Migrated SQLite file, a viewer, seeded traffic, and daphne serving it on a free port."""
    # Seeded heartbeats do not repeat: wide thresholds keep their status for the test's length.
    with seeded_web(tmp_path, redis_url, SEED, HOST_STALE_AFTER_S="15", HOST_DOWN_AFTER_S="60") as web:
        yield web


@pytest.fixture
def page():
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 1280, "height": 800})


def log_in(page, web):
    log_in_as(page, web.url, "viewer", "viewer-pass")


def move_mouse_onto(page, locator):
    """Plotly's drag layer sits above the points, so hover by position, not by element."""
    box = locator.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_overview_updates_live_without_running_captured_html(web, page):
    log_in(page, web)
    table = page.locator("#services")
    expect(table).to_contain_text("checkout")
    expect(table).to_contain_text(HOSTILE)  # shown as text, not parsed as a tag
    expect(page.locator("#live-status")).to_have_text("live")
    page.evaluate("window.__loadedOnce = true")

    web.shell(
        "import time\n"
        "from tests.seed import seed_service\n"
        "from obsweb.dashboard.live import broadcast_overview\n"
        "seed_service('inventory', host='web-3', requests=75, latency_ms=8)\n"
        "broadcast_overview(time.time_ns())\n"
    )

    expect(table.locator("tbody tr", has_text="inventory")).to_be_visible(timeout=LIVE_DEADLINE_MS)
    expect(table.locator("tbody tr", has_text="inventory")).to_contain_text("web-3")
    expect(table).to_contain_text(HOSTILE)
    expect(page.locator("#live-updated")).to_contain_text("updated")
    assert page.evaluate("window.__loadedOnce") is True, "the page reloaded instead of updating"
    assert page.evaluate("typeof window.__xss") == "undefined"
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)


def test_map_draws_nodes_and_labels_without_running_captured_html(web, page):
    log_in(page, web)
    page.goto(web.url + "/map/")
    svg_text = page.locator("#service-map svg text")
    expect(svg_text.filter(has_text="checkout").first).to_be_visible()

    texts = svg_text.all_text_contents()
    for name in ("checkout", "payments", "redis:6379", "93.184.216.34:443", HOSTILE):
        assert name in texts, f"{name!r} not drawn; svg texts: {texts}"
    assert any(t.startswith("http ") and "/s p99 " in t for t in texts), texts
    # Plotly renders hover text as HTML too: hover the hostile node and a normal one.
    points = page.locator("#service-map .scatterlayer .trace .point")
    drawn_order = sorted(["checkout", "payments", "redis:6379", "93.184.216.34:443", HOSTILE])
    move_mouse_onto(page, points.nth(drawn_order.index(HOSTILE)))
    expect(page.locator("#service-map .hovertext")).to_contain_text(HOSTILE)
    move_mouse_onto(page, points.nth(drawn_order.index("checkout")))
    expect(page.locator("#service-map .hovertext")).to_contain_text("requests: 600")
    assert page.evaluate("typeof window.__xss") == "undefined"
    page.mouse.move(5, 5)
    page.screenshot(path=str(SHOTS / "map.png"), full_page=True)


def test_custom_window_is_kept_in_the_url_and_never_overwritten_live(web, page):
    log_in(page, web)
    expect(page.locator("#live-status")).to_have_text("live")
    now = datetime.now(UTC)
    since, until = now - timedelta(hours=1), now + timedelta(minutes=5)

    page.select_option("#window-select", "custom")
    expect(page.locator("#window-custom")).to_be_visible()
    page.fill("#window-from", f"{since:%Y-%m-%dT%H:%M}")
    page.fill("#window-to", f"{until:%Y-%m-%dT%H:%M}")
    page.click("#window-apply")

    expect(page).to_have_url(re.compile(r"\?since=.+&until=.+"))
    params = parse_qs(urlsplit(page.url).query)
    assert params == {"since": [f"{since:%Y-%m-%dT%H:%M}:00Z"], "until": [f"{until:%Y-%m-%dT%H:%M}:00Z"]}
    expect(page.locator("#window-select")).to_have_value("custom")
    expect(page.locator("#window-from")).to_have_value(f"{since:%Y-%m-%dT%H:%M}")
    expect(page.locator("#window-to")).to_have_value(f"{until:%Y-%m-%dT%H:%M}")
    expect(page.locator(".window-note")).to_contain_text("UTC")
    table = page.locator("#services")
    expect(table).to_contain_text("checkout")
    page.evaluate("window.__loadedOnce = true")

    web.shell(
        "import time\n"
        "from tests.seed import seed_service\n"
        "from obsweb.dashboard.live import broadcast_overview\n"
        "seed_service('inventory', host='web-3', requests=75, latency_ms=8)\n"
        "broadcast_overview(time.time_ns())\n"
    )
    page.wait_for_timeout(2000)  # twice the live update interval

    expect(table).not_to_contain_text("inventory")
    assert page.evaluate("window.__loadedOnce") is True, "the page reloaded"
    page.reload()  # the shared URL opens the same window, now with the new service in it
    expect(page.locator("#window-select")).to_have_value("custom")
    expect(table).to_contain_text("inventory")
    page.screenshot(path=str(SHOTS / "overview-custom.png"), full_page=True)


def test_hosts_strip_and_drop_warning_show_hostile_host_names_as_text(web, page):
    page.set_viewport_size(VIEWPORT)
    web.shell(
        "from datetime import timedelta\n"
        "from django.utils import timezone\n"
        "from obsweb.fleet.models import Host\n"
        "from obsweb.telemetry.aggregate import apply_records\n"
        "from tests.factories import agent, now_ns\n"
        "apply_records([\n"
        "    agent(host='web-1', ts=now_ns(9), **{'agent.events_seen': 40000}),\n"
        "    agent(host='web-1', ts=now_ns(4),\n"
        "          **{'agent.events_seen': 46000, 'agent.events_dropped': 1830}),\n"
        "    agent(host='web-2', ts=now_ns(35), **{'agent.kernel': '6.1.0-18-amd64'}),\n"
        f"    agent(host={HOSTILE!r}, ts=now_ns(130)),\n"
        "])\n"
    )
    log_in(page, web)

    strip = page.locator("#host-list")
    expect(strip.locator(".host")).to_have_count(3)
    expect(strip.locator(".host-down .host-name")).to_have_text(HOSTILE)
    expect(strip.locator(".host-up")).to_contain_text("web-1")
    expect(strip.locator(".host-up")).to_contain_text("1,830 dropped")
    expect(strip.locator(".host-stale")).to_contain_text("web-2")
    assert "kernel 6.1.0-18-amd64" in strip.locator(".host-stale").get_attribute("title")
    warnings = page.locator("#fleet-warnings li")
    expect(warnings.filter(has_text="agent on web-1 dropped 1,830 events since")).to_have_count(1)
    expect(warnings.filter(has_text=f"{HOSTILE} has not reported for 2 min")).to_have_count(1)
    assert page.evaluate("typeof window.__xss") == "undefined"
    page.screenshot(path=str(SHOTS / "overview-hosts.png"), full_page=True)

    # The live broadcast rebuilds both with textContent: a new host appears, the names stay text.
    web.shell(
        "import time\n"
        "from obsweb.dashboard.live import broadcast_overview\n"
        "from obsweb.telemetry.aggregate import apply_records\n"
        "from tests.factories import agent, now_ns\n"
        "apply_records([agent(host='web-3', ts=now_ns(1))])\n"
        "broadcast_overview(time.time_ns())\n"
    )
    expect(strip.locator(".host", has_text="web-3")).to_be_visible(timeout=LIVE_DEADLINE_MS)
    expect(strip.locator(".host-down .host-name")).to_have_text(HOSTILE)
    expect(warnings.filter(has_text=f"{HOSTILE} has not reported for")).to_have_count(1)
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_a_map_of_200_services_draws_fast_and_stays_readable(web, page):
    web.shell(
        "from tests.seed import seed_edge, seed_service\n"
        "names = [f'svc-{i:03d}' for i in range(200)]\n"
        "for i, name in enumerate(names):\n"
        "    seed_service(name, requests=10 + i, errors=i % 9)\n"
        "    for k in (1, 7, 31):\n"
        "        seed_edge(name, names[(i + k) % 200], requests=5)\n"
    )
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    log_in(page, web)

    started = time.monotonic()
    page.goto(web.url + "/map/")
    page.wait_for_selector("#service-map .scatterlayer .trace .point")
    drawn_s = time.monotonic() - started

    nodes = page.evaluate(
        "document.getElementById('service-map').data.find((t) => t.mode === 'markers' && t.customdata"
        " && t.customdata[0] && !t.customdata[0].anchor).x.length"
    )
    labels = page.locator("#service-map .annotation-text").count()
    sizes = page.evaluate(
        "Math.max(...document.getElementById('service-map').data.find((t) => t.mode === 'markers'"
        " && t.customdata && t.customdata[0] && !t.customdata[0].anchor).marker.size)"
    )
    print(f"200-service map drawn in {drawn_s:.2f} s with {labels} labels, markers <= {sizes:.0f} px")
    assert nodes == 200 + 5  # the fixture seeds five nodes of its own
    assert labels <= 48  # the busiest 40 services and 8 peers are named; the rest on hover
    assert errors == []
    page.screenshot(path=str(SHOTS / "map-200.png"))
