"""Request records as an OTLP ExportTraceServiceRequest, written straight in protobuf's wire format.

Why not the SDK's path (ReadableSpan objects, then the exporters' `encode_spans`): measured on this
machine it costs ~33 us per span to build the objects and ~107 us to encode them (a protobuf
message per attribute), more than the ingester spends storing the record (~100 us). Here a span
is a few byte strings joined, and a (key, value) attribute already seen is one dict lookup: most
values repeat (routes, methods, addresses, user agents).

The messages and field numbers are those of opentelemetry-proto's trace/v1 and common/v1 (stable
since OTLP 1.0); tests/test_otel_export.py decodes the output with the official classes.
"""

import random
import struct

from probes import schema

SCOPE_NAME = b"obsweb.ingest"
# Record keys that become the span's own fields (ids, kind, times, status) or its resource;
# every other non-empty scalar attribute is copied to the span as it is.
SPAN_FIELDS = frozenset(
    {
        schema.KIND,
        schema.HOST,
        schema.TS,
        schema.SERVICE,
        schema.SPAN_KIND,
        schema.TRACE_ID,
        schema.SPAN_ID,
        schema.PARENT_SPAN_ID,
        schema.DURATION_NS,
        schema.ERROR,
        schema.PID,
        schema.TID,
    }
)
RENAMED = {schema.PID: "process.pid", schema.TID: "thread.id"}  # their OpenTelemetry names
SPAN_KIND_SERVER, SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL = 2, 3, 1  # trace.v1.Span.SpanKind
KINDS = {schema.SPAN_SERVER: SPAN_KIND_SERVER, schema.SPAN_CLIENT: SPAN_KIND_CLIENT}
STATUS_ERROR = 2  # trace.v1.Status.StatusCode
FLAGS_HAS_IS_REMOTE, FLAGS_IS_REMOTE = 0x100, 0x200  # trace.v1.SpanFlags, as the SDK sets them
MAX_CACHED_ATTRIBUTES = 100_000  # encoded (key, value) pairs, forgotten all at once past this
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) of field number `tag`."""
    return varint(tag << 3 | 2) + varint(len(payload)) + payload


def any_value(value) -> bytes | None:
    """common.v1.AnyValue of a scalar; None for what OTLP attributes cannot hold."""
    kind = type(value)
    if kind is str:
        return field(1, value.encode("utf-8", "replace")) if value else None
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF) if INT64_MIN <= value <= INT64_MAX else None
    if kind is float:
        return b"\x21" + struct.pack("<d", value)
    return None


class SpanEncoder:
    """Encodes batches of request records; keeps the encoded attributes and resources it has seen."""

    def __init__(self):
        self.attributes: dict[tuple, bytes] = {}
        self.resources: dict[tuple, bytes] = {}

    def request(self, records: list[dict]) -> tuple[bytes, int]:
        """(ExportTraceServiceRequest bytes, spans in it); records without a usable time are left out."""
        by_resource: dict[tuple, list[bytes]] = {}
        count = 0
        for record in records:
            span = self.span(record)
            if span is not None:
                by_resource.setdefault((record.get(schema.SERVICE), record.get(schema.HOST)), []).append(span)
                count += 1
        scope = field(1, field(1, SCOPE_NAME))
        return b"".join(
            field(1, self.resource(key) + field(2, scope + b"".join(spans)))
            for key, spans in by_resource.items()
        ), count

    def resource(self, key: tuple) -> bytes:
        """ResourceSpans.resource (field 1) of a (service, host): spans group per service."""
        encoded = self.resources.get(key)
        if encoded is None:
            if len(self.resources) >= MAX_CACHED_ATTRIBUTES:
                self.resources.clear()
            service, host = key
            attributes = [
                key_value("service.name", service or "unknown_service"),
                key_value("host.name", host),
            ]
            encoded = self.resources[key] = field(1, b"".join(field(1, kv) for kv in attributes if kv))
        return encoded

    def span(self, record: dict) -> bytes | None:
        """ScopeSpans.spans (field 2) for one record; None when it has no usable time."""
        get = record.get
        ts, duration = get(schema.TS), get(schema.DURATION_NS)
        if type(ts) is not int or type(duration) is not int or not 0 < ts < 2**63 - duration or duration < 0:
            return None
        # OTLP spans must have ids: a record without (valid) ones gets random ones, a root span.
        trace_id = _id(get(schema.TRACE_ID), 16) or random.getrandbits(128).to_bytes(16, "big")
        span_id = _id(get(schema.SPAN_ID), 8) or random.getrandbits(64).to_bytes(8, "big")
        parent_id = _id(get(schema.PARENT_SPAN_ID), 8)
        kind = KINDS.get(get(schema.SPAN_KIND), SPAN_KIND_INTERNAL)
        # A server span's parent is in the calling process; a client span's is its own server span.
        flags = FLAGS_HAS_IS_REMOTE | (FLAGS_IS_REMOTE if parent_id and kind == SPAN_KIND_SERVER else 0)
        parts = [
            b"\x0a\x10" + trace_id,
            b"\x12\x08" + span_id,
            b"\x22\x08" + parent_id if parent_id else b"",
            field(5, span_name(record).encode("utf-8", "replace")),
            b"\x30" + varint(kind),
            # The worker stamps a record with the time the request was seen (aggregate.py does too).
            b"\x39" + struct.pack("<Q", ts),
            b"\x41" + struct.pack("<Q", ts + duration),
        ]
        attribute = self.attribute
        for key, value in record.items():
            if key not in SPAN_FIELDS:
                parts.append(attribute(key, value))
        for key, name in RENAMED.items():
            parts.append(attribute(name, get(key)))
        if get(schema.ERROR) is True:
            message = str(get(schema.ERROR_TYPE) or "").encode("utf-8", "replace")
            parts.append(field(15, (field(2, message) if message else b"") + b"\x18" + varint(STATUS_ERROR)))
        parts.append(b"\x85\x01" + struct.pack("<I", flags))  # field 16, fixed32
        return field(2, b"".join(parts))

    def attribute(self, key, value) -> bytes:
        """Span.attributes (field 9) holding one key and value; b"" for what OTLP cannot hold."""
        cache_key = (key, type(value), value)
        try:
            return self.attributes[cache_key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value (list, dict): not an OTLP scalar anyway
            return b""
        kv = key_value(key, value)
        encoded = field(9, kv) if kv else b""
        if len(self.attributes) >= MAX_CACHED_ATTRIBUTES:
            self.attributes.clear()
        self.attributes[cache_key] = encoded
        return encoded


def key_value(key, value) -> bytes | None:
    """common.v1.KeyValue; None for a value OTLP attributes cannot hold, or an empty string."""
    encoded = any_value(value) if type(key) is str else None
    return field(1, key.encode("utf-8", "replace")) + field(2, encoded) if encoded else None


def span_name(record: dict) -> str:
    """The conventions' low-cardinality names: "GET /users/{id}", "SELECT users", "Produce orders"."""
    get = record.get
    if get(schema.PROTOCOL) == schema.PROTO_HTTP:
        method, route = get(schema.HTTP_METHOD) or "HTTP", get(schema.HTTP_ROUTE)
        return f"{method} {route}" if route and get(schema.SPAN_KIND) == schema.SPAN_SERVER else str(method)
    if summary := get(schema.DB_QUERY_SUMMARY):
        return str(summary)
    operation = get(schema.DB_OPERATION)
    target = get(schema.DB_COLLECTION) or get(schema.MESSAGING_DESTINATION)
    if operation:
        return f"{operation} {target}" if target else str(operation)
    return str(get(schema.PROTOCOL) or "request")


def _id(value, size: int) -> bytes:
    """A W3C id's bytes from its hex form; b"" for anything else, all zeros included (invalid)."""
    if type(value) is not str or len(value) != size * 2:
        return b""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return b""
    return raw if any(raw) else b""
