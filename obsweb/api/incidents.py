"""The incidents part of the JSON API (DESIGN.md: API): incidents, their reports, alert rules.

Everyone logged in reads; staff acknowledge, comment, ask for reports and change rules (403 for
anyone else). Errors answer {"detail": message} like the rest of the API.
"""

import copy

from django.core.exceptions import ValidationError as ModelValidationError
from django.db.models import Prefetch
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from obsweb.api.serializers import Problem
from obsweb.fleet import control
from obsweb.fleet.models import Host
from obsweb.incidents import constants as c
from obsweb.incidents import lifecycle
from obsweb.incidents.models import AlertRule, Incident, IncidentAlert, Report, ReportFile
from obsweb.incidents.report.queue import request_report
from obsweb.telemetry.models import Service

ERRORS = {
    400: OpenApiResponse(Problem, description="A bad parameter or body; detail says which."),
    401: OpenApiResponse(Problem, description="No credentials."),
    403: OpenApiResponse(Problem, description="Not staff."),
    404: OpenApiResponse(Problem, description="No such incident, report or rule."),
}
READ_ERRORS = {k: ERRORS[k] for k in (401, 404)}
MAX_INCIDENTS = 1000


class StaffMayChange(BasePermission):
    """Everyone logged in reads; only staff change."""

    message = "only staff may change incidents, ask for reports and edit alert rules"

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return bool(request.user and request.user.is_authenticated)
        return control.may_change(request.user)


# --- shapes ---------------------------------------------------------------------------------------


class IncidentSummary(serializers.Serializer):
    id = serializers.IntegerField()
    service = serializers.CharField(allow_null=True, help_text="The service, for a service incident.")
    host = serializers.CharField(allow_null=True, help_text="The host, for a host incident (host metrics).")
    subject_kind = serializers.ChoiceField(choices=["service", "host"])
    subject = serializers.CharField()
    rule = serializers.CharField(allow_null=True, help_text="The rule that opened it.")
    rules = serializers.ListField(child=serializers.CharField(), help_text="Every rule that fired for it.")
    state = serializers.ChoiceField(choices=[c.OPEN, c.RESOLVED])
    opened_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.CharField(allow_null=True)
    url = serializers.CharField(help_text="Its page on the dashboard.")


class IncidentList(serializers.Serializer):
    incidents = IncidentSummary(many=True)


class IncidentsQuery(serializers.Serializer):
    state = serializers.ChoiceField(choices=[c.OPEN, c.RESOLVED], required=False)
    service = serializers.CharField(required=False, help_text="Only this service's incidents.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INCIDENTS, default=100)


class AlertState(serializers.Serializer):
    rule = serializers.CharField()
    condition = serializers.CharField()
    unit = serializers.CharField()
    first_fired_at = serializers.DateTimeField()
    last_fired_at = serializers.DateTimeField()
    last_value = serializers.FloatField(allow_null=True)
    firing = serializers.BooleanField()


class TimelineEntry(serializers.Serializer):
    at = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=[kind for kind, _ in c.EVENT_CHOICES])
    text = serializers.CharField()
    actor = serializers.CharField(help_text='The user, "" for obsweb itself.')


class WebhookState(serializers.Serializer):
    event = serializers.CharField()
    url = serializers.CharField()
    status = serializers.ChoiceField(choices=[s for s, _ in c.WEBHOOK_STATUS_CHOICES])
    attempts = serializers.IntegerField()
    last_error = serializers.CharField()
    last_attempt_at = serializers.DateTimeField(allow_null=True)


class ReportStatus(serializers.Serializer):
    id = serializers.IntegerField()
    incident = serializers.IntegerField()
    status = serializers.ChoiceField(choices=[s for s, _ in c.REPORT_STATUS_CHOICES])
    progress = serializers.IntegerField(min_value=0, max_value=100)
    step = serializers.CharField(help_text="What the builder is doing now.")
    error = serializers.CharField(help_text="Why it failed, or which format is missing.")
    requested_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    downloads = serializers.DictField(
        child=serializers.CharField(), help_text='{"html": url, "pdf": url, "json": url} once done.'
    )


class ReportCreated(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=[s for s, _ in c.REPORT_STATUS_CHOICES])


