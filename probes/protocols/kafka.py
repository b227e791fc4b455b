"""Apache Kafka wire protocol: framing of requests and responses, and reading of captured exchanges.

Every Kafka message is an int32 size and that many bytes. A request starts with a header (api key,
api version, correlation id, client id, and tagged fields in flexible versions), a response with
the correlation id of its request (and tagged fields). A response does not say what it answers:
its layout depends on the api key and version of the request, which callers pass in.

Two kinds of reader for two kinds of input, as in http1:
- parse_request / parse_response frame ONE complete message out of a reassembled byte stream,
  strictly: every prefix of a valid message is NEED_MORE, anything a conforming peer would not
  send is INVALID, as early as the bytes show it.
- read_request / read_response are lenient readers for what the kernel hands over: the first
  MAX_REQUEST_CAPTURE / MAX_RESPONSE_CAPTURE bytes, usually cut inside the message. They take
  what is complete and say when the message was cut.

What is read of a message body: for Produce and Fetch requests and responses the topic names
(not topic ids, which Produce v13+ and Fetch v13+ send instead), for Produce requests the number
of records, and for the responses of the commonest APIs their error codes. Record keys and values
are skipped unread: they never leave this module.

The layouts follow Apache Kafka's message definitions (clients/src/main/resources/common/message),
in which a version is "flexible" from the version noted in API_KEYS on: strings, arrays and byte
fields then carry unsigned-varint lengths plus one, and structures end in tagged fields.
"""

import struct
from dataclasses import dataclass

from probes import schema
from probes.protocols import NEED_MORE_RESULT, OK, ParseResult, as_bytes, invalid
from probes.redact import safe_text

# Kafka's own default for socket.request.max.bytes: a broker drops a connection sending more.
MAX_FRAME_BYTES = 100 * 1024 * 1024
MIN_REQUEST_BYTES = 8  # api key, api version, correlation id
# Heartbeat and LeaveGroup v0 answer with a correlation id and an error code, nothing else.
MIN_RESPONSE_BYTES = 6
# Api keys are allocated one by one (92 so far); versions grow by a few a year (Fetch is at
# 18 after fifteen years). Anything far beyond is not Kafka, or not the start of a message.
MAX_API_KEY = 127
MAX_API_VERSION = 63
MAX_TOPIC_CHARS = 249  # Kafka's limit on a topic name
MAX_TOPICS_KEPT = 16  # topic names one message keeps; a wildcard consumer fetches hundreds

