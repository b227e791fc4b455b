"""Changing what the probe workers should do: the one place that does it.

The hosts page, the API, the websocket and the admin all call here. A change is validated, saved
together with one AuditEntry per setting that really changed, and then written to the host's
control hash, announced on the control channel (DESIGN.md: Control plane; the layout is in
probes/schema.py `control_key`). The hash always holds a host's full desired state, written in one
MULTI, so a worker that reads it at start or on any message gets everything.

The database is the truth. When Redis does not answer, the change stays saved and WorkerNotTold
says so; the ingester rewrites the hashes when Redis comes back and whenever a heartbeat reports a
desired state that differs from the database, and `manage.py publish_control` does it on demand.
"""

import json
import math
import re
from collections.abc import Iterable

import redis
from django.db import transaction

from obsweb.fleet.models import AuditEntry, Host, RedactionPolicy
from obsweb.redis_client import redis_client
from probes import schema

ON, OFF = "on", "off"  # how a probe's state reads in the audit log
NO_BUDGET = "none"
SYSTEM_ACTOR = "system"  # changes made without a user: management commands
MAX_CPU_BUDGET_PERCENT = 6400.0  # 64 cores: anything above is a typo
MAX_NAME_CHARS = 128  # one header name, query key or Redis command in the redaction policy
REDIS_TIMEOUT_S = 2.0  # a page that changes a probe must answer even when Redis does not

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP token (RFC 9110)
_QUERY_KEY = re.compile(r"^[^\s&=#]+$")
_REDIS_COMMAND = re.compile(r"^[A-Za-z][A-Za-z0-9_|\-]*$")


class WorkerNotTold(Exception):
    """The change is saved, but Redis did not take it: the worker keeps its old state for now."""

    def __init__(self, error: Exception):
        self.error = error
        super().__init__(
            "saved, but the worker could not be told: Redis unreachable "
            f"({error}) — it will apply the state when it reconnects"
        )


def may_change(user) -> bool:
    """Only staff may change probes, budgets and the redaction policy (DESIGN.md: Control plane)."""
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


# --- probes -----------------------------------------------------------------------------------


def check_probes(changes) -> dict[str, bool]:
    """`changes` if it is {probe name: bool} naming at least one known probe; else ValueError."""
    if not isinstance(changes, dict) or not changes:
        raise ValueError(f'send probes as an object like {{"http": false}}; known probes: {_known()}')
    for name, on in changes.items():
        if name not in schema.PROBES:
            raise ValueError(f"unknown probe {str(name)[:64]!r}; known probes: {_known()}")
        if type(on) is not bool:
            raise ValueError(f"{name}: expected true or false, not {json.dumps(on, default=str)[:64]}")
    return changes


def set_probes(host: Host, changes: dict[str, bool], user, reason: str = "") -> list[AuditEntry]:
    """Switch probes of one host on (True) or off (False); returns the audit entries written (none
    when nothing changed). Updates `host` in place. Raises ValueError for a bad change, and
    WorkerNotTold when the change is saved but Redis did not take it."""
    check_probes(changes)
    hosts, entries = _save_probes(Host.objects.filter(pk=host.pk), changes, user, reason)
    if not hosts:
        raise Host.DoesNotExist(f"host {host.name!r} was deleted")
    host.desired_probes = hosts[0].desired_probes
    _tell(hosts, announce=[host.name])
    return entries


def set_probes_everywhere(changes: dict[str, bool], user, reason: str = "") -> list[AuditEntry]:
    """The same change on every known host (bulk actions: "disable TLS on all hosts")."""
    check_probes(changes)
    hosts, entries = _save_probes(Host.objects.all(), changes, user, reason)
    _tell(hosts, announce=[schema.CONTROL_ALL_HOSTS])
    return entries


