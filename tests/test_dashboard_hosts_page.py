"""/hosts/: every host with desired and actual probe state; toggles, budgets and bulk actions for
staff (plain forms, and JSON for hosts.js); the audit log and its CSV; the redaction policy."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.html import escape

from obsweb.fleet import control
from obsweb.fleet.models import AuditEntry, Host, RedactionPolicy
from obsweb.telemetry.aggregate import apply_records
from probes import schema
from tests import helpers
from tests.factories import agent, now_ns

HOSTILE = '<img src=x onerror="window.__xss=1">'
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.fixture(autouse=True)
def page_settings(settings, control_redis):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


@pytest.fixture
def as_staff(client, personas):
    client.force_login(personas["staff"])
    return client


@pytest.fixture
def as_viewer(client, personas):
    client.force_login(personas["viewer"])
    return client


def reported(name: str, seconds_ago: float = 1, **probes) -> Host:
    """A host whose agent reported `probes` ({name: {"actual": ..., ...}}; http running when none
    are given) `seconds_ago`."""
    probes = probes or {"http": {}}
    states = {p: {"desired": True, "actual": True, "error": None} | state for p, state in probes.items()}
    apply_records([agent(host=name, ts=now_ns(seconds_ago), **{"agent.probes": states})])
    return Host.objects.get(name=name)


def rows_of(html: str) -> str:
    return re.search(r'<tbody id="host-rows">.*?</tbody>', html, re.S).group(0)


def probe_cell(html: str, probe: str) -> str:
    """The first host's cell of `probe`."""
    cells = re.findall(r'<li class="probe probe-\w+">.*?</li>', html, re.S)
    return next(cell for cell in cells if f'<span class="probe-name">{probe}</span>' in cell)


def test_it_sends_anonymous_visitors_to_login(client, db):
    response = client.get("/hosts/")
    assert (response.status_code, response["Location"]) == (302, "/accounts/login/?next=/hosts/")


def test_it_explains_how_to_start_when_no_host_has_reported(as_viewer):
    html = as_viewer.get("/hosts/").content.decode()
    assert "No host has reported yet: start the probe worker (<code>make run</code>" in rows_of(html)


def test_a_viewer_sees_states_but_no_working_controls(as_viewer):
    reported("web-1", tls={"actual": False, "error": "no libssl found"})

    html = as_viewer.get("/hosts/").content.decode()

    assert '<th scope="row" class="name">web-1</th>' in html
    assert "<form" not in html.replace('<form class="logout"', "")
    assert html.count('class="switch"') == len(schema.PROBES)
    assert html.count(" disabled>") == len(schema.PROBES)
    assert "Disable TLS on all hosts" not in html
    assert 'name="cpu_budget_percent"' not in html
    tls = probe_cell(html, "tls")
    assert '<span class="state">error</span>' in tls and "no libssl found" in tls


def test_staff_see_a_toggle_per_probe_and_the_bulk_actions(as_staff):
    reported("web-1")

    html = as_staff.get("/hosts/").content.decode()

    assert html.count('action="/hosts/probes/"') == len(schema.PROBES)
    assert html.count("csrfmiddlewaretoken") >= len(schema.PROBES) + 4  # toggles, budget, bulk, logout
    assert "Disable TLS on all hosts" in html and "Enable TLS on all hosts" in html
    assert 'name="cpu_budget_percent"' in html
    assert " disabled>" not in rows_of(html)


