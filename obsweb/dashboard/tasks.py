"""Live overview refresh: run by Celery beat, see CELERY_BEAT_SCHEDULE in settings."""

from celery import shared_task

from obsweb.dashboard import live


@shared_task
def refresh_live_overview() -> None:
    """Broadcast the overview even when no record arrives, so a host that stops reporting turns
    stale, then down, on open pages: the ingester broadcasts only after it writes requests."""
    live.broadcast_overview(None)
