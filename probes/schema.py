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
PROBES = (
    PROBE_HTTP,
    PROBE_TLS,
    PROBE_POSTGRES,
    PROBE_MYSQL,
    PROBE_REDIS,
    PROBE_MONGODB,
    PROBE_KAFKA,
    PROBE_TCP,
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
FLOW_EVENT = "flow.event"  # "close"
FLOW_BYTES_SENT = "flow.bytes_sent"
FLOW_BYTES_RECEIVED = "flow.bytes_received"
FLOW_DURATION_NS = "flow.duration_ns"
FLOW_REQUESTS = "flow.requests"
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
        records = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ValueError(f"undecodable batch: {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError("batch is not a list of records")
    return records
