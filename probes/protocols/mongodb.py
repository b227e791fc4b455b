"""MongoDB wire protocol: framing of whole messages, and reading of captured exchanges.

Every message starts with a 16-byte header of four little-endian int32: messageLength (header
included), requestID, responseTo (the requestID a reply answers) and opCode. Current drivers and
servers speak OP_MSG (flag bits, then sections: kind 0 is the one command or reply document, kind
1 a named sequence of documents such as the `documents` of an insert, then an optional CRC-32C).
OP_QUERY and OP_REPLY survive for the legacy handshake; OP_COMPRESSED wraps either, and is
reported as such without being decompressed.

Two kinds of reader, as in http1:
- parse_request / parse_response frame ONE complete message out of a reassembled byte stream:
  every prefix of a valid message is NEED_MORE, a header or frame no server would accept INVALID.
- summarize(request, response) reads what the kernel captured of one exchange (see
  probes.protocols): the first MAX_REQUEST_CAPTURE bytes the client sent and the first
  MAX_RESPONSE_CAPTURE the server answered, usually cut in the middle of a document. It takes
  what is complete: the command name and collection from the first element, the filter shape
  when all of it was captured, the error code when the reply shows it.

The BSON reader below is deliberately small and lazy: it walks the elements of one document,
never decodes a value it is not asked for, and descends into nested documents only on request
and only MAX_SHAPE_DEPTH levels deep, so hostile lengths and deep nesting cost nothing.
Values are never stored: query text replaces every one of them with "?".
"""

import json
import re
import struct
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import NamedTuple

from probes.protocols import (
    MAX_REQUEST_CAPTURE,
    MAX_RESPONSE_CAPTURE,
    NEED_MORE_RESULT,
    OK,
    ParseResult,
    as_bytes,
    invalid,
)
from probes.redact import safe_text
from probes.schema import (
    DB_COLLECTION,
    DB_OPERATION,
    DB_QUERY_SUMMARY,
    DB_QUERY_TEXT,
    DB_RESPONSE_STATUS,
    DB_SYSTEM,
    ERROR,
    ERROR_TYPE,
    PROTO_MONGODB,
    REQUEST_COUNT,
)

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013
REQUEST_OP_CODES = frozenset({OP_MSG, OP_QUERY, OP_COMPRESSED})
RESPONSE_OP_CODES = frozenset({OP_MSG, OP_REPLY, OP_COMPRESSED})
# The legacy OP_INSERT, OP_UPDATE, OP_GET_MORE, ... were removed in MongoDB 6.0: no current peer
# sends them, so they are INVALID rather than silently framed.

HEADER_BYTES = 16
# mongod refuses messages over maxMessageSizeBytes (48,000,000); a bigger length is garbage.
MAX_MESSAGE_BYTES = 48 * 1024 * 1024
OP_MSG_CHECKSUM_PRESENT = 1 << 0
OP_MSG_MORE_TO_COME = 1 << 1
OP_MSG_EXHAUST_ALLOWED = 1 << 16
# Bits 0-15 are "required": the spec says a reader MUST fail on one it does not know.
_OP_MSG_UNKNOWN_REQUIRED_BITS = 0xFFFF & ~(OP_MSG_CHECKSUM_PRESENT | OP_MSG_MORE_TO_COME)
OP_REPLY_QUERY_FAILURE = 1 << 1
COMPRESSORS = {0: "noop", 1: "snappy", 2: "zlib", 3: "zstd"}

MAX_NAME_CHARS = 255  # a namespace ("db.collection") is at most 255 bytes
MAX_KEY_CHARS = 128  # a field name as shown in query text
MAX_SHAPE_DEPTH = 32  # nesting shown in query text; deeper documents show as "?"
MAX_QUERY_TEXT_CHARS = 2048
COMPRESSED_SUMMARY = "compressed"  # db.query.summary of an OP_COMPRESSED request: not decoded

