"""Building an incident report: the HTML holds the right figures, escapes captured text and loads
nothing from anywhere; the JSON validates against the committed schema; the PDF renders (charts
included); memory stays bounded with 100k samples; old reports are pruned."""

import json
import re
import subprocess
import tracemalloc
from datetime import timedelta
from pathlib import Path

import plotly
import pytest
from django.utils import timezone

from obsweb.fleet.models import Host
from obsweb.incidents import constants as c
from obsweb.incidents import evaluation
from obsweb.incidents.models import Incident, IncidentEvent, Report
from obsweb.incidents.report import contents, pdf, schema
from obsweb.incidents.tasks import build_report, prune_reports
from obsweb.telemetry.models import RequestSample, Service
from probes import schema as record
from tests import png
from tests.incidents import IN_MEMORY_LAYER, ensure_default_rules, heartbeat
from tests.seed import seed_edge, seed_sample, seed_service

pytestmark = pytest.mark.django_db
HOSTILE = '<img src=x onerror="window.__xss=1">'
PLOTLY_JS = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()
CHART_BLUE = (9, 105, 218)  # the throughput bars (static/obsweb/report.js)
REQUESTS, ERRORS = 180, 16
SECTIONS = (
    "summary",
    "timeline",
    "map",
    "charts",
    "affected-services",
    "affected-edges",
    "failing-requests",
    "slowest-requests",
    "tcp-health",
    "resource-use",
    "probes",
)


@pytest.fixture(autouse=True)
def report_settings(settings, db):
    ensure_default_rules()
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER


def span(service: str, kind: str, span_id: str, *, parent: str = "", status: int = 200, **attrs):
    """One stored span of trace t1 (a request path: checkout -> postgres)."""
    ts = timezone.now() - timedelta(seconds=20)
    service_row = Service.objects.get_or_create(name=service)[0]
    return RequestSample.objects.create(
        ts=ts,
        service=service_row,
        host="web-1",
        span_kind=kind,
        status_code=status,
        error=status >= 500,
        duration_ns=30_000_000,
        trace_id="ab" * 16,
        span_id=span_id,
        parent_span_id=parent,
        attributes={
            record.TS: int(ts.timestamp() * 1e9),
            record.SERVICE: service,
            record.HOST: "web-1",
            record.HTTP_STATUS: status,
            record.ERROR: status >= 500,
            record.DURATION_NS: 30_000_000,
            record.TRACE_ID: "ab" * 16,
        }
        | attrs,
    )


@pytest.fixture
def incident() -> Incident:
    """checkout failing: 180 requests, 16 of them 5xx; a hostile caller; a database behind it."""
    heartbeat("web-1", seconds_ago=1, dropped_recently=7)
    Host.objects.filter(name="web-1").update(
        probes={"http": {"desired": True, "actual": True, "error": None}},
        agent_version="0.1.0",
    )
    seed_service("checkout", requests=80, errors=ERRORS, latency_ms=40)
    seed_service("checkout", requests=100, latency_ms=20, minutes_ago=3)
    seed_service("postgres:5432", protocol="postgresql", requests=100, latency_ms=2)
    seed_service(HOSTILE, requests=20)
    seed_edge(HOSTILE, "checkout", requests=20, errors=2)
    seed_edge("checkout", "postgres:5432", protocol="postgresql", requests=100, latency_ms=2)
    span("checkout", "server", "s1", status=500, **{record.HTTP_METHOD: "POST", record.HTTP_ROUTE: "/pay"})
    span(
        "checkout",
        "client",
        "c1",
        parent="s1",
        **{record.DB_OPERATION: "SELECT", record.DB_COLLECTION: "orders"},
    )
    seed_sample("checkout", route=f"/slow/{HOSTILE}", duration_ms=900)
    evaluation.evaluate()
    incident = Incident.objects.get(subject="checkout")
    IncidentEvent.objects.create(
        incident=incident, kind=c.EVENT_COMMENT, text=f"looked at {HOSTILE}", actor="staff"
    )
    return incident


