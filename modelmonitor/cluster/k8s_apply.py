"""The operator's HTTP side: server-side apply, list, delete, status and Events through the
kubernetes client's ``ApiClient`` (no discovery round trips, one request per step).

:func:`reconcile_monitor` is one whole reconcile of a ModelMonitor: render the desired children
(:mod:`modelmonitor.cluster.reconcile`), list the observed ones by label, apply what is missing or
changed with server-side apply (field manager ``modelmonitor-operator``, ``force=true``),
delete extras, patch the status and post an Event when the Ready condition turns bad.
``operator/controller.py`` calls it from kopf handlers; tests point it at a recording HTTP server.

>>> resource_path("serving.knative.dev/v1", "Service", "ns", "iris-ingest")
'/apis/serving.knative.dev/v1/namespaces/ns/services/iris-ingest'
>>> resource_path("v1", "ConfigMap", "ns")
'/api/v1/namespaces/ns/configmaps'
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from modelmonitor.cluster import reconcile

from modelmonitor.cluster import render
from modelmonitor.core.spec import API_VERSION, KIND, SpecError

FIELD_MANAGER = "modelmonitor-operator"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
MONITOR_PLURAL = "modelmonitors"

# (apiVersion, kind) -> resource (plural); children in render order.
CHILD_TYPES: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    (render.SERVING_API, "Service"): "services",
    (render.EVENTING_API, "Trigger"): "triggers",
    (render.SOURCES_API, "PingSource"): "pingsources",
    (render.KAFKA_SINK_API, "KafkaSink"): "kafkasinks",
}
RESOURCES: dict[tuple[str, str], str] = {
    **CHILD_TYPES,
    (API_VERSION, KIND): MONITOR_PLURAL,
    ("v1", "Event"): "events",
}

log = logging.getLogger(__name__)


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None,
                  subresource: str | None = None) -> str:
    """REST path of a namespaced object (or of its collection when ``name`` is None)."""
    try:
        plural = RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"no REST mapping for {api_version} {kind}") from None
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural}"
    if name is not None:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


def _error_text(exc: ApiException) -> str:
    """The API server's own message when the body is a Status, else the HTTP reason."""
    try:
        message = json.loads(exc.body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{exc.status} {message or exc.reason or ''}".strip()


class KubeClient:
    """Minimal typed-free access to the API server for the operator's few calls."""

    def __init__(self, api_client: ApiClient, field_manager: str = FIELD_MANAGER, timeout: float = 30.0):
        self.api = api_client
        self.field_manager = field_manager
        self.timeout = timeout

    # -- transport ----------------------------------------------------------------------------
    def request(self, method: str, path: str, query: list[tuple[str, Any]] | None = None,
                body: Any = None, content_type: str | None = None) -> dict | None:
        """One HTTP call; returns the decoded JSON body, raises ApiException on non-2xx."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, post = self.api.param_serialize(
            method=method, resource_path=path, query_params=query or None, header_params=headers,
            body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=body, post_params=post,
                                     _request_timeout=self.timeout)
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return json.loads(data) if data else None

    # -- objects ------------------------------------------------------------------------------
    def apply(self, obj: Mapping) -> dict:
        """Server-side apply of a whole object; we own exactly the fields we send."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        query = [("fieldManager", self.field_manager), ("force", True)]
        return self.request("PATCH", path, query, dict(obj), APPLY_PATCH) or dict(obj)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete in the background; False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            self.request("DELETE", resource_path(api_version, kind, namespace, name), body=body,
                         content_type="application/json")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict]:
        """Objects of one type by label; [] when the type is not installed (e.g. no KafkaSink CRD)."""
        try:
            doc = self.request("GET", resource_path(api_version, kind, namespace),
                               [("labelSelector", label_selector)])
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        items = (doc or {}).get("items") or []
        # List items of built-in types come without apiVersion/kind.
        return [{**item, "apiVersion": api_version, "kind": kind} for item in items]

    def list_children(self, namespace: str, monitor: str) -> dict[reconcile.Key, dict]:
        """Every child of ``monitor`` by (kind, name), found by the labels render puts on them."""
        selector = render.child_selector(monitor)
        found: dict[reconcile.Key, dict] = {}
        for api_version, kind in CHILD_TYPES:
            for obj in self.list(api_version, kind, namespace, selector):
                found[reconcile.child_key(obj)] = obj
        return found

    def list_monitors(self) -> list[dict]:
        """Every ModelMonitor in every namespace (one request: the periodic resync)."""
        doc = self.request("GET", f"/apis/{API_VERSION}/{MONITOR_PLURAL}")
        return [{**item, "apiVersion": API_VERSION, "kind": KIND} for item in (doc or {}).get("items") or []]

    def get_monitor(self, namespace: str, name: str) -> dict | None:
        try:
            return self.request("GET", resource_path(API_VERSION, KIND, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, status: Mapping, old_status: Mapping | None = None) -> dict | None:
        """Merge-patch the status subresource; keys that disappeared are set to null."""
        patch = dict(status)
        for key in (old_status or {}):
            if key not in status:
                patch[key] = None
        return self.request("PATCH", resource_path(API_VERSION, KIND, namespace, name, "status"),
                            body={"status": patch}, content_type=MERGE_PATCH)

    def post_event(self, monitor_body: Mapping, reason: str, message: str, event_type: str = "Warning",
                   now: str | None = None) -> dict | None:
        """A core/v1 Event about the monitor (what `kubectl describe mm` shows)."""
        meta = monitor_body.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = now or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            # generateName must itself be a DNS-1123 subdomain apart from a trailing '-': the
            # API server refuses "<name>." (seen on the real apiextensions-apiserver).
            "metadata": {"generateName": f"{meta.get('name')}-", "namespace": namespace},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta.get("name"),
                               "namespace": namespace, "uid": meta.get("uid")},
            "reason": reason, "message": message[:1024], "type": event_type,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER, "reportingInstance": socket.gethostname(),
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        return self.request("POST", resource_path("v1", "Event", namespace), body=event,
                            content_type="application/json")

    def execute(self, action: reconcile.Action) -> dict | None:
        if action.op == "apply":
            return self.apply(action.body)
        if action.op == "delete":
            self.delete(action.api_version, action.kind, action.namespace, action.name)
            return None
        raise ValueError(f"unknown action {action.op!r}")


