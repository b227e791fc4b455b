"""Incidents through the real kernel: a backend starts failing 20 % of its requests, the rules
evaluated by a real Celery worker and beat open an incident within 30 s; it recovers and the
incident resolves after the grace period; a report is generated and downloaded through the UI
(Playwright) and the API, and its figures are exactly what this test sent. The HTML opens with no
network, the PDF renders, the JSON validates against the committed schema."""

import collections
import http.client
import json
import re
import subprocess
import threading
import time

import pytest
import requests
from playwright.sync_api import expect

from obsweb.incidents.report import schema
from tests import png
from tests.browser import SHOTS, VIEWPORT, chromium
from tests.stack import PYTHON, http_backend, obsweb_stack
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
BACKEND = "e2e-incidents"
EVALUATION_INTERVAL_S = 2
GRACE_S = 6
OPEN_DEADLINE_S = 30


class Traffic(threading.Thread):
    """Drives the backend on one keep-alive connection and counts every answer: while failing,
    4 GET /users/1 for each POST /boom (20 % answered 500); while healthy, GETs only."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.failing = True
        self.sent = collections.Counter()  # status -> requests answered with it
        self.first_failure_at: float | None = None
        self.stopping = threading.Event()
        self.error: Exception | None = None

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while not self.stopping.is_set():
                batch = (
                    [("GET", "/users/1")] * 4 + [("POST", "/boom")]
                    if self.failing
                    else [("GET", "/users/1")] * 10
                )
                for method, path in batch:
                    if method == "POST" and self.first_failure_at is None:
                        self.first_failure_at = time.monotonic()
                    conn.request(method, path, body=b"x" * 10 if method == "POST" else None)
                    response = conn.getresponse()
                    response.read()
                    self.sent[response.status] += 1
                time.sleep(0.2)
        except Exception as exc:  # the test reads it: a traffic failure must not pass silently
            self.error = exc
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)
        assert self.error is None, f"traffic failed: {self.error!r}"


@pytest.fixture(scope="module")
def stack():
    with obsweb_stack() as stack:
        env = stack.env | {
            "ALERT_EVALUATION_INTERVAL_S": str(EVALUATION_INTERVAL_S),
            "INCIDENT_RESOLVE_GRACE_S": str(GRACE_S),
        }
        beat_schedule = stack.tmp / "celerybeat-schedule"
        stack.spawn(
            "celery",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "obsweb",
                "worker",
                "-B",
                "--concurrency",
                "2",
                "-l",
                "info",
                "-s",
                str(beat_schedule),
                "--without-gossip",
                "--without-mingle",
            ],  # fmt: skip
            env=env,
        )
        wait_until(lambda: "ready." in stack.log("celery"), "the Celery worker", stack)
        yield stack


def staff(stack, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Token {stack.staff_token}"}
    return requests.request(method, f"{stack.web}{path}", headers=headers, timeout=30, **kwargs)


def backend_incident(stack, state: str | None = None) -> dict | None:
    params = {"service": BACKEND} | ({"state": state} if state else {})
    incidents = stack.api("/api/v1/incidents", **params)["incidents"]
    return incidents[0] if incidents else None


@pytest.fixture(scope="module")
def episode(stack):
    """Failing, then recovered: (the resolved incident, what was sent, measured seconds)."""
    with http_backend(BACKEND, env=stack.env) as port:
        traffic = Traffic(port)
        traffic.start()
        try:
            opened = wait_until(
                lambda: backend_incident(stack, "open"), "an open incident", stack, timeout=60
            )
            open_s = time.monotonic() - traffic.first_failure_at
            traffic.failing = False
            recovered_at = time.monotonic()
            resolved = wait_until(
                lambda: backend_incident(stack, "resolved"), "the incident resolved", stack, timeout=120
            )
            resolve_s = time.monotonic() - recovered_at
        finally:
            traffic.stop()
        sent = dict(traffic.sent)

        def all_counted():
            services = {s["name"]: s for s in stack.api("/api/v1/services", since="-30m")["services"]}
            return services.get(BACKEND, {}).get("requests") == sum(sent.values())

        wait_until(all_counted, f"all {sum(sent.values())} requests counted", stack)
    assert opened["id"] == resolved["id"]
    print(
        f"\nincident opened {open_s:.1f} s after the first failure, resolved {resolve_s:.1f} s after recovery"
    )
    return {"incident": resolved, "sent": sent, "open_s": open_s, "resolve_s": resolve_s}


def test_the_incident_opens_within_30_s_and_resolves_after_the_grace_period(stack, episode):
    incident = episode["incident"]
    assert episode["open_s"] < OPEN_DEADLINE_S
    assert episode["resolve_s"] >= GRACE_S
    assert (incident["service"], incident["rule"], incident["state"]) == (
        BACKEND,
        "Error rate above 5 %",
        "resolved",
    )
    detail = stack.api(f"/api/v1/incidents/{incident['id']}")
    kinds = [event["kind"] for event in detail["timeline"]]
    assert kinds[0] == "opened" and kinds[-1] == "resolved" and "clear" in kinds
    assert episode["sent"][500] > 0 and set(episode["sent"]) == {200, 500}


def figures(html: str) -> dict[str, int]:
    found = dict(re.findall(r'<dd id="figure-(requests|errors)">([\d,]+)</dd>', html))
    return {name: int(value.replace(",", "")) for name, value in found.items()}


def check_report_files(files: dict, sent: dict, tmp_path) -> None:
    """The figures are what was sent; the JSON validates; the PDF renders with its charts."""
    requests_sent, errors_sent = sum(sent.values()), sent[500]
    assert figures(files["html"].decode()) == {"requests": requests_sent, "errors": errors_sent}
    document = json.loads(files["json"])
    assert schema.errors(document) == []
    totals = document["summary"]["subject_totals"]
    assert (totals["requests"], totals["errors"]) == (requests_sent, errors_sent)
    (tmp_path / "report.pdf").write_bytes(files["pdf"])
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "report.pdf", "page"], cwd=tmp_path, check=True, timeout=60
    )
    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages and len(png.colours(pages[0].read_bytes())) > 50, "the PDF's first page is blank"


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def test_a_report_is_generated_and_downloaded_through_the_ui(stack, episode, browser, tmp_path):
    incident_id = episode["incident"]["id"]
    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    page.goto(f"{stack.web}/incidents/")
    page.fill("#id_username", "e2e-staff")
    page.fill("#id_password", "e2e-staff-pass")
    page.click("button[type=submit]")
    expect(page.locator("#incidents")).to_contain_text(BACKEND)
    page.screenshot(path=str(SHOTS / "incidents.png"))
    page.click(f"#incidents a[href='/incidents/{incident_id}/'] >> nth=0")
    assert "Server Error" not in page.content(), stack.log("web")[-5000:]
    expect(page.locator("h1")).to_contain_text(f"Incident #{incident_id}")
    expect(page.locator("#live-status")).to_have_text("live")

    started = time.monotonic()
    page.click("#generate-report")
    seen = set()
    html_link = page.locator("a.download[data-format=html]")
    while not html_link.count() and time.monotonic() - started < 90:
        seen.update(page.locator(".progress-text").all_inner_texts())
        page.wait_for_timeout(100)
    expect(html_link).to_be_visible()
    build_s = time.monotonic() - started
    assert any(0 < int(text.rstrip(" %")) < 100 for text in seen), f"no progress shown: {seen}"
    expect(page.locator(".report-row").first).to_contain_text("done")
    page.screenshot(path=str(SHOTS / "incident.png"), full_page=True)

    files = {}
    for fmt in ("html", "pdf", "json"):
        with page.expect_download() as download:
            page.click(f"a.download[data-format={fmt}] >> nth=0")
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        assert path.name.startswith(f"obsweb-incident-{incident_id}-report-") and path.suffix == f".{fmt}"
        files[fmt] = path.read_bytes()
    sizes = ", ".join(f"{fmt} {len(content) / 1024:.0f} KiB" for fmt, content in files.items())
    print(f"\nreport through the UI: built in {build_s:.1f} s (progress seen: {sorted(seen)}); {sizes}")
    check_report_files(files, episode["sent"], tmp_path)
    (tmp_path / "downloaded.html").write_bytes(files["html"])
    check_opens_offline(browser, tmp_path / "downloaded.html")


def check_opens_offline(browser, path) -> None:
    """The downloaded HTML, opened from disk with every non-file request refused: the charts draw,
    nothing was asked of the network, and the console stays clean."""
    context = browser.new_context(viewport=VIEWPORT, offline=True)
    page = context.new_page()
    asked, errors = [], []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else (
        asked.append(route.request.url), route.abort()))  # fmt: skip
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    page.wait_for_function("document.body.dataset.chartsReady === 'true'", timeout=60_000)
    assert page.locator(".chart .main-svg").count() >= 3
    assert page.locator("#service-map .main-svg").count() >= 1
    assert (asked, errors) == ([], [])
    page.screenshot(path=str(SHOTS / "report.png"))
    context.close()


def test_a_report_is_generated_and_downloaded_through_the_api(stack, episode, tmp_path):
    incident_id = episode["incident"]["id"]

    created = staff(stack, "POST", f"/api/v1/incidents/{incident_id}/reports")
    assert created.status_code == 202
    report_id = created.json()["id"]
    done = wait_until(
        lambda: (r := stack.api(f"/api/v1/reports/{report_id}"))["status"] in ("done", "failed") and r,
        "the report built",
        stack,
        timeout=90,
    )

    assert (done["status"], done["progress"], done["error"]) == ("done", 100, "")
    files = {}
    for fmt, url in done["downloads"].items():
        response = requests.get(
            f"{stack.web}{url}", headers={"Authorization": f"Token {stack.token}"}, timeout=30
        )
        assert response.status_code == 200
        files[fmt] = response.content
    assert sorted(files) == ["html", "json", "pdf"]
    check_report_files(files, episode["sent"], tmp_path)
