"""The overview's services table: one row per service with a sparkline of its recent traffic,
the same for the server-rendered page and the live broadcast."""

from datetime import datetime

from obsweb.dashboard import formats
from obsweb.telemetry import queries

SPARKLINE_MINUTES = 30  # the sparkline's span, whatever the window: trends at a glance


def service_rows(since: datetime, until: datetime) -> list[dict]:
    rows = queries.service_summaries(since, until)
    lines = queries.request_sparklines(until, SPARKLINE_MINUTES)
    for row in rows:
        line = lines.get(row["name"], [0] * SPARKLINE_MINUTES)
        row["sparkline"] = formats.sparkline_points(line)
        row["sparkline_peak"] = max(line)
    return rows
