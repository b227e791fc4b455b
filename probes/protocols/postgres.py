"""PostgreSQL frontend/backend protocol 3: framing of single messages, and reading of a capture.

Two kinds of reader, as for HTTP (probes/protocols/http1.py):
- parse_request / parse_response frame ONE complete message at the start of a reassembled
  stream, strictly: every prefix of a valid message is NEED_MORE, a type byte or length no
  conforming peer sends is INVALID.
- summarize reads what the kernel captured of one exchange (the first MAX_REQUEST_CAPTURE bytes
  the client wrote, the first MAX_RESPONSE_CAPTURE the server answered): a simple query ('Q'),
  an extended query (Parse, Bind, Describe, Execute, Sync in one write, as libpq sends them), a
  pipeline of those, or a step of the connection's startup.

Secrets: a PasswordMessage ('p': cleartext or MD5 password, SASL and GSSAPI data alike) is never
read past its type byte; Bind parameter values and DataRow columns are counted, never decoded;
the cancel key of BackendKeyData is not kept. Query and Parse messages carry the SQL as sent,
literals included: only probes.protocols.sql.normalize_query output leaves through summarize.
Message formats: https://www.postgresql.org/docs/current/protocol-message-formats.html
"""

import re
import struct
from dataclasses import dataclass, field

from probes import schema
from probes.protocols import NEED_MORE_RESULT, OK, ParseResult, as_bytes, invalid
from probes.protocols.sql import OPERATION_PREPARE, query_fields
from probes.redact import DEFAULT_POLICY, Policy, safe_text

HEADER_BYTES = 5  # type byte and length
STARTUP_HEADER_BYTES = 8  # length and protocol code, no type byte
MAX_MESSAGE_BYTES = 0x3FFFFFFF  # the server's PQ_LARGE_MESSAGE_LIMIT (1 GiB - 1)
MAX_STARTUP_BYTES = 10_000  # the server's MAX_STARTUP_PACKET_LENGTH
PROTOCOL_MAJOR = 3
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
ENCRYPTION_ANSWERS = b"SNG"  # one byte: TLS yes, no; GSSAPI encryption yes
MAX_TEXT_CHARS = 512  # parameter values, command tags, error fields as kept in messages
# Startup parameters worth keeping; "options" and unknown ones may hold anything.
KEPT_STARTUP_PARAMETERS = frozenset(
    {"user", "database", "application_name", "client_encoding", "replication"}
)
OPERATION_STARTUP = "STARTUP"
OPERATION_AUTH = "AUTH"
OPERATION_CANCEL = "CANCEL"
OPERATION_EXECUTE = "EXECUTE"
ERROR_TYPE_UNKNOWN = "_OTHER"  # OpenTelemetry's error.type when the class is not known

_SQLSTATE = re.compile(r"[0-9A-Z]{5}")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")

AUTHENTICATION_METHODS = {
    0: "ok",
    2: "kerberos_v5",
    3: "cleartext_password",
    5: "md5_password",
    7: "gss",
    8: "gss_continue",
    9: "sspi",
    10: "sasl",
    11: "sasl_continue",
    12: "sasl_final",
}


@dataclass(frozen=True, slots=True)
class Message:
    name: str  # as the protocol documentation names it: "Query", "StartupMessage", ...
    type: str  # the type byte ("Q"); "" for the startup-phase messages, which have none
    size: int  # bytes on the wire, type byte and length included
    text: str = ""  # Query, Parse: the SQL as sent, literals and all; CommandComplete: the tag
    statement: str = ""  # Parse, Bind, Describe, Close: the prepared statement or portal name
    fields: dict = field(default_factory=dict)  # the rest, per message; see the readers below


def parse_request(buf: bytes) -> ParseResult:
    """Frame one frontend message at the start of `buf`; message = Message.

    The untyped startup-phase messages (StartupMessage, SSLRequest, GSSENCRequest,
    CancelRequest) are told apart from typed ones by their first byte: a length, so 0.
    """
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    if buf[:1] == b"\x00":
        return _parse_startup(buf)
    return _parse_typed(buf, _FRONTEND, "frontend")


