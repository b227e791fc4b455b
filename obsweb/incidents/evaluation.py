"""One evaluation of every enabled alert rule: which subjects fire, and what that does to incidents.

Run by tasks/evaluate_alerts.py every settings.ALERT_EVALUATION_INTERVAL_S. Safe to run twice or
on several workers at once: see lifecycle.py.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from obsweb.incidents import constants as c
from obsweb.incidents import lifecycle, measure
from obsweb.incidents.models import AlertRule, Incident

log = logging.getLogger(__name__)
MAX_DETAIL_SUBJECTS = 5  # a rule's status names this many subjects, then "and n more"


@dataclass
class Outcome:
    """What one evaluation did, for logs and tests."""

    firing: dict = field(default_factory=dict)  # lifecycle.Subject -> [rule names]
    resolved: list = field(default_factory=list)  # incident ids


def evaluate(now: datetime | None = None) -> Outcome:
    now = now or timezone.now()
    fired = defaultdict(list)
    for rule in AlertRule.objects.filter(enabled=True).select_related("service", "host"):
        readings = measure.readings(rule, now)
        for reading in readings:
            if rule.fires(reading.value):
                fired[lifecycle.Subject.of(reading)].append((rule, reading))
        _note_rule_state(rule, readings, now)

    outcome = Outcome(firing={subject: [rule.name for rule, _ in pairs] for subject, pairs in fired.items()})
    for subject, pairs in sorted(fired.items(), key=lambda item: (item[0].kind, item[0].name)):
        lifecycle.firing(subject, pairs, now)
    firing_subjects = {(subject.kind, subject.name) for subject in fired}
    for incident in Incident.objects.filter(state=c.OPEN):
        if (incident.subject_kind, incident.subject) not in firing_subjects and lifecycle.clear(
            incident, now
        ):
            outcome.resolved.append(incident.pk)
    return outcome


def _note_rule_state(rule: AlertRule, readings: list[measure.Reading], now: datetime) -> None:
    """What the rules page says about the rule: firing for whom, ok, or no data and why."""
    firing = [r.subject for r in readings if rule.fires(r.value)]
    measured = [r for r in readings if r.value is not None]
    if firing:
        state, detail = c.RULE_FIRING, "firing for " + _names(firing)
    elif measured:
        state, detail = c.RULE_OK, f"ok for {_names([r.subject for r in measured])}"
    else:
        state = c.RULE_NO_DATA
        notes = [f"{r.subject}: {r.note}" for r in readings if r.note]
        nothing = c.NO_DATA_NOTES.get(rule.metric, "nothing to measure in the window")
        detail = "; ".join(notes[:MAX_DETAIL_SUBJECTS]) or nothing
    AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_state=state, last_detail=detail)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_DETAIL_SUBJECTS])
    more = len(names) - MAX_DETAIL_SUBJECTS
    return f"{shown} and {more} more" if more > 0 else shown
