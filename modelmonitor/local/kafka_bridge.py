"""Kafka in and out of the local broker (`modelmonitor run --kafka ...`), with kafka-python.

* `KafkaIngress` reads CloudEvents from a topic (the logger events, when KServe logs to Kafka
  through a KafkaSink) and hands each one to `publish` (normally `LocalBroker.publish`).
* `KafkaSinkWriter` writes CloudEvents to a topic like a Knative KafkaSink; registered as an
  in-process subscriber, it receives what Triggers with `subscriber.ref.kind: KafkaSink` route
  to it (the thesis' stats / outliers / drift topics).

Both follow the CloudEvents Kafka protocol binding. Binary mode: attributes in `ce_<name>`
headers, `content-type` header = `datacontenttype`, value = the data. Structured mode: value =
the JSON envelope, `content-type: application/cloudevents+json`. A record key maps to the
`partitionkey` extension and back.

kafka-python is given `api_version=(2, 0)`: its version probe cannot decode the ApiVersions v3
answer of librdkafka's mock cluster (used by the tests), and 2.0 covers every call used here.

>>> msg = event_to_kafka(Event({"type": "t", "source": "s", "id": "1",
...                                  "datacontenttype": "application/json"}, {"a": 1}), "binary")
>>> msg.headers["ce_id"], msg.value
(b'1', b'{"a": 1}')
>>> record_to_event(list(msg.headers.items()), msg.key, msg.value).data
{'a': 1}
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Iterable, Sequence

from modelmonitor.core import events as ev
from modelmonitor.core.events import Event
from modelmonitor.runtime import wire

log = logging.getLogger(__name__)

KAFKA_API_VERSION = (2, 0)
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def _servers(bootstrap: str | Sequence[str]) -> list[str]:
    if isinstance(bootstrap, str):
        return [s.strip() for s in bootstrap.split(",") if s.strip()]
    return list(bootstrap)


def record_to_event(headers: Iterable[tuple[str, bytes]] | None, key: bytes | str | None,
                    value: bytes | None) -> Event:
    """The CloudEvent in one Kafka record (binary or structured mode); ValueError if none.

    A record is binary when it has a `ce_specversion` header, structured when its content
    type is `application/cloudevents+json` or, without headers, its value is a JSON object
    with `specversion` (producers that set no headers).

    >>> record_to_event([], None, b'{"specversion": "1.0", "type": "t", "source": "s", "id": "9", "data": [1]}')["id"]
    '9'
    """
    hdrs = {k.lower(): (v if isinstance(v, bytes) else str(v).encode())
            for k, v in (headers or []) if v is not None}
    if value is None:
        raise ValueError("record has no value (a tombstone)")
    if isinstance(key, bytes):
        key = key.decode("utf-8", errors="replace")
    content_type = hdrs.get("content-type", b"").decode("utf-8", errors="replace").lower()
    if "ce_specversion" in hdrs:
        lacking = [f"ce_{a}" for a in ("id", "source", "type") if f"ce_{a}" not in hdrs]
        if lacking:
            raise ValueError(f"binary-mode record lacks header(s) {', '.join(lacking)}")
        return wire.from_kafka(hdrs, key, value, structured=False)
    structured = content_type.startswith("application/cloudevents+json")
    if not structured and value[:1] == b"{":
        try:
            structured = "specversion" in json.loads(value)
        except (ValueError, UnicodeDecodeError):
            structured = False
    if not structured:
        raise ValueError("record is no CloudEvent: no ce_specversion header and no "
                         "application/cloudevents+json value")
    if value.lstrip()[:1] != b"{":
        raise ValueError("invalid structured CloudEvent: the value is not a JSON object")
    try:
        # Headers are left out on purpose: the envelope's content-type is no attribute.
        event = wire.from_kafka({}, key, value, structured=True)
    except ValueError as err:
        raise ValueError(f"invalid structured CloudEvent: {err}") from None
    return event


def event_to_kafka(event: Event, content_mode: str = "structured"):
    """Headers, key and value of the record for an event (`partitionkey` becomes the key).

    >>> m = event_to_kafka(Event({"type": "t", "source": "s", "id": "1"}, {"a": 1}))
    >>> m.headers["content-type"], json.loads(m.value)["data"]
    (b'application/cloudevents+json; charset=utf-8', {'a': 1})
    """
    msg = wire.to_kafka(event, content_mode)
    if content_mode == "structured":
        # The binding's content type of a JSON envelope, with its charset.
        return type(msg)({"content-type": STRUCTURED_CONTENT_TYPE.encode()}, msg.key, msg.value)
    return msg


class KafkaSinkWriter:
    """Writes CloudEvents to a Kafka topic, like a Knative KafkaSink.

    `write(event)` (also `writer(event)`) returns once the broker acknowledged the record
    (acks=all), so a failure is an exception the local broker retries or dead-letters.
    Thread-safe: the broker's delivery workers share one producer.
    """

    def __init__(self, bootstrap: str | Sequence[str], topic: str,
                 content_mode: str = "structured", *, timeout: float = 10.0,
                 **producer_config: Any):
        if content_mode not in ("binary", "structured"):
            raise ValueError(f"content_mode must be 'binary' or 'structured', got {content_mode!r}")
        from kafka import KafkaProducer

        self.topic = topic
        self.content_mode = content_mode
        self.timeout = timeout
        config = {"acks": "all", "api_version": KAFKA_API_VERSION,
                  "client_id": f"modelmonitor-sink-{topic}", **producer_config}
        self._producer = KafkaProducer(bootstrap_servers=_servers(bootstrap), **config)

    def write(self, event: Event):
        """Send one event and wait for the acknowledgement; returns the RecordMetadata."""
        msg = event_to_kafka(event, self.content_mode)
        future = self._producer.send(self.topic, key=msg.key, value=msg.value,
                                     headers=list(msg.headers.items()))
        return future.get(timeout=self.timeout)

    def __call__(self, event: Event) -> None:
        # As a broker subscriber: success, and no reply event.
        self.write(event)

    def close(self, timeout: float = 5.0) -> None:
        self._producer.close(timeout=timeout)

    @classmethod
    def from_spec(cls, spec, bootstrap: str | Sequence[str] | None = None) -> "KafkaSinkWriter":
        """A writer for a `broker.KafkaSinkSpec` (optionally on other bootstrap servers)."""
        return cls(bootstrap or list(spec.bootstrap_servers), spec.topic, spec.content_mode)


def register_kafka_sinks(broker, specs: dict, bootstrap: str | Sequence[str] | None = None
                         ) -> list[KafkaSinkWriter]:
    """Create a writer for every KafkaSink document (`load_triggers(...).kafka_sinks`) and
    register it with the broker under the sink's name, so Triggers referring to it deliver to
    Kafka. Call before `broker.start()`; close the writers after `broker.stop()`."""
    writers = []
    for name, spec in specs.items():
        writer = KafkaSinkWriter.from_spec(spec, bootstrap)
        broker.add_sink_subscriber(name, None, writer)
        writers.append(writer)
    return writers


class KafkaIngress:
    """A consumer thread: CloudEvents from `topic` → `publish(event)`.

    With a `group_id`, partitions come from the consumer group and offsets are committed after
    each batch is published (a restart resumes there; at least once). With `group_id=None`
    every partition is read directly, without commits. `start_from` ("latest" as a new Knative
    Trigger, or "earliest") applies where no committed offset exists. Records that hold no
    CloudEvent (or one whose attributes cannot be passed on) are logged, counted as `skipped`
    and handed to `on_reject(reason, value)` (the local run publishes an `event.rejected` dead
    letter with role `ingress`); the consumer goes on with the next record.
    """

    def __init__(self, bootstrap: str | Sequence[str], topic: str,
                 publish: Callable[[Event], Any], group_id: str | None = "modelmonitor",
                 *, start_from: str = "latest", poll_timeout: float = 0.2,
                 on_reject: Callable[[str, bytes | None], Any] | None = None,
                 **consumer_config: Any):
        if start_from not in ("latest", "earliest"):
            raise ValueError(f"start_from must be 'latest' or 'earliest', got {start_from!r}")
        self.bootstrap = _servers(bootstrap)
        self.topic = topic
        self.publish = publish
        self.group_id = group_id
        self.start_from = start_from
        self.poll_timeout = poll_timeout
        self.on_reject = on_reject
        self.consumer_config = consumer_config
        self._consumer = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._lock = threading.Lock()
        self._counters = {"consumed": 0, "published": 0, "skipped": 0, "failed": 0}

    def start(self) -> "KafkaIngress":
        from kafka import KafkaConsumer

        config = {"api_version": KAFKA_API_VERSION, "group_id": self.group_id,
                  "auto_offset_reset": self.start_from, "enable_auto_commit": False,
                  "client_id": f"modelmonitor-ingress-{self.topic}", **self.consumer_config}
        self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, **config)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"kafka-ingress-{self.topic}")
        self._thread.start()
        return self

    def wait_assigned(self, timeout: float) -> bool:
        """True once partitions are assigned and their start offsets are fixed (events
        produced afterwards will be read even with start_from='latest')."""
        return self._assigned.wait(timeout)

    def _assign_all(self) -> bool:
        from kafka import TopicPartition

        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            return False
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        if self.start_from == "earliest":
            self._consumer.seek_to_beginning(*tps)
        else:
            self._consumer.seek_to_end(*tps)
        return True

    def _run(self) -> None:
        consumer = self._consumer
        try:
            while not self._stop.is_set():
                if self.group_id is None and not consumer.assignment():
                    if not self._assign_all():
                        self._stop.wait(self.poll_timeout)  # the topic does not exist yet
                        continue
                if self.group_id is not None and not consumer.subscription():
                    # Join the group only once the topic's partitions are known: a leader
                    # that joins first assigns nothing and only rebalances at the next
                    # metadata refresh (metadata_max_age_ms, 5 minutes by default).
                    if not consumer.partitions_for_topic(self.topic):
                        self._stop.wait(self.poll_timeout)
                        continue
                    consumer.subscribe([self.topic])
                batches = consumer.poll(timeout_ms=int(self.poll_timeout * 1000))
                if not self._assigned.is_set() and consumer.assignment():
                    # position() resolves 'latest' now, not at the first fetch.
                    for tp in consumer.assignment():
                        consumer.position(tp)
                    self._assigned.set()
                for records in batches.values():
                    for record in records:
                        self._handle(record)
                if batches and self.group_id is not None:
                    try:
                        consumer.commit()
                    except Exception as err:   # e.g. a rebalance: the next batch's commit covers it
                        log.warning("Kafka commit for topic %s failed (will commit later): %s", self.topic, err)
        except Exception:
            if not self._stop.is_set():
                log.exception("Kafka ingress for topic %s stopped", self.topic)
        finally:
            try:
                consumer.close(autocommit=False)
            except Exception:  # closing a broken connection may fail too; nothing to do
                log.debug("closing the Kafka consumer failed", exc_info=True)

    def _handle(self, record) -> None:
        self._count("consumed")
        try:
            event = record_to_event(record.headers, record.key, record.value)
            problem = ev.attributes_problem(event.get_attributes())
            if problem:
                raise ValueError(problem)
        except Exception as err:   # any malformed record: the SDK raises many types; never stop
            self._count("skipped")
            reason = ev.text_safe(str(err) or type(err).__name__)
            log.warning("skipping record %s/%d@%d: %s", record.topic, record.partition,
                        record.offset, reason)
            if self.on_reject is not None:
                try:
                    self.on_reject(f"Kafka record {record.topic}/{record.partition}@{record.offset}: {reason}",
                                   record.value if isinstance(record.value, bytes) else None)
                except Exception as exc:   # a dead letter that cannot be recorded must not stop the consumer
                    log.warning("could not dead-letter record %s/%d@%d: %s", record.topic,
                                record.partition, record.offset, exc)
            return
        try:
            self.publish(event)
            self._count("published")
        except Exception as err:  # the broker refused (stopped): count and go on
            self._count("failed")
            log.warning("could not publish event %s from %s/%d@%d: %s", event.get("id"),
                        record.topic, record.partition, record.offset, err)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counters[key] += 1

    def stats(self) -> dict[str, int]:
        """consumed, published, skipped (not CloudEvents), failed (publish raised)."""
        with self._lock:
            return dict(self._counters)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "KafkaIngress":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass (bounded; for tests/demo)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
