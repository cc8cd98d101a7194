"""Kafka in and out of the local broker, over TCP against librdkafka's mock cluster.

A confluent-kafka client created with `test.mock.num.brokers` runs a mock Kafka broker on a
loopback port for as long as the client lives; kafka-python (the project's client) talks to it
like to any Kafka broker. No Kafka broker can be installed on these machines.
"""
from __future__ import annotations

import base64
import doctest
import json
import time
import uuid
from pathlib import Path

import pytest
import requests
from modelmonitor.runtime.wire import to_binary
from modelmonitor.core.events import Event
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from modelmonitor.local import kafka_bridge
from modelmonitor.local.broker import LocalBroker, load_triggers
from modelmonitor.local.kafka_bridge import (KafkaIngress, KafkaSinkWriter, event_to_kafka,
                                       record_to_event, register_kafka_sinks, wait_until)
from modelmonitor.local.procs import FunctionProcess

FUNCS = Path(__file__).parent / "funcs"
API = (2, 0)
# The mock's group coordinator makes a re-joining group wait for the old member's rebalance
# timeout (kafka-python's max_poll_interval_ms) although it left; short timeouts keep it quick.
FAST_GROUP = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 500,
              "max_poll_interval_ms": 5000}


@pytest.fixture(scope="module")
def bootstrap(kafka_bootstrap):
    return kafka_bootstrap


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kafka-echo")
    proc = FunctionProcess("echo", ["--func-dir", str(FUNCS / "echo"), "--threads", "4"],
                           env={"RECORD_FILE": str(tmp / "echo.jsonl")},
                           log_file=tmp / "echo.log")
    proc.record_file = tmp / "echo.jsonl"
    with proc:
        yield proc


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 15.0) -> list:
    """Every record of a topic from the beginning, until `expected` arrived (bounded)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API, group_id=None,
                             enable_auto_commit=False)
    try:
        assert wait_until(lambda: consumer.partitions_for_topic(topic), timeout)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got: list = []

        def more() -> bool:
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(records)
            return len(got) >= expected

        assert wait_until(more, timeout, interval=0), f"{len(got)} of {expected} records"
        return got
    finally:
        consumer.close()


def logger_event(id_: str) -> Event:
    return Event({"type": "org.kubeflow.serving.inference.request",
                       "source": "http://localhost:9081/", "id": id_,
                       "datacontenttype": "application/json", "inferenceservicename": "iris",
                       "component": "predictor"},
                      {"instances": [[6.8, 2.8, 4.8, 1.4]]})


def test_kafka_message_round_trip_keeps_attributes_and_data():
    cases = [({"datacontenttype": "application/json"}, {"a": [1, 2]}),
             ({"datacontenttype": "text/plain"}, b"plain text"),
             ({"datacontenttype": "application/octet-stream"}, b"\x00\x01\xff")]
    for mode in ("binary", "structured"):
        for extra, data in cases:
            ev = Event({"type": "t", "source": "/s", "id": "1", "monitor": "iris",
                             "partitionkey": "iris", **extra}, data)
            msg = event_to_kafka(ev, mode)
            assert msg.key == b"iris"
            back = record_to_event(list(msg.headers.items()), msg.key, msg.value)
            # SDK 2.x: in binary mode, a text content type's data comes back as text.
            expected = data.decode() if mode == "binary" and extra["datacontenttype"] == "text/plain" else data
            assert back.data == expected, (mode, extra)
            for attr in ("type", "source", "id", "monitor", "datacontenttype", "partitionkey"):
                assert back[attr] == ev[attr], (mode, attr)
    with pytest.raises(ValueError, match="no CloudEvent"):
        record_to_event([], None, b"just bytes")
    with pytest.raises(ValueError, match="ce_id"):
        record_to_event([("ce_specversion", b"1.0"), ("ce_type", b"t"), ("ce_source", b"s")],
                        None, b"{}")
    with pytest.raises(ValueError, match="tombstone"):
        record_to_event([("ce_specversion", b"1.0")], b"k", None)
    assert doctest.testmod(kafka_bridge).failed == 0


def ingest_broker(echo) -> LocalBroker:
    """A started local broker whose one Trigger sends logger requests to the echo function."""
    return LocalBroker(load_triggers([{
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": {"name": "ingest"},
        "spec": {"broker": "default",
                 "filter": {"attributes": {"type": "org.kubeflow.serving.inference.request"}},
                 "subscriber": {"ref": {"kind": "Service", "name": "ingest"}}}}]),
        {"ingest": [echo.url]}).start()


def test_logger_events_from_a_topic_are_delivered_to_subscribers(bootstrap, echo):
    topic = f"logger-{uuid.uuid4().hex[:8]}"
    broker = ingest_broker(echo)
    producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=API)
    ingress = KafkaIngress(bootstrap, topic, broker.publish, group_id=f"g-{topic}",
                           start_from="earliest", **FAST_GROUP)
    try:
        # A binary record exactly as the Kafka protocol binding (and Knative) writes it ...
        producer.send(topic, value=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', headers=[
            ("ce_specversion", b"1.0"), ("ce_id", b"k-bin"),
            ("ce_type", b"org.kubeflow.serving.inference.request"),
            ("ce_source", b"http://localhost:9081/"), ("ce_inferenceservicename", b"iris"),
            ("content-type", b"application/json")]).get(10)
        # ... a structured one, and a record that is no Event at all.
        producer.send(topic, **_record(event_to_kafka(logger_event("k-struct"), "structured"))).get(10)
        producer.send(topic, value=b"garbage").get(10)
        ingress.start()
        assert wait_until(lambda: ingress.stats()["consumed"] >= 3, 20), ingress.stats()
        assert broker.wait_idle(10)
        assert ingress.stats() == {"consumed": 3, "published": 2, "skipped": 1, "failed": 0}
        ingress.stop()
        # Offsets were committed: the group's next consumer starts after them, even with
        # start_from="earliest", and reads only the new record.
        producer.send(topic, **_record(event_to_kafka(logger_event("k-later"), "binary"))).get(10)
        ingress = KafkaIngress(bootstrap, topic, broker.publish, group_id=f"g-{topic}",
                               start_from="earliest", **FAST_GROUP).start()
        assert wait_until(lambda: ingress.stats()["consumed"] >= 1, 20), ingress.stats()
        assert broker.wait_idle(10)
        assert ingress.stats()["consumed"] == 1
    finally:
        ingress.stop()
        producer.close()
        broker.stop()
    got = {}
    for line in echo.record_file.read_text().splitlines():
        rec = json.loads(line)
        got[rec["attrs"]["id"]] = rec
    assert got["k-bin"]["data"] == {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    assert got["k-bin"]["attrs"]["inferenceservicename"] == "iris"
    assert got["k-struct"]["data"] == {"instances": [[6.8, 2.8, 4.8, 1.4]]}
    assert got["k-struct"]["attrs"]["component"] == "predictor"
    assert got["k-later"]["attrs"]["inferenceservicename"] == "iris"
    assert broker.stats()["triggers"]["ingest"]["delivered"] == 3


def test_a_group_ingress_started_before_its_topic_exists_reads_it(bootstrap, echo):
    # The ingress waits for the topic's partitions before it joins its group (a leader that
    # joins first assigns nothing until the next metadata refresh, 5 minutes: the previous
    # test caught that race one run in six); a topic that appears only later is still read.
    topic = f"late-topic-{uuid.uuid4().hex[:8]}"
    broker = ingest_broker(echo)
    ingress = KafkaIngress(bootstrap, topic, broker.publish, group_id=f"g-{topic}",
                           start_from="earliest", **FAST_GROUP).start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=API)
    try:
        time.sleep(1.0)   # the ingress is running, its topic may not exist yet
        producer.send(topic, **_record(event_to_kafka(logger_event("k-topic-later"), "binary"))).get(10)
        assert wait_until(lambda: ingress.stats()["consumed"] >= 1, 20), ingress.stats()
        assert ingress.wait_assigned(1)
        assert broker.wait_idle(10)
        assert ingress.stats() == {"consumed": 1, "published": 1, "skipped": 0, "failed": 0}
        assert broker.stats()["triggers"]["ingest"]["delivered"] == 1
    finally:
        ingress.stop()
        producer.close()
        broker.stop()
    ids = [json.loads(line)["attrs"]["id"] for line in echo.record_file.read_text().splitlines()]
    assert "k-topic-later" in ids


def _record(msg) -> dict:
    return {"key": msg.key, "value": msg.value, "headers": list(msg.headers.items())}


def test_triggers_route_events_to_kafka_sinks(bootstrap):
    stats_topic = f"iris-stats-{uuid.uuid4().hex[:8]}"
    drift_topic = f"iris-drift-{uuid.uuid4().hex[:8]}"
    loaded = load_triggers(f"""
apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata: {{name: iris-stats}}
spec: {{topic: {stats_topic}, bootstrapServers: ["my-kafka:9092"], contentMode: structured}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata: {{name: iris-drift}}
spec: {{topic: {drift_topic}, bootstrapServers: ["my-kafka:9092"]}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: stats-to-kafka}}
spec:
  broker: default
  filter: {{attributes: {{type: io.modelmonitor.window.closed, monitor: iris}}}}
  subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1alpha1, kind: KafkaSink, name: iris-stats}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: drift-to-kafka}}
spec:
  broker: default
  filters: [{{prefix: {{type: io.modelmonitor.drift.}}}}]
  subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1alpha1, kind: KafkaSink, name: iris-drift}}}}
""")
    broker = LocalBroker(loaded, {})
    # The YAML names the cluster's Kafka; locally the same sinks point at the mock broker.
    writers = register_kafka_sinks(broker, loaded.kafka_sinks, bootstrap=bootstrap)
    window = Event({"type": "io.modelmonitor.window.closed", "source": "/m/iris/aggregate",
                         "id": "iris/0/15000", "datacontenttype": "application/json",
                         "monitor": "iris"}, {"monitor": "iris", "count": 42})
    drift = Event({"type": "io.modelmonitor.drift.measured", "source": "/m/iris/drift",
                        "id": "iris/0/15000/drift", "datacontenttype": "application/json",
                        "monitor": "iris"}, {"monitor": "iris", "features": {}})
    other = Event({"type": "io.modelmonitor.window.closed", "source": "/m/wine/aggregate",
                        "id": "wine/0/15000", "monitor": "wine"}, {"monitor": "wine"})
    try:
        broker.start()
        for ev in (window, drift, other):
            headers, body = to_binary(ev)
            assert requests.post(broker.url, data=body, headers=headers, timeout=5).status_code == 202
        assert broker.wait_idle(20)
        stats = broker.stats()
        assert stats["triggers"]["stats-to-kafka"]["delivered"] == 1
        assert stats["triggers"]["drift-to-kafka"]["delivered"] == 1
    finally:
        broker.stop()
        for writer in writers:
            writer.close()

    (stats_record,) = read_topic(bootstrap, stats_topic, 1)
    headers = dict(stats_record.headers)
    assert headers["content-type"].startswith(b"application/cloudevents+json")
    envelope = json.loads(stats_record.value)
    assert (envelope["id"], envelope["monitor"], envelope["data"]) == (
        "iris/0/15000", "iris", {"monitor": "iris", "count": 42})

    (drift_record,) = read_topic(bootstrap, drift_topic, 1)        # KafkaSink default: binary
    headers = dict(drift_record.headers)
    assert headers["ce_id"] == b"iris/0/15000/drift" and headers["ce_monitor"] == b"iris"
    assert headers["content-type"] == b"application/json"
    assert json.loads(drift_record.value) == {"monitor": "iris", "features": {}}
    assert record_to_event(drift_record.headers, drift_record.key,
                           drift_record.value)["type"] == "io.modelmonitor.drift.measured"


def test_kafka_sink_failure_is_dead_lettered_by_the_broker(bootstrap, echo):
    # A writer whose broker is gone: each attempt fails, the broker retries, then dead-letters.
    from modelmonitor.local.procs import free_port
    writer = KafkaSinkWriter(f"127.0.0.1:{free_port()}", "nowhere", timeout=0.3,
                             max_block_ms=300)
    broker = LocalBroker(load_triggers([{
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": {"name": "to-kafka"},
        "spec": {"broker": "default", "subscriber": {"ref": {"kind": "KafkaSink", "name": "k"}},
                 "delivery": {"retry": 1, "backoffDelay": "PT0.05S",
                              "deadLetterSink": {"uri": echo.url}}}}]), {})
    broker.add_sink_subscriber("k", None, writer)
    ev = Event({"type": "test.kafka.dead", "source": "/t", "id": f"d-{uuid.uuid4().hex[:6]}"},
                    {"x": 1})
    try:
        broker.start()
        broker.publish(ev)
        assert broker.wait_idle(15)
    finally:
        broker.stop()
        writer.close(timeout=1)
    dead = [json.loads(line) for line in echo.record_file.read_text().splitlines()]
    dead = [r for r in dead if r["attrs"]["id"] == ev["id"]]
    assert len(dead) == 1
    attrs = dead[0]["attrs"]
    assert attrs["knativeerrordest"] == "inprocess:k" and attrs["knativeerrorcode"] == "0"
    assert base64.b64decode(attrs["knativeerrordata"])
    assert broker.stats()["triggers"]["to-kafka"]["retried"] == 1