# Commands whose first value names a collection. Any other command's first value is not shown:
# for createUser it is a user name, for most it is just 1.
COLLECTION_COMMANDS = frozenset(
    {
        "find",
        "insert",
        "update",
        "delete",
        "aggregate",
        "count",
        "distinct",
        "findAndModify",
        "findandmodify",
        "killCursors",
        "create",
        "drop",
        "createIndexes",
        "dropIndexes",
        "deleteIndexes",
        "listIndexes",
        "collMod",
        "collStats",
        "validate",
        "compact",
        "mapReduce",
        "mapreduce",
    }
)
GET_MORE = "getMore"  # its first value is a cursor id; the collection is in "collection"
# Commands that carry credentials (SCRAM payloads, passwords, nonces): only their name is kept.
CREDENTIAL_COMMANDS = frozenset(
    {
        "saslStart",
        "saslContinue",
        "authenticate",
        "getnonce",
        "createUser",
        "updateUser",
        "copydbsaslstart",
        "copydbgetnonce",
    }
)
# The fields of a command that make its query shape, in query text with every value as "?".
SHAPE_FIELDS = {
    "find": ("filter", "sort", "projection"),
    "aggregate": ("pipeline",),
    "count": ("query",),
    "distinct": ("query",),
    "findAndModify": ("query", "sort", "update", "fields"),
    "findandmodify": ("query", "sort", "update", "fields"),
}
# Write commands whose shape is in their statements, sent as a kind-1 sequence or a body array.
STATEMENT_FIELDS = {"update": ("updates", ("q", "u")), "delete": ("deletes", ("q",))}
# mongod's names for its common error codes (error_codes.yml). Write errors carry a code but no
# codeName, and a capture may end between the two: naming a code from here keeps error.type the
# same either way. Codes not listed take the reply's codeName when it was captured.
CODE_NAMES = {
    2: "BadValue",
    8: "UnknownError",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    18: "AuthenticationFailed",
    26: "NamespaceNotFound",
    43: "CursorNotFound",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    59: "CommandNotFound",
    64: "WriteConcernTimeout",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    112: "WriteConflict",
    121: "DocumentValidationFailure",
    189: "PrimarySteppedDown",
    251: "NoSuchTransaction",
    262: "ExceededTimeLimit",
    292: "QueryExceededMemoryLimitNoDiskUseAllowed",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11601: "Interrupted",
    13435: "NotPrimaryNoSecondaryOk",
}

_HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
_INT64 = struct.Struct("<q")
_JSON = json.JSONEncoder(ensure_ascii=False)  # built once: json.dumps with options builds one per call
_COMMAND_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.]{0,63}")
_CODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

# BSON element types (bsonspec.org): fixed value sizes, then the length-prefixed ones.
_DOUBLE_T, _STRING_T, _DOCUMENT_T, _ARRAY_T, _BINARY_T = 0x01, 0x02, 0x03, 0x04, 0x05
_BOOL_T, _REGEX_T, _DBPOINTER_T, _CODE_T, _SYMBOL_T, _CODE_W_SCOPE_T = 0x08, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F
_INT32_T, _INT64_T = 0x10, 0x12
_FIXED_SIZES = {
    _DOUBLE_T: 8,
    0x06: 0,  # undefined
    0x07: 12,  # ObjectId
    _BOOL_T: 1,
    0x09: 8,  # UTC datetime
    0x0A: 0,  # null
    _INT32_T: 4,
    0x11: 8,  # timestamp
    _INT64_T: 8,
    0x13: 16,  # decimal128
    0xFF: 0,  # min key
    0x7F: 0,  # max key
}
_CUT = -1  # a value whose size is past the captured bytes
_BAD = -2  # a value that cannot be BSON


@dataclass(frozen=True, slots=True)
class Request:
    op_code: int
    request_id: int
    response_to: int
    length: int
    command: str | None  # the command name, first key of the command document
    collection: str | None
    database: str | None  # "$db", or the namespace of an OP_QUERY
    more_to_come: bool = False  # OP_MSG: the client expects no reply (unacknowledged write)
    exhaust_allowed: bool = False  # OP_MSG: the server may stream replies (awaitable hello)
    original_op_code: int | None = None  # OP_COMPRESSED: what it wraps; nothing else is read


