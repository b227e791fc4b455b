"""The report's TCP health and resource use sections hold what the tcp, cpu and disk probes sent
for the incident window (seeded through the real ingest path), say plainly which services have no
records and whether their probe was on, and draw their charts in the HTML and the PDF."""

import json
import re
import subprocess

import pytest

from obsweb.fleet.models import Host
from obsweb.incidents import constants as c
from obsweb.incidents import evaluation
from obsweb.incidents.models import Incident, Report
from obsweb.incidents.report import contents, pdf, schema
from obsweb.incidents.tasks import build_report
from obsweb.telemetry.aggregate import apply_records
from tests import png
from tests.factories import flow, health, host_resource, now_ns, resource
from tests.incidents import IN_MEMORY_LAYER, ensure_default_rules
from tests.seed import seed_edge, seed_service

pytestmark = pytest.mark.django_db
MIB = 2**20
PURPLE = (130, 80, 223)  # the RSS line (static/obsweb/report.js)
ON = {"desired": True, "actual": True, "error": None}
OFF = {"desired": False, "actual": False, "error": None}


@pytest.fixture(autouse=True)
def report_settings(settings, db):
    ensure_default_rules()
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER


@pytest.fixture
def without_pdf(monkeypatch):
    monkeypatch.setattr(pdf, "render", lambda html: b"%PDF-1.4 not printed in this test\n")


def failing_shop_api() -> Incident:
    """shop-api on h1 failing (an error-rate incident), called by nginx, calling postgres and
    redis (on web-1)."""
    seed_service("shop-api", host="h1", requests=50, errors=10)
    seed_service("redis", host="web-1", protocol="redis", requests=20)
    seed_edge("nginx", "shop-api", requests=40)
    seed_edge("shop-api", "postgres", protocol="postgresql", requests=30)
    seed_edge("shop-api", "redis", protocol="redis", requests=20)
    evaluation.evaluate()
    return Incident.objects.get(subject="shop-api")


def probes(host: str, **state) -> None:
    Host.objects.filter(name=host).update(probes=state)


@pytest.fixture
def measured() -> Incident:
    """The probes' records of the incident window, as the workers on h1 (and web-1) send them."""
    incident = failing_shop_api()
    ts = now_ns(20)
    nginx_to_api = {"service.name": "nginx", "peer.service": "shop-api", "ts": ts}
    api_to_db = {"service.name": "shop-api", "peer.service": "postgres", "ts": ts}
    quiet = {"flow.retransmits": 0, "flow.resets_sent": 0, "flow.resets_received": 0, "flow.rtt_us": None}
    apply_records(
        [
            *[flow(**nginx_to_api) for _ in range(4)],
            health(**nginx_to_api | {"flow.retransmits": 3, "flow.resets_received": 1, "flow.rtt_us": 1500}),
            health(**nginx_to_api | {"flow.retransmits": 3, "flow.resets_received": 1, "flow.rtt_us": 2500}),
            health(**nginx_to_api | quiet | {"flow.failure": "refused"}),
            *[flow(**api_to_db) for _ in range(2)],
            health(**api_to_db | quiet | {"flow.retransmits": 5, "flow.resets_sent": 2, "flow.rtt_us": 500}),
            resource(ts=ts),
            resource(ts=ts + 10**9, **{"process.memory.rss_bytes": 80 * MIB}),
            resource(ts=ts, **{"service.name": "postgres", "process.cpu.time_ns": 10**9}),
            host_resource(ts=ts),
        ]
    )
    probes("h1", tcp=ON, cpu=ON, disk=ON)
    probes("web-1", tcp=OFF, cpu=ON, disk=OFF)
    return incident


def build(incident: Incident) -> Report:
    report = Report.objects.create(incident=incident)
    assert build_report(report.pk) == c.DONE, Report.objects.get(pk=report.pk).error
    return Report.objects.get(pk=report.pk)


def file_of(report: Report, fmt: str) -> bytes:
    return bytes(report.files.get(format=fmt).content)


def row(html: str, table: str, first_cell: str) -> list[str]:
    """The cells of the row of table #`table` whose first cell is `first_cell`, as text."""
    body = re.search(rf'<table class="data [^"]*" id="{table}">(.*?)</table>', html, re.S).group(1)
    for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [
            re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)
        ]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in #{table}")


