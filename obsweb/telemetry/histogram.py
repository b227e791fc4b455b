"""A mergeable latency sketch with 2 % relative accuracy (the DDSketch construction).

A histogram is a sparse dict {bucket index as str: count}, so it round-trips through JSON
unchanged and two histograms merge by adding counts: the percentiles of any window come
exactly from the stored buckets, never from averaging percentiles.

Bucket i holds the values in (GAMMA**(i-1), GAMMA**i]. Its representative value
2 * GAMMA**i / (GAMMA + 1) is within RELATIVE_ACCURACY of every value in the bucket.
Durations below 1 ns (0, in practice: coarse clocks) go to the zero bucket, whose
representative is 0. At 2 %, one to 1e12 ns (17 minutes) spans about 700 buckets.
"""

import math

RELATIVE_ACCURACY = 0.02
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
ZERO_BUCKET = -1  # every value >= 1 ns has an index >= 0


def bucket_of(value_ns: float) -> int:
    if value_ns < 0:
        raise ValueError(f"a duration cannot be negative: {value_ns}")
    if value_ns < 1:
        return ZERO_BUCKET
    return math.ceil(math.log(value_ns) / _LOG_GAMMA)


def representative(bucket: int) -> float:
    """The value reported for everything in `bucket`: within RELATIVE_ACCURACY of each of them."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return 2 * GAMMA**bucket / (GAMMA + 1)


def add(hist: dict, value_ns: float, n: int = 1) -> dict:
    key = str(bucket_of(value_ns))
    hist[key] = hist.get(key, 0) + n
    return hist


def merge(into: dict, other: dict) -> dict:
    """Add `other`'s counts to `into` (in place) and return `into`."""
    for key, n in other.items():
        into[key] = into.get(key, 0) + n
    return into


def count(hist: dict) -> int:
    return sum(hist.values())


def quantile(hist: dict, q: float) -> float | None:
    """The q-quantile (0 <= q <= 1) in ns, or None for an empty histogram.

    Uses the lower nearest rank, the value at 0-based position floor(q * (n - 1)) of the
    sorted values, and answers that value's bucket representative, so the result is within
    2 % of the exact quantile.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, not {q}")
    total = count(hist)
    if total == 0:
        return None
    rank = math.floor(q * (total - 1))
    seen = 0
    for bucket in sorted(int(k) for k in hist):
        seen += hist[str(bucket)]
        if seen > rank:
            return representative(bucket)
    raise AssertionError("unreachable: rank < total")
