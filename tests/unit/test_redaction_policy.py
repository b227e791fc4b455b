"""The redaction policy (probes/redact.py Policy): what the control plane may let leave the host,
read from its control hash, applied by the HTTP, SQL and Redis readers and by RecordBuilder, on
bytes captured from real programs (tests/captures/)."""

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes import schema
from probes.identity import ServiceNames, SocketTable
from probes.programs.socket_trace import (
    AF_INET,
    EV_HTTP,
    PROTO_HTTP,
    PROTO_MYSQL,
    PROTO_POSTGRES,
    PROTO_REDIS,
    ROLE_SERVER,
    HttpEvent,
)
from probes.protocols import http1, mysql, postgres, redis
from probes.protocols.sql import normalize_query
from probes.records import RecordBuilder
from probes.redact import (
    DEFAULT_HEADERS_KEPT,
    DEFAULT_POLICY,
    MAX_POLICY_NAME_CHARS,
    MAX_POLICY_NAMES,
    REDACTED,
    SQL_LITERALS_KEEP,
    SQL_LITERALS_MASK,
    Policy,
    is_sensitive_header,
    redact_target,
)

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
CURL_GET = (CAPTURES / "http" / "curl_get.bin").read_bytes()  # fake Authorization and Cookie
PYTHON_GET = (CAPTURES / "http" / "python_get.bin").read_bytes()
PYTHON_POST = (CAPTURES / "http" / "python_post.bin").read_bytes()  # traceparent, fake X-Api-Key
NGINX_200 = (CAPTURES / "http" / "nginx_200.bin").read_bytes()
CURL_SECRETS = ("fake-token-0123456789abcdef", "fake-session-42", "fake123")
# What obsweb/fleet/control.py writes into every control hash when nobody configured anything.
UNCONFIGURED = {
    "headers_kept": [],
    "query_keys_kept": [],
    "sql_literals": "mask",
    "redis_commands_masked": [],
}


def policy(**lists) -> Policy:
    """The policy the control plane would push with these REDACTION_* keys; it must apply cleanly."""
    result, message = Policy.from_control(json.dumps(lists))
    assert message is None, message
    return result


def capture(protocol: str, name: str) -> tuple[bytes, bytes]:
    response = CAPTURES / protocol / f"{name}.response.bin"
    request = (CAPTURES / protocol / f"{name}.request.bin").read_bytes()
    return request, response.read_bytes() if response.exists() else b""


def event(request: bytes, response: bytes, proto: int = PROTO_HTTP) -> HttpEvent:
    """One exchange as the kernel hands it over, between two loopback ends."""
    result = HttpEvent(type=EV_HTTP, proto=proto, role=ROLE_SERVER, pid=4242, tid=4243, fd=7)
    result.req_ns, result.resp_ns = 5_000_000_000, 5_002_500_000
    result.set_captures(request, response)
    result.req_bytes, result.resp_bytes = len(request), len(response)
    for end, port in ((result.laddr, 8080), (result.raddr, 51000)):
        end.family, end.port = AF_INET, port
        end.ip[:4] = list(ipaddress.ip_address("127.0.0.1").packed)
    result.comm = b"server"
    return result


@pytest.fixture
def builder(tmp_path) -> RecordBuilder:
    """A builder on an empty /proc: every pid is gone, so it is named by the kernel's comm."""
    sockets = SocketTable(proc=tmp_path)
    return RecordBuilder("web-1", ServiceNames(sockets, proc=tmp_path), sockets, clock_offset_ns=0)


# --- the defaults -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [None, b"", "", "  \n", "{}", json.dumps(UNCONFIGURED), json.dumps(UNCONFIGURED).encode()],
    ids=repr,
)
def test_it_applies_the_defaults_without_a_policy_or_with_the_unconfigured_one(raw):
    assert Policy.from_control(raw) == (DEFAULT_POLICY, None)


def test_its_defaults_are_what_obsweb_keeps_without_configuration():
    assert DEFAULT_POLICY == Policy()
    assert DEFAULT_POLICY.headers_kept == http1.KEPT_HEADERS == DEFAULT_HEADERS_KEPT
    assert DEFAULT_POLICY.query_keys_kept == frozenset()
    assert DEFAULT_POLICY.sql_literals == SQL_LITERALS_MASK and not DEFAULT_POLICY.keeps_sql_literals
    assert DEFAULT_POLICY.redis_commands_masked == frozenset()


