"""MySQL / MariaDB client/server protocol: framing of single packets, and reading of a capture.

Every packet is a 3-byte little-endian payload length, a sequence id, then the payload. The
sequence id starts at 0 with each command and counts up through its answer, so it tells a command
(0) from the login's later packets (1 and up) on the client side, and the server's greeting (0)
from answers (1 and up) on the server side. The payload is not self-describing: an answer packet
is classified by its first byte (OK 0x00, ERR 0xff, EOF 0xfe, ...) and anything else in a result
set (column definitions, rows) is "Data".

As for HTTP (probes/protocols/http1.py): parse_request / parse_response frame ONE packet
strictly (every prefix is NEED_MORE, what no conforming peer sends is INVALID), and summarize
reads what the kernel captured of one exchange.

Secrets: the auth data of the HandshakeResponse and of COM_CHANGE_USER, and every packet of an
authentication exchange after it (auth switch responses, RSA-encrypted or cleartext passwords),
are never read; COM_STMT_EXECUTE parameter values are never decoded. COM_QUERY and
COM_STMT_PREPARE packets carry the SQL as sent, literals included: only
probes.protocols.sql.normalize_query output leaves through summarize.
Formats: https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html and
https://mariadb.com/kb/en/clientserver-protocol/
"""

from dataclasses import dataclass, field

from probes import schema
from probes.protocols import NEED_MORE_RESULT, OK, ParseResult, as_bytes, invalid
from probes.protocols.sql import OPERATION_PREPARE, query_fields
from probes.redact import DEFAULT_POLICY, Policy, safe_text

HEADER_BYTES = 4
MAX_PAYLOAD = 0xFFFFFF  # a payload of exactly this length continues in the next packet
PROTOCOL_10 = 10  # the greeting's protocol version, the only one since MySQL 3.21
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000
HANDSHAKE_FIXED_BYTES = 32  # capabilities, max packet size, charset, 23 reserved bytes
MIN_OK_BYTES = 7  # header byte, two 1-byte length-encoded integers, status, warnings
MAX_EOF_BYTES = 9  # a 0xfe packet this short is EOF; a row starting with 0xfe is far longer
MAX_TEXT_CHARS = 512
OPERATION_STARTUP = "STARTUP"
OPERATION_AUTH = "AUTH"
OPERATION_EXECUTE = "EXECUTE"

COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_BULK_EXECUTE = 0xFA  # MariaDB

# command byte -> (packet name, operation, payload size: exact int, (minimum,) or None for any)
COMMANDS = {
    COM_QUIT: ("COM_QUIT", "QUIT", 1),
    COM_INIT_DB: ("COM_INIT_DB", "INIT_DB", (1,)),
    COM_QUERY: ("COM_QUERY", "QUERY", (1,)),
    0x04: ("COM_FIELD_LIST", "FIELD_LIST", (2,)),
    0x05: ("COM_CREATE_DB", "CREATE_DB", (1,)),
    0x06: ("COM_DROP_DB", "DROP_DB", (1,)),
    0x07: ("COM_REFRESH", "REFRESH", 2),
    0x08: ("COM_SHUTDOWN", "SHUTDOWN", None),
    0x09: ("COM_STATISTICS", "STATISTICS", 1),
    0x0A: ("COM_PROCESS_INFO", "PROCESS_INFO", 1),
    0x0C: ("COM_PROCESS_KILL", "PROCESS_KILL", 5),
    0x0D: ("COM_DEBUG", "DEBUG", 1),
    0x0E: ("COM_PING", "PING", 1),
    0x11: ("COM_CHANGE_USER", "CHANGE_USER", (2,)),
    0x12: ("COM_BINLOG_DUMP", "BINLOG_DUMP", (11,)),
    0x15: ("COM_REGISTER_SLAVE", "REGISTER_SLAVE", (1,)),
    COM_STMT_PREPARE: ("COM_STMT_PREPARE", OPERATION_PREPARE, (1,)),
    COM_STMT_EXECUTE: ("COM_STMT_EXECUTE", OPERATION_EXECUTE, (10,)),
    COM_STMT_SEND_LONG_DATA: ("COM_STMT_SEND_LONG_DATA", "SEND_LONG_DATA", (7,)),
    COM_STMT_CLOSE: ("COM_STMT_CLOSE", "CLOSE", 5),
    0x1A: ("COM_STMT_RESET", "RESET", 5),
    0x1B: ("COM_SET_OPTION", "SET_OPTION", 3),
    0x1C: ("COM_STMT_FETCH", "FETCH", 9),
    0x1E: ("COM_BINLOG_DUMP_GTID", "BINLOG_DUMP", (1,)),
    0x1F: ("COM_RESET_CONNECTION", "RESET_CONNECTION", 1),
    COM_STMT_BULK_EXECUTE: ("COM_STMT_BULK_EXECUTE", OPERATION_EXECUTE, (7,)),
}
# Commands the server does not answer: the next command's bytes join their exchange.
UNANSWERED_COMMANDS = frozenset({COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA})
EXECUTIONS = frozenset({COM_QUERY, COM_STMT_EXECUTE, COM_STMT_BULK_EXECUTE})