@dataclass(frozen=True, slots=True)
class Reply:
    op_code: int
    request_id: int
    response_to: int
    length: int
    ok: bool | None  # None when the reply has no readable "ok"
    code: int | None  # of the failed command, or of its first write or write concern error
    code_name: str | None
    more_to_come: bool = False  # OP_MSG: another reply follows without a request (exhaust)
    original_op_code: int | None = None


class _Element(NamedTuple):
    type: int
    key: bytes
    start: int  # first byte of the value
    end: int  # one past its last byte; past the captured bytes when the value was cut


_new_element = partial(tuple.__new__, _Element)  # _Element from one tuple, without argument parsing


class _Document(NamedTuple):
    elements: list  # of _Element; only a nested document or array may be cut
    complete: bool  # every byte of it, its terminating NUL included, was there
    end: int  # one past its last byte, as its length says


def parse_request(buf: bytes) -> ParseResult:
    """Frame one client message at the start of `buf`; message = Request."""
    return _parse(buf, REQUEST_OP_CODES, _frame_request)


def parse_response(buf: bytes) -> ParseResult:
    """Frame one server message at the start of `buf`; message = Reply."""
    return _parse(buf, RESPONSE_OP_CODES, _frame_reply)


def summarize(request: bytes, response: bytes) -> dict | None:
    """Record attributes for one captured exchange (see probes.protocols), or None if the
    request does not start with a MongoDB client message."""
    request = as_bytes(request)
    if request is None:
        return None
    request = request[:MAX_REQUEST_CAPTURE]
    header = _header(request, REQUEST_OP_CODES)
    if not isinstance(header, tuple):
        return None
    fields = _request_fields(request, header)
    if fields is None:
        return None
    count = _message_count(request)
    if count > 1:
        fields[REQUEST_COUNT] = count
    fields.update(_reply_fields((as_bytes(response) or b"")[:MAX_RESPONSE_CAPTURE]))
    return fields


# --- strict framing ---------------------------------------------------------------------------


def _parse(buf, op_codes, frame) -> ParseResult:
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    header = _header(buf, op_codes)
    if isinstance(header, str):
        return invalid(header)
    if header is None or len(buf) < header[0]:
        return NEED_MORE_RESULT
    message = frame(buf, header)
    if isinstance(message, str):
        return invalid(message)
    return ParseResult(OK, header[0], message)


def _header(buf: bytes, op_codes) -> tuple[int, int, int, int] | str | None:
    """(length, requestID, responseTo, opCode); None while too short to tell; why it is bad."""
    if len(buf) < 4:
        return None
    length = _INT32.unpack_from(buf)[0]
    if length < HEADER_BYTES:
        return f"message length {length} is shorter than the header"
    if length > MAX_MESSAGE_BYTES:
        return f"message length {length} is over {MAX_MESSAGE_BYTES}"
    if len(buf) < HEADER_BYTES:
        return None
    header = _HEADER.unpack_from(buf)
    if header[3] not in op_codes:
        return f"unsupported op code {header[3]}"
    return header


def _frame_request(buf: bytes, header) -> Request | str:
    length, request_id, response_to, op_code = header
    if op_code == OP_COMPRESSED:
        original = _compressed(buf, length, (OP_MSG, OP_QUERY))
        if isinstance(original, str):
            return original
        return Request(op_code, request_id, response_to, length, None, None, None, original_op_code=original)
    if op_code == OP_QUERY:
        command = _op_query(buf, length, length)
        if isinstance(command, str):
            return command
        name, collection, database, _ = command
        return Request(op_code, request_id, response_to, length, name, collection, database)
    message = _op_msg(buf, length, length)
    if isinstance(message, str):
        return message
    flags, body, _sequences = message
    name, collection, database = _command_names(buf, body, length)
    return Request(
        op_code,
        request_id,
        response_to,
        length,
        name,
        collection,
        database,
        more_to_come=bool(flags & OP_MSG_MORE_TO_COME),
        exhaust_allowed=bool(flags & OP_MSG_EXHAUST_ALLOWED),
    )


