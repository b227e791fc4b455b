"""Alert rules, the incidents they open, each incident's timeline, webhooks and reports.

An incident belongs to one subject (a service, or a host for host metrics): every rule that fires
for that subject joins its one open incident. The database keeps it one: a partial unique
constraint allows a single open incident per subject, so two Celery workers evaluating at once
cannot open two (obsweb/incidents/lifecycle.py joins the other's when its insert is refused).
"""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from obsweb.fleet.models import Host
from obsweb.incidents import constants as c
from obsweb.telemetry.models import Service

STATUS_PATTERN = re.compile(r"^[1-5](xx|\d\d)$")  # 5xx, 4xx, or one code such as 503
MAX_WINDOW_MINUTES = 24 * 60


class AlertRule(models.Model):
    """When to open an incident: `metric` over the last `window_minutes` above `threshold`.

    Service metrics need more than `min_requests` requests in the window (TCP retransmits: more
    than that many connections); with fewer, the rule has no data for that service and does not
    fire. A rule without a service watches every service (each on its own); host metrics likewise
    watch one host or all.
    """

    name = models.CharField(max_length=120, unique=True)
    metric = models.CharField(max_length=32, choices=c.METRIC_CHOICES)
    service = models.ForeignKey(
        Service,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rules",
        help_text="Service metrics: empty watches every service.",
    )
    host = models.ForeignKey(
        Host,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rules",
        help_text="Host metrics: empty watches every host.",
    )
    window_minutes = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_WINDOW_MINUTES)],
        help_text="Rollups are per minute: the window is the last this many minutes.",
    )
    threshold = models.FloatField(
        validators=[MinValueValidator(0)], help_text="Fires when the value is above this."
    )
    min_requests = models.PositiveIntegerField(
        default=0,
        help_text="Service metrics: evaluated only with more than this many requests in the window "
        "(in the baseline window, for a throughput drop; connections, for TCP retransmits).",
    )
    status_codes = models.CharField(
        max_length=3,
        blank=True,
        help_text="Status-code share: a class (5xx, 4xx) or one code (503).",
    )
    baseline = models.CharField(
        max_length=4,
        choices=c.BASELINE_CHOICES,
        default=c.BASELINE_DAY,
        help_text="Throughput drop: what the window is compared with.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # What the last evaluation found, for the rules page.
    last_evaluated_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_state = models.CharField(max_length=16, blank=True, editable=False)
    last_detail = models.TextField(blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def is_host_metric(self) -> bool:
        return self.metric in c.HOST_METRICS

    @property
    def unit(self) -> str:
        return c.UNITS.get(self.metric, "")

    def fires(self, value: float | None) -> bool:
        """Whether a measured value (None: no data) fires this rule."""
        return value is not None and value > self.threshold

    def condition(self) -> str:
        """The rule in words: `error rate (%) > 5 with > 10 requests in 5 min`."""
        what = self.get_metric_display()
        if self.metric == c.STATUS_SHARE:
            what = f"{self.status_codes} share (%)"
        text = f"{what} > {self.threshold:g}"
        if self.metric == c.HOST_DOWN:  # a heartbeat's age: no window
            return text
        if self.metric == c.THROUGHPUT_DROP:
            then = f", > {self.min_requests} requests then" if self.min_requests else ""
            return f"{text} in {self.window_minutes} min, against {self.get_baseline_display()}{then}"
        if self.metric in c.SERVICE_METRICS and self.min_requests:
            text += f" with > {self.min_requests} {c.GATE_NOUNS.get(self.metric, 'requests')}"
        return f"{text} in {self.window_minutes} min"

    def scope(self) -> str:
        if self.is_host_metric:
            return f"host {self.host.name}" if self.host else "every host"
        return f"service {self.service.name}" if self.service else "every service"

    def clean(self):
        errors = {}
        if self.is_host_metric and self.service_id:
            errors["service"] = f"{self.get_metric_display()} is a host metric: choose a host, not a service"
        if not self.is_host_metric and self.host_id:
            errors["host"] = f"{self.get_metric_display()} is a service metric: choose a service, not a host"
        if self.metric == c.STATUS_SHARE and not STATUS_PATTERN.match(self.status_codes or ""):
            errors["status_codes"] = "give a status class such as 5xx or 4xx, or one code such as 503"
        if self.metric != c.STATUS_SHARE and self.status_codes:
            errors["status_codes"] = "only a status-code share rule takes status codes"
        if self.metric in c.PERCENT_METRICS and self.threshold is not None and self.threshold > 100:
            errors["threshold"] = "a percentage: between 0 and 100"
        if errors:
            raise ValidationError(errors)

    def matches_status(self, status_code: int) -> bool:
        """Whether `status_code` counts toward this status-code share rule."""
        pattern = self.status_codes
        if pattern.endswith("xx"):
            return status_code // 100 == int(pattern[0])
        return str(status_code) == pattern


class Incident(models.Model):
    """Something that broke for one subject (a service or a host), from the first rule firing
    until every rule has been clear for the grace period (settings.INCIDENT_RESOLVE_GRACE_S)."""

    subject_kind = models.CharField(max_length=16, choices=c.SUBJECT_CHOICES)
    subject = models.CharField(max_length=255)  # the service's or host's name when it opened
    service = models.ForeignKey(
        Service, null=True, blank=True, on_delete=models.SET_NULL, related_name="incidents"
    )
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="incidents")
    state = models.CharField(max_length=16, choices=c.STATE_CHOICES, default=c.OPEN)
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_firing_at = models.DateTimeField()  # the last evaluation in which a rule fired
    clear_since = models.DateTimeField(null=True, blank=True)  # None while a rule fires
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject_kind", "subject"],
                condition=Q(state=c.OPEN),
                name="one_open_incident_per_subject",
            ),
            models.CheckConstraint(
                condition=Q(state=c.OPEN, resolved_at__isnull=True)
                | Q(state=c.RESOLVED, resolved_at__isnull=False),
                name="incident_resolved_at_matches_state",
            ),
        ]
        indexes = [models.Index(fields=["state", "opened_at"], name="incident_state_opened")]

    def __str__(self):
        return f"#{self.pk} {self.subject_kind} {self.subject} ({self.state})"

    def get_absolute_url(self) -> str:
        return reverse("incidents:detail", args=[self.pk])

    @property
    def is_open(self) -> bool:
        return self.state == c.OPEN

    def duration_s(self, now=None) -> float:
        return ((self.resolved_at or now or timezone.now()) - self.opened_at).total_seconds()


