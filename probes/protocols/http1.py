"""HTTP/1.0 and HTTP/1.1 (RFC 9112): framing of whole messages, and reading of captured heads.

Two kinds of reader for two kinds of input:
- parse_request / parse_response frame ONE complete message out of a reassembled byte stream,
  strictly: every prefix of a valid message is NEED_MORE, anything a conforming peer would not
  send is INVALID. Stream stitching builds on these.
- read_request_head / read_response_head are lenient readers for what the kernel hands over:
  the first bytes of one read or write (CAPTURE_REQUEST_BYTES / CAPTURE_RESPONSE_BYTES), usually
  cut in the middle of the head. They take what is complete and say when the head was cut.

Both return heads that hold only the header values a redaction policy keeps (probes.redact.Policy,
by default KEPT_HEADERS), so a head can go into a record as it is.
"""

import re
from dataclasses import dataclass

from probes.protocols import NEED_MORE, NEED_MORE_RESULT, OK, ParseResult, as_bytes, invalid
from probes.redact import DEFAULT_HEADERS_KEPT, DEFAULT_POLICY, Policy, safe_text

# What the kernel captures of each message (MAX_REQ / MAX_RESP in bpf/socket_trace.c): enough for
# the start line and the usual first headers, small enough for the BPF stack and ring buffer.
CAPTURE_REQUEST_BYTES = 512
CAPTURE_RESPONSE_BYTES = 256

# The headers a head keeps unless a policy says otherwise (the allowlist is explained where it
# lives, in probes/redact.py).
KEPT_HEADERS = DEFAULT_HEADERS_KEPT

# Larger heads are abuse or not HTTP at all; servers refuse far smaller ones (nginx: 8 KiB lines,
# 32 KiB in total by default), so nothing real is lost.
MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE_BYTES = 1024  # size, extensions and CRLF of one chunk; more is an attack
MAX_CONTENT_LENGTH_DIGITS = 18  # 1 EB: anything longer is not a length
MAX_VALUE_CHARS = 512  # header values and reasons, as stored
METHOD_MAX_CHARS = 16

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_FIELD_CHARS = rb"\t\x20-\x7e\x80-\xff"  # HTAB, SP, VCHAR, obs-text: no CR, LF or NUL
_METHOD = re.compile(rb"[A-Z]{1,%d}" % METHOD_MAX_CHARS)
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
_STATUS = re.compile(rb"[1-5][0-9][0-9]")
_REASON = re.compile(rb"[" + _FIELD_CHARS + rb"]*")
_HEADER_LINE = re.compile(rb"([" + _TCHAR + rb"]+):([" + _FIELD_CHARS + rb"]*)")
# The capture readers take any value and clean it later (safe_text): one control character in a
# User-Agent must not cost the request its other headers.
_CAPTURED_HEADER_LINE = re.compile(rb"([" + _TCHAR + rb"]+):(.*)", re.DOTALL)
_HEADER_LINE_START = re.compile(rb"[" + _TCHAR + rb"]*|[" + _TCHAR + rb"]+:[" + _FIELD_CHARS + rb"]*")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[" + _FIELD_CHARS + rb"]*)?")
_CHUNK_LINE_START = re.compile(rb"(?:[0-9A-Fa-f]{1,16}[ \t]*(?:;[" + _FIELD_CHARS + rb"]*)?\r?)?")
_LOOKS_LIKE_REQUEST = re.compile(rb"[A-Z]{1,%d} (?:[/*]|https?://)|CONNECT " % METHOD_MAX_CHARS)


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str  # as sent: redact it (probes.redact) before it leaves the host
    version: str
    headers: dict[str, str]  # lower-case names the policy keeps, first occurrence only
    header_bytes: int  # the whole head with its final CRLF; when truncated, the bytes read
    truncated: bool  # the capture ended before the head did


@dataclass(frozen=True, slots=True)
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: dict[str, str]
    header_bytes: int
    truncated: bool