def test_it_shows_status_cpu_budget_and_probe_cost(as_viewer):
    apply_records(
        [
            agent(
                host="web-1",
                ts=now_ns(1),
                **{
                    "agent.cpu_percent": 7.14,
                    "agent.probes": {
                        "http": {
                            "desired": True,
                            "actual": True,
                            "error": None,
                            "events_per_s": 1250.0,
                            "cpu_percent": 2.5,
                        },
                        "postgres": {
                            "desired": True,
                            "actual": False,
                            "error": None,
                            "throttled": "worker at 7.1 % of a 5 % budget: postgres cost most",
                        },
                    },
                },
            )
        ]
    )
    Host.objects.filter(name="web-1").update(cpu_budget_percent=5)
    reported("web-2", seconds_ago=7)
    reported("web-3", seconds_ago=30)

    html = as_viewer.get("/hosts/").content.decode()

    assert re.findall(r'<span class="status status-(\w+)">(\w+)</span>', html) == [
        ("up", "up"),
        ("stale", "stale"),
        ("down", "down"),
    ]
    assert '<span class="cpu-used">7.1 %</span>' in html and "budget 5.0 %" in html
    http = probe_cell(html, "http")
    assert "1,250 ev/s · 2.5 % CPU" in http and '<span class="state">on</span>' in http
    postgres = probe_cell(html, "postgres")
    assert '<li class="probe probe-throttled">' in postgres
    assert "worker at 7.1 % of a 5 % budget: postgres cost most" in postgres
    assert "UTC" in html


def test_a_stopped_worker_reads_down_and_stopped(as_viewer):
    apply_records([agent(host="web-1", ts=now_ns(1), **{"agent.stopping": True})])
    html = as_viewer.get("/hosts/").content.decode()
    assert '<span class="status status-down">stopped</span>' in html
    assert "the probe worker on web-1 stopped at " in html  # the warning every page shows


def test_staff_toggle_a_probe_with_a_plain_form(as_staff, control_redis, control_channel):
    reported("web-1")

    response = as_staff.post(
        "/hosts/probes/", {"host": "web-1", "probe": "http", "enabled": "0"}, follow=True
    )

    assert response.redirect_chain == [("/hosts/", 302)]
    assert "http off on web-1." in response.content.decode()
    assert Host.objects.get(name="web-1").desired_probes == {"http": False}
    assert control_redis.hget(schema.control_key("web-1"), "http") == "0"
    assert control_channel() == ["web-1"]
    # The page now shows the worker has not yet taken it up.
    assert "applying…" in probe_cell(response.content.decode(), "http")


def test_staff_toggle_a_probe_from_javascript_and_get_json(as_staff):
    reported("web-1")

    response = as_staff.post("/hosts/probes/", {"host": "web-1", "probe": "tls", "enabled": "0"}, **FETCH)

    assert (response.status_code, response.json()) == (200, {"detail": "tls off on web-1."})
    assert not Host.objects.get(name="web-1").wants("tls")


@pytest.mark.parametrize(
    ("form", "status", "detail"),
    [
        ({"host": "web-1", "probe": "htp", "enabled": "0"}, 400, "unknown probe 'htp'"),
        ({"host": "web-1", "probe": "http", "enabled": "maybe"}, 400, "enabled: expected 1 (on) or 0 (off)"),
        ({"host": "nope", "probe": "http", "enabled": "0"}, 404, "no host named 'nope'"),
    ],
)
def test_a_bad_toggle_says_what_is_wrong(as_staff, form, status, detail):
    reported("web-1")
    response = as_staff.post("/hosts/probes/", form, **FETCH)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)
    assert Host.objects.get(name="web-1").desired_probes == {}


def test_a_viewer_post_is_refused_and_changes_nothing(as_viewer, control_redis):
    reported("web-1")

    toggle = as_viewer.post("/hosts/probes/", {"host": "web-1", "probe": "http", "enabled": "0"})
    bulk = as_viewer.post("/hosts/probes/all/", {"probe": "tls", "enabled": "0"})
    budget = as_viewer.post("/hosts/budget/", {"host": "web-1", "cpu_budget_percent": "1"})
    policy = as_viewer.post("/hosts/redaction/", {"sql_literals": "keep"})

    assert [r.status_code for r in (toggle, bulk, budget, policy)] == [403, 403, 403, 403]
    host = Host.objects.get(name="web-1")
    assert (host.desired_probes, host.cpu_budget_percent) == ({}, None)
    assert not RedactionPolicy.objects.exists()
    assert not AuditEntry.objects.exists()
    assert control_redis.keys("obs:control:*") == []


