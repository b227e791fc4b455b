"""GET /api/v1/hosts, GET and PATCH /api/v1/hosts/<name>, PATCH /api/v1/hosts/<name>/probes."""

import pytest

from obsweb.api import serializers
from obsweb.fleet.models import AuditEntry, Host
from obsweb.telemetry.aggregate import apply_records
from probes import schema
from tests import helpers
from tests.factories import ALLOWED, agent, api_client, now_ns

HEARTBEAT_PROBES = {
    "http": {
        "desired": True,
        "actual": True,
        "error": None,
        "throttled": None,
        "events_per_s": 120.5,
        "cpu_percent": 0.8,
    },
    "tls": {"desired": True, "actual": False, "error": "no libssl found", "throttled": None},
    "postgres": {
        "desired": True,
        "actual": False,
        "error": None,
        "throttled": "worker at 7.1 % over a 5 % budget",
    },
}


@pytest.fixture(autouse=True)
def api_settings(settings, control_redis):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


@pytest.fixture
def web1(db):
    apply_records(
        [
            agent(host="web-1", ts=now_ns(3), **{"agent.events_seen": 1000}),
            agent(
                host="web-1",
                ts=now_ns(1),
                **{
                    "agent.events_seen": 1400,
                    "agent.events_dropped": 4,
                    "agent.probes": HEARTBEAT_PROBES,
                    "agent.cpu_percent": 3.25,
                },
            ),
        ]
    )
    return Host.objects.get(name="web-1")


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_it_lists_hosts_with_desired_and_actual_probe_state(personas, web1, persona, how):
    Host.objects.filter(name="web-1").update(desired_probes={"kafka": False}, cpu_budget_percent=5.0)

    response = api_client(personas, persona, how).get("/api/v1/hosts")

    assert response.status_code == 200
    (host,) = response.json()["hosts"]
    assert set(host) == set(serializers.HostSummary().fields)
    assert (host["name"], host["status"], host["stopped"]) == ("web-1", "up", False)
    assert (host["agent_version"], host["kernel"]) == ("0.1.0", "6.18.0")
    assert host["events_per_s"] == pytest.approx(200, rel=0.05)
    assert (host["dropped"], host["cpu_percent"], host["cpu_budget_percent"]) == (4, 3.25, 5.0)
    assert list(host["probes"]) == list(schema.PROBES)
    assert host["probes"]["http"] == HEARTBEAT_PROBES["http"]
    assert host["probes"]["tls"] == {
        "desired": True,
        "actual": False,
        "error": "no libssl found",
        "throttled": None,
        "events_per_s": None,
        "cpu_percent": None,
    }
    assert host["probes"]["postgres"]["throttled"] == "worker at 7.1 % over a 5 % budget"
    assert host["probes"]["kafka"] == {
        "desired": False,
        "actual": None,
        "error": None,
        "throttled": None,
        "events_per_s": None,
        "cpu_percent": None,
    }


def test_it_answers_one_host_and_404_for_an_unknown_name(personas, web1):
    client = api_client(personas, "viewer")

    assert client.get("/api/v1/hosts/web-1").json()["name"] == "web-1"
    response = client.get("/api/v1/hosts/nope")
    assert (response.status_code, response.json()) == (404, {"detail": "no host named 'nope'"})


def test_it_refuses_reads_without_credentials_with_401(personas, web1):
    client = api_client(personas, "outsider")
    assert client.get("/api/v1/hosts").status_code == 401
    assert client.get("/api/v1/hosts/web-1").status_code == 401


