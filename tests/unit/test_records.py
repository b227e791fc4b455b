"""Kernel events to records (probes/records.py): HttpEvent and FlowEvent structs as the ring buffer
hands them over, filled with bytes captured from real programs (tests/captures/http/)."""

import ipaddress
import os
import select
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from probes import schema
from probes.identity import ServiceNames, SocketTable
from probes.programs.socket_trace import (
    AF_INET,
    AF_INET6,
    EV_FLOW,
    EV_HTTP,
    MAX_RESP,
    PROTO_HTTP,
    PROTO_OTHER,
    ROLE_CLIENT,
    ROLE_SERVER,
    Addr,
    FlowEvent,
    HttpEvent,
)
from probes.records import RecordBuilder, parse_traceparent
from tests import helpers

CAPTURES = Path(__file__).resolve().parent.parent / "captures" / "http"
CLOCK_OFFSET_NS = 1_790_000_000_000_000_000  # what monotonic_to_epoch_offset_ns() might say
REQ_NS = 5_000_000_000
DURATION_NS = 2_500_000
SERVER = ("127.0.0.1", 8080)
CLIENT = ("127.0.0.1", 51000)
PID, TID, FD = 4242, 4243, 7
TRACE_ID, PARENT_SPAN_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
CHILD_READY_TIMEOUT_S = 10.0


def capture(name: str) -> bytes:
    return (CAPTURES / name).read_bytes()


WRK_GET = capture("wrk_get.bin")
CURL_GET = capture("curl_get.bin")  # with fake Authorization and Cookie values
CHROMIUM_GET = capture("chromium_get.bin")  # longer than MAX_REQ: the kernel keeps its start
PYTHON_GET = capture("python_get.bin")
PYTHON_POST = capture("python_post.bin")  # with traceparent and a fake X-Api-Key
CURL_POST = capture("curl_post.bin")
NGINX_200 = capture("nginx_200.bin")
NGINX_404 = capture("nginx_404.bin")
NGINX_HEAD = capture("nginx_head.bin")  # the answer to HEAD: Content-Length 17, no body
PYTHON_200 = capture("python_server_200.bin")
PYTHON_CHUNKED = capture("python_chunked.bin")
PYTHON_CHUNKED_HEAD_BYTES = 167  # BaseHTTPRequestHandler writes its head in one syscall
# No capture holds a 5xx: nginx's 404 with its status line changed, the rest as nginx sent it.
NGINX_503 = NGINX_404.replace(b"404 Not Found\r\n", b"503 Service Unavailable\r\n", 1)
SECRETS = [
    "fake-token-0123456789abcdef",  # curl_get.bin: Authorization
    "fake-session-42",  # curl_get.bin: Cookie
    "sessionid",
    "fake123",  # curl_get.bin: the api_key query value
    "fake-api-key-987",  # python_post.bin: X-Api-Key
]


def addr(ip: str, port: int) -> Addr:
    """An address as the kernel fills it: family, host-order port, address bytes."""
    parsed = ipaddress.ip_address(ip)
    result = Addr(family=AF_INET if parsed.version == 4 else AF_INET6, port=port)
    result.ip[: len(parsed.packed)] = list(parsed.packed)
    return result


def http_event(
    request: bytes,
    response: bytes,
    role: int = ROLE_SERVER,
    local: tuple[str, int] | None = SERVER,
    remote: tuple[str, int] | None = CLIENT,
    req_ns: int = REQ_NS,
    resp_ns: int = REQ_NS + DURATION_NS,
    resp_bytes: int | None = None,
    comm: bytes = b"nginx",
) -> HttpEvent:
    """What the kernel sends for one exchange: the first MAX_REQ / MAX_RESP bytes of each message,
    the whole request's size and the size of the response's first syscall (here all of it)."""
    event = HttpEvent(
        type=EV_HTTP, proto=PROTO_HTTP, role=role, pid=PID, tid=TID, fd=FD, req_ns=req_ns, resp_ns=resp_ns
    )
    event.set_captures(request, response)
    event.req_bytes = len(request)
    event.resp_bytes = len(response) if resp_bytes is None else resp_bytes
    event.laddr = addr(*local) if local else Addr()
    event.raddr = addr(*remote) if remote else Addr()
    event.comm = comm
    return event