# api key -> (name, first flexible version, or None when no version is flexible).
API_KEYS = {
    0: ("Produce", 9),
    1: ("Fetch", 12),
    2: ("ListOffsets", 6),
    3: ("Metadata", 9),
    4: ("LeaderAndIsr", 4),
    5: ("StopReplica", 2),
    6: ("UpdateMetadata", 6),
    7: ("ControlledShutdown", 3),
    8: ("OffsetCommit", 8),
    9: ("OffsetFetch", 6),
    10: ("FindCoordinator", 3),
    11: ("JoinGroup", 6),
    12: ("Heartbeat", 4),
    13: ("LeaveGroup", 4),
    14: ("SyncGroup", 4),
    15: ("DescribeGroups", 5),
    16: ("ListGroups", 3),
    17: ("SaslHandshake", None),
    18: ("ApiVersions", 3),
    19: ("CreateTopics", 5),
    20: ("DeleteTopics", 4),
    21: ("DeleteRecords", 2),
    22: ("InitProducerId", 2),
    23: ("OffsetForLeaderEpoch", 4),
    24: ("AddPartitionsToTxn", 3),
    25: ("AddOffsetsToTxn", 3),
    26: ("EndTxn", 3),
    27: ("WriteTxnMarkers", 1),
    28: ("TxnOffsetCommit", 3),
    29: ("DescribeAcls", 2),
    30: ("CreateAcls", 2),
    31: ("DeleteAcls", 2),
    32: ("DescribeConfigs", 4),
    33: ("AlterConfigs", 2),
    34: ("AlterReplicaLogDirs", 2),
    35: ("DescribeLogDirs", 2),
    36: ("SaslAuthenticate", 2),
    37: ("CreatePartitions", 2),
    38: ("CreateDelegationToken", 2),
    39: ("RenewDelegationToken", 2),
    40: ("ExpireDelegationToken", 2),
    41: ("DescribeDelegationToken", 2),
    42: ("DeleteGroups", 2),
    43: ("ElectLeaders", 2),
    44: ("IncrementalAlterConfigs", 1),
    45: ("AlterPartitionReassignments", 0),
    46: ("ListPartitionReassignments", 0),
    47: ("OffsetDelete", None),
    48: ("DescribeClientQuotas", 1),
    49: ("AlterClientQuotas", 1),
    50: ("DescribeUserScramCredentials", 0),
    51: ("AlterUserScramCredentials", 0),
    52: ("Vote", 0),
    53: ("BeginQuorumEpoch", 1),
    54: ("EndQuorumEpoch", 1),
    55: ("DescribeQuorum", 0),
    56: ("AlterPartition", 0),
    57: ("UpdateFeatures", 0),
    58: ("Envelope", 0),
    59: ("FetchSnapshot", 0),
    60: ("DescribeCluster", 0),
    61: ("DescribeProducers", 0),
    62: ("BrokerRegistration", 0),
    63: ("BrokerHeartbeat", 0),
    64: ("UnregisterBroker", 0),
    65: ("DescribeTransactions", 0),
    66: ("ListTransactions", 0),
    67: ("AllocateProducerIds", 0),
    68: ("ConsumerGroupHeartbeat", 0),
    69: ("ConsumerGroupDescribe", 0),
    70: ("ControllerRegistration", 0),
    71: ("GetTelemetrySubscriptions", 0),
    72: ("PushTelemetry", 0),
    73: ("AssignReplicasToDirs", 0),
    74: ("ListConfigResources", 0),
    75: ("DescribeTopicPartitions", 0),
    76: ("ShareGroupHeartbeat", 0),
    77: ("ShareGroupDescribe", 0),
    78: ("ShareFetch", 0),
    79: ("ShareAcknowledge", 0),
    80: ("AddRaftVoter", 0),
    81: ("RemoveRaftVoter", 0),
    82: ("UpdateRaftVoter", 0),
    83: ("InitializeShareGroupState", 0),
    84: ("ReadShareGroupState", 0),
    85: ("WriteShareGroupState", 0),
    86: ("DeleteShareGroupState", 0),
    87: ("ReadShareGroupStateSummary", 0),
    88: ("StreamsGroupHeartbeat", 0),
    89: ("StreamsGroupDescribe", 0),
    90: ("DescribeShareGroupOffsets", 0),
    91: ("AlterShareGroupOffsets", 0),
    92: ("DeleteShareGroupOffsets", 0),
}
PRODUCE, FETCH, LIST_OFFSETS, METADATA, CONTROLLED_SHUTDOWN, OFFSET_COMMIT = 0, 1, 2, 3, 7, 8
FIND_COORDINATOR, API_VERSIONS, CREATE_TOPICS = 10, 18, 19

# The commonest error codes by their names in Kafka's Errors enum; others go out as numbers.
ERROR_NAMES = {
    -1: "UNKNOWN_SERVER_ERROR",
    1: "OFFSET_OUT_OF_RANGE",
    2: "CORRUPT_MESSAGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    4: "INVALID_FETCH_SIZE",
    5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER",
    7: "REQUEST_TIMED_OUT",
    8: "BROKER_NOT_AVAILABLE",
    9: "REPLICA_NOT_AVAILABLE",
    10: "MESSAGE_TOO_LARGE",
    13: "NETWORK_EXCEPTION",
    14: "COORDINATOR_LOAD_IN_PROGRESS",
    15: "COORDINATOR_NOT_AVAILABLE",
    16: "NOT_COORDINATOR",
    17: "INVALID_TOPIC_EXCEPTION",
    18: "RECORD_LIST_TOO_LARGE",
    19: "NOT_ENOUGH_REPLICAS",
    20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    21: "INVALID_REQUIRED_ACKS",
    22: "ILLEGAL_GENERATION",
    25: "UNKNOWN_MEMBER_ID",
    27: "REBALANCE_IN_PROGRESS",
    29: "TOPIC_AUTHORIZATION_FAILED",
    30: "GROUP_AUTHORIZATION_FAILED",
    31: "CLUSTER_AUTHORIZATION_FAILED",
    35: "UNSUPPORTED_VERSION",
    36: "TOPIC_ALREADY_EXISTS",
    37: "INVALID_PARTITIONS",
    41: "NOT_CONTROLLER",
    42: "INVALID_REQUEST",
    47: "INVALID_PRODUCER_EPOCH",
    58: "SASL_AUTHENTICATION_FAILED",
    74: "FENCED_LEADER_EPOCH",
    75: "UNKNOWN_LEADER_EPOCH",
    76: "UNSUPPORTED_COMPRESSION_TYPE",
    79: "MEMBER_ID_REQUIRED",
    87: "INVALID_RECORD",
    100: "UNKNOWN_TOPIC_ID",
}