def test_staff_disable_tls_on_all_hosts(as_staff, control_redis, control_channel):
    for name in ("web-1", "web-2", "db-1"):
        reported(name)

    response = as_staff.post("/hosts/probes/all/", {"probe": "tls", "enabled": "0"}, **FETCH)

    assert response.json() == {"detail": "tls off on all hosts (3 changed)."}
    assert [h.wants("tls") for h in Host.objects.all()] == [False, False, False]
    assert {control_redis.hget(schema.control_key(n), "tls") for n in ("web-1", "web-2", "db-1")} == {"0"}
    assert control_channel() == [schema.CONTROL_ALL_HOSTS]


def test_staff_set_and_clear_a_cpu_budget(as_staff, control_redis):
    reported("web-1")

    set_ = as_staff.post("/hosts/budget/", {"host": "web-1", "cpu_budget_percent": "2.5"}, **FETCH)
    assert set_.json() == {"detail": "web-1 has a CPU budget of 2.5 % of a core."}
    assert control_redis.hget(schema.control_key("web-1"), schema.CONTROL_CPU_BUDGET) == "2.5"

    bad = as_staff.post("/hosts/budget/", {"host": "web-1", "cpu_budget_percent": "-3"}, **FETCH)
    assert bad.status_code == 400 and bad.json()["detail"].startswith(
        "cpu_budget_percent: -3.0 is not a budget"
    )

    cleared = as_staff.post("/hosts/budget/", {"host": "web-1", "cpu_budget_percent": ""}, **FETCH)
    assert cleared.json() == {"detail": "web-1 has no CPU budget."}
    assert Host.objects.get(name="web-1").cpu_budget_percent is None


def test_redis_down_shows_that_the_change_is_saved_but_not_applied(as_staff, settings):
    reported("web-1")
    settings.REDIS_URL = f"redis://127.0.0.1:{helpers.free_port()}/0"

    response = as_staff.post(
        "/hosts/probes/", {"host": "web-1", "probe": "http", "enabled": "0"}, follow=True
    )

    html = response.content.decode()
    assert '<p class="notice notice-error">saved, but the worker could not be told: Redis unreachable' in html
    assert not Host.objects.get(name="web-1").wants("http")


def test_it_escapes_hostile_host_names_and_reasons(as_staff):
    apply_records(
        [
            agent(
                host=HOSTILE,
                ts=now_ns(1),
                **{
                    "agent.version": HOSTILE,
                    "agent.kernel": '6.1" onmouseover="x',
                    "agent.probes": {"tls": {"desired": True, "actual": False, "error": HOSTILE}},
                },
            )
        ]
    )

    html = as_staff.get("/hosts/").content.decode()
    rows = as_staff.get("/hosts/rows/").content.decode()

    for page in (html, rows):
        assert HOSTILE not in page
        assert 'onmouseover="x' not in page
        assert f'<th scope="row" class="name">{escape(HOSTILE)}</th>' in page
        assert f'<input type="hidden" name="host" value="{escape(HOSTILE)}">' in page
    response = as_staff.post("/hosts/probes/", {"host": HOSTILE, "probe": "tls", "enabled": "0"}, **FETCH)
    assert response.status_code == 200
    assert not Host.objects.get(name=HOSTILE).wants("tls")


def test_the_rows_partial_is_the_table_body(as_viewer):
    reported("web-1")
    rows = as_viewer.get("/hosts/rows/")
    assert rows.status_code == 200
    assert rows.content.decode().count('<tr class="host-row host-row-up">') == 1
    assert "<html" not in rows.content.decode()


def test_it_renders_20_hosts_in_as_many_queries_as_one(as_staff, django_assert_max_num_queries):
    reported("web-00", tls={"actual": False, "error": "no libssl found"})
    with django_assert_max_num_queries(8) as one_host:  # session, user, the hosts, base.html's own
        as_staff.get("/hosts/")
    for i in range(1, 20):
        reported(f"web-{i:02}", tls={"actual": False, "error": "no libssl found"})

    with django_assert_max_num_queries(len(one_host.captured_queries)):
        page = as_staff.get("/hosts/")
    with django_assert_max_num_queries(3):  # session, user, the hosts
        rows = as_staff.get("/hosts/rows/")

    assert page.content.decode().count('<tr class="host-row ') == 20
    assert rows.content.decode().count('<tr class="host-row ') == 20


