"""Pure protocol parsers: bytes in, frames out, no I/O and no exceptions.

Every protocol module answers the same question about the bytes it is given, with the result
type below: here is one whole frame (OK, and how many bytes it used), the frame is not complete
yet (NEED_MORE, nothing used), or these bytes can never become a frame (INVALID, and why).
A caller reassembling a stream keeps its buffer on NEED_MORE and drops the connection's parse
state on INVALID; a parser raising instead would take the whole probe worker down on one odd peer.

Besides the strict frame parsers, each database/queue protocol module offers

    summarize(request: bytes, response: bytes) -> dict | None

for what the kernel captured of one exchange: the first bytes the client sent (up to
MAX_REQUEST_CAPTURE, possibly cut, possibly several pipelined messages) and the first bytes the
server answered (up to MAX_RESPONSE_CAPTURE, same caveats). It returns the record attributes the
exchange contributes (probes/schema.py keys: DB_SYSTEM, DB_OPERATION, DB_COLLECTION,
DB_QUERY_TEXT with literals replaced by "?", DB_QUERY_SUMMARY, MESSAGING_DESTINATION, ERROR,
ERROR_TYPE, DB_RESPONSE_STATUS, REQUEST_COUNT), or None when the bytes are not this protocol's.
Never raises, never returns a literal value from a query.
"""

from dataclasses import dataclass

OK, NEED_MORE, INVALID = "ok", "need_more", "invalid"
MAX_REQUEST_CAPTURE = 1024  # bytes of a request the kernel captures (bpf/socket_trace.c MAX_REQ)
MAX_RESPONSE_CAPTURE = 256  # bytes of a response (MAX_RESP)


@dataclass(frozen=True, slots=True)
class ParseResult:
    status: str  # OK | NEED_MORE | INVALID
    consumed: int = 0  # bytes of the input this frame used (0 unless OK)
    message: object = None  # the parsed frame when OK
    error: str | None = None  # why, when INVALID


NEED_MORE_RESULT = ParseResult(NEED_MORE)


def invalid(error: str) -> ParseResult:
    return ParseResult(INVALID, error=error)


def as_bytes(buf) -> bytes | None:
    """The input as bytes, or None for anything that is not bytes-like (parsers then say INVALID)."""
    if isinstance(buf, bytes):
        return buf
    if isinstance(buf, bytearray | memoryview):
        return bytes(buf)
    return None
