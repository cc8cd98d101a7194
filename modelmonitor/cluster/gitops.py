"""`modelmonitor render` output for GitOps: manifests a person reads, diffs and commits.

Keys come in the order Kubernetes manifests are written in (``apiVersion``, ``kind``,
``metadata`` with ``name`` and ``namespace`` first, then the body); multi-line strings such as the
ConfigMap's ``monitor.yaml`` and ``baseline.json`` are YAML literal blocks, not one escaped line;
a header says what to build and push before applying.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import yaml

__all__ = ["manifest_order", "dump_manifests", "readable_json", "gitops_header"]

_TOP = ("apiVersion", "kind", "metadata")
_METADATA = ("name", "namespace", "labels", "annotations", "ownerReferences")


def manifest_order(obj: dict) -> dict:
    """``obj`` with its top-level and metadata keys in manifest order (the rest keep theirs).

    >>> list(manifest_order({"data": {}, "kind": "ConfigMap", "metadata": {"namespace": "d", "name": "n"},
    ...                      "apiVersion": "v1"}))
    ['apiVersion', 'kind', 'metadata', 'data']
    """
    out = {key: obj[key] for key in _TOP if key in obj}
    if isinstance(out.get("metadata"), dict):
        meta = obj["metadata"]
        out["metadata"] = {**{k: meta[k] for k in _METADATA if k in meta},
                           **{k: v for k, v in meta.items() if k not in _METADATA}}
    out.update((key, value) for key, value in obj.items() if key not in _TOP)
    return out


class _ManifestDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (``|``); everything else as SafeDumper does."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_ManifestDumper.add_representer(str, _represent_str)


def dump_manifests(objects: Iterable[dict], header: str = "") -> str:
    """One YAML stream of ``objects`` in manifest key order, documents separated by ``---``.

    >>> print(dump_manifests([{"kind": "ConfigMap", "apiVersion": "v1", "data": {"a.json": '{\\n  "x": 1\\n}\\n'}}]),
    ...       end="")
    apiVersion: v1
    kind: ConfigMap
    data:
      a.json: |
        {
          "x": 1
        }
    """
    docs = [yaml.dump(manifest_order(o), Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False,
                      width=1000, allow_unicode=True) for o in objects]
    return header + "---\n".join(docs)


def readable_json(doc: Any, indent: int = 2) -> str:
    """JSON with objects indented and lists of numbers or strings on one line (a baseline's 20
    bin edges are one line, not twenty), ending in a newline; ``json.loads`` gives ``doc`` back.

    >>> print(readable_json({"edges": [1.0, 2.5], "f": {"count": 3}}), end="")
    {
      "edges": [1.0, 2.5],
      "f": {
        "count": 3
      }
    }
    """
    def render(value: Any, depth: int) -> str:
        pad, inner = " " * (indent * depth), " " * (indent * (depth + 1))
        if isinstance(value, dict) and value:
            items = [f"{inner}{json.dumps(str(k))}: {render(v, depth + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            return "[\n" + ",\n".join(inner + render(v, depth + 1) for v in value) + "\n" + pad + "]"
        return json.dumps(value, allow_nan=False, separators=(", ", ": "))
    return render(doc, 0) + "\n"


def gitops_header(monitor_path: str, monitor: str, images: list[str], redis_secret: tuple[str, str]) -> str:
    """Comment lines saying what the manifests need before ``kubectl apply`` works."""
    lines = [f"# Manifests of ModelMonitor {monitor!r}, rendered by `modelmonitor render {monitor_path}`.",
             "# Before applying them (kubectl apply -f, Argo CD, Flux):",
             f"#   1. build and push the functions' image{'s' if len(images) > 1 else ''} the Knative Services run:"]
    for image in images:
        lines.append(f"#        {image}")
    lines += ["#      from the repository root (its func.yaml): `kn func build --image IMAGE --push`;",
              "#      render with --image IMAGE to use an image in your own registry;",
              f"#   2. create the Secret {redis_secret[0]!r} with the Redis URL under key {redis_secret[1]!r}:",
              f"#        kubectl create secret generic {redis_secret[0]} --from-literal={redis_secret[1]}=redis://HOST:6379/0",
              "#   3. Knative Serving and Eventing, and the Broker the Triggers name, must be installed."]
    return "\n".join(lines) + "\n"
