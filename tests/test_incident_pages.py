"""/incidents/, /incidents/<id>/ and /incidents/rules/: everyone logged in reads, staff
acknowledge, comment, ask for reports and edit rules; the banner on every page."""

import re

import pytest
from django.utils.html import escape

from obsweb.incidents import constants as c
from obsweb.incidents import evaluation
from obsweb.incidents.models import AlertRule, Incident, Report, ReportFile
from obsweb.incidents.tasks import build_report
from obsweb.telemetry.models import Rollup
from tests.incidents import ERROR_RULE, IN_MEMORY_LAYER, ensure_default_rules
from tests.seed import seed_edge, seed_service

HOSTILE = '<img src=x onerror="window.__xss=1">'
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.fixture(autouse=True)
def page_settings(settings, db):
    ensure_default_rules()
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.INCIDENT_WEBHOOK_URL = ""


@pytest.fixture
def queued(monkeypatch):
    """Reports asked for, instead of sending them to a Celery broker."""
    asked = []
    monkeypatch.setattr(build_report, "delay", asked.append)
    return asked


@pytest.fixture
def as_staff(client, personas):
    client.force_login(personas["staff"])
    return client


@pytest.fixture
def as_viewer(client, personas):
    client.force_login(personas["viewer"])
    return client


def open_incident(name: str = "checkout") -> Incident:
    seed_service(name, requests=50, errors=10)
    evaluation.evaluate()
    return Incident.objects.get(subject=name)


def resolved_incident(name: str) -> Incident:
    incident = open_incident(name)
    Incident.objects.filter(pk=incident.pk).update(state=c.RESOLVED, resolved_at=incident.opened_at)
    Rollup.objects.filter(service__name=name).delete()  # recovered: later evaluations leave it be
    return incident


@pytest.mark.parametrize(
    "path",
    [
        "/incidents/",
        "/incidents/1/",
        "/incidents/rules/",
        "/incidents/rules/new/",
        "/incidents/1/reports/rows/",
    ],
)
def test_it_sends_anonymous_visitors_to_login(client, db, path):
    response = client.get(path)
    assert (response.status_code, response["Location"]) == (302, f"/accounts/login/?next={path}")


def test_the_list_shows_open_incidents_first(as_viewer):
    resolved_incident("search")
    open_incident("checkout")
    resolved_incident("payments")

    html = as_viewer.get("/incidents/").content.decode()

    rows = re.findall(r'<tr class="incident-row incident-(\w+)">.*?</span> (\S+)</a>', html, re.S)
    assert rows == [("open", "checkout"), ("resolved", "payments"), ("resolved", "search")]
    assert f'title="{escape(AlertRule.objects.get(name=ERROR_RULE).condition())}"' in html


def test_the_list_escapes_captured_names(as_viewer):
    open_incident(HOSTILE)

    html = as_viewer.get("/incidents/").content.decode()

    assert HOSTILE not in html
    assert escape(HOSTILE) in html


def test_the_list_costs_a_fixed_number_of_queries(as_viewer, django_assert_max_num_queries):
    for name in ("a", "b", "c", "d"):
        open_incident(name)
    with django_assert_max_num_queries(12):
        assert as_viewer.get("/incidents/").status_code == 200


