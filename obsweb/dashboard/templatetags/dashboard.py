"""Number formats, the time picker, the host warnings, and the window nav links carry from page to page."""

from datetime import UTC, datetime
from urllib.parse import urlencode

from django import template

from obsweb.dashboard import formats, hosts
from obsweb.dashboard.constants import LIVE_WINDOW, WINDOW_CHOICES, WINDOW_CUSTOM
from obsweb.telemetry import queries

register = template.Library()

register.filter("rate", formats.rate)
register.filter("ms", formats.ms)
register.filter("percent", formats.percent)
register.filter("count", formats.count)
register.filter("per_second", formats.per_second)
register.filter("cpu", formats.cpu)
register.filter("size", formats.size)

# Error rates at or above the default alert rule (DESIGN.md: 5 %) read as bad.
BAD_ERROR_RATE = 0.05


@register.filter
def error_level(error_rate: float | None) -> str:
    """CSS class for an error-rate cell; static/obsweb/overview.js has the same rule."""
    if not error_rate:
        return ""
    return "bad" if error_rate >= BAD_ERROR_RATE else "warn"


def _window_params(context) -> dict:
    """The page's `since` and `until` from its query string, only those given."""
    request = context.get("request")
    params = request.GET if request else {}
    return {name: params[name] for name in ("since", "until") if params.get(name)}


@register.simple_tag(takes_context=True)
def window_query(context) -> str:
    """`?since=...&until=...` of the current page (empty when live), for links to the other pages."""
    params = _window_params(context)
    return "?" + urlencode(params) if params else ""


def _datetime_local(value: datetime | str | None) -> str:
    """A time as a datetime-local input shows it, in UTC (naive ISO times are UTC, as in the API);
    "" for anything that is no time."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return ""
    if value is None:
        return ""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


@register.inclusion_tag("dashboard/_time_picker.html", takes_context=True)
def time_picker(context) -> dict:
    """Presets for `?since=` alone; anything with `until` or an absolute `since` is a custom range,
    its from/to filled from the window the page shows (or, when the page could not parse it, from
    whichever of the two is a time), so a shared URL opens with the picker as it was left."""
    params = _window_params(context)
    since, until = params.get("since", ""), params.get("until", "")
    custom = bool(until) or (bool(since) and not since.startswith("-"))
    current = WINDOW_CUSTOM if custom else since
    choices = [
        {"value": value, "label": label, "selected": value == current} for value, label in WINDOW_CHOICES
    ]
    if not any(choice["selected"] for choice in choices):  # a relative since without a preset: -30m
        choices.insert(-1, {"value": since, "label": f"Since {since}", "selected": True})
    return {
        "choices": choices,
        "custom": custom,
        "custom_from": _datetime_local(context.get("window_start") or since),
        "custom_to": _datetime_local(context.get("window_end") or until),
    }


@register.inclusion_tag("dashboard/_fleet_warnings.html", takes_context=True)
def fleet_warnings(context) -> dict:
    """The host warnings every page shows, for the page's window; for the live window on a page
    without one (or with one it could not parse)."""
    fleet = context.get("fleet")
    if fleet is None:
        since, until, live = context.get("window_start"), context.get("window_end"), context.get("live", True)
        if since is None or until is None:
            (since, until), live = queries.parse_window(LIVE_WINDOW, None), True
        fleet = hosts.fleet_state(since, until, live=live)
    return {"warnings": fleet["warnings"]}
