"""Privacy helpers applied on the host, before any captured text is put into a record.

Captured traffic is someone else's data: query strings carry tokens and e-mail addresses,
headers carry credentials. Redaction is on by default and works by keeping what is known to be
harmless (paths, parameter names) and masking the rest, so a format nobody anticipated fails
closed. Every function here takes arbitrary input and never raises.

What is kept can be configured: the control plane pushes a policy (schema.CONTROL_REDACTION) that
names more header values and query values that may leave, whether SQL literals may, and which
Redis commands hide their subcommand too (Policy). Without one, the behaviour is the one described
above, and some rules hold whatever it says: credential headers and parameters
(is_sensitive_header) are never kept.
"""

import json
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from probes import schema
from probes.routes import looks_like_id

REDACTED = "REDACTED"
CUT_MARKER = "…"  # ends a value that was shortened, so truncation is never silent
MAX_TARGET_CHARS = 1024  # url.path stays readable in the UI and bounded in the database

SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
    }
)
# Vendors invent their own credential headers (X-Amz-Security-Token, Private-Token,
# X-Goog-Api-Key, ...), so names are also matched by the words they contain.
SENSITIVE_HEADER_PARTS = (
    "token",
    "secret",
    "api-key",
    "apikey",
    "password",
    "session",
    "authorization",
    "credential",
)

# The header values kept by default. An allowlist, not a denylist: a record leaves the host, and
# credentials (Authorization, Cookie, vendor API-key and session headers nobody listed) must not,
# so only headers with a known use survive: host and user-agent describe the caller, traceparent
# joins spans into traces, the last three describe the body.
DEFAULT_HEADERS_KEPT = frozenset(
    {"host", "user-agent", "traceparent", "content-length", "transfer-encoding", "content-type"}
)
SQL_LITERALS_MASK = "mask"
SQL_LITERALS_KEEP = "keep"
SQL_LITERALS_CHOICES = (SQL_LITERALS_MASK, SQL_LITERALS_KEEP)
# Bounds on a policy from the control plane: far above any real one, small enough that a bad one
# costs nothing to refuse.
MAX_POLICY_NAMES = 100  # entries in one list
MAX_POLICY_NAME_CHARS = 128  # characters in one entry, as obsweb/fleet/control.py allows
MAX_POLICY_BYTES = 256 * 1024  # the JSON text (each name may be spelled with \uXXXX escapes)

_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e]*")
# Control characters garble logs and terminals; the bidirectional overrides can make a
# displayed path read differently from what was sent ("Trojan Source").
_UNSAFE_CHARS = dict.fromkeys(
    [
        *range(0x00, 0x20),
        0x7F,
        *range(0x80, 0xA0),
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
)
_SCHEME_AND_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^/]*)")
# The user and password of a URL-style connection string anywhere in captured text, plain or
# percent-encoded: postgres://app:s3cret@db/x, redis://:s3cret@cache, postgres%3A%2F%2Fapp%3Ax%40db.
# Userinfo holds no "/" (RFC 3986), so the match ends at the first "@" before any path.
_CONNECTION_USERINFO = re.compile(
    r"([A-Za-z][A-Za-z0-9+.\-]*(?:://|%3[Aa]%2[Ff]%2[Ff]))[^\s/?#@'\"`&]*?(@|%40)"
)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token
_QUERY_KEY = re.compile(r"[^\s&=#]+")  # as it appears in a target, or percent-decoded
# A command as probes.protocols.redis reads them (FT.SEARCH), or one subcommand of it in ACL's
# notation (CONFIG|SET).
_COMMAND_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*(?:\|[A-Za-z_][A-Za-z0-9_.\-]*)?")


def is_sensitive_header(name: str) -> bool:
    """True for headers whose values must never leave the host. Unknown input counts as sensitive.

    Query parameters are judged by the same words (`api_key`, `access_token`, `password`)."""
    if isinstance(name, bytes | bytearray):
        name = bytes(name).decode("latin-1")
    if not isinstance(name, str):
        return True
    # CGI-style gateways spell X-Api-Key as X_API_KEY.
    name = name.strip().lower().replace("_", "-")
    return name in SENSITIVE_HEADERS or any(part in name for part in SENSITIVE_HEADER_PARTS)


