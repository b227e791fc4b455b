"""Number formats, the time picker, and the `?since=` that nav links carry from page to page."""

from urllib.parse import urlencode

from django import template

from obsweb.dashboard import formats
from obsweb.dashboard.constants import WINDOW_CHOICES

register = template.Library()

register.filter("rate", formats.rate)
register.filter("ms", formats.ms)
register.filter("percent", formats.percent)
register.filter("count", formats.count)

# Error rates at or above the default alert rule (DESIGN.md: 5 %) read as bad.
BAD_ERROR_RATE = 0.05


@register.filter
def error_level(error_rate: float | None) -> str:
    """CSS class for an error-rate cell; static/obsweb/overview.js has the same rule."""
    if not error_rate:
        return ""
    return "bad" if error_rate >= BAD_ERROR_RATE else "warn"


@register.simple_tag(takes_context=True)
def window_query(context) -> str:
    """`?since=...` of the current page (empty when live), for links to the other pages."""
    request = context.get("request")
    since = request.GET.get("since") if request else None
    return "?" + urlencode({"since": since}) if since else ""


@register.inclusion_tag("dashboard/_time_picker.html", takes_context=True)
def time_picker(context) -> dict:
    request = context.get("request")
    current = (request.GET.get("since") if request else "") or ""
    choices = [
        {"value": value, "label": label, "selected": value == current} for value, label in WINDOW_CHOICES
    ]
    if current and not any(choice["selected"] for choice in choices):
        choices.append({"value": current, "label": f"Since {current}", "selected": True})
    return {"choices": choices}