# Responses whose body starts with one error code for the whole request, after a throttle time
# from some version on: api key -> (first version with the throttle time in front, last version
# laid out this way, or None for all).
_TOP_LEVEL_ERROR = {
    10: (1, 3),  # FindCoordinator; v4+ answer per key asked about (_read_coordinators)
    11: (2, None),  # JoinGroup
    12: (1, None),  # Heartbeat
    13: (1, None),  # LeaveGroup
    14: (1, None),  # SyncGroup
    16: (1, None),  # ListGroups
    17: (None, None),  # SaslHandshake
    18: (None, None),  # ApiVersions
    22: (0, None),  # InitProducerId
    25: (0, None),  # AddOffsetsToTxn
    26: (0, None),  # EndTxn
    36: (None, None),  # SaslAuthenticate
    60: (0, None),  # DescribeCluster
}

_RECORD_BATCH_COUNT_AT = 57  # offset of the records count in a v2 record batch
_LEGACY_MESSAGE_OVERHEAD = 12  # offset and size before each magic 0/1 message
_LEGACY_COMPRESSION_MASK = 0x07


@dataclass(frozen=True, slots=True)
class KafkaRequest:
    api_key: int
    api_name: str | None  # None for api keys newer than API_KEYS
    api_version: int
    correlation_id: int
    client_id: str | None
    topics: tuple[str, ...]  # Produce and Fetch: topic names in order, at most MAX_TOPICS_KEPT
    record_count: int | None  # Produce: records in the batches read (fewer if truncated); None if none
    size: int  # bytes of the whole message on the wire, size field included
    truncated: bool  # the capture ended before the message did


@dataclass(frozen=True, slots=True)
class KafkaResponse:
    correlation_id: int
    api_key: int | None  # of the request it answers, as the caller said
    api_version: int | None
    topics: tuple[str, ...]  # Produce and Fetch: topic names in order, at most MAX_TOPICS_KEPT
    error_code: int | None  # the first non-zero error code read, 0 if all were 0, None if none read
    size: int
    truncated: bool


def api_name(api_key: int) -> str | None:
    entry = API_KEYS.get(api_key) if isinstance(api_key, int) else None
    return entry[0] if entry else None


def error_name(code: int) -> str | None:
    """Kafka's name for an error code, or the number itself for the less common ones."""
    if not isinstance(code, int):
        return None
    return ERROR_NAMES.get(code, str(code))


def parse_request(buf: bytes) -> ParseResult:
    """Frame one request at the start of `buf`; message = KafkaRequest."""
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    return _parse_strict(buf, MIN_REQUEST_BYTES, _read_request)


def parse_response(buf: bytes, api_key: int | None = None, api_version: int | None = None) -> ParseResult:
    """Frame one response at the start of `buf`; message = KafkaResponse.

    `api_key` and `api_version` are those of the request it answers. Without them only the
    correlation id is read: the header's tagged fields and the body depend on them.
    """
    buf = as_bytes(buf)
    if buf is None:
        return invalid("expected bytes")
    problem = _check_api(api_key, api_version)
    if problem:
        return invalid(problem)
    return _parse_strict(
        buf, MIN_RESPONSE_BYTES, lambda r, size: _read_response(r, size, api_key, api_version)
    )


def read_request(captured: bytes) -> KafkaRequest | None:
    """The first request in a capture, as far as it goes; None unless its whole header is there."""
    return _read_lenient(captured, MIN_REQUEST_BYTES, _read_request)