# --- headers ----------------------------------------------------------------------------------


HEADERS = [
    # (names listed, captured request, header read, its value)
    (["Accept"], CURL_GET, "accept", "*/*"),
    (["ACCEPT"], CURL_GET, "accept", "*/*"),  # names compare case-insensitively
    (["accept-encoding", "connection"], PYTHON_GET, "accept-encoding", "identity"),
    (["accept-encoding", "connection"], PYTHON_GET, "connection", "close"),
    (["X-Request-Id"], PYTHON_POST, "content-type", "application/json"),  # the defaults stay
    ([], CURL_GET, "user-agent", "curl/7.88.1"),
]


@pytest.mark.parametrize("names, request_bytes, header, value", HEADERS)
def test_it_keeps_a_listed_header(names, request_bytes, header, value):
    kept = policy(headers_kept=names)
    assert http1.read_request_head(request_bytes, kept).headers[header] == value
    head, _body = http1.parse_request(request_bytes, kept).message
    assert head.headers[header] == value


@pytest.mark.parametrize("names", [["Server", "etag"], ["SERVER"]])
def test_it_keeps_a_listed_response_header(names):
    kept = policy(headers_kept=names)
    assert http1.read_response_head(NGINX_200, kept).headers["server"] == "nginx/1.22.1"
    assert "server" not in http1.read_response_head(NGINX_200).headers


def test_it_keeps_no_unlisted_header():
    head = http1.read_request_head(CURL_GET, policy(headers_kept=["x-request-id"]))
    assert set(head.headers) == {"host", "user-agent"}


SENSITIVE = [
    # (names listed, captured request, secrets it holds)
    (["Authorization"], CURL_GET, ["fake-token-0123456789abcdef"]),
    (["cookie", "Accept"], CURL_GET, ["fake-session-42"]),
    (["X-Api-Key"], PYTHON_POST, ["fake-api-key-987"]),
    (["x-api-key", "AUTHORIZATION", "Cookie"], CURL_GET + PYTHON_POST, []),
]


@pytest.mark.parametrize("names, request_bytes, secrets", SENSITIVE)
def test_it_never_keeps_a_sensitive_header_even_when_listed(builder, names, request_bytes, secrets):
    listed, message = Policy.from_control(json.dumps({schema.REDACTION_HEADERS_KEPT: names}))
    direct = Policy(headers_kept=frozenset(names))
    for kept in (listed, direct):
        assert not any(is_sensitive_header(name) for name in kept.headers_kept)
        head = http1.read_request_head(request_bytes, kept)
        assert not any(is_sensitive_header(name) for name in head.headers)
        builder.set_redaction(kept)
        record = repr(builder.exchange(event(request_bytes, NGINX_200)))
        assert not any(secret in record for secret in secrets)
    # The rest of the policy applies; the message says what was not.
    assert listed.headers_kept == DEFAULT_HEADERS_KEPT | {n.lower() for n in names if n.lower() == "accept"}
    sensitive = [name for name in names if is_sensitive_header(name)]
    assert message and "ignored" in message and all(name in message for name in sensitive)


def test_it_never_keeps_a_sensitive_response_header_even_when_listed():
    response = NGINX_200.replace(b"ETag:", b"Set-Cookie: session=fake-session-43\r\nETag:", 1)
    head = http1.read_response_head(response, Policy(headers_kept=frozenset({"set-cookie", "etag"})))
    assert set(head.headers) == {"etag"}


# --- query values ---------------------------------------------------------------------------


