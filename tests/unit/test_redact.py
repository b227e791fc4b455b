"""Privacy helpers (probes/redact.py): nothing sensitive may leave the host."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.protocols.http1 import read_request_head
from probes.protocols.sql import query_fields
from probes.redact import (
    CUT_MARKER,
    MAX_TARGET_CHARS,
    Policy,
    is_sensitive_header,
    mask_connection_credentials,
    redact_target,
    safe_text,
)
from probes.routes import normalize_route
from probes.schema import DB_QUERY_TEXT, PROTO_MYSQL, PROTO_POSTGRESQL

CAPTURES = Path(__file__).resolve().parent.parent / "captures" / "http"

TARGETS = [
    ("/a?x=1&flag", "/a?x=REDACTED&flag"),
    ("/search?q=my+email%40example.com&page=2", "/search?q=REDACTED&page=REDACTED"),
    ("/a?x=&y", "/a?x=REDACTED&y"),
    ("/a?x=1=2", "/a?x=REDACTED"),
    ("/a?x=1;y=2", "/a?x=REDACTED"),  # ";" separators are not split, so the value is masked whole
    ("/a?&&", "/a?&&"),
    ("/a?", "/a?"),
    ("/page#section", "/page"),
    ("/page?x=1#frag=secret", "/page?x=REDACTED"),
    ("/reset?3f9a1c77e2b4d6f8", "/reset?REDACTED"),  # a bare parameter that is a token
    ("/users/42", "/users/42"),
    ("*", "*"),
    ("", ""),
    ("http://alice:s3cret@example.com/a?k=v", "http://REDACTED@example.com/a?k=REDACTED"),
    ("http://alice@example.com/", "http://REDACTED@example.com/"),
    ("http://example.com/mail@home", "http://example.com/mail@home"),  # "@" in the path is not userinfo
]


@pytest.mark.parametrize("target, redacted", TARGETS)
def test_it_redacts_targets(target, redacted):
    assert redact_target(target) == redacted


@pytest.mark.parametrize(
    "capture, redacted",
    [
        ("curl_get.bin", "/api/users/42?fields=REDACTED&api_key=REDACTED"),
        ("python_get.bin", "/orders/550e8400-e29b-41d4-a716-446655440000/items?limit=REDACTED"),
        ("chromium_get.bin", "/page?x=REDACTED"),
    ],
)
def test_it_redacts_the_targets_of_captured_requests(capture, redacted):
    head = read_request_head((CAPTURES / capture).read_bytes()[:512])
    assert redact_target(head.target) == redacted


def test_it_caps_long_targets_with_a_marker():
    redacted = redact_target("/" + "a" * 5000)
    assert len(redacted) == MAX_TARGET_CHARS and redacted.endswith(CUT_MARKER)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
        st.from_regex(r"[0-9A-Z]{1,30}", fullmatch=True),
        min_size=1,
    )
)
def test_no_query_value_survives(params):
    redacted = redact_target("/p?" + "&".join(f"{k}={v}" for k, v in params.items()))
    query = redacted.partition("?")[2]
    assert all(part.endswith("=REDACTED") for part in query.split("&"))


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "COOKIE",
        "Set-Cookie",
        "X-Api-Key",
        "x-auth-token",
        "X-Amz-Security-Token",
        "Private-Token",
        "X-CSRFToken",
        "X-Goog-Api-Key",
        "x-apikey",
        "X_API_KEY",
        "X-Client-Secret",
        "X-Db-Password",
        "X-Session-Id",
        "X-Forwarded-Authorization",
        " authorization ",
        b"Cookie",
        None,
    ],
)
def test_it_knows_sensitive_headers(name):
    assert is_sensitive_header(name)


@pytest.mark.parametrize(
    "name", ["Host", "User-Agent", "traceparent", "Content-Type", "Content-Length", "Accept", "X-Request-Id"]
)
def test_it_lets_ordinary_headers_pass(name):
    assert not is_sensitive_header(name)


@pytest.mark.parametrize(
    "value, limit, text",
    [
        (b"curl/7.88.1", 512, "curl/7.88.1"),
        ("plain", 512, "plain"),
        (b"a\x00b\r\nc\td\x1b[0m\x7f", 512, "abcd[0m"),
        (b"caf\xc3\xa9", 512, "café"),
        (b"bad \xff\xfe utf-8", 512, "bad \ufffd\ufffd utf-8"),
        ("right\u202eto-left", 512, "rightto-left"),
        ("\x85next line", 512, "next line"),
        (b"abcdef", 4, "abc" + CUT_MARKER),
        ("abcd", 4, "abcd"),
        (b"x" * 100_000, 8, "xxxxxxx" + CUT_MARKER),
        (b"\x00" * 10_000 + b"tail", 8, CUT_MARKER),
        (b"abc", 0, ""),
        (bytearray(b"ok"), 512, "ok"),
        (None, 512, ""),
        (42, 512, ""),
    ],
)
def test_it_makes_text_safe(value, limit, text):
    assert safe_text(value, limit) == text


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=3000), st.text(max_size=3000)), st.integers(-5, 2000))
def test_safe_text_is_bounded_and_printable(value, limit):
    text = safe_text(value, limit)
    assert len(text) <= max(limit, 0)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000) | st.binary(max_size=100))
def test_no_exception_escapes_the_redactors(value):
    assert len(redact_target(value)) <= MAX_TARGET_CHARS
    assert is_sensitive_header(value) in (True, False)


# --- connection strings: their passwords never leave the host, whatever a policy keeps -------------

CONNECTION_STRINGS = [
    ("postgres://app:s3cret@db:5432/shop", "postgres://REDACTED@db:5432/shop"),
    ("postgresql://app:s3cret@db/shop?sslmode=require", "postgresql://REDACTED@db/shop?sslmode=require"),
    ("redis://:s3cret@cache:6379/0", "redis://REDACTED@cache:6379/0"),
    ("rediss://default:s3cret@cache", "rediss://REDACTED@cache"),
    ("mysql+pymysql://root:s3cret@db/x", "mysql+pymysql://REDACTED@db/x"),
    ("amqp://guest:s3cret@mq//", "amqp://REDACTED@mq//"),
    ("postgres%3A%2F%2Fapp%3As3cret%40db%2Fshop", "postgres%3A%2F%2FREDACTED%40db%2Fshop"),
    ("a postgres://app:s3cret@db and redis://:s3cret@c", "a postgres://REDACTED@db and redis://REDACTED@c"),
    # No userinfo: nothing to mask.
    ("postgres://db/shop", "postgres://db/shop"),
    ("https://example.com/users/a@b", "https://example.com/users/a@b"),
    ("/users/a@b.c", "/users/a@b.c"),
]


@pytest.mark.parametrize(("text", "masked"), CONNECTION_STRINGS)
def test_it_masks_connection_string_credentials(text, masked):
    assert mask_connection_credentials(text) == masked


KEEPS_EVERYTHING = Policy(query_keys_kept=frozenset({"dsn", "url"}), sql_literals="keep")


@pytest.mark.parametrize(
    ("target", "redacted"),
    [
        ("/connect/postgres://app:s3cret@db/shop", "/connect/postgres://REDACTED@db/shop"),
        ("/proxy/redis://:s3cret@cache:6379", "/proxy/redis://REDACTED@cache:6379"),
        ("/x?dsn=postgres://app:s3cret@db/shop", "/x?dsn=postgres://REDACTED@db/shop"),
        ("/x?dsn=postgres%3A%2F%2Fapp%3As3cret%40db", "/x?dsn=postgres%3A%2F%2FREDACTED%40db"),
        ("/x?url=redis://:s3cret@cache&other=1", "/x?url=redis://REDACTED@cache&other=REDACTED"),
    ],
)
def test_connection_passwords_leave_no_target_even_when_the_policy_keeps_the_value(target, redacted):
    assert redact_target(target, KEEPS_EVERYTHING) == redacted
    assert "s3cret" not in redact_target(target)


def test_connection_passwords_leave_no_route():
    route = normalize_route(mask_connection_credentials("/connect/postgres://app:s3cret@db/shop"))
    assert "s3cret" not in route


@pytest.mark.parametrize("dialect", [PROTO_POSTGRESQL, PROTO_MYSQL])
@pytest.mark.parametrize("policy", [Policy(), KEEPS_EVERYTHING], ids=["mask", "keep"])
def test_connection_passwords_leave_no_sql_text(dialect, policy):
    sql = b"SELECT dblink_connect('postgres://app:s3cret@db/shop'), 'redis://:s3cret@cache'"
    text = query_fields(sql, dialect, False, False, policy)[DB_QUERY_TEXT]
    assert "s3cret" not in text
    assert ("REDACTED@db" in text) == policy.keeps_sql_literals  # kept literals stay, minus the password


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_mask_connection_credentials_never_raises_and_keeps_text_without_userinfo(text):
    masked = mask_connection_credentials(text)
    assert isinstance(masked, str)
    if "@" not in text and "%40" not in text:
        assert masked == text