def read_response(
    captured: bytes, api_key: int | None = None, api_version: int | None = None
) -> KafkaResponse | None:
    """The first response in a capture, as far as it goes: KafkaResponse, or None if not one."""
    if _check_api(api_key, api_version):
        return None
    return _read_lenient(
        captured, MIN_RESPONSE_BYTES, lambda r, size: _read_response(r, size, api_key, api_version)
    )


def summarize(request: bytes, response: bytes) -> dict | None:
    """Record attributes of one captured exchange (see probes.protocols), or None if not Kafka.

    One record stands for the first request in the capture. Its destination is the first topic
    named, its error the first non-zero error code in the answer, if the capture reaches them.
    """
    head = read_request(request)
    if head is None or head.api_name is None:
        return None
    answer = read_response(response, head.api_key, head.api_version)
    if answer is not None and answer.correlation_id != head.correlation_id:
        answer = None  # not the answer to this request: its layout would be misread
    attributes = {
        schema.MESSAGING_SYSTEM: schema.PROTO_KAFKA,
        schema.DB_OPERATION: head.api_name,
        schema.REQUEST_COUNT: 1,
    }
    topics = head.topics or (answer.topics if answer else ())
    if topics:
        attributes[schema.MESSAGING_DESTINATION] = topics[0]
    if answer is not None and answer.error_code:
        attributes[schema.ERROR] = True
        attributes[schema.ERROR_TYPE] = error_name(answer.error_code)
    return attributes


# --- framing --------------------------------------------------------------------------------


class _Cut(Exception):
    """The bytes ended before the field did."""


class _Malformed(Exception):
    """A field no conforming peer sends."""


def _parse_strict(buf: bytes, min_size: int, read_message) -> ParseResult:
    size = _frame_size(buf, min_size)
    if isinstance(size, ParseResult):
        return size
    end = 4 + size
    complete = len(buf) >= end
    # The fields are read from whatever is there, so garbage is INVALID on its first bytes.
    reader = _Reader(buf, 4, min(len(buf), end))
    try:
        message = read_message(reader, end)
    except _Malformed as exc:
        return invalid(str(exc))
    except _Cut:
        return invalid("fields run past the end of the message") if complete else NEED_MORE_RESULT
    if not complete:
        return NEED_MORE_RESULT
    return ParseResult(OK, end, message)


def _read_lenient(captured: bytes, min_size: int, read_message):
    captured = as_bytes(captured)
    if captured is None:
        return None
    size = _frame_size(captured, min_size)
    if isinstance(size, ParseResult):
        return None
    reader = _Reader(captured, 4, min(len(captured), 4 + size), lenient=True)
    try:
        return read_message(reader, 4 + size)
    except (_Cut, _Malformed):
        return None


def _frame_size(buf: bytes, min_size: int) -> int | ParseResult:
    """The size field, or NEED_MORE / INVALID; a size is INVALID as soon as its first bytes show it."""
    if len(buf) < 4:
        smallest = int.from_bytes(buf.ljust(4, b"\x00"), "big", signed=True)
        if buf and (buf[0] & 0x80 or smallest > MAX_FRAME_BYTES):
            return invalid("message size out of range")
        return NEED_MORE_RESULT
    size = int.from_bytes(buf[:4], "big", signed=True)
    if size < min_size or size > MAX_FRAME_BYTES:
        return invalid(f"message size {size} out of range {min_size}..{MAX_FRAME_BYTES}")
    return size


def _is_flexible(api_key: int, api_version: int) -> bool:
    entry = API_KEYS.get(api_key)
    return bool(entry) and entry[1] is not None and api_version >= entry[1]


def _check_api(api_key, api_version) -> str | None:
    if api_key is None and api_version is None:
        return None
    if not isinstance(api_key, int) or not isinstance(api_version, int):
        return "api key and api version go together, as ints"
    if not 0 <= api_key <= MAX_API_KEY or not 0 <= api_version <= MAX_API_VERSION:
        return f"api key {api_key} version {api_version} out of range"
    return None


# --- requests -------------------------------------------------------------------------------


