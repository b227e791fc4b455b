"""Redis serialization protocol, RESP2 and RESP3: framing of commands and replies, and reading of
captured exchanges.

Two kinds of reader, as for HTTP (probes/protocols/http1.py):
- parse_request / parse_response frame ONE command or ONE reply at the start of a reassembled byte
  stream, strictly: every prefix of a valid frame is NEED_MORE, anything Redis or its clients
  would not send is INVALID. The bounds below (MAX_DEPTH, MAX_ELEMENTS, MAX_BULK_BYTES,
  MAX_LINE_BYTES) cap the work and memory hostile bytes can cost, and a frame that would break
  one is INVALID as soon as the bytes that break it arrive.
- summarize reads what the kernel captured of one exchange: the first bytes the client wrote
  (often a whole pipeline, possibly cut inside a command) and the first bytes of the answer.

A command is an array of bulk strings (what every client library sends) or an inline command, one
line of words as typed into telnet (what `redis-cli --pipe` passes on from its input). Blank lines
before a command are skipped, as Redis skips them: redis-cli --pipe sends one, replicas and
masters send them to keep a link alive.

Privacy: commands carry credentials (AUTH, HELLO ... AUTH, CONFIG SET requirepass, MIGRATE ...
AUTH / AUTH2, ACL SETUSER) and personal data in keys and values; replies carry values (CONFIG GET
requirepass answers with the password). Nothing summarize returns is read from an argument or a
value: db.operation.name is a known command name (COMMANDS), db.query.text adds a subcommand from
SUBCOMMANDS and one `?` per argument, error.type is the upper-case prefix of an error reply,
never its message. Keys are not stored
either (no db.collection.name): they are often personal data too ("user:alice@example.com").
A host's redaction policy can hide the subcommand too, for the commands it lists
(probes.redact.Policy.redis_commands_masked): `CONFIG ? ? ?` instead of `CONFIG SET ? ?` when it
lists CONFIG, or CONFIG|SET (ACL's notation) for that subcommand alone.
The frames parse_request and parse_response return hold the raw bytes, so their repr leaves them
out: a log line must not leak a password.
"""

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from probes import schema
from probes.protocols import NEED_MORE_RESULT, OK, ParseResult, as_bytes, invalid
from probes.redact import CUT_MARKER, DEFAULT_POLICY, Policy

# Bounds on one frame. Real traffic stays far below each; past one, the bytes are an attack or
# not Redis, and the frame is INVALID rather than parsed at any cost.
MAX_DEPTH = 64  # aggregates inside aggregates; Redis's deepest replies (XINFO STREAM FULL) use a few
MAX_ELEMENTS = 1024 * 1024  # elements in one frame, all levels together (a map entry counts two)
MAX_BULK_BYTES = 512 * 1024 * 1024  # Redis's default proto-max-bulk-len: no bulk string is longer
MAX_LINE_BYTES = 64 * 1024  # simple strings, errors, inline commands: Redis's PROTO_INLINE_MAX_SIZE
MAX_BLANK_BYTES = 64 * 1024  # blank lines skipped before one command
MAX_COMMAND_NAME_BYTES = 64  # the longest real names (module commands included) have about 30
# Python's int() refuses decimal strings over 4300 digits (sys.int_info.default_max_str_digits).
MAX_BIG_NUMBER_DIGITS = 4096
# What summarize puts into a record.
MAX_QUERY_ARGS = 16  # `?` placeholders in db.query.text; past these, CUT_MARKER says there were more
MAX_ERROR_PREFIX_CHARS = 32  # Redis's own error statistics look for the prefix in the first 32 bytes
GENERIC_ERROR = "ERR"  # the class of an error reply without a prefix, as Redis counts it
ERROR_TYPE_UNKNOWN = "_OTHER"  # OpenTelemetry's error.type when the class is not known: the
# capture ended inside the prefix

# Reply kinds (RESP3 names; RESP2 has the first six). An attribute is not a reply of its own: it
# travels in Reply.attributes of the reply it precedes.
SIMPLE_STRING = "simple_string"
SIMPLE_ERROR = "simple_error"
INTEGER = "integer"
BULK_STRING = "bulk_string"
ARRAY = "array"
NULL = "null"  # RESP3 `_`, and RESP2's null bulk string `$-1` and null array `*-1`
BOOLEAN = "boolean"
DOUBLE = "double"
BIG_NUMBER = "big_number"
BULK_ERROR = "bulk_error"
VERBATIM_STRING = "verbatim_string"
MAP = "map"
SET = "set"
PUSH = "push"  # out-of-band data (invalidations, pub/sub), not an answer to a command
ERROR_KINDS = frozenset({SIMPLE_ERROR, BULK_ERROR})