class IncidentDetail(IncidentSummary):
    alerts = AlertState(many=True)
    timeline = TimelineEntry(many=True)
    webhooks = WebhookState(many=True)
    reports = ReportStatus(many=True)


class CommentBody(serializers.Serializer):
    text = serializers.CharField(max_length=lifecycle.MAX_COMMENT_CHARS)


class AlertRuleSerializer(serializers.ModelSerializer):
    """A rule as the API reads and writes it; AlertRule.clean checks what the page checks."""

    service = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Service.objects.filter(external=False),
        allow_null=True,
        required=False,
        help_text="Service metrics: null watches every service.",
    )
    host = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Host.objects.all(),
        allow_null=True,
        required=False,
        help_text="Host metrics: null watches every host.",
    )
    condition = serializers.CharField(read_only=True)

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "name",
            "metric",
            "service",
            "host",
            "window_minutes",
            "threshold",
            "min_requests",
            "status_codes",
            "baseline",
            "enabled",
            "condition",
            "last_evaluated_at",
            "last_state",
            "last_detail",
        ]
        read_only_fields = ["last_evaluated_at", "last_state", "last_detail"]

    def validate(self, attrs):
        rule = copy.copy(self.instance) if self.instance else AlertRule()  # checked, not saved
        for name, value in attrs.items():
            setattr(rule, name, value)
        try:
            rule.clean()
        except ModelValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs


class AlertRuleList(serializers.Serializer):
    rules = AlertRuleSerializer(many=True)


# --- views ----------------------------------------------------------------------------------------


def _summary(incident: Incident) -> dict:
    rules = [alert.rule_name for alert in incident.alerts.all()]
    return {
        "id": incident.pk,
        "service": incident.subject if incident.subject_kind == c.SUBJECT_SERVICE else None,
        "host": incident.subject if incident.subject_kind == c.SUBJECT_HOST else None,
        "subject_kind": incident.subject_kind,
        "subject": incident.subject,
        "rule": rules[0] if rules else None,
        "rules": rules,
        "state": incident.state,
        "opened_at": incident.opened_at,
        "resolved_at": incident.resolved_at,
        "acknowledged_at": incident.acknowledged_at,
        "acknowledged_by": incident.acknowledged_by.get_username() if incident.acknowledged_by else None,
        "url": incident.get_absolute_url(),
    }


def _incidents():
    alerts = Prefetch("alerts", queryset=IncidentAlert.objects.order_by("first_fired_at", "id"))
    return Incident.objects.select_related("acknowledged_by").prefetch_related(alerts)


def _incident(incident_id: int) -> Incident:
    incident = _incidents().filter(pk=incident_id).first()
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    return incident


def report_status(report: Report, formats=None) -> dict:
    if formats is None:
        formats = report.files.values_list("format", flat=True)
    downloads = {fmt: reverse("api-report-download", args=[report.pk, fmt]) for fmt in sorted(formats)}
    return {
        "id": report.pk,
        "incident": report.incident_id,
        "status": report.status,
        "progress": report.progress,
        "step": report.step,
        "error": report.error,
        "requested_at": report.requested_at,
        "finished_at": report.finished_at,
        "downloads": downloads if report.status == c.DONE else {},
    }


# Ids are positive; the routes' <int:...> matches digits only, so "-1" never reaches a view.
ID = {"type": "integer", "minimum": 1}
INCIDENT_ID = OpenApiParameter("incident_id", ID, OpenApiParameter.PATH)
REPORT_ID = OpenApiParameter("report_id", ID, OpenApiParameter.PATH)
RULE_ID = OpenApiParameter("rule_id", ID, OpenApiParameter.PATH)