def test_tcp_health_holds_each_services_edges_both_ways_and_each_call(measured):
    tcp = contents.build(measured)["tcp_health"]

    assert tcp["measured"] is True
    services = {s["name"]: s for s in tcp["services"]}
    assert list(services) == ["shop-api", "nginx", "postgres"]  # roles order: subject, then peers
    api = services["shop-api"]  # called by nginx, calling postgres: both edges
    assert (api["role"], api["connections"], api["failures"], api["failures_refused"]) == ("subject", 6, 1, 1)
    assert (api["retransmits"], api["resets_sent"], api["resets_received"]) == (11, 2, 2)
    assert api["rtt_ms"] == pytest.approx((1500 + 2500 + 500) / 3 / 1000)
    nginx = services["nginx"]
    assert (nginx["role"], nginx["connections"], nginx["retransmits"], nginx["rtt_ms"]) == (
        "caller",
        4,
        6,
        2.0,
    )
    calls = {(e["source"], e["target"]): e for e in tcp["calls"]}
    assert set(calls) == {("nginx", "shop-api"), ("shop-api", "postgres")}
    assert (calls["shop-api", "postgres"]["retransmits"], calls["shop-api", "postgres"]["rtt_ms"]) == (5, 0.5)
    assert tcp["without_records"] == ["redis"]
    assert tcp["without_records_note"] == (
        "No TCP health records for redis in the window: is the tcp probe on? "
        "Not reported running on web-1 (see probe state)."
    )


def test_tcp_charts_add_up_to_the_totals_per_minute_of_the_window(measured):
    document = contents.build(measured)
    tcp = document["tcp_health"]

    assert [chart["service"] for chart in tcp["charts"]] == ["shop-api", "nginx", "postgres"]
    chart = tcp["charts"][0]
    assert chart["minutes"] == document["charts"][0]["minutes"]  # the same window as the other charts
    assert (sum(chart["connections"]), sum(chart["retransmits"]), sum(chart["failures"])) == (6, 11, 1)
    assert (sum(chart["resets_sent"]), sum(chart["resets_received"])) == (2, 2)
    assert [rtt for rtt in chart["rtt_ms"] if rtt is not None] == [pytest.approx(1.5)]


def test_resource_use_holds_each_services_and_hosts_use(measured):
    resources = contents.build(measured)["resource_use"]

    assert resources["measured"] is True
    services = {s["name"]: s for s in resources["services"]}
    assert list(services) == ["shop-api", "postgres"]
    api = services["shop-api"]
    assert (api["role"], api["hosts"], api["cpu_seconds"]) == ("subject", ["h1"], 6.0)
    assert (api["rss_bytes"], api["net_bytes_sent"], api["net_bytes_received"]) == (100 * MIB, 2000, 8000)
    assert (api["disk_read_bytes"], api["disk_write_bytes"], api["disk_ops"]) == (16384, 8192, 6)
    assert (api["runq_wait_avg_ms"], api["runq_wait_max_ms"]) == (2.0, 9.0)
    assert api["cpu_percent"] > 0
    assert services["postgres"]["cpu_seconds"] == 1.0
    (host,) = resources["hosts"]
    assert (host["name"], host["cpu_count"], host["memory_total_bytes"]) == ("h1", 2, 8 * 2**30)
    assert host["memory_available_bytes"] == 5 * 2**30
    assert resources["without_records"] == ["nginx", "redis"]
    assert resources["without_records_note"] == (
        "No resource records for nginx, redis in the window: are the cpu and disk probes on? "
        "Not reported running on web-1 (see probe state)."
    )
    chart = resources["charts"][0]
    assert chart["service"] == "shop-api"
    assert sum(v for v in chart["cpu_percent"] if v) > 0
    assert [v for v in chart["rss_bytes"] if v is not None] == [80 * MIB]  # the minute's latest reading
    assert sum(v for v in chart["net_bytes_sent"] if v) == 2000
    assert sum(v for v in chart["disk_read_bytes"] if v) == 16384
    assert [v for v in chart["runq_wait_avg_ms"] if v is not None] == [2.0]


def test_the_json_with_measurements_validates_against_the_schema(measured, without_pdf):
    document = json.loads(file_of(build(measured), c.FORMAT_JSON))

    assert schema.errors(document) == []
    assert document["schema_version"] == 2
    assert document["tcp_health"]["services"][0]["retransmits"] == 11
    assert document["resource_use"]["services"][0]["net_bytes_received"] == 8000