@dataclass(frozen=True, slots=True)
class Packet:
    name: str  # "COM_QUERY", "HandshakeResponse", "OK", "ERR", "Data", ...
    sequence: int
    size: int  # bytes on the wire, header included
    text: str = ""  # COM_QUERY, COM_STMT_PREPARE: the SQL as sent, literals and all
    fields: dict = field(default_factory=dict)  # the rest, per packet; see the readers below


def parse_request(buf: bytes) -> ParseResult:
    """Frame one client packet at the start of `buf`; message = Packet.

    Sequence 0 is a command; sequence 1 a HandshakeResponse or SSLRequest when it looks like
    one; anything later (an auth switch response, LOCAL INFILE data, the continuation of a
    command longer than 16 MiB) is "Data", never read.
    """
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    if len(buf) < HEADER_BYTES:
        return NEED_MORE_RESULT
    length, sequence = int.from_bytes(buf[:3], "little"), buf[3]
    if sequence == 0:
        checked = _check_command(buf, length)
        if checked is not None:
            return checked
    if len(buf) < HEADER_BYTES + length:
        return NEED_MORE_RESULT
    payload, size = buf[HEADER_BYTES : HEADER_BYTES + length], HEADER_BYTES + length
    if sequence == 0:
        content = _command(payload)
    elif sequence == 1 and _looks_like_handshake(payload):
        content = _handshake_response(payload)
    else:
        content = ("Data", {})
    if isinstance(content, str):
        return invalid(content)
    name, fields, *text = content
    return ParseResult(OK, size, Packet(name, sequence, size, text[0] if text else "", fields))


def parse_response(buf: bytes) -> ParseResult:
    """Frame one server packet at the start of `buf`; message = Packet.

    Sequence 0 must be the greeting (protocol 10) or an ERR refusing the connection; later
    packets are OK, ERR, EOF, AuthSwitchRequest, ResultSetHeader (sequence 1: the column count),
    LocalInfileRequest, or Data (column definitions, text rows, more auth data). The name is
    what the first byte says out of context: COM_STMT_PREPARE's answer and binary-protocol rows
    start with 0x00 as OK does, and are named OK; the framing is exact whatever the name.
    """
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    if len(buf) < HEADER_BYTES:
        return NEED_MORE_RESULT
    length, sequence = int.from_bytes(buf[:3], "little"), buf[3]
    if length == 0:
        return invalid("empty server packet")
    if len(buf) > HEADER_BYTES:
        first = buf[HEADER_BYTES]
        if sequence == 0 and first not in (PROTOCOL_10, 0xFF):
            return invalid(f"server packet 0 is neither a v10 greeting nor ERR (first byte {first:#04x})")
        if first == 0xFE and length < MAX_EOF_BYTES and length != 5:
            return invalid(f"EOF of {length} bytes")
    if len(buf) < HEADER_BYTES + length:
        return NEED_MORE_RESULT
    payload, size = buf[HEADER_BYTES : HEADER_BYTES + length], HEADER_BYTES + length
    content = (
        _greeting(payload) if sequence == 0 and payload[0] == PROTOCOL_10 else _answer(payload, sequence)
    )
    if isinstance(content, str):
        return invalid(content)
    name, fields = content
    return ParseResult(OK, size, Packet(name, sequence, size, fields=fields))


