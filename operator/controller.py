"""ModelMonitor operator: thin kopf glue around modelmonitor.cluster.k8s_apply.reconcile_monitor.

Run by path (this directory is not a package; a package named `operator` would shadow the
standard library module):

    kopf run --standalone --all-namespaces --liveness=http://0.0.0.0:8080/healthz operator/controller.py

- create / update / resume of a ModelMonitor, and a timer (drift correction: someone edited or
  deleted a child behind our back), reconcile it;
- events of its Knative Services, Triggers and PingSources (found by the children's labels)
  reconcile the owner again, so deleted children come back and readiness shows in the status;
- deletion needs no handler: every child has an ownerReference, the garbage collector
  removes them. No finalizer is added.

The function image comes from MODELMONITOR_IMAGE (default ghcr.io/modelmonitor/modelmonitor:0.1.0).
"""
from __future__ import annotations

import logging
import os

import kopf
import kubernetes

from modelmonitor.cluster import k8s_apply

from modelmonitor.cluster import render

GROUP, VERSION = "monitoring.modelmonitor.io", "v1alpha1"
PLURAL = k8s_apply.MONITOR_PLURAL
RESYNC_SECONDS = float(os.environ.get("MODELMONITOR_RESYNC_SECONDS", "120"))
CHILD_LABELS = {render.LABEL_MANAGED_BY: render.MANAGER, render.LABEL_MONITOR: kopf.PRESENT}

_client: k8s_apply.KubeClient | None = None


def client() -> k8s_apply.KubeClient:
    """The API client, configured in-cluster or from ~/.kube/config (created once)."""
    global _client
    if _client is None:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        _client = k8s_apply.KubeClient(kubernetes.client.ApiClient())
    return _client


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    # Keep kopf's bookkeeping in annotations: the status schema is strict and would prune
    # kopf's own status fields, and handlers return nothing kopf should store there.
    prefix = "monitoring.modelmonitor.io"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300


def _reconcile(body, logger) -> None:
    result = k8s_apply.reconcile_monitor(client(), body, os.environ.get("MODELMONITOR_IMAGE"))
    for action in result.actions:
        logger.info(f"{action.op} {action.kind}/{action.name}: {action.reason}")
    if result.errors:
        # kopf retries the handler after the delay; the status already says what failed.
        raise kopf.TemporaryError("; ".join(result.errors), delay=30)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def monitor_changed(body, logger, **_):
    _reconcile(body, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, idle=RESYNC_SECONDS)
def drift_correction(body, logger, **_):
    _reconcile(body, logger)


def _owner_changed(body, logger) -> None:
    for namespace, name in k8s_apply.children_of([body]):
        monitor = client().get_monitor(namespace, name)
        if monitor is None or (monitor.get("metadata") or {}).get("deletionTimestamp"):
            continue  # the owner is gone: garbage collection takes the children
        _reconcile(monitor, logger)


# kopf.on.event, not on.delete, for children: on.delete would put kopf's finalizer on them.
@kopf.on.event("serving.knative.dev", "v1", "services", labels=CHILD_LABELS)
def child_service_event(body, logger, **_):
    _owner_changed(body, logger)


@kopf.on.event("eventing.knative.dev", "v1", "triggers", labels=CHILD_LABELS)
def child_trigger_event(body, logger, **_):
    _owner_changed(body, logger)


@kopf.on.event("sources.knative.dev", "v1", "pingsources", labels=CHILD_LABELS)
def child_pingsource_event(body, logger, **_):
    _owner_changed(body, logger)