@dataclass(frozen=True)
class Policy:
    """What a host's captures may keep, as the control plane configured it. The defaults are what
    obsweb keeps without configuration; names compare case-insensitively (they are stored lower-
    case, Redis commands upper-case), and a sensitive header or parameter is dropped from the
    kept lists whatever they say.

    headers_kept: header names whose values stay in parsed heads (probes.protocols.http1). Of
        those, records carry user-agent (user_agent.original), traceparent (the trace ids) and
        content-length (response.bytes); leaving one out empties that attribute, derives trace
        ids instead, or falls back to the size of the response's first syscall.
    query_keys_kept: query parameter names whose values url.path keeps (redact_target).
    sql_literals: SQL_LITERALS_MASK (literals become "?") or SQL_LITERALS_KEEP (db.query.text
        shows them; see probes.protocols.sql.normalize_query). Anything else masks.
    redis_commands_masked: Redis commands that show no subcommand either (`CONFIG ? ? ?` rather
        than `CONFIG SET ? ?`), or single subcommands in ACL's notation (`CONFIG|SET`). Every
        argument value of every command is masked whatever this says (probes.protocols.redis), so
        this can only widen what is masked.
    """

    headers_kept: frozenset[str] = DEFAULT_HEADERS_KEPT
    query_keys_kept: frozenset[str] = frozenset()
    sql_literals: str = SQL_LITERALS_MASK
    redis_commands_masked: frozenset[str] = frozenset()
    # headers_kept as bytes, for the HTTP readers that compare raw header names per captured line.
    kept_header_bytes: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        headers = frozenset(
            n.strip().lower() for n in self.headers_kept if isinstance(n, str) and not is_sensitive_header(n)
        )
        keys = frozenset(_query_key(n) for n in self.query_keys_kept if isinstance(n, str))
        commands = frozenset(n.strip().upper() for n in self.redis_commands_masked if isinstance(n, str))
        object.__setattr__(self, "headers_kept", headers)
        object.__setattr__(self, "query_keys_kept", frozenset(k for k in keys if not is_sensitive_header(k)))
        object.__setattr__(self, "redis_commands_masked", commands)
        object.__setattr__(
            self, "kept_header_bytes", frozenset(n.encode("latin-1", "replace") for n in headers)
        )

    @property
    def keeps_sql_literals(self) -> bool:
        return self.sql_literals == SQL_LITERALS_KEEP

    @classmethod
    def from_control(cls, raw: bytes | str | None) -> tuple["Policy", str | None]:
        """The policy in a control hash's CONTROL_REDACTION field, and a message for the operator
        (None when the policy applies as written). Never raises.

        Absent or empty means the defaults. A policy is a JSON object of REDACTION_* keys, each
        optional: lists of at most MAX_POLICY_NAMES names of at most MAX_POLICY_NAME_CHARS
        characters, and sql_literals one of SQL_LITERALS_CHOICES. Each list adds to its default:
        `{"headers_kept": []}`, what the control plane sends unconfigured, keeps the default
        headers. A credential's header or parameter name in a kept list is ignored (the message
        names it, the rest applies). Anything else wrong (malformed JSON, an unknown key, a value
        of the wrong type) fails closed: the defaults, and a message naming the bad key.
        """
        where = f"redaction policy (control field {schema.CONTROL_REDACTION!r})"
        try:
            fields = _policy_fields(raw)
            ignored = _credentials(fields.get(_HEADERS_KEPT, ()), schema.REDACTION_HEADERS_KEPT, str.lower)
            ignored += _credentials(
                fields.get(_QUERY_KEYS_KEPT, ()), schema.REDACTION_QUERY_KEYS_KEPT, _query_key
            )
            fields[_HEADERS_KEPT] = DEFAULT_HEADERS_KEPT | frozenset(fields.get(_HEADERS_KEPT, ()))
            policy = cls(**fields)
        except _PolicyError as exc:
            return DEFAULT_POLICY, f"{where}: {exc}; using the defaults"
        except Exception as exc:  # fail closed on whatever the checks did not foresee
            return DEFAULT_POLICY, f"{where}: unreadable ({_shown(exc)}); using the defaults"
        if ignored:
            return policy, (
                f"{where}: ignored {'; '.join(ignored)}: credentials' values never leave the host; "
                "the rest applies"
            )
        return policy, None


