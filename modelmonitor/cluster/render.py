"""Kubernetes manifests of a ModelMonitor: what the operator applies and `modelmonitor render` prints.

Each function role runs its own image, built from ``functions/<role>/`` (a Knative Functions
project on the func-python runtime): ``DEFAULT_IMAGE`` names them with ``{role}``. Everything a monitor needs on a cluster is rendered here, in a fixed
order: the ``<monitor>-config`` ConfigMap, the Knative Services, the Triggers, the PingSource
and the KafkaSinks. The same functions feed the operator (:mod:`modelmonitor.cluster.reconcile`), the
``render`` command, the generated ``eventing/`` directory and ``operator/install.yaml``, so
the four never disagree.

>>> from modelmonitor.core.spec import parse_monitor
>>> spec = parse_monitor({"metadata": {"name": "iris"}, "spec": {
...     "schema": {"features": [{"name": "x"}]}}})
>>> [(o["kind"], o["metadata"]["name"]) for o in render(spec)]  # doctest: +NORMALIZE_WHITESPACE
[('ConfigMap', 'iris-config'), ('Service', 'iris-ingest'), ('Service', 'iris-aggregate'),
 ('Trigger', 'iris-ingest-request'), ('Trigger', 'iris-aggregate'),
 ('Trigger', 'iris-aggregate-tick'), ('PingSource', 'iris-tick')]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from modelmonitor.cluster.gitops import dump_manifests, gitops_header, readable_json

from modelmonitor.core import events
from modelmonitor.core.spec import API_VERSION, KIND, MonitorSpec, SpecError, load_monitor, parse_monitor

#: Function images, one per role (each built from functions/<role>/ by `kn func build`); "{role}"
#: in an image name is replaced by the role.
DEFAULT_IMAGE = "ghcr.io/modelmonitor/modelmonitor-{role}:0.1.0"
OPERATOR_IMAGE = "ghcr.io/modelmonitor/modelmonitor-operator:0.1.0"
OPERATOR_NAMESPACE = "modelmonitor-system"
ROLES = ("ingest", "outlier", "aggregate", "drift")

CONFIG_DIR = "/etc/modelmonitor"
CONFIG_PATH = f"{CONFIG_DIR}/monitor.yaml"
BASELINE_PATH = f"{CONFIG_DIR}/baseline.json"
BROKER_INGRESS = "http://kafka-broker-ingress.knative-eventing.svc.cluster.local"
DEFAULT_REDIS_SECRET = {"name": "modelmonitor-redis", "key": "url"}
PING_SCHEDULE = "*/5 * * * * *"  # 6-field cron with seconds: Knative Eventing >= 1.13

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MONITOR = "monitoring.modelmonitor.io/monitor"
MANAGER = "modelmonitor"
ORDERED_DELIVERY = "kafka.eventing.knative.dev/delivery.order"

SERVING_API = "serving.knative.dev/v1"
EVENTING_API = "eventing.knative.dev/v1"
SOURCES_API = "sources.knative.dev/v1"
KAFKA_SINK_API = "eventing.knative.dev/v1alpha1"

DEFAULT_DELIVERY = {"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}
DEFAULT_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
# spec.functions.<role> key -> Knative revision annotation.
AUTOSCALING_ANNOTATIONS = {
    "minScale": "autoscaling.knative.dev/min-scale",
    "maxScale": "autoscaling.knative.dev/max-scale",
    "target": "autoscaling.knative.dev/target",
    "metric": "autoscaling.knative.dev/metric",
}
# A Knative Service name becomes `<name>-00001` revisions (DNS labels of at most 63
# characters), so `<monitor>-aggregate` may have at most 57: the monitor name at most 47.
MAX_MONITOR_NAME = 63 - len("-00001") - len("-aggregate")
CONFIGMAP_LIMIT = 1024 * 1024  # bytes of data a ConfigMap may hold

KIND_ORDER = ("ConfigMap", "Service", "Trigger", "PingSource", "KafkaSink")
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_MONITOR = REPO_ROOT / "examples" / "iris" / "monitor.yaml"
EVENTING_DIR = REPO_ROOT / "eventing"
ALERT_RECEIVER = "http://127.0.0.1:9999/alerts"


# ---------------------------------------------------------------------------------------------
# Small shared pieces
# ---------------------------------------------------------------------------------------------

def broker_url(namespace: str, broker: str) -> str:
    """The Kafka broker ingress URL: where the KServe logger sends and K_SINK points.

    >>> broker_url("ns", "default")
    'http://kafka-broker-ingress.knative-eventing.svc.cluster.local/ns/default'
    """
    return f"{BROKER_INGRESS}/{namespace}/{broker}"


def labels_for(monitor: str, component: str) -> dict[str, str]:
    """The labels every rendered object carries (the operator lists its children by them).

    >>> labels_for("iris", "ingest")["monitoring.modelmonitor.io/monitor"]
    'iris'
    """
    return {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_PART_OF: MANAGER,
        LABEL_MONITOR: monitor,
        LABEL_COMPONENT: component,
    }


def child_selector(monitor: str) -> str:
    """Label selector matching the children of one monitor.

    >>> child_selector("iris")
    'app.kubernetes.io/managed-by=modelmonitor,monitoring.modelmonitor.io/monitor=iris'
    """
    return f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_MONITOR}={monitor}"


def owner_reference(name: str, uid: str) -> dict:
    """The ownerReference that lets Kubernetes garbage-collect children with their monitor."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def sorted_deep(value: Any) -> Any:
    """A copy with every mapping's keys sorted, so dumps and comparisons are stable.

    >>> list(sorted_deep({"b": 1, "a": {"d": 2, "c": 3}})["a"])
    ['c', 'd']
    """
    if isinstance(value, dict):
        return {k: sorted_deep(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_deep(v) for v in value]
    return value


def _meta(spec: MonitorSpec, name: str, component: str, owner_uid: str | None,
          namespace: str | None = None, annotations: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": namespace or spec.namespace,
                  "labels": labels_for(spec.name, component)}
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner_uid:
        meta["ownerReferences"] = [owner_reference(spec.name, owner_uid)]
    return meta


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
# ConfigMap: monitor.yaml + baseline.json
# ---------------------------------------------------------------------------------------------

def baseline_document(spec: MonitorSpec, baseline_doc: dict | None = None) -> dict | None:
    """The baseline document the ConfigMap carries: ``baseline_doc`` when given, the inline
    baseline, or the local file spec.baseline.file; None for a ConfigMap reference or no baseline.

    Raises SpecError when the file cannot be read or is not JSON.
    """
    if spec.baseline_ref is None:
        return None
    ref = spec.baseline_ref
    if baseline_doc is not None:
        return baseline_doc
    if "inline" in ref:
        return spec.baseline_inline
    if "file" in ref:
        path = ref["file"]
        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        except OSError as exc:
            raise SpecError("spec.baseline.file", f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise SpecError("spec.baseline.file", f"{path} is not JSON: {exc}") from None
    return None


def config_monitor_document(spec: MonitorSpec) -> dict:
    """The monitor as the functions read it from /etc/modelmonitor/monitor.yaml: the user's spec
    with spec.baseline pointing at the mounted baseline file (whatever form it had)."""
    raw_spec = copy.deepcopy((spec.raw or {}).get("spec") or {})
    if spec.baseline_ref is not None:
        raw_spec["baseline"] = {"file": BASELINE_PATH}
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": spec.name, "namespace": spec.namespace}, "spec": raw_spec}


def render_config_map(spec: MonitorSpec, owner_uid: str | None = None,
                      baseline_doc: dict | None = None) -> dict:
    """ConfigMap `<m>-config` with keys monitor.yaml and (unless the baseline comes from the
    user's own ConfigMap) baseline.json. Secrets never go here: Redis comes from a secretKeyRef."""
    data = {"monitor.yaml": yaml.safe_dump(sorted_deep(config_monitor_document(spec)), sort_keys=True)}
    ref = spec.baseline_ref or {}
    if "configMapRef" not in ref:
        doc = baseline_document(spec, baseline_doc)
        if doc is not None:
            data["baseline.json"] = readable_json(sorted_deep(doc))
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    if size > CONFIGMAP_LIMIT:
        raise SpecError("spec.baseline", f"monitor and baseline take {size} bytes, more than a ConfigMap holds "
                        f"({CONFIGMAP_LIMIT}); keep the baseline in its own ConfigMap (configMapRef)")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(spec, f"{spec.name}-config", "config", owner_uid), "data": data}


# ---------------------------------------------------------------------------------------------
# Knative Services
# ---------------------------------------------------------------------------------------------

def _resources(cfg: dict) -> dict:
    out = copy.deepcopy(DEFAULT_RESOURCES)
    for section in ("requests", "limits"):
        for key, value in ((cfg.get("resources") or {}).get(section) or {}).items():
            out[section][key] = str(value)  # quantities are strings in our manifests
    return out


def _autoscaling(role: str, cfg: dict) -> dict:
    annotations = {}
    if role == "aggregate" and "minScale" not in cfg:
        # Watermark timers and the idle-stream tick need a live replica.
        annotations[AUTOSCALING_ANNOTATIONS["minScale"]] = "1"
    for key, annotation in AUTOSCALING_ANNOTATIONS.items():
        if cfg.get(key) is not None:
            annotations[annotation] = str(cfg[key])
    if cfg.get("metric") == "cpu":
        # The Knative Pod Autoscaler cannot scale on CPU; that takes the HPA class.
        annotations["autoscaling.knative.dev/class"] = "hpa.autoscaling.knative.dev"
    return annotations


def _volume(spec: MonitorSpec) -> dict:
    ref = spec.baseline_ref or {}
    own_items = [{"key": "monitor.yaml", "path": "monitor.yaml"}]
    sources = [{"configMap": {"name": f"{spec.name}-config", "items": own_items}}]
    if "configMapRef" in ref:
        user = ref["configMapRef"]
        sources.append({"configMap": {"name": user["name"],
                                      "items": [{"key": user["key"], "path": "baseline.json"}]}})
    elif spec.baseline_ref is not None:
        own_items.append({"key": "baseline.json", "path": "baseline.json"})
    return {"name": "modelmonitor-config", "projected": {"sources": sources}}


def function_env(spec: MonitorSpec, role: str) -> list[dict]:
    """Environment of a function container: role, config paths, Redis (from a Secret), K_SINK."""
    secret = dict(spec.redis_secret_ref or DEFAULT_REDIS_SECRET)
    return [
        {"name": "MODELMONITOR_ROLE", "value": role},
        {"name": "MODELMONITOR_METRICS_PORT", "value": "9091"},
        {"name": "MODELMONITOR_CONFIG", "value": CONFIG_PATH},
        {"name": "MODELMONITOR_BASELINE", "value": BASELINE_PATH},
        {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": secret["name"], "key": secret["key"]}}},
        {"name": "K_SINK", "value": broker_url(spec.namespace, spec.broker)},
    ]


def image_for(image: str, role: str) -> str:
    """The image of one role: ``{role}`` in ``image`` replaced by the role.

    >>> image_for(DEFAULT_IMAGE, "drift")
    'ghcr.io/modelmonitor/modelmonitor-drift:0.1.0'
    """
    return image.replace("{role}", role)


def render_service(spec: MonitorSpec, role: str, image: str = DEFAULT_IMAGE,
                   owner_uid: str | None = None) -> dict:
    """The Knative Service `<m>-<role>` running the role's function image."""
    cfg = (spec.functions or {}).get(role) or {}
    template_meta: dict = {"labels": labels_for(spec.name, role)}
    annotations = _autoscaling(role, cfg)
    if annotations:
        template_meta["annotations"] = annotations
    container = {
        "name": "function",
        "image": image_for(image, role),
        "env": function_env(spec, role),
        "ports": [{"containerPort": 8080, "name": "http1"}],
        "readinessProbe": {"httpGet": {"path": "/health/readiness"}},
        "livenessProbe": {"httpGet": {"path": "/health/liveness"}, "periodSeconds": 10},
        "resources": _resources(cfg),
        "volumeMounts": [{"name": "modelmonitor-config", "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    pod: dict = {"containers": [container], "volumes": [_volume(spec)]}
    if cfg.get("concurrency") is not None:
        pod["containerConcurrency"] = cfg["concurrency"]
    return {"apiVersion": SERVING_API, "kind": "Service",
            "metadata": _meta(spec, f"{spec.name}-{role}", role, owner_uid),
            "spec": {"template": {"metadata": template_meta, "spec": pod}}}


# ---------------------------------------------------------------------------------------------
# Triggers, PingSource, KafkaSinks (the wiring)
# ---------------------------------------------------------------------------------------------

def _trigger(spec: MonitorSpec, name: str, component: str, attributes: dict, subscriber: dict,
             owner_uid: str | None, annotations: dict | None = None) -> dict:
    return {"apiVersion": EVENTING_API, "kind": "Trigger",
            "metadata": _meta(spec, name, component, owner_uid, annotations=annotations),
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
            "metadata": _meta(spec, f"{spec.name}-tick", "aggregate", owner_uid),
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
             "metadata": _meta(spec, name, component, owner_uid),
             "spec": {"topic": topic, "bootstrapServers": list(servers), "contentMode": "structured"}}
            for name, topic, component in sinks]


def render_wiring(spec: MonitorSpec, owner_uid: str | None = None) -> list[dict]:
    """Triggers, PingSource and KafkaSinks: the part of a monitor that needs no baseline."""
    return [sorted_deep(o) for o in
            render_triggers(spec, owner_uid) + [render_ping_source(spec, owner_uid)]
            + render_kafka_sinks(spec, owner_uid)]


# ---------------------------------------------------------------------------------------------
# Whole monitor
# ---------------------------------------------------------------------------------------------

def check_renderable(spec: MonitorSpec) -> None:
    """Cluster-only limits parse_monitor does not know about (raises SpecError)."""
    if len(spec.name) > MAX_MONITOR_NAME:
        raise SpecError("metadata.name", f"{spec.name!r} is longer than {MAX_MONITOR_NAME} characters: "
                        "`<name>-aggregate` revisions would not be valid DNS labels")


def render(spec: MonitorSpec, image: str | None = DEFAULT_IMAGE, owner_uid: str | None = None,
           baseline_doc: dict | None = None) -> list[dict]:
    """Every object of a monitor, in apply order: ConfigMap, Services, Triggers, PingSource,
    KafkaSinks. With ``owner_uid`` each carries an ownerReference to the ModelMonitor.
    ``baseline_doc`` overrides where the ConfigMap's baseline.json comes from."""
    check_renderable(spec)
    image = image or DEFAULT_IMAGE
    objects = [render_config_map(spec, owner_uid, baseline_doc)]
    objects += [render_service(spec, role, image, owner_uid) for role in roles_for(spec)]
    return [sorted_deep(o) for o in objects] + render_wiring(spec, owner_uid)


def dump_yaml(objects: Iterable[dict], header: str = "") -> str:
    """One YAML stream, keys sorted, documents separated by ``---``."""
    docs = [yaml.safe_dump(o, sort_keys=True, default_flow_style=False, width=1000) for o in objects]
    return header + "---\n".join(docs)


def render_yaml(spec: MonitorSpec, image: str | None = DEFAULT_IMAGE, owner_uid: str | None = None,
                baseline_doc: dict | None = None) -> str:
    """:func:`render` as one YAML stream in manifest key order, multi-line strings as blocks."""
    return dump_manifests(render(spec, image, owner_uid, baseline_doc))


def render_monitor_file(path: str, image: str | None = None) -> str:
    """Validate a ModelMonitor file and render it (a relative baseline file is read next to it),
    with a header saying what to build, push and create before applying (`modelmonitor render`)."""
    spec = load_monitor(path)
    secret = dict(spec.redis_secret_ref or DEFAULT_REDIS_SECRET)
    header = gitops_header(path, spec.name, [image_for(image or DEFAULT_IMAGE, r) for r in roles_for(spec)],
                           (secret["name"], secret["key"]))
    return header + render_yaml(spec, image or DEFAULT_IMAGE)


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


def main(argv: list[str] | None = None) -> int:
    """`python -m modelmonitor.cluster.render` [MONITOR.yaml] [--image] [--write-eventing] [--write-install]."""
    parser = argparse.ArgumentParser(prog="python -m modelmonitor.cluster.render", description=__doc__.split("\n")[0])
    parser.add_argument("monitor", nargs="?", help="ModelMonitor YAML to render to stdout")
    parser.add_argument("--image", default=None, help=f"function image (default {DEFAULT_IMAGE})")
    parser.add_argument("--write-eventing", action="store_true", help="regenerate eventing/ from the example")
    parser.add_argument("--write-install", action="store_true", help="regenerate operator/install.yaml")
    args = parser.parse_args(argv)
    if not (args.monitor or args.write_eventing or args.write_install):
        parser.error("give a MONITOR.yaml, --write-eventing or --write-install")
    from modelmonitor.cluster.generated import render_install, write_eventing_dir
    try:
        if args.monitor:
            sys.stdout.write(render_monitor_file(args.monitor, args.image))
        if args.write_eventing:
            for path in write_eventing_dir():
                print(f"wrote {path}", file=sys.stderr)
        if args.write_install:
            target = REPO_ROOT / "operator" / "install.yaml"
            target.write_text(render_install(), encoding="utf-8")
            print(f"wrote {target}", file=sys.stderr)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
