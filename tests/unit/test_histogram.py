import json
import math
import random

import pytest

from obsweb.telemetry import histogram

QUANTILES = (0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1)
# Float rounding at a bucket's upper edge can land a value in the next bucket: exactly 2 %, plus ulps.
BOUND = histogram.RELATIVE_ACCURACY + 1e-9


def exact_quantile(values: list[float], q: float) -> float:
    """The lower nearest rank, the same definition the sketch answers."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def sketch_of(values) -> dict:
    hist = {}
    for value in values:
        histogram.add(hist, value)
    return hist


def assert_within_bound(hist: dict, values: list[float]) -> None:
    for q in QUANTILES:
        exact = exact_quantile(values, q)
        estimate = histogram.quantile(hist, q)
        if exact == 0:
            assert estimate == 0
        else:
            assert abs(estimate - exact) / exact <= BOUND, (q, exact, estimate)


@pytest.mark.parametrize("seed", range(5))
def test_it_stays_within_two_percent_on_lognormal_latencies(seed):
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(15, 2)) for _ in range(20_000)]  # ~3 ms median, long tail
    assert_within_bound(sketch_of(values), values)


def test_it_stays_within_two_percent_across_nine_decades():
    rng = random.Random(42)
    values = [10 ** rng.uniform(0, 9) for _ in range(10_000)]
    assert_within_bound(sketch_of(values), values)


def test_it_is_exact_within_two_percent_at_bucket_edges():
    values = [histogram.GAMMA**i for i in range(0, 1200, 7)]
    assert_within_bound(sketch_of(values), values)


def test_it_keeps_zero_durations_in_their_own_bucket():
    hist = sketch_of([0, 0, 0, 5_000])
    assert hist[str(histogram.ZERO_BUCKET)] == 3
    assert histogram.quantile(hist, 0.5) == 0
    assert histogram.quantile(hist, 1) == pytest.approx(5_000, rel=histogram.RELATIVE_ACCURACY)


def test_it_puts_one_nanosecond_apart_from_zero():
    assert histogram.bucket_of(0) == histogram.ZERO_BUCKET
    assert histogram.bucket_of(1) == 0
    assert histogram.bucket_of(2) > 0


def test_it_refuses_negative_durations():
    with pytest.raises(ValueError, match="negative"):
        histogram.add({}, -1)


def test_merging_equals_adding_everything_to_one():
    rng = random.Random(7)
    parts = [[rng.randint(0, 10**9) for _ in range(rng.randint(0, 500))] for _ in range(8)]
    merged = {}
    for part in parts:
        histogram.merge(merged, sketch_of(part))
    everything = [value for part in parts for value in part]
    assert merged == sketch_of(everything)
    assert histogram.count(merged) == len(everything)
    assert_within_bound(merged, everything)


def test_merging_leaves_the_other_histogram_alone():
    other = sketch_of([1_000, 2_000])
    snapshot = dict(other)
    histogram.merge(sketch_of([3_000]), other)
    assert other == snapshot


def test_it_survives_a_json_round_trip():
    hist = sketch_of([0, 1, 10, 1_000_000])
    assert json.loads(json.dumps(hist)) == hist


def test_an_empty_histogram_has_no_quantiles_and_counts_zero():
    assert histogram.count({}) == 0
    assert histogram.quantile({}, 0.99) is None
    assert histogram.merge({}, {}) == {}


def test_add_counts_n_at_once():
    assert histogram.add({}, 1_000, n=5) == histogram.add(histogram.add({}, 1_000, n=2), 1_000, n=3)


def test_it_refuses_a_quantile_outside_zero_to_one():
    with pytest.raises(ValueError):
        histogram.quantile({"0": 1}, 1.5)
