"""One service's rollups as per-minute series for charts, and the window's totals.

Framework-free on purpose (twin test: tests/unit/test_series.py). Rows are
(minute, count, errors, histogram) as stored in Rollup, several per minute (one per endpoint
and status code); percentiles come from merging the minute's histograms, never from averaging.
"""

from datetime import UTC, datetime, timedelta

from obsweb.telemetry import histogram

MINUTE = timedelta(minutes=1)
PERCENTILES = (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99))


def quantile_ms(hist: dict, q: float) -> float | None:
    """The q-quantile of a histogram in ms (three decimals), None when it is empty."""
    value = histogram.quantile(hist, q)
    return None if value is None else round(value / 1e6, 3)


def minutes_between(since: datetime, until: datetime) -> list[datetime]:
    """Every rollup minute (UTC) that overlaps [since, until), oldest first."""
    minute = since.astimezone(UTC).replace(second=0, microsecond=0)
    minutes = []
    while minute < until:
        minutes.append(minute)
        minute += MINUTE
    return minutes


def per_minute(rows, since: datetime, until: datetime) -> dict:
    """{"minutes", "requests", "errors", "p50_ms", "p90_ms", "p99_ms"}, one entry per minute.

    Every minute of the window is present, so a chart shows quiet minutes as quiet: a minute
    without requests has 0 requests and None percentiles. Rows outside the window are ignored.
    """
    slots = {minute: [0, 0, {}] for minute in minutes_between(since, until)}
    for minute, count, errors, hist in rows:
        slot = slots.get(minute.astimezone(UTC))
        if slot is not None:
            slot[0] += count
            slot[1] += errors
            histogram.merge(slot[2], hist)
    series = {
        "minutes": list(slots),
        "requests": [slot[0] for slot in slots.values()],
        "errors": [slot[1] for slot in slots.values()],
    }
    for key, q in PERCENTILES:
        series[key] = [quantile_ms(slot[2], q) for slot in slots.values()]
    return series


def totals(rows) -> dict:
    """{"requests", "errors", "p50_ms", "p90_ms", "p99_ms"} over all rows."""
    requests = errors = 0
    merged: dict = {}
    for _minute, count, row_errors, hist in rows:
        requests += count
        errors += row_errors
        histogram.merge(merged, hist)
    return {"requests": requests, "errors": errors} | {key: quantile_ms(merged, q) for key, q in PERCENTILES}