def _save_probes(hosts, changes: dict[str, bool], user, reason: str) -> tuple[list[Host], list[AuditEntry]]:
    with transaction.atomic():
        locked = list(hosts.select_for_update())  # two staff toggling two probes keep both changes
        entries, changed = [], []
        for host in locked:
            before = len(entries)
            for probe, on in changes.items():
                if host.wants(probe) != on:
                    entries.append(
                        _entry(user, host, probe, _on_off(not on), _on_off(on), reason, probe=probe)
                    )
            if len(entries) > before:
                host.desired_probes = {**host.desired_probes, **changes}
                changed.append(host)
        Host.objects.bulk_update(changed, ["desired_probes"])
        AuditEntry.objects.bulk_create(entries)
    return locked, entries


def _on_off(on: bool) -> str:
    return ON if on else OFF


def _known() -> str:
    return ", ".join(schema.PROBES)


# --- CPU budget -------------------------------------------------------------------------------


def check_cpu_budget(percent) -> float | None:
    """`percent` as a float, or None for no budget; ValueError naming the field otherwise."""
    if percent is None:
        return None
    # isfinite() of a JSON integer too big for a float (1 and 400 zeros) raises OverflowError;
    # comparing it below does not.
    if type(percent) not in (int, float) or (type(percent) is float and not math.isfinite(percent)):
        raise ValueError(
            f"{schema.CONTROL_CPU_BUDGET}: expected a number of percent or null, not {percent!r}"
        )
    if not 0 < percent <= MAX_CPU_BUDGET_PERCENT:
        raise ValueError(
            f"{schema.CONTROL_CPU_BUDGET}: {str(percent)[:20]} is not a budget; give a percentage of one "
            f"core above 0 and at most {MAX_CPU_BUDGET_PERCENT:g}, or null for none"
        )
    return float(percent)


def set_cpu_budget(host: Host, percent: float | None, user, reason: str = "") -> list[AuditEntry]:
    """Set (or, with None, remove) the worker's CPU budget in % of one core; see set_probes."""
    percent = check_cpu_budget(percent)
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        entries = []
        if locked.cpu_budget_percent != percent:
            old, new = _budget_text(locked.cpu_budget_percent), _budget_text(percent)
            entries.append(_entry(user, locked, schema.CONTROL_CPU_BUDGET, old, new, reason))
            locked.cpu_budget_percent = percent
            locked.save(update_fields=["cpu_budget_percent"])
            AuditEntry.objects.bulk_create(entries)
    host.cpu_budget_percent = percent
    _tell([locked], announce=[host.name])
    return entries


def _budget_text(percent: float | None) -> str:
    return NO_BUDGET if percent is None else f"{percent:g}"


# --- redaction --------------------------------------------------------------------------------


def check_redaction(headers_kept, query_keys_kept, sql_literals, redis_commands_masked) -> dict:
    """The policy fields cleaned (stripped, duplicates dropped; header names lower-case, Redis
    commands upper-case), or ValueError naming the bad field and entry."""
    if sql_literals not in (RedactionPolicy.SQL_MASK, RedactionPolicy.SQL_KEEP):
        raise ValueError(
            f"{schema.REDACTION_SQL_LITERALS}: expected {RedactionPolicy.SQL_MASK!r} or "
            f"{RedactionPolicy.SQL_KEEP!r}, not {str(sql_literals)[:64]!r}"
        )
    return {
        "headers_kept": _names(schema.REDACTION_HEADERS_KEPT, headers_kept, _HEADER_NAME, str.lower),
        "query_keys_kept": _names(schema.REDACTION_QUERY_KEYS_KEPT, query_keys_kept, _QUERY_KEY, str),
        "sql_literals": sql_literals,
        "redis_commands_masked": _names(
            schema.REDACTION_REDIS_COMMANDS, redis_commands_masked, _REDIS_COMMAND, str.upper
        ),
    }