def _frame_reply(buf: bytes, header) -> Reply | str:
    length, request_id, response_to, op_code = header
    if op_code == OP_COMPRESSED:
        original = _compressed(buf, length, (OP_MSG, OP_REPLY))
        if isinstance(original, str):
            return original
        return Reply(op_code, request_id, response_to, length, None, None, None, original_op_code=original)
    if op_code == OP_REPLY:
        reply = _op_reply(buf, length, length)
        if isinstance(reply, str):
            return reply
        return Reply(op_code, request_id, response_to, length, *reply)
    message = _op_msg(buf, length, length)
    if isinstance(message, str):
        return message
    flags, body, _sequences = message
    status = _reply_status(buf, body, length) if body is not None else (None, None, None)
    return Reply(
        op_code, request_id, response_to, length, *status, more_to_come=bool(flags & OP_MSG_MORE_TO_COME)
    )


def _compressed(buf: bytes, length: int, wrapped) -> int | str:
    """The op code an OP_COMPRESSED message wraps (its 9-byte prefix checked, nothing decoded)."""
    if length < HEADER_BYTES + 9:
        return "OP_COMPRESSED shorter than its header"
    original, size, compressor = struct.unpack_from("<iiB", buf, HEADER_BYTES)
    if original not in wrapped:
        return f"OP_COMPRESSED wraps unsupported op code {original}"
    if not 0 <= size <= MAX_MESSAGE_BYTES:
        return f"OP_COMPRESSED uncompressed size {size} out of range"
    if compressor not in COMPRESSORS:
        return f"unknown compressor id {compressor}"
    return original


# --- message bodies, strict (avail == end) or captured (avail < end) -------------------------


def _op_msg(buf: bytes, end: int, avail: int):
    """(flags, body document or None, [(identifier, first document, section end)]) or why bad.

    `end` is where the message ends, `avail` where the bytes in hand do: a section cut by the
    capture ends the walk, one that breaks the format fails it.
    """
    if end < HEADER_BYTES + 5:
        return "OP_MSG shorter than its flags and one section"
    if avail < HEADER_BYTES + 4:
        return 0, None, []
    flags = _UINT32.unpack_from(buf, HEADER_BYTES)[0]
    if flags & _OP_MSG_UNKNOWN_REQUIRED_BITS:
        return f"OP_MSG sets unknown required flag bits {flags & _OP_MSG_UNKNOWN_REQUIRED_BITS:#x}"
    if flags & OP_MSG_CHECKSUM_PRESENT:
        end -= 4
    body, sequences, pos = None, [], HEADER_BYTES + 4
    while pos < min(end, avail):
        kind, pos = buf[pos], pos + 1
        if kind == 0:
            if body is not None:
                return "OP_MSG has two body sections"
            body = _read_document(buf, pos, end, avail)
            if body is None:
                return "malformed OP_MSG body document"
            if not body.complete:
                break
            pos = body.end
        elif kind == 1:
            section = _document_sequence(buf, pos, end, avail)
            if isinstance(section, str):
                return section
            if section is None:
                break
            sequences.append(section[:3])
            pos = section[2]
        else:
            return f"unknown OP_MSG section kind {kind}"
    if avail >= end and (pos != end or body is None):
        return "OP_MSG sections do not fill the message" if body else "OP_MSG has no body section"
    return flags, body, sequences


def _document_sequence(buf: bytes, pos: int, end: int, avail: int):
    """(identifier, first document offset, section end) of a kind-1 section; None if cut."""
    if pos + 4 > end:
        return "OP_MSG document sequence without a size"
    if pos + 4 > avail:
        return None
    size = _INT32.unpack_from(buf, pos)[0]
    section_end = pos + size
    if size < 6 or section_end > end:
        return f"OP_MSG document sequence size {size} out of bounds"
    nul = buf.find(b"\x00", pos + 4, min(section_end, avail))
    if nul < 0:
        return None if section_end > avail else "OP_MSG document sequence identifier not terminated"
    first = nul + 1
    if avail >= section_end:  # strict: every document whole, back to back to the section end
        doc = first
        while doc < section_end:
            doc = _envelope(buf, doc, section_end)
            if doc < 0:
                return "malformed document in an OP_MSG document sequence"
    return buf[pos + 4 : nul], first, section_end