# The command names db.operation.name shows: an allowlist, because the first word of a capture
# is not always a command. A client that writes a big value in pieces (Jedis and Lettuce flush at
# their buffer size, redis-py writes values over 6 KB on their own) hands the kernel captures that
# start inside the value, and "Dear Alice, ..." must not become operation DEAR. Redis 7.0's
# COMMAND LIST, the commands of 7.2 to 8.2, and the commands of the usual modules (FT.SEARCH,
# JSON.GET, ...); any other name is OTHER_OPERATION, OpenTelemetry's word for one outside the set.
COMMANDS = frozenset(
    """
    ACL APPEND ASKING AUTH BGREWRITEAOF BGSAVE BITCOUNT BITFIELD BITFIELD_RO BITOP BITPOS BLMOVE
    BLMPOP BLPOP BRPOP BRPOPLPUSH BZMPOP BZPOPMAX BZPOPMIN CLIENT CLUSTER COMMAND CONFIG COPY DBSIZE
    DEBUG DECR DECRBY DEL DISCARD DUMP ECHO EVAL EVALSHA EVALSHA_RO EVAL_RO EXEC EXISTS EXPIRE
    EXPIREAT EXPIRETIME FAILOVER FCALL FCALL_RO FLUSHALL FLUSHDB FUNCTION GEOADD GEODIST GEOHASH
    GEOPOS GEORADIUS GEORADIUSBYMEMBER GEORADIUSBYMEMBER_RO GEORADIUS_RO GEOSEARCH GEOSEARCHSTORE GET
    GETBIT GETDEL GETEX GETRANGE GETSET HDEL HELLO HEXISTS HGET HGETALL HINCRBY HINCRBYFLOAT HKEYS
    HLEN HMGET HMSET HRANDFIELD HSCAN HSET HSETNX HSTRLEN HVALS INCR INCRBY INCRBYFLOAT INFO KEYS
    LASTSAVE LATENCY LCS LINDEX LINSERT LLEN LMOVE LMPOP LOLWUT LPOP LPOS LPUSH LPUSHX LRANGE LREM
    LSET LTRIM MEMORY MGET MIGRATE MODULE MONITOR MOVE MSET MSETNX MULTI OBJECT PERSIST PEXPIRE
    PEXPIREAT PEXPIRETIME PFADD PFCOUNT PFDEBUG PFMERGE PFSELFTEST PING PSETEX PSUBSCRIBE PSYNC PTTL
    PUBLISH PUBSUB PUNSUBSCRIBE QUIT RANDOMKEY READONLY READWRITE RENAME RENAMENX REPLCONF REPLICAOF
    RESET RESTORE RESTORE-ASKING ROLE RPOP RPOPLPUSH RPUSH RPUSHX SADD SAVE SCAN SCARD SCRIPT SDIFF
    SDIFFSTORE SELECT SET SETBIT SETEX SETNX SETRANGE SHUTDOWN SINTER SINTERCARD SINTERSTORE
    SISMEMBER SLAVEOF SLOWLOG SMEMBERS SMISMEMBER SMOVE SORT SORT_RO SPOP SPUBLISH SRANDMEMBER SREM
    SSCAN SSUBSCRIBE STRLEN SUBSCRIBE SUBSTR SUNION SUNIONSTORE SUNSUBSCRIBE SWAPDB SYNC TIME TOUCH
    TTL TYPE UNLINK UNSUBSCRIBE UNWATCH WAIT WATCH XACK XADD XAUTOCLAIM XCLAIM XDEL XGROUP XINFO XLEN
    XPENDING XRANGE XREAD XREADGROUP XREVRANGE XSETID XTRIM ZADD ZCARD ZCOUNT ZDIFF ZDIFFSTORE
    ZINCRBY ZINTER ZINTERCARD ZINTERSTORE ZLEXCOUNT ZMPOP ZMSCORE ZPOPMAX ZPOPMIN ZRANDMEMBER ZRANGE
    ZRANGEBYLEX ZRANGEBYSCORE ZRANGESTORE ZRANK ZREM ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE
    ZREVRANGE ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN ZSCORE ZUNION ZUNIONSTORE
    WAITAOF
    HEXPIRE HEXPIREAT HEXPIRETIME HPERSIST HPEXPIRE HPEXPIREAT HPEXPIRETIME HPTTL HTTL
    HGETDEL HGETEX HSETEX VADD VCARD VDIM VEMB VGETATTR VINFO VLINKS VRANDMEMBER VREM VSETATTR VSIM
    XACKDEL XDELEX
    """.split()
)
MODULE_PREFIXES = frozenset("FT JSON TS BF CF CMS TOPK TDIGEST GRAPH AI RG".split())  # FT.SEARCH
OTHER_OPERATION = "_OTHER"