def _names(field: str, names, pattern: re.Pattern, normal) -> list[str]:
    if not isinstance(names, list | tuple):
        raise ValueError(f"{field}: expected a list of names, not {type(names).__name__}")
    cleaned = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"{field}: expected names as text, not {name!r}")
        name = name.strip()
        if not name:
            continue
        if len(name) > MAX_NAME_CHARS or not pattern.match(name):
            raise ValueError(f"{field}: {name[:MAX_NAME_CHARS]!r} is not a valid name")
        if normal(name) not in cleaned:
            cleaned.append(normal(name))
    return cleaned


def set_redaction(user, *, headers_kept, query_keys_kept, sql_literals, redis_commands_masked, reason=""):
    """Change the redaction policy and push it to every host; see set_probes."""
    fields = check_redaction(headers_kept, query_keys_kept, sql_literals, redis_commands_masked)
    with transaction.atomic():
        policy = RedactionPolicy.objects.select_for_update().filter(pk=1).first() or RedactionPolicy(pk=1)
        before = policy.as_control()
        for name, value in fields.items():
            setattr(policy, name, value)
        after = policy.as_control()
        entries = [
            _entry(user, None, key, _policy_text(before[key]), _policy_text(after[key]), reason)
            for key in after
            if before[key] != after[key]
        ]
        policy.save()
        AuditEntry.objects.bulk_create(entries)
    publish_all()
    return entries


def _policy_text(value) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


# --- telling the workers ----------------------------------------------------------------------


def control_fields(host: Host, redaction: dict) -> dict[str, str]:
    """A host's control hash: every probe "1"/"0", the CPU budget ("" for none), the redaction JSON."""
    fields = {probe: "1" if host.wants(probe) else "0" for probe in schema.PROBES}
    budget = host.cpu_budget_percent
    fields[schema.CONTROL_CPU_BUDGET] = "" if budget is None else repr(float(budget))
    fields[schema.CONTROL_REDACTION] = json.dumps(redaction, sort_keys=True)
    return fields


def publish_all(client: redis.Redis | None = None) -> int:
    """Rewrite every host's control hash from the database and tell all workers; the host count."""
    hosts = list(Host.objects.all())
    _tell(hosts, announce=[schema.CONTROL_ALL_HOSTS], client=client)
    return len(hosts)


def publish_hosts(names: Iterable[str], client: redis.Redis | None = None) -> None:
    """Rewrite the control hashes of the hosts named and tell each of their workers."""
    hosts = list(Host.objects.filter(name__in=list(names)))
    _tell(hosts, announce=[h.name for h in hosts], client=client)


def _tell(hosts: list[Host], announce: list[str], client: redis.Redis | None = None) -> None:
    """Write the hashes and PUBLISH in one MULTI: a worker never reads half a state.

    DEL before HSET so the hash holds exactly the desired state (no field of a retired probe)."""
    if not hosts:
        return
    redaction = (RedactionPolicy.objects.filter(pk=1).first() or RedactionPolicy()).as_control()
    own = client is None
    client = client or redis_client(connect_timeout_s=REDIS_TIMEOUT_S, timeout_s=REDIS_TIMEOUT_S)
    try:
        pipe = client.pipeline(transaction=True)
        for host in hosts:
            key = schema.control_key(host.name)
            pipe.delete(key)
            pipe.hset(key, mapping=control_fields(host, redaction))
        for name in announce:
            pipe.publish(schema.CONTROL_CHANNEL, name)
        pipe.execute()
    except redis.RedisError as exc:
        raise WorkerNotTold(exc) from exc
    finally:
        if own:
            client.close()


def _entry(
    user, host: Host | None, setting: str, old: str, new: str, reason: str, probe: str = ""
) -> AuditEntry:
    """An audit entry by `user`, or by the system (a management command) for None."""
    known = user is not None and user.is_authenticated
    return AuditEntry(
        user=user if known else None,
        actor=user.get_username() if known else SYSTEM_ACTOR,
        host=host,
        setting=setting,
        probe=probe,
        old=old,
        new=new,
        reason=reason,
    )