QUERY_VALUES = [
    # (keys listed, target, redacted)
    (
        ["fields"],
        "/api/users/42?fields=name,email&api_key=fake123",
        "/api/users/42?fields=name,email&api_key=REDACTED",
    ),
    (
        ["FIELDS"],
        "/api/users/42?fields=name,email&api_key=fake123",
        "/api/users/42?fields=name,email&api_key=REDACTED",
    ),
    (["limit"], "/orders/1/items?limit=10", "/orders/1/items?limit=10"),
    (["page"], "/search?q=my+email%40example.com&page=2", "/search?q=REDACTED&page=2"),
    (["page"], "/search?Page=2&page=3", "/search?Page=2&page=3"),
    (["user_id"], "/a?user%5Fid=7&x=1", "/a?user%5Fid=7&x=REDACTED"),  # compared percent-decoded
    (["k"], "http://alice:s3cret@example.com/a?k=v&j=w", "http://REDACTED@example.com/a?k=v&j=REDACTED"),
    (["x"], "/page?x=1#frag=secret", "/page?x=1"),
    (["x"], "/a?x=1=2&y=3", "/a?x=1=2&y=REDACTED"),
    (["x"], "/a?x&y=1", "/a?x&y=REDACTED"),
    ([], "/a?x=1", "/a?x=REDACTED"),
]


@pytest.mark.parametrize("keys, target, redacted", QUERY_VALUES)
def test_it_keeps_a_listed_query_value(keys, target, redacted):
    assert redact_target(target, policy(query_keys_kept=keys)) == redacted


def test_it_keeps_a_listed_query_value_of_a_captured_request(builder):
    builder.set_redaction(policy(query_keys_kept=["fields"]))
    record = builder.exchange(event(CURL_GET, NGINX_200))
    assert record[schema.URL_PATH] == f"/api/users/42?fields=name,email&api_key={REDACTED}"


@pytest.mark.parametrize("keys", [["api_key"], ["API_KEY", "fields"], ["access_token"], ["password"]])
def test_it_never_keeps_a_credential_query_value_even_when_listed(keys):
    listed, message = Policy.from_control(json.dumps({schema.REDACTION_QUERY_KEYS_KEPT: keys}))
    for kept in (listed, Policy(query_keys_kept=frozenset(keys))):
        target = "/a?api_key=fake123&access_token=fake-token&password=hunter2&fields=id"
        redacted = redact_target(target, kept)
        assert not any(secret in redacted for secret in ("fake123", "fake-token", "hunter2"))
    assert message and "ignored" in message and keys[0] in message
    assert listed.query_keys_kept == ({"fields"} if "fields" in keys else set())


# --- SQL literals ---------------------------------------------------------------------------


SQL = [
    # (parser, capture, db.query.text masked, db.query.text with the literals kept)
    (
        postgres,
        ("postgres", "simple_select"),
        "SELECT id, name FROM users WHERE email = ?",
        "SELECT id, name FROM users WHERE email = 'alice@example.com'",
    ),
    (  # bound parameters are not literals: nothing to keep
        postgres,
        ("postgres", "extended_select"),
        "SELECT id, name FROM users WHERE email = $1",
        "SELECT id, name FROM users WHERE email = $1",
    ),
    (
        mysql,
        ("mysql", "select"),
        "SELECT id, name FROM users WHERE email = ?",
        "SELECT id, name FROM users WHERE email = 'alice@example.com'",
    ),
    (
        mysql,
        ("mysql", "insert_escaped_quote"),
        "INSERT INTO users (email, name) VALUES (?, ?)",
        "INSERT INTO users (email, name) VALUES ('obrien@example.com', 'O\\'Brien')",
    ),
    (
        mysql,
        ("mysql", "update"),
        "UPDATE users SET name = ? WHERE email = ?",
        "UPDATE users SET name = 'Alice B.' WHERE email = 'alice@example.com'",
    ),
]


@pytest.mark.parametrize(
    "parser, names, masked, kept", SQL, ids=lambda v: v[1] if isinstance(v, tuple) else None
)
def test_it_keeps_sql_literals_only_when_asked(parser, names, masked, kept):
    request, response = capture(*names)
    default = parser.summarize(request, response)
    assert default[schema.DB_QUERY_TEXT] == masked
    assert parser.summarize(request, response, policy=policy(sql_literals=SQL_LITERALS_MASK)) == default
    keeping = parser.summarize(request, response, policy=policy(sql_literals=SQL_LITERALS_KEEP))
    assert keeping[schema.DB_QUERY_TEXT] == kept
    # Only the text changes: the summary, operation and table still group alike.
    assert {k: v for k, v in keeping.items() if k != schema.DB_QUERY_TEXT} == {
        k: v for k, v in default.items() if k != schema.DB_QUERY_TEXT
    }