def parse_response(buf: bytes, after_encryption_request: bool = False) -> ParseResult:
    """Frame one backend message at the start of `buf`; message = Message.

    The answer to an SSLRequest or GSSENCRequest is a single untyped byte ('S', 'N' or 'G'),
    which only the context tells from the start of a NoticeResponse or ParameterStatus: pass
    `after_encryption_request` when the request was one of those.
    """
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    if after_encryption_request and buf[:1] and buf[0] in ENCRYPTION_ANSWERS:
        answer = chr(buf[0])
        return ParseResult(OK, 1, Message("EncryptionResponse", "", 1, fields={"answer": answer}))
    return _parse_typed(buf, _BACKEND, "backend")


def summarize(request: bytes, response: bytes, policy: Policy = DEFAULT_POLICY) -> dict | None:
    """The record attributes of one captured exchange, or None when `request` is not PostgreSQL.

    See probes.protocols for the contract. The operation, table and query text come from the
    first Query or Parse in the capture; REQUEST_COUNT counts its Query and Execute messages, so a
    pipeline is one record standing for all of them. An ErrorResponse anywhere in the response
    capture sets ERROR, with its SQLSTATE as ERROR_TYPE and DB_RESPONSE_STATUS. The query text
    keeps its literals only when `policy` says so (probes.redact.Policy.sql_literals).
    """
    request, response = as_bytes(request), as_bytes(response) or b""
    if not request:
        return None
    encryption_request = False
    if request[0] == 0:
        fields = _startup_fields(request)
        encryption_request = request[4:8] in (_CODE_SSL, _CODE_GSSENC)
    else:
        fields = _query_fields(request, policy)
    if fields is None:
        return None
    fields[schema.DB_SYSTEM] = schema.PROTO_POSTGRESQL
    fields.update(_response_fields(response, encryption_request))
    return fields


# --- strict framing ---------------------------------------------------------------------------


def _parse_startup(buf: bytes) -> ParseResult:
    if len(buf) < STARTUP_HEADER_BYTES:
        return NEED_MORE_RESULT
    length, code = _UINT32.unpack_from(buf)[0], _UINT32.unpack_from(buf, 4)[0]
    if not STARTUP_HEADER_BYTES <= length <= MAX_STARTUP_BYTES:
        return invalid(f"startup message length {length} out of range")
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE, CANCEL_REQUEST_CODE):
        name, expected = _STARTUP_REQUESTS[code]
        if length != expected:
            return invalid(f"{name} of {length} bytes, expected {expected}")
        if len(buf) < length:
            return NEED_MORE_RESULT
        fields = {"pid": _UINT32.unpack_from(buf, 8)[0]} if code == CANCEL_REQUEST_CODE else {}
        return ParseResult(OK, length, Message(name, "", length, fields=fields))
    if code >> 16 != PROTOCOL_MAJOR:
        return invalid(f"unsupported protocol version {code >> 16}.{code & 0xFFFF}")
    if len(buf) < length:
        return NEED_MORE_RESULT
    parameters = _startup_parameters(buf[STARTUP_HEADER_BYTES:length])
    if parameters is None:
        return invalid("StartupMessage: malformed parameter list")
    parameters["protocol"] = f"{code >> 16}.{code & 0xFFFF}"
    return ParseResult(OK, length, Message("StartupMessage", "", length, fields=parameters))


def _startup_parameters(body: bytes) -> dict | None:
    """The kept parameters of name NUL value NUL ... NUL, or None when malformed."""
    if not body.endswith(b"\x00"):
        return None
    items = body[:-1].split(b"\x00")
    if items[-1] != b"" or len(items) % 2 != 1:
        return None
    kept = {}
    for name, value in zip(items[:-1:2], items[1:-1:2], strict=True):
        if not name:
            return None
        key = name.decode("ascii", errors="replace")
        if key in KEPT_STARTUP_PARAMETERS:
            kept[key] = safe_text(value, limit=MAX_TEXT_CHARS)
    return kept