def _read_request(r: "_Reader", end: int) -> KafkaRequest:
    api_key = r.int16()
    if not 0 <= api_key <= MAX_API_KEY:
        raise _Malformed(f"api key {api_key} out of range")
    api_version = r.int16()
    if not 0 <= api_version <= MAX_API_VERSION:
        raise _Malformed(f"api version {api_version} out of range")
    correlation_id = r.int32()
    client_id = None
    if not (api_key == CONTROLLED_SHUTDOWN and api_version == 0):  # the one user of header v0
        raw = r.string(nullable=True, compact=False)  # a classic string even in header v2
        client_id = None if raw is None else safe_text(raw)
    r.flexible = _is_flexible(api_key, api_version)
    r.tagged_fields()
    body = _Body()
    try:
        if api_key == PRODUCE:
            _read_produce_request(r, api_version, body)
        elif api_key == FETCH:
            _read_fetch_request(r, api_version, body)
    except (_Cut, _Malformed):
        if not r.lenient:
            raise  # a capture keeps what its header said, and what the body said before it ended
    return KafkaRequest(
        api_key,
        api_name(api_key),
        api_version,
        correlation_id,
        client_id,
        tuple(body.topics),
        body.record_count,
        end,
        r.available < end,
    )


class _Body:
    """What a body reader found before the bytes ran out."""

    def __init__(self):
        self.topics: list[str] = []
        self.record_count: int | None = None
        self.error_code: int | None = None

    def topic(self, raw: bytes | None):
        if raw is not None and len(self.topics) < MAX_TOPICS_KEPT:
            self.topics.append(safe_text(raw, limit=MAX_TOPIC_CHARS))

    def records(self, count: int | None):
        if count is not None:
            self.record_count = (self.record_count or 0) + count

    def error(self, code: int):
        if not self.error_code:
            self.error_code = code


def _read_topic_key(r: "_Reader", body: _Body, names_until: int, version: int):
    """A topic name up to `names_until`, a topic id (which says nothing to a person) after it."""
    if version <= names_until:
        body.topic(r.string())
    else:
        r.skip(16)


def _read_produce_request(r: "_Reader", version: int, body: _Body):
    if version >= 3:
        r.string(nullable=True)  # transactional id
    r.skip(2 + 4)  # acks, timeout
    for _ in r.array():
        _read_topic_key(r, body, 12, version)
        for _ in r.array():
            r.skip(4)  # partition index
            body.records(_count_records(r.records()))
            r.tagged_fields()
        r.tagged_fields()


def _read_fetch_request(r: "_Reader", version: int, body: _Body):
    # replica id (v0-14), max wait, min bytes, max bytes (v3+), isolation level (v4+),
    # session id and epoch (v7+)
    r.skip((4 if version <= 14 else 0) + 8 + (4 if version >= 3 else 0) + (1 if version >= 4 else 0))
    if version >= 7:
        r.skip(8)
    for _ in r.array():
        _read_topic_key(r, body, 12, version)
        # partition, current leader epoch (v9+), fetch offset, last fetched epoch (v12+),
        # log start offset (v5+), partition max bytes
        partition = 4 + (4 if version >= 9 else 0) + 8 + (4 if version >= 12 else 0)
        partition += (8 if version >= 5 else 0) + 4
        for _ in r.array():
            r.skip(partition)
            r.tagged_fields()
        r.tagged_fields()


def _count_records(records: bytes | None) -> int | None:
    """Records in a record set: v2 batches say how many they hold; magic 0/1 messages are counted.

    Only the fixed-size headers are looked at, never a key or a value. None when no count is
    reachable (the capture ended first) or a compressed legacy message hides its count.
    """
    if records is None:
        return 0
    count, pos = None, 0
    while pos + 17 <= len(records):
        magic = records[pos + 16]
        (length,) = struct.unpack_from(">i", records, pos + 8)
        if length < 0:
            return count
        if magic == 2:
            if pos + _RECORD_BATCH_COUNT_AT + 4 > len(records):
                return count
            (in_batch,) = struct.unpack_from(">i", records, pos + _RECORD_BATCH_COUNT_AT)
        elif magic in (0, 1):
            if pos + 18 > len(records) or records[pos + 17] & _LEGACY_COMPRESSION_MASK:
                return None
            in_batch = 1
        else:
            return count
        if in_batch < 0:
            return count
        count = (count or 0) + in_batch
        pos += _LEGACY_MESSAGE_OVERHEAD + length
    return count


# --- responses ------------------------------------------------------------------------------