def summarize(request: bytes, response: bytes, policy: Policy = DEFAULT_POLICY) -> dict | None:
    """The record attributes of one captured exchange, or None when `request` is not MySQL.

    See probes.protocols for the contract. COM_QUERY gives the operation, table and query text of
    its SQL. COM_STMT_PREPARE alone is operation PREPARE with the text; followed by an execution
    in the same capture (MariaDB's prepare-and-execute in one write) it is the SQL's operation.
    COM_STMT_EXECUTE alone is operation EXECUTE with "EXECUTE <statement id>" as text: the SQL
    was prepared in an earlier exchange. The HandshakeResponse is STARTUP, later login packets
    AUTH. An ERR anywhere in the response capture sets ERROR, with the error number as
    DB_RESPONSE_STATUS and the SQLSTATE (else the number) as ERROR_TYPE. The query text keeps its
    literals only when `policy` says so (probes.redact.Policy.sql_literals).
    """
    request, response = as_bytes(request), as_bytes(response) or b""
    if not request:
        return None
    packets = list(_captured(request))
    if not packets:
        return None
    sequence, payload, _cut = packets[0]
    if sequence == 0:
        fields = _command_fields(packets, policy)
    elif sequence == 1 and _looks_like_handshake(payload):
        fields = {schema.DB_OPERATION: OPERATION_STARTUP}  # user, auth data and attributes unread
    else:
        fields = {schema.DB_OPERATION: OPERATION_AUTH}
    if fields is None:
        return None
    fields[schema.DB_SYSTEM] = schema.PROTO_MYSQL
    fields.update(_response_fields(response))
    return fields


# --- strict framing: requests -----------------------------------------------------------------


def _check_command(buf: bytes, length: int) -> ParseResult | None:
    """INVALID as soon as the command byte shows a command that cannot be, else None."""
    if length == 0:
        return invalid("empty command packet")
    if len(buf) == HEADER_BYTES:
        return None
    command = COMMANDS.get(buf[HEADER_BYTES])
    if command is None:
        return invalid(f"unknown command {buf[HEADER_BYTES]:#04x}")
    name, _operation, size = command
    if isinstance(size, int) and length != size:
        return invalid(f"{name} of {length} bytes, expected {size}")
    if isinstance(size, tuple) and length < size[0]:
        return invalid(f"{name} of {length} bytes, expected at least {size[0]}")
    return None


def _command(payload: bytes) -> tuple | str:
    command = payload[0]
    name = COMMANDS[command][0]
    if command in (COM_QUERY, COM_STMT_PREPARE):
        text = _query_text(payload) if command == COM_QUERY else payload[1:]
        return name, {}, "" if text is None else _sql(text)
    if command in (
        COM_STMT_EXECUTE,
        COM_STMT_CLOSE,
        COM_STMT_SEND_LONG_DATA,
        0x1A,
        0x1C,
        COM_STMT_BULK_EXECUTE,
    ):
        return name, {"statement_id": int.from_bytes(payload[1:5], "little")}  # values stay unread
    if command == COM_INIT_DB:
        return name, {"schema": safe_text(payload[1:], limit=64)}
    return name, {}  # COM_CHANGE_USER's auth data included: unread


def _query_text(payload: bytes) -> bytes | None:
    """The SQL of a COM_QUERY. With MySQL 8's query attributes (CLIENT_QUERY_ATTRIBUTES) a
    parameter count and a set count (always 1) come first: 00 01 when there are none. With
    attributes set the SQL follows their values, which are not decoded: None."""
    if payload[1:3] == b"\x00\x01":
        return payload[3:]
    if len(payload) > 2 and 0 < payload[1] < 0x09 and payload[2] == 1:  # no SQL starts so
        return None
    return payload[1:]


def _looks_like_handshake(payload: bytes) -> bool:
    if len(payload) < HANDSHAKE_FIXED_BYTES:
        return False
    capabilities = int.from_bytes(payload[:4], "little")
    return bool(capabilities & CLIENT_PROTOCOL_41) and payload[13:32].count(0) == 19