def flow_event(
    role: int = ROLE_SERVER,
    local: tuple[str, int] | None = SERVER,
    remote: tuple[str, int] | None = CLIENT,
    proto: int = PROTO_HTTP,
    comm: bytes = b"nginx",
    pid: int = PID,
) -> FlowEvent:
    event = FlowEvent(type=EV_FLOW, role=role, proto=proto, pid=pid, fd=FD, requests=3)
    event.opened_ns, event.closed_ns = REQ_NS, REQ_NS + 40_000_000
    event.bytes_sent, event.bytes_recv = 1_250, 380
    event.laddr = addr(*local) if local else Addr()
    event.raddr = addr(*remote) if remote else Addr()
    event.comm = comm
    return event


def builder_on(proc: Path = Path("/proc")) -> RecordBuilder:
    sockets = SocketTable(proc=proc)
    return RecordBuilder("web-1", ServiceNames(sockets, proc=proc), sockets, clock_offset_ns=CLOCK_OFFSET_NS)


@pytest.fixture
def builder(tmp_path):
    """A builder on an empty /proc: every pid is gone, so it is named by the kernel's comm."""
    return builder_on(tmp_path)


@dataclass(frozen=True)
class Exchange:
    name: str
    request: bytes
    response: bytes
    method: str
    path: str
    route: str
    status: int
    response_bytes: int
    user_agent: str = ""
    resp_bytes: int | None = None  # the response's first syscall, when not the whole capture


EXCHANGES = [
    Exchange("wrk to nginx", WRK_GET, NGINX_200, "GET", "/wrk/bench", "/wrk/bench", 200, 232 + 17),
    Exchange(
        "curl with credentials, answered 404",
        CURL_GET,
        NGINX_404,
        "GET",
        "/api/users/42?fields=REDACTED&api_key=REDACTED",
        "/api/users/{id}",
        404,
        150 + 153,
        "curl/7.88.1",
    ),
    Exchange(
        "chromium, request cut at MAX_REQ",
        CHROMIUM_GET,
        NGINX_200,
        "GET",
        "/page?x=REDACTED",
        "/page",
        200,
        232 + 17,
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/156.0.0.0 Safari/537.36",
    ),
    Exchange(
        "urllib to http.server (HTTP/1.0)",
        PYTHON_GET,
        PYTHON_200,
        "GET",
        "/orders/550e8400-e29b-41d4-a716-446655440000/items?limit=REDACTED",
        "/orders/{id}/items",
        200,
        186 + 33,
        "Python-urllib/3.11",
    ),
    Exchange(
        "curl post, chunked answer without Content-Length",
        CURL_POST,
        PYTHON_CHUNKED,
        "POST",
        "/api/orders",
        "/api/orders",
        200,
        PYTHON_CHUNKED_HEAD_BYTES,
        "curl/7.88.1",
        resp_bytes=PYTHON_CHUNKED_HEAD_BYTES,
    ),
    Exchange(
        "python post, answered 503",
        PYTHON_POST,
        NGINX_503,
        "POST",
        "/api/v2/events",
        "/api/v2/events",
        503,
        len(NGINX_503),
    ),
]


@pytest.mark.parametrize("exchange", EXCHANGES, ids=lambda e: e.name)
def test_it_describes_an_http_exchange(builder, exchange):
    event = http_event(exchange.request, exchange.response, resp_bytes=exchange.resp_bytes)
    record = builder.exchange(event)
    assert record[schema.KIND] == schema.KIND_REQUEST
    assert record[schema.HOST] == "web-1"
    assert record[schema.PROTOCOL] == schema.PROTO_HTTP
    assert record[schema.HTTP_METHOD] == exchange.method
    assert record[schema.URL_PATH] == exchange.path
    assert record[schema.HTTP_ROUTE] == exchange.route
    assert record[schema.HTTP_STATUS] == exchange.status
    assert record[schema.ERROR] is (exchange.status >= 500)
    assert record[schema.USER_AGENT] == exchange.user_agent
    assert record[schema.REQUEST_BYTES] == len(exchange.request)
    assert record[schema.RESPONSE_BYTES] == exchange.response_bytes
    assert record[schema.DURATION_NS] == DURATION_NS
    assert record[schema.TS] == REQ_NS + CLOCK_OFFSET_NS
    assert record[schema.TLS] is False
    assert (record[schema.PID], record[schema.TID]) == (PID, TID)


@pytest.mark.parametrize("response", [NGINX_200, NGINX_404, PYTHON_200, NGINX_503], ids=len)
def test_it_counts_head_and_content_length_whatever_the_first_syscall_moved(builder, response):
    record = builder.exchange(http_event(WRK_GET, response, resp_bytes=1))
    assert record[schema.RESPONSE_BYTES] == len(response)