def _read_response(r: "_Reader", end: int, api_key: int | None, api_version: int | None) -> KafkaResponse:
    correlation_id = r.int32()
    body = _Body()
    if api_key is not None:
        # ApiVersions answers with header v0 whatever its version: a client that asked in a
        # version the broker does not know must still read the error code.
        r.flexible = _is_flexible(api_key, api_version)
        if api_key != API_VERSIONS:
            r.tagged_fields()
        try:
            _read_response_body(r, api_key, api_version, body)
        except (_Cut, _Malformed):
            if not r.lenient:
                raise
    return KafkaResponse(
        correlation_id,
        api_key,
        api_version,
        tuple(body.topics),
        body.error_code,
        end,
        r.available < end,
    )


def _read_response_body(r: "_Reader", api_key: int, version: int, body: _Body):
    if api_key == PRODUCE:
        _read_produce_response(r, version, body)
    elif api_key == FETCH:
        _read_fetch_response(r, version, body)
    elif api_key == METADATA:
        _read_metadata_response(r, version, body)
    elif api_key in (LIST_OFFSETS, OFFSET_COMMIT):
        _read_partition_errors(r, api_key, version, body)
    elif api_key == CREATE_TOPICS:
        _read_create_topics_response(r, version, body)
    elif api_key == FIND_COORDINATOR and version >= 4:
        _read_coordinators(r, body)
    elif api_key in _TOP_LEVEL_ERROR:
        throttle_from, last = _TOP_LEVEL_ERROR[api_key]
        if last is None or version <= last:
            if throttle_from is not None and version >= throttle_from:
                r.skip(4)
            body.error(r.int16())


def _read_produce_response(r: "_Reader", version: int, body: _Body):
    # after the error code: base offset, log append time (v2+), log start offset (v5+)
    offsets = 8 + (8 if version >= 2 else 0) + (8 if version >= 5 else 0)
    for _ in r.array():
        _read_topic_key(r, body, 12, version)
        for _ in r.array():
            r.skip(4)  # partition index
            body.error(r.int16())
            r.skip(offsets)
            if version >= 8:
                for _ in r.array():  # record errors
                    r.skip(4)
                    r.string(nullable=True)
                    r.tagged_fields()
                r.string(nullable=True)  # error message
            r.tagged_fields()
        r.tagged_fields()


def _read_fetch_response(r: "_Reader", version: int, body: _Body):
    if version >= 1:
        r.skip(4)  # throttle time
    if version >= 7:
        body.error(r.int16())
        r.skip(4)  # session id
    # after the error code: high watermark, last stable offset (v4+), log start offset (v5+)
    offsets = 8 + (8 if version >= 4 else 0) + (8 if version >= 5 else 0)
    for _ in r.array():
        _read_topic_key(r, body, 12, version)
        for _ in r.array():
            r.skip(4)  # partition index
            body.error(r.int16())
            r.skip(offsets)
            if version >= 4:
                for _ in r.array(nullable=True):  # aborted transactions
                    r.skip(16)
                    r.tagged_fields()
            if version >= 11:
                r.skip(4)  # preferred read replica
            r.records()
            r.tagged_fields()
        r.tagged_fields()


def _read_metadata_response(r: "_Reader", version: int, body: _Body):
    if version >= 3:
        r.skip(4)  # throttle time
    for _ in r.array():  # brokers
        r.skip(4)  # node id
        r.string()  # host
        r.skip(4)  # port
        if version >= 1:
            r.string(nullable=True)  # rack
        r.tagged_fields()
    if version >= 2:
        r.string(nullable=True)  # cluster id
    if version >= 1:
        r.skip(4)  # controller id
    for _ in r.array():
        body.error(r.int16())
        r.string(nullable=version >= 12)
        r.skip((16 if version >= 10 else 0) + (1 if version >= 1 else 0))  # topic id, is internal
        for _ in r.array():
            body.error(r.int16())
            r.skip(4 + 4 + (4 if version >= 7 else 0))  # index, leader, leader epoch
            r.skip_int32_array()  # replicas
            r.skip_int32_array()  # in-sync replicas
            if version >= 5:
                r.skip_int32_array()  # offline replicas
            r.tagged_fields()
        if version >= 8:
            r.skip(4)  # authorized operations
        r.tagged_fields()


