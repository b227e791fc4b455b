"""Checks every protocol parser's tests share: the ParseResult contract of probes/protocols."""

from probes.protocols import INVALID, NEED_MORE, ParseResult


def assert_invalid(result) -> None:
    """INVALID uses no bytes, carries no message and says why."""
    assert (result.status, result.consumed, result.message) == (INVALID, 0, None)
    assert result.error


def assert_every_prefix_needs_more(parse, frame: bytes, *args, **kwargs) -> None:
    """Every strict prefix of a whole frame asks for more bytes and uses none."""
    for end in range(len(frame)):
        result = parse(frame[:end], *args, **kwargs)
        assert result == ParseResult(NEED_MORE), f"{len(frame)}-byte frame cut at {end}"
