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
CONTROL_CHANNEL = "obs:control"
AGENT_KEY_TTL_S = 30
BATCH_MAX_RECORDS = 1000
BATCH_MAX_AGE_S = 0.2


def control_key(host: str) -> str:
    return f"obs:control:{host}"


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

# Probe names, as toggled per host in the control plane.
PROBE_HTTP = "http"
PROBE_TLS = "tls"
PROBE_TCP = "tcp"
PROBES = (PROBE_HTTP, PROBE_TLS, PROBE_TCP)

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
AGENT_PROBES = "agent.probes"  # {probe: {"desired": bool, "actual": bool, "error": str|None}}
AGENT_EVENTS_SEEN = "agent.events_seen"  # cumulative since start
AGENT_EVENTS_DROPPED = "agent.events_dropped"  # cumulative since start
AGENT_EVENTS_SKIPPED = "agent.events_skipped"  # cumulative, unparseable payloads
AGENT_RECORDS_DROPPED = "agent.records_dropped"  # cumulative, lost before Redis
AGENT_LAG_S = "agent.lag_s"


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
