"""The resources page (/resources/): CPU, memory, network and disk per service and per host, CPU of
the busiest services over time, and queue traffic (produce and consume rates per topic)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from obsweb.dashboard.constants import CHART_MINUTE_FORMAT
from obsweb.dashboard.views import _window, _window_context
from obsweb.telemetry import queries, usage


@require_GET
@login_required
def resources_page(request):
    try:
        start, end, live = _window(request)
    except queries.WindowError as exc:
        return render(request, "dashboard/resources.html", {"window_error": str(exc)}, status=400)
    summaries = usage.resource_summaries(start, end)
    top = [row["name"] for row in summaries["services"][: usage.TOP_CPU_SERVICES]]
    context = _window_context(start, end, live) | summaries | {"queues": usage.queue_rates(start, end)}
    if top:
        context["cpu_chart"] = cpu_chart(usage.cpu_by_service(top, start, end), top)
    return render(request, "dashboard/resources.html", context)


def cpu_chart(lines: dict, order: list[str]) -> dict:
    """For static/obsweb/resources.js: minutes as plotly reads them (UTC), one line per service,
    busiest first. Names are captured text: the script escapes them."""
    return {
        "minutes": [m.strftime(CHART_MINUTE_FORMAT) for m in lines["minutes"]],
        "lines": [{"name": name, "cpu_percent": lines["services"][name]} for name in order],
    }
