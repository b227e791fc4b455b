from datetime import UTC, datetime, timedelta

import pytest

from obsweb.telemetry import histogram, series

T0 = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def row(minute, count, errors=0, latency_ms=10.0):
    return (minute, count, errors, histogram.add({}, latency_ms * 1e6, count))


def test_it_lists_every_minute_that_overlaps_the_window():
    minutes = series.minutes_between(T0 + timedelta(seconds=30), T0 + 3 * MINUTE)
    assert minutes == [T0, T0 + MINUTE, T0 + 2 * MINUTE]


def test_it_lists_no_minute_for_an_empty_window():
    assert series.minutes_between(T0, T0) == []


def test_it_sums_the_rows_of_each_minute_and_fills_quiet_minutes():
    rows = [
        row(T0, 90, latency_ms=10.0),
        row(T0, 10, errors=10, latency_ms=500.0),  # the same minute, another status code
        row(T0 + 2 * MINUTE, 5, latency_ms=2.0),
    ]

    got = series.per_minute(rows, T0, T0 + 3 * MINUTE)

    assert got["minutes"] == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    assert got["requests"] == [100, 0, 5]
    assert got["errors"] == [10, 0, 0]
    assert got["p50_ms"][0] == pytest.approx(10.0, rel=0.02)
    assert got["p99_ms"][0] == pytest.approx(500.0, rel=0.02)
    assert got["p50_ms"][1] is None and got["p99_ms"][1] is None
    assert got["p90_ms"][2] == pytest.approx(2.0, rel=0.02)


def test_it_merges_histograms_instead_of_averaging_percentiles():
    rows = [row(T0, 99, latency_ms=1.0), row(T0, 1, latency_ms=1000.0)]
    assert series.per_minute(rows, T0, T0 + MINUTE)["p99_ms"] == [pytest.approx(1.0, rel=0.02)]


def test_it_ignores_rows_outside_the_window():
    got = series.per_minute([row(T0 - MINUTE, 7), row(T0 + MINUTE, 3)], T0, T0 + MINUTE)
    assert got["requests"] == [0]


def test_it_accepts_minutes_in_another_time_zone():
    elsewhere = T0.astimezone(datetime.fromisoformat("2026-01-01T00:00:00+02:00").tzinfo)
    assert series.per_minute([row(elsewhere, 4)], T0, T0 + MINUTE)["requests"] == [4]


def test_it_totals_the_whole_window():
    rows = [row(T0, 90, latency_ms=10.0), row(T0 + MINUTE, 10, errors=10, latency_ms=500.0)]
    got = series.totals(rows)
    assert (got["requests"], got["errors"]) == (100, 10)
    assert got["p50_ms"] == pytest.approx(10.0, rel=0.02)
    assert got["p99_ms"] == pytest.approx(500.0, rel=0.02)


def test_it_totals_nothing_as_zero_and_none():
    assert series.totals([]) == {"requests": 0, "errors": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None}
