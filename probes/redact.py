"""Privacy helpers applied on the host, before any captured text is put into a record.

Captured traffic is someone else's data: query strings carry tokens and e-mail addresses,
headers carry credentials. Redaction is on by default and works by keeping what is known to be
harmless (paths, parameter names) and masking the rest, so a format nobody anticipated fails
closed. Every function here takes arbitrary input and never raises.
"""

import re

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


def is_sensitive_header(name: str) -> bool:
    """True for headers whose values must never leave the host. Unknown input counts as sensitive."""
    if isinstance(name, bytes | bytearray):
        name = bytes(name).decode("latin-1")
    if not isinstance(name, str):
        return True
    # CGI-style gateways spell X-Api-Key as X_API_KEY.
    name = name.strip().lower().replace("_", "-")
    return name in SENSITIVE_HEADERS or any(part in name for part in SENSITIVE_HEADER_PARTS)


def redact_target(target: str) -> str:
    """A request target safe to store: the path as sent, every query value replaced by REDACTED.

    `/a?x=1&flag#top` becomes `/a?x=REDACTED&flag`. Fragments are dropped (browsers do not send
    them, so one in a target is odd and may be anything), userinfo in an absolute-form target is
    masked, and a bare parameter that looks like an opaque id or token (`/reset?3f9a1c77e2b4d6f8`)
    is masked too, since that is where some APIs put their secrets. At most MAX_TARGET_CHARS.
    """
    if not isinstance(target, str):
        return ""
    target = target.split("#", 1)[0]
    path, has_query, query = target.partition("?")
    path = _mask_userinfo(path)
    if has_query:
        path += "?" + "&".join(_redact_parameter(p) for p in query.split("&"))
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


def _redact_parameter(parameter: str) -> str:
    name, has_value, _ = parameter.partition("=")
    if looks_like_id(name):
        name = REDACTED
    return f"{name}={REDACTED}" if has_value else name


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + CUT_MARKER