class IncidentAlert(models.Model):
    """One rule firing for an incident's subject: when it first and last fired, its last value."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="alerts")
    rule = models.ForeignKey(AlertRule, null=True, on_delete=models.SET_NULL, related_name="alerts")
    rule_name = models.CharField(max_length=120)  # kept when the rule is deleted
    condition = models.CharField(max_length=255)  # the rule in words when it fired
    unit = models.CharField(max_length=32, blank=True)
    first_fired_at = models.DateTimeField()
    last_fired_at = models.DateTimeField()
    last_value = models.FloatField(null=True)
    firing = models.BooleanField(default=True)

    class Meta:
        ordering = ["first_fired_at", "id"]
        constraints = [models.UniqueConstraint(fields=["incident", "rule"], name="one_alert_per_rule")]

    def __str__(self):
        return f"{self.rule_name} on incident #{self.incident_id}"


class IncidentEvent(models.Model):
    """One entry of an incident's timeline: a state change, an acknowledgement or a comment."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=32, choices=c.EVENT_CHOICES)
    text = models.TextField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=150, blank=True)  # the username then, "" for obsweb itself

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["incident", "at"], name="incident_event_at")]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind}: {self.text[:60]}"


class WebhookDelivery(models.Model):
    """One JSON POST to settings.INCIDENT_WEBHOOK_URL about an incident, retried with backoff
    (tasks/send_webhook.py); its attempts and last error show on the incident page."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="webhooks")
    event = models.CharField(max_length=32)
    url = models.CharField(max_length=2000)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=c.WEBHOOK_STATUS_CHOICES, default=c.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self):
        return f"{self.event} for incident #{self.incident_id}: {self.status}"


class Report(models.Model):
    """An incident report built by tasks/build_report.py, kept REPORT_RETENTION_DAYS; the same
    incident may have several (each regenerated one is new)."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="reports")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    status = models.CharField(max_length=16, choices=c.REPORT_STATUS_CHOICES, default=c.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)  # 0-100
    step = models.CharField(max_length=120, blank=True)  # what the task is doing now
    error = models.TextField(blank=True)  # why it failed, or which format could not be made
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self):
        return f"report {self.pk} of incident #{self.incident_id}: {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in (c.DONE, c.FAILED)

    @property
    def build_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def filename(self, fmt: str) -> str:
        return f"obsweb-incident-{self.incident_id}-report-{self.pk}.{fmt}"


class ReportFile(models.Model):
    """One format of a report, in the database so web and Celery may run on different machines."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="files")
    format = models.CharField(max_length=8, choices=c.FORMAT_CHOICES)
    content = models.BinaryField()
    size = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["report", "format"], name="one_file_per_format")]

    def __str__(self):
        return f"{self.report} ({self.format}, {self.size} bytes)"