# --- audit log ---------------------------------------------------------------------------------


def test_the_audit_log_lists_changes_newest_first_for_staff(as_staff, personas):
    host = reported("web-1")
    control.set_probes(host, {"http": False}, personas["staff"], reason="noisy")
    AuditEntry.objects.create(
        at=timezone.now() + timedelta(seconds=1),
        actor="agent web-1",
        host=host,
        setting="tls",
        probe="tls",
        old="on",
        new="off",
        reason="worker at 9 % of a 5 % budget",
    )

    html = as_staff.get("/hosts/audit/").content.decode()

    rows = re.findall(r"<tr>\s*<td class=\"nowrap\">.*?</tr>", html, re.S)
    assert len(rows) == 2
    assert "agent web-1" in rows[0] and "worker at 9 % of a 5 % budget" in rows[0]
    assert "staff" in rows[1] and "noisy" in rows[1]


def test_the_audit_log_and_its_csv_are_for_staff_only(as_viewer, client):
    assert as_viewer.get("/hosts/audit/").status_code == 403
    assert as_viewer.get("/hosts/audit.csv").status_code == 403
    client.logout()
    assert client.get("/hosts/audit.csv").status_code == 302


def test_the_audit_csv_neutralises_formulas(as_staff, personas):
    host = reported('=HYPERLINK("http://evil")')
    control.set_probes(host, {"http": False}, personas["staff"], reason="+cmd|' /C calc'!A0")
    control.set_probes(host, {"tls": False}, personas["staff"], reason="@SUM(1)")
    control.set_probes(host, {"kafka": False}, personas["staff"], reason="-2+3")

    response = as_staff.get("/hosts/audit.csv")

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="obsweb-audit.csv"'
    header, *rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert header == ["at_utc", "actor", "host", "setting", "probe", "old", "new", "reason"]
    assert [row[7] for row in rows] == ["'-2+3", "'@SUM(1)", "'+cmd|' /C calc'!A0"]
    assert {row[2] for row in rows} == {'\'=HYPERLINK("http://evil")'}
    assert rows[0][1:3] == ["staff", '\'=HYPERLINK("http://evil")']
    assert rows[0][5:7] == ["on", "off"]


# --- redaction policy --------------------------------------------------------------------------


def test_staff_change_the_redaction_policy_for_every_host(as_staff, control_redis, control_channel):
    reported("web-1")
    form = {
        "headers_kept": "X-Request-Id\nAccept",
        "query_keys_kept": "page, sort",
        "sql_literals": "mask",
        "redis_commands_masked": "config",
    }

    response = as_staff.post("/hosts/redaction/", form, follow=True)

    assert "Redaction policy saved and pushed to every host." in response.content.decode()
    assert RedactionPolicy.current().as_control() == {
        "headers_kept": ["x-request-id", "accept"],
        "query_keys_kept": ["page", "sort"],
        "sql_literals": "mask",
        "redis_commands_masked": ["CONFIG"],
    }
    assert '"redis_commands_masked": ["CONFIG"]' in control_redis.hget(
        schema.control_key("web-1"), schema.CONTROL_REDACTION
    )
    assert control_channel() == [schema.CONTROL_ALL_HOSTS]


def test_a_bad_redaction_policy_is_shown_with_its_error(as_staff):
    form = {"headers_kept": "Bad:Header", "query_keys_kept": "", "sql_literals": "mask"}
    response = as_staff.post("/hosts/redaction/", form)
    assert response.status_code == 400
    assert "headers_kept: &#x27;Bad:Header&#x27; is not a valid name" in response.content.decode()
    assert not RedactionPolicy.objects.exists()


def test_a_viewer_sees_the_redaction_policy_read_only(as_viewer):
    html = as_viewer.get("/hosts/redaction/").content.decode()
    assert "Only staff may change the redaction policy." in html
    assert "Save and push" not in html
    assert re.search(r'<select name="sql_literals"[^>]* disabled', html)
    assert len(re.findall(r"<textarea [^>]*disabled", html)) == 3