DEFAULT_POLICY = Policy()


class _PolicyError(ValueError):
    """What is wrong with a policy from the control plane, for the operator to fix."""


def _policy_fields(raw) -> dict:
    if isinstance(raw, bytes | bytearray | memoryview):
        if len(raw) > MAX_POLICY_BYTES:
            raise _PolicyError(f"longer than {MAX_POLICY_BYTES} bytes")
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _PolicyError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if not isinstance(raw, str):
        raise _PolicyError(f"expected JSON text, got {type(raw).__name__}")
    if len(raw) > MAX_POLICY_BYTES:
        raise _PolicyError(f"longer than {MAX_POLICY_BYTES} characters")
    try:
        document = json.loads(raw, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _PolicyError("malformed JSON (nested too deeply)") from None
    except ValueError as exc:  # json.JSONDecodeError, and _PolicyError from _unique_keys
        raise _PolicyError(str(exc) if isinstance(exc, _PolicyError) else f"malformed JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _PolicyError(f"expected a JSON object, got {_json_type(document)}")
    fields = {}
    for key, value in document.items():
        if key == schema.REDACTION_SQL_LITERALS:
            fields["sql_literals"] = _sql_literals(key, value)
        elif key in _NAME_LISTS:
            name, pattern, what = _NAME_LISTS[key]
            fields[name] = _names(key, value, pattern, what)
        else:
            known = ", ".join(sorted([schema.REDACTION_SQL_LITERALS, *_NAME_LISTS]))
            raise _PolicyError(f"unknown key {_shown(key)} (known keys: {known})")
    return fields


def _unique_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise _PolicyError(f"key {_shown(twice)} given twice")
    return dict(pairs)


def _names(key: str, value, pattern: re.Pattern, what: str) -> list[str]:
    """The list under `key`, checked: at most MAX_POLICY_NAMES strings that match `pattern`."""
    if not isinstance(value, list):
        raise _PolicyError(f"{key!r} must be a list of {what}s, got {_json_type(value)}")
    if len(value) > MAX_POLICY_NAMES:
        raise _PolicyError(f"{key!r} has {len(value)} entries, at most {MAX_POLICY_NAMES} are allowed")
    for index, name in enumerate(value):
        where = f"{key!r}[{index}]"
        if not isinstance(name, str):
            raise _PolicyError(f"{where} must be a {what}, got {_json_type(name)}")
        if len(name) > MAX_POLICY_NAME_CHARS:
            raise _PolicyError(f"{where} is longer than {MAX_POLICY_NAME_CHARS} characters")
        if not pattern.fullmatch(name):
            raise _PolicyError(f"{where} {_shown(name)} is not a {what}")
    return value


def _credentials(names, key: str, normalize) -> list[str]:
    """`key: name, name` for the names in a kept list that Policy drops as credentials', or []."""
    found = sorted({name for name in names if is_sensitive_header(normalize(name))})
    return [f"{key}: {', '.join(map(_shown, found))}"] if found else []


def _sql_literals(key: str, value) -> str:
    if not isinstance(value, str) or value not in SQL_LITERALS_CHOICES:
        given = _shown(value) if isinstance(value, str) else _json_type(value)
        choices = " or ".join(map(repr, SQL_LITERALS_CHOICES))
        raise _PolicyError(f"{key!r} must be {choices}, got {given}")
    return value


def _shown(value) -> str:
    """A pushed value quoted in a message: short, and ASCII, so a lone surrogate or a control
    character cannot break the log or the heartbeat that carries the message."""
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:40]) + (CUT_MARKER if len(text) > 40 else "")


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def mask_connection_credentials(text: str) -> str:
    """`text` with the user and password of every URL-style connection string in it replaced by
    REDACTED (`postgres://REDACTED@db/app`), percent-encoded ones too. Whatever a policy keeps
    (a query value, SQL literals), connection-string passwords never leave the host."""
    if not isinstance(text, str):
        return ""
    if "://" not in text and "%3a%2f%2f" not in text.lower():
        return text  # the common case, without the regex pass
    return _CONNECTION_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(2)}", text)


