"""The dashboard in a real browser against the whole real stack: probe, ingester, daphne, and a
known shop (frontend -> api -> PostgreSQL and Redis, tests/servers/shop.py) traced by the kernel.

Every page loads clean, the map draws exactly the shop's calls, the overview table and the service
charts follow new traffic live, and strings captured from traffic (a path, a SQL name) stay text
wherever they show. The probe sees the whole host: run one shop at a time, or the shops'
frontends merge by name.
"""

import contextlib
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import psycopg
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from tests.browser import VIEWPORT, chromium, log_in_as
from tests.servers.shop import API, FRONTEND, Customer, Shop, shop
from tests.stack import Stack, obsweb_stack
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf

CHECKOUTS = 40
BOOMS = 5
LIVE_CHECKOUTS = 10
HOSTILE_PATH = "/<script>alert(1)</script>"
HOSTILE_USER_AGENT = '"><img src=x onerror=window.__xss=1>'
HOSTILE_NAME = "<b>bold</b><img src=x onerror=window.__xss=1>"
# A quoted name survives literal redaction; a /* comment */ would not (comments are dropped).
HOSTILE_SQL = f'SELECT 1 AS "{HOSTILE_NAME}"'
HOSTILE_QUERY = f'SELECT ? AS "{HOSTILE_NAME}"'  # as stored
PAGES = ("overview", "map", FRONTEND, API, "postgres")
SETTLE_MS = 500  # after load: late console errors, plotly's first draw
LIVE_DEADLINE_MS = 15_000
HOVER_TIMEOUT_MS = 1000


@dataclass
class Running:
    stack: Stack
    shop: Shop
    sent: dict = field(default_factory=dict)  # route -> requests sent to the frontend

    def url(self, page: str) -> str:
        paths = {"overview": "/", "map": "/map/", "postgres": f"/services/{quote(self.shop.postgres)}/"}
        return self.stack.web + paths.get(page, f"/services/{page}/")

    def shop_edges(self) -> dict:
        """{(caller, callee, protocol): edge} for the calls between the shop's own services."""
        names = set(self.shop.services)
        return {
            (e["source"], e["target"], e["protocol"]): e
            for e in self.stack.api("/api/v1/edges")["edges"]
            if e["source"] in names and e["target"] in names
        }

    def frontend_samples(self) -> list[dict]:
        return self.stack.api("/api/v1/requests", service=FRONTEND, limit=1000)["requests"]