KEPT_TEXTS = [
    # (dialect, text, with its literals kept: comments and runs of whitespace go, the rest stays)
    (
        "",
        "SELECT * FROM t WHERE a = 'x  y' /* note */ AND b IN (1, 2)\n  LIMIT 5",
        "SELECT * FROM t WHERE a = 'x  y' AND b IN (1, 2) LIMIT 5",
    ),
    ("", "INSERT INTO t VALUES (1, 'a'), (1, 'a')", "INSERT INTO t VALUES (1, 'a'), (1, 'a')"),
    (
        schema.PROTO_POSTGRESQL,
        "SELECT E'a\\'b', $$x$$, -1 FROM t -- done",
        "SELECT E'a\\'b', $$x$$, -1 FROM t",
    ),
    (
        schema.PROTO_MYSQL,
        'SELECT 0x1F # hex\nFROM t WHERE name = "bob"',
        'SELECT 0x1F FROM t WHERE name = "bob"',
    ),
    ("", "SELECT * FROM t WHERE a = 'cut by the capt", "SELECT * FROM t WHERE a = 'cut by the capt"),
]


@pytest.mark.parametrize("dialect, text, kept", KEPT_TEXTS)
def test_it_keeps_literals_as_sent_and_the_summary_as_masked(dialect, text, kept):
    query, *rest = normalize_query(text, dialect, keep_literals=True)
    assert query == kept
    assert rest == list(normalize_query(text, dialect)[1:])


# --- Redis commands -------------------------------------------------------------------------


REDIS = [
    # (commands listed, capture, db.query.text)
    ([], "redis_py_config_set_requirepass", "CONFIG SET ? ?"),
    (["config"], "redis_py_config_set_requirepass", "CONFIG ? ? ?"),
    (["CONFIG|SET"], "redis_py_config_set_requirepass", "CONFIG ? ? ?"),
    (["config|get"], "redis_py_config_set_requirepass", "CONFIG SET ? ?"),  # another subcommand
    (["GET"], "redis_py_config_set_requirepass", "CONFIG SET ? ?"),
    (["CLIENT"], "redis_py_client_setinfo", "CLIENT ? ? ?"),
    (["client"], "resp3_client_maint_notifications", "CLIENT ? ? ? ?"),
    (["AUTH"], "redis_py_auth", "AUTH ?"),  # every argument value is masked anyway
    ([], "redis_py_auth", "AUTH ?"),
    (["HELLO"], "resp3_hello_auth", "HELLO ? ? ? ?"),
    (["MIGRATE"], "redis_py_migrate_auth", "MIGRATE" + " ?" * 9),
    (["DEBUG"], "redis_py_debug_sleep", "DEBUG ? ?"),
    (["INCRBY"], "redis_py_pipeline", "INCRBY ? ?"),
]


@pytest.mark.parametrize("commands, name, query", REDIS)
def test_it_masks_a_listed_redis_command(commands, name, query):
    request, response = capture("redis", name)
    default = redis.summarize(request, response)
    summary = redis.summarize(request, response, policy=policy(redis_commands_masked=commands))
    assert summary == default | {schema.DB_QUERY_TEXT: query}  # the command name stays
    assert "fake" not in repr(summary)  # the captures' passwords all start with "fake"


# --- malformed policies ---------------------------------------------------------------------