def _parse_typed(buf: bytes, readers: dict, side: str) -> ParseResult:
    if not buf:
        return NEED_MORE_RESULT
    reader = readers.get(buf[0])
    if reader is None:
        return invalid(f"unknown {side} message type {buf[0]:#04x}")
    name, read, body_size = reader
    if len(buf) < HEADER_BYTES:
        return NEED_MORE_RESULT
    length = _UINT32.unpack_from(buf, 1)[0]
    if not 4 <= length <= MAX_MESSAGE_BYTES:
        return invalid(f"{name}: length {length} out of range")
    if body_size is not None and length != 4 + body_size:
        return invalid(f"{name}: length {length}, expected {4 + body_size}")
    if len(buf) < 1 + length:
        return NEED_MORE_RESULT
    content = read(buf[HEADER_BYTES : 1 + length])
    if isinstance(content, str):
        return invalid(f"{name}: {content}")
    return ParseResult(OK, 1 + length, Message(name, chr(buf[0]), 1 + length, **content))


# Each reader takes a message body and returns Message keyword arguments, or why it is malformed.


def _empty(body: bytes) -> dict:
    return {}


def _unread(body: bytes) -> dict:
    return {}  # PasswordMessage, CopyData, FunctionCall: their content stays unread


def _query(body: bytes) -> dict | str:
    text, end = _cstring(body, 0)
    if text is None or end != len(body):
        return "query is not one NUL-terminated string"
    return {"text": _sql(text)}


def _parse(body: bytes) -> dict | str:
    name, pos = _cstring(body, 0)
    text, pos = _cstring(body, pos)
    if text is None or pos + 2 > len(body):
        return "truncated"
    count = _INT16.unpack_from(body, pos)[0]
    if count < 0 or pos + 2 + 4 * count != len(body):
        return "parameter types do not fill the message"
    return {"text": _sql(text), "statement": _name(name), "fields": {"parameter_types": count}}


def _bind(body: bytes) -> dict | str:
    portal, pos = _cstring(body, 0)
    statement, pos = _cstring(body, pos)
    if statement is None:
        return "truncated"
    formats = _int16_array(body, pos)
    if formats is None:
        return "truncated parameter formats"
    parameters, pos = 0, formats
    if pos + 2 > len(body):
        return "truncated"
    count = _INT16.unpack_from(body, pos)[0]
    pos += 2
    for _ in range(max(count, 0)):
        if pos + 4 > len(body):
            return "truncated parameter"
        size = _INT32.unpack_from(body, pos)[0]
        pos += 4 + max(size, 0)  # -1 is NULL; values are skipped, never decoded
        parameters += 1
    if count < 0 or pos > len(body):
        return "parameters overrun the message"
    if _int16_array(body, pos) != len(body):
        return "result formats do not fill the message"
    return {"statement": _name(statement), "fields": {"portal": _name(portal), "parameters": parameters}}


def _execute(body: bytes) -> dict | str:
    portal, pos = _cstring(body, 0)
    if portal is None or pos + 4 != len(body):
        return "expected a portal name and a row limit"
    return {"fields": {"portal": _name(portal), "max_rows": _INT32.unpack_from(body, pos)[0]}}


def _describe_or_close(body: bytes) -> dict | str:
    if body[:1] not in (b"S", b"P"):
        return "target is neither 'S' nor 'P'"
    name, pos = _cstring(body, 1)
    if name is None or pos != len(body):
        return "expected one NUL-terminated name"
    target = "statement" if body[0] == ord("S") else "portal"
    return {"statement": _name(name), "fields": {"target": target}}


def _one_string(body: bytes) -> dict | str:
    text, pos = _cstring(body, 0)
    if text is None or pos != len(body):
        return "expected one NUL-terminated string"
    return {"text": safe_text(text, limit=MAX_TEXT_CHARS)}


def _authentication(body: bytes) -> dict | str:
    if len(body) < 4:
        return "truncated"
    code = _INT32.unpack_from(body)[0]
    method = AUTHENTICATION_METHODS.get(code)
    if method is None:
        return f"unknown authentication code {code}"
    fields = {"code": code, "method": method}
    if code in (0, 2, 3, 7, 9) and len(body) != 4:
        return f"{method} carries {len(body) - 4} unexpected bytes"
    if code == 5 and len(body) != 8:
        return "md5_password without its 4-byte salt"
    if code == 10:
        mechanisms = body[4:].split(b"\x00")
        if len(mechanisms) < 3 or mechanisms[-2:] != [b"", b""] or b"" in mechanisms[:-2]:
            return "malformed SASL mechanism list"
        fields["mechanisms"] = [safe_text(m, limit=64) for m in mechanisms[:-2]]
    return {"fields": fields}  # SASL and GSS data (nonces, proofs, signatures) are not kept


