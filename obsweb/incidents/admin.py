"""Alert rules are edited here as on /incidents/rules/ (AlertRule.clean checks both). Incidents,
their timelines, webhooks and reports are written by obsweb itself: read-only here, except that an
incident may be deleted."""

from django.contrib import admin

from obsweb.incidents.models import (
    AlertRule,
    Incident,
    IncidentAlert,
    IncidentEvent,
    Report,
    WebhookDelivery,
)


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "metric",
        "scope",
        "threshold",
        "window_minutes",
        "min_requests",
        "enabled",
        "last_state",
    ]
    list_filter = ["metric", "enabled", "last_state"]
    search_fields = ["name"]
    readonly_fields = ["last_evaluated_at", "last_state", "last_detail"]


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AlertInline(ReadOnlyInline):
    model = IncidentAlert
    fields = ["rule_name", "condition", "first_fired_at", "last_fired_at", "last_value", "firing"]


class EventInline(ReadOnlyInline):
    model = IncidentEvent
    fields = ["at", "kind", "actor", "text"]


class WebhookInline(ReadOnlyInline):
    model = WebhookDelivery
    fields = ["event", "url", "status", "attempts", "last_attempt_at", "last_error"]


class ReportInline(ReadOnlyInline):
    model = Report
    fields = ["requested_at", "requested_by", "status", "progress", "error", "finished_at"]


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ["id", "subject_kind", "subject", "state", "opened_at", "resolved_at", "acknowledged_by"]
    list_filter = ["state", "subject_kind"]
    search_fields = ["subject"]
    inlines = [AlertInline, EventInline, WebhookInline, ReportInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
