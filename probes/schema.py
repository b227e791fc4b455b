"""The one definition of what travels from probe workers to the ingester.

Records are plain dicts with OpenTelemetry semantic-convention keys, packed
as msgpack lists (one stream entry holds one batch) into a Redis Stream.
obsweb imports this module; the probe worker must not import Django, so
nothing here may either.
"""

import msgpack

# Redis keys and channels shared by the worker, the ingester and the web app.
RECORDS_STREAM = "obs:records"
RECORDS_STREAM_MAXLEN = 200_000  # entries (batches), trimmed approximately
RECORDS_FIELD = b"d"  # stream entry field holding the msgpack batch
INGEST_GROUP = "ingest"
CONTROL_CHANNEL = "obs:control"  # PUBLISH <host name> (or CONTROL_ALL_HOSTS) after changing its hash
CONTROL_ALL_HOSTS = "*"
AGENT_KEY_TTL_S = 30
BATCH_MAX_RECORDS = 1000
BATCH_MAX_AGE_S = 0.2


def control_key(host: str) -> str:
    """The hash holding a host's desired state, written by the web app, read by its worker.

    Fields: each probe name -> "1" (on) or "0" (off), absent meaning on; CONTROL_CPU_BUDGET ->
    the worker's CPU budget in percent of one core ("" or absent: no budget); CONTROL_REDACTION
    -> the redaction policy as JSON (REDACTION_* keys; absent: the defaults in probes/redact.py).
    """
    return f"obs:control:{host}"


CONTROL_CPU_BUDGET = "cpu_budget_percent"
CONTROL_REDACTION = "redaction"
# Redaction policy keys (JSON object in CONTROL_REDACTION). Sensitive headers are masked whatever
# the policy says; the policy can only widen what is masked, or name what may be kept.
REDACTION_HEADERS_KEPT = "headers_kept"  # [header names] whose values may leave the host
REDACTION_QUERY_KEYS_KEPT = "query_keys_kept"  # [query parameter names] whose values may leave
REDACTION_SQL_LITERALS = "sql_literals"  # "mask" (default) or "keep"
REDACTION_REDIS_COMMANDS = "redis_commands_masked"  # [commands] whose arguments are masked


def agent_key(host: str) -> str:
    return f"obs:agent:{host}"


# Record kinds.
KIND_REQUEST = "request"
KIND_FLOW = "flow"
KIND_RESOURCE = "resource"
KIND_AGENT = "agent"
KINDS = (KIND_REQUEST, KIND_FLOW, KIND_RESOURCE, KIND_AGENT)

# Which end of a connection produced a request record.
SPAN_SERVER = "server"
SPAN_CLIENT = "client"

# Protocol names (network.protocol.name).
PROTO_HTTP = "http"
PROTO_POSTGRESQL = "postgresql"
PROTO_MYSQL = "mysql"
PROTO_REDIS = "redis"
PROTO_MONGODB = "mongodb"
PROTO_KAFKA = "kafka"

# Probe names, as toggled per host in the control plane. One per protocol the socket program
# parses (each switched in the kernel), tls (the libssl uprobes) and tcp (connection flows).
PROBE_HTTP = "http"
PROBE_TLS = "tls"
PROBE_POSTGRES = "postgres"
PROBE_MYSQL = "mysql"
PROBE_REDIS = "redis"
PROBE_MONGODB = "mongodb"
PROBE_KAFKA = "kafka"
PROBE_TCP = "tcp"
PROBE_CPU = "cpu"  # on-CPU time and run-queue latency (sched tracepoints), memory from /proc
PROBE_DISK = "disk"  # block I/O bytes, ops and latency (block tracepoints)
PROBES = (
    PROBE_HTTP,
    PROBE_TLS,
    PROBE_POSTGRES,
    PROBE_MYSQL,
    PROBE_REDIS,
    PROBE_MONGODB,
    PROBE_KAFKA,
    PROBE_TCP,
    PROBE_CPU,
    PROBE_DISK,
)