def looks_like_http(prefix: bytes) -> bool:
    """A quick test that these first bytes start an HTTP/1.x request or response.

    Stricter than "a word and a space" so that text protocols (Redis inline commands, SMTP) and
    the HTTP/2 preface (`PRI * HTTP/2.0`) do not pass; the readers below still have the last word.
    """
    if not isinstance(prefix, bytes | bytearray):
        return False
    if prefix.startswith(b"HTTP/1."):
        return True
    return bool(_LOOKS_LIKE_REQUEST.match(prefix)) and not prefix.startswith(b"PRI * HTTP/2")


def parse_request(buf: bytes, policy: Policy = DEFAULT_POLICY) -> ParseResult:
    """Frame one request at the start of `buf`; message = (RequestHead, body length).

    The body is framed by chunked transfer coding or Content-Length, else empty. The body
    length is that of the payload (the chunk data, for chunked); `consumed` counts wire bytes.
    """
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    head = _split_head(buf, _request_line, _request_line_start)
    if isinstance(head, ParseResult):
        return head
    (method, target, version), fields, head_end = head
    framing = _framing(fields, is_request=True)
    if isinstance(framing, ParseResult):
        return framing
    request = RequestHead(
        method.decode("ascii"),
        target.decode("ascii"),
        version.decode("ascii"),
        _kept(fields, policy),
        head_end,
        False,
    )
    return _frame_body(buf, head_end, framing, request)


def parse_response(
    buf: bytes, request_method: str | None = None, policy: Policy = DEFAULT_POLICY
) -> ParseResult:
    """Frame one response at the start of `buf`; message = (ResponseHead, body length).

    `request_method` is the method of the request it answers: a response to HEAD has no body
    whatever its Content-Length says. Nor do 1xx, 204 and 304 responses, or a 2xx to CONNECT.
    A response with neither Content-Length nor chunked coding ends when the connection closes,
    which a buffer cannot show: it stays NEED_MORE, and the caller ends it at the close.
    """
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    head = _split_head(buf, _status_line, _status_line_start)
    if isinstance(head, ParseResult):
        return head
    (version, status, reason), fields, head_end = head
    method = request_method.upper() if isinstance(request_method, str) else None
    if method == "HEAD" or status < 200 or status in (204, 304) or (method == "CONNECT" and status < 300):
        framing = 0
    else:
        framing = _framing(fields, is_request=False)
        if isinstance(framing, ParseResult):
            return framing
    response = ResponseHead(
        version.decode("ascii"), status, _text(reason), _kept(fields, policy), head_end, False
    )
    return _frame_body(buf, head_end, framing, response)


def read_request_head(prefix: bytes, policy: Policy = DEFAULT_POLICY) -> RequestHead | None:
    """The request head in a captured prefix, or None if it does not start a complete request line."""
    lines = _captured_lines(prefix, policy)
    if lines is None:
        return None
    start, fields, header_bytes, truncated = lines
    parts = start.split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not parts[1] or parts[2] not in _VERSIONS:
        return None
    target = safe_text(parts[1], limit=len(parts[1]))
    if not target:
        return None
    return RequestHead(
        parts[0].decode("ascii"),
        target,
        parts[2].decode("ascii"),
        _kept(fields, policy),
        header_bytes,
        truncated,
    )


def read_response_head(prefix: bytes, policy: Policy = DEFAULT_POLICY) -> ResponseHead | None:
    """The response head in a captured prefix, or None if it does not start a complete status line."""
    lines = _captured_lines(prefix, policy)
    if lines is None:
        return None
    start, fields, header_bytes, truncated = lines
    parts = start.split(b" ", 2)
    if len(parts) < 2 or parts[0] not in _VERSIONS or not _STATUS.fullmatch(parts[1]):
        return None
    reason = _text(parts[2]) if len(parts) == 3 else ""
    return ResponseHead(
        parts[0].decode("ascii"), int(parts[1]), reason, _kept(fields, policy), header_bytes, truncated
    )


# --- strict framing ---------------------------------------------------------------------------


