"""The hosts page (DESIGN.md: Dashboard, /hosts/): every host's status and probes, desired vs actual,
with toggles, CPU budgets and bulk actions for staff; its audit log and the redaction policy.

Changes go through obsweb.fleet.control. Each form posts plainly and works without JavaScript
(a redirect back with a message); static/obsweb/hosts.js posts the same forms with fetch and gets
JSON instead ({"detail": ...} with 400, 403, 404 or 503 when something went wrong), then fetches
the rows again.
"""

import csv
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from obsweb.dashboard import hosts
from obsweb.dashboard.constants import HOSTS_REFRESH_MS, HOSTS_SOCKET_PATH
from obsweb.dashboard.forms import RedactionPolicyForm
from obsweb.fleet import control
from obsweb.fleet.models import AuditEntry, Host, RedactionPolicy
from probes import schema

AUDIT_PAGE_ROWS = 100
FETCH_HEADER = "HTTP_X_REQUESTED_WITH"  # hosts.js sends X-Requested-With: fetch
ENABLED = {"1": True, "0": False}
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def staff_only(view):
    """Logged-in staff only: others logged in get 403 (viewers see, staff change)."""

    @login_required
    @wraps(view)
    def guarded(request, *args, **kwargs):
        if not control.may_change(request.user):
            raise PermissionDenied("only staff may change probes, budgets and the redaction policy")
        return view(request, *args, **kwargs)

    return guarded


@require_GET
@login_required
def hosts_page(request):
    context = {
        "rows": hosts.host_rows(),
        "probes": schema.PROBES,
        "may_change": control.may_change(request.user),
        "live_config": {
            "socket_path": HOSTS_SOCKET_PATH,
            "rows_url": reverse("dashboard:hosts-rows"),
            "refresh_ms": HOSTS_REFRESH_MS,
        },
    }
    return render(request, "dashboard/hosts.html", context)


@require_GET
@login_required
def hosts_rows(request):
    """The table's rows alone, fetched by hosts.js on every heartbeat tick and every 2 s."""
    context = {"rows": hosts.host_rows(), "may_change": control.may_change(request.user)}
    return render(request, "dashboard/_hosts_rows.html", context)


@require_POST
@staff_only
def set_probe(request):
    """One probe of one host on or off: host, probe, enabled ("1" or "0")."""
    host = Host.objects.filter(name=request.POST.get("host", "")).first()
    if host is None:
        return _answer(request, 404, f"no host named {request.POST.get('host', '')[:255]!r}")
    try:
        changes = {request.POST.get("probe", ""): _enabled(request)}
        entries = control.set_probes(host, changes, request.user, reason=_reason(request))
    except ValueError as exc:
        return _answer(request, 400, str(exc))
    except control.WorkerNotTold as exc:
        return _answer(request, 503, str(exc))
    probe, on = next(iter(changes.items()))
    done = f"{probe} {'on' if on else 'off'} on {host.name}"
    return _answer(request, 200, f"{done}." if entries else f"{done} already.")


@require_POST
@staff_only
def set_probe_everywhere(request):
    """Bulk action: one probe on or off on every host (probe, enabled)."""
    try:
        probe = request.POST.get("probe", "")
        on = _enabled(request)
        entries = control.set_probes_everywhere({probe: on}, request.user, reason=_reason(request))
    except ValueError as exc:
        return _answer(request, 400, str(exc))
    except control.WorkerNotTold as exc:
        return _answer(request, 503, str(exc))
    return _answer(request, 200, f"{probe} {'on' if on else 'off'} on all hosts ({len(entries)} changed).")


@require_POST
@staff_only
def set_budget(request):
    """A host's worker CPU budget in % of one core (host, cpu_budget_percent; empty for none)."""
    host = Host.objects.filter(name=request.POST.get("host", "")).first()
    if host is None:
        return _answer(request, 404, f"no host named {request.POST.get('host', '')[:255]!r}")
    text = request.POST.get(schema.CONTROL_CPU_BUDGET, "").strip()
    try:
        percent = _number(text) if text else None
        control.set_cpu_budget(host, percent, request.user, reason=_reason(request))
    except ValueError as exc:
        return _answer(request, 400, str(exc))
    except control.WorkerNotTold as exc:
        return _answer(request, 503, str(exc))
    budget = "no CPU budget" if percent is None else f"a CPU budget of {percent:g} % of a core"
    return _answer(request, 200, f"{host.name} has {budget}.")


def _enabled(request) -> bool:
    value = request.POST.get("enabled", "")
    if value not in ENABLED:
        raise ValueError(f"enabled: expected 1 (on) or 0 (off), not {value[:16]!r}")
    return ENABLED[value]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{schema.CONTROL_CPU_BUDGET}: {text[:32]!r} is not a number") from None


def _reason(request) -> str:
    return request.POST.get("reason", "").strip()[:500]


def _answer(request, status: int, detail: str):
    """JSON for hosts.js; for a plain form post, the hosts page again with the message on top."""
    if request.META.get(FETCH_HEADER) == "fetch":
        return JsonResponse({"detail": detail}, status=status)
    level = messages.SUCCESS if status == 200 else messages.ERROR
    messages.add_message(request, level, detail)
    return redirect("dashboard:hosts")


@require_GET
@staff_only
def audit_log(request):
    entries = AuditEntry.objects.select_related("host")
    page = Paginator(entries, AUDIT_PAGE_ROWS).get_page(request.GET.get("page"))
    return render(request, "dashboard/audit.html", {"page": page})


@require_GET
@staff_only
def audit_csv(request):
    """Every audit entry, newest first, as CSV; text that a spreadsheet would run is quoted."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="obsweb-audit.csv"'
    writer = csv.writer(response)
    writer.writerow(["at_utc", "actor", "host", "setting", "probe", "old", "new", "reason"])
    for entry in AuditEntry.objects.select_related("host").iterator(chunk_size=1000):
        host = entry.host.name if entry.host else ""
        cells = [entry.actor, host, entry.setting, entry.probe, entry.old, entry.new, entry.reason]
        writer.writerow([entry.at.isoformat(), *map(csv_safe, cells)])
    return response


def csv_safe(text: str) -> str:
    """`text` as a spreadsheet shows it rather than runs it: a leading = + - @ (or tab, CR) gets a
    single quote before it (OWASP: CSV injection)."""
    return "'" + text if text.startswith(CSV_FORMULA_STARTS) else text


@require_http_methods(["GET", "POST"])
@login_required
def redaction_policy(request):
    """Everyone logged in sees the policy; staff change it (pushed to every host at once)."""
    policy = RedactionPolicy.objects.filter(pk=1).first() or RedactionPolicy()
    may_change = control.may_change(request.user)
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("only staff may change the redaction policy")
        form = RedactionPolicyForm.of(policy, request.POST)
        if form.is_valid():
            try:
                control.set_redaction(request.user, **form.cleaned_data)
                messages.success(request, "Redaction policy saved and pushed to every host.")
            except control.WorkerNotTold as exc:
                messages.error(request, str(exc))
            return redirect("dashboard:redaction")
    else:
        form = RedactionPolicyForm.of(policy)
    if not may_change:
        for field in form.fields.values():
            field.disabled = True
    status = 400 if form.is_bound and form.errors else 200
    return render(
        request, "dashboard/redaction.html", {"form": form, "may_change": may_change}, status=status
    )
