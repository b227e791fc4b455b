"""The fleet in Django admin: changes go through obsweb.fleet.control (told and audited)."""

import pytest
from django.contrib.auth.models import User

from obsweb.fleet.models import AuditEntry, Host, RedactionPolicy
from probes import schema


@pytest.fixture
def admin_client(client, db, settings, control_redis):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client.force_login(User.objects.create_superuser("root", password="root-pass"))
    return client


def host_form(**changes) -> dict:
    """The host change form as the browser sends it: every probe checked, no budget."""
    form = {f"probe_{p}": "on" for p in schema.PROBES} | {"cpu_budget_percent": ""}
    for name, value in changes.items():
        if value is None:
            form.pop(name)
        else:
            form[name] = value
    return form


def test_the_host_list_shows_status(admin_client):
    Host.objects.create(name="web-1")
    html = admin_client.get("/admin/fleet/host/").content.decode()
    assert "web-1" in html and "down" in html


def test_saving_a_host_switches_probes_through_control(admin_client, control_redis, control_channel):
    host = Host.objects.create(name="web-1")

    response = admin_client.post(
        f"/admin/fleet/host/{host.pk}/change/", host_form(probe_tls=None, cpu_budget_percent="4")
    )

    assert response.status_code == 302
    host.refresh_from_db()
    assert (host.wants("tls"), host.wants("http"), host.cpu_budget_percent) == (False, True, 4.0)
    assert control_redis.hget(schema.control_key("web-1"), "tls") == "0"
    assert control_redis.hget(schema.control_key("web-1"), schema.CONTROL_CPU_BUDGET) == "4.0"
    assert "web-1" in control_channel()
    entries = set(AuditEntry.objects.values_list("actor", "setting", "old", "new", "reason"))
    assert entries == {
        ("root", "tls", "on", "off", "admin"),
        ("root", "cpu_budget_percent", "none", "4", "admin"),
    }


def test_a_negative_budget_is_refused_by_the_form(admin_client):
    host = Host.objects.create(name="web-1")
    response = admin_client.post(f"/admin/fleet/host/{host.pk}/change/", host_form(cpu_budget_percent="-1"))
    assert response.status_code == 200
    assert "cpu_budget_percent: -1.0 is not a budget" in response.content.decode()
    assert not AuditEntry.objects.exists()


def test_the_audit_log_is_read_only(admin_client):
    entry = AuditEntry.objects.create(actor="staff", setting="http", probe="http", old="on", new="off")
    assert admin_client.get("/admin/fleet/auditentry/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/fleet/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert (
        'name="old"' not in admin_client.get(f"/admin/fleet/auditentry/{entry.pk}/change/").content.decode()
    )


def test_the_redaction_policy_is_saved_through_control(admin_client, control_redis, control_channel):
    Host.objects.create(name="web-1")
    form = {
        "headers_kept": '["X-Request-Id"]',
        "query_keys_kept": "[]",
        "sql_literals": "keep",
        "redis_commands_masked": '["config"]',
    }

    response = admin_client.post("/admin/fleet/redactionpolicy/add/", form)

    assert response.status_code == 302
    assert RedactionPolicy.current().as_control() == {
        "headers_kept": ["x-request-id"],
        "query_keys_kept": [],
        "sql_literals": "keep",
        "redis_commands_masked": ["CONFIG"],
    }
    assert '"sql_literals": "keep"' in control_redis.hget(
        schema.control_key("web-1"), schema.CONTROL_REDACTION
    )
    assert control_channel() == [schema.CONTROL_ALL_HOSTS]
    assert AuditEntry.objects.filter(host=None).count() == 3