def test_the_html_shows_the_numbers_and_a_chart_per_metric(measured, without_pdf):
    html = file_of(build(measured), c.FORMAT_HTML).decode()

    # Service, role, connections, failed (refused / timed out), retransmits, resets, RTT.
    assert row(html, "tcp-services", "shop-api") == [
        "shop-api",
        "subject",
        "6",
        "1 (1 / 0)",
        "11",
        "2 / 2",
        "1.5",
    ]
    assert row(html, "tcp-calls", "shop-api") == [
        "shop-api",
        "postgres",
        "2",
        "0 (0 / 0)",
        "5",
        "2 / 0",
        "0.50",
    ]
    resources = row(html, "resource-services", "shop-api")
    assert resources[:3] + resources[4:] == ["shop-api", "subject", "h1", "100 MiB", "1.95 KiB / 7.81 KiB",
                                             "16 KiB / 8 KiB", "6", "2.0 / 9.0"]  # fmt: skip
    assert re.fullmatch(r"\d+\.\d %", resources[3])  # CPU in % of a core over the window
    assert row(html, "resource-hosts", "h1")[2:4] == ["2", "5 GiB / 8 GiB"]
    assert "No TCP health records for redis in the window: is the tcp probe on?" in html
    for kind in ("tcp-connections", "tcp-failures", "tcp-retransmits", "tcp-resets", "tcp-rtt"):
        assert html.count(f'data-chart="{kind}"') == 3, kind  # shop-api, nginx, postgres
    for kind in ("cpu", "memory", "network", "disk", "runq"):
        assert html.count(f'data-set="resources" data-chart="{kind}"') == 2, kind  # shop-api, postgres
    island = json.loads(re.search(r'id="report-charts"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert [chart["service"] for chart in island["tcp"]] == ["shop-api", "nginx", "postgres"]
    assert [chart["service"] for chart in island["resources"]] == ["shop-api", "postgres"]


def test_with_the_probes_off_the_sections_say_so_instead_of_empty_tables(without_pdf):
    incident = failing_shop_api()
    probes("h1", tcp=OFF, cpu=OFF, disk=OFF)

    report = build(incident)

    document = json.loads(file_of(report, c.FORMAT_JSON))
    tcp, resources = document["tcp_health"], document["resource_use"]
    assert (tcp["measured"], tcp["services"], tcp["calls"], tcp["charts"]) == (False, [], [], [])
    assert tcp["note"] == (
        "No TCP health records in the window: is the tcp probe on? Not reported running on h1, web-1 "
        "(see probe state)."
    )
    assert tcp["without_records"] == ["shop-api", "nginx", "postgres", "redis"]
    assert (resources["measured"], resources["services"], resources["hosts"]) == (False, [], [])
    assert resources["note"].startswith("No resource records in the window: are the cpu and disk probes on?")
    html = file_of(report, c.FORMAT_HTML).decode()
    assert '<p class="not-measured">No TCP health records in the window: is the tcp probe on?' in html
    assert (
        '<p class="not-measured">No resource records in the window: are the cpu and disk probes on?' in html
    )
    assert 'id="tcp-services"' not in html and 'id="resource-services"' not in html
    assert 'data-set="tcp"' not in html and 'data-set="resources"' not in html


def test_records_outside_the_report_window_are_left_out(without_pdf):
    incident = failing_shop_api()
    long_ago = now_ns(3 * 3600)
    apply_records(
        [
            flow(**{"service.name": "nginx", "peer.service": "shop-api", "ts": long_ago}),
            resource(ts=long_ago),
        ]
    )

    document = contents.build(incident)

    assert (document["tcp_health"]["measured"], document["resource_use"]["measured"]) == (False, False)


def test_the_pdf_draws_the_resource_and_tcp_charts(measured, tmp_path):
    report = build(measured)
    assert report.error == ""  # report.js drew every chart: the printer waits for that
    (tmp_path / "report.pdf").write_bytes(file_of(report, c.FORMAT_PDF))

    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "report.pdf", "page"], cwd=tmp_path, check=True, timeout=60
    )

    purple = 0
    for page in sorted(tmp_path.glob("page-*.png")):
        for (r, g, b), n in png.colours(page.read_bytes()).items():
            purple += n if abs(r - PURPLE[0]) + abs(g - PURPLE[1]) + abs(b - PURPLE[2]) < 40 else 0
    assert purple > 20, "no RSS line (or resets received) drawn in the PDF"


def test_a_service_calling_itself_counts_its_edge_once(without_pdf):
    incident = failing_shop_api()
    loop = {"service.name": "shop-api", "peer.service": "shop-api", "ts": now_ns(20)}
    apply_records([flow(**loop), flow(**loop), health(**loop | {"flow.retransmits": 4})])

    (api,) = [s for s in contents.build(incident)["tcp_health"]["services"] if s["name"] == "shop-api"]

    assert (api["connections"], api["retransmits"]) == (2, 4)