def _split_head(buf: bytes, parse_start_line, start_line_viable):
    """(start line fields, [(lower-case name, value)], head length), or NEED_MORE / INVALID."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
    if end < 0:
        partial = _partial_head(buf[:MAX_HEAD_BYTES], parse_start_line, start_line_viable)
        if partial.status == NEED_MORE and len(buf) >= MAX_HEAD_BYTES:
            return invalid(f"header too large: no end of head in the first {MAX_HEAD_BYTES} bytes")
        return partial  # garbage says what is wrong with it, however long it is
    lines = buf[:end].split(b"\r\n")
    start = parse_start_line(lines[0])
    if isinstance(start, str):
        return invalid(start)
    fields = _header_fields(lines[1:])
    if isinstance(fields, str):
        return invalid(fields)
    return start, fields, end + 4


def _partial_head(buf: bytes, parse_start_line, start_line_viable) -> ParseResult:
    """NEED_MORE if `buf` can still grow into a head, else INVALID: garbage fails on its first bytes."""
    *complete, last = buf.split(b"\r\n")
    if not complete:
        return NEED_MORE_RESULT if start_line_viable(last) else invalid("malformed start line")
    start = parse_start_line(complete[0])
    if isinstance(start, str):
        return invalid(start)
    return _partial_fields(complete[1:], last)


def _partial_fields(complete: list[bytes], last: bytes) -> ParseResult:
    fields = _header_fields(complete)
    if isinstance(fields, str):
        return invalid(fields)
    if last.endswith(b"\r"):
        last = last[:-1]
    if not _HEADER_LINE_START.fullmatch(last):
        return invalid(f"malformed header line {len(complete) + 1}")
    return NEED_MORE_RESULT


def _header_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]] | str:
    fields = []
    for number, line in enumerate(lines, start=1):
        match = _HEADER_LINE.fullmatch(line)
        if not match:
            # Also catches obsolete line folding and "Name :", which RFC 9112 says to reject.
            return f"malformed header line {number}"
        fields.append((match.group(1).lower(), match.group(2).strip(b" \t")))
    return fields


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes] | str:
    parts = line.split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        return "malformed request line"
    if parts[2] not in _VERSIONS:
        return "unsupported HTTP version"
    return parts[0], parts[1], parts[2]


def _request_line_start(partial: bytes) -> bool:
    if partial.endswith(b"\r"):
        return not isinstance(_request_line(partial[:-1]), str)
    parts = partial.split(b" ")
    if len(parts) == 1:
        return not parts[0] or bool(_METHOD.fullmatch(parts[0]))
    if len(parts) > 3 or not _METHOD.fullmatch(parts[0]):
        return False
    if len(parts) == 2:
        return not parts[1] or bool(_TARGET.fullmatch(parts[1]))
    return bool(_TARGET.fullmatch(parts[1])) and any(v.startswith(parts[2]) for v in _VERSIONS)


def _status_line(line: bytes) -> tuple[bytes, int, bytes] | str:
    parts = line.split(b" ", 2)
    if parts[0] not in _VERSIONS:
        return "unsupported HTTP version"
    if len(parts) < 2 or not _STATUS.fullmatch(parts[1]):
        return "malformed status code"
    reason = parts[2] if len(parts) == 3 else b""
    if not _REASON.fullmatch(reason):
        return "malformed reason phrase"
    return parts[0], int(parts[1]), reason


def _status_line_start(partial: bytes) -> bool:
    if partial.endswith(b"\r"):
        return not isinstance(_status_line(partial[:-1]), str)
    parts = partial.split(b" ", 2)
    if len(parts) == 1:
        return any(v.startswith(parts[0]) for v in _VERSIONS)
    if parts[0] not in _VERSIONS:
        return False
    if len(parts) == 2:  # a status code so far: "", "2", "20", "200"
        return not parts[1] or _STATUS.fullmatch(parts[1].ljust(3, b"0")) is not None
    return bool(_STATUS.fullmatch(parts[1])) and bool(_REASON.fullmatch(parts[2]))


def _framing(fields: list[tuple[bytes, bytes]], is_request: bool) -> int | str | None | ParseResult:
    """How the body ends: its length, "chunked", None (at connection close), or INVALID."""
    codings = [
        c.strip().lower() for name, value in fields if name == b"transfer-encoding" for c in value.split(b",")
    ]
    codings = [c for c in codings if c]
    if codings:
        # Transfer-Encoding overrides Content-Length (RFC 9112 6.3): that is what servers do, so
        # framing it any other way would desynchronise us from the connection.
        if codings[-1] == b"chunked":
            return "chunked"
        if is_request:
            return invalid("request transfer coding does not end in chunked")
        return None
    lengths = {v.strip() for name, value in fields if name == b"content-length" for v in value.split(b",")}
    if not lengths:
        return 0 if is_request else None
    if len(lengths) > 1:
        return invalid("conflicting Content-Length values")
    (length,) = lengths
    if not length.isdigit() or len(length) > MAX_CONTENT_LENGTH_DIGITS:
        return invalid("malformed Content-Length")
    return int(length)


def _frame_body(buf: bytes, head_end: int, framing, head) -> ParseResult:
    if framing is None:
        return NEED_MORE_RESULT
    if framing == "chunked":
        return _frame_chunked(buf, head_end, head)
    if len(buf) - head_end < framing:
        return NEED_MORE_RESULT
    return ParseResult(OK, head_end + framing, (head, framing))


def _frame_chunked(buf: bytes, pos: int, head) -> ParseResult:
    body = 0
    while True:
        eol = buf.find(b"\r\n", pos, pos + MAX_CHUNK_LINE_BYTES)
        if eol < 0:
            if len(buf) - pos >= MAX_CHUNK_LINE_BYTES:
                return invalid("chunk size line too long")
            if not _CHUNK_LINE_START.fullmatch(buf, pos):
                return invalid("malformed chunk size")
            return NEED_MORE_RESULT
        match = _CHUNK_LINE.fullmatch(buf, pos, eol)
        if not match:
            return invalid("malformed chunk size")
        size = int(match.group(1), 16)
        pos = eol + 2
        if size == 0:
            return _frame_trailers(buf, pos, head, body)
        after = buf[pos + size : pos + size + 2]
        if not b"\r\n".startswith(after):
            return invalid("chunk data not followed by CRLF")
        if len(after) < 2:
            return NEED_MORE_RESULT
        body += size
        pos += size + 2


def _frame_trailers(buf: bytes, pos: int, head, body: int) -> ParseResult:
    if buf.startswith(b"\r\n", pos):
        return ParseResult(OK, pos + 2, (head, body))
    end = buf.find(b"\r\n\r\n", pos, pos + MAX_HEAD_BYTES)
    if end < 0:
        if len(buf) - pos >= MAX_HEAD_BYTES:
            return invalid("trailer section too large")
        *complete, last = buf[pos:].split(b"\r\n")
        return _partial_fields(complete, last)
    fields = _header_fields(buf[pos:end].split(b"\r\n"))
    if isinstance(fields, str):
        return invalid(f"trailer: {fields}")
    return ParseResult(OK, end + 4, (head, body))


# --- shared helpers ---------------------------------------------------------------------------


def _captured_lines(prefix: bytes, policy: Policy):
    """(start line, [(name, value)], head bytes read, truncated) from a capture, or None.

    Lenient where the strict parser is not: bare LF ends a line, and header lines that do not
    parse are skipped, because one odd header must not cost the whole request record.
    """
    prefix = as_bytes(prefix)
    if prefix is None:
        return None
    prefix = prefix[:MAX_HEAD_BYTES]
    *complete, _unterminated = prefix.split(b"\n")
    if not complete:
        return None
    start = complete[0].removesuffix(b"\r")
    fields, read = [], len(complete[0]) + 1
    kept = policy.kept_header_bytes
    for line in complete[1:]:
        read += len(line) + 1
        line = line.removesuffix(b"\r")
        if not line:
            return start, fields, read, False
        # Only kept headers are ever returned, so the rest cost one partition, not a regex:
        # this runs for every captured exchange on the host.
        name, colon, value = line.partition(b":")
        if colon and name.lower() in kept and _CAPTURED_HEADER_LINE.fullmatch(line):
            fields.append((name.lower(), value.strip(b" \t")))
    return start, fields, read, True


def _kept(fields: list[tuple[bytes, bytes]], policy: Policy) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in fields:
        key = name.decode("ascii")
        if key in policy.headers_kept and key not in headers:
            headers[key] = _text(value)
    return headers


def _text(raw: bytes) -> str:
    return safe_text(raw, limit=MAX_VALUE_CHARS)