def build(incident: Incident) -> Report:
    report = Report.objects.create(incident=incident)
    assert build_report(report.pk) == c.DONE, Report.objects.get(pk=report.pk).error
    return Report.objects.get(pk=report.pk)


@pytest.fixture
def without_pdf(monkeypatch):
    """Skip Chromium where a test looks at the HTML or JSON only."""
    monkeypatch.setattr(pdf, "render", lambda html: b"%PDF-1.4 not printed in this test\n")


def file_of(report: Report, fmt: str) -> bytes:
    return bytes(report.files.get(format=fmt).content)


def figure(html: str, name: str) -> str:
    return re.search(rf'<dd id="figure-{name}">([^<]*)</dd>', html).group(1)


def test_the_html_has_the_services_request_and_error_counts(incident, without_pdf):
    html = file_of(build(incident), c.FORMAT_HTML).decode()

    assert figure(html, "requests") == str(REQUESTS)
    assert figure(html, "errors") == str(ERRORS)
    assert figure(html, "error-rate") == f"{100 * ERRORS / REQUESTS:.2f}"
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert html.count('data-chart="latency"') == 3  # checkout, its caller and its database


def test_the_html_loads_nothing_from_anywhere(incident, without_pdf):
    html = file_of(build(incident), c.FORMAT_HTML).decode()

    bundle = re.search(r'<script data-asset="plotly/plotly.min.js">(.*?)</script>', html, re.S).group(1)
    assert bundle == PLOTLY_JS  # plotly.js verbatim (its own strings hold URLs it never loads offline)
    rest = html.replace(bundle, "")
    assert not re.search(r"https?://", rest)
    assert not re.search(r"<[a-z][^>]*\s(src|href|action|srcset)\s*=", rest, re.I)  # no tag loads anything
    assert not re.search(r"url\(|@import", rest, re.I)
    assert "default-src 'none'" in rest


def test_captured_text_is_escaped_in_the_html(incident, without_pdf):
    html = file_of(build(incident), c.FORMAT_HTML).decode()

    assert HOSTILE not in html
    assert "&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in html
    assert "\\u003Cimg src=x" in html  # in the JSON islands the charts read


def test_the_json_validates_against_the_schema_in_the_repository(incident, without_pdf):
    document = json.loads(file_of(build(incident), c.FORMAT_JSON))

    assert schema.errors(document) == []
    assert document["summary"]["subject_totals"]["requests"] == REQUESTS
    assert document["summary"]["subject_totals"]["errors"] == ERRORS
    assert [(s["name"], s["role"]) for s in document["affected_services"]] == [
        ("checkout", "subject"),
        ("postgres:5432", "callee"),
        (HOSTILE, "caller"),
    ]
    (failing,) = document["failing_requests"]
    assert [(s["service"], s["kind"], s["name"]) for s in failing["path"]] == [
        ("checkout", "server", "POST /pay"),
        ("checkout", "client", "SELECT orders"),
    ]
    assert document["slowest_requests"][0]["duration_ms"] == 900
    assert (document["tcp_health"]["measured"], document["resource_use"]["measured"]) == (False, False)
    assert document["tcp_health"]["note"].startswith(
        "No TCP health records in the window: is the tcp probe on?"
    )
    (host,) = document["hosts"]
    assert (host["name"], host["events_dropped_in_window"], host["probes"]["http"]["actual"]) == (
        "web-1",
        7,
        True,
    )
    assert [e["kind"] for e in document["timeline"]] == [c.EVENT_OPENED, c.EVENT_COMMENT]


def test_a_document_that_breaks_the_schema_is_named(incident):
    document = contents.build(incident)
    document["summary"]["subject_totals"]["requests"] = -1
    del document["tcp_health"]

    found = schema.errors(document)

    assert "(top): 'tcp_health' is a required property" in found
    assert any(
        line.startswith("summary/subject_totals/requests: -1 is less than the minimum") for line in found
    )


