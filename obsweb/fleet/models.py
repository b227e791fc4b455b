from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import FilteredRelation, Max, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from probes import schema


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
    # Reported by the worker: its CPU (user space plus its BPF programs), % of one core.
    cpu_percent = models.FloatField(null=True, blank=True)
    # The last heartbeat said the worker was shutting down cleanly: down now, not after a timeout.
    stopped = models.BooleanField(default=False)
    # Desired state, changed only through obsweb.fleet.control (which tells the worker and audits):
    # {probe: bool}, a probe not named is on; the worker's CPU budget in % of one core, None: none.
    desired_probes = models.JSONField(default=dict, blank=True)
    cpu_budget_percent = models.FloatField(null=True, blank=True)

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

        The thresholds are settings HOST_STALE_AFTER_S and HOST_DOWN_AFTER_S. A worker that said
        it was stopping is down at once.
        """
        if self.last_seen is None or self.stopped:
            return self.DOWN
        age_s = ((now or timezone.now()) - self.last_seen).total_seconds()
        if age_s < settings.HOST_STALE_AFTER_S:
            return self.UP
        if age_s < settings.HOST_DOWN_AFTER_S:
            return self.STALE
        return self.DOWN

    def wants(self, probe: str) -> bool:
        """Whether `probe` should run on this host (a probe never switched is on)."""
        return self.desired_probes.get(probe, True) is not False


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


class AuditEntry(models.Model):
    """One change of desired state: who (a user, or the agent itself when it throttles a probe),
    which host and setting, the old and new value, and why. Written by obsweb.fleet.control and by
    the ingester; never edited."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=255)  # the username at the time, or "agent <host>"
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit")
    # What changed: a probe name, schema.CONTROL_CPU_BUDGET, or a schema.REDACTION_* key.
    setting = models.CharField(max_length=64)
    probe = models.CharField(max_length=32, blank=True)  # "" for changes that are not a probe's
    old = models.TextField(blank=True)
    new = models.TextField(blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        where = f" on {self.host}" if self.host_id else ""
        return f"{self.actor} set {self.setting}{where} from {self.old!r} to {self.new!r}"


class RedactionPolicy(models.Model):
    """What the workers mask beyond what they always mask (DESIGN.md: Privacy): one row, pk 1,
    pushed to every host in its control hash (schema.CONTROL_REDACTION)."""

    SQL_MASK = "mask"
    SQL_KEEP = "keep"
    SQL_CHOICES = [(SQL_MASK, "mask literals (replace them with ?)"), (SQL_KEEP, "keep literals")]

    headers_kept = models.JSONField(
        default=list, blank=True, help_text="Header names whose values may leave the host."
    )
    query_keys_kept = models.JSONField(
        default=list, blank=True, help_text="Query-string keys whose values may leave the host."
    )
    sql_literals = models.CharField(max_length=8, choices=SQL_CHOICES, default=SQL_MASK)
    redis_commands_masked = models.JSONField(
        default=list, blank=True, help_text="Redis commands whose arguments are masked (AUTH always is)."
    )

    class Meta:
        verbose_name_plural = "redaction policy"

    def __str__(self):
        return "redaction policy"

    @classmethod
    def current(cls) -> "RedactionPolicy":
        return cls.objects.get_or_create(pk=1)[0]

    def as_control(self) -> dict:
        """The policy as the worker reads it from its control hash."""
        return {
            schema.REDACTION_HEADERS_KEPT: list(self.headers_kept),
            schema.REDACTION_QUERY_KEYS_KEPT: list(self.query_keys_kept),
            schema.REDACTION_SQL_LITERALS: self.sql_literals,
            schema.REDACTION_REDIS_COMMANDS: list(self.redis_commands_masked),
        }
