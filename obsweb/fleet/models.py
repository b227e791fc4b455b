from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import FilteredRelation, Max, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone


class HostQuerySet(models.QuerySet):
    def with_drops(self, since: datetime, until: datetime) -> "HostQuerySet":
        """Each host with what its agent dropped in [since, until] (DroppedEvents), in one query:
        `drops` (0 for none), `drops_began` (the earliest time they may have begun: the heartbeat
        before the first report) and `drops_last` (the latest heartbeat that reported some)."""
        in_window = Q(dropped_events__at__gte=since, dropped_events__at__lte=until)
        return self.annotate(window_drops=FilteredRelation("dropped_events", condition=in_window)).annotate(
            drops=Coalesce(Sum("window_drops__count"), 0),
            drops_began=Min(Coalesce("window_drops__after", "window_drops__at")),
            drops_last=Max("window_drops__at"),
        )


class Host(models.Model):
    """A machine running a probe worker, registered by its heartbeats."""

    name = models.CharField(max_length=255, unique=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    agent_version = models.CharField(max_length=64, blank=True)
    kernel = models.CharField(max_length=128, blank=True)
    # Latest heartbeat as reported: {probe: {"desired", "actual", "error"}}.
    probes = models.JSONField(default=dict, blank=True)
    events_seen = models.BigIntegerField(default=0)
    events_dropped = models.BigIntegerField(default=0)
    events_per_s = models.FloatField(default=0)

    objects = HostQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    # What status() answers (DESIGN.md: API, GET /api/v1/hosts).
    UP = "up"
    STALE = "stale"
    DOWN = "down"

    def status(self, now: datetime | None = None) -> str:
        """up, stale or down from the age of the last heartbeat; down when none ever arrived.

        The thresholds are settings HOST_STALE_AFTER_S and HOST_DOWN_AFTER_S.
        """
        if self.last_seen is None:
            return self.DOWN
        age_s = ((now or timezone.now()) - self.last_seen).total_seconds()
        if age_s < settings.HOST_STALE_AFTER_S:
            return self.UP
        if age_s < settings.HOST_DOWN_AFTER_S:
            return self.STALE
        return self.DOWN


class DroppedEvents(models.Model):
    """Events a host's agent dropped between two heartbeats: one row per heartbeat that reported more.

    Heartbeats carry cumulative counters (kernel ring buffer full, plus records the publisher
    dropped while Redis was away); these rows are their increases, so the drops of any window are
    a sum. The requests behind dropped events are missing from rollups and samples; the kernel's
    own counters (the agent's /metrics) stay exact.
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="dropped_events")
    # The drops happened after the previous heartbeat (`after`, None when there was none) and
    # up to this one (`at`).
    after = models.DateTimeField(null=True, blank=True)
    at = models.DateTimeField(db_index=True)  # pruning finds old rows by time alone
    count = models.BigIntegerField()

    class Meta:
        ordering = ["at"]
        indexes = [models.Index(fields=["host", "at"], name="dropped_events_host_at")]

    def __str__(self):
        return f"{self.host} dropped {self.count} events up to {self.at:%Y-%m-%d %H:%M:%S} UTC"

    @classmethod
    def from_heartbeat(cls, host: Host, at: datetime, seen: int, dropped: int) -> "DroppedEvents | None":
        """The increase of `dropped` that a heartbeat at `at` reports over what `host` holds, if any.

        Call it before the heartbeat is applied to `host`. A worker restart resets its counters
        (events seen or dropped go down): the new count is then all new.
        """
        restarted = host.last_seen is None or seen < host.events_seen or dropped < host.events_dropped
        new = dropped if restarted else dropped - host.events_dropped
        return cls(host=host, after=host.last_seen, at=at, count=new) if new > 0 else None
