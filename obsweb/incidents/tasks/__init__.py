"""Celery jobs of the incidents app, one per module (STYLE.md); autodiscovery imports this."""

from obsweb.incidents.tasks.build_report import build_report
from obsweb.incidents.tasks.evaluate_alerts import evaluate_alerts
from obsweb.incidents.tasks.prune_reports import prune_reports
from obsweb.incidents.tasks.send_webhook import send_webhook

__all__ = ["build_report", "evaluate_alerts", "prune_reports", "send_webhook"]