def _handshake_response(payload: bytes) -> tuple | str:
    capabilities = int.from_bytes(payload[:4], "little")
    if len(payload) == HANDSHAKE_FIXED_BYTES:
        if not capabilities & CLIENT_SSL:
            return "32-byte handshake without CLIENT_SSL"
        return "SSLRequest", {"capabilities": capabilities}
    user, pos = _cstring(payload, HANDSHAKE_FIXED_BYTES)
    if user is None:
        return "HandshakeResponse: unterminated user name"
    if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        size, pos = _lenenc(payload, pos)
    elif capabilities & CLIENT_SECURE_CONNECTION:
        size, pos = (payload[pos], pos + 1) if pos < len(payload) else (None, pos)
    else:
        end = payload.find(b"\x00", pos)
        size = end - pos if end >= 0 else None
    if size is None or pos + size > len(payload):
        return "HandshakeResponse: auth data overruns the packet"
    pos += size  # the auth data: never read
    fields = {"capabilities": capabilities, "user": safe_text(user, limit=64)}
    if capabilities & CLIENT_CONNECT_WITH_DB and pos < len(payload):
        database, pos = _cstring(payload, pos)
        if database is None:
            return "HandshakeResponse: unterminated database name"
        fields["database"] = safe_text(database, limit=64)
    if capabilities & CLIENT_PLUGIN_AUTH and pos < len(payload):
        plugin, pos = _cstring(payload, pos)
        if plugin is None:
            return "HandshakeResponse: unterminated auth plugin name"
        fields["auth_plugin"] = safe_text(plugin, limit=64)
    return "HandshakeResponse", fields  # connection attributes, if any, stay unread


# --- strict framing: responses ----------------------------------------------------------------


def _greeting(payload: bytes) -> tuple | str:
    version, pos = _cstring(payload, 1)
    if version is None or pos + 4 + 8 + 1 + 2 > len(payload):
        return "greeting: truncated before its capabilities"
    connection_id = int.from_bytes(payload[pos : pos + 4], "little")
    pos += 4 + 8 + 1  # the first 8 bytes of the auth challenge and a filler
    capabilities = int.from_bytes(payload[pos : pos + 2], "little")
    pos += 2
    fields = {"version": safe_text(version, limit=64), "connection_id": connection_id}
    if pos + 16 <= len(payload):  # charset, status, upper capabilities, challenge length, reserved
        capabilities |= int.from_bytes(payload[pos + 3 : pos + 5], "little") << 16
        challenge_length = payload[pos + 5]
        pos += 16
        if capabilities & CLIENT_SECURE_CONNECTION:
            pos += max(13, challenge_length - 8)
        if capabilities & CLIENT_PLUGIN_AUTH and pos < len(payload):
            plugin, _end = _cstring(payload, pos)
            if plugin is None:  # MySQL 5.5.7 to 5.5.9 left it unterminated
                plugin = payload[pos:]
            fields["auth_plugin"] = safe_text(plugin, limit=64)
    fields["capabilities"] = capabilities
    return "Greeting", fields


def _answer(payload: bytes, sequence: int) -> tuple | str:
    first = payload[0]
    if first == 0xFF:
        return _err(payload)
    if first == 0x00 and len(payload) >= MIN_OK_BYTES:
        ok = _ok(payload)
        if not isinstance(ok, str):
            return ok
        # else a text row whose first column is an empty string
    if first == 0xFE and len(payload) < MAX_EOF_BYTES:
        return "EOF", {"warnings": int.from_bytes(payload[1:3], "little")}
    if first == 0xFE and len(payload) < MAX_PAYLOAD:
        if 0x61 <= payload[1] <= 0x7A:  # a lower-case plugin name: mysql_native_password, ...
            plugin, _end = _cstring(payload, 1)
            return "AuthSwitchRequest", {"auth_plugin": safe_text(plugin or b"", limit=64)}
        return _ok(payload)  # OK in place of EOF (CLIENT_DEPRECATE_EOF)
    if sequence == 1 and first == 0xFB:
        return "LocalInfileRequest", {}
    if sequence == 1:
        count, end = _lenenc(payload, 0)
        if count and end in (len(payload), len(payload) - 1):  # MariaDB may add a metadata flag
            return "ResultSetHeader", {"columns": count}
    return "Data", {}