def _op_query(buf: bytes, end: int, avail: int):
    """(command, collection, database, command document) of an OP_QUERY, or why it is bad."""
    ns_start = HEADER_BYTES + 4  # after the flags
    nul = buf.find(b"\x00", ns_start, min(end, avail))
    if nul < 0:
        return "OP_QUERY namespace not terminated" if avail >= end else (None, None, None, None)
    namespace = buf[ns_start:nul]
    database, dot, rest = namespace.partition(b".")
    if not database or not dot or not rest:
        return "OP_QUERY namespace is not db.collection"
    doc_start = nul + 1 + 8  # numberToSkip, numberToReturn
    query = _read_document(buf, doc_start, end, avail) if doc_start < min(end, avail) else None
    if avail >= end:
        if query is None:
            return "malformed OP_QUERY document"
        tail = query.end
        if tail < end:  # an optional returnFieldsSelector
            tail = _envelope(buf, tail, end)
        if tail != end:
            return "OP_QUERY documents do not fill the message"
    elif query is None and doc_start < avail:
        return "malformed OP_QUERY document"
    db = _name(database)
    if rest != b"$cmd":  # a legacy query on a collection, removed in MongoDB 5.1
        return "find", _name(rest), db, None
    if query is None:
        return None, None, db, None
    query = _unwrap_query(buf, query, end, avail)
    if query is None:
        return "malformed OP_QUERY $query document"
    name, collection, _ = _command_names(buf, query, avail)
    return name, collection, db, query


def _unwrap_query(buf: bytes, query: _Document, end: int, avail: int) -> _Document | None:
    """Commands with a read preference are sent as {$query: {command}, $readPreference: ...}."""
    first = query.elements[0] if query.elements else None
    if first and first.type == _DOCUMENT_T and first.key in (b"$query", b"query"):
        return _read_document(buf, first.start, first.end, avail)
    return query


def _op_reply(buf: bytes, end: int, avail: int):
    """(ok, code, codeName) of the first document of an OP_REPLY, or why it is bad."""
    first = HEADER_BYTES + 20  # responseFlags, cursorID, startingFrom, numberReturned
    if end < first:
        return "OP_REPLY shorter than its fixed fields"
    if avail < first:
        return None, None, None
    flags, _cursor, _start, returned = struct.unpack_from("<iqii", buf, HEADER_BYTES)
    if returned < 0:
        return f"OP_REPLY numberReturned {returned} is negative"
    doc = _read_document(buf, first, end, avail) if returned and first < avail else None
    if avail >= end:  # strict: exactly numberReturned documents
        pos = first
        for _ in range(returned):
            pos = _envelope(buf, pos, end) if pos < end else -1
            if pos < 0:
                return "OP_REPLY holds fewer documents than numberReturned"
        if pos != end or (returned and doc is None):
            return "OP_REPLY documents do not fill the message"
    elif returned and first < avail and doc is None:
        return "malformed OP_REPLY document"
    ok, code, code_name = _reply_status(buf, doc, avail) if doc else (None, None, None)
    if flags & OP_REPLY_QUERY_FAILURE:
        ok = False
    return ok, code, code_name


# --- the captured exchange --------------------------------------------------------------------


def _request_fields(buf: bytes, header) -> dict | None:
    length, _request_id, _response_to, op_code = header
    fields = {DB_SYSTEM: PROTO_MONGODB}
    avail = min(length, len(buf))
    if op_code == OP_COMPRESSED:
        fields[DB_QUERY_SUMMARY] = COMPRESSED_SUMMARY
        return fields
    if op_code == OP_QUERY:
        command = _op_query(buf, length, avail)
        if isinstance(command, str):
            return None
        name, collection, _database, body = command
        sequences = []
    else:
        message = _op_msg(buf, length, avail)
        if isinstance(message, str):
            return None
        _flags, body, sequences = message
        name, collection, _database = (
            _command_names(buf, body, avail) if body is not None else (None, None, None)
        )
    if name is None:
        return fields
    fields[DB_OPERATION] = name
    if name in CREDENTIAL_COMMANDS:
        fields[DB_QUERY_SUMMARY] = name
        return fields
    if collection:
        fields[DB_COLLECTION] = collection
    fields[DB_QUERY_SUMMARY] = f"{name} {collection}" if collection else name
    if body is not None:
        text = _query_text(buf, name, collection, body, sequences, avail, avail >= length)
        if text is not None:
            fields[DB_QUERY_TEXT] = text
    return fields