# Record attribute keys. Common to every record:
HOST = "host"
TS = "ts"  # ns since the epoch
KIND = "kind"
# request records:
SERVICE = "service.name"
SPAN_KIND = "span.kind"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
CLIENT_PORT = "client.port"
PROTOCOL = "network.protocol.name"
HTTP_METHOD = "http.request.method"
URL_PATH = "url.path"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
DB_SYSTEM = "db.system"
DB_OPERATION = "db.operation.name"
DB_COLLECTION = "db.collection.name"
DB_QUERY_TEXT = "db.query.text"
DB_QUERY_SUMMARY = "db.query.summary"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_SYSTEM = "messaging.system"
DURATION_NS = "duration_ns"
REQUEST_BYTES = "request.bytes"
RESPONSE_BYTES = "response.bytes"
USER_AGENT = "user_agent.original"
TLS = "tls"
TRACE_ID = "trace_id"
SPAN_ID = "span_id"
PARENT_SPAN_ID = "parent_span_id"
PID = "pid"
TID = "tid"
PEER_SERVICE = "peer.service"
ERROR = "error"  # bool: 5xx or a protocol-level error
ERROR_TYPE = "error.type"  # short class of the error: "500", SQLSTATE "42P01", Redis "WRONGTYPE"
DB_RESPONSE_STATUS = "db.response.status_code"  # SQLSTATE, MySQL error number, Mongo code
REQUEST_COUNT = "request.count"  # operations one record stands for (pipelined ones); absent means 1
# flow records (plus SERVICE, SPAN_KIND, addresses, PID):
FLOW_EVENT = "flow.event"  # FLOW_EVENT_CLOSE or FLOW_EVENT_HEALTH
FLOW_BYTES_SENT = "flow.bytes_sent"
FLOW_BYTES_RECEIVED = "flow.bytes_received"
FLOW_DURATION_NS = "flow.duration_ns"
FLOW_REQUESTS = "flow.requests"
# TCP health (the tcp probe, from sock/tcp tracepoints), on flow records whose FLOW_EVENT is
# FLOW_EVENT_HEALTH: one per connection that failed, retransmitted or was reset, sent when it
# closes, from the end that saw it (SPAN_KIND client or server; addresses as on requests).
FLOW_EVENT_CLOSE = "close"  # a connection's final byte and request totals
FLOW_EVENT_HEALTH = "health"
FLOW_FAILURE = "flow.failure"  # None, or why the connection never opened: "refused" or "timeout"
FLOW_RETRANSMITS = "flow.retransmits"
FLOW_RESETS_SENT = "flow.resets_sent"
FLOW_RESETS_RECEIVED = "flow.resets_received"
FLOW_RTT_US = "flow.rtt_us"  # smoothed RTT the kernel last reported, None where not seen
# resource records: one per service per host per interval (SERVICE set), plus one per host per
# interval with RESOURCE_SCOPE "host" whose values are the whole host's. Every amount below is
# what happened during the interval, except memory, which is read at its end.
RESOURCE_SCOPE = "resource.scope"  # "service" or "host"
RESOURCE_SCOPE_SERVICE = "service"
RESOURCE_SCOPE_HOST = "host"
RESOURCE_INTERVAL_NS = "resource.interval_ns"
RESOURCE_PROCESSES = "process.count"  # processes of the service seen in the interval
CPU_TIME_NS = "process.cpu.time_ns"  # on-CPU time
RUNQ_WAIT_NS = "sched.runq.wait_ns"  # total time runnable but waiting for a CPU
RUNQ_WAITS = "sched.runq.waits"  # how many waits that total covers
RUNQ_WAIT_MAX_NS = "sched.runq.wait_max_ns"
MEMORY_RSS_BYTES = "process.memory.rss_bytes"  # sum over the service's processes, at interval end
MEMORY_TOTAL_BYTES = "system.memory.total_bytes"  # host records only
MEMORY_AVAILABLE_BYTES = "system.memory.available_bytes"  # host records only
CPU_COUNT = "system.cpu.count"  # host records only
NET_BYTES_SENT = "network.bytes_sent"  # bytes written to TCP sockets
NET_BYTES_RECEIVED = "network.bytes_received"
DISK_READ_BYTES = "disk.read_bytes"
DISK_WRITE_BYTES = "disk.write_bytes"
DISK_READ_OPS = "disk.read_ops"
DISK_WRITE_OPS = "disk.write_ops"
DISK_WAIT_NS = "disk.wait_ns"  # total time from issue to completion of those ops
# agent records:
AGENT_VERSION = "agent.version"
AGENT_KERNEL = "agent.kernel"
# {probe: {"desired": bool, "actual": bool, "error": str|None, "throttled": str|None (why the
# worker switched it off over its CPU budget), "events_per_s": float, "cpu_percent": float|None}}
AGENT_PROBES = "agent.probes"
AGENT_EVENTS_SEEN = "agent.events_seen"  # cumulative since start
AGENT_EVENTS_DROPPED = "agent.events_dropped"  # cumulative since start
AGENT_EVENTS_SKIPPED = "agent.events_skipped"  # cumulative, unparseable payloads
AGENT_RECORDS_DROPPED = "agent.records_dropped"  # cumulative, lost before Redis
AGENT_LAG_S = "agent.lag_s"
AGENT_CPU_PERCENT = "agent.cpu_percent"  # the worker's CPU, user space plus its BPF programs, % of a core
AGENT_CPU_BUDGET = "agent.cpu_budget_percent"  # the budget it applies, None for none
AGENT_STOPPING = "agent.stopping"  # True in the last heartbeat of a worker shutting down
AGENT_CONTROL_ERROR = "agent.control_error"  # a control hash field the worker could not use, or None


def is_error_status(status: int | None) -> bool:
    """HTTP 5xx counts as an error; 4xx is the client's fault, counted apart."""
    return status is not None and status >= 500


def pack_batch(records: list[dict]) -> bytes:
    return msgpack.packb(records, use_bin_type=True)


def unpack_batch(payload: bytes) -> list[dict]:
    """Decode one stream entry. Raises ValueError on anything that is not a list of dicts."""
    try:
        # One bad string (invalid UTF-8, which no worker sends but another sender could) costs
        # only its own text, not the whole entry with every good record in it.
        records = msgpack.unpackb(payload, raw=False, strict_map_key=False, unicode_errors="replace")
    except Exception as exc:  # msgpack raises several unrelated types
        raise ValueError(f"undecodable batch: {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError("batch is not a list of records")
    return records