# Subcommands kept in db.query.text, per command (Redis 7 COMMAND LIST, and DEBUG HELP): an
# allowlist too, so a first argument is only shown when it is a known word and never a value.
SUBCOMMANDS = {
    name: frozenset(words.split())
    for name, words in {
        "ACL": "CAT DELUSER DRYRUN GENPASS GETUSER HELP LIST LOAD LOG SAVE SETUSER USERS WHOAMI",
        "CLIENT": "CACHING GETNAME GETREDIR HELP ID INFO KILL LIST MAINT_NOTIFICATIONS NO-EVICT "
        "NO-TOUCH PAUSE REPLY SETINFO SETNAME TRACKING TRACKINGINFO UNBLOCK UNPAUSE",
        "CLUSTER": "ADDSLOTS ADDSLOTSRANGE BUMPEPOCH COUNT-FAILURE-REPORTS COUNTKEYSINSLOT DELSLOTS "
        "DELSLOTSRANGE FAILOVER FLUSHSLOTS FORGET GETKEYSINSLOT HELP INFO KEYSLOT LINKS MEET MYID "
        "MYSHARDID NODES REPLICAS REPLICATE RESET SAVECONFIG SET-CONFIG-EPOCH SETSLOT SHARDS SLAVES "
        "SLOTS",
        "COMMAND": "COUNT DOCS GETKEYS GETKEYSANDFLAGS HELP INFO LIST",
        "CONFIG": "GET HELP RESETSTAT REWRITE SET",
        "DEBUG": "AOF-FLUSH-SLEEP ASSERT CHANGE-REPL-ID CLIENT-EVICTION CONFIG-REWRITE-FORCE-ALL "
        "CRASH-AND-RECOVER DIGEST DIGEST-VALUE DROP-CLUSTER-PACKET-FILTER ERROR HELP HTSTATS "
        "HTSTATS-KEY JMAP LEAK LISTPACK LOADAOF LOG MALLCTL MALLCTL-STR OBJECT OOM PANIC PAUSE-CRON "
        "POPULATE PROTOCOL QUICKLIST QUICKLIST-PACKED-THRESHOLD RELOAD REPLICATE REPLYBUFFER "
        "RESTART SDSLEN SEGFAULT SET-ACTIVE-EXPIRE SET-SKIP-CHECKSUM-VALIDATION SLEEP "
        "STRINGMATCH-TEST STRUCTSIZE",
        "FUNCTION": "DELETE DUMP FLUSH HELP KILL LIST LOAD RESTORE STATS",
        "LATENCY": "DOCTOR GRAPH HELP HISTOGRAM HISTORY LATEST RESET",
        "MEMORY": "DOCTOR HELP MALLOC-STATS PURGE STATS USAGE",
        "MODULE": "HELP LIST LOAD LOADEX UNLOAD",
        "OBJECT": "ENCODING FREQ HELP IDLETIME REFCOUNT",
        "PUBSUB": "CHANNELS HELP NUMPAT NUMSUB SHARDCHANNELS SHARDNUMSUB",
        "SCRIPT": "DEBUG EXISTS FLUSH HELP KILL LOAD",
        "SLOWLOG": "GET HELP LEN RESET",
        "XGROUP": "CREATE CREATECONSUMER DELCONSUMER DESTROY HELP SETID",
        "XINFO": "CONSUMERS GROUPS HELP STREAM",
    }.items()
}