def _parameter_status(body: bytes) -> dict | str:
    name, pos = _cstring(body, 0)
    value, pos = _cstring(body, pos)
    if value is None or pos != len(body):
        return "expected a name and a value"
    return {"fields": {"name": safe_text(name, limit=64), "value": safe_text(value, limit=MAX_TEXT_CHARS)}}


def _backend_key_data(body: bytes) -> dict | str:
    if not 8 <= len(body) <= 4 + 256:  # protocol 3.2 allows keys up to 256 bytes
        return "expected a process id and a 4 to 256-byte key"
    return {"fields": {"pid": _INT32.unpack_from(body)[0]}}  # the cancel key is a secret


def _ready_for_query(body: bytes) -> dict | str:
    if body not in (b"I", b"T", b"E"):
        return "transaction status is not I, T or E"
    return {"fields": {"status": chr(body[0])}}


def _row_description(body: bytes) -> dict | str:
    if len(body) < 2:
        return "truncated"
    count, pos = _INT16.unpack_from(body)[0], 2
    for _ in range(max(count, 0)):
        _column, pos = _cstring(body, pos)
        if pos is None or pos + 18 > len(body):
            return "truncated field description"
        pos += 18
    if count < 0 or pos != len(body):
        return "field descriptions do not fill the message"
    return {"fields": {"columns": count}}  # column names can be anything the query aliased


def _data_row(body: bytes) -> dict | str:
    if len(body) < 2:
        return "truncated"
    count, pos = _INT16.unpack_from(body)[0], 2
    for _ in range(max(count, 0)):
        if pos + 4 > len(body):
            return "truncated column"
        pos += 4 + max(_INT32.unpack_from(body, pos)[0], 0)
    if count < 0 or pos != len(body):
        return "columns do not fill the message"
    return {"fields": {"columns": count}}  # values are data: never decoded


def _error_or_notice(body: bytes) -> dict | str:
    """All fields by their code letter ("S", "V", "C", "M", "D", ...). M and D may quote values
    from the query ("Key (email)=(alice@example.com) already exists"): summarize keeps only C."""
    fields = _error_fields(body)
    if fields is None:
        return "malformed field list"
    return {"fields": fields}


def _parameter_description(body: bytes) -> dict | str:
    if len(body) < 2 or 2 + 4 * _INT16.unpack_from(body)[0] != len(body):
        return "parameter types do not fill the message"
    return {"fields": {"parameter_types": _INT16.unpack_from(body)[0]}}


def _notification(body: bytes) -> dict | str:
    channel, pos = _cstring(body, 4)
    _payload, pos = _cstring(body, pos)
    if len(body) < 4 or pos != len(body):
        return "expected a process id, a channel and a payload"
    return {"fields": {"channel": safe_text(channel, limit=MAX_TEXT_CHARS)}}


def _copy_response(body: bytes) -> dict | str:
    if len(body) < 3 or 3 + 2 * _INT16.unpack_from(body, 1)[0] != len(body):
        return "column formats do not fill the message"
    return {"fields": {"columns": _INT16.unpack_from(body, 1)[0]}}


def _function_call_response(body: bytes) -> dict | str:
    if len(body) < 4 or 4 + max(_INT32.unpack_from(body)[0], 0) != len(body):
        return "result does not fill the message"
    return {}


def _negotiate_protocol_version(body: bytes) -> dict | str:
    if len(body) < 8:
        return "truncated"
    pos = 8
    for _ in range(max(_INT32.unpack_from(body, 4)[0], 0)):
        _option, pos = _cstring(body, pos)
        if pos is None:
            return "truncated option name"
    if pos != len(body):
        return "options do not fill the message"
    return {"fields": {"minor": _INT32.unpack_from(body)[0]}}