def redact_target(target: str, policy: Policy = DEFAULT_POLICY) -> str:
    """A request target safe to store: the path as sent, every query value replaced by REDACTED
    unless the policy keeps its parameter's.

    `/a?x=1&flag#top` becomes `/a?x=REDACTED&flag`. Fragments are dropped (browsers do not send
    them, so one in a target is odd and may be anything), userinfo in an absolute-form target is
    masked, and a bare parameter that looks like an opaque id or token (`/reset?3f9a1c77e2b4d6f8`)
    is masked too, since that is where some APIs put their secrets. Connection-string credentials
    are masked anywhere, kept query values included (mask_connection_credentials). At most
    MAX_TARGET_CHARS.
    """
    if not isinstance(target, str):
        return ""
    target = target.split("#", 1)[0]
    path, has_query, query = target.partition("?")
    path = mask_connection_credentials(_mask_userinfo(path))
    if has_query:
        kept = policy.query_keys_kept
        path += "?" + "&".join(_redact_parameter(p, kept) for p in query.split("&"))
    return _cap(path, MAX_TARGET_CHARS)


def safe_text(value: bytes | str, limit: int = 512) -> str:
    """Captured bytes or text as printable text: UTF-8 with replacement, control characters
    removed, at most `limit` characters (the last one CUT_MARKER when shortened)."""
    if limit <= 0:
        return ""
    if isinstance(value, bytes) and len(value) <= limit and _PRINTABLE_ASCII.fullmatch(value):
        return value.decode("ascii")  # the common case, without the translate pass
    # Decode only what can survive the cut: a UTF-8 character is at most 4 bytes.
    window = limit * 4 + 4
    if isinstance(value, bytes | bytearray):
        text = bytes(value[:window]).decode("utf-8", errors="replace")
    elif isinstance(value, str):
        text = value[:window]
    else:
        return ""
    was_cut = len(value) > window
    text = text.translate(_UNSAFE_CHARS)
    if was_cut and len(text) <= limit:
        return text[: limit - 1] + CUT_MARKER
    return _cap(text, limit)


def _mask_userinfo(path: str) -> str:
    match = _SCHEME_AND_AUTHORITY.match(path)
    if not match or "@" not in match.group(2):
        return path
    host = match.group(2).rsplit("@", 1)[1]
    return f"{match.group(1)}{REDACTED}@{host}{path[match.end() :]}"


def _redact_parameter(parameter: str, kept: frozenset[str]) -> str:
    name, has_value, _ = parameter.partition("=")
    if kept and _query_key(name) in kept:
        return mask_connection_credentials(parameter)
    if looks_like_id(name):
        name = REDACTED
    return f"{name}={REDACTED}" if has_value else name


def _query_key(name: str) -> str:
    """A parameter name as policies compare it: percent-decoded (`user%5Fid` is `user_id`) and
    lower-case."""
    return unquote(name.strip()).lower()


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + CUT_MARKER


# JSON list key -> (Policy field, the pattern a name matches, what a name is).
_HEADERS_KEPT, _QUERY_KEYS_KEPT = "headers_kept", "query_keys_kept"
_NAME_LISTS = {
    schema.REDACTION_HEADERS_KEPT: (_HEADERS_KEPT, _HEADER_NAME, "header name"),
    schema.REDACTION_QUERY_KEYS_KEPT: (_QUERY_KEYS_KEPT, _QUERY_KEY, "query parameter name"),
    schema.REDACTION_REDIS_COMMANDS: ("redis_commands_masked", _COMMAND_NAME, "Redis command name"),
}