@pytest.fixture(scope="module")
def running():
    """The stack, the shop, and known traffic through it, once the API shows all of it."""
    with obsweb_stack() as stack, shop() as the_shop:
        running = Running(stack, the_shop)
        customer = Customer(the_shop)
        customer.shop(CHECKOUTS, BOOMS)
        assert customer.get(HOSTILE_PATH, **{"User-Agent": HOSTILE_USER_AGENT}) == 404
        customer.close()
        running.sent = {"/checkout": CHECKOUTS, "/boom": BOOMS, HOSTILE_PATH: 1}
        with psycopg.connect(the_shop.postgres_dsn, autocommit=True) as db:
            assert db.execute(HOSTILE_SQL).fetchone() == (1,)

        def everything_seen():
            frontend = {e["route"]: e["requests"] for e in stack.endpoints(FRONTEND)}
            queries = {e["query"] for e in stack.endpoints(the_shop.postgres)}
            services = {s["name"] for s in stack.api("/api/v1/services")["services"]}
            return (
                frontend == running.sent
                and HOSTILE_QUERY in queries
                and set(the_shop.services) <= services
                and {(e[0], e[1]) for e in running.shop_edges()} == the_shop.edges
            )

        try:
            wait_until(everything_seen, "the shop's services, routes and calls in the API", stack)
        finally:
            pids = {r["pid"] for r in running.frontend_samples()} - {the_shop.frontend_pid}
            assert not pids, f"another shop's frontend (pid {pids}) runs on this host: run one at a time"
        yield running


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def session(browser, running):
    """A browser context of the stack's user, logged in once through the login form; its
    pages share the cache, so plotly.js is fetched once."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        log_in_as(page, running.stack.web, "e2e", "e2e-pass")
        page.close()
        yield context
    finally:
        context.close()


class Watched:
    """A page that records whatever a broken or hostile page would do."""

    def __init__(self, page, stack: Stack):
        self.page = page
        self.stack = stack
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"{r.status}: {r.url}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def visit(self, url: str):
        response = self.page.goto(url)
        assert response.status == 200, f"{url} answered {response.status}\n{self.stack.log('web')[-3000:]}"
        for chart in self.page.locator(".js-plotly-plot").all():  # drawn, not only loaded
            expect(chart.locator(".main-svg").first).to_be_attached()
        self.page.wait_for_timeout(SETTLE_MS)
        return self.page

    def hover_plot_points(self) -> list[str]:
        """Plotly renders hover labels as HTML: brings up the labels of the first, middle and last
        point of each plot, and returns them.

        Hovers by position, as plotly's drag layer sits above the points; a live page may redraw
        (and drop) a point between two looks at it, so each point is measured once."""
        labels = []
        for plot in self.page.locator(".js-plotly-plot").all():
            points = plot.locator(".point")
            count = points.count()
            for index in sorted({0, count // 2, count - 1} if count else set()):
                try:
                    box = points.nth(index).bounding_box(timeout=HOVER_TIMEOUT_MS)
                except PlaywrightTimeoutError:
                    continue  # redrawn away
                if box is None:
                    continue
                self.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                hover = plot.locator(".hoverlayer")
                with contextlib.suppress(AssertionError):
                    expect(hover.locator("text").first).to_be_attached(timeout=HOVER_TIMEOUT_MS)
                    labels.append(" ".join(hover.all_text_contents()))
                self.page.mouse.move(1, 1)
        return labels

    def assert_clean(self):
        assert self.problems == [], f"web log:\n{self.stack.log('web')[-3000:]}"

    def assert_nothing_ran(self):
        assert self.page.evaluate("typeof window.__xss") == "undefined", "captured HTML ran"
        assert self.dialogs == [], f"a captured script opened dialogs: {self.dialogs}"


@pytest.fixture
def watched(running, session):
    page = session.new_page()
    try:
        yield Watched(page, running.stack)
    finally:
        page.close()


@pytest.mark.parametrize("name", PAGES)
def test_the_page_loads_without_console_errors_or_failed_requests(running, watched, name):
    page = watched.visit(running.url(name))
    expect(page.locator("h1")).to_have_text(
        {"overview": "Services", "map": "Service map", "postgres": running.shop.postgres}.get(name, name)
    )
    if name in (FRONTEND, API, "postgres"):
        expect(page.locator("#chart-latency .scatterlayer .point").first).to_be_attached()
    watched.assert_clean()


# Where plotly drew a point given in the map's coordinates, in page pixels.
TO_PAGE_PIXELS = """([x, y]) => {
    const gd = document.getElementById("service-map");
    const box = gd.getBoundingClientRect();
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    return [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)];
}"""
# The drawn arrows as [caller position, callee position]: annotations from (ax, ay) to (x, y).
DRAWN_ARROWS = """() => document.getElementById("service-map").layout.annotations
    .filter((a) => a.showarrow).map((a) => [[a.ax, a.ay], [a.x, a.y]])"""


def test_the_map_draws_the_shop_services_and_their_calls(running, watched):
    page = watched.visit(running.url("map"))
    names = set(running.shop.services)
    texts = page.locator("#service-map svg text").all_text_contents()
    assert names <= set(texts), f"not drawn: {names - set(texts)}; svg texts: {texts}"

    drawing = page.evaluate("JSON.parse(document.getElementById('service-map-data').textContent)")
    at = {(n["x"], n["y"]): n["name"] for n in drawing["nodes"]}
    arrows = {(at.get(tuple(start)), at.get(tuple(end))) for start, end in page.evaluate(DRAWN_ARROWS)}
    assert {(a, b) for a, b in arrows if a in names and b in names} == running.shop.edges

    # Each call's numbers show on hover of its label (or of its dot, when a busy host has too
    # many calls for inline labels).
    protocols = {(FRONTEND, API): "http", (API, running.shop.postgres): "postgresql"}
    protocols[(API, running.shop.redis)] = "redis"
    for edge in drawing["edges"]:
        pair = (edge["source"], edge["target"])
        if pair not in protocols:
            continue
        page.mouse.move(*page.evaluate(TO_PAGE_PIXELS, [edge["label_x"], edge["label_y"]]))
        hover = page.locator("#service-map .hoverlayer")
        expect(hover).to_contain_text(f"{pair[0]} \u2192 {pair[1]}")
        expect(hover).to_contain_text(f"{protocols[pair]}: ")
        page.mouse.move(1, 1)
    watched.assert_clean()


def test_the_api_lists_exactly_the_shop_calls_with_their_counts(running):
    shop, sent = running.shop, running.sent
    expected = {(FRONTEND, API, "http"), (API, shop.postgres, "postgresql"), (API, shop.redis, "redis")}

    def counted():
        edges = running.shop_edges()
        http = edges.get((FRONTEND, API, "http"), {})
        return edges if http.get("requests") == sent["/checkout"] + sent["/boom"] else None

    edges = wait_until(counted, "every frontend -> api call on its edge", running.stack)
    assert {(caller, callee) for caller, callee, _ in edges} == shop.edges
    # Besides the calls, connections show as "tcp" edges (from flow records) between the same pairs.
    assert expected <= set(edges) and {protocol for *_, protocol in set(edges) - expected} <= {"tcp"}
    assert edges[(FRONTEND, API, "http")]["errors"] == BOOMS
    # Each order is one query and one GET; connection setup (startup, auth) adds a few more.
    for edge in (API, shop.postgres, "postgresql"), (API, shop.redis, "redis"):
        assert sent["/checkout"] <= edges[edge]["requests"] <= sent["/checkout"] + 10, edges[edge]
        assert edges[edge]["errors"] == 0, edges[edge]
    assert 140 <= edges[(API, shop.postgres, "postgresql")]["p99_ms"] <= 200


def test_the_api_keeps_captured_strings_verbatim(running):
    """What the pages must escape is really stored as sent (else the browser tests prove nothing)."""
    hostile = [r for r in running.frontend_samples() if r.get("http.route") == HOSTILE_PATH]
    assert [(r["http.response.status_code"], r["user_agent.original"]) for r in hostile] == [
        (404, HOSTILE_USER_AGENT)
    ]
    assert HOSTILE_QUERY in {e["query"] for e in running.stack.endpoints(running.shop.postgres)}


def poll(page, script: str, done, timeout_ms: int = LIVE_DEADLINE_MS):
    """What `script` returns in the page once done(it) holds, or the last value at the timeout."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not done(value := page.evaluate(script)) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    return value