def test_a_viewer_reads_an_incident_without_controls(as_viewer):
    incident = open_incident()

    response = as_viewer.get(f"/incidents/{incident.pk}/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Opened for service checkout" in html
    assert ERROR_RULE in html
    assert 'id="affected"' in html and "/services/checkout/?since=" in html
    for control in ('id="acknowledge"', 'id="generate-report"', "Add comment"):
        assert control not in html


def test_a_caller_that_served_nothing_is_listed_as_such(as_viewer):
    incident = open_incident()
    seed_edge("curl", "checkout", requests=50, errors=10)

    response = as_viewer.get(f"/incidents/{incident.pk}/")

    assert response.status_code == 200
    assert re.search(
        r">curl</a></td><td>caller</td><td [^>]*>served nothing in the window</td>", response.content.decode()
    )


def test_staff_see_the_controls(as_staff):
    incident = open_incident()

    html = as_staff.get(f"/incidents/{incident.pk}/").content.decode()

    for control in ('id="acknowledge"', 'id="generate-report"', "Add comment"):
        assert control in html


def test_the_incident_page_costs_a_fixed_number_of_queries(as_staff, django_assert_max_num_queries, queued):
    incident = open_incident()
    for _ in range(3):
        Report.objects.create(incident=incident, status=c.DONE)
    with django_assert_max_num_queries(25):
        assert as_staff.get(f"/incidents/{incident.pk}/").status_code == 200


def test_an_unknown_incident_is_404(as_viewer):
    assert as_viewer.get("/incidents/999/").status_code == 404


@pytest.mark.parametrize(
    ("action", "data"), [("acknowledge", {}), ("comments", {"text": "hi"}), ("reports", {})]
)
def test_viewers_may_not_change_an_incident(as_viewer, queued, action, data):
    incident = open_incident()

    assert as_viewer.post(f"/incidents/{incident.pk}/{action}/", data).status_code == 403

    assert incident.events.count() == 1 and not queued


def test_staff_acknowledge_and_comment(as_staff):
    incident = open_incident()

    ack = as_staff.post(f"/incidents/{incident.pk}/acknowledge/")
    note = as_staff.post(f"/incidents/{incident.pk}/comments/", {"text": f"deploy rolled back {HOSTILE}"})

    assert (ack.status_code, ack["Location"]) == (302, f"/incidents/{incident.pk}/")
    assert note["Location"] == f"/incidents/{incident.pk}/#timeline"
    html = as_staff.get(f"/incidents/{incident.pk}/").content.decode()
    assert "Acknowledged by staff." in html
    assert f"deploy rolled back {escape(HOSTILE)}" in html
    assert 'id="acknowledge"' not in html


def test_an_empty_comment_is_refused(as_staff):
    incident = open_incident()

    response = as_staff.post(f"/incidents/{incident.pk}/comments/", {"text": "  "}, **FETCH)

    assert response.status_code == 400
    assert "needs some text" in response.json()["detail"]


def test_staff_ask_for_a_report_and_a_double_click_builds_one(
    as_staff, queued, django_capture_on_commit_callbacks
):
    incident = open_incident()

    with django_capture_on_commit_callbacks(execute=True):
        first = as_staff.post(f"/incidents/{incident.pk}/reports/", **FETCH)
        second = as_staff.post(f"/incidents/{incident.pk}/reports/", **FETCH)

    report = Report.objects.get()
    assert (first.status_code, first.json()) == (
        202,
        {"detail": f"Report {report.pk} queued.", "report": report.pk, "status": "pending"},
    )
    assert second.json()["detail"] == f"Report {report.pk} is already being made."
    assert queued == [report.pk]


def test_report_rows_show_progress_then_downloads(as_viewer):
    incident = open_incident()
    running = Report.objects.create(incident=incident, status=c.RUNNING, progress=40, step="drawing charts")
    done = Report.objects.create(incident=incident, status=c.DONE, progress=100)
    ReportFile.objects.create(report=done, format=c.FORMAT_HTML, content=b"<html>", size=6)

    response = as_viewer.get(f"/incidents/{incident.pk}/reports/rows/")

    html = response.content.decode()
    assert response["X-Reports-Unfinished"] == "1"
    assert f'<progress max="100" value="40" aria-label="Report {running.pk} progress">' in html
    assert "drawing charts" in html
    assert (
        f'href="/api/v1/reports/{done.pk}/html" class="download" data-format="html" download>HTML</a>' in html
    )


def test_the_banner_shows_open_incidents_on_every_page(as_viewer):
    open_incident(HOSTILE)
    open_incident("checkout")

    for path in ("/", "/map/", "/hosts/", "/incidents/", "/incidents/rules/"):
        html = as_viewer.get(path).content.decode()
        banner = re.search(r'<div class="incident-banner".*?</div>', html, re.S).group(0)
        assert "hidden" not in banner.split(">")[0], path
        assert '<strong id="incident-banner-count">2</strong>' in banner
        assert f": checkout, {escape(HOSTILE)}" in banner
        assert HOSTILE not in html


def test_the_banner_is_hidden_without_open_incidents(as_viewer):
    resolved_incident("checkout")

    html = as_viewer.get("/").content.decode()

    assert re.search(r'<div class="incident-banner" id="incident-banner" role="status" hidden', html)


def test_rules_are_listed_for_viewers_with_their_last_evaluation(as_viewer):
    AlertRule.objects.create(name="retransmits", metric=c.TCP_RETRANSMIT_RATE, threshold=1, min_requests=10)
    open_incident()

    html = as_viewer.get("/incidents/rules/").content.decode()

    assert "error rate (%) &gt; 5 with &gt; 10 requests in 5 min" in html
    assert "firing for checkout" in html
    assert "TCP retransmits per 100 connections &gt; 1 with &gt; 10 connections in 5 min" in html
    assert "no TCP health records in the window: is the tcp probe on?" in html
    assert escape(c.TCP_RETRANSMITS_HELP) in html  # how it is measured, since segments are not counted
    assert "/incidents/rules/new/" not in html


@pytest.mark.parametrize("path", ["/incidents/rules/new/", "/incidents/rules/1/"])
def test_viewers_may_not_edit_rules(as_viewer, path):
    assert as_viewer.get(path).status_code == 403
    assert as_viewer.post(path, {"name": "x"}).status_code == 403


def test_staff_create_a_rule(as_staff):
    form = {
        "name": "checkout 5xx share",
        "metric": c.STATUS_SHARE,
        "service": seed_service("checkout").pk,
        "window_minutes": 10,
        "threshold": 20,
        "min_requests": 50,
        "status_codes": "5xx",
        "baseline": c.BASELINE_DAY,
        "enabled": "on",
    }

    response = as_staff.post("/incidents/rules/new/", form)

    assert (response.status_code, response["Location"]) == (302, "/incidents/rules/")
    rule = AlertRule.objects.get(name="checkout 5xx share")
    assert rule.condition() == "5xx share (%) > 20 with > 50 requests in 10 min"
    assert rule.scope() == "service checkout"


def test_staff_create_a_tcp_retransmit_rule_for_a_service(as_staff):
    assert escape(c.TCP_RETRANSMITS_HELP) in as_staff.get("/incidents/rules/new/").content.decode()
    form = {"name": "checkout retransmits", "metric": c.TCP_RETRANSMIT_RATE,
            "service": seed_service("checkout").pk, "window_minutes": 5, "threshold": 150,
            "min_requests": 20, "status_codes": "", "baseline": c.BASELINE_DAY, "enabled": "on"}  # fmt: skip

    response = as_staff.post("/incidents/rules/new/", form)

    assert response.status_code == 302
    rule = AlertRule.objects.get(name="checkout retransmits")
    assert rule.condition() == "TCP retransmits per 100 connections > 150 with > 20 connections in 5 min"
    assert rule.scope() == "service checkout"


def test_a_rule_that_cannot_work_is_shown_again_with_why(as_staff):
    response = as_staff.post(
        "/incidents/rules/new/",
        {
            "name": "bad",
            "metric": c.STATUS_SHARE,
            "window_minutes": 5,
            "threshold": 10,
            "min_requests": 0,
            "status_codes": "",
            "baseline": c.BASELINE_DAY,
        },  # fmt: skip
    )

    assert response.status_code == 400
    assert "give a status class such as 5xx or 4xx" in response.content.decode()
    assert not AlertRule.objects.filter(name="bad").exists()


def test_staff_edit_and_delete_a_rule(as_staff):
    rule = AlertRule.objects.get(name=ERROR_RULE)
    form = {
        "name": ERROR_RULE,
        "metric": c.ERROR_RATE,
        "window_minutes": 1,
        "threshold": 2,
        "min_requests": 100,
        "status_codes": "",
        "baseline": c.BASELINE_DAY,
    }

    assert as_staff.post(f"/incidents/rules/{rule.pk}/", form).status_code == 302
    rule.refresh_from_db()
    assert (rule.window_minutes, rule.threshold, rule.enabled) == (1, 2, False)

    assert as_staff.post(f"/incidents/rules/{rule.pk}/delete/").status_code == 302
    assert not AlertRule.objects.filter(pk=rule.pk).exists()


def test_the_admin_lists_rules_and_shows_incidents_read_only(admin_client):
    incident = open_incident()

    rules = admin_client.get("/admin/incidents/alertrule/")
    page = admin_client.get(f"/admin/incidents/incident/{incident.pk}/change/")

    assert rules.status_code == 200 and ERROR_RULE in rules.content.decode()
    assert page.status_code == 200 and "Opened for service checkout" in page.content.decode()
    assert admin_client.get("/admin/incidents/incident/add/").status_code == 403
