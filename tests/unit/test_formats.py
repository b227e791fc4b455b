from datetime import UTC, datetime, timedelta, timezone

import pytest

from obsweb.dashboard import formats

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "\u2013"), (0, "0.0"), (0.44, "0.4"), (9.94, "9.9"), (10, "10"), (1234.5, "1,234")],
)
def test_it_shows_event_rates_with_the_precision_that_matters(value, shown):
    assert formats.per_second(value) == shown


def test_it_shows_todays_times_with_seconds_and_the_zone():
    assert formats.utc_time(NOW - timedelta(seconds=75), NOW) == "11:58:45 UTC"


def test_it_shows_other_days_with_their_date_in_utc():
    paris = timezone(timedelta(hours=1))
    assert formats.utc_time(datetime(2026, 3, 1, 0, 30, tzinfo=paris), NOW) == "2026-02-28 23:30 UTC"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-1, "0 s"),
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min"),
        (130, "2 min"),
        (5400, "90 min"),
        (7200, "2 h"),
        (47 * 3600, "47 h"),
        (2 * 86400, "2 d"),
    ],
)
def test_it_shows_durations_in_whole_units_coarser_as_they_grow(seconds, shown):
    assert formats.age(seconds) == shown


def test_a_sparkline_puts_the_peak_at_the_top_and_zero_at_the_bottom():
    points = [tuple(map(float, p.split(","))) for p in formats.sparkline_points([0, 5, 10]).split()]
    assert points == [(0, 23), (60, 12), (120, 1)]


def test_a_sparkline_without_traffic_is_a_flat_line_at_the_bottom():
    assert formats.sparkline_points([0, 0, 0]) == "0,23 60,23 120,23"
    assert formats.sparkline_points([7]) == "0,1"
    assert formats.sparkline_points([]) == ""