# The throughput chart as plotted: [minutes with requests, requests in all minutes]. Every minute
# of the window is plotted, empty ones as 0, so the number of x values alone says nothing.
PLOTTED_THROUGHPUT = """() => {
    const bars = document.getElementById("chart-throughput").data[0];
    return [bars.y.filter((n) => n > 0).length, bars.y.reduce((sum, n) => sum + (n || 0), 0)];
}"""


def test_the_service_charts_gain_a_minute_live_without_a_reload(running, watched):
    page = watched.visit(running.url(FRONTEND))
    assert page.locator("#service-live-config").count(), "the service page does not update live"
    expect(page.locator("#live-status")).to_have_text("live")
    minutes, plotted = page.evaluate(PLOTTED_THROUGHPUT)
    assert plotted == sum(running.sent.values())
    page.evaluate("window.__loadedOnce = true")

    # Traffic until a minute that had none gets a bar: at once when this minute had no traffic
    # yet, else once the next one has begun. A page that never updates stops it at that deadline.
    customer = Customer(running.shop)
    deadline = time.monotonic() + (60 - time.time() % 60) + 5
    while time.monotonic() < deadline and page.evaluate(PLOTTED_THROUGHPUT)[0] <= minutes:
        customer.shop(1)
        running.sent["/checkout"] += 1
        page.wait_for_timeout(300)
    customer.close()

    total = sum(running.sent.values())
    after = poll(page, PLOTTED_THROUGHPUT, lambda now: now[0] > minutes and now[1] == total)
    assert after[0] > minutes and after[1] == total, f"plotted before {[minutes, plotted]}, now {after}"
    expect(page.locator('#service-stats [data-stat="requests"]')).to_have_text(str(total))
    assert page.evaluate("window.__loadedOnce") is True, "the page reloaded instead of updating"
    watched.assert_clean()


