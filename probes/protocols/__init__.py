"""Pure protocol parsers: bytes in, frames out, no I/O and no exceptions.

Every protocol module answers the same question about the bytes it is given, with the result
type below: here is one whole frame (OK, and how many bytes it used), the frame is not complete
yet (NEED_MORE, nothing used), or these bytes can never become a frame (INVALID, and why).
A caller reassembling a stream keeps its buffer on NEED_MORE and drops the connection's parse
state on INVALID; a parser raising instead would take the whole probe worker down on one odd peer.
"""

from dataclasses import dataclass

OK, NEED_MORE, INVALID = "ok", "need_more", "invalid"


@dataclass(frozen=True, slots=True)
class ParseResult:
    status: str  # OK | NEED_MORE | INVALID
    consumed: int = 0  # bytes of the input this frame used (0 unless OK)
    message: object = None  # the parsed frame when OK
    error: str | None = None  # why, when INVALID


NEED_MORE_RESULT = ParseResult(NEED_MORE)


def invalid(error: str) -> ParseResult:
    return ParseResult(INVALID, error=error)
