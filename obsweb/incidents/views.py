"""Incident pages (DESIGN.md: Dashboard, /incidents/ and /incidents/<id>/) and alert rules.

Everyone logged in reads; staff acknowledge, comment, ask for reports and edit rules. Forms post
plainly and redirect back with a message; static/obsweb/incident.js posts the report form with
fetch (X-Requested-With: fetch) and gets JSON instead.
"""

from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, Prefetch, Value, When
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from obsweb.fleet import control
from obsweb.incidents import constants as c
from obsweb.incidents import lifecycle
from obsweb.incidents.forms import AlertRuleForm, CommentForm
from obsweb.incidents.models import AlertRule, Incident, ReportFile
from obsweb.incidents.report import contents
from obsweb.incidents.report.queue import request_report
from obsweb.telemetry import queries

INCIDENTS_PER_PAGE = 50
FETCH_HEADER = "HTTP_X_REQUESTED_WITH"
REPORT_REFRESH_MS = 2000  # the incident page polls its report rows this often while one is unfinished


def staff_only(view):
    """Logged-in staff only: others logged in get 403 (viewers read, staff change)."""

    @login_required
    @wraps(view)
    def guarded(request, *args, **kwargs):
        if not control.may_change(request.user):
            raise PermissionDenied("only staff may change incidents and alert rules")
        return view(request, *args, **kwargs)

    return guarded


@require_GET
@login_required
def incident_list(request):
    """Open incidents first (newest first), then resolved ones."""
    incidents = (
        Incident.objects.annotate(
            resolved_last=Case(
                When(state=c.OPEN, then=Value(0)), default=Value(1), output_field=IntegerField()
            )
        )
        .order_by("resolved_last", "-opened_at", "-id")
        .select_related("acknowledged_by")
        .prefetch_related("alerts")
    )
    page = Paginator(incidents, INCIDENTS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "open_count": Incident.objects.filter(state=c.OPEN).count(),
        "now": timezone.now(),
    }
    return render(request, "incidents/list.html", context)


def _reports(incident: Incident):
    files = Prefetch("files", queryset=ReportFile.objects.defer("content"))  # sizes, not megabytes
    return incident.reports.select_related("requested_by").prefetch_related(files)


def _report_rows(incident: Incident) -> list[dict]:
    rows = []
    for report in _reports(incident):
        formats = sorted(f.format for f in report.files.all())
        rows.append(
            {
                "report": report,
                "downloads": [
                    {
                        "format": fmt,
                        "url": reverse("api-report-download", args=[report.pk, fmt]),
                        "size": next(f.size for f in report.files.all() if f.format == fmt),
                    }
                    for fmt in formats
                ],
            }
        )
    return rows


@require_GET
@login_required
def incident_detail(request, incident_id: int):
    incident = get_object_or_404(Incident.objects.select_related("acknowledged_by"), pk=incident_id)
    now = timezone.now()
    since, until = contents.report_window(incident, now)
    edges, roles = contents.affected(incident, since, until)
    summaries = {row["name"]: row for row in queries.service_summaries(since, until)}
    report_rows = _report_rows(incident)
    context = {
        "incident": incident,
        "alerts": incident.alerts.all(),
        "events": incident.events.select_related("user"),
        "webhooks": incident.webhooks.all(),
        "affected": [
            {"name": name, "role": role, "summary": summaries.get(name)} for name, role in roles.items()
        ],
        "edges": edges,
        "window_since": since,
        "window_until": until,
        "window_query": {"since": since.isoformat(), "until": until.isoformat()},
        "report_rows": report_rows,
        "may_change": control.may_change(request.user),
        "comment_form": CommentForm(),
        "grace_s": settings.INCIDENT_RESOLVE_GRACE_S,
        "retention_days": settings.REPORT_RETENTION_DAYS,
        "now": now,
        "live_config": {
            "socket_path": c.INCIDENTS_SOCKET_PATH,
            "rows_url": reverse("incidents:report-rows", args=[incident.pk]),
            "refresh_ms": REPORT_REFRESH_MS,
            "unfinished": any(not row["report"].is_finished for row in report_rows),
        },
    }
    return render(request, "incidents/detail.html", context)


@require_GET
@login_required
def report_rows(request, incident_id: int):
    """The report table's rows alone, fetched by incident.js when a report moves on."""
    incident = get_object_or_404(Incident, pk=incident_id)
    response = render(request, "incidents/_report_rows.html", {"report_rows": _report_rows(incident)})
    unfinished = incident.reports.filter(status__in=(c.PENDING, c.RUNNING)).exists()
    response["X-Reports-Unfinished"] = "1" if unfinished else "0"
    return response


def _answer(request, incident: Incident, code: int, detail: str, anchor: str = "", **extra):
    """JSON for incident.js; for a plain form post, the incident page (at `anchor`) with the
    message on top."""
    if request.META.get(FETCH_HEADER) == "fetch":
        return JsonResponse({"detail": detail} | extra, status=code)
    (messages.success if code < 400 else messages.error)(request, detail)
    return redirect(incident.get_absolute_url() + anchor)


@require_POST
@staff_only
def acknowledge(request, incident_id: int):
    incident = get_object_or_404(Incident, pk=incident_id)
    if lifecycle.acknowledge(incident, request.user):
        return _answer(request, incident, 200, f"Incident #{incident.pk} acknowledged.")
    who = incident.acknowledged_by.get_username() if incident.acknowledged_by else "someone"
    return _answer(request, incident, 200, f"Incident #{incident.pk} was acknowledged already, by {who}.")


@require_POST
@staff_only
def comment(request, incident_id: int):
    incident = get_object_or_404(Incident, pk=incident_id)
    form = CommentForm(request.POST)
    if not form.is_valid():
        return _answer(request, incident, 400, "A comment needs some text (at most 4000 characters).")
    lifecycle.comment(incident, request.user, form.cleaned_data["text"])
    return _answer(request, incident, 200, "Comment added.", anchor="#timeline")


@require_POST
@staff_only
def generate_report(request, incident_id: int):
    incident = get_object_or_404(Incident, pk=incident_id)
    report, created = request_report(incident, request.user)
    detail = f"Report {report.pk} queued." if created else f"Report {report.pk} is already being made."
    return _answer(request, incident, 202, detail, report=report.pk, status=report.status, anchor="#reports")


# --- alert rules ---------------------------------------------------------------------------------


@require_GET
@login_required
def rule_list(request):
    rules = AlertRule.objects.select_related("service", "host")
    context = {
        "rules": rules,
        "may_change": control.may_change(request.user),
        "tcp_help": c.TCP_RETRANSMITS_HELP,
    }
    return render(request, "incidents/rules.html", context)


@require_http_methods(["GET", "POST"])
@staff_only
def rule_edit(request, rule_id: int | None = None):
    rule = get_object_or_404(AlertRule, pk=rule_id) if rule_id is not None else None
    form = AlertRuleForm(request.POST or None, instance=rule)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        messages.success(
            request,
            f"Rule {saved.name!r} saved; it is evaluated within {settings.ALERT_EVALUATION_INTERVAL_S} s.",
        )
        return redirect("incidents:rules")
    context = {"form": form, "rule": rule, "tcp_help": c.TCP_RETRANSMITS_HELP}
    return render(request, "incidents/rule_form.html", context, status=400 if form.errors else 200)


@require_POST
@staff_only
def rule_delete(request, rule_id: int):
    rule = get_object_or_404(AlertRule, pk=rule_id)
    rule.delete()
    messages.success(request, f"Rule {rule.name!r} deleted.")
    return redirect("incidents:rules")
