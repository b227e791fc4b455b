"""/api/v1/incidents, /api/v1/reports and /api/v1/alert-rules: viewers read, staff change,
401 without credentials, 403 for a viewer's write, 404 for an unknown id, 400 for a bad body."""

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator

from obsweb.api import incidents as api
from obsweb.incidents import constants as c
from obsweb.incidents import evaluation
from obsweb.incidents.models import AlertRule, Incident, Report
from obsweb.incidents.report import pdf
from obsweb.incidents.tasks import build_report
from tests.factories import ALLOWED, api_client
from tests.incidents import ERROR_RULE, IN_MEMORY_LAYER, ensure_default_rules
from tests.seed import seed_service


@pytest.fixture(autouse=True)
def api_settings(settings, monkeypatch, db):
    ensure_default_rules()
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.INCIDENT_WEBHOOK_URL = ""
    monkeypatch.setattr(build_report, "delay", lambda report_id: None)  # no broker in these tests
    monkeypatch.setattr(pdf, "render", lambda html: b"%PDF-1.4 not printed in this test\n")


@pytest.fixture
def incident(db) -> Incident:
    seed_service("checkout", requests=50, errors=10)
    evaluation.evaluate()
    return Incident.objects.get()


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_it_lists_incidents_as_the_design_says(personas, incident, persona, how):
    response = api_client(personas, persona, how).get("/api/v1/incidents")

    assert response.status_code == 200
    (row,) = response.json()["incidents"]
    assert {"id", "service", "rule", "state", "opened_at", "resolved_at"} <= set(row)
    assert set(row) == set(api.IncidentSummary().fields)
    assert (row["id"], row["service"], row["host"], row["rule"], row["state"], row["resolved_at"]) == (
        incident.pk,
        "checkout",
        None,
        ERROR_RULE,
        "open",
        None,
    )
    assert row["url"] == f"/incidents/{incident.pk}/"


def test_it_lists_open_incidents_first_and_filters(personas, incident):
    seed_service("payments", requests=50, errors=10)
    evaluation.evaluate()
    Incident.objects.filter(pk=incident.pk).update(state=c.RESOLVED, resolved_at=incident.opened_at)
    client = api_client(personas, "viewer")

    everything = client.get("/api/v1/incidents").json()["incidents"]
    resolved = client.get("/api/v1/incidents", {"state": "resolved"}).json()["incidents"]
    payments = client.get("/api/v1/incidents", {"service": "payments"}).json()["incidents"]

    assert [(i["service"], i["state"]) for i in everything] == [
        ("payments", "open"),
        ("checkout", "resolved"),
    ]
    assert [i["service"] for i in resolved] == ["checkout"]
    assert [i["service"] for i in payments] == ["payments"]


def test_a_bad_filter_is_400(personas, incident):
    response = api_client(personas, "viewer").get("/api/v1/incidents", {"state": "sleeping"})

    assert response.status_code == 400
    assert response.json()["detail"].startswith("state:")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/incidents",
        "/api/v1/incidents/1",
        "/api/v1/reports/1",
        "/api/v1/reports/1/html",
        "/api/v1/alert-rules",
    ],
)
def test_outsiders_get_401(personas, db, path):
    assert api_client(personas, "outsider").get(path).status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/incidents/{id}/acknowledge",
        "/api/v1/incidents/{id}/comments",
        "/api/v1/incidents/{id}/reports",
    ],
)
def test_changes_need_staff(personas, incident, path):
    path = path.format(id=incident.pk)

    assert api_client(personas, "outsider").post(path, {"text": "x"}, format="json").status_code == 401
    viewer = api_client(personas, "viewer", "token").post(path, {"text": "x"}, format="json")
    assert (viewer.status_code, viewer.json()["detail"]) == (403, api.StaffMayChange.message)
    assert incident.events.count() == 1 and not Report.objects.exists()


@pytest.mark.parametrize("action", ["acknowledge", "comments", "reports"])
def test_an_unknown_incident_is_404(personas, db, action):
    response = api_client(personas, "staff").post(
        f"/api/v1/incidents/999/{action}", {"text": "x"}, format="json"
    )

    assert (response.status_code, response.json()["detail"]) == (404, "no incident 999")


def test_an_incident_in_full(personas, incident):
    response = api_client(personas, "viewer").get(f"/api/v1/incidents/{incident.pk}")

    body = response.json()
    assert set(body) == set(api.IncidentDetail().fields)
    assert [a["rule"] for a in body["alerts"]] == [ERROR_RULE]
    assert [e["kind"] for e in body["timeline"]] == ["opened"]
    assert (body["webhooks"], body["reports"]) == ([], [])


def test_staff_acknowledge_and_comment(personas, incident):
    staff = api_client(personas, "staff", "token")

    acknowledged = staff.post(f"/api/v1/incidents/{incident.pk}/acknowledge")
    comment = staff.post(f"/api/v1/incidents/{incident.pk}/comments", {"text": "on it"}, format="json")
    empty = staff.post(f"/api/v1/incidents/{incident.pk}/comments", {"text": " "}, format="json")

    assert (acknowledged.status_code, acknowledged.json()["acknowledged_by"]) == (200, "staff")
    assert (comment.status_code, comment.json()["text"], comment.json()["actor"]) == (201, "on it", "staff")
    assert empty.status_code == 400