# The first byte of every frame says its type.
_SIMPLE_STRING, _SIMPLE_ERROR, _INTEGER, _BULK, _ARRAY, _NULL, _BOOLEAN = b"+-:$*_#"
_DOUBLE, _BIG_NUMBER, _BULK_ERROR, _VERBATIM, _MAP, _SET, _PUSH, _ATTRIBUTE = b",(!=%~>|"
_SEQUENCES = {_ARRAY: ARRAY, _SET: SET, _PUSH: PUSH}
_LF = ord("\n")
# Lengths and integers are spelled as Redis's string2ll (and hiredis) accept them: no plus sign,
# no leading zeros, no "-0".
_DECIMAL = re.compile(rb"0|-?[1-9][0-9]*")
_DECIMAL_PREFIX = re.compile(rb"-?|0|-?[1-9][0-9]*")
_MAX_DECIMAL_LINE = 20  # "-9223372036854775808"
_DOUBLE_TEXT = re.compile(rb"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|-?inf|nan")
_DOUBLE_PREFIX = re.compile(
    rb"[+-]?(?:[0-9]+(?:\.(?:[0-9]+(?:[eE][+-]?[0-9]*)?)?|[eE][+-]?[0-9]*)?)?|-?i(?:nf?)?|n(?:an?)?"
)
_BIG_NUMBER_TEXT = re.compile(rb"-?[0-9]+")
_BIG_NUMBER_PREFIX = re.compile(rb"-?[0-9]*")
_VERBATIM_FORMAT = re.compile(rb"[a-z]{3}:")  # "txt:", "mkd:"
_VERBATIM_FORMAT_PREFIX = re.compile(rb"[a-z]{0,3}|[a-z]{3}:")
_COMMAND_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_.\-]{0,%d}" % (MAX_COMMAND_NAME_BYTES - 1))
_COMMAND_NAME_PREFIX = re.compile(rb"(?:[A-Za-z_][A-Za-z0-9_.\-]*)?")
_INLINE_TEXT = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # no control characters but tab
_INLINE_START = re.compile(rb"[ \t]*(?:[A-Za-z_\"']|$)")  # a name, or a quoted one
_INLINE_NAME = re.compile(rb"[ \t]*([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]")
_INLINE_BLANKS = b" \t"
_BACKSLASH, _DOUBLE_QUOTE, _SINGLE_QUOTE = b"\\\"'"
_INLINE_ESCAPES = {ord("n"): ord("\n"), ord("r"): ord("\r"), ord("t"): ord("\t"), ord("b"): 8, ord("a"): 7}
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_ERROR_PREFIX = re.compile(rb"[A-Z][A-Z0-9_\-]{0,%d}" % (MAX_ERROR_PREFIX_CHARS - 1))


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # upper-case
    args: tuple[bytes, ...] = field(repr=False)  # the arguments after the name: may be credentials
    inline: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply. `value` by kind: bytes for the string and error kinds (a verbatim string without
    its three-letter format), int for INTEGER and BIG_NUMBER, float, bool, None for NULL, a tuple
    of Reply for ARRAY, SET and PUSH, a tuple of (key, value) Reply pairs for MAP."""

    kind: str
    value: object = field(repr=False)
    attributes: tuple[tuple["Reply", "Reply"], ...] = field(default=(), repr=False)

    @property
    def error_prefix(self) -> str | None:
        """ "WRONGTYPE" for `-WRONGTYPE Operation against...`; None unless an error."""
        return _error_prefix(self.value) if self.kind in ERROR_KINDS else None


_NULL_REPLY = Reply(NULL, None)


def parse_request(buf: bytes) -> ParseResult:
    """Frame one command at the start of `buf`; message = Command.

    Blank lines before it are part of the frame (`consumed` counts them). `*0` and `*-1`, which
    Redis also skips without a reply, are INVALID: no client sends them.
    """
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    return _result(_Reader(buf), _Reader.command)


def parse_response(buf: bytes) -> ParseResult:
    """Frame one reply of any RESP2 or RESP3 type at the start of `buf`; message = Reply.

    A push is a frame of its own (it is not the answer to a command); an attribute is framed with
    the reply it precedes. RESP3's streamed strings and aggregates are INVALID: Redis never sends
    them.
    """
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    return _result(_Reader(buf), _Reader.reply)


def summarize(request: bytes, response: bytes, policy: Policy = DEFAULT_POLICY) -> dict | None:
    """The record attributes of one captured exchange (see probes.protocols), or None when the
    request does not start with a Redis command.

    db.operation.name is the command name when it is a known one (COMMANDS, MODULE_PREFIXES),
    else OTHER_OPERATION without a db.query.text. For a pipeline, both describe the first
    command, request.count says how many the capture holds (a command cut by the capture counts;
    absent means one), and the exchange is an error when any captured reply is one (pushes
    aside), error.type being the first's. A command the policy lists shows no subcommand.
    """
    request, response = as_bytes(request), as_bytes(response)
    if not request:
        return None
    commands = _captured_commands(request)
    if commands is None:
        return None
    first, count = commands
    fields: dict = {schema.DB_SYSTEM: schema.PROTO_REDIS}  # OpenTelemetry's db.system is the same word
    fields.update(first.fields(policy.redis_commands_masked))
    if count > 1:
        fields[schema.REQUEST_COUNT] = count
    failed, prefix = _captured_error(response or b"")
    feature_probe = count == 1 and first.name == "CLIENT" and first.query_text() in FEATURE_PROBES
    fields[schema.ERROR] = failed and not feature_probe
    if prefix:
        fields[schema.ERROR_TYPE] = fields[schema.DB_RESPONSE_STATUS] = prefix
    elif failed:
        fields[schema.ERROR_TYPE] = ERROR_TYPE_UNKNOWN
    return fields


# Commands clients send on connect to ask for optional features, carrying on when the server
# refuses them (redis-py 5+ sends CLIENT SETINFO and CLIENT MAINT_NOTIFICATIONS, which Redis
# before 7.2 and 8 answer with ERR). A refusal is the server's answer, not a failure of the
# service: such an exchange keeps its error.type but is not counted as an error, or every older
# Redis would look broken on every connection.
FEATURE_PROBES = frozenset({"CLIENT SETINFO ? ?", "CLIENT MAINT_NOTIFICATIONS ? ? ?"})  # unmasked


# --- strict framing ---------------------------------------------------------------------------


class _NeedMore(Exception):
    """The bytes end before the frame does."""


class _Invalid(Exception):
    """These bytes can never become a frame; the argument says why."""


def _result(reader: "_Reader", read) -> ParseResult:
    try:
        message = read(reader)
    except _NeedMore:
        return NEED_MORE_RESULT
    except _Invalid as exc:
        return invalid(str(exc))
    return ParseResult(OK, reader.pos, message)


class _Reader:
    """A cursor reading one frame after another out of `buf`.

    Raises _NeedMore or _Invalid (a recursive reader is far simpler with exceptions; the public
    functions turn them into results). Besides the frame it leaves behind what summarize needs
    when a capture ends inside a frame: the name and argument count of the command being read,
    and the error prefixes of the error replies met.
    """

    __slots__ = ("buf", "pos", "elements_left", "name", "argc", "first_arg", "errors")

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0
        self.elements_left = MAX_ELEMENTS
        self.name: str | None = None
        self.argc: int | None = None
        self.first_arg: bytes | None = None
        self.errors: list[str | None] = []  # None: cut before its prefix ended

    # commands

    def command(self) -> Command:
        self.name = self.argc = self.first_arg = None
        start = self.pos
        while True:
            if self.pos - start > MAX_BLANK_BYTES:
                raise _Invalid(f"more than {MAX_BLANK_BYTES} bytes of blank lines")
            if self._peek() == _ARRAY:
                return self._multibulk_command()
            command = self._inline_command()
            if command is not None:
                return command

    def _multibulk_command(self) -> Command:
        self.pos += 1
        count = self._decimal(1, MAX_ELEMENTS, "command length")
        self.argc = count - 1
        args = []
        for index in range(count):
            if self._peek() != _BULK:
                raise _Invalid("command argument is not a bulk string")
            self.pos += 1
            if index == 0:
                name = self._data(
                    self._decimal(1, MAX_COMMAND_NAME_BYTES, "command name length"), _check_name_prefix
                )
                if not _COMMAND_NAME.fullmatch(name):
                    raise _Invalid("malformed command name")
                self.name = name.decode("ascii").upper()
                continue
            args.append(self._data(self._decimal(0, MAX_BULK_BYTES, "bulk length")))
            if index == 1:
                self.first_arg = args[0]
        return Command(self.name, tuple(args))

    def _inline_command(self) -> Command | None:
        """One inline command, or None for a blank line (skipped)."""
        start = self.pos
        end = self.buf.find(b"\n", start, start + MAX_LINE_BYTES + 1)
        if end < 0:
            partial = self.buf[start : start + MAX_LINE_BYTES + 1]
            if len(partial) > MAX_LINE_BYTES:
                raise _Invalid(f"inline command longer than {MAX_LINE_BYTES} bytes")
            _check_inline_line(partial.removesuffix(b"\r"))
            name = _INLINE_NAME.match(partial)
            if name and _COMMAND_NAME.fullmatch(name.group(1)):
                self.name = name.group(1).decode("ascii").upper()
            raise _NeedMore
        line = self.buf[start:end].removesuffix(b"\r")
        _check_inline_line(line)
        words = _split_inline(line)
        if words is None:
            raise _Invalid("unbalanced quotes in inline command")
        self.pos = end + 1
        if not words:
            return None
        if not _COMMAND_NAME.fullmatch(words[0]):
            raise _Invalid("malformed command name")
        return Command(words[0].decode("ascii").upper(), tuple(words[1:]), inline=True)

    # replies

    def reply(self, depth: int = 0) -> Reply:
        if self._peek() != _ATTRIBUTE:
            return self._reply(depth)
        self.pos += 1
        attributes = self._pairs(depth)
        if self._peek() == _ATTRIBUTE:
            raise _Invalid("attribute followed by another attribute")
        reply = self._reply(depth)
        return Reply(reply.kind, reply.value, attributes)

    def _reply(self, depth: int) -> Reply:
        marker = self._peek()
        self.pos += 1
        if marker == _SIMPLE_STRING:
            return Reply(SIMPLE_STRING, self._line(MAX_LINE_BYTES))
        if marker == _SIMPLE_ERROR:
            return self._error(SIMPLE_ERROR, lambda: self._line(MAX_LINE_BYTES))
        if marker == _INTEGER:
            return Reply(INTEGER, self._decimal(-(2**63), 2**63 - 1, "integer"))
        if marker == _BULK:
            value = self._bulk(allow_null=True)
            return _NULL_REPLY if value is None else Reply(BULK_STRING, value)
        if marker == _BULK_ERROR:
            return self._error(BULK_ERROR, lambda: self._bulk(allow_null=False))
        if marker == _VERBATIM:
            return Reply(VERBATIM_STRING, self._verbatim())
        if marker == _NULL:
            self._line(0)
            return _NULL_REPLY
        if marker == _BOOLEAN:
            text = self._line(1, _check_boolean)
            if text not in (b"t", b"f"):
                raise _Invalid("malformed boolean")
            return Reply(BOOLEAN, text == b"t")
        if marker == _DOUBLE:
            return Reply(DOUBLE, self._double())
        if marker == _BIG_NUMBER:
            return Reply(BIG_NUMBER, self._big_number())
        if marker in _SEQUENCES:
            if marker == _PUSH and depth:
                raise _Invalid("push inside an aggregate")
            return self._sequence(_SEQUENCES[marker], depth)
        if marker == _MAP:
            return Reply(MAP, self._pairs(depth))
        raise _Invalid(f"unknown reply type {bytes([marker])!r}")

    def _error(self, kind: str, read_message) -> Reply:
        """An error reply, noting its prefix even when the bytes end inside it."""
        start = self.pos
        try:
            message = read_message()
        except _NeedMore:
            self.errors.append(_cut_error_prefix(self.buf[start:]))
            raise
        self.errors.append(_error_prefix(message))
        return Reply(kind, message)

    def _sequence(self, kind: str, depth: int) -> Reply:
        count = self._aggregate_length(depth, allow_null=kind == ARRAY)
        if count < 0:
            return _NULL_REPLY
        self._take_elements(count)
        return Reply(kind, tuple(self.reply(depth + 1) for _ in range(count)))

    def _pairs(self, depth: int) -> tuple[tuple[Reply, Reply], ...]:
        count = self._aggregate_length(depth, allow_null=False)
        self._take_elements(2 * count)
        return tuple((self.reply(depth + 1), self.reply(depth + 1)) for _ in range(count))

    def _aggregate_length(self, depth: int, allow_null: bool) -> int:
        if depth >= MAX_DEPTH:
            raise _Invalid(f"nested deeper than {MAX_DEPTH} levels")
        return self._decimal(-1 if allow_null else 0, MAX_ELEMENTS, "aggregate length")

    def _take_elements(self, count: int):
        self.elements_left -= count
        if self.elements_left < 0:
            raise _Invalid(f"more than {MAX_ELEMENTS} elements in one frame")

    def _bulk(self, allow_null: bool) -> bytes | None:
        length = self._decimal(-1 if allow_null else 0, MAX_BULK_BYTES, "bulk length")
        return None if length < 0 else self._data(length)

    def _verbatim(self) -> bytes:
        data = self._data(self._decimal(0, MAX_BULK_BYTES, "verbatim length"), _check_verbatim_prefix)
        if not _VERBATIM_FORMAT.match(data):
            raise _Invalid("verbatim string without its format")
        return data[4:]

    def _double(self) -> float:
        text = self._line(MAX_LINE_BYTES, _check_double_prefix)
        if not _DOUBLE_TEXT.fullmatch(text):
            raise _Invalid("malformed double")
        return float(text.decode("ascii"))

    def _big_number(self) -> int:
        text = self._line(MAX_BIG_NUMBER_DIGITS + 1, _check_big_number_prefix)
        if not _BIG_NUMBER_TEXT.fullmatch(text):
            raise _Invalid("malformed big number")
        return int(text)

    # the pieces every frame is made of

    def _peek(self) -> int:
        if self.pos >= len(self.buf):
            raise _NeedMore
        return self.buf[self.pos]

    def _line(self, limit: int, check_prefix=None) -> bytes:
        """The CRLF-terminated line at pos, without its CRLF: at most `limit` bytes, no CR or LF.

        `check_prefix(partial)` raises _Invalid when an unfinished line can never become valid,
        so that garbage fails on its first bytes rather than when its line ends.
        """
        buf, start = self.buf, self.pos
        end = buf.find(b"\r", start, start + limit + 1)
        if buf.find(b"\n", start, start + limit + 1 if end < 0 else end) >= 0:
            raise _Invalid("LF without CR")
        if end < 0:
            if len(buf) - start > limit:
                raise _Invalid(f"line longer than {limit} bytes")
            if check_prefix:
                check_prefix(buf[start:])
            raise _NeedMore
        if end + 1 == len(buf):
            if check_prefix:
                check_prefix(buf[start:end])
            raise _NeedMore
        if buf[end + 1] != _LF:
            raise _Invalid("CR without LF")
        self.pos = end + 2
        return buf[start:end]

    def _decimal(self, low: int, high: int, what: str) -> int:
        text = self._line(_MAX_DECIMAL_LINE, lambda partial: _check_decimal_prefix(partial, low, high, what))
        if not _DECIMAL.fullmatch(text):
            raise _Invalid(f"malformed {what}")
        value = int(text)
        if not low <= value <= high:
            raise _Invalid(f"{what} {value} out of range [{low}, {high}]")
        return value

    def _data(self, length: int, check_prefix=None) -> bytes:
        """`length` bytes and the CRLF after them."""
        buf, start = self.buf, self.pos
        end = start + length
        if len(buf) < end + 2:
            if not b"\r\n".startswith(buf[end : end + 2]):
                raise _Invalid("bulk data not followed by CRLF")
            if check_prefix:
                check_prefix(buf[start:end])
            raise _NeedMore
        if buf[end : end + 2] != b"\r\n":
            raise _Invalid("bulk data not followed by CRLF")
        self.pos = end + 2
        return buf[start:end]


def _check_decimal_prefix(partial: bytes, low: int, high: int, what: str):
    if not _DECIMAL_PREFIX.fullmatch(partial):
        raise _Invalid(f"malformed {what}")
    if partial == b"-":
        if low >= 0:
            raise _Invalid(f"negative {what}")
        return
    if not partial:
        return
    # More digits move a number away from zero, and "0" takes none: so a prefix past a bound in
    # the direction its digits grow can never come back.
    value = int(partial)
    if value > high or value < low and value <= 0:
        raise _Invalid(f"{what} {value} out of range [{low}, {high}]")


def _check_name_prefix(partial: bytes):
    if not _COMMAND_NAME_PREFIX.fullmatch(partial):
        raise _Invalid("malformed command name")


def _check_boolean(partial: bytes):
    if partial not in (b"", b"t", b"f"):
        raise _Invalid("malformed boolean")


def _check_double_prefix(partial: bytes):
    if not _DOUBLE_PREFIX.fullmatch(partial):
        raise _Invalid("malformed double")


def _check_big_number_prefix(partial: bytes):
    if not _BIG_NUMBER_PREFIX.fullmatch(partial):
        raise _Invalid("malformed big number")


def _check_verbatim_prefix(partial: bytes):
    if not _VERBATIM_FORMAT_PREFIX.fullmatch(partial[:4]):
        raise _Invalid("verbatim string without its format")


def _check_inline_line(text: bytes):
    if not _INLINE_TEXT.fullmatch(text):
        raise _Invalid("control character in inline command")
    if not _INLINE_START.match(text):
        raise _Invalid("inline command does not start with a command name")


def _split_inline(line: bytes) -> list[bytes] | None:
    """The words of an inline command as Redis splits them (sdssplitargs): blanks separate words,
    "double quotes" take C escapes (\\n, \\xff, ...), 'single quotes' only \\'; a closing quote must
    end its word. None for unbalanced quotes, which Redis refuses too."""
    words, i, n = [], 0, len(line)

    def at(j: int) -> int:  # 0 past the end, like the NUL that ends Redis's C string
        return line[j] if j < n else 0

    while True:
        while i < n and line[i] in _INLINE_BLANKS:
            i += 1
        if i >= n:
            return words
        word, quote, done = bytearray(), 0, False
        while not done:
            c = at(i)
            if quote == _DOUBLE_QUOTE:
                if c == _BACKSLASH and at(i + 1) == ord("x") and {at(i + 2), at(i + 3)} <= _HEX_DIGITS:
                    word.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == _BACKSLASH and at(i + 1):
                    i += 1
                    word.append(_INLINE_ESCAPES.get(line[i], line[i]))
                elif c == quote:
                    if at(i + 1) and at(i + 1) not in _INLINE_BLANKS:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    word.append(c)
            elif quote == _SINGLE_QUOTE:
                if c == _BACKSLASH and at(i + 1) == quote:
                    i += 1
                    word.append(quote)
                elif c == quote:
                    if at(i + 1) and at(i + 1) not in _INLINE_BLANKS:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    word.append(c)
            elif not c or c in _INLINE_BLANKS:
                done = True
            elif c in (_DOUBLE_QUOTE, _SINGLE_QUOTE):
                quote = c
            else:
                word.append(c)
            i += 1
        words.append(bytes(word))


# --- reading captures -------------------------------------------------------------------------


class _CapturedCommand(NamedTuple):
    name: str | None  # None when the capture ends inside the name
    argc: int | None  # arguments after the name; None when the capture cut an inline command
    first_arg: bytes | None

    def fields(self, masked: frozenset[str] = frozenset()) -> dict:
        """db.operation.name and db.query.text, as far as they are known; the commands and
        subcommands (CONFIG|SET) in `masked` show a `?` for their subcommand too."""
        if self.name is None:
            return {}
        prefix, dot, _ = self.name.partition(".")
        if self.name not in COMMANDS and not (dot and prefix in MODULE_PREFIXES):
            return {schema.DB_OPERATION: OTHER_OPERATION}
        return {schema.DB_OPERATION: self.name, schema.DB_QUERY_TEXT: self.query_text(masked)}

    def query_text(self, masked: frozenset[str] = frozenset()) -> str:
        """`SET ? ?`, `CONFIG SET ? ?`: the name, a known subcommand unless `masked` hides it, a
        `?` per argument."""
        words, placeholders = [self.name], self.argc
        subcommand = self.first_arg.upper().decode("latin-1") if self.first_arg is not None else None
        hidden = masked and (self.name in masked or f"{self.name}|{subcommand}" in masked)
        if not hidden and subcommand in SUBCOMMANDS.get(self.name, ()):
            words.append(subcommand)
            placeholders -= 1
        if placeholders is None:
            return " ".join([*words, CUT_MARKER])
        words += ["?"] * min(placeholders, MAX_QUERY_ARGS)
        if placeholders > MAX_QUERY_ARGS:
            words.append(CUT_MARKER)
        return " ".join(words)


def _captured_commands(capture: bytes) -> tuple[_CapturedCommand, int] | None:
    """(the first command, how many commands) in a captured request, or None if it starts with no
    command. A command the capture cut counts; bytes that are not a command end the count."""
    reader = _Reader(capture)
    first, count = None, 0
    while reader.pos < len(capture):
        start = reader.pos
        try:
            command = reader.command()
        except _NeedMore:
            if not capture[start:].strip(b" \t\r\n"):
                break  # only blank lines left
            count += 1
            first = first or _CapturedCommand(reader.name, reader.argc, reader.first_arg)
            break
        except _Invalid:
            break
        count += 1
        if first is None:
            first = _CapturedCommand(
                command.name, len(command.args), command.args[0] if command.args else None
            )
    return (first, count) if first else None


def _captured_error(capture: bytes) -> tuple[bool, str | None]:
    """(whether a captured reply is an error, the first error's prefix if known), pushes aside."""
    reader = _Reader(capture)
    while reader.pos < len(capture):
        is_push = capture[reader.pos] == _PUSH
        before = len(reader.errors)
        reader.elements_left = MAX_ELEMENTS
        try:
            reader.reply()
        except (_NeedMore, _Invalid) as exc:
            if is_push or isinstance(exc, _Invalid):
                del reader.errors[before:]
            break
        if is_push:
            del reader.errors[before:]
    if not reader.errors:
        return False, None
    return True, reader.errors[0]


def _error_prefix(message: bytes) -> str:
    """The prefix of a whole error message ("WRONGTYPE", "NOAUTH"), or GENERIC_ERROR without one."""
    word = message[: MAX_ERROR_PREFIX_CHARS + 1].split(b" ", 1)[0]
    return word.decode("ascii") if _ERROR_PREFIX.fullmatch(word) else GENERIC_ERROR


def _cut_error_prefix(partial: bytes) -> str | None:
    """The prefix of an error message the capture cut, or None if it was cut inside the prefix.

    `partial` is what came after the type byte: a simple error's text, or a bulk error's length
    line and then its text.
    """
    if partial[:1].isdigit():
        _, crlf, partial = partial.partition(b"\r\n")
        if not crlf:
            return None
    message, cr, _ = partial.partition(b"\r")
    if (
        not cr
        and b" " not in message[: MAX_ERROR_PREFIX_CHARS + 1]
        and len(message) <= MAX_ERROR_PREFIX_CHARS
    ):
        return None
    return _error_prefix(message)
