"""The operator: the CRD (schema, defaults and CEL rules, evaluated with cel-python), the pure
reconcile logic, the HTTP apply layer against a recording API server, and the kopf wiring.

No real API server runs here: the apply layer is checked at the HTTP level (paths, query,
content types, bodies), which is what an API server would receive.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import celpy
import jsonschema
import pytest
import yaml
from celpy import celtypes
from kubernetes.client import ApiClient, Configuration

from modelmonitor.cluster import k8s_apply

from modelmonitor.cluster import reconcile

from modelmonitor.cluster import render
from modelmonitor.core.spec import (DEFAULT_THRESHOLDS, DETECTORS, FEATURE_TYPES, SpecError, parse_monitor)
from schema_sources import manifest_errors, strict
from test_render import EXAMPLE, EXAMPLE_BASELINE, ROOT, example_doc

CRD_PATH = ROOT / "operator" / "crd.yaml"
# k8s.io/apimachinery/pkg/util/validation: IsDNS1123Subdomain
DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"


# ---------------------------------------------------------------------------------------------
# CRD helpers: strict schema validation, Kubernetes-style defaulting, CEL evaluation
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def crd() -> dict:
    with open(CRD_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def monitor_schema() -> dict:
    [version] = crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


@functools.lru_cache(maxsize=1)
def _monitor_validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(strict(monitor_schema(), cr_root=True))


def apply_defaults(schema: dict, value):
    """Kubernetes defaulting: missing properties with a default get it, top-down."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for name, sub in (schema.get("properties") or {}).items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(sub, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def to_cel(value, schema: dict):
    """A CEL value typed the way the API server types it from the schema (number -> double,
    int-or-string -> int or string, unknown fields as JSON)."""
    if schema.get("x-kubernetes-int-or-string"):
        return celtypes.IntType(value) if isinstance(value, int) else celtypes.StringType(value)
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return celtypes.MapType({
            celtypes.StringType(k): to_cel(v, props[k]) if k in props
            else to_cel(v, extra) if isinstance(extra, dict) else celpy.json_to_cel(v)
            for k, v in value.items()})
    if kind == "array" and isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items") or {}) for v in value])
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    # Values of the wrong type (only seen when a test runs rules past a failed schema check)
    # keep their JSON type.
    return celpy.json_to_cel(value)


_CEL = celpy.Environment()


@functools.lru_cache(maxsize=None)
def cel_program(rule: str):
    return _CEL.program(_CEL.compile(rule))


EVALUATED_FALSE: set[str] = set()  # rules seen rejecting something (coverage check below)