class IncidentListView(APIView):
    @extend_schema(
        summary="Incidents, open first, newest first",
        operation_id="api_v1_incidents_list",  # else it collides with one incident's GET
        parameters=[IncidentsQuery],
        responses={200: IncidentList, 400: ERRORS[400], 401: ERRORS[401]},
    )
    def get(self, request):
        query = IncidentsQuery(data=request.query_params)
        if not query.is_valid():
            raise ParseError(
                "; ".join(f"{name}: {' '.join(map(str, msgs))}" for name, msgs in query.errors.items())
            )
        incidents = _incidents().order_by("state", "-opened_at", "-id")  # "open" < "resolved"
        if "state" in query.validated_data:
            incidents = incidents.filter(state=query.validated_data["state"])
        if "service" in query.validated_data:
            incidents = incidents.filter(
                subject_kind=c.SUBJECT_SERVICE, subject=query.validated_data["service"]
            )
        rows = incidents[: query.validated_data["limit"]]
        return Response({"incidents": [_summary(incident) for incident in rows]})


class IncidentView(APIView):
    @extend_schema(
        summary="One incident with its rules, timeline, webhook deliveries and reports",
        parameters=[INCIDENT_ID],
        responses={200: IncidentDetail, **READ_ERRORS},
    )
    def get(self, request, incident_id: int):
        incident = _incident(incident_id)
        reports = incident.reports.prefetch_related(
            Prefetch("files", queryset=ReportFile.objects.only("report_id", "format"))
        )
        return Response(
            _summary(incident)
            | {
                "alerts": [
                    {
                        "rule": a.rule_name,
                        "condition": a.condition,
                        "unit": a.unit,
                        "first_fired_at": a.first_fired_at,
                        "last_fired_at": a.last_fired_at,
                        "last_value": a.last_value,
                        "firing": a.firing,
                    }
                    for a in incident.alerts.all()
                ],
                "timeline": [
                    {"at": e.at, "kind": e.kind, "text": e.text, "actor": e.actor}
                    for e in incident.events.all()
                ],
                "webhooks": [
                    {
                        "event": w.event,
                        "url": w.url,
                        "status": w.status,
                        "attempts": w.attempts,
                        "last_error": w.last_error,
                        "last_attempt_at": w.last_attempt_at,
                    }
                    for w in incident.webhooks.all()
                ],
                "reports": [report_status(r, [f.format for f in r.files.all()]) for r in reports],
            }
        )


class IncidentAcknowledgeView(APIView):
    permission_classes = [StaffMayChange]

    @extend_schema(
        summary="Acknowledge an incident (staff only); acknowledging twice changes nothing",
        parameters=[INCIDENT_ID],
        request=None,
        responses={200: IncidentSummary, **{k: ERRORS[k] for k in (401, 403, 404)}},
    )
    def post(self, request, incident_id: int):
        incident = _incident(incident_id)
        lifecycle.acknowledge(incident, request.user)
        return Response(_summary(_incident(incident_id)))


class IncidentCommentView(APIView):
    permission_classes = [StaffMayChange]

    @extend_schema(
        summary="Add a comment to an incident's timeline (staff only)",
        parameters=[INCIDENT_ID],
        request=CommentBody,
        responses={201: TimelineEntry, **ERRORS},
    )
    def post(self, request, incident_id: int):
        incident = _incident(incident_id)
        body = CommentBody(data=request.data)
        if not body.is_valid():
            raise ParseError('send {"text": "..."} with some text (at most 4000 characters)')
        try:
            event = lifecycle.comment(incident, request.user, body.validated_data["text"])
        except ValueError as exc:
            raise ParseError(str(exc)) from None
        entry = {"at": event.at, "kind": event.kind, "text": event.text, "actor": event.actor}
        return Response(entry, status=status.HTTP_201_CREATED)


class IncidentReportsView(APIView):
    permission_classes = [StaffMayChange]

    @extend_schema(
        summary="Ask for a report of the incident (staff only): HTML, PDF and JSON, built in the background",
        description="Answers the report that is already being built, if there is one.",
        parameters=[INCIDENT_ID],
        request=None,
        responses={202: ReportCreated, **{k: ERRORS[k] for k in (401, 403, 404)}},
    )
    def post(self, request, incident_id: int):
        incident = _incident(incident_id)
        report, _created = request_report(incident, request.user)
        return Response({"id": report.pk, "status": report.status}, status=status.HTTP_202_ACCEPTED)


def _report(report_id: int) -> Report:
    report = Report.objects.filter(pk=report_id).first()
    if report is None:
        raise NotFound(f"no report {report_id} (reports are kept for a while, then pruned)")
    return report


