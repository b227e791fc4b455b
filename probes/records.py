"""Kernel events to records (probes/schema.py), redacted before they leave the host.

Nothing from the raw payload travels except the allowlisted header values, the redacted
target and the normalized route: Authorization, Cookie and request bodies stay here. What is
allowlisted is the host's redaction policy (probes.redact.Policy, set with
RecordBuilder.set_redaction).
"""

import ipaddress
import re
import time
from dataclasses import dataclass, field

from probes import schema
from probes.identity import ServiceNames, SocketTable
from probes.programs.socket_trace import (
    PROTO_HTTP,
    PROTO_KAFKA,
    PROTO_MONGODB,
    PROTO_MYSQL,
    PROTO_POSTGRES,
    PROTO_REDIS,
    ROLE_CLIENT,
    ROLE_SERVER,
    FlowEvent,
    HttpEvent,
    format_addr,
)
from probes.programs.tcp_stats import FAILURES, HealthEvent
from probes.protocols import INVALID, NEED_MORE, OK, http1, kafka, mongodb, mysql, postgres, redis
from probes.redact import DEFAULT_POLICY, Policy, mask_connection_credentials, redact_target, safe_text
from probes.routes import normalize_route

SPAN_KINDS = {ROLE_SERVER: schema.SPAN_SERVER, ROLE_CLIENT: schema.SPAN_CLIENT}
# The kernel's protocol id (bpf/socket_trace.c enum proto) -> network.protocol.name.
PROTOCOL_NAMES = {
    PROTO_HTTP: schema.PROTO_HTTP,
    PROTO_POSTGRES: schema.PROTO_POSTGRESQL,
    PROTO_MYSQL: schema.PROTO_MYSQL,
    PROTO_REDIS: schema.PROTO_REDIS,
    PROTO_MONGODB: schema.PROTO_MONGODB,
    PROTO_KAFKA: schema.PROTO_KAFKA,
}
# The kernel's protocol id -> the parser that summarizes one captured exchange (HTTP aside).
PROTOCOL_PARSERS = {
    PROTO_POSTGRES: postgres.summarize,
    PROTO_MYSQL: mysql.summarize,
    PROTO_REDIS: redis.summarize,
    PROTO_MONGODB: mongodb.summarize,
    PROTO_KAFKA: kafka.summarize,
}
# The parsers whose output depends on the redaction policy: they take it as `policy=`.
POLICY_PARSERS = frozenset({PROTO_POSTGRES, PROTO_MYSQL, PROTO_REDIS})
USER_AGENT_LIMIT = 256
TRACEPARENT_VERSION = "00"
TRACEPARENT_KEY = "_traceparent"  # internal to _request_fields, never published
MEMO_LIMIT = 4096  # distinct request / response prefixes remembered
MISSING = object()
MAX_PIPELINED = 64  # requests counted in one capture; a 1 KiB capture holds ~20 small ones
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
NO_BODY_STATUSES = (204, 304)  # and every 1xx, and any answer to HEAD (RFC 9110 6.4.1)


def monotonic_to_epoch_offset_ns() -> int:
    """bpf_ktime_get_ns() is CLOCK_MONOTONIC; add this to get ns since the epoch."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace_id, parent span id) from a W3C traceparent header, or None when malformed.

    Version 00 has exactly four fields; a later version is read by its first four (W3C says a
    parser SHOULD); version ff and all-zero ids are invalid.
    """
    match = _TRACEPARENT.fullmatch(value.strip()) if value else None
    if not match:
        return None
    version, trace_id, parent, _flags, rest = match.groups()
    if version == "ff" or (version == TRACEPARENT_VERSION and rest):
        return None
    if trace_id == "0" * 32 or parent == "0" * 16:
        return None
    return trace_id, parent


def derived_trace_id(req_ns: int, pid: int, fd: int) -> str:
    """A trace id for a server request without traceparent, from when and where it was read:
    unique per host and cheap (no hashing on the per-event path); the record's host makes it
    unique across the fleet. Its downstream calls derive the same id from their kernel context."""
    return f"{req_ns:016x}{pid:08x}{fd:08x}"