def cel_violations(schema: dict, value, path: str = "") -> list[tuple[str, str]]:
    """(path, message) of every x-kubernetes-validations rule that fails, like the API server:
    a rule runs where its node is present; an evaluation error counts as a failure."""
    out = []
    for rule in schema.get("x-kubernetes-validations") or []:
        try:
            result = cel_program(rule["rule"]).evaluate({"self": to_cel(value, schema)})
        except celpy.CELEvalError as exc:
            result = exc
        if isinstance(result, celpy.CELEvalError) or not bool(result):
            EVALUATED_FALSE.add(rule["rule"])
            out.append((path + rule.get("fieldPath", ""), rule["message"]))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in value.items():
            if key in props:
                out += cel_violations(props[key], sub, f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += cel_violations(schema["additionalProperties"], sub, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            out += cel_violations(schema["items"], sub, f"{path}[{i}]")
    return out


def list_map_duplicates(schema: dict, value, path: str = "") -> list[str]:
    """Entries of `x-kubernetes-list-type: map` lists repeating an earlier entry's keys: the API
    server refuses those itself ("Duplicate value"), before any CEL rule runs."""
    out = []
    if isinstance(value, list) and schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen = set()
        for i, item in enumerate(value):
            key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else None
            if key in seen:
                out.append(f"{path}[{i}]: Duplicate value: {dict(zip(keys, key))}")
            seen.add(key)
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                out += list_map_duplicates(sub, value[name], f"{path}.{name}" if path else name)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += list_map_duplicates(schema["items"], item, f"{path}[{i}]")
    return out


def crd_errors(doc: dict) -> list[str]:
    """What the API server would say about a ModelMonitor: strict schema errors and duplicate
    list-map keys, then (after defaulting) CEL rule failures."""
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _monitor_validator().iter_errors(doc)]
    errors += list_map_duplicates(monitor_schema(), doc)
    if errors:
        return errors
    defaulted = apply_defaults(monitor_schema(), doc)
    return [f"{path}: {message}" for path, message in cel_violations(monitor_schema(), defaulted)]


def with_changes(**spec_changes) -> dict:
    doc = example_doc()
    for key, value in spec_changes.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


def inline_example() -> dict:
    """The example as a cluster object: baseline inline, in namespace ns, with uid and generation."""
    doc = example_doc()
    with open(EXAMPLE_BASELINE, encoding="utf-8") as fh:
        doc["spec"]["baseline"] = json.load(fh)
    doc["metadata"].update({"namespace": "ns", "uid": "11111111-2222-3333-4444-555555555555", "generation": 3})
    return doc


# ---------------------------------------------------------------------------------------------
# CRD
# ---------------------------------------------------------------------------------------------

def test_crd_is_a_valid_apiextensions_v1_object():
    assert manifest_errors(crd()) == []
    names = crd()["spec"]["names"]
    assert crd()["metadata"]["name"] == "modelmonitors.monitoring.modelmonitor.io"
    assert names["kind"] == "ModelMonitor" and names["shortNames"] == ["mm"] and crd()["spec"]["scope"] == "Namespaced"
    [version] = crd()["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Ready", "Window", "Drift", "Reason", "Age"]
    broken = copy.deepcopy(crd())
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["type"] = 5
    assert manifest_errors(broken)


def _nodes(schema, path="$"):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _nodes(schema[key], f"{path}.{key}")


def test_crd_schema_is_structural_and_defaults_are_valid():
    for path, node in _nodes(monitor_schema()):
        # Structural: every node has a type unless it is int-or-string or preserves unknown fields.
        assert node.get("type") or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"), path
        if "default" in node:
            # The API server refuses a CRD whose defaults do not validate (after pruning).
            errors = list(jsonschema.Draft4Validator(strict(node)).iter_errors(node["default"]))
            assert errors == [], path
        for rule in node.get("x-kubernetes-validations") or []:
            cel_program(rule["rule"])  # compiles
        if node.get("type") == "string" and any(
                "matches(" in r["rule"] for r in (node.get("x-kubernetes-validations") or [])):
            assert "maxLength" in node, path  # bounded CEL cost


def test_crd_enums_and_defaults_match_the_parser():
    spec = monitor_schema()["properties"]["spec"]["properties"]
    assert set(spec["drift"]["properties"]) == set(DETECTORS)
    for name, node in spec["drift"]["properties"].items():
        assert node["properties"]["threshold"]["default"] == DEFAULT_THRESHOLDS[name], name
    feature = spec["schema"]["properties"]["features"]["items"]["properties"]["type"]
    assert tuple(feature["enum"]) == FEATURE_TYPES
    assert spec["delivery"]["properties"]["backoffPolicy"]["enum"] == ["linear", "exponential"]
    assert spec["functions"]["properties"]["ingest"]["properties"]["metric"]["enum"] == ["concurrency", "rps", "cpu"]
    assert spec["stats"]["properties"]["stddev"]["properties"]["type"]["enum"] == ["sample", "population"]
    # Everything parse_monitor accepts under spec is declared (the API server would prune the
    # rest); the parser lists what it accepts when it meets an unknown field.
    with pytest.raises(SpecError) as err:
        parse_monitor(with_changes(zzz=1), base_dir=str(EXAMPLE.parent))
    assert err.value.field == "spec.zzz"
    accepted = set(err.value.reason.split("allowed: ", 1)[1].rstrip(")").split(", "))
    assert accepted == set(spec)
    # Defaulting a minimal monitor gives what parse_monitor assumes.
    minimal = {"apiVersion": "monitoring.modelmonitor.io/v1alpha1", "kind": "ModelMonitor",
               "metadata": {"name": "m"}, "spec": {"schema": {"features": [{"name": "x"}]}, "drift": {"psi": {}},
                                                  "baseline": {"configMapRef": {"name": "b"}}}}
    defaulted = apply_defaults(monitor_schema(), minimal)
    parsed, plain = parse_monitor(defaulted), parse_monitor(minimal)
    assert parsed.window == plain.window and parsed.drift == plain.drift and parsed.broker == plain.broker
    assert parsed.baseline_ref == plain.baseline_ref and parsed.late_events == plain.late_events


def test_example_and_valid_variants_pass_schema_and_cel():
    valid = [
        example_doc(),
        with_changes(window={"duration": 15000, "slide": 5000, "watermarkDelay": 6000}),
        with_changes(window={"duration": "1m", "slide": 15000}),
        with_changes(window={"duration": "90000", "slide": "1.5m"}),
        with_changes(window={"duration": "1d", "slide": "1h"}),
        with_changes(baseline={"configMapRef": {"name": "iris-baseline", "key": "b.json"}}),
        with_changes(baseline={"descriptive": {"x": {"avg": 1}}, "distributions": {"x": {"0.0": 1}}}),
        with_changes(functions={"aggregate": {"minScale": 1, "maxScale": 4, "target": 50},
                                "ingest": {"minScale": 2, "maxScale": 0, "resources": {"limits": {"cpu": 2, "memory": "1Gi"}}}}),
        with_changes(deadLetterSink={"uri": "http://dlq/"}, delivery={"retry": 0, "backoffDelay": "PT1M0.5S"}),
        with_changes(sinks={"kafka": {"bootstrapServers": "k:9092", "topics": {"drift": "d"}}}),
        with_changes(segment={"extension": "modelversion"}),
        with_changes(segment={"metadataHeader": "X-Model-Version", "maxSegments": 100, "default": "stable",
                              "retention": "2h", "compare": {"candidate": "v2", "reference": "v1"}}),
        inline_example(),
    ]
    for doc in valid:
        assert crd_errors(doc) == [], doc["spec"]
        parse_monitor(copy.deepcopy(doc), base_dir=str(EXAMPLE.parent))


def _features(*names):
    return {"features": [{"name": n, "type": "numerical"} for n in names]}


# (spec changes, what the CRD says, the field parse_monitor names)
INVALID = [
    ({"window": {"duration": "15s", "slide": "20s"}}, "slide must not be larger than duration", "spec.window.slide"),
    ({"window": {"duration": 15000, "slide": 20000}}, "slide must not be larger than duration", "spec.window.slide"),
    ({"window": {"duration": 30000, "slide": "1m"}}, "slide must not be larger than duration", "spec.window.slide"),
    ({"window": {"duration": "1h", "slide": "3601s"}}, "slide must not be larger than duration", "spec.window.slide"),
    ({"window": {"duration": "0s"}}, "duration must be greater than zero", "spec.window.duration"),
    ({"window": {"duration": "15s", "slide": "0ms"}}, "slide must be greater than zero", "spec.window.slide"),
    ({"window": {"duration": "15s", "idleTimeout": "0s"}}, "idleTimeout must be greater than zero", "spec.window.idleTimeout"),
    ({"window": {"duration": "fifteen"}}, "does not match", "spec.window.duration"),
    ({"window": {"slide": "15s"}}, "'duration' is a required property", "spec.window.duration"),
    ({"baseline": None}, "drift detectors need a baseline", "spec.baseline"),
    ({"baseline": {}}, "exactly one of file, configMapRef", "spec.baseline"),
    ({"schema": _features("a", "b", "a")}, "spec.schema.features[2]: Duplicate value", "spec.schema.features[2].name"),
    ({"schema": dict(_features("a"), predictions=[{"name": "p"}, {"name": "p"}])},
     "spec.schema.predictions[1]: Duplicate value", "spec.schema.predictions[1].name"),
    ({"schema": dict(_features("a"), predictions=[{"name": "a"}])}, "differ from every feature name",
     "spec.schema.predictions"),
    ({"schema": {"features": []}}, "should be non-empty", "spec.schema.features"),
    ({"schema": {"features": [{"name": "a", "type": "ordinal"}]}}, "is not one of", "spec.schema.features[0].type"),
    ({"drift": {"psi": {"threshold": -0.1}}}, "less than the minimum", "spec.drift.psi.threshold"),
    ({"drift": {"psi": {"treshold": 0.1}}}, "Additional properties", "spec.drift.psi.treshold"),
    ({"drift": {"energy": {}}}, "Additional properties", "spec.drift.energy"),
    ({"stats": {"stddev": {"type": "biased"}}}, "is not one of", "spec.stats.stddev.type"),
    ({"stats": {"percentiles": [50, 150]}}, "greater than the maximum", "spec.stats.percentiles[1]"),
    ({"outliers": {"stddev": {"k": 0}}}, "less than or equal to the minimum", "spec.outliers.stddev.k"),
    ({"alerts": {"consecutiveWindows": 0}}, "less than the minimum", "spec.alerts.consecutiveWindows"),
    ({"delivery": {"backoffPolicy": "random"}}, "is not one of", "spec.delivery.backoffPolicy"),
    ({"delivery": {"retry": -1}}, "less than the minimum", "spec.delivery.retry"),
    ({"delivery": {"backoffDelay": "200ms"}}, "does not match", "spec.delivery.backoffDelay"),
    ({"functions": {"ingest": {"metric": "memory"}}}, "is not one of", "spec.functions.ingest.metric"),
    ({"functions": {"aggregate": {"minScale": 3, "maxScale": 2}}}, "minScale must not exceed maxScale",
     "spec.functions.aggregate.minScale"),
    ({"functions": {"ingester": {}}}, "Additional properties", "spec.functions.ingester"),
    ({"sinks": {"kafka": {"bootstrapServers": "k:9092", "topics": {}}}}, "should be non-empty",
     "spec.sinks.kafka.topics"),
    ({"sinks": {"kafka": {"topics": {"stats": "s"}}}}, "'bootstrapServers' is a required property",
     "spec.sinks.kafka.bootstrapServers"),
    ({"deadLetterSink": {}}, "a destination needs uri or ref", "spec.deadLetterSink"),
    ({"lateEvents": "yes"}, "is not of type 'boolean'", "spec.lateEvents"),
    ({"segment": {"maxSegments": 3}}, "name exactly one of extension or metadataHeader", "spec.segment"),
    ({"segment": {"extension": "v", "metadataHeader": "X-V"}}, "name exactly one of extension or metadataHeader",
     "spec.segment"),
    ({"segment": {"extension": "Model-Version"}}, "does not match", "spec.segment.extension"),
    ({"segment": {"extension": "v", "maxSegments": 0}}, "less than the minimum", "spec.segment.maxSegments"),
    ({"segment": {"extension": "v", "maxSegments": 101}}, "greater than the maximum", "spec.segment.maxSegments"),
    ({"segment": {"extension": "v", "default": "a b"}}, "does not match", "spec.segment.default"),
    ({"segment": {"extension": "v", "retention": "soon"}}, "does not match", "spec.segment.retention"),
    ({"segment": {"extension": "v", "maxSegmnts": 3}}, "Additional properties", "spec.segment.maxSegmnts"),
    ({"segment": {"extension": "v", "compare": {"candidate": "v1", "reference": "v1"}}},
     "the candidate and the reference must be different segments", "spec.segment.compare.reference"),
    ({"segment": {"extension": "v", "compare": {"candidate": "v1"}}}, "'reference' is a required property",
     "spec.segment.compare"),
    ({"segment": {"extension": "v", "compare": {"candidate": "v 1", "reference": "v2"}}}, "does not match",
     "spec.segment.compare.candidate"),
    ({"windw": {"duration": "15s"}}, "Additional properties", "spec.windw"),
    ({"schema": None}, "'schema' is a required property", "spec.schema.features"),
]


@pytest.mark.parametrize("changes, crd_says, field", INVALID, ids=[c[2] + ":" + c[1][:24] for c in INVALID])
def test_crd_and_parser_refuse_the_same_invalid_specs(changes, crd_says, field):
    doc = with_changes(**changes)
    errors = crd_errors(doc)
    assert any(crd_says in e for e in errors), errors
    with pytest.raises(SpecError) as err:
        parse_monitor(copy.deepcopy(doc), base_dir=str(EXAMPLE.parent))
    assert err.value.field == field


def test_every_cel_rule_rejects_something():
    """Each CEL rule in the CRD was seen failing on some invalid spec (none is dead code)."""
    for changes, _, _ in INVALID:
        doc = with_changes(**changes)
        if not list(_monitor_validator().iter_errors(doc)):
            continue
        # Rules behind a schema check (e.g. minimum: 0 and threshold >= 0.0) run here directly.
        cel_violations(monitor_schema(), apply_defaults(monitor_schema(), doc))
    for changes, _, _ in INVALID:
        crd_errors(with_changes(**changes))
    long_name = example_doc()
    long_name["metadata"]["name"] = "m" * 48
    assert crd_errors(long_name) == [": metadata.name must be at most 47 characters: the monitor's Knative "
                                     "Service revisions (<name>-aggregate-00001) must be valid DNS labels"]
    # parse_monitor allows 63 characters; the cluster-side checks (and render) stop at 47.
    parse_monitor(copy.deepcopy(long_name), base_dir=str(EXAMPLE.parent))
    with pytest.raises(SpecError, match="longer than 47"):
        reconcile.spec_for(dict(long_name, spec=inline_example()["spec"]))
    rules = {r["rule"] for _, node in _nodes(monitor_schema()) for r in node.get("x-kubernetes-validations") or []}
    assert rules - EVALUATED_FALSE == set()


def test_cel_rules_stay_within_the_bounds_the_api_server_accepted():
    """The real API server (make test-apiserver) refused the CRD when a rule nested two
    comprehensions over the 256-item name lists (estimated cost 1.43x its budget), and refused a
    256 x 256 monitor of 253-character names at run time (per-call cost limit); it accepts the
    feature/prediction rule at 256 x 64. Uniqueness within a list is the list-map key's job."""
    schema = monitor_schema()["properties"]["spec"]["properties"]["schema"]
    features, predictions = schema["properties"]["features"], schema["properties"]["predictions"]
    assert features["maxItems"] * predictions["maxItems"] <= 256 * 64
    for names in (features, predictions):
        assert names["x-kubernetes-list-type"] == "map" and names["x-kubernetes-list-map-keys"] == ["name"]
        assert names["items"]["properties"]["name"]["maxLength"] <= 253
    comprehensions = re.compile(r"\.(all|exists|exists_one|map|filter)\(")
    for _, node in _nodes(monitor_schema()):
        for rule in node.get("x-kubernetes-validations") or []:
            assert len(comprehensions.findall(rule["rule"])) <= 2, rule["rule"]
            assert "exists_one" not in rule["rule"], rule["rule"]


def test_days_are_the_documented_gap_of_the_slide_rule():
    """CEL's duration() has no 'd' unit, so the CRD skips slide <= duration for day values; the
    parser (and with it the operator's ConfigValid condition) still refuses them."""
    doc = with_changes(window={"duration": "1d", "slide": "2d"})
    assert crd_errors(doc) == []
    with pytest.raises(SpecError) as err:
        parse_monitor(doc, base_dir=str(EXAMPLE.parent))
    assert err.value.field == "spec.window.slide"


# ---------------------------------------------------------------------------------------------
# Pure reconcile logic
# ---------------------------------------------------------------------------------------------

def server_side(obj: dict, ready: bool = True) -> dict:
    """What the API server returns for an applied child: our fields plus defaults and status."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta.update({"uid": "child-" + meta["name"], "resourceVersion": "7", "generation": 1,
                 "creationTimestamp": "2026-11-22T00:00:00Z",
                 "managedFields": [{"manager": "modelmonitor-operator", "operation": "Apply"}]})
    meta.setdefault("annotations", {})["serving.knative.dev/creator"] = "system:serviceaccount:x"
    if out["kind"] == "Service":
        pod = out["spec"]["template"]["spec"]
        pod.setdefault("timeoutSeconds", 300)
        pod["containers"][0]["readinessProbe"].update({"successThreshold": 1, "tcpSocket": None})
        out["spec"]["traffic"] = [{"latestRevision": True, "percent": 100}]
    if out["apiVersion"] != "v1":
        out["status"] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                         "reason": None if ready else "RevisionMissing",
                                         "message": None if ready else "Configuration is waiting"}]}
    return out


def observed_from(objects, **kw) -> dict:
    return {reconcile.child_key(o): server_side(o, **kw) for o in objects}


def test_create_applies_every_child_with_an_owner_reference():
    body = inline_example()
    desired = reconcile.desired_children(body, None, "img:1")
    assert [reconcile.child_key(o) for o in desired] == [
        reconcile.child_key(o) for o in render.render(reconcile.spec_for(body))]
    actions = reconcile.plan(desired, {})
    assert [(a.op, a.kind, a.name, a.reason) for a in actions] == [
        ("apply", o["kind"], o["metadata"]["name"], "missing") for o in desired]
    for action, obj in zip(actions, desired):
        assert action.body == obj and action.namespace == "ns"
        assert obj["metadata"]["ownerReferences"] == [render.owner_reference("iris", body["metadata"]["uid"])]
    images = {c["image"] for o in desired if o["kind"] == "Service" for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"img:1"}


def test_steady_state_plans_nothing_despite_server_defaults():
    body = inline_example()
    desired = reconcile.desired_children(body, None, None)
    assert reconcile.plan(desired, observed_from(desired)) == []


def test_update_applies_changes_and_deletes_what_is_no_longer_wanted():
    body = inline_example()
    observed = observed_from(reconcile.desired_children(body, None, None))
    body["spec"].pop("drift")
    body["spec"]["window"] = {"duration": "1m", "slide": "15s"}
    actions = reconcile.plan(reconcile.desired_children(body, None, None), observed)
    assert [(a.op, a.kind, a.name) for a in actions] == [
        ("apply", "ConfigMap", "iris-config"),
        ("delete", "Trigger", "iris-drift"),   # subscriptions go before their subscribers
        ("delete", "Service", "iris-drift"),
    ]
    assert actions[0].reason.startswith("changed: .data.monitor.yaml")
    assert actions[1].api_version == "eventing.knative.dev/v1" and actions[1].body is None


def test_deleted_child_is_recreated():
    desired = reconcile.desired_children(inline_example(), None, None)
    observed = observed_from(desired)
    del observed[("Trigger", "iris-outlier")]
    [action] = reconcile.plan(desired, observed)
    assert (action.op, action.kind, action.name, action.reason) == ("apply", "Trigger", "iris-outlier", "missing")


def test_edited_child_is_restored_but_foreign_additions_are_kept():
    desired = reconcile.desired_children(inline_example(), None, None)
    observed = observed_from(desired)
    svc = observed[("Service", "iris-aggregate")]
    svc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] = "0"
    svc["metadata"]["labels"]["team"] = "ml"  # someone else's label: not ours to judge
    trigger = observed[("Trigger", "iris-drift")]
    trigger["spec"]["filter"]["attributes"]["type"] = "something.else"
    cm = observed[("ConfigMap", "iris-config")]
    del cm["metadata"]["labels"]["monitoring.modelmonitor.io/monitor"]
    actions = reconcile.plan(desired, observed)
    assert [(a.kind, a.name) for a in actions] == [("ConfigMap", "iris-config"), ("Service", "iris-aggregate"),
                                                   ("Trigger", "iris-drift")]
    reasons = {a.name: a.reason for a in actions}
    assert reasons["iris-aggregate"] == \
        "changed: .spec.template.metadata.annotations.autoscaling.knative.dev/min-scale"
    assert reasons["iris-drift"] == "changed: .spec.filter.attributes.type"
    assert "labels.monitoring.modelmonitor.io/monitor" in reasons["iris-config"]
    # Types matter: a string where we render an int is a change; 1 vs 1.0 is not.
    assert reconcile.differences({"a": 1}, {"a": "1"}) == [".a"]
    assert reconcile.differences({"a": 1}, {"a": 1.0}) == []
    assert reconcile.differences({"a": True}, {"a": 1}) == [".a"]
    assert reconcile.differences({"l": [1, 2]}, {"l": [1, 2, 3]}) == [".l"]


def test_only_this_monitors_labelled_children_are_deleted():
    desired = reconcile.desired_children(inline_example(), None, None)
    observed = observed_from(desired)
    stranger = {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                "metadata": {"name": "user-trigger", "namespace": "ns", "labels": {"team": "ml"}}}
    other = server_side(dict(desired[5], metadata=dict(desired[5]["metadata"], name="other-ingest-request",
                                                         labels=render.labels_for("other", "ingest"))))
    ours_stale = server_side(dict(desired[1], metadata=dict(desired[1]["metadata"], name="iris-old")))
    observed.update({("Trigger", "user-trigger"): stranger, ("Trigger", "other-ingest-request"): other,
                     ("Service", "iris-old"): ours_stale})
    assert [(a.op, a.kind, a.name) for a in reconcile.plan(desired, observed)] == [("delete", "Service", "iris-old")]


def test_invalid_spec_names_the_field_and_touches_nothing():
    body = inline_example()
    body["spec"]["window"] = {"duration": "15s", "slide": "20s"}
    with pytest.raises(SpecError) as err:
        reconcile.desired_children(body, None, None)
    assert err.value.field == "spec.window.slide"
    status = reconcile.status_for(body, {}, error=err.value, now="2026-11-22T10:00:00Z")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["ConfigValid"]["status"] == "False" and conditions["ConfigValid"]["reason"] == "InvalidSpec"
    assert "spec.window.slide" in conditions["ConfigValid"]["message"]
    assert conditions["Ready"]["status"] == "False" and conditions["WiringReady"]["status"] == "Unknown"
    assert status["observedGeneration"] == 3
    # status_for finds the problem on its own too, and a local baseline file is a cluster error.
    assert reconcile.status_for(body, {})["conditions"][0]["status"] == "False"
    file_based = example_doc()
    file_status = reconcile.status_for(file_based, {})
    assert "spec.baseline.file" in file_status["conditions"][0]["message"]
    with pytest.raises(SpecError) as err:
        reconcile.desired_children(file_based, None, None)
    assert err.value.field == "spec.baseline.file"
    # ... unless the caller resolved the baseline document itself.
    children = reconcile.desired_children(file_based, {"version": 1, "features": {}}, None)
    assert json.loads(children[0]["data"]["baseline.json"]) == {"version": 1, "features": {}}


def test_deletion_wants_no_children():
    body = inline_example()
    observed = observed_from(reconcile.desired_children(body, None, None))
    body["metadata"]["deletionTimestamp"] = "2026-11-22T10:00:00Z"
    assert reconcile.desired_children(body, None, None) == []
    actions = reconcile.plan([], observed, monitor="iris")
    assert {a.op for a in actions} == {"delete"} and len(actions) == len(observed)
    kinds = [a.kind for a in actions]
    assert kinds == sorted(kinds, key=reconcile.DELETE_ORDER.index)


def test_status_conditions_and_transition_times():
    body = inline_example()
    desired = reconcile.desired_children(body, None, None)
    ready = reconcile.status_for(body, observed_from(desired), now="2026-11-22T10:00:00Z")
    assert ready["loggerUrl"] == "http://kafka-broker-ingress.knative-eventing.svc.cluster.local/ns/default"
    assert ready["observedGeneration"] == 3 and ready["window"] == "15s"
    assert ready["drift"] == ",".join(body["spec"]["drift"]) and "," in ready["drift"]
    assert [(c["type"], c["status"]) for c in ready["conditions"]] == [
        ("ConfigValid", "True"), ("WiringReady", "True"), ("Ready", "True")]
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == "2026-11-22T10:00:00Z"
               for c in ready["conditions"])
    # Same status later: transition times are kept, so the status does not change at all.
    body["status"] = ready
    assert reconcile.status_for(body, observed_from(desired), now="2026-11-22T11:00:00Z") == ready
    # A child missing, then a child not ready: WiringReady and Ready turn False, times move.
    missing = observed_from(desired)
    del missing[("PingSource", "iris-tick")]
    status = reconcile.status_for(body, missing, now="2026-11-22T12:00:00Z")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["WiringReady"]["reason"] == "ChildrenMissing"
    assert conditions["WiringReady"]["message"] == "missing: PingSource/iris-tick"
    assert conditions["Ready"]["lastTransitionTime"] == "2026-11-22T12:00:00Z"
    assert conditions["ConfigValid"]["lastTransitionTime"] == "2026-11-22T10:00:00Z"
    not_ready = observed_from(desired)
    not_ready[("Service", "iris-drift")] = server_side(desired[4], ready=False)
    conditions = {c["type"]: c for c in reconcile.status_for(body, not_ready)["conditions"]}
    assert conditions["WiringReady"]["reason"] == "ChildrenNotReady"
    assert "Service/iris-drift (RevisionMissing: Configuration is waiting)" in conditions["WiringReady"]["message"]
    # A Knative child without any Ready condition yet is not ready either.
    fresh = observed_from(desired)
    del fresh[("Trigger", "iris-drift")]["status"]
    assert {c["type"]: c["status"] for c in reconcile.status_for(body, fresh)["conditions"]}["WiringReady"] == "False"
    errored = reconcile.status_for(body, observed_from(desired), error="apply Trigger/iris-drift: 422 bad")
    conditions = {c["type"]: c for c in errored["conditions"]}
    assert conditions["Ready"]["reason"] == "ReconcileError" and "422 bad" in conditions["Ready"]["message"]
    sliding = copy.deepcopy(body)
    sliding["spec"]["window"] = {"duration": "1m", "slide": "15s"}
    sliding["spec"].pop("drift")
    status = reconcile.status_for(sliding, {})
    assert status["window"] == "1m every 15s" and status["drift"] == "off"
    # The status validates against the CRD's status schema.
    assert crd_errors(dict(body, status=status)) == []


# ---------------------------------------------------------------------------------------------
# HTTP apply layer against a recording API server
# ---------------------------------------------------------------------------------------------

class FakeApiServer:
    """A tiny API server on 127.0.0.1: records every request and answers like Kubernetes for
    the calls the operator makes (apply creates or updates, list by label, delete, status
    merge patch, event create). Knative children come back Ready."""

    def __init__(self):
        self.requests: list[dict] = []
        self.objects: dict[str, dict] = {}      # object path -> object
        self.fail: dict[tuple[str, str], int] = {}   # (method, path) -> status
        self.missing_collections: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, doc):
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                record = {"method": self.command, "path": self.path,
                          "content_type": self.headers.get("Content-Type"),
                          "body": yaml.safe_load(raw) if raw else None}
                server.requests.append(record)
                status, doc = server.answer(record)
                self._answer(status, doc)

            do_GET = do_PATCH = do_DELETE = do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def put(self, obj: dict, ready: bool = True):
        meta = obj["metadata"]
        path = k8s_apply.resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        self.objects[path] = server_side(obj, ready=ready)

    def answer(self, record):
        url = urlsplit(record["path"])
        path, query = url.path, dict(parse_qsl(url.query))
        if (record["method"], path) in self.fail:
            code = self.fail[(record["method"], path)]
            return code, {"kind": "Status", "status": "Failure", "message": f"refused {path}", "code": code}
        if record["method"] == "GET" and path == f"/apis/{k8s_apply.API_VERSION}/{k8s_apply.MONITOR_PLURAL}":
            return 200, {"kind": "ModelMonitorList", "items": [
                copy.deepcopy(o) for p, o in sorted(self.objects.items()) if p.rsplit("/", 2)[-2] == "modelmonitors"]}
        if record["method"] == "GET" and "labelSelector" in query:
            if path in self.missing_collections:
                return 404, {"kind": "Status", "code": 404, "message": "the server could not find the requested resource"}
            wanted = dict(part.split("=") for part in query["labelSelector"].split(","))
            items = [copy.deepcopy(o) for p, o in sorted(self.objects.items()) if p.rsplit("/", 1)[0] == path
                     and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]
            for item in items:
                if path.startswith("/api/v1/"):  # built-in lists carry no apiVersion/kind per item
                    item.pop("apiVersion"), item.pop("kind")
            return 200, {"kind": "List", "items": items}
        if record["method"] == "GET":
            return (200, self.objects[path]) if path in self.objects else (404, {"kind": "Status", "code": 404})
        if record["method"] == "PATCH" and path.endswith("/status"):
            target = self.objects[path[:-len("/status")]]
            for key, value in record["body"]["status"].items():
                if value is None:
                    target.setdefault("status", {}).pop(key, None)
                else:
                    target.setdefault("status", {})[key] = value
            return 200, target
        if record["method"] == "PATCH":
            self.put(record["body"])
            return 200, self.objects[path]
        if record["method"] == "DELETE":
            if path not in self.objects:
                return 404, {"kind": "Status", "code": 404}
            del self.objects[path]
            return 200, {"kind": "Status", "status": "Success"}
        if record["method"] == "POST":
            return 201, dict(record["body"], metadata=dict(record["body"]["metadata"], name="iris.1"))
        return 405, {}

    def client(self) -> k8s_apply.KubeClient:
        config = Configuration()
        config.host = self.url
        return k8s_apply.KubeClient(ApiClient(config))

    def add_monitor(self, body: dict) -> dict:
        path = k8s_apply.resource_path(body["apiVersion"], body["kind"], "ns", body["metadata"]["name"])
        self.objects[path] = copy.deepcopy(body)
        return self.objects[path]


APPLY_QUERY = "?fieldManager=modelmonitor-operator&force=true"
LIST_PATHS = ["/api/v1/namespaces/ns/configmaps", "/apis/serving.knative.dev/v1/namespaces/ns/services",
              "/apis/eventing.knative.dev/v1/namespaces/ns/triggers",
              "/apis/sources.knative.dev/v1/namespaces/ns/pingsources",
              "/apis/eventing.knative.dev/v1alpha1/namespaces/ns/kafkasinks"]
SELECTOR = "labelSelector=app.kubernetes.io/managed-by%3Dmodelmonitor%2Cmonitoring.modelmonitor.io/monitor%3Diris"
STATUS_PATH = "/apis/monitoring.modelmonitor.io/v1alpha1/namespaces/ns/modelmonitors/iris/status"


def test_reconcile_applies_children_with_server_side_apply():
    body = inline_example()
    with FakeApiServer() as api:
        api.add_monitor(body)
        result = k8s_apply.reconcile_monitor(api.client(), body, "img:1", now="2026-11-22T10:00:00Z")
    desired = reconcile.desired_children(body, None, "img:1")
    assert result.ok and result.status_patched
    requests = api.requests
    assert [(r["method"], r["path"]) for r in requests[:5]] == [("GET", f"{p}?{SELECTOR}") for p in LIST_PATHS]
    applies = requests[5:5 + len(desired)]
    for request, obj in zip(applies, desired):
        path = k8s_apply.resource_path(obj["apiVersion"], obj["kind"], "ns", obj["metadata"]["name"])
        assert request["method"] == "PATCH" and request["path"] == path + APPLY_QUERY
        assert request["content_type"] == "application/apply-patch+yaml"
        assert request["body"] == obj
    ingest = next(r for r in applies if "/services/iris-ingest" in r["path"])
    assert ingest["path"] == "/apis/serving.knative.dev/v1/namespaces/ns/services/iris-ingest" + APPLY_QUERY
    [status_patch] = requests[5 + len(desired):]
    assert (status_patch["method"], status_patch["path"]) == ("PATCH", STATUS_PATH)
    assert status_patch["content_type"] == "application/merge-patch+json"
    conditions = {c["type"]: c["status"] for c in status_patch["body"]["status"]["conditions"]}
    assert conditions == {"ConfigValid": "True", "WiringReady": "True", "Ready": "True"}
    assert status_patch["body"]["status"]["loggerUrl"].endswith("/ns/default")


def test_second_reconcile_is_quiet_and_repairs_deleted_children():
    body = inline_example()
    with FakeApiServer() as api:
        client = api.client()
        stored = api.add_monitor(body)
        k8s_apply.reconcile_monitor(client, body, None)
        api.requests.clear()
        result = k8s_apply.reconcile_monitor(client, stored, None)
        assert result.actions == [] and not result.status_patched
        assert [r["method"] for r in api.requests] == ["GET"] * 5
        # Someone deletes a Trigger: the next reconcile applies exactly that one.
        del api.objects["/apis/eventing.knative.dev/v1/namespaces/ns/triggers/iris-drift"]
        api.requests.clear()
        result = k8s_apply.reconcile_monitor(client, stored, None)
        writes = [(r["method"], r["path"]) for r in api.requests if r["method"] != "GET"]
        assert writes == [("PATCH", "/apis/eventing.knative.dev/v1/namespaces/ns/triggers/iris-drift" + APPLY_QUERY)]
        assert not result.status_patched  # it was back before the status was computed


def test_extras_are_deleted_and_a_missing_crd_is_no_error():
    body = inline_example()
    stale = copy.deepcopy(reconcile.desired_children(body, None, None))
    with FakeApiServer() as api:
        for obj in stale:
            api.put(obj)
        api.add_monitor(body)
        api.missing_collections.add("/apis/eventing.knative.dev/v1alpha1/namespaces/ns/kafkasinks")
        body["spec"].pop("drift")
        result = k8s_apply.reconcile_monitor(api.client(), body, None)
        deletes = [r for r in api.requests if r["method"] == "DELETE"]
    assert result.ok
    assert [r["path"] for r in deletes] == ["/apis/eventing.knative.dev/v1/namespaces/ns/triggers/iris-drift",
                                            "/apis/serving.knative.dev/v1/namespaces/ns/services/iris-drift"]
    assert all(r["body"] == {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
               for r in deletes)


def test_apply_failure_is_reported_in_status_and_an_event():
    body = inline_example()
    failing = "/apis/eventing.knative.dev/v1/namespaces/ns/triggers/iris-drift"
    with FakeApiServer() as api:
        api.add_monitor(body)
        api.fail[("PATCH", failing)] = 422
        result = k8s_apply.reconcile_monitor(api.client(), body, None, now="2026-11-22T10:00:00Z")
        patched = [r["path"].split("?")[0] for r in api.requests if r["method"] == "PATCH"]
        events = [r for r in api.requests if r["method"] == "POST"]
    assert result.errors == [f"apply Trigger/iris-drift: 422 refused {failing}"]
    # The other children were still applied.
    assert "/apis/sources.knative.dev/v1/namespaces/ns/pingsources/iris-tick" in patched
    ready = {c["type"]: c for c in result.status["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "ReconcileError" and "iris-drift" in ready["message"]
    [event] = events
    assert event["path"] == "/api/v1/namespaces/ns/events"
    assert event["body"]["reason"] == "ReconcileError" and event["body"]["type"] == "Warning"
    assert event["body"]["involvedObject"] == {"apiVersion": "monitoring.modelmonitor.io/v1alpha1",
                                               "kind": "ModelMonitor", "name": "iris", "namespace": "ns",
                                               "uid": body["metadata"]["uid"]}
    assert manifest_errors(event["body"]) == []
    # The API server validates generateName as a DNS-1123 subdomain once a trailing '-' is
    # masked (apimachinery NameIsDNSSubdomain with prefix=true); "iris." was refused there.
    prefix = event["body"]["metadata"]["generateName"]
    assert prefix.startswith("iris") and re.fullmatch(DNS1123_SUBDOMAIN, prefix[:-1] if prefix.endswith("-") else prefix)


def test_a_refused_event_does_not_fail_the_reconcile():
    body = inline_example()
    body["spec"]["drift"] = {"psi": {"threshold": -1}}
    with FakeApiServer() as api:
        api.add_monitor(body)
        api.fail[("POST", "/api/v1/namespaces/ns/events")] = 422
        result = k8s_apply.reconcile_monitor(api.client(), body, None)
    assert result.status_patched and result.errors == []
    assert {c["type"]: c["status"] for c in result.status["conditions"]}["ConfigValid"] == "False"


def test_invalid_spec_patches_status_and_posts_an_event_but_no_child_request():
    body = inline_example()
    body["spec"]["drift"] = {"psi": {"threshold": -1}}
    with FakeApiServer() as api:
        api.add_monitor(body)
        result = k8s_apply.reconcile_monitor(api.client(), body, None)
        requests = list(api.requests)
        # Once the status says so, a repeat reconcile neither re-patches nor repeats the event.
        api.requests.clear()
        k8s_apply.reconcile_monitor(api.client(), api.objects[STATUS_PATH[:-len("/status")]], None)
        repeat = list(api.requests)
    assert [(r["method"], r["path"]) for r in requests] == [("PATCH", STATUS_PATH),
                                                            ("POST", "/api/v1/namespaces/ns/events")]
    config = requests[0]["body"]["status"]["conditions"][0]
    assert config["type"] == "ConfigValid" and config["status"] == "False"
    assert "spec.drift.psi.threshold" in config["message"]
    assert requests[1]["body"]["reason"] == "InvalidSpec"
    assert "spec.drift.psi.threshold" in requests[1]["body"]["message"]
    assert result.actions == [] and repeat == []


def test_status_patch_nulls_fields_that_went_away():
    body = inline_example()
    with FakeApiServer() as api:
        stored = api.add_monitor(body)
        k8s_apply.reconcile_monitor(api.client(), body, None)
        assert stored["status"]["window"] == "15s"
        broken = copy.deepcopy(stored)
        broken["spec"]["window"] = {"duration": "bad"}
        api.requests.clear()
        k8s_apply.reconcile_monitor(api.client(), broken, None)
        patch = next(r for r in api.requests if r["path"] == STATUS_PATH)["body"]["status"]
    assert patch["window"] is None and patch["drift"] is None
    assert "window" not in stored["status"]


# ---------------------------------------------------------------------------------------------
# kopf wiring (operator/controller.py, run by path)
# ---------------------------------------------------------------------------------------------

def test_controller_registers_handlers_without_finalizers():
    import kopf
    registry = kopf.OperatorRegistry()
    original = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    try:
        spec = importlib.util.spec_from_file_location("modelmonitor_controller", ROOT / "operator" / "controller.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        kopf.set_default_registry(original)
    changing = registry._changing.get_all_handlers()
    reasons = {h.reason.value if h.reason else ("resume" if h.initial else None) for h in changing}
    assert {(h.selector.group, h.selector.any_name) for h in changing} == {(module.GROUP, "modelmonitors")}
    assert reasons == {"create", "update", "resume"}  # no delete: children go by ownerReference GC
    assert not any(h.requires_finalizer for h in changing)
    # No timers or daemons: kopf puts its finalizer on every object they serve (seen on a real
    # API server, tests/apiserver), and a monitor could then not be deleted without the operator.
    assert registry._spawning.get_all_handlers() == []
    activities = {h.id for h in registry._activities.get_all_handlers()}
    assert {"start_drift_correction", "stop_drift_correction"} <= activities
    # A child's ADDED event (the operator just created it) or the initial listing does not
    # reconcile the owner again; this returns before any API call.
    child = {"metadata": {"namespace": "ns", "labels": {render.LABEL_MANAGED_BY: render.MANAGER,
                                                        render.LABEL_MONITOR: "iris"}}}
    for event_type in (None, "ADDED"):
        assert module._owner_changed(child, event_type, None) is None
    watched = {(h.selector.group, h.selector.any_name) for h in registry._watching.get_all_handlers()}
    assert watched == {("serving.knative.dev", "services"), ("eventing.knative.dev", "triggers"),
                       ("sources.knative.dev", "pingsources")}
    for handler in registry._watching.get_all_handlers():
        assert handler.labels == module.CHILD_LABELS
    assert module.PLURAL == "modelmonitors" and module.GROUP == crd()["spec"]["group"]


def test_resync_reconciles_every_monitor_and_skips_those_being_deleted():
    """The periodic drift correction (operator/controller.py): one list of all monitors, then a
    reconcile of each; a child deleted behind the operator's back comes back."""
    body = inline_example()
    dying = copy.deepcopy(body)
    dying["metadata"].update({"name": "dying", "deletionTimestamp": "2026-11-22T10:00:00Z", "uid": "u-dying"})
    with FakeApiServer() as api:
        client = api.client()
        api.add_monitor(body)
        api.add_monitor(dying)
        k8s_apply.reconcile_monitor(client, body, None)
        trigger = "/apis/eventing.knative.dev/v1/namespaces/ns/triggers/iris-drift"
        del api.objects[trigger]
        api.requests.clear()
        results = k8s_apply.resync_all(client)
        assert set(results) == {("ns", "iris")}
        [action] = results[("ns", "iris")].actions
        assert (action.op, action.kind, action.name, action.reason) == ("apply", "Trigger", "iris-drift", "missing")
        assert trigger in api.objects
        assert api.requests[0]["path"] == "/apis/monitoring.modelmonitor.io/v1alpha1/modelmonitors"
        assert not any("/dying" in r["path"] or "monitor%3Ddying" in r["path"] for r in api.requests)
        api.fail[("GET", "/apis/eventing.knative.dev/v1/namespaces/ns/triggers")] = 500
        assert results != k8s_apply.resync_all(client)  # an API error is reported, not raised
        assert "500" in k8s_apply.resync_all(client)[("ns", "iris")]
