"""The wiring of a monitor on Knative Eventing: which functions it deploys, its Triggers (with
their delivery and dead-letter sink), the PingSource that ticks the aggregator, the KafkaSinks of
the analysis topics, and the example Broker and alert Trigger of ``eventing/``.

>>> from modelmonitor.core.spec import parse_monitor
>>> spec = parse_monitor({"metadata": {"name": "iris"}, "spec": {"schema": {"features": [{"name": "x"}]}}})
>>> [(o["kind"], o["metadata"]["name"]) for o in render_wiring(spec)]  # doctest: +NORMALIZE_WHITESPACE
[('Trigger', 'iris-ingest-request'), ('Trigger', 'iris-aggregate'), ('Trigger', 'iris-aggregate-tick'),
 ('PingSource', 'iris-tick')]
"""
from __future__ import annotations

import copy
import json

from modelmonitor.cluster.manifest_common import (ALERT_RECEIVER, DEFAULT_DELIVERY, EVENTING_API, KAFKA_SINK_API,
                                                  ORDERED_DELIVERY, PING_SCHEDULE, SERVING_API, SOURCES_API,
                                                  object_meta, sorted_deep)
from modelmonitor.core import events
from modelmonitor.core.spec import MonitorSpec


# ---------------------------------------------------------------------------------------------
# Which pieces a monitor needs
# ---------------------------------------------------------------------------------------------

def outliers_wired(spec: MonitorSpec) -> bool:
    """The outlier function runs only when some rule is on and there is a baseline to test against."""
    return spec.outliers.enabled and spec.baseline_ref is not None


def roles_for(spec: MonitorSpec) -> list[str]:
    """Roles that get a Knative Service: a function nobody delivers to is not deployed.

    >>> from modelmonitor.core.spec import parse_monitor
    >>> roles_for(parse_monitor({"metadata": {"name": "m"}, "spec": {
    ...     "schema": {"features": ["x"]}, "baseline": {"file": "/b.json"},
    ...     "drift": {"psi": {}}}}))
    ['ingest', 'outlier', 'aggregate', 'drift']
    """
    roles = ["ingest"]
    if outliers_wired(spec):
        roles.append("outlier")
    roles.append("aggregate")
    if spec.drift:
        roles.append("drift")
    return roles


def kafka_topics(spec: MonitorSpec) -> dict[str, str]:
    """Configured analysis topics in stats, outliers, drift order ({} without spec.sinks.kafka)."""
    kafka = (spec.sinks or {}).get("kafka") or {}
    topics = kafka.get("topics") or {}
    return {key: topics[key] for key in ("stats", "outliers", "drift") if key in topics}


def _bootstrap_servers(spec: MonitorSpec) -> list[str]:
    raw = spec.sinks["kafka"]["bootstrapServers"]
    return [part.strip() for part in raw.split(",") if part.strip()]


def dead_letter_sink(spec: MonitorSpec) -> dict | None:
    """Where Triggers send events they gave up on.

    spec.deadLetterSink when set; else the monitor's own `<m>-deadletter` KafkaSink when Kafka
    sinks are configured; else None: after the retries the broker drops the event (and logs it).

    >>> from modelmonitor.core.spec import parse_monitor
    >>> dead_letter_sink(parse_monitor({"metadata": {"name": "m"}, "spec": {"schema": {"features": ["x"]},
    ...     "sinks": {"kafka": {"bootstrapServers": "k:9092", "topics": {"stats": "s"}}}}}))["ref"]["name"]
    'm-deadletter'
    """
    if spec.dead_letter_sink:
        return copy.deepcopy(spec.dead_letter_sink)
    if kafka_topics(spec):
        return {"ref": {"apiVersion": KAFKA_SINK_API, "kind": "KafkaSink", "name": f"{spec.name}-deadletter"}}
    return None


def delivery_for(spec: MonitorSpec) -> dict:
    """Trigger delivery: spec.delivery over the defaults, plus the dead-letter sink.

    >>> from modelmonitor.core.spec import parse_monitor
    >>> delivery_for(parse_monitor({"metadata": {"name": "m"}, "spec": {
    ...     "schema": {"features": ["x"]}, "delivery": {"retry": 2}}}))
    {'backoffDelay': 'PT0.2S', 'backoffPolicy': 'exponential', 'retry': 2}
    """
    delivery = dict(DEFAULT_DELIVERY)
    delivery.update({k: v for k, v in (spec.delivery or {}).items() if v is not None})
    dls = dead_letter_sink(spec)
    if dls:
        delivery["deadLetterSink"] = dls
    return {k: delivery[k] for k in sorted(delivery)}


# ---------------------------------------------------------------------------------------------
# Triggers, PingSource, KafkaSinks (the wiring)
# ---------------------------------------------------------------------------------------------

def _trigger(spec: MonitorSpec, name: str, component: str, attributes: dict, subscriber: dict,
             owner_uid: str | None, annotations: dict | None = None) -> dict:
    return {"apiVersion": EVENTING_API, "kind": "Trigger",
            "metadata": object_meta(spec, name, component, owner_uid, annotations=annotations),
            "spec": {"broker": spec.broker, "filter": {"attributes": dict(attributes)},
                     "subscriber": subscriber, "delivery": delivery_for(spec)}}


def _service_ref(spec: MonitorSpec, role: str) -> dict:
    return {"ref": {"apiVersion": SERVING_API, "kind": "Service", "name": f"{spec.name}-{role}"}}