def test_staff_ask_for_a_report_and_fetch_it_when_done(personas, incident):
    staff = api_client(personas, "staff", "token")

    created = staff.post(f"/api/v1/incidents/{incident.pk}/reports")
    report_id = created.json()["id"]
    pending = api_client(personas, "viewer").get(f"/api/v1/reports/{report_id}").json()
    build_report(report_id)
    done = api_client(personas, "viewer", "token").get(f"/api/v1/reports/{report_id}").json()

    assert (created.status_code, created.json()) == (202, {"id": report_id, "status": "pending"})
    assert (pending["status"], pending["progress"], pending["downloads"]) == ("pending", 0, {})
    assert (done["status"], done["progress"], done["incident"]) == ("done", 100, incident.pk)
    assert done["downloads"] == {fmt: f"/api/v1/reports/{report_id}/{fmt}" for fmt in ("html", "json", "pdf")}
    assert set(done) == set(api.ReportStatus().fields)


@pytest.mark.parametrize(("fmt", "content_type", "start"), [
    ("html", "text/html; charset=utf-8", b"<!doctype html>"),
    ("pdf", "application/pdf", b"%PDF"),
    ("json", "application/json", b"{"),
])  # fmt: skip
def test_each_format_downloads_as_an_attachment(personas, incident, fmt, content_type, start):
    report = Report.objects.create(incident=incident)
    build_report(report.pk)

    response = api_client(personas, "viewer", "token").get(
        f"/api/v1/reports/{report.pk}/{fmt}", HTTP_ACCEPT=content_type
    )

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"] == (
        f'attachment; filename="obsweb-incident-{incident.pk}-report-{report.pk}.{fmt}"'
    )
    assert response.content.startswith(start)


def test_unknown_reports_and_formats_are_404(personas, incident):
    report = Report.objects.create(incident=incident)
    viewer = api_client(personas, "viewer")

    assert viewer.get("/api/v1/reports/999").status_code == 404
    assert viewer.get(f"/api/v1/reports/{report.pk}/docx").json()["detail"].startswith("no format 'docx'")
    missing = viewer.get(f"/api/v1/reports/{report.pk}/pdf")
    assert (missing.status_code, missing.json()["detail"]) == (
        404,
        f"report {report.pk} has no pdf: the report is pending",
    )


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_everyone_logged_in_reads_the_rules(personas, db, persona, how):
    rules = api_client(personas, persona, how).get("/api/v1/alert-rules").json()["rules"]

    by_name = {rule["name"]: rule for rule in rules}
    assert by_name[ERROR_RULE]["condition"] == "error rate (%) > 5 with > 10 requests in 5 min"
    assert by_name[ERROR_RULE]["service"] is None


def test_staff_create_change_and_delete_rules(personas, db):
    seed_service("checkout")
    staff = api_client(personas, "staff", "token")

    created = staff.post(
        "/api/v1/alert-rules",
        {"name": "checkout p90", "metric": c.P90_LATENCY, "service": "checkout", "threshold": 250},
        format="json",
    )
    rule_id = created.json()["id"]
    changed = staff.patch(
        f"/api/v1/alert-rules/{rule_id}", {"threshold": 300, "window_minutes": 2}, format="json"
    )
    deleted = staff.delete(f"/api/v1/alert-rules/{rule_id}")

    assert (created.status_code, created.json()["condition"]) == (201, "p90 latency (ms) > 250 in 5 min")
    assert (changed.status_code, changed.json()["condition"]) == (200, "p90 latency (ms) > 300 in 2 min")
    assert deleted.status_code == 204
    assert not AlertRule.objects.filter(pk=rule_id).exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x", "metric": "cpu", "threshold": 1}, 'metric: "cpu" is not a valid choice.'),
        ({"name": "x", "metric": c.HOST_DOWN, "threshold": 0, "service": "checkout"}, "is a host metric"),
        (
            {"name": "x", "metric": c.ERROR_RATE, "threshold": 1, "service": "nope"},
            "service: Object with name=nope",
        ),
        (
            {"name": ERROR_RULE, "metric": c.ERROR_RATE, "threshold": 1},
            "name: alert rule with this name already exists.",
        ),
    ],
)
def test_a_bad_rule_is_400_with_why(personas, db, body, message):
    seed_service("checkout")

    response = api_client(personas, "staff").post("/api/v1/alert-rules", body, format="json")

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_viewers_may_not_change_rules(personas, db):
    rule = AlertRule.objects.get(name=ERROR_RULE)
    viewer = api_client(personas, "viewer", "token")

    assert viewer.post("/api/v1/alert-rules", {"name": "x"}, format="json").status_code == 403
    assert viewer.patch(f"/api/v1/alert-rules/{rule.pk}", {"threshold": 1}, format="json").status_code == 403
    assert viewer.delete(f"/api/v1/alert-rules/{rule.pk}").status_code == 403
    assert api_client(personas, "staff").delete("/api/v1/alert-rules/999").status_code == 404


def test_the_incident_routes_are_in_the_schema_without_warnings():
    GENERATOR_STATS.reset()
    with GENERATOR_STATS.silence():
        schema = SchemaGenerator(urlconf="obsweb.api.urls").get_schema(request=None, public=True)

    assert (dict(GENERATOR_STATS._warn_cache), dict(GENERATOR_STATS._error_cache)) == ({}, {})
    assert {
        "/api/v1/incidents",
        "/api/v1/incidents/{incident_id}",
        "/api/v1/incidents/{incident_id}/acknowledge",
        "/api/v1/incidents/{incident_id}/comments",
        "/api/v1/incidents/{incident_id}/reports",
        "/api/v1/reports/{report_id}",
        "/api/v1/reports/{report_id}/{fmt}",
        "/api/v1/alert-rules",
        "/api/v1/alert-rules/{rule_id}",
    } <= set(schema["paths"])
