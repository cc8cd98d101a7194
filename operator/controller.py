"""ModelMonitor operator: thin kopf glue around modelmonitor.cluster.k8s_apply.reconcile_monitor.

Run by path (this directory is not a package; a package named `operator` would shadow the
standard library module):

    kopf run --standalone --all-namespaces --liveness=http://0.0.0.0:8080/healthz operator/controller.py

- create / update / resume of a ModelMonitor reconcile it;
- every MODELMONITOR_RESYNC_SECONDS a background task started with the operator reconciles
  every monitor (drift correction: someone edited or deleted a child behind our back). Not a
  kopf timer: kopf puts its finalizer on every object a timer or daemon serves, and then a
  monitor could not be deleted while the operator is gone (e.g. during uninstall);
- events of its Knative Services, Triggers and PingSources (found by the children's labels)
  reconcile the owner again, so deleted children come back and readiness shows in the status;
  the ADDED event of a child the operator just created does not (that reconcile is running);
- deletion needs no handler: every child has an ownerReference, the garbage collector
  removes them. No finalizer is added (tests/apiserver checks this on a real API server).

The function images come from MODELMONITOR_IMAGE, a name with {role} in it (default
ghcr.io/modelmonitor/modelmonitor-{role}:0.1.0, one image per function project).
"""
from __future__ import annotations

import asyncio
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


async def _resync_forever(logger) -> None:
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        try:
            results = await asyncio.to_thread(k8s_apply.resync_all, client(), os.environ.get("MODELMONITOR_IMAGE"))
        except Exception as exc:  # the API server is unreachable: try again next period
            logger.warning(f"resync failed: {exc}")
            continue
        for (namespace, name), result in results.items():
            if isinstance(result, str) or result.errors:
                logger.warning(f"resync of {namespace}/{name}: {result if isinstance(result, str) else result.errors}")
            elif result.actions:
                logger.info(f"resync of {namespace}/{name} corrected: "
                            + ", ".join(f"{a.op} {a.kind}/{a.name}" for a in result.actions))


_resync_task: asyncio.Task | None = None


@kopf.on.startup()
async def start_drift_correction(logger, **_):
    global _resync_task
    _resync_task = asyncio.create_task(_resync_forever(logger), name="modelmonitor-resync")


@kopf.on.cleanup()
async def stop_drift_correction(**_):
    if _resync_task is not None:
        _resync_task.cancel()


def _owner_changed(body, event_type, logger) -> None:
    if event_type in (None, "ADDED"):
        # The initial listing (on.resume reconciles every monitor anyway) or a child the
        # operator has just created from within a reconcile.
        return
    for namespace, name in k8s_apply.children_of([body]):
        monitor = client().get_monitor(namespace, name)
        if monitor is None or (monitor.get("metadata") or {}).get("deletionTimestamp"):
            continue  # the owner is gone: garbage collection takes the children
        _reconcile(monitor, logger)


# kopf.on.event, not on.delete, for children: on.delete would put kopf's finalizer on them.
@kopf.on.event("serving.knative.dev", "v1", "services", labels=CHILD_LABELS)
def child_service_event(body, type, logger, **_):
    _owner_changed(body, type, logger)


@kopf.on.event("eventing.knative.dev", "v1", "triggers", labels=CHILD_LABELS)
def child_trigger_event(body, type, logger, **_):
    _owner_changed(body, type, logger)


@kopf.on.event("sources.knative.dev", "v1", "pingsources", labels=CHILD_LABELS)
def child_pingsource_event(body, type, logger, **_):
    _owner_changed(body, type, logger)
