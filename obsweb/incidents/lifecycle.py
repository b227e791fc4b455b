"""Every change of an incident, each written once however many Celery workers try at once.

Opening relies on the partial unique constraint (one open incident per subject): a worker whose
insert is refused joins the incident the other opened. Every later change is a conditional UPDATE
(`... WHERE state = 'open' AND clear_since IS NULL`), and only the worker whose UPDATE changed a
row writes the timeline entry, sends the webhook and tells the open pages.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from obsweb.incidents import constants as c
from obsweb.incidents import live, webhooks
from obsweb.incidents.measure import Reading
from obsweb.incidents.models import AlertRule, Incident, IncidentAlert, IncidentEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subject:
    kind: str  # constants.SUBJECT_SERVICE or SUBJECT_HOST
    name: str
    pk: int

    @classmethod
    def of(cls, reading: Reading) -> "Subject":
        return cls(reading.subject_kind, reading.subject, reading.subject_id)


def _value_text(value: float | None, unit: str) -> str:
    return "no data" if value is None else f"{value:.4g} {unit}".strip()


def _fired_text(rule: AlertRule, reading: Reading) -> str:
    return f"{rule.name}: {rule.condition()}, measured {_value_text(reading.value, rule.unit)}"


def _event(incident: Incident, kind: str, text: str, at: datetime, user=None) -> IncidentEvent:
    return IncidentEvent.objects.create(
        incident=incident, kind=kind, text=text, at=at, user=user, actor=user.get_username() if user else ""
    )


def _after_commit(incident_id: int, webhook_event: str | None = None) -> None:
    """Tell open pages (banner, incident page) and, for opened/resolved, the webhook."""
    if webhook_event:
        webhooks.schedule(incident_id, webhook_event)
    transaction.on_commit(live.broadcast_incidents)


def firing(subject: Subject, fired: list[tuple[AlertRule, Reading]], now: datetime) -> Incident:
    """`fired` rules fire for `subject` now: open its incident or bring the open one up to date."""
    with transaction.atomic():
        incident, opened = _open_or_join(subject, fired, now)
        noted = opened  # the timeline already names the rules firing now
        if not opened:
            again = Incident.objects.filter(pk=incident.pk, state=c.OPEN, clear_since__isnull=False)
            if again.update(clear_since=None, last_firing_at=now):
                text = "; ".join(_fired_text(rule, reading) for rule, reading in fired)
                _event(incident, c.EVENT_REFIRED, f"Firing again within the grace period. {text}", now)
                _after_commit(incident.pk)
                noted = True
            else:
                Incident.objects.filter(pk=incident.pk).update(last_firing_at=now)
        _update_alerts(incident, fired, now, noted)
        if opened:  # after its alerts exist: the webhook names its rules
            _after_commit(incident.pk, c.WEBHOOK_OPENED)
    return incident


def _open_incident(subject: Subject) -> Incident | None:
    return Incident.objects.filter(subject_kind=subject.kind, subject=subject.name, state=c.OPEN).first()


def _open_or_join(subject: Subject, fired, now: datetime) -> tuple[Incident, bool]:
    existing = _open_incident(subject)
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():  # a savepoint: a refused insert leaves the outer transaction usable
            incident = Incident.objects.create(
                subject_kind=subject.kind,
                subject=subject.name,
                service_id=subject.pk if subject.kind == c.SUBJECT_SERVICE else None,
                host_id=subject.pk if subject.kind == c.SUBJECT_HOST else None,
                opened_at=now,
                last_firing_at=now,
            )
    except IntegrityError:
        # Another worker opened it between our look and our insert: join theirs.
        log.info("%s %s: another worker opened its incident first; joining it", subject.kind, subject.name)
        return _open_incident(subject), False
    text = "; ".join(_fired_text(rule, reading) for rule, reading in fired)
    _event(incident, c.EVENT_OPENED, f"Opened for {subject.kind} {subject.name}. {text}", now)
    return incident, True


def _update_alerts(incident: Incident, fired, now: datetime, noted: bool) -> None:
    """Each fired rule's alert up to date; a rule that joins or fires again is noted on the
    timeline unless the incident's own entry just named it (`noted`)."""
    firing_rules = set()
    for rule, reading in fired:
        firing_rules.add(rule.pk)
        alert, created = IncidentAlert.objects.get_or_create(
            incident=incident,
            rule=rule,
            defaults={
                "rule_name": rule.name,
                "condition": rule.condition()[:255],
                "unit": rule.unit,
                "first_fired_at": now,
                "last_fired_at": now,
                "last_value": reading.value,
            },
        )
        if created:
            if not noted:
                _event(incident, c.EVENT_FIRING, f"Also firing: {_fired_text(rule, reading)}", now)
            continue
        if IncidentAlert.objects.filter(pk=alert.pk, firing=False).update(firing=True) and not noted:
            _event(incident, c.EVENT_FIRING, f"Firing again: {_fired_text(rule, reading)}", now)
        IncidentAlert.objects.filter(pk=alert.pk).update(last_fired_at=now, last_value=reading.value)
    _clear_alerts(incident, now, keep=firing_rules)


