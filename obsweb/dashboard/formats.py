"""How numbers read on the dashboard; static/obsweb/overview.js mirrors these rules for live rows."""

from datetime import UTC

DASH = "\u2013"  # shown where there is no value (no timed requests in the window)


def rate(rps: float | None) -> str:
    """Requests per second, two decimals: `12.50`."""
    return DASH if rps is None else f"{rps:.2f}"


def ms(value: float | None) -> str:
    """Milliseconds with the precision that matters at that size: `0.08`, `12.5`, `340`."""
    if value is None:
        return DASH
    if value < 1:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def per_second(value: float | None) -> str:
    """A host's event rate: one decimal below 10, whole with separators above: `0.4`, `1,200`."""
    if value is None:
        return DASH
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"


def cpu(percent: float | None) -> str:
    """A CPU share in % of one core, one decimal: `3.2 %`."""
    return DASH if percent is None else f"{percent:.1f} %"


def percent(fraction: float | None) -> str:
    """An error rate (0..1) as a percentage with two decimals: `2.50`."""
    return DASH if fraction is None else f"{fraction * 100:.2f}"


def count(n: int | None) -> str:
    """An integer with thousands separators: `12,345`."""
    return DASH if n is None else f"{n:,}"


def size(n: int | None) -> str:
    """Bytes in binary units, three figures: `512 B`, `1.50 KiB`, `230 MiB`."""
    if n is None:
        return DASH
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)} B"
    return f"{value:.3g} {unit}"


def utc_time(when, now) -> str:
    """A moment in UTC, zone stated: `14:02:11 UTC` today (UTC), `2026-03-01 14:02 UTC` otherwise."""
    when, now = when.astimezone(UTC), now.astimezone(UTC)
    if when.date() == now.date():
        return f"{when:%H:%M:%S} UTC"
    return f"{when:%Y-%m-%d %H:%M} UTC"


def age(seconds: float) -> str:
    """A duration in whole units, coarser as it grows: `45 s`, `2 min`, `90 min`, `3 h`, `4 d`."""
    if seconds >= 2 * 86400:
        return f"{int(seconds // 86400)} d"
    if seconds >= 2 * 3600:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60:
        return f"{int(seconds // 60)} min"
    return f"{max(int(seconds), 0)} s"


SPARKLINE_WIDTH = 120  # the SVG viewBox the overview draws sparklines in
SPARKLINE_HEIGHT = 24


def sparkline_points(values: list[int]) -> str:
    """`points` of an SVG polyline drawing `values` left to right, the largest at the top and
    zero at the bottom (a flat line at the bottom when all are zero). Numbers only: safe to
    send to the browser and set as an attribute."""
    if not values:
        return ""
    top = max(values) or 1
    step = SPARKLINE_WIDTH / max(len(values) - 1, 1)
    usable = SPARKLINE_HEIGHT - 2  # a 1-unit margin keeps the stroke inside the box
    return " ".join(
        f"{round(i * step, 1):g},{round(1 + usable * (1 - v / top), 1):g}" for i, v in enumerate(values)
    )
