"""The open-incidents banner every page shows, and the formats incident pages and reports share."""

from datetime import UTC, datetime

from django import template

from obsweb.incidents import constants as c
from obsweb.incidents import live

register = template.Library()


@register.filter
def iso_time(value) -> str:
    """An ISO time (as the report's JSON has it) or a datetime as `2026-03-01 14:02:11 UTC`."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return ""
    if not isinstance(value, datetime):
        return ""
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


@register.filter
def duration(seconds) -> str:
    """A duration to the second: `45 s`, `12 min 5 s`, `3 h 2 min`."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@register.inclusion_tag("incidents/_banner.html")
def incident_banner() -> dict:
    return live.banner() | {"socket_path": c.INCIDENTS_SOCKET_PATH}