class ReportView(APIView):
    @extend_schema(
        summary="A report's progress, and its downloads once done",
        parameters=[REPORT_ID],
        responses={200: ReportStatus, **READ_ERRORS},
    )
    def get(self, request, report_id: int):
        return Response(report_status(_report(report_id)))


class ReportDownloadView(APIView):
    def perform_content_negotiation(self, request, force=False):
        """A download answers its file whatever Accept says (a client may well ask for
        application/pdf); errors are JSON, like everywhere in the API."""
        return JSONRenderer(), JSONRenderer.media_type

    @extend_schema(
        summary="Download one format of a report: html (self-contained, opens offline), pdf or json",
        operation_id="api_v1_reports_download",
        parameters=[
            REPORT_ID,
            OpenApiParameter("fmt", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(c.REPORT_FORMATS)),
        ],
        responses={
            # The file with the content type of its format, not a generic octet-stream.
            (200, "text/html"): OpenApiTypes.BINARY,
            (200, "application/pdf"): OpenApiTypes.BINARY,
            (200, "application/json"): OpenApiTypes.OBJECT,
            **READ_ERRORS,
        },
    )
    def get(self, request, report_id: int, fmt: str):
        report = _report(report_id)
        if fmt not in c.REPORT_FORMATS:
            raise NotFound(f"no format {fmt!r}: ask for one of {', '.join(c.REPORT_FORMATS)}")
        file = report.files.filter(format=fmt).first()
        if file is None:
            why = report.error or f"the report is {report.status}"
            raise NotFound(f"report {report.pk} has no {fmt}: {why}")
        response = HttpResponse(bytes(file.content), content_type=c.REPORT_FORMATS[fmt])
        response["Content-Disposition"] = f'attachment; filename="{report.filename(fmt)}"'
        response["X-Content-Type-Options"] = "nosniff"
        return response


class AlertRuleListView(APIView):
    permission_classes = [StaffMayChange]

    @extend_schema(
        summary="Every alert rule, with what its last evaluation found",
        operation_id="api_v1_alert_rules_list",
        responses={200: AlertRuleList, 401: ERRORS[401]},
    )
    def get(self, request):
        rules = AlertRule.objects.select_related("service", "host")
        return Response({"rules": AlertRuleSerializer(rules, many=True).data})

    @extend_schema(
        summary="Create an alert rule (staff only)",
        request=AlertRuleSerializer,
        responses={201: AlertRuleSerializer, **{k: ERRORS[k] for k in (400, 401, 403)}},
    )
    def post(self, request):
        serializer = AlertRuleSerializer(data=request.data)
        _check(serializer)
        return Response(AlertRuleSerializer(serializer.save()).data, status=status.HTTP_201_CREATED)


def _check(serializer) -> None:
    if not serializer.is_valid():
        raise ParseError(
            "; ".join(f"{name}: {' '.join(map(str, msgs))}" for name, msgs in serializer.errors.items())
        )


def _rule(rule_id: int) -> AlertRule:
    rule = AlertRule.objects.select_related("service", "host").filter(pk=rule_id).first()
    if rule is None:
        raise NotFound(f"no alert rule {rule_id}")
    return rule


class AlertRuleView(APIView):
    permission_classes = [StaffMayChange]

    @extend_schema(
        summary="One alert rule", parameters=[RULE_ID], responses={200: AlertRuleSerializer, **READ_ERRORS}
    )
    def get(self, request, rule_id: int):
        return Response(AlertRuleSerializer(_rule(rule_id)).data)

    @extend_schema(
        summary="Change an alert rule (staff only)",
        parameters=[RULE_ID],
        request=AlertRuleSerializer,
        responses={200: AlertRuleSerializer, **ERRORS},
    )
    def patch(self, request, rule_id: int):
        serializer = AlertRuleSerializer(_rule(rule_id), data=request.data, partial=True)
        _check(serializer)
        return Response(AlertRuleSerializer(serializer.save()).data)

    @extend_schema(
        summary="Delete an alert rule (staff only); incidents it opened keep its name",
        parameters=[RULE_ID],
        responses={204: None, **{k: ERRORS[k] for k in (401, 403, 404)}},
    )
    def delete(self, request, rule_id: int):
        _rule(rule_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