def _err(payload: bytes) -> tuple | str:
    if len(payload) < 3:
        return "ERR without an error code"
    fields = {"code": int.from_bytes(payload[1:3], "little")}
    message = payload[3:]
    if message[:1] == b"#":
        if len(message) < 6:
            return "ERR with a truncated SQLSTATE"
        fields["sqlstate"] = message[1:6].decode("ascii", errors="replace")
        message = message[6:]
    # May quote values ("Duplicate entry 'alice@example.com' for key 'email'"): summarize never
    # uses it.
    fields["message"] = safe_text(message, limit=MAX_TEXT_CHARS)
    return "ERR", fields


def _ok(payload: bytes) -> tuple | str:
    affected, pos = _lenenc(payload, 1)
    last_insert_id, pos = _lenenc(payload, pos)
    if affected is None or last_insert_id is None or pos + 4 > len(payload):
        return "OK: truncated"
    return "OK", {"affected_rows": affected, "last_insert_id": last_insert_id}


# --- reading a capture ------------------------------------------------------------------------


def _captured(buf: bytes):
    """(sequence, payload, cut) of each packet of a capture, up to the one the capture ends in."""
    pos = 0
    while pos + HEADER_BYTES < len(buf):
        length = int.from_bytes(buf[pos : pos + 3], "little")
        if length == 0:
            return
        end = pos + HEADER_BYTES + length
        yield buf[pos + 3], buf[pos + HEADER_BYTES : end], end > len(buf)
        pos = end


def _command_fields(packets: list, policy: Policy) -> dict | None:
    commands = [(payload[0], payload, cut) for sequence, payload, cut in packets if sequence == 0]
    if commands[0][0] not in COMMANDS:
        return None
    # The server answers neither COM_STMT_CLOSE nor COM_QUIT: what follows is the exchange.
    main = next((c for c in commands if c[0] not in UNANSWERED_COMMANDS and c[0] in COMMANDS), commands[0])
    command, payload, cut = main
    executions = sum(1 for c in commands if c[0] in EXECUTIONS)
    fields = {}
    if command in (COM_QUERY, COM_STMT_PREPARE):
        text = _query_text(payload) if command == COM_QUERY else payload[1:]
        if text is not None:
            # A cut COM_STMT_PREPARE may hide the execution that followed it in the same write.
            prepared_only = command == COM_STMT_PREPARE and not executions and not cut
            fields = _text_fields(text, cut, prepared_only, policy)
    if not fields:
        fields[schema.DB_OPERATION] = COMMANDS[command][1]
        if command in (COM_STMT_EXECUTE, COM_STMT_BULK_EXECUTE) and len(payload) >= 5:
            statement_id = int.from_bytes(payload[1:5], "little")
            fields[schema.DB_QUERY_TEXT] = f"{OPERATION_EXECUTE} {statement_id}"
    if executions:
        fields[schema.REQUEST_COUNT] = executions
    return {key: value for key, value in fields.items() if value != ""}


def _text_fields(raw: bytes, cut: bool, prepared_only: bool, policy: Policy) -> dict:
    return query_fields(raw, schema.PROTO_MYSQL, cut, prepared_only, policy)


def _response_fields(response: bytes) -> dict:
    # No row or column definition starts with 0xff (it is no length-encoded integer), so any
    # packet that does is an ERR, wherever it is in the capture.
    for _sequence, payload, _cut in _captured(response):
        if payload[:1] == b"\xff" and len(payload) >= 3:
            code = str(int.from_bytes(payload[1:3], "little"))
            sqlstate = payload[4:9].decode("ascii", errors="replace") if payload[3:4] == b"#" else ""
            error_type = sqlstate if len(sqlstate) == 5 and sqlstate.isalnum() else code
            return {schema.ERROR: True, schema.ERROR_TYPE: error_type, schema.DB_RESPONSE_STATUS: code}
    return {schema.ERROR: False}


# --- shared helpers ---------------------------------------------------------------------------


def _lenenc(payload: bytes, pos: int) -> tuple[int | None, int]:
    """A length-encoded integer at `pos`: (value, position after it), or (None, pos)."""
    if pos >= len(payload):
        return None, pos
    first = payload[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None or pos + 1 + size > len(payload):
        return None, pos
    return int.from_bytes(payload[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def _cstring(payload: bytes, pos: int) -> tuple[bytes | None, int]:
    end = payload.find(b"\x00", pos)
    if end < 0:
        return None, pos
    return payload[pos:end], end + 1


def _sql(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")