def _read_partition_errors(r: "_Reader", api_key: int, version: int, body: _Body):
    """ListOffsets and OffsetCommit: per topic, per partition an index then an error code."""
    if api_key == LIST_OFFSETS:
        throttle_from, names_until = 2, MAX_API_VERSION
        # v0: an array of offsets; v1+: timestamp, offset, leader epoch (v4+)
        after = None if version == 0 else 16 + (4 if version >= 4 else 0)
    else:
        throttle_from, names_until, after = 3, 9, 0
    if version >= throttle_from:
        r.skip(4)
    for _ in r.array():
        if version <= names_until:
            r.string()
        else:
            r.skip(16)
        for _ in r.array():
            r.skip(4)
            body.error(r.int16())
            if after is None:
                for _ in r.array():
                    r.skip(8)
            else:
                r.skip(after)
            r.tagged_fields()
        r.tagged_fields()


def _read_create_topics_response(r: "_Reader", version: int, body: _Body):
    if version >= 2:
        r.skip(4)  # throttle time
    for _ in r.array():
        r.string()  # name
        if version >= 7:
            r.skip(16)  # topic id
        body.error(r.int16())
        if version >= 1:
            r.string(nullable=True)  # error message
        if version >= 5:
            r.skip(4 + 2)  # partitions, replication factor
            for _ in r.array(nullable=True):  # configs
                r.string()
                r.string(nullable=True)
                r.skip(3)  # read only, source, sensitive
                r.tagged_fields()
        r.tagged_fields()


def _read_coordinators(r: "_Reader", body: _Body):
    """FindCoordinator v4+: one answer per key asked about."""
    r.skip(4)  # throttle time
    for _ in r.array():
        r.string()  # key
        r.skip(4)  # node id
        r.string()  # host
        r.skip(4)  # port
        body.error(r.int16())
        r.string(nullable=True)  # error message
        r.tagged_fields()


# --- primitive fields -----------------------------------------------------------------------


class _Reader:
    """A cursor over one message. Raises _Cut past `available`, _Malformed on impossible lengths.

    `flexible` switches strings, arrays and byte fields to compact (unsigned varint) lengths and
    makes tagged_fields() read something. A `lenient` reader is for captures: a byte field that
    runs past the end gives the bytes there are.
    """

    __slots__ = ("buf", "pos", "available", "flexible", "lenient")

    def __init__(self, buf: bytes, pos: int, available: int, lenient: bool = False):
        self.buf, self.pos, self.available = buf, pos, available
        self.flexible = False
        self.lenient = lenient

    def skip(self, n: int):
        if n < 0:
            raise _Malformed("negative length")
        if self.pos + n > self.available:
            raise _Cut
        self.pos += n

    def take(self, n: int) -> bytes:
        start = self.pos
        self.skip(n)
        return self.buf[start : self.pos]

    def int16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self) -> int:
        value = 0
        for shift in range(0, 35, 7):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise _Malformed("varint longer than 5 bytes")

    def _length(self, classic_bytes: int, nullable: bool, compact: bool | None = None) -> int:
        """A length field: -1 is null, where null is allowed."""
        if compact if compact is not None else self.flexible:
            length = self.uvarint() - 1
        else:
            length = int.from_bytes(self.take(classic_bytes), "big", signed=True)
        if length < -1 or (length == -1 and not nullable):
            raise _Malformed(f"length {length}")
        return length

    def string(self, nullable: bool = False, compact: bool | None = None) -> bytes | None:
        length = self._length(2, nullable, compact)
        return None if length < 0 else self.take(length)

    def records(self) -> bytes | None:
        """A nullable byte field; when cut, the bytes that are there (their headers may count)."""
        length = self._length(4, nullable=True)
        if length < 0:
            return None
        if self.pos + length > self.available:
            records = self.buf[self.pos : self.available]
            if not self.lenient:
                raise _Cut
            self.pos = self.available
            return records
        return self.take(length)

    def array(self, nullable: bool = False):
        """Iterate over the elements of an array; the caller reads each one."""
        length = self._length(4, nullable)
        count = 0
        while count < length:
            # Every element is at least one byte, so a huge count in a small capture ends in _Cut.
            if self.pos >= self.available:
                raise _Cut
            yield count
            count += 1

    def skip_int32_array(self):
        length = self._length(4, nullable=False)
        self.skip(4 * length)

    def tagged_fields(self):
        if not self.flexible:
            return
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.skip(self.uvarint())