def _reply_fields(buf: bytes) -> dict:
    header = _header(buf, RESPONSE_OP_CODES)
    if not isinstance(header, tuple) or header[3] == OP_COMPRESSED:
        return {}
    length, avail = header[0], min(header[0], len(buf))
    if header[3] == OP_REPLY:
        status = _op_reply(buf, length, avail)
        if isinstance(status, str):
            return {}
    else:
        message = _op_msg(buf, length, avail)
        if isinstance(message, str) or message[1] is None:
            return {}
        status = _reply_status(buf, message[1], avail)
    ok, code, code_name = status
    if ok is not False and code is None:
        return {ERROR: False}
    fields = {ERROR: True}
    if code is not None:
        fields[DB_RESPONSE_STATUS] = str(code)
    error_type = CODE_NAMES.get(code) or code_name
    if error_type:
        fields[ERROR_TYPE] = error_type
    return fields


def _message_count(buf: bytes) -> int:
    """Messages whose header the capture holds: pipelined ones (moreToCome) follow the first."""
    count = pos = 0
    while pos + HEADER_BYTES <= len(buf):
        header = _header(buf[pos : pos + HEADER_BYTES], REQUEST_OP_CODES)
        if not isinstance(header, tuple):
            break
        count += 1
        pos += header[0]
    return count


def _command_names(buf: bytes, body: _Document, avail: int) -> tuple[str | None, str | None, str | None]:
    """(command name, collection, "$db") of a command document, each None when not there."""
    if not body.elements:
        return None, None, None
    first = body.elements[0]
    name = first.key.decode("utf-8", "replace")
    if not _COMMAND_NAME.fullmatch(name):
        return None, None, None
    collection = database = None
    if name in COLLECTION_COMMANDS and first.type == _STRING_T:
        collection = _string(buf, first, avail)
    for element in body.elements[1:]:
        if element.type != _STRING_T:
            continue
        if element.key == b"$db":
            database = _string(buf, element, avail)
        elif element.key == b"collection" and name == GET_MORE:
            collection = _string(buf, element, avail)
    return name, collection or None, database or None


def _reply_status(buf: bytes, body: _Document, avail: int):
    """(ok, code, codeName) from the elements of a reply the bytes hold."""
    ok = code = code_name = None
    write_error = None
    for element in body.elements:
        key = element.key
        if key == b"ok":
            value = _number(buf, element, avail)
            ok = None if value is None else value != 0
        elif key == b"code":
            code = _integer(buf, element, avail)
        elif key == b"codeName":
            code_name = _code_name(buf, element, avail)
        elif key == b"$err" and ok is None:
            ok = False
        elif key == b"writeErrors" and element.type == _ARRAY_T and write_error is None:
            errors = _read_document(buf, element.start, element.end, avail)
            first = errors.elements[0] if errors and errors.elements else None
            if first and first.type == _DOCUMENT_T:
                write_error = _error_code(buf, first, avail)
        elif key == b"writeConcernError" and element.type == _DOCUMENT_T and write_error is None:
            write_error = _error_code(buf, element, avail)
    if code is None and write_error and write_error[0] is not None:
        code, code_name = write_error
    return ok, code, code_name


def _error_code(buf: bytes, element: _Element, avail: int) -> tuple[int | None, str | None]:
    doc = _read_document(buf, element.start, element.end, avail)
    code = code_name = None
    for field in doc.elements if doc else ():
        if field.key == b"code":
            code = _integer(buf, field, avail)
        elif field.key == b"codeName":
            code_name = _code_name(buf, field, avail)
    return code, code_name


def _query_text(buf, name, collection, body: _Document, sequences, avail, whole: bool) -> str | None:
    """The command's shape as JSON with every value "?", or None unless all of it was captured:
    the command document whole and, for a write, its first statement whole. A shape cut short
    would read as a different query, so it is left out rather than guessed.

    `whole`: the capture holds the whole message, so a section it lacks was never sent.
    """
    if not body.complete:
        return None
    if name in STATEMENT_FIELDS:
        shape = _statement_shape(buf, name, body, sequences, avail, whole)
    elif name in SHAPE_FIELDS:
        shape = _fields_shape(buf, body, SHAPE_FIELDS[name], avail)
    else:
        return None
    if shape is None:
        return None
    text = _JSON.encode({name: collection or "?", **shape})
    return safe_text(text, MAX_QUERY_TEXT_CHARS)