def _clear_alerts(incident: Incident, now: datetime, keep=frozenset()) -> None:
    """Rules of `incident` that no longer fire (all but `keep`): each one's clearing is noted
    while others still fire; when none fires, clear() notes the condition as a whole."""
    for alert in incident.alerts.filter(firing=True).exclude(rule_id__in=keep):
        if IncidentAlert.objects.filter(pk=alert.pk, firing=True).update(firing=False) and keep:
            _event(incident, c.EVENT_RULE_CLEAR, f"{alert.rule_name} no longer fires.", now)


def clear(incident: Incident, now: datetime) -> bool:
    """Nothing fires for `incident`'s subject now: start the grace period, or resolve it once the
    condition has been clear for settings.INCIDENT_RESOLVE_GRACE_S. True when it resolved."""
    grace = timedelta(seconds=settings.INCIDENT_RESOLVE_GRACE_S)
    with transaction.atomic():
        if Incident.objects.filter(pk=incident.pk, state=c.OPEN, clear_since__isnull=True).update(
            clear_since=now
        ):
            _clear_alerts(incident, now)
            resolves = (now + grace).strftime("%H:%M:%S UTC")
            text = f"No rule fires any more; resolves at {resolves} if none fires again."
            _event(incident, c.EVENT_CLEAR, text, now)
            _after_commit(incident.pk)
        resolved = Incident.objects.filter(pk=incident.pk, state=c.OPEN, clear_since__lte=now - grace).update(
            state=c.RESOLVED, resolved_at=now
        )
        if resolved:
            quiet = f"{settings.INCIDENT_RESOLVE_GRACE_S} s"
            _event(incident, c.EVENT_RESOLVED, f"Resolved: every rule has been clear for {quiet}.", now)
            _after_commit(incident.pk, c.WEBHOOK_RESOLVED)
    return bool(resolved)


def acknowledge(incident: Incident, user) -> bool:
    """`user` has seen the incident and is on it; False when it was acknowledged already."""
    now = timezone.now()
    with transaction.atomic():
        done = Incident.objects.filter(pk=incident.pk, acknowledged_at__isnull=True).update(
            acknowledged_at=now, acknowledged_by=user
        )
        if done:
            _event(incident, c.EVENT_ACKNOWLEDGED, f"Acknowledged by {user.get_username()}.", now, user)
            _after_commit(incident.pk)
    incident.refresh_from_db()
    return bool(done)


MAX_COMMENT_CHARS = 4000


def comment(incident: Incident, user, text: str) -> IncidentEvent:
    text = text.strip()
    if not text:
        raise ValueError("a comment needs some text")
    if len(text) > MAX_COMMENT_CHARS:
        raise ValueError(f"a comment holds at most {MAX_COMMENT_CHARS} characters, not {len(text)}")
    return _event(incident, c.EVENT_COMMENT, text, timezone.now(), user)
