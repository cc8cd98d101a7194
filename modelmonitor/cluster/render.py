"""Kubernetes manifests of a ModelMonitor: what the operator applies and `modelmonitor render` prints.

Each function role runs its own image, built from ``functions/<role>/`` (a Knative Functions
project on the func-python runtime): ``DEFAULT_IMAGE`` names them with ``{role}``. Everything a
monitor needs on a cluster is rendered here, in a fixed order: the ``<monitor>-config``
ConfigMap, the Knative Services, then the wiring (Triggers, PingSource, KafkaSinks:
:mod:`modelmonitor.cluster.wiring`); names shared by all objects are in
:mod:`modelmonitor.cluster.manifest_common`. The same functions feed the operator (:mod:`modelmonitor.cluster.reconcile`), the
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
from typing import Iterable

import yaml

from modelmonitor.cluster.gitops import dump_manifests, gitops_header, readable_json
from modelmonitor.cluster.manifest_common import (AUTOSCALING_ANNOTATIONS, BASELINE_PATH, CONFIG_DIR, CONFIG_PATH,
                                                  CONFIGMAP_LIMIT, DEFAULT_IMAGE, DEFAULT_REDIS_SECRET,
                                                  DEFAULT_RESOURCES, EVENTING_API, KAFKA_SINK_API, LABEL_MANAGED_BY,
                                                  LABEL_MONITOR, MANAGER, MAX_MONITOR_NAME, REPO_ROOT, ROLES,
                                                  SERVING_API, SOURCES_API, broker_url, child_selector, labels_for,
                                                  object_meta, owner_reference, sorted_deep)
from modelmonitor.cluster.wiring import render_wiring, roles_for
from modelmonitor.core.spec import API_VERSION, KIND, MonitorSpec, SpecError, load_monitor

#: Names other modules (operator, reconcile, k8s_apply, tests) read as ``render.<name>``; they are
#: defined in manifest_common and wiring.
__all__ = ["render", "render_yaml", "render_monitor_file", "render_config_map", "render_service", "dump_yaml",
           "check_renderable", "baseline_document", "config_monitor_document", "function_env", "image_for",
           "DEFAULT_IMAGE", "DEFAULT_RESOURCES", "EVENTING_API", "KAFKA_SINK_API", "LABEL_MANAGED_BY",
           "LABEL_MONITOR", "MANAGER", "ROLES", "SERVING_API", "SOURCES_API", "broker_url", "child_selector",
           "labels_for", "owner_reference", "sorted_deep", "render_wiring", "roles_for"]

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
            "metadata": object_meta(spec, f"{spec.name}-config", "config", owner_uid), "data": data}


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
            "metadata": object_meta(spec, f"{spec.name}-{role}", role, owner_uid),
            "spec": {"template": {"metadata": template_meta, "spec": pod}}}




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