def test_it_counts_no_body_for_the_answer_to_head(builder):
    head_request = WRK_GET.replace(b"GET ", b"HEAD ", 1)
    record = builder.exchange(http_event(head_request, NGINX_HEAD))
    assert record[schema.RESPONSE_BYTES] == len(NGINX_HEAD)  # 232, not 232 + 17


def test_it_counts_the_whole_head_when_the_capture_cut_it(builder):
    long_head = NGINX_200.replace(
        b"Accept-Ranges: bytes\r\n",
        b"Accept-Ranges: bytes\r\nContent-Security-Policy: default-src 'self'; img-src 'self' data:\r\n",
        1,
    )
    assert long_head.index(b"\r\n\r\n") + 4 > MAX_RESP
    record = builder.exchange(http_event(WRK_GET, long_head))
    assert record[schema.RESPONSE_BYTES] == len(long_head)


@pytest.mark.parametrize("length", [b"17, 17", b"-17", b"0x11", b""], ids=repr)
def test_it_counts_the_first_syscall_when_content_length_is_not_a_number(builder, length):
    response = NGINX_200.replace(b"Content-Length: 17", b"Content-Length: " + length, 1)
    record = builder.exchange(http_event(WRK_GET, response, resp_bytes=1_000))
    assert record[schema.RESPONSE_BYTES] == 1_000


def test_it_does_not_raise_on_a_content_length_in_superscript_digits(builder):
    response = NGINX_200.replace(b"Content-Length: 17", "Content-Length: ²".encode(), 1)
    record = builder.exchange(http_event(WRK_GET, response, resp_bytes=1_000))
    assert record[schema.RESPONSE_BYTES] == 1_000


@pytest.mark.parametrize("exchange", EXCHANGES, ids=lambda e: e.name)
def test_it_never_puts_credentials_into_a_record(builder, exchange):
    text = repr(builder.exchange(http_event(exchange.request, exchange.response)))
    for secret in SECRETS:
        assert secret not in text
    assert "Bearer" not in text and "Cookie" not in text and "Authorization" not in text


def test_it_keeps_no_header_of_curls_request_but_its_user_agent(builder):
    record = builder.exchange(http_event(CURL_GET, NGINX_200))
    assert record[schema.USER_AGENT] == "curl/7.88.1"
    assert "127.0.0.1:38693" not in repr(record)  # Host is read, not published


def test_it_clamps_a_response_timed_before_its_request_to_zero(builder):
    record = builder.exchange(http_event(WRK_GET, NGINX_200, resp_ns=REQ_NS - 1))
    assert record[schema.DURATION_NS] == 0


def test_it_joins_the_trace_of_a_request_with_traceparent(builder):
    record = builder.exchange(http_event(PYTHON_POST, NGINX_200))
    assert record[schema.TRACE_ID] == TRACE_ID
    assert record[schema.PARENT_SPAN_ID] == PARENT_SPAN_ID
    assert record[schema.SPAN_ID] != PARENT_SPAN_ID


@pytest.mark.parametrize(
    "traceparent",
    [
        b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # a trace id digit short
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",  # not hex
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # the invalid all-zero id
    ],
)
def test_it_starts_a_trace_of_its_own_when_traceparent_is_malformed(builder, traceparent):
    request = PYTHON_POST.replace(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", traceparent)
    record = builder.exchange(http_event(request, NGINX_200))
    assert record[schema.PARENT_SPAN_ID] == ""
    assert len(record[schema.TRACE_ID]) == 32 and int(record[schema.TRACE_ID], 16)
    assert record[schema.TRACE_ID] != TRACE_ID


def test_it_starts_a_trace_per_exchange_without_traceparent(builder):
    first = builder.exchange(http_event(WRK_GET, NGINX_200))
    second = builder.exchange(http_event(WRK_GET, NGINX_200, req_ns=REQ_NS + 1_000))
    assert first[schema.PARENT_SPAN_ID] == second[schema.PARENT_SPAN_ID] == ""
    assert first[schema.TRACE_ID] != second[schema.TRACE_ID]
    assert first[schema.SPAN_ID] != second[schema.SPAN_ID]


TRACEPARENTS = [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", (TRACE_ID, PARENT_SPAN_ID)),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", (TRACE_ID, PARENT_SPAN_ID)),  # unsampled
    ("  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ", (TRACE_ID, PARENT_SPAN_ID)),
    (None, None),
    ("", None),
    ("garbage", None),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),  # no flags
    # A later version is read by its first four fields, as W3C asks of parsers.
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", (TRACE_ID, PARENT_SPAN_ID)),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", (TRACE_ID, PARENT_SPAN_ID)),
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # the forbidden version
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),
    ("00-4bf92f3577b34da6a3ce929d0e0e47360-00f067aa0ba902b7-01", None),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", None),
    ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", None),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
]