def _fields_shape(buf: bytes, doc: _Document, names, avail: int) -> dict | None:
    """{field: shape} for the fields of `names` in a whole document; None if one is not BSON."""
    wanted = {name.encode() for name in names}
    shape = {}
    for element in doc.elements:
        if element.key in wanted:
            value = _shape(buf, element, avail, 1)
            if value is None:
                return None
            shape[_key(element.key)] = value
    return shape


def _statement_shape(buf, name, body: _Document, sequences, avail, whole: bool) -> dict | None:
    """{"updates": [{"q": ..., "u": ...}]}: the shape of the first statement of a write.

    Drivers send the statements as a kind-1 sequence after the body; older ones as a body array.
    Batches repeat one shape, and a record stands for the whole command, so one is enough.
    """
    field, parts = STATEMENT_FIELDS[name]
    identifier = field.encode()
    statement = None
    sequence = next((s for s in sequences if s[0] == identifier), None)
    array = next((e for e in body.elements if e.key == identifier and e.type == _ARRAY_T), None)
    if sequence is not None:
        _, first, section_end = sequence
        statement = _read_document(buf, first, section_end, avail)
    elif array is not None:
        statements = _read_document(buf, array.start, array.end, avail)
        head = statements.elements[0] if statements and statements.elements else None
        if head and head.type == _DOCUMENT_T:
            statement = _read_document(buf, head.start, head.end, avail)
    elif whole:
        return {}  # a write without statements: the server will refuse it, the shape is empty
    if statement is None or not statement.complete:
        return None
    shape = _fields_shape(buf, statement, parts, avail)
    return None if shape is None else {field: [shape]}


def _shape(buf: bytes, element: _Element, avail: int, depth: int):
    """ "?" for a value; for documents {key: shape}; for arrays of documents [shape, ...]."""
    if element.type not in (_DOCUMENT_T, _ARRAY_T) or depth >= MAX_SHAPE_DEPTH:
        return "?"
    doc = _read_document(buf, element.start, element.end, avail)
    if doc is None or not doc.complete:
        return None
    children = []
    for child in doc.elements:
        value = _shape(buf, child, avail, depth + 1)
        if value is None:
            return None
        children.append((child.key, value))
    if element.type == _DOCUMENT_T:
        return {_key(key): value for key, value in children}
    if all(value == "?" for _, value in children):
        return "?"  # a list of values ($in, $nin, $all) is one value to the shape
    return [value for _, value in children]


# --- BSON, just enough ------------------------------------------------------------------------


def _read_document(buf: bytes, pos: int, bound: int, avail: int) -> _Document | None:
    """The elements of the document at `pos`, which must end by `bound`; None if it is not BSON.

    Bytes from `avail` on were not captured: the reading stops at the first element they cut,
    keeping a cut nested document or array (its start may still hold what is needed).
    """
    if pos + 4 > bound:
        return None
    if pos + 4 > avail:
        return _Document([], False, bound)
    length = _INT32.unpack_from(buf, pos)[0]
    end = pos + length
    if length < 5 or end > bound:
        return None
    if end <= avail and buf[end - 1] != 0:
        return None
    region_end, elements, at = end - 1, [], pos + 4
    search_end = min(region_end, avail)
    # This loop runs for every element of every captured command: plain tuples, the fixed-size
    # types inline, and one find() per key.
    while at < region_end:
        if at >= avail:
            return _Document(elements, False, end)
        element_type = buf[at]
        nul = buf.find(b"\x00", at + 1, search_end)
        if element_type == 0 or (nul < 0 and region_end <= avail):
            return None
        if nul < 0:
            return _Document(elements, False, end)
        size = _FIXED_SIZES.get(element_type)
        if size is not None:
            value_end = nul + 1 + size
            if value_end > region_end:
                return None
        else:
            value_end = _value_end(buf, element_type, nul + 1, region_end, avail)
            if value_end == _BAD:
                return None
        if value_end == _CUT or value_end > avail:
            if value_end != _CUT and element_type in (_DOCUMENT_T, _ARRAY_T):
                elements.append(_new_element((element_type, buf[at + 1 : nul], nul + 1, value_end)))
            return _Document(elements, False, end)
        elements.append(_new_element((element_type, buf[at + 1 : nul], nul + 1, value_end)))
        at = value_end
    return _Document(elements, end <= avail, end)