def derived_span_id(req_ns: int, pid: int, fd: int, tid: int) -> str:
    return f"{(req_ns ^ (pid << 40) ^ (fd << 20) ^ tid) & 0xFFFFFFFFFFFFFFFF:016x}"


def trace_context(event, traceparent: tuple[str, str] | None) -> tuple[str, str]:
    """(trace id, parent span id) of an exchange.

    A client call made while its thread served a request (the kernel's `parent_ns`) is that
    request's child; a W3C traceparent the app sent names the trace; otherwise the exchange
    starts a trace of its own.
    """
    if event.parent_ns:
        parent = derived_span_id(event.parent_ns, event.pid, event.parent_fd, event.tid)
        trace_id = (
            traceparent[0] if traceparent else derived_trace_id(event.parent_ns, event.pid, event.parent_fd)
        )
        return trace_id, parent
    if traceparent:
        return traceparent
    return derived_trace_id(event.req_ns, event.pid, event.fd), ""


def response_bytes(method: str, response: tuple, first_syscall_bytes: int) -> int:
    """The response's size on the wire: head plus Content-Length when both are known, else what
    its first syscall moved (which holds at least the head, and the body when small)."""
    status, header_bytes, truncated, content_length = response
    if method == "HEAD" or status < 200 or status in NO_BODY_STATUSES:
        content_length = 0
    if content_length is None:
        return first_syscall_bytes
    if truncated:  # the capture cut the head: it is longer than what we read
        return max(first_syscall_bytes, header_bytes + content_length)
    return header_bytes + content_length


def pipelined_requests(prefix: bytes) -> int:
    """How many HTTP requests a client wrote at once, as far as the capture shows. The kernel
    pairs the first with its response and sees the others' responses as the same exchange's."""
    head_end = prefix.find(b"\r\n\r\n")
    if head_end < 0 or head_end + 4 >= len(prefix):
        return 1  # the common case, decided without parsing: nothing after the head
    count, rest = 0, prefix
    while rest and count < MAX_PIPELINED:
        result = http1.parse_request(rest)
        if result.status == INVALID or (
            result.status == NEED_MORE and count and not http1.looks_like_http(rest)
        ):
            break
        count += 1
        if result.status != OK:
            break  # the capture cut this one: it was sent all the same
        rest = rest[result.consumed :]
    return max(count, 1)


def _remember(memo: dict, key: bytes, value) -> None:
    if len(memo) >= MEMO_LIMIT:
        memo.clear()  # cheaper than LRU bookkeeping, and refills within one poll
    memo[key] = value


