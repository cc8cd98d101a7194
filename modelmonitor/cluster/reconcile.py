"""What the operator does, as pure functions (no API server, no kopf): the controller in
``operator/controller.py`` and the HTTP layer in :mod:`modelmonitor.cluster.k8s_apply` only move data.

- :func:`desired_children`: the objects a ModelMonitor should own (= :func:`render.render` with
  an ownerReference), or ``[]`` while the monitor is being deleted.
- :func:`plan`: the actions that turn what is observed into what is desired: apply children
  that are missing or whose rendered fields differ, delete children labelled for this monitor
  that are no longer desired.
- :func:`status_for`: the monitor's status (conditions ConfigValid, WiringReady, Ready).

>>> body = {"apiVersion": "monitoring.modelmonitor.io/v1alpha1", "kind": "ModelMonitor",
...         "metadata": {"name": "m", "namespace": "ns", "uid": "u1", "generation": 1},
...         "spec": {"schema": {"features": [{"name": "x"}]}}}
>>> desired = desired_children(body, None, "img")
>>> [a.op for a in plan(desired, {})] == ["apply"] * len(desired)
True
>>> observed = {child_key(o): o for o in desired}
>>> plan(desired, observed)
[]
"""
from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from modelmonitor.cluster import render
from modelmonitor.core.spec import MonitorSpec, SpecError, format_duration, parse_monitor

Key = tuple[str, str]  # (kind, name)

KNATIVE_GROUP_SUFFIX = ".knative.dev"
# Deleting in this order removes subscriptions before their subscribers.
DELETE_ORDER = ("Trigger", "PingSource", "Service", "KafkaSink", "ConfigMap")
# Metadata we render and therefore compare; everything else there belongs to the API server.
OWNED_METADATA = ("labels", "annotations", "ownerReferences")


def child_key(obj: Mapping) -> Key:
    """(kind, name) of an object.

    >>> child_key({"kind": "Trigger", "metadata": {"name": "m-drift"}})
    ('Trigger', 'm-drift')
    """
    return obj["kind"], obj["metadata"]["name"]