def _envelope(buf: bytes, pos: int, bound: int) -> int:
    """The end of a whole document at `pos` (length in bounds, NUL-terminated), or -1."""
    if pos + 4 > bound:
        return -1
    length = _INT32.unpack_from(buf, pos)[0]
    end = pos + length
    if length < 5 or end > bound or buf[end - 1] != 0:
        return -1
    return end


def _value_end(buf: bytes, element_type: int, pos: int, region_end: int, avail: int) -> int:
    """Where a variable-size value that starts at `pos` ends (the fixed sizes are read inline);
    _CUT if its size is past the captured bytes, _BAD if it cannot be BSON."""
    if element_type in (_STRING_T, _CODE_T, _SYMBOL_T, _DBPOINTER_T):
        end = _prefixed(buf, pos, region_end, avail, 4, 1)
        if end >= 0 and end <= avail and buf[end - 1] != 0:
            return _BAD
        if element_type == _DBPOINTER_T and end >= 0:
            end += 12
    elif element_type in (_DOCUMENT_T, _ARRAY_T):
        end = _prefixed(buf, pos, region_end, avail, 0, 5)
    elif element_type == _BINARY_T:
        end = _prefixed(buf, pos, region_end, avail, 5, 0)
    elif element_type == _CODE_W_SCOPE_T:
        end = _prefixed(buf, pos, region_end, avail, 0, 14)
    elif element_type == _REGEX_T:
        end = pos
        for _ in range(2):  # pattern and options, two C strings
            nul = buf.find(b"\x00", end, min(region_end, avail))
            if nul < 0:
                return _BAD if region_end <= avail else _CUT
            end = nul + 1
    else:
        return _BAD
    if end < 0:
        return end
    return end if end <= region_end else _BAD


def _prefixed(buf: bytes, pos: int, region_end: int, avail: int, extra: int, minimum: int) -> int:
    """End of a value led by an int32 size (plus `extra` bytes: a string's own size field)."""
    if pos + 4 > region_end:
        return _BAD
    if pos + 4 > avail:
        return _CUT
    size = _INT32.unpack_from(buf, pos)[0]
    if size < minimum:
        return _BAD
    return pos + extra + size


def _string(buf: bytes, element: _Element, avail: int) -> str | None:
    if element.type != _STRING_T or element.end > avail:
        return None
    return safe_text(buf[element.start + 4 : element.end - 1], MAX_NAME_CHARS) or None


def _number(buf: bytes, element: _Element, avail: int) -> float | int | None:
    if element.end > avail:
        return None
    if element.type == _DOUBLE_T:
        return _DOUBLE.unpack_from(buf, element.start)[0]
    if element.type == _INT32_T:
        return _INT32.unpack_from(buf, element.start)[0]
    if element.type == _INT64_T:
        return _INT64.unpack_from(buf, element.start)[0]
    if element.type == _BOOL_T:
        return buf[element.start]
    return None


def _integer(buf: bytes, element: _Element, avail: int) -> int | None:
    """An error code: any integral number, within int32 as mongod's are."""
    value = _number(buf, element, avail)
    if value is None or element.type == _BOOL_T:
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if -(2**31) <= value < 2**31 else None


def _code_name(buf: bytes, element: _Element, avail: int) -> str | None:
    name = _string(buf, element, avail)
    return name if name and _CODE_NAME.fullmatch(name) else None


def _name(raw: bytes) -> str | None:
    return safe_text(raw, MAX_NAME_CHARS) or None


@lru_cache(maxsize=4096)  # field names repeat across queries; the cache is bounded
def _key(raw: bytes) -> str:
    return safe_text(raw, MAX_KEY_CHARS)