# type byte -> (name, reader, fixed body size or None)
_FRONTEND = {
    ord("Q"): ("Query", _query, None),
    ord("P"): ("Parse", _parse, None),
    ord("B"): ("Bind", _bind, None),
    ord("E"): ("Execute", _execute, None),
    ord("D"): ("Describe", _describe_or_close, None),
    ord("C"): ("Close", _describe_or_close, None),
    ord("S"): ("Sync", _empty, 0),
    ord("H"): ("Flush", _empty, 0),
    ord("X"): ("Terminate", _empty, 0),
    ord("p"): ("PasswordMessage", _unread, None),  # also SASL and GSS responses
    ord("d"): ("CopyData", _unread, None),
    ord("c"): ("CopyDone", _empty, 0),
    ord("f"): ("CopyFail", _one_string, None),
    ord("F"): ("FunctionCall", _unread, None),
}
_BACKEND = {
    ord("R"): ("Authentication", _authentication, None),
    ord("S"): ("ParameterStatus", _parameter_status, None),
    ord("K"): ("BackendKeyData", _backend_key_data, None),
    ord("Z"): ("ReadyForQuery", _ready_for_query, 1),
    ord("T"): ("RowDescription", _row_description, None),
    ord("D"): ("DataRow", _data_row, None),
    ord("C"): ("CommandComplete", _one_string, None),
    ord("E"): ("ErrorResponse", _error_or_notice, None),
    ord("N"): ("NoticeResponse", _error_or_notice, None),
    ord("1"): ("ParseComplete", _empty, 0),
    ord("2"): ("BindComplete", _empty, 0),
    ord("3"): ("CloseComplete", _empty, 0),
    ord("n"): ("NoData", _empty, 0),
    ord("s"): ("PortalSuspended", _empty, 0),
    ord("I"): ("EmptyQueryResponse", _empty, 0),
    ord("t"): ("ParameterDescription", _parameter_description, None),
    ord("A"): ("NotificationResponse", _notification, None),
    ord("G"): ("CopyInResponse", _copy_response, None),
    ord("H"): ("CopyOutResponse", _copy_response, None),
    ord("W"): ("CopyBothResponse", _copy_response, None),
    ord("d"): ("CopyData", _unread, None),
    ord("c"): ("CopyDone", _empty, 0),
    ord("V"): ("FunctionCallResponse", _function_call_response, None),
    ord("v"): ("NegotiateProtocolVersion", _negotiate_protocol_version, None),
}
_STARTUP_REQUESTS = {
    SSL_REQUEST_CODE: ("SSLRequest", 8),
    GSSENC_REQUEST_CODE: ("GSSENCRequest", 8),
    CANCEL_REQUEST_CODE: ("CancelRequest", 16),
}
_CODE_SSL = SSL_REQUEST_CODE.to_bytes(4, "big")
_CODE_GSSENC = GSSENC_REQUEST_CODE.to_bytes(4, "big")


# --- reading a capture ------------------------------------------------------------------------

# What a capture without Query, Parse or Execute does, by its first message.
_OTHER_OPERATIONS = {
    ord("S"): "SYNC",
    ord("H"): "FLUSH",
    ord("X"): "TERMINATE",
    ord("C"): "CLOSE",
    ord("D"): "DESCRIBE",
    ord("d"): "COPY",
    ord("c"): "COPY",
    ord("f"): "COPY",
    ord("F"): "FUNCTION_CALL",
    ord("P"): OPERATION_PREPARE,  # cut before its SQL
    ord("p"): OPERATION_AUTH,
}


def _captured(buf: bytes, types: dict):
    """(type byte, body, cut) of each message of a capture, in order, up to the first one the
    capture ends in; stops at the first header that is not a message of `types`."""
    pos = 0
    while pos + HEADER_BYTES <= len(buf):
        length = _UINT32.unpack_from(buf, pos + 1)[0]
        if buf[pos] not in types or not 4 <= length <= MAX_MESSAGE_BYTES:
            return
        end = pos + 1 + length
        yield buf[pos], buf[pos + HEADER_BYTES : end], end > len(buf)
        pos = end


def _startup_fields(request: bytes) -> dict | None:
    """A startup-phase message: only its kind. The user and database stay unread."""
    if len(request) < STARTUP_HEADER_BYTES:
        return None
    length, code = _UINT32.unpack_from(request)[0], _UINT32.unpack_from(request, 4)[0]
    if not STARTUP_HEADER_BYTES <= length <= MAX_STARTUP_BYTES:
        return None
    if code == CANCEL_REQUEST_CODE:
        return {schema.DB_OPERATION: OPERATION_CANCEL}
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE) or code >> 16 == PROTOCOL_MAJOR:
        return {schema.DB_OPERATION: OPERATION_STARTUP}
    return None


