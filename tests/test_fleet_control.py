"""obsweb.fleet.control: validated changes, saved and audited, then written to the control hashes
and announced on the control channel, against a real Redis."""

import json

import pytest
from django.core.management import call_command

from obsweb.fleet import control
from obsweb.fleet.models import AuditEntry, Host, RedactionPolicy
from probes import schema
from tests import helpers

ALL_ON = dict.fromkeys(schema.PROBES, "1")
DEFAULT_REDACTION = {
    "headers_kept": [],
    "query_keys_kept": [],
    "redis_commands_masked": [],
    "sql_literals": "mask",
}


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


@pytest.fixture
def staff(personas):
    return personas["staff"]


@pytest.fixture
def web1(db):
    return Host.objects.create(name="web-1")


def redis_down(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{helpers.free_port()}/0"  # nothing listens there


def test_it_writes_the_full_desired_state_and_announces_the_host(staff, web1, control_redis, control_channel):
    entries = control.set_probes(web1, {"http": False}, staff)

    assert control_redis.hgetall(schema.control_key("web-1")) == ALL_ON | {
        "http": "0",
        schema.CONTROL_CPU_BUDGET: "",
        schema.CONTROL_REDACTION: json.dumps(DEFAULT_REDACTION, sort_keys=True),
    }
    assert control_channel() == ["web-1"]
    assert Host.objects.get(name="web-1").desired_probes == {"http": False}
    (entry,) = entries
    assert (entry.actor, entry.user, entry.host, entry.setting, entry.probe) == (
        "staff",
        staff,
        web1,
        "http",
        "http",
    )
    assert (entry.old, entry.new, entry.reason) == ("on", "off", "")


def test_it_audits_only_real_changes(staff, web1, control_redis, control_channel):
    control.set_probes(web1, {"http": False, "tls": True}, staff, reason="noisy")
    control.set_probes(web1, {"http": False}, staff)
    control.set_probes(web1, {"http": True}, staff)

    rows = list(AuditEntry.objects.values_list("probe", "old", "new", "reason"))
    assert rows == [("http", "off", "on", ""), ("http", "on", "off", "noisy")]  # newest first
    # Every call rewrites the hash, changed or not, so a lost hash is repaired by any click.
    assert control_channel() == ["web-1", "web-1", "web-1"]
    assert control_redis.hget(schema.control_key("web-1"), "http") == "1"


def test_it_keeps_other_probes_when_one_changes(staff, web1, control_redis):
    control.set_probes(web1, {"tls": False}, staff)
    control.set_probes(web1, {"kafka": False}, staff)

    stored = control_redis.hgetall(schema.control_key("web-1"))
    assert {p for p in schema.PROBES if stored[p] == "0"} == {"tls", "kafka"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"htp": False}, "unknown probe 'htp'; known probes: http, tls"),
        ({"http": "false"}, 'http: expected true or false, not "false"'),
        ({"http": 0}, "http: expected true or false, not 0"),
        ({}, "send probes as an object"),
        (["http"], "send probes as an object"),
    ],
)
def test_it_rejects_bad_probe_changes_naming_the_field(staff, web1, control_redis, changes, message):
    with pytest.raises(ValueError) as raised:
        control.set_probes(web1, changes, staff)
    assert str(raised.value).startswith(message)
    assert Host.objects.get(name="web-1").desired_probes == {}
    assert not AuditEntry.objects.exists()
    assert control_redis.exists(schema.control_key("web-1")) == 0


def test_it_sets_and_removes_a_cpu_budget(staff, web1, control_redis, control_channel):
    control.set_cpu_budget(web1, 5, staff)
    assert control_redis.hget(schema.control_key("web-1"), schema.CONTROL_CPU_BUDGET) == "5.0"
    control.set_cpu_budget(web1, None, staff)
    assert control_redis.hget(schema.control_key("web-1"), schema.CONTROL_CPU_BUDGET) == ""

    assert control_channel() == ["web-1", "web-1"]
    rows = list(AuditEntry.objects.values_list("setting", "probe", "old", "new"))
    assert rows == [("cpu_budget_percent", "", "5", "none"), ("cpu_budget_percent", "", "none", "5")]


@pytest.mark.parametrize("bad", [-1, 0, "5", True, float("nan"), 1e9])
def test_it_rejects_a_budget_that_is_no_positive_number(staff, web1, control_redis, bad):
    with pytest.raises(ValueError, match="^cpu_budget_percent: "):
        control.set_cpu_budget(web1, bad, staff)
    assert Host.objects.get(name="web-1").cpu_budget_percent is None
    assert not AuditEntry.objects.exists()