@pytest.mark.parametrize("how", ["session", "token"])
def test_staff_switch_a_probe_off_and_get_the_host_back(personas, web1, control_redis, how):
    response = api_client(personas, "staff", how).patch(
        "/api/v1/hosts/web-1/probes", {"http": False, "tls": True}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["probes"]["http"]["desired"] is False
    assert response.json()["probes"]["http"]["actual"] is True  # until the worker reports
    assert control_redis.hget(schema.control_key("web-1"), "http") == "0"
    (entry,) = AuditEntry.objects.filter(user=personas["staff"])
    assert (entry.actor, entry.probe, entry.old, entry.new) == ("staff", "http", "on", "off")


@pytest.mark.parametrize("how", ["session", "token"])
def test_a_viewer_may_not_switch_probes_and_nothing_changes(personas, web1, control_redis, how):
    client = api_client(personas, "viewer", how)

    probes = client.patch("/api/v1/hosts/web-1/probes", {"http": False}, format="json")
    budget = client.patch("/api/v1/hosts/web-1", {"cpu_budget_percent": 1}, format="json")

    assert (probes.status_code, budget.status_code) == (403, 403)
    assert probes.json() == {"detail": "only staff may change probes and budgets"}
    host = Host.objects.get(name="web-1")
    assert (host.desired_probes, host.cpu_budget_percent) == ({}, None)
    assert not AuditEntry.objects.filter(user__isnull=False).exists()
    assert control_redis.exists(schema.control_key("web-1")) == 0


def test_changes_without_credentials_are_refused_with_401(personas, web1):
    client = api_client(personas, "outsider")
    assert client.patch("/api/v1/hosts/web-1/probes", {"http": False}, format="json").status_code == 401
    assert client.patch("/api/v1/hosts/web-1", {"cpu_budget_percent": 1}, format="json").status_code == 401
    assert Host.objects.get(name="web-1").desired_probes == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"htp": False}, "unknown probe 'htp'; known probes: http, tls, postgres"),
        ({"http": "off"}, 'http: expected true or false, not "off"'),
        ({"http": None}, "http: expected true or false, not null"),
        ({}, "send probes as an object"),
        ([{"http": False}], "send probes as an object"),
    ],
)
def test_a_bad_probe_change_is_a_400_naming_the_field(personas, web1, body, message):
    response = api_client(personas, "staff").patch("/api/v1/hosts/web-1/probes", body, format="json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith(message)
    assert Host.objects.get(name="web-1").desired_probes == {}


def test_changing_an_unknown_host_is_a_404(personas, db):
    client = api_client(personas, "staff")
    assert client.patch("/api/v1/hosts/nope/probes", {"http": False}, format="json").status_code == 404
    assert client.patch("/api/v1/hosts/nope", {"cpu_budget_percent": 3}, format="json").status_code == 404


def test_staff_set_and_remove_a_cpu_budget(personas, web1, control_redis):
    client = api_client(personas, "staff")

    set_ = client.patch("/api/v1/hosts/web-1", {"cpu_budget_percent": 5}, format="json")
    assert (set_.status_code, set_.json()["cpu_budget_percent"]) == (200, 5.0)
    assert control_redis.hget(schema.control_key("web-1"), schema.CONTROL_CPU_BUDGET) == "5.0"

    removed = client.patch("/api/v1/hosts/web-1", {"cpu_budget_percent": None}, format="json")
    assert (removed.status_code, removed.json()["cpu_budget_percent"]) == (200, None)
    assert control_redis.hget(schema.control_key("web-1"), schema.CONTROL_CPU_BUDGET) == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"cpu_budget_percent": -2}, "cpu_budget_percent: -2 is not a budget"),
        ({"cpu_budget_percent": "lots"}, "cpu_budget_percent: expected a number of percent or null"),
        ({"cpu_budget_percent": 10**400}, f"cpu_budget_percent: 1{'0' * 19} is not a budget"),  # was a 500
        ({"name": "web-2"}, 'send {"cpu_budget_percent": '),
    ],
)
def test_a_bad_budget_is_a_400_naming_the_field(personas, web1, body, message):
    response = api_client(personas, "staff").patch("/api/v1/hosts/web-1", body, format="json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith(message)
    assert Host.objects.get(name="web-1").cpu_budget_percent is None


def test_redis_down_is_a_503_that_says_the_change_is_saved(personas, web1, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{helpers.free_port()}/0"

    response = api_client(personas, "staff").patch(
        "/api/v1/hosts/web-1/probes", {"tls": False}, format="json"
    )

    assert response.status_code == 503
    assert response.json()["detail"].startswith("saved, but the worker could not be told: Redis unreachable")
    assert Host.objects.get(name="web-1").desired_probes == {"tls": False}


def test_a_stopped_or_silent_host_is_down_without_a_rate(personas, db):
    apply_records(
        [
            agent(host="stopped", ts=now_ns(1), **{"agent.stopping": True}),
            agent(host="silent", ts=now_ns(30)),
        ]
    )
    hosts = {h["name"]: h for h in api_client(personas, "viewer").get("/api/v1/hosts").json()["hosts"]}

    assert (hosts["stopped"]["status"], hosts["stopped"]["stopped"]) == ("down", True)
    assert (hosts["silent"]["status"], hosts["silent"]["stopped"]) == ("down", False)
    assert hosts["silent"]["events_per_s"] is None