def test_the_pdf_renders_with_its_charts(incident, tmp_path):
    report = build(incident)
    (tmp_path / "report.pdf").write_bytes(file_of(report, c.FORMAT_PDF))

    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "report.pdf", "page"], cwd=tmp_path, check=True, timeout=60
    )

    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages, "pdftoppm wrote no page"
    first = pages[0].read_bytes()
    assert first.startswith(png.SIGNATURE)
    counts = png.colours(first)
    assert len(counts) > 50, "the first page is blank"
    everything = {}
    for page in pages:
        for colour, n in png.colours(page.read_bytes()).items():
            everything[colour] = everything.get(colour, 0) + n
    bars = sum(n for (r, g, b), n in everything.items() if abs(r - 9) + abs(g - 105) + abs(b - 218) < 40)
    assert bars > 50, "no throughput bars drawn in the PDF"
    assert report.error == ""
    assert report.files.get(format=c.FORMAT_PDF).size > 10_000


def test_a_missing_chromium_still_leaves_the_html_and_json(incident, settings):
    settings.REPORT_CHROMIUM = "/nonexistent/chromium"

    report = build(incident)

    assert sorted(report.files.values_list("format", flat=True)) == [c.FORMAT_HTML, c.FORMAT_JSON]
    assert report.error.startswith("PDF not made: FileNotFoundError: no Chromium at /nonexistent/chromium")


def test_a_report_that_cannot_be_built_says_why(incident, monkeypatch):
    def broken(incident, progress):
        raise RuntimeError("database went away")

    monkeypatch.setattr(contents, "build", broken)
    report = Report.objects.create(incident=incident)

    assert build_report(report.pk) == c.FAILED
    report.refresh_from_db()
    assert (report.status, report.error) == (c.FAILED, "RuntimeError: database went away")


def test_a_report_is_built_once_however_often_it_is_asked(incident, without_pdf):
    report = build(incident)

    assert build_report(report.pk) == "gone"
    assert report.files.count() == 3
    assert incident.events.filter(kind=c.EVENT_REPORT).count() == 1


def peak_memory_of_a_report(incident: Incident) -> tuple[int, Report]:
    tracemalloc.start()
    try:
        report = build(incident)
        return tracemalloc.get_traced_memory()[1], report
    finally:
        tracemalloc.stop()


def test_memory_stays_bounded_with_100k_samples(incident, without_pdf):
    """Samples are read by LIMIT queries only, sums and percentiles come from rollups: 100k
    samples cost no more memory than a handful."""
    few, _ = peak_memory_of_a_report(incident)
    service = Service.objects.get(name="checkout")
    now = timezone.now()
    rows = (
        RequestSample(
            ts=now - timedelta(seconds=i % 600),
            service=service,
            host="web-1",
            span_kind="server",
            status_code=500 if i % 5 == 0 else 200,
            error=i % 5 == 0,
            duration_ns=1_000_000 + i,
            trace_id=f"{i:032x}",
            span_id=f"{i:016x}",
            attributes={
                record.SERVICE: "checkout",
                record.TS: int(now.timestamp() * 1e9),
                "url.path": "/x" * 20,
            },
        )
        for i in range(100_000)
    )
    RequestSample.objects.bulk_create(rows, batch_size=10_000)
    assert RequestSample.objects.filter(service=service).count() > 100_000

    many, report = peak_memory_of_a_report(incident)

    html = report.files.get(format=c.FORMAT_HTML).size
    print(f"\nreport peak memory (tracemalloc): {few / 2**20:.1f} MiB with 4 samples, "
          f"{many / 2**20:.1f} MiB with 100k; HTML {html / 2**20:.1f} MiB")  # fmt: skip
    assert many < few + 4 * 2**20
    assert many < 4 * html  # the HTML (plotly.js inlined) is built about twice over, no more


def test_reports_older_than_the_retention_are_pruned(incident, settings, without_pdf):
    settings.REPORT_RETENTION_DAYS = 30
    old, recent = build(incident), build(incident)
    Report.objects.filter(pk=old.pk).update(requested_at=timezone.now() - timedelta(days=31))

    assert prune_reports() == 1

    assert list(Report.objects.values_list("pk", flat=True)) == [recent.pk]