MALFORMED = [
    # (what the control hash holds, what the message must name)
    ("{", "malformed JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[" * 100_000, "nested too deeply"),
    ("x" * (256 * 1024 + 1), "longer than"),
    ('"headers_kept"', "expected a JSON object"),
    ("null", "expected a JSON object"),
    ("[]", "expected a JSON object"),
    ("42", "expected a JSON object"),
    ("NaN", "expected a JSON object"),
    (42, "expected JSON text"),
    ({"headers_kept": []}, "expected JSON text"),
    ('{"headers": ["x-id"]}', "'headers'"),
    ('{"headers_kept": [], "sql": "keep"}', "'sql'"),
    ('{"sql_literals": "keep", "sql_literals": "mask"}', "'sql_literals' given twice"),
    ('{"headers_kept": "x-request-id"}', "'headers_kept' must be a list"),
    ('{"headers_kept": {"x-request-id": true}}', "'headers_kept' must be a list"),
    ('{"headers_kept": null}', "'headers_kept' must be a list"),
    ('{"headers_kept": [1]}', "'headers_kept'[0]"),
    ('{"headers_kept": ["ok", ["x"]]}', "'headers_kept'[1]"),
    ('{"headers_kept": ["Bad Header"]}', "'headers_kept'[0]"),
    ('{"headers_kept": ["x-id:"]}', "'headers_kept'[0]"),
    ('{"headers_kept": [""]}', "'headers_kept'[0]"),
    (json.dumps({"headers_kept": ["x" * (MAX_POLICY_NAME_CHARS + 1)]}), "'headers_kept'[0]"),
    (json.dumps({"headers_kept": [f"x-{i}" for i in range(MAX_POLICY_NAMES + 1)]}), "'headers_kept' has"),
    ('{"query_keys_kept": "page"}', "'query_keys_kept' must be a list"),
    ('{"query_keys_kept": ["a=b"]}', "'query_keys_kept'[0]"),
    ('{"query_keys_kept": ["a&b"]}', "'query_keys_kept'[0]"),
    ('{"query_keys_kept": ["with space"]}', "'query_keys_kept'[0]"),
    ('{"query_keys_kept": [false]}', "'query_keys_kept'[0]"),
    ('{"sql_literals": "KEEP"}', "'sql_literals' must be"),
    ('{"sql_literals": true}', "'sql_literals' must be"),
    ('{"sql_literals": ["keep"]}', "'sql_literals' must be"),
    ('{"sql_literals": null}', "'sql_literals' must be"),
    ('{"redis_commands_masked": "AUTH"}', "'redis_commands_masked' must be a list"),
    ('{"redis_commands_masked": ["CONFIG SET"]}', "'redis_commands_masked'[0]"),
    ('{"redis_commands_masked": ["1CONFIG"]}', "'redis_commands_masked'[0]"),
    ('{"redis_commands_masked": ["A|B|C"]}', "'redis_commands_masked'[0]"),
    ('{"headers_kept": ["x-\\ud800"]}', "'headers_kept'[0] 'x-\\ud800'"),  # a lone surrogate, quoted safely
    ('{"\\u202eyek": 1}', "unknown key '\\u202eyek'"),
    # One bad key costs the whole policy, the good keys with it: nothing half-applied.
    ('{"sql_literals": "keep", "headers_kept": ["x-id"], "query_keys_kept": 3}', "'query_keys_kept'"),
]


@pytest.mark.parametrize("raw, named", MALFORMED, ids=lambda v: repr(v)[:40])
def test_a_malformed_policy_falls_back_to_the_defaults_with_a_message(raw, named):
    result, message = Policy.from_control(raw)
    assert result == DEFAULT_POLICY
    assert named in message and "using the defaults" in message
    assert len(message) < 400  # bounded, whatever was pushed


def test_it_accepts_policies_at_its_bounds():
    names = ["x-" + "a" * (MAX_POLICY_NAME_CHARS - 2)] + [f"x-{i}" for i in range(MAX_POLICY_NAMES - 1)]
    result = policy(headers_kept=names, redis_commands_masked=["FT.SEARCH", "_custom", "client|setinfo"])
    assert len(result.headers_kept) == len(DEFAULT_HEADERS_KEPT) + MAX_POLICY_NAMES
    assert result.redis_commands_masked == {"FT.SEARCH", "_CUSTOM", "CLIENT|SETINFO"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=20,
)
policy_keys = st.sampled_from(
    [
        schema.REDACTION_HEADERS_KEPT,
        schema.REDACTION_QUERY_KEYS_KEPT,
        schema.REDACTION_SQL_LITERALS,
        schema.REDACTION_REDIS_COMMANDS,
    ]
)
# Names with lone surrogates and control characters too: JSON can spell them (\ud800).
odd_names = st.text(st.characters(categories=["L", "N", "P", "S", "Z", "Cc", "Cs"]), max_size=30)
near_policies = st.dictionaries(
    policy_keys | odd_names,
    json_values | st.sampled_from(["mask", "keep"]) | st.lists(odd_names, max_size=5),
    max_size=4,
).map(json.dumps)
control_values = (
    st.none()
    | st.binary(max_size=200)
    | st.text(max_size=200)
    | json_values.map(json.dumps)
    | near_policies
    | near_policies.map(lambda text: text.encode("utf-8", "surrogatepass"))
)