def test_a_bulk_change_writes_every_host_and_announces_all(staff, db, control_redis, control_channel):
    for name in ("web-1", "web-2", "db-1"):
        Host.objects.create(name=name)
    Host.objects.filter(name="db-1").update(desired_probes={"tls": False})

    entries = control.set_probes_everywhere({"tls": False}, staff)

    assert sorted(e.host.name for e in entries) == ["web-1", "web-2"]  # db-1 had it off already
    for name in ("web-1", "web-2", "db-1"):
        assert control_redis.hget(schema.control_key(name), "tls") == "0"
    assert control_channel() == [schema.CONTROL_ALL_HOSTS]


def test_the_redaction_policy_goes_to_every_host(staff, db, control_redis, control_channel):
    Host.objects.create(name="web-1", desired_probes={"http": False})
    Host.objects.create(name="web-2")

    control.set_redaction(
        staff,
        headers_kept=["X-Request-Id", "x-request-id", " Accept "],
        query_keys_kept=["page"],
        sql_literals="keep",
        redis_commands_masked=["config", "SET"],
    )

    policy = {
        "headers_kept": ["x-request-id", "accept"],
        "query_keys_kept": ["page"],
        "redis_commands_masked": ["CONFIG", "SET"],
        "sql_literals": "keep",
    }
    assert RedactionPolicy.current().as_control() == policy
    for name in ("web-1", "web-2"):
        assert json.loads(control_redis.hget(schema.control_key(name), schema.CONTROL_REDACTION)) == policy
    assert control_redis.hget(schema.control_key("web-1"), "http") == "0"  # the rest of the state too
    assert control_channel() == [schema.CONTROL_ALL_HOSTS]
    changed = set(AuditEntry.objects.filter(host=None).values_list("setting", flat=True))
    assert changed == {"headers_kept", "query_keys_kept", "sql_literals", "redis_commands_masked"}
    assert AuditEntry.objects.get(setting="sql_literals").new == "keep"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("headers_kept", ["Bad Header"], "headers_kept: 'Bad Header' is not a valid name"),
        ("headers_kept", "x-id", "headers_kept: expected a list of names, not str"),
        (
            "redis_commands_masked",
            ["SET;FLUSHALL"],
            "redis_commands_masked: 'SET;FLUSHALL' is not a valid name",
        ),
        ("sql_literals", "show", "sql_literals: expected 'mask' or 'keep', not 'show'"),
    ],
)
def test_it_rejects_a_bad_redaction_policy(staff, db, control_redis, field, value, message):
    fields = {"headers_kept": [], "query_keys_kept": [], "sql_literals": "mask", "redis_commands_masked": []}
    with pytest.raises(ValueError) as raised:
        control.set_redaction(staff, **(fields | {field: value}))
    assert str(raised.value) == message
    assert not RedactionPolicy.objects.exists()


def test_redis_down_keeps_the_change_and_says_the_worker_was_not_told(staff, web1, settings):
    redis_down(settings)

    with pytest.raises(control.WorkerNotTold) as raised:
        control.set_probes(web1, {"tls": False}, staff)

    assert str(raised.value).startswith("saved, but the worker could not be told: Redis unreachable (")
    assert str(raised.value).endswith("it will apply the state when it reconnects")
    assert Host.objects.get(name="web-1").desired_probes == {"tls": False}
    assert AuditEntry.objects.get().new == "off"


def test_publish_control_rewrites_every_hash_from_the_database(db, control_redis, control_channel):
    Host.objects.create(name="web-1", desired_probes={"http": False}, cpu_budget_percent=2.5)
    Host.objects.create(name="web-2")

    call_command("publish_control")

    assert control_redis.hget(schema.control_key("web-1"), "http") == "0"
    assert control_redis.hget(schema.control_key("web-1"), schema.CONTROL_CPU_BUDGET) == "2.5"
    assert control_redis.hgetall(schema.control_key("web-2"))["http"] == "1"
    assert control_channel() == [schema.CONTROL_ALL_HOSTS]


def test_publish_control_fails_loudly_without_redis(db, settings):
    Host.objects.create(name="web-1")
    redis_down(settings)
    with pytest.raises(Exception, match="Redis at redis://127.0.0.1:.* failed"):
        call_command("publish_control")


def test_only_active_staff_may_change(personas):
    staff, viewer = personas["staff"], personas["viewer"]
    assert control.may_change(staff)
    assert not control.may_change(viewer)
    assert not control.may_change(None)
    staff.is_active = False
    assert not control.may_change(staff)
