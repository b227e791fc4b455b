"""What makes a stream record usable: reading its fields, checked and coerced to what the rows store.

Records arrive over msgpack from agents on many hosts: any field may be missing, of the wrong
type, too long for its column or out of range. The readers here return the value or raise
`SkippedRecord` with the reason, so one bad record is counted and skipped, never failing its batch.
"""

import math
from datetime import UTC, datetime, timedelta

from probes import schema

NS_PER_S = 10**9
NS_PER_MINUTE = 60 * NS_PER_S
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A ts outside 2000..2100 is a corrupt record, and would overflow datetime well before 2**63.
TS_MIN = 946_684_800 * NS_PER_S
TS_MAX = 4_102_444_800 * NS_PER_S
# Operations one request record may stand for: a 1 KiB capture holds a few hundred pipelined
# commands at most, so more is a corrupt record, whose count would overflow the rollup totals.
MAX_REQUEST_COUNT = 1_000_000
# Any one string of a record as stored (its JSON attributes): the worker sends at most 1 KiB.
TEXT_MAX_CHARS = 4096


class SkippedRecord(Exception):
    """A record the ingester cannot use; the message is the reason, logged once per minute."""


def _req_int(record: dict, key: str) -> int:
    value = record.get(key)
    if type(value) is not int:  # not isinstance: a bool is an int
        if value is None:
            raise SkippedRecord(f"missing {key}")
        raise SkippedRecord(f"{key} is {type(value).__name__}, not int")
    return value


def _opt_int(record: dict, key: str) -> int | None:
    value = record.get(key)
    if value is None or type(value) is int:
        return value
    raise SkippedRecord(f"{key} is {type(value).__name__}, not int")


def _req_str(record: dict, key: str, max_length: int = 255) -> str:
    value = record.get(key)
    if type(value) is not str or not value:
        if value is None or value == "":
            raise SkippedRecord(f"missing {key}")
        raise SkippedRecord(f"{key} is {type(value).__name__}, not str")
    return _clean(value, max_length)


def _opt_str(record: dict, key: str, max_length: int = 255) -> str:
    """The value, cut to the column's length (a longer one would fail the batch on PostgreSQL), or ""."""
    value = record.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise SkippedRecord(f"{key} is {type(value).__name__}, not str")
    return _clean(value, max_length)


def _clean(text: str, max_length: int) -> str:
    """`text` cut to `max_length` characters, a NUL replaced by U+FFFD: PostgreSQL refuses NUL in
    text and JSON, failing the whole batch. The worker never sends one; other senders might."""
    return text[:max_length].replace("\x00", "\ufffd")


def _ts(record: dict) -> int:
    ts = _req_int(record, schema.TS)
    if not TS_MIN <= ts < TS_MAX:
        raise SkippedRecord(f"{schema.TS} {ts} is not a time between 2000 and 2100")
    return ts


def _amount(record: dict, key: str) -> int:
    """A duration, byte or event count: required, and never negative (it would shrink totals)."""
    amount = _req_int(record, key)
    if amount < 0:
        raise SkippedRecord(f"{key} is negative")
    return amount


def _opt_amount(record: dict, key: str) -> int:
    """Like _amount, 0 when absent."""
    return _amount(record, key) if record.get(key) is not None else 0


def _request_count(record: dict) -> int:
    """The operations a request record stands for (pipelined ones): 1 when absent, else 1..MAX."""
    count = record.get(schema.REQUEST_COUNT)
    if count is None:
        return 1
    if type(count) is not int:
        raise SkippedRecord(f"{schema.REQUEST_COUNT} is {type(count).__name__}, not int")
    if count < 1:
        raise SkippedRecord(f"{schema.REQUEST_COUNT} is not positive")
    if count > MAX_REQUEST_COUNT:
        raise SkippedRecord(f"{schema.REQUEST_COUNT} is over {MAX_REQUEST_COUNT}")
    return count


def to_datetime(ts_ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=ts_ns // 1000)


_PLAIN = (str, int, float, bool, type(None))


def _jsonable(value):
    """Records are redacted on the host, but msgpack may still carry raw bytes, bytes keys, NaN,
    extension types, NUL or megabytes of text: store them as JSON every database accepts, whatever
    a sender put there, each string cut to TEXT_MAX_CHARS."""
    if isinstance(value, dict):
        if all(type(k) is str and _stored_as_is(k) and _stored_as_is(v) for k, v in value.items()):
            return value  # the common case, checked without copying
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, str):
        return _clean(value, TEXT_MAX_CHARS)
    if isinstance(value, bytes):
        return _clean(value.decode("utf-8", errors="replace"), TEXT_MAX_CHARS)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if type(value) in _PLAIN:
        return value
    return _clean(str(value), TEXT_MAX_CHARS)


def _stored_as_is(value) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= TEXT_MAX_CHARS and "\x00" not in value
    if kind is float:
        return math.isfinite(value)
    return kind in _PLAIN


def _key(key) -> str:
    text = key.decode("utf-8", errors="replace") if isinstance(key, bytes) else str(key)
    return _clean(text, TEXT_MAX_CHARS)


def _error(record: dict, status: int) -> bool:
    error = record.get(schema.ERROR)
    if error is None:
        return schema.is_error_status(status)
    if type(error) is not bool:
        raise SkippedRecord(f"{schema.ERROR} is {type(error).__name__}, not bool")
    return error


def _text(value, max_length: int) -> str:
    return _clean(value, max_length) if isinstance(value, str) else ""
