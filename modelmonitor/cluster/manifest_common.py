"""What every rendered Kubernetes object of a monitor shares: API versions, images, config paths,
labels and metadata (:mod:`modelmonitor.cluster.render` and :mod:`modelmonitor.cluster.wiring`
build on it; :mod:`modelmonitor.cluster.render` re-exports these names).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from modelmonitor.core.spec import API_VERSION, KIND, MonitorSpec

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


def object_meta(spec: MonitorSpec, name: str, component: str, owner_uid: str | None,
          namespace: str | None = None, annotations: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": namespace or spec.namespace,
                  "labels": labels_for(spec.name, component)}
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner_uid:
        meta["ownerReferences"] = [owner_reference(spec.name, owner_uid)]
    return meta