def render_triggers(spec: MonitorSpec, owner_uid: str | None = None) -> list[dict]:
    """Triggers in a fixed order: function subscriptions first, then the Kafka sink ones.

    Filters are exact: each function sees only its monitor's events of the types it handles,
    and none of them matches a type the subscriber itself emits (no reply loops).
    """
    m = spec.name
    mine = {"monitor": m}
    out = [_trigger(spec, f"{m}-ingest-request", "ingest",
                    {"type": events.KSERVE_REQUEST, "inferenceservicename": spec.inference_service},
                    _service_ref(spec, "ingest"), owner_uid)]
    if spec.predictions:
        out.append(_trigger(spec, f"{m}-ingest-response", "ingest",
                            {"type": events.KSERVE_RESPONSE, "inferenceservicename": spec.inference_service},
                            _service_ref(spec, "ingest"), owner_uid))
    if outliers_wired(spec):
        out.append(_trigger(spec, f"{m}-outlier", "outlier", {"type": events.INSTANCES, **mine},
                            _service_ref(spec, "outlier"), owner_uid))
    # Ordered (per Kafka partition): a retried event holds back the ones behind it instead of
    # arriving after them, so broker retries (e.g. while Redis is away) do not make instances
    # late. Several partitions still reach the aggregator concurrently and share a group commit.
    out.append(_trigger(spec, f"{m}-aggregate", "aggregate", {"type": events.INSTANCES, **mine},
                        _service_ref(spec, "aggregate"), owner_uid,
                        annotations={ORDERED_DELIVERY: "ordered"}))
    out.append(_trigger(spec, f"{m}-aggregate-tick", "aggregate", {"type": events.PING, **mine},
                        _service_ref(spec, "aggregate"), owner_uid))
    if spec.drift:
        # Ordered: the alert policy counts *consecutive* windows, so windows arrive in order.
        out.append(_trigger(spec, f"{m}-drift", "drift", {"type": events.WINDOW_CLOSED, **mine},
                            _service_ref(spec, "drift"), owner_uid, annotations={ORDERED_DELIVERY: "ordered"}))
    sink_types = {"stats": events.WINDOW_CLOSED, "outliers": events.OUTLIER_DETECTED,
                  "drift": events.DRIFT_MEASURED}
    for key in kafka_topics(spec):
        out.append(_trigger(spec, f"{m}-sink-{key}", "sink", {"type": sink_types[key], **mine},
                            {"ref": {"apiVersion": KAFKA_SINK_API, "kind": "KafkaSink", "name": f"{m}-{key}"}},
                            owner_uid))
    return out


def render_ping_source(spec: MonitorSpec, owner_uid: str | None = None) -> dict:
    """PingSource `<m>-tick`: every 5 s a tick lets the aggregator close windows of idle streams."""
    return {"apiVersion": SOURCES_API, "kind": "PingSource",
            "metadata": object_meta(spec, f"{spec.name}-tick", "aggregate", owner_uid),
            "spec": {"schedule": PING_SCHEDULE, "contentType": "application/json",
                     "data": json.dumps({"monitor": spec.name}),
                     "ceOverrides": {"extensions": {"monitor": spec.name}},
                     "sink": {"ref": {"apiVersion": EVENTING_API, "kind": "Broker", "name": spec.broker}}}}


def render_kafka_sinks(spec: MonitorSpec, owner_uid: str | None = None) -> list[dict]:
    """One KafkaSink per configured topic, and `<m>-deadletter` when it is the dead-letter sink."""
    topics = kafka_topics(spec)
    if not topics:
        return []
    servers = _bootstrap_servers(spec)
    sinks = [(f"{spec.name}-{key}", topic, "sink") for key, topic in topics.items()]
    if not spec.dead_letter_sink:
        sinks.append((f"{spec.name}-deadletter", f"{spec.name}-deadletter", "deadletter"))
    return [{"apiVersion": KAFKA_SINK_API, "kind": "KafkaSink",
             "metadata": object_meta(spec, name, component, owner_uid),
             "spec": {"topic": topic, "bootstrapServers": list(servers), "contentMode": "structured"}}
            for name, topic, component in sinks]


def render_wiring(spec: MonitorSpec, owner_uid: str | None = None) -> list[dict]:
    """Triggers, PingSource and KafkaSinks: the part of a monitor that needs no baseline."""
    return [sorted_deep(o) for o in
            render_triggers(spec, owner_uid) + [render_ping_source(spec, owner_uid)]
            + render_kafka_sinks(spec, owner_uid)]


# ---------------------------------------------------------------------------------------------
# eventing/ : the example wiring the local broker and the docs share
# ---------------------------------------------------------------------------------------------

def render_broker(namespace: str = "default", name: str = "default") -> list[dict]:
    """The Kafka-class Broker and the knative-eventing ConfigMap it points to."""
    broker = {"apiVersion": EVENTING_API, "kind": "Broker",
              "metadata": {"name": name, "namespace": namespace,
                           "annotations": {"eventing.knative.dev/broker.class": "Kafka"}},
              "spec": {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka-broker-config",
                                  "namespace": "knative-eventing"},
                       "delivery": dict(DEFAULT_DELIVERY)}}
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "kafka-broker-config", "namespace": "knative-eventing"},
              "data": {"bootstrap.servers": "my-cluster-kafka-bootstrap.kafka:9092",
                       "default.topic.partitions": "10", "default.topic.replication.factor": "3"}}
    return [sorted_deep(broker), sorted_deep(config)]


def render_alert_subscription(spec: MonitorSpec, uri: str = ALERT_RECEIVER) -> dict:
    """An example user Trigger: drift alerts of this monitor to an HTTP receiver."""
    return sorted_deep({
        "apiVersion": EVENTING_API, "kind": "Trigger",
        "metadata": {"name": f"{spec.name}-alerts", "namespace": spec.namespace},
        "spec": {"broker": spec.broker,
                 "filter": {"attributes": {"type": events.DRIFT_DETECTED, "monitor": spec.name}},
                 "subscriber": {"uri": uri}}})