@dataclass
class RecordBuilder:
    """Turns events into records. Counts what it could not use instead of raising."""

    host: str
    names: ServiceNames
    sockets: SocketTable
    clock_offset_ns: int = field(default_factory=monotonic_to_epoch_offset_ns)
    skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    # Change it with set_redaction: the memos below hold fields redacted under the policy in force.
    redaction: Policy = DEFAULT_POLICY
    # Keyed by raw captures, credentials included: kept out of the repr, so a log line cannot leak them.
    _request_memo: dict = field(default_factory=dict, repr=False)
    _response_memo: dict = field(default_factory=dict, repr=False)

    def set_redaction(self, policy: Policy) -> None:
        """Redact every exchange from now on by `policy` (probes.redact.Policy.from_control reads
        one from the control hash). Forgets the memoized heads when the policy changes, since
        they were redacted under the old one."""
        if policy == self.redaction:
            return
        self.redaction = policy
        self._request_memo.clear()
        self._response_memo.clear()

    def _skip(self, reason: str) -> None:
        self.skipped += 1
        self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1

    def _local_ends(self, pid: int, comm: bytes | None, laddr, raddr, role: int) -> dict | None:
        local, remote = format_addr(laddr), format_addr(raddr)
        if remote is None:
            return None
        local = local or ("", 0)
        server, client = (local, remote) if role == ROLE_SERVER else (remote, local)
        if role == ROLE_SERVER and server[1]:
            self.names.learn_server_port(pid, server[1])
        return {
            schema.SERVICE: self.names.name_for(pid, comm.decode("utf-8", "replace") if comm else ""),
            schema.SPAN_KIND: SPAN_KINDS.get(role, schema.SPAN_CLIENT),
            schema.SERVER_ADDRESS: server[0],
            schema.SERVER_PORT: server[1],
            schema.CLIENT_ADDRESS: client[0],
            schema.CLIENT_PORT: client[1],
            schema.PEER_SERVICE: self.peer_service(*remote) if role == ROLE_CLIENT else None,
            schema.PID: pid,
        }

    def peer_service(self, ip: str, port: int) -> str | None:
        """The service behind a local listening port, when the callee runs on this host."""
        if not self._is_local(ip):
            return None
        pid = self.sockets.owner_of_port(port)
        return self.names.name_for(pid) if pid is not None else None

    def _is_local(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip).is_loopback or ip in self.sockets.local_ips
        except ValueError:
            return False

    def _is_own_socket(self, ip: str, port: int) -> bool:
        return port in self.sockets.own_ports and self._is_local(ip)

    def exchange(self, event: HttpEvent) -> dict | None:
        """One request/response exchange, of whichever protocol the kernel recognised."""
        if event.proto == PROTO_HTTP:
            fields, trace = self._http_fields(event)
        else:
            fields, trace = self._protocol_fields(event), None
        if fields is None:
            return None
        ends = self._local_ends(event.pid, event.comm, event.laddr, event.raddr, event.role)
        if ends is None:
            self._skip("unknown peer address")
            return None
        trace_id, parent = trace_context(event, trace)
        return {
            schema.KIND: schema.KIND_REQUEST,
            schema.HOST: self.host,
            schema.TS: event.req_ns + self.clock_offset_ns,
            **ends,
            schema.DURATION_NS: max(0, event.resp_ns - event.req_ns),
            schema.REQUEST_BYTES: event.req_bytes,
            schema.RESPONSE_BYTES: event.resp_bytes,
            schema.TLS: bool(event.tls),
            schema.TRACE_ID: trace_id,
            schema.SPAN_ID: derived_span_id(event.req_ns, event.pid, event.fd, event.tid),
            schema.PARENT_SPAN_ID: parent,
            schema.TID: event.tid,
            **fields,
        }

    def _http_fields(self, event: HttpEvent) -> tuple[dict | None, tuple[str, str] | None]:
        request = self._request_fields(event.request_capture())
        response = self._response_fields(event.response_capture())
        if request is None or response is None:
            self._skip("unparseable http head")
            return None, None
        trace = request.pop(TRACEPARENT_KEY)
        status = response[0]
        request[schema.PROTOCOL] = schema.PROTO_HTTP
        request[schema.HTTP_STATUS] = status
        request[schema.ERROR] = schema.is_error_status(status)
        request[schema.RESPONSE_BYTES] = response_bytes(
            request[schema.HTTP_METHOD], response, event.resp_bytes
        )
        return request, trace

    def _protocol_fields(self, event: HttpEvent) -> dict | None:
        parser = PROTOCOL_PARSERS.get(event.proto)
        if parser is None:
            self._skip(f"no parser for protocol {event.proto}")
            return None
        name = PROTOCOL_NAMES[event.proto]
        if event.proto in POLICY_PARSERS:
            fields = parser(event.request_capture(), event.response_capture(), policy=self.redaction)
        else:
            fields = parser(event.request_capture(), event.response_capture())
        if fields is None:
            self._skip(f"unparseable {name} exchange")
            return None
        fields[schema.PROTOCOL] = name
        fields.setdefault(schema.ERROR, False)
        return fields

    def _request_fields(self, prefix: bytes) -> dict | None:
        """What a request prefix contributes to its record (a fresh dict), memoized: the same
        request bytes recur constantly (health checks, polling clients, load generators)."""
        fields = self._request_memo.get(prefix, MISSING)
        if fields is MISSING:
            head = http1.read_request_head(prefix, self.redaction)
            fields = head and {
                schema.HTTP_METHOD: head.method,
                schema.URL_PATH: redact_target(head.target, self.redaction),
                schema.HTTP_ROUTE: normalize_route(mask_connection_credentials(head.target)),
                schema.USER_AGENT: safe_text(head.headers.get("user-agent", ""), USER_AGENT_LIMIT),
                TRACEPARENT_KEY: parse_traceparent(head.headers.get("traceparent")),
            }
            if head and (count := pipelined_requests(prefix)) > 1:
                fields[schema.REQUEST_COUNT] = count
            _remember(self._request_memo, prefix, fields)
        return dict(fields) if fields else None

    def _response_fields(self, prefix: bytes) -> tuple[int, int, bool, int | None] | None:
        """(status, head bytes read, head cut by the capture, Content-Length or None), memoized."""
        fields = self._response_memo.get(prefix, MISSING)
        if fields is MISSING:
            head = http1.read_response_head(prefix, self.redaction)
            length = head.headers.get("content-length", "") if head else ""
            # isascii: str.isdigit() also accepts "²" and other digits int() refuses or misreads.
            content_length = int(length) if length.isascii() and length.isdigit() else None
            fields = head and (head.status, head.header_bytes, head.truncated, content_length)
            _remember(self._response_memo, prefix, fields)
        return fields

    def flow(self, event: FlowEvent) -> dict | None:
        ends = self._local_ends(event.pid, event.comm, event.laddr, event.raddr, event.role)
        if ends is None:
            return None  # a socket we never learned the peer of (not TCP, or UDP connect)
        if event.role == ROLE_SERVER and self._is_own_socket(
            ends[schema.CLIENT_ADDRESS], ends[schema.CLIENT_PORT]
        ):
            return None  # Redis serving this worker: the worker never reports itself
        return {
            schema.KIND: schema.KIND_FLOW,
            schema.HOST: self.host,
            schema.TS: event.closed_ns + self.clock_offset_ns,
            **ends,
            schema.PROTOCOL: PROTOCOL_NAMES.get(event.proto, "tcp"),
            schema.FLOW_EVENT: schema.FLOW_EVENT_CLOSE,
            schema.FLOW_BYTES_SENT: event.bytes_sent,
            schema.FLOW_BYTES_RECEIVED: event.bytes_recv,
            schema.FLOW_DURATION_NS: max(0, event.closed_ns - event.opened_ns),
            schema.FLOW_REQUESTS: event.requests,
        }

    def health(self, event: HealthEvent) -> dict | None:
        """A connection that failed, retransmitted or was reset (the tcp probe's tcp_stats), from
        the end this host holds: a server when its local port is one this host listens on."""
        local, remote = format_addr(event.laddr), format_addr(event.raddr)
        if local is None or remote is None:
            self._skip("health event without addresses")
            return None
        owner = self.sockets.owner_of_port(local[1])
        role = ROLE_SERVER if owner is not None else ROLE_CLIENT
        if role == ROLE_SERVER and self._is_own_socket(*remote):
            return None  # Redis serving this worker: the worker never reports itself
        pid = event.tgid or (owner if role == ROLE_SERVER else None)
        if pid is None:
            self._skip("health event of a connection opened before the worker started")
            return None
        return {
            schema.KIND: schema.KIND_FLOW,
            schema.HOST: self.host,
            schema.TS: event.ts + self.clock_offset_ns,
            **self._local_ends(pid, None, event.laddr, event.raddr, role),
            schema.PROTOCOL: "tcp",
            schema.FLOW_EVENT: schema.FLOW_EVENT_HEALTH,
            schema.FLOW_FAILURE: FAILURES.get(event.failure),
            schema.FLOW_RETRANSMITS: event.retransmits,
            schema.FLOW_RESETS_SENT: event.resets_sent,
            schema.FLOW_RESETS_RECEIVED: event.resets_received,
            schema.FLOW_RTT_US: None,  # not collected: see probes/programs/tcp_stats.py
        }