@settings(max_examples=1000, deadline=None)
@given(control_values)
def test_reading_a_policy_never_raises_and_fails_closed(raw):
    result, message = Policy.from_control(raw)
    assert isinstance(result, Policy)
    assert message is None or message.encode("ascii", errors="strict")  # safe for any log
    if message and "using the defaults" in message:
        assert result == DEFAULT_POLICY
    assert result.headers_kept >= DEFAULT_HEADERS_KEPT
    assert not any(is_sensitive_header(name) for name in result.headers_kept | result.query_keys_kept)
    assert result.sql_literals in (SQL_LITERALS_MASK, SQL_LITERALS_KEEP)


# --- the policy in RecordBuilder ------------------------------------------------------------


def test_a_policy_change_is_not_hidden_by_the_memo(builder):
    http = event(CURL_GET, NGINX_200)
    sql = event(*capture("postgres", "simple_select"), proto=PROTO_POSTGRES)
    masked_path = f"/api/users/42?fields={REDACTED}&api_key={REDACTED}"
    masked_query = "SELECT id, name FROM users WHERE email = ?"

    first = builder.exchange(http), builder.exchange(sql)
    assert (first[0][schema.URL_PATH], first[1][schema.DB_QUERY_TEXT]) == (masked_path, masked_query)

    builder.set_redaction(policy(query_keys_kept=["fields"], sql_literals=SQL_LITERALS_KEEP))
    second = builder.exchange(http), builder.exchange(sql)
    assert second[0][schema.URL_PATH] == f"/api/users/42?fields=name,email&api_key={REDACTED}"
    assert second[1][schema.DB_QUERY_TEXT] == "SELECT id, name FROM users WHERE email = 'alice@example.com'"

    builder.set_redaction(Policy.from_control(None)[0])
    third = builder.exchange(http), builder.exchange(sql)
    assert (third[0][schema.URL_PATH], third[1][schema.DB_QUERY_TEXT]) == (masked_path, masked_query)


def test_a_narrower_header_policy_is_not_hidden_by_the_memo(builder):
    """Both heads are memoized: the response's Content-Length counts only while it is kept."""
    post = event(PYTHON_POST, NGINX_200)
    post.resp_bytes = 1  # what the first syscall moved, counted when Content-Length is not kept
    before = builder.exchange(post)
    assert before[schema.RESPONSE_BYTES] == len(NGINX_200)
    assert before[schema.TRACE_ID] == "4bf92f3577b34da6a3ce929d0e0e4736"

    builder.set_redaction(Policy(headers_kept=frozenset({"user-agent"})))
    after = builder.exchange(post)
    assert after[schema.RESPONSE_BYTES] == 1
    assert after[schema.TRACE_ID] != "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "proto, names, lists, query",
    [
        (PROTO_MYSQL, ("mysql", "select"), {"sql_literals": "keep"}, "email = 'alice@example.com'"),
        (
            PROTO_REDIS,
            ("redis", "redis_py_config_set_requirepass"),
            {"redis_commands_masked": ["CONFIG"]},
            "CONFIG ? ? ?",
        ),
    ],
)
def test_it_hands_its_policy_to_the_protocol_parsers(builder, proto, names, lists, query):
    exchange = event(*capture(*names), proto=proto)
    assert query not in builder.exchange(exchange)[schema.DB_QUERY_TEXT]
    builder.set_redaction(policy(**lists))
    assert query in builder.exchange(exchange)[schema.DB_QUERY_TEXT]


def test_setting_the_same_policy_again_keeps_the_memo(builder):
    builder.exchange(event(CURL_GET, NGINX_200))
    memoized = dict(builder._request_memo)
    builder.set_redaction(Policy.from_control(json.dumps(UNCONFIGURED))[0])
    assert builder._request_memo == memoized and memoized


def test_a_builder_never_shows_its_memoized_captures(builder):
    builder.exchange(event(CURL_GET, NGINX_200))
    assert not any(secret in repr(builder) for secret in CURL_SECRETS)