def _query_fields(request: bytes, policy: Policy) -> dict | None:
    messages = list(_captured(request, _FRONTEND))
    if not messages:
        return None
    first_type = messages[0][0]
    if first_type == ord("p"):
        return {schema.DB_OPERATION: OPERATION_AUTH}  # a password or SASL data: never read
    executions = sum(1 for kind, _body, _cut in messages if kind in (ord("Q"), ord("E")))
    text, text_cut = _first_sql(messages)
    fields = {}
    if text is not None:
        prepared_only = executions == 0 and not messages[-1][2]
        fields.update(_text_fields(text, text_cut, prepared_only, policy))
    elif executions:
        fields[schema.DB_OPERATION] = OPERATION_EXECUTE
        statement = _bound_statement(messages)
        if statement:  # prepared earlier on the connection: its name is all there is
            fields[schema.DB_QUERY_TEXT] = f"{OPERATION_EXECUTE} {statement}"
    else:
        fields[schema.DB_OPERATION] = _OTHER_OPERATIONS.get(first_type, "")
    if executions:
        fields[schema.REQUEST_COUNT] = executions
    return {key: value for key, value in fields.items() if value != ""}


def _first_sql(messages: list) -> tuple[bytes | None, bool]:
    """(the SQL of the first Query or Parse, whether the capture cut it) or (None, False)."""
    for kind, body, _cut in messages:
        if kind == ord("Q"):
            start = 0
        elif kind == ord("P"):
            start = body.find(b"\x00") + 1  # after the statement name
            if start == 0:
                continue  # the capture ends inside the name
        else:
            continue
        end = body.find(b"\x00", start)
        return (body[start:], True) if end < 0 else (body[start:end], False)
    return None, False


def _bound_statement(messages: list) -> str:
    """The prepared statement name of the first Bind, or ""."""
    for kind, body, _cut in messages:
        if kind == ord("B"):
            portal_end = body.find(b"\x00")
            name_end = body.find(b"\x00", portal_end + 1)
            if 0 <= portal_end < name_end:
                return _name(body[portal_end + 1 : name_end])
    return ""


def _text_fields(raw: bytes, cut: bool, prepared_only: bool, policy: Policy) -> dict:
    return query_fields(raw, schema.PROTO_POSTGRESQL, cut, prepared_only, policy)


def _response_fields(response: bytes, encryption_request: bool) -> dict:
    if encryption_request and response[:1] and response[0] in ENCRYPTION_ANSWERS:
        response = response[1:]
    for kind, body, _cut in _captured(response, _BACKEND):
        if kind == ord("E"):
            code = _error_fields(body, lenient=True).get("C", "")
            code = code if _SQLSTATE.fullmatch(code) else ERROR_TYPE_UNKNOWN
            status = {schema.DB_RESPONSE_STATUS: code} if code != ERROR_TYPE_UNKNOWN else {}
            return {schema.ERROR: True, schema.ERROR_TYPE: code, **status}
    return {schema.ERROR: False}


# --- shared helpers ---------------------------------------------------------------------------


def _error_fields(body: bytes, lenient: bool = False) -> dict | None:
    """{code letter: value} of an ErrorResponse or NoticeResponse body. Strict: None unless it
    is well formed. Lenient (a cut capture): the fields that are complete."""
    fields, pos = {}, 0
    while pos < len(body) and body[pos] != 0:
        value, end = _cstring(body, pos + 1)
        if value is None:
            return fields if lenient else None
        fields[chr(body[pos])] = safe_text(value, limit=MAX_TEXT_CHARS)
        pos = end
    if not lenient and pos != len(body) - 1:
        return None
    return fields


def _cstring(body: bytes, pos: int | None) -> tuple[bytes | None, int | None]:
    """(the NUL-terminated string at `pos`, the position after its NUL), or (None, None)."""
    if pos is None:
        return None, None
    end = body.find(b"\x00", pos)
    if end < 0:
        return None, None
    return body[pos:end], end + 1


def _int16_array(body: bytes, pos: int) -> int | None:
    """The position after an int16 count and that many int16 values, or None."""
    if pos + 2 > len(body):
        return None
    end = pos + 2 + 2 * _INT16.unpack_from(body, pos)[0]
    return end if pos + 2 <= end <= len(body) else None


def _sql(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _name(raw: bytes) -> str:
    return safe_text(raw, limit=64)