def test_the_overview_counts_new_requests_live_without_a_reload(running, watched):
    page = watched.visit(running.url("overview"))
    expect(page.locator("#live-status")).to_have_text("live")
    row = page.locator("#services tbody tr", has=page.locator(".svc", has_text=FRONTEND))
    requests_cell = row.locator("td").last
    before = sum(running.sent.values())
    expect(requests_cell).to_have_text(str(before))
    page.evaluate("window.__loadedOnce = true")

    customer = Customer(running.shop)
    customer.shop(LIVE_CHECKOUTS)
    customer.close()
    running.sent["/checkout"] += LIVE_CHECKOUTS

    expect(requests_cell).to_have_text(str(before + LIVE_CHECKOUTS), timeout=LIVE_DEADLINE_MS)
    expect(page.locator("#live-updated")).to_contain_text("updated")
    assert page.evaluate("window.__loadedOnce") is True, "the page reloaded instead of updating"
    watched.assert_clean()


@pytest.mark.parametrize("name", PAGES)
def test_captured_html_stays_text_on_the_page(running, watched, name):
    page = watched.visit(running.url(name))
    labels = watched.hover_plot_points()
    if name != "overview":
        assert labels, "no plot point showed a hover label"
    if name == FRONTEND:
        route = page.locator("#endpoints tr", has_text="alert(1)")
        expect(route.locator("code")).to_have_text(HOSTILE_PATH)
        assert route.locator("script").count() == 0
    if name == "postgres":
        query = page.locator("#top-queries code.query", has_text="bold")
        expect(query).to_have_text(HOSTILE_QUERY)
        expect(query).to_have_attribute("title", HOSTILE_QUERY)
        assert query.locator("b, img").count() == 0
    watched.assert_nothing_ran()
    watched.assert_clean()


def test_captured_html_stays_text_on_the_request_path_page(running, watched):
    trace_id = next(r["trace_id"] for r in running.frontend_samples() if r.get("http.route") == HOSTILE_PATH)
    page = watched.visit(f"{running.stack.web}/traces/{trace_id}/")
    labels = watched.hover_plot_points()
    assert any(HOSTILE_PATH in label for label in labels), labels
    ticks = [t.strip() for t in page.locator("#waterfall .ytick text").all_text_contents()]  # indented
    assert f"{FRONTEND}: GET {HOSTILE_PATH}" in ticks, ticks
    expect(page.locator("#spans")).to_contain_text(HOSTILE_PATH)
    assert page.locator("#spans script").count() == 0
    watched.assert_nothing_ran()
    watched.assert_clean()


def test_captured_html_stays_text_on_the_endpoint_paths_page(running, watched):
    (endpoint,) = [e for e in running.stack.endpoints(FRONTEND) if e["route"] == HOSTILE_PATH]
    page = watched.visit(f"{running.stack.web}/services/{FRONTEND}/paths/{endpoint['id']}/")
    watched.hover_plot_points()
    expect(page.locator(".window-note code")).to_have_text(f"GET {HOSTILE_PATH}")
    assert page.locator("main script").count() == 0
    watched.assert_nothing_ran()
    watched.assert_clean()