@dataclass
class ReconcileResult:
    """What one reconcile did: the status it wrote (or found current), actions, errors."""
    status: dict
    actions: list[reconcile.Action] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    status_patched: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


def _ready(status: Mapping | None) -> tuple:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status"), cond.get("reason"), cond.get("message")
    return None, None, None


def reconcile_monitor(client: KubeClient, monitor_body: Mapping, image: str | None = None,
                      now: str | None = None) -> ReconcileResult:
    """Bring one ModelMonitor's children and status in line with its spec.

    An invalid spec touches no child: the status says ConfigValid=False with the field. Apply
    errors do not stop the other steps; they end up in the Ready condition and in ``errors``.
    """
    body = reconcile._plain(monitor_body)
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta["name"]
    image = image or os.environ.get("MODELMONITOR_IMAGE") or render.DEFAULT_IMAGE
    result = ReconcileResult(status={})
    error: BaseException | str | None = None
    try:
        desired = reconcile.desired_children(body, None, image)
    except SpecError as exc:
        desired, error = None, exc
    if desired is None:
        observed: dict = {}
    else:
        observed = client.list_children(namespace, name)
        result.actions = reconcile.plan(desired, observed, monitor=name)
        for action in result.actions:
            try:
                obj = client.execute(action)
            except ApiException as exc:
                result.errors.append(f"{action.op} {action.kind}/{action.name}: {_error_text(exc)}")
                continue
            if action.op == "apply":
                observed[action.key] = obj if isinstance(obj, dict) and obj.get("kind") else action.body
            else:
                observed.pop(action.key, None)
            log.info("%s %s/%s (%s)", action.op, action.kind, action.name, action.reason)
        if result.errors:
            error = "; ".join(result.errors)
    if meta.get("deletionTimestamp"):
        return result  # the garbage collector removes children; no status on a dying object
    status = reconcile.status_for(body, observed, error=error, now=now)
    result.status = status
    old = body.get("status") or {}
    if status != old:
        client.patch_status(namespace, name, status, old)
        result.status_patched = True
    before, after = _ready(old), _ready(status)
    if after[0] == "False" and after[1] in ("InvalidSpec", "ReconcileError") and after != before:
        try:
            client.post_event(body, after[1], after[2] or "", now=now)
        except ApiException as exc:
            # The status already says it; a refused Event must not fail the reconcile.
            log.warning("event about %s/%s refused: %s", namespace, name, _error_text(exc))
    return result


def resync_all(client: KubeClient, image: str | None = None) -> dict[tuple[str, str], ReconcileResult | str]:
    """Reconcile every ModelMonitor once (drift correction: children edited or deleted behind
    the operator's back). Monitors being deleted are skipped; one monitor's failure (an API
    error) is recorded as text and does not stop the others."""
    out: dict[tuple[str, str], ReconcileResult | str] = {}
    for monitor in client.list_monitors():
        meta = monitor.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        key = (meta.get("namespace") or "default", meta.get("name"))
        try:
            out[key] = reconcile_monitor(client, monitor, image)
        except ApiException as exc:
            out[key] = _error_text(exc)
    return out


def children_of(event_objects: Iterable[Mapping]) -> set[tuple[str, str]]:
    """(namespace, monitor) pairs named by children's labels: whom to re-reconcile.

    >>> sorted(children_of([{"metadata": {"namespace": "ns", "labels": {
    ...     "app.kubernetes.io/managed-by": "modelmonitor", "monitoring.modelmonitor.io/monitor": "iris"}}}]))
    [('ns', 'iris')]
    """
    out = set()
    for obj in event_objects:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(render.LABEL_MANAGED_BY) == render.MANAGER and labels.get(render.LABEL_MONITOR):
            out.add((meta.get("namespace") or "default", labels[render.LABEL_MONITOR]))
    return out
