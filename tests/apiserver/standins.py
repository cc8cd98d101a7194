"""CustomResourceDefinitions registered for the test for the kinds the operator writes but this
server does not serve: Knative Service, Trigger, PingSource and KafkaSink (normally installed
by Knative's release YAMLs), and ConfigMap/Event (core kinds, served here under the test group
the front maps ``/api/v1`` onto).

Their schemas keep every field (``x-kubernetes-preserve-unknown-fields``): they stand in for the
types so that the real server stores the children, applies them server-side and selects them
by label; they do not check Knative's own field rules (the schema tests of the rendered
manifests do that). Each has a status subresource like the real types, so a test can play
the Knative controller and mark a child Ready.
"""
from __future__ import annotations

from front import CORE_GROUP

OPEN_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def crd(group: str, version: str, kind: str, plural: str, schema: dict | None = None,
        status: bool = True) -> dict:
    schema = schema or {"type": "object", "properties": {"spec": OPEN_OBJECT, "status": OPEN_OBJECT}}
    version_doc = {"name": version, "served": True, "storage": True,
                   "schema": {"openAPIV3Schema": schema}}
    if status:
        version_doc["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": {"modelmonitor.io/test-stand-in": "true"}},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [version_doc]},
    }


CONFIG_MAP_SCHEMA = {"type": "object", "properties": {
    "data": {"type": "object", "additionalProperties": {"type": "string"}},
    "binaryData": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
    "immutable": {"type": "boolean"}}}

STAND_INS = [
    crd("serving.knative.dev", "v1", "Service", "services"),
    crd("eventing.knative.dev", "v1", "Trigger", "triggers"),
    crd("sources.knative.dev", "v1", "PingSource", "pingsources"),
    crd("eventing.knative.dev", "v1alpha1", "KafkaSink", "kafkasinks"),
    crd(CORE_GROUP, "v1", "ConfigMap", "configmaps", CONFIG_MAP_SCHEMA, status=False),
    # Events have many top-level fields; keep them all.
    crd(CORE_GROUP, "v1", "Event", "events", {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        status=False),
]