def _plain(value: Any) -> Any:
    """Plain dicts/lists (kopf hands out Body views; parse_monitor keeps the document)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def spec_for(monitor_body: Mapping) -> MonitorSpec:
    """Parse a ModelMonitor object as it comes from the API server, with the checks that only
    apply on a cluster. Raises SpecError naming the field.

    >>> spec_for({"metadata": {"name": "m"}, "spec": {"schema": {"features": ["x"]},
    ...           "baseline": {"file": "b.json"}}})
    Traceback (most recent call last):
    ...
    modelmonitor.core.spec.SpecError: spec.baseline.file: 'b.json' is a local file the operator cannot read; use configMapRef or an inline baseline (`modelmonitor render` inlines files for GitOps)
    """
    doc = _plain(monitor_body)
    doc.pop("status", None)
    spec = parse_monitor(doc)
    ref = spec.baseline_ref or {}
    if "file" in ref:
        raw = ((doc.get("spec") or {}).get("baseline") or {}).get("file")
        raise SpecError("spec.baseline.file", f"{raw!r} is a local file the operator cannot read; use "
                        "configMapRef or an inline baseline (`modelmonitor render` inlines files for GitOps)")
    render.check_renderable(spec)
    return spec


def desired_children(monitor_body: Mapping, baseline_doc: dict | None, image: str | None) -> list[dict]:
    """The children a ModelMonitor should have right now, each with an ownerReference.

    ``baseline_doc`` (when not None) is the baseline the ConfigMap carries; otherwise it comes
    from the spec (inline; a configMapRef is mounted directly). A monitor being deleted wants no
    children. Raises SpecError for an invalid spec.
    """
    meta = monitor_body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return []
    if baseline_doc is not None:
        # The caller resolved the baseline itself: a file reference is fine then.
        doc = _plain(monitor_body)
        doc.pop("status", None)
        spec = parse_monitor(doc)
        render.check_renderable(spec)
    else:
        spec = spec_for(monitor_body)
    return render.render(spec, image or render.DEFAULT_IMAGE, owner_uid=meta.get("uid"),
                         baseline_doc=baseline_doc)


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    """One step of a reconcile: ``op`` is "apply" (server-side apply ``body``) or "delete"."""
    op: str
    api_version: str
    kind: str
    namespace: str
    name: str
    reason: str
    body: dict | None = field(default=None, compare=False)

    @property
    def key(self) -> Key:
        return self.kind, self.name


def differences(desired: Any, observed: Any, path: str = "") -> list[str]:
    """Paths where ``observed`` does not carry what ``desired`` renders.

    Only what we render counts: keys the API server or a webhook added (defaults, status,
    managedFields, other managers' labels) are ignored, inside list items too.

    >>> differences({"a": {"b": 1}, "l": [{"x": 1}]}, {"a": {"b": 1, "z": 0}, "l": [{"x": 1, "d": 2}]})
    []
    >>> differences({"a": {"b": 1}}, {"a": {"b": 2}})
    ['.a.b']
    """
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return [path or "."]
        out = []
        for key, value in desired.items():
            if key not in observed:
                out.append(f"{path}.{key}")
            else:
                out.extend(differences(value, observed[key], f"{path}.{key}"))
        return out
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(observed) != len(desired):
            return [path]
        out = []
        for i, (d, o) in enumerate(zip(desired, observed)):
            out.extend(differences(d, o, f"{path}[{i}]"))
        return out
    return [] if _same_scalar(desired, observed) else [path]


def _same_scalar(a: Any, b: Any) -> bool:
    """Equal values of the same JSON type (1 == 1.0, but "1" != 1 and True != 1)."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b
    return type(a) is type(b) and a == b


def changed_fields(desired: Mapping, observed: Mapping) -> list[str]:
    """Rendered fields of a child that differ in the observed object (metadata: only ours)."""
    meta_d = desired.get("metadata") or {}
    meta_o = observed.get("metadata") or {}
    out = []
    for key in OWNED_METADATA:
        if key in meta_d:
            out.extend(differences(meta_d[key], meta_o.get(key), f".metadata.{key}"))
    for key, value in desired.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        out.extend(differences(value, observed.get(key), f".{key}"))
    if desired.get("apiVersion") != observed.get("apiVersion", desired.get("apiVersion")):
        out.append(".apiVersion")
    return out


def _is_ours(obj: Mapping, monitor: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(render.LABEL_MANAGED_BY) == render.MANAGER and labels.get(render.LABEL_MONITOR) == monitor


def plan(desired: list[dict], observed: Mapping[Key, Mapping], monitor: str | None = None) -> list[Action]:
    """Actions that bring ``observed`` to ``desired``: applies in desired order, then deletes.

    ``observed`` maps (kind, name) to the objects listed by the children's labels. Only objects
    labelled for ``monitor`` (default: the monitor the desired children name) are deleted, so an
    unrelated object that happens to be in ``observed`` is never touched.
    """
    if monitor is None and desired:
        monitor = desired[0]["metadata"]["labels"][render.LABEL_MONITOR]
    actions = []
    wanted = set()
    for obj in desired:
        key = child_key(obj)
        wanted.add(key)
        meta = obj["metadata"]
        current = observed.get(key)
        if current is None:
            reason = "missing"
        else:
            diff = changed_fields(obj, current)
            if not diff:
                continue
            reason = "changed: " + ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
        actions.append(Action("apply", obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"],
                               reason, copy.deepcopy(obj)))
    extras = [obj for key, obj in observed.items()
              if key not in wanted and monitor is not None and _is_ours(obj, monitor)]
    rank = {kind: i for i, kind in enumerate(DELETE_ORDER)}
    extras.sort(key=lambda o: (rank.get(o["kind"], len(rank)), o["metadata"]["name"]))
    for obj in extras:
        meta = obj["metadata"]
        actions.append(Action("delete", obj["apiVersion"], obj["kind"], meta.get("namespace", ""),
                              meta["name"], "no longer desired"))
    return actions


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(ctype: str, ok: bool | None, reason: str, message: str, generation: Any,
               previous: Mapping[str, Mapping], now: str) -> dict:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    old = previous.get(ctype) or {}
    # Kubernetes convention: the transition time moves only when the status does.
    since = old.get("lastTransitionTime") if old.get("status") == status and old.get("lastTransitionTime") else now
    cond = {"type": ctype, "status": status, "reason": reason, "message": message[:32768],
            "lastTransitionTime": since}
    if isinstance(generation, int):
        cond["observedGeneration"] = generation
    return cond


def child_ready(obj: Mapping) -> tuple[bool, str]:
    """Whether a child is ready: Knative objects by their Ready condition, others by existing.

    >>> child_ready({"apiVersion": "serving.knative.dev/v1", "status": {"conditions": [
    ...     {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "no image"}]}})
    (False, 'RevisionFailed: no image')
    """
    group = str(obj.get("apiVersion", "")).split("/")[0]
    if not group.endswith(KNATIVE_GROUP_SUFFIX):
        return True, ""
    for cond in ((obj.get("status") or {}).get("conditions") or []):
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return True, ""
            text = ": ".join(p for p in (cond.get("reason"), cond.get("message")) if p)
            return False, text or f"Ready is {cond.get('status')}"
    return False, "no Ready condition yet"


def window_summary(spec: MonitorSpec) -> str:
    """Printer-column text: '15s' (tumbling) or '1m every 15s' (sliding).

    >>> window_summary(parse_monitor({"metadata": {"name": "m"}, "spec": {"schema": {"features": ["x"]},
    ...     "window": {"duration": 60000, "slide": "15s"}}}))
    '1m every 15s'
    """
    w = spec.window
    text = format_duration(w.duration_ms)
    return text if w.tumbling else f"{text} every {format_duration(w.slide_ms)}"


def status_for(monitor_body: Mapping, observed: Mapping[Key, Mapping], error: BaseException | str | None = None,
               now: str | None = None) -> dict:
    """The monitor's status: conditions ConfigValid, WiringReady and Ready, observedGeneration,
    loggerUrl (where the KServe logger must send), window and drift (printer columns).

    ``error`` is what went wrong in this reconcile: a SpecError makes ConfigValid False with the
    field in the message; anything else makes Ready False with reason ReconcileError.
    lastTransitionTime is kept for conditions whose status did not change.
    """
    now = now or _now()
    meta = monitor_body.get("metadata") or {}
    generation = meta.get("generation")
    old_status = monitor_body.get("status") or {}
    previous = {c.get("type"): c for c in (old_status.get("conditions") or []) if isinstance(c, Mapping)}
    spec_error = error if isinstance(error, SpecError) else None
    spec = None
    if spec_error is None:
        try:
            spec = spec_for(monitor_body)
        except SpecError as exc:
            spec_error = exc
    namespace = meta.get("namespace") or "default"
    raw_spec = monitor_body.get("spec")
    broker = raw_spec.get("broker") if isinstance(raw_spec, Mapping) else None
    if not isinstance(broker, str) or not broker:
        broker = "default"  # an invalid spec still gets a status; the logger URL is a best guess
    status: dict = {"loggerUrl": render.broker_url(namespace, broker)}
    if isinstance(generation, int):
        status["observedGeneration"] = generation

    if spec_error is not None:
        conds = [
            _condition("ConfigValid", False, "InvalidSpec", str(spec_error), generation, previous, now),
            _condition("WiringReady", None, "InvalidSpec", "children are left as they are until the spec is fixed",
                       generation, previous, now),
            _condition("Ready", False, "InvalidSpec", str(spec_error), generation, previous, now),
        ]
        status["conditions"] = conds
        return status

    status["window"] = window_summary(spec)
    status["drift"] = ",".join(d.name for d in spec.drift) or "off"
    # Names only: the baseline's content does not matter for what exists.
    wanted = [child_key(o) for o in render.render(spec, render.DEFAULT_IMAGE, baseline_doc={})]
    missing = [f"{kind}/{name}" for kind, name in wanted if (kind, name) not in observed]
    not_ready = []
    for key in wanted:
        if key in observed:
            ok, why = child_ready(observed[key])
            if not ok:
                not_ready.append(f"{key[0]}/{key[1]} ({why})")
    if missing:
        wiring = _condition("WiringReady", False, "ChildrenMissing", "missing: " + ", ".join(missing),
                            generation, previous, now)
    elif not_ready:
        wiring = _condition("WiringReady", False, "ChildrenNotReady", "not ready: " + "; ".join(not_ready),
                            generation, previous, now)
    else:
        wiring = _condition("WiringReady", True, "AllChildrenReady",
                            f"{len(wanted)} children ready", generation, previous, now)
    config = _condition("ConfigValid", True, "SpecValid", "the spec is valid", generation, previous, now)
    if error is not None:
        ready = _condition("Ready", False, "ReconcileError", str(error), generation, previous, now)
    elif wiring["status"] == "True":
        ready = _condition("Ready", True, "Ready", f"monitoring InferenceService {spec.inference_service}",
                           generation, previous, now)
    else:
        ready = _condition("Ready", False, wiring["reason"], wiring["message"], generation, previous, now)
    status["conditions"] = [config, wiring, ready]
    return status
