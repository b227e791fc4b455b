"""Run by Celery beat every settings.ALERT_EVALUATION_INTERVAL_S (CELERY_BEAT_SCHEDULE)."""

import logging

from celery import shared_task

from obsweb.incidents import evaluation

log = logging.getLogger(__name__)


@shared_task(name="obsweb.incidents.evaluate_alerts")
def evaluate_alerts() -> dict:
    """Evaluate every enabled rule on the rollups and open, update or resolve incidents."""
    outcome = evaluation.evaluate()
    if outcome.firing or outcome.resolved:
        firing = {f"{s.kind} {s.name}": rules for s, rules in outcome.firing.items()}
        log.info("alerts: firing %s; resolved incidents %s", firing, outcome.resolved)
    return {"firing": len(outcome.firing), "resolved": len(outcome.resolved)}