def malformed(value: str, why: str):
    return pytest.param(value, None, id=why)


# W3C trace context: ids are exactly 32 / 16 lower-case hex digits, flags 2; version 00 has 4 parts.
MALFORMED_TRACEPARENTS = [
    malformed("00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a sign in the trace id"),
    malformed("00-0x4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01", "a 0x prefix"),
    malformed("00-4bf92f3577b34da6_3ce929d0e0e4736-00f067aa0ba902b7-01", "an underscore"),
    malformed("00- bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a space in the trace id"),
    malformed("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", "upper-case hex"),
    malformed("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz", "flags not hex"),
    malformed("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx", "a fifth part"),
]


@pytest.mark.parametrize("value, parsed", TRACEPARENTS + MALFORMED_TRACEPARENTS)
def test_it_parses_w3c_traceparent(value, parsed):
    assert parse_traceparent(value) == parsed


UNPARSEABLE = [
    ("a TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", NGINX_200),
    ("the HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NGINX_200),
    ("a request cut inside its first line", WRK_GET[:10], NGINX_200),
    ("an empty request", b"", NGINX_200),
    ("a response captured from its body", WRK_GET, NGINX_200[232:]),
    ("an empty response", WRK_GET, b""),
]


@pytest.mark.parametrize("what, request_bytes, response", UNPARSEABLE, ids=[u[0] for u in UNPARSEABLE])
def test_it_counts_unparseable_heads_instead_of_raising(builder, what, request_bytes, response):
    assert builder.exchange(http_event(request_bytes, response)) is None
    assert builder.skipped == 1
    assert builder.skip_reasons == {"unparseable http head": 1}


def test_it_counts_an_exchange_without_a_peer_address(builder):
    assert builder.exchange(http_event(WRK_GET, NGINX_200, remote=None)) is None
    assert builder.skip_reasons == {"unknown peer address": 1}


def test_it_keeps_an_exchange_without_a_local_address(builder):
    record = builder.exchange(http_event(WRK_GET, NGINX_200, role=ROLE_CLIENT, local=None))
    assert (record[schema.CLIENT_ADDRESS], record[schema.CLIENT_PORT]) == ("", 0)


@pytest.mark.parametrize(
    "role, local, remote, kind, server, client",
    [
        (ROLE_SERVER, SERVER, CLIENT, schema.SPAN_SERVER, SERVER, CLIENT),
        (ROLE_CLIENT, CLIENT, SERVER, schema.SPAN_CLIENT, SERVER, CLIENT),
        (ROLE_SERVER, ("::1", 8443), ("::1", 40400), schema.SPAN_SERVER, ("::1", 8443), ("::1", 40400)),
        (  # a dual-stack server: the kernel reports IPv4-mapped addresses
            ROLE_SERVER,
            ("::ffff:10.0.0.5", 80),
            ("::ffff:10.0.0.9", 40400),
            schema.SPAN_SERVER,
            ("10.0.0.5", 80),
            ("10.0.0.9", 40400),
        ),
    ],
)
def test_it_tells_server_from_client_by_the_role(builder, role, local, remote, kind, server, client):
    record = builder.exchange(http_event(WRK_GET, NGINX_200, role=role, local=local, remote=remote))
    assert record[schema.SPAN_KIND] == kind
    assert (record[schema.SERVER_ADDRESS], record[schema.SERVER_PORT]) == server
    assert (record[schema.CLIENT_ADDRESS], record[schema.CLIENT_PORT]) == client


def test_it_names_a_process_that_exited_by_the_comm_in_its_event(builder):
    # It answered on port 8080: named like a listener would be, so its callers' edges match.
    assert builder.exchange(http_event(WRK_GET, NGINX_200, comm=b"nginx"))[schema.SERVICE] == "nginx:8080"
    gone_too = PID + 1
    assert builder.flow(flow_event(comm=b"curl", role=ROLE_CLIENT, pid=gone_too))[schema.SERVICE] == "curl"


def test_it_gives_equal_records_for_repeated_exchanges(builder):
    event = http_event(PYTHON_POST, NGINX_200)
    first = builder.exchange(event)
    assert builder.exchange(event) == first
    assert builder.exchange(event)[schema.TRACE_ID] == TRACE_ID  # the memo kept its traceparent


def test_it_hands_out_a_fresh_record_each_time(builder, tmp_path):
    event = http_event(PYTHON_POST, NGINX_200)
    first = builder.exchange(event)
    first[schema.URL_PATH] = "/changed"
    first.clear()
    assert builder.exchange(event) == builder_on(tmp_path).exchange(event)


def test_it_parses_each_distinct_head_on_its_own(builder):
    a = builder.exchange(http_event(WRK_GET, NGINX_200))
    b = builder.exchange(http_event(CURL_GET, NGINX_404))
    c = builder.exchange(http_event(WRK_GET, NGINX_404))
    assert (a[schema.URL_PATH], a[schema.HTTP_STATUS]) == ("/wrk/bench", 200)
    assert (b[schema.HTTP_ROUTE], b[schema.HTTP_STATUS]) == ("/api/users/{id}", 404)
    assert (c[schema.URL_PATH], c[schema.HTTP_STATUS]) == ("/wrk/bench", 404)


def test_it_describes_a_closed_connection(builder):
    record = builder.flow(flow_event())
    assert record == {
        schema.KIND: schema.KIND_FLOW,
        schema.HOST: "web-1",
        schema.TS: REQ_NS + 40_000_000 + CLOCK_OFFSET_NS,
        schema.SERVICE: "nginx:8080",  # the port it served on names it (a forked server has no listener)
        schema.SPAN_KIND: schema.SPAN_SERVER,
        schema.SERVER_ADDRESS: "127.0.0.1",
        schema.SERVER_PORT: 8080,
        schema.CLIENT_ADDRESS: "127.0.0.1",
        schema.CLIENT_PORT: 51000,
        schema.PEER_SERVICE: None,
        schema.PID: PID,
        schema.PROTOCOL: schema.PROTO_HTTP,
        schema.FLOW_EVENT: "close",
        schema.FLOW_BYTES_SENT: 1_250,
        schema.FLOW_BYTES_RECEIVED: 380,
        schema.FLOW_DURATION_NS: 40_000_000,
        schema.FLOW_REQUESTS: 3,
    }


def test_it_calls_a_connection_not_classified_as_http_tcp(builder):
    assert builder.flow(flow_event(proto=PROTO_OTHER))[schema.PROTOCOL] == "tcp"


def test_it_drops_a_flow_without_a_peer_address(builder):
    assert builder.flow(flow_event(remote=None)) is None


def test_it_drops_the_flows_of_redis_serving_this_worker(redis_url):
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", redis_port)) as worker_connection:
        builder = builder_on()
        builder.sockets.refresh(force=True)
        own_port = worker_connection.getsockname()[1]
        other_port = helpers.free_port()
        assert own_port in builder.sockets.own_ports and other_port not in builder.sockets.own_ports

        redis_side = {"role": ROLE_SERVER, "local": ("127.0.0.1", redis_port), "comm": b"redis-server"}
        assert builder.flow(flow_event(**redis_side, remote=("127.0.0.1", own_port))) is None
        assert builder.flow(flow_event(**redis_side, remote=("127.0.0.1", other_port))) is not None


def test_it_keeps_the_flows_of_remote_clients_whose_port_this_worker_also_uses(builder):
    builder.sockets.own_ports = {51000}
    record = builder.flow(flow_event(local=("10.0.0.5", 443), remote=("198.51.100.7", 51000)))
    assert record is not None


# A server that names itself by OTEL_SERVICE_NAME, prints its port and waits for stdin to close.
LISTENER = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
sys.stdin.readline()
"""


def test_it_names_the_local_callee_of_a_client_exchange():
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=os.environ | {"OTEL_SERVICE_NAME": "inventory"},
        text=True,
    )
    try:
        assert select.select([proc.stdout], [], [], CHILD_READY_TIMEOUT_S)[0], "the listener did not start"
        port = int(proc.stdout.readline())
        builder = builder_on()
        local_call = http_event(WRK_GET, NGINX_200, role=ROLE_CLIENT, remote=("127.0.0.1", port))
        remote_call = http_event(WRK_GET, NGINX_200, role=ROLE_CLIENT, remote=("203.0.113.7", port))
        assert builder.exchange(local_call)[schema.PEER_SERVICE] == "inventory"
        assert builder.exchange(remote_call)[schema.PEER_SERVICE] is None
    finally:
        helpers.stop(proc)
        proc.stdin.close()
        proc.stdout.close()
