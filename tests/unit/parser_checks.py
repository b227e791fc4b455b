"""Checks every protocol parser's tests share: the ParseResult contract of probes/protocols."""

from probes.protocols import INVALID


def assert_invalid(result) -> None:
    """INVALID uses no bytes, carries no message and says why."""
    assert (result.status, result.consumed, result.message) == (INVALID, 0, None)
    assert result.error
