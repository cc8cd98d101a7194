"""The ModelMonitor CRD (operator/install.yaml) on the real API server code for custom resources:
it is accepted (structural schema, CEL rules within the server's cost limits) and Established,
valid monitors are stored with the server's own defaulting, invalid ones are refused with the
field named, and every CEL rule is seen both passing and failing on the server.

The cases are the ones the pure tests (tests/test_operator.py) check with jsonschema and
cel-python, so a difference between those imitations and the server shows up here.
"""
from __future__ import annotations

import copy
import json

import pytest

from kube import CRD_PATH, established, monitor_crd
from modelmonitor.core.spec import DETECTORS
from test_operator import INVALID, apply_defaults, monitor_schema, with_changes

MONITORS = "/apis/monitoring.modelmonitor.io/v1alpha1/namespaces/crd-test/modelmonitors"
STRICT = "fieldValidation=Strict"  # what kubectl sends: unknown fields are errors, not warnings


def monitor(name: str = "iris", **spec_changes) -> dict:
    doc = with_changes(**spec_changes)
    doc["metadata"] = {"name": name, "namespace": "crd-test"}
    return doc


def create(api, doc: dict) -> tuple[int, dict]:
    status, body = api.call("POST", MONITORS, doc, query=STRICT)
    if status == 201:
        api.ok("DELETE", f"{MONITORS}/{doc['metadata']['name']}")
    return status, body


def refusal(status: int, body: dict) -> str:
    assert status in (400, 422), (status, body)
    assert body.get("kind") == "Status", body
    return body.get("message", "")


def test_crd_is_established_and_discoverable(api):
    name = monitor_crd()["metadata"]["name"]
    assert established(api, name)
    stored = api.get(f"{CRD_PATH}/{name}")
    conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert conditions.get("NamesAccepted") == "True"
    assert "NonStructuralSchema" not in conditions  # the server found the schema structural
    assert stored["status"]["acceptedNames"]["shortNames"] == ["mm"]
    groups = {g["name"]: g for g in api.get("/apis")["groups"]}
    assert groups["monitoring.modelmonitor.io"]["preferredVersion"]["version"] == "v1alpha1"
    resources = api.get("/apis/monitoring.modelmonitor.io/v1alpha1")["resources"]
    assert {r["name"] for r in resources} == {"modelmonitors", "modelmonitors/status"}


def test_the_server_refuses_a_crd_over_the_cel_cost_limit(api):
    """The cost check is live on this server: a rule that is quadratic over an unbounded list
    of unbounded strings is refused at CRD creation; the ModelMonitor CRD passed the same check."""
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "costlies.cost.apiserver-test.modelmonitor.io"},
           "spec": {"group": "cost.apiserver-test.modelmonitor.io", "scope": "Namespaced",
                    "names": {"kind": "Costly", "plural": "costlies"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {
                            "type": "object",
                            "x-kubernetes-validations": [{"rule": "self.names.all(a, self.names.exists_one(b, b == a))"}],
                            "properties": {"names": {"type": "array", "items": {"type": "string"}}}}}}}}]}}
    status, body = api.call("POST", CRD_PATH, crd)
    assert status == 422, body
    assert "cost" in body["message"] and "spec.validation.openAPIV3Schema.properties[spec]" in body["message"].replace(
        "spec.versions[0].schema.openAPIV3Schema", "spec.validation.openAPIV3Schema"), body["message"]


VALID = {
    "example": {},
    "int-window": {"window": {"duration": 15000, "slide": 5000, "watermarkDelay": 6000}},
    "mixed-window": {"window": {"duration": "1m", "slide": 15000}},
    "string-ms-window": {"window": {"duration": "90000", "slide": "1.5m"}},
    "day-window": {"window": {"duration": "1d", "slide": "1h"}},
    "configmap-baseline": {"baseline": {"configMapRef": {"name": "iris-baseline", "key": "b.json"}}},
    "inline-baseline": {"baseline": {"descriptive": {"x": {"avg": 1}}, "distributions": {"x": {"0.0": 1}}}},
    "functions": {"functions": {"aggregate": {"minScale": 1, "maxScale": 4, "target": 50},
                                "ingest": {"minScale": 2, "maxScale": 0,
                                           "resources": {"limits": {"cpu": 2, "memory": "1Gi"}}}}},
    "delivery": {"deadLetterSink": {"uri": "http://dlq/"}, "delivery": {"retry": 0, "backoffDelay": "PT1M0.5S"}},
    "kafka": {"sinks": {"kafka": {"bootstrapServers": "k:9092", "topics": {"drift": "d"}}}},
    # The CRD's bounds at their maximum: the CEL rules stay within the per-call cost limit.
    "max-schema": {"schema": {"features": [{"name": f"f{i:03d}-" + "x" * 248} for i in range(256)],
                              "predictions": [{"name": f"p{i:03d}-" + "y" * 248} for i in range(64)]}},
}


@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_monitors_are_stored_with_the_servers_defaults(api, case):
    doc = monitor(name=f"valid-{case}", **copy.deepcopy(VALID[case]))
    status, body = api.call("POST", MONITORS, doc, query=STRICT)
    assert status == 201, body.get("message")
    try:
        # The server's defaulting is what the pure tests' apply_defaults imitates.
        assert body["spec"] == apply_defaults(monitor_schema(), json.loads(json.dumps(doc)))["spec"]
    finally:
        api.ok("DELETE", f"{MONITORS}/{doc['metadata']['name']}")


# Where the server names a different field than parse_monitor does for the same problem.
SERVER_FIELD = {  # duplicate list-map keys: the server names the entry
    "spec.schema.features[2].name": "spec.schema.features[2]",
    "spec.schema.predictions[1].name": "spec.schema.predictions[1]",
}


@pytest.mark.parametrize("changes, _crd_says, field", INVALID, ids=[c[2] + ":" + c[1][:24] for c in INVALID])
def test_invalid_monitors_are_refused_naming_the_field(api, changes, _crd_says, field):
    doc = monitor(name="invalid", **copy.deepcopy(changes))
    message = refusal(*create(api, doc))
    expected = SERVER_FIELD.get(field, field)
    if changes.get("schema", 1) is None:
        expected = "spec.schema"  # the server names the missing object, the parser its first field
    assert expected in message, message


def test_a_too_long_name_is_refused_by_the_cel_rule_on_metadata(api):
    message = refusal(*create(api, monitor(name="m" * 48)))
    assert "metadata.name must be at most 47 characters" in message, message
    status, _ = create(api, monitor(name="m" * 47))
    assert status == 201


# Every CEL rule of the CRD: (node, message) -> (changes that pass it, changes that fail it).
_OK_THRESHOLD = {"threshold": 0.0}
CEL_CASES = {
    ("", "metadata.name must be at most 47"): None,  # test_a_too_long_name_is_refused_by_the_cel_rule_on_metadata
    (".spec", "drift detectors need a baseline"): (
        {"baseline": None, "drift": {}}, {"baseline": None}),
    (".spec.baseline", "give exactly one of file, configMapRef"): (
        {"baseline": {"configMapRef": {"name": "b"}}},
        {"baseline": {"configMapRef": {"name": "b"}, "descriptive": {"x": {"avg": 1}}}}),
    (".spec.deadLetterSink", "a destination needs uri or ref"): (
        {"deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "dlq"}}}, {"deadLetterSink": {}}),
    **{(f".spec.drift.{d}", "threshold must not be negative"): (
        {"drift": {d: dict(_OK_THRESHOLD)}}, {"drift": {d: {"threshold": -0.5}}})
       for d in DETECTORS},
    **{(f".spec.functions.{r}", "minScale must not exceed maxScale"): (
        {"functions": {r: {"minScale": 2, "maxScale": 2}}}, {"functions": {r: {"minScale": 3, "maxScale": 2}}})
       for r in ("aggregate", "drift", "ingest", "outlier")},
    (".spec.schema", "prediction names must differ"): (
        {"schema": {"features": [{"name": "a"}], "predictions": [{"name": "p"}]}},
        {"schema": {"features": [{"name": "a"}], "predictions": [{"name": "a"}]}}),
    (".spec.window", "duration must be greater than zero"): (
        {"window": {"duration": "1ms"}}, {"window": {"duration": "0.0s"}}),
    (".spec.window", "slide must be greater than zero"): (
        {"window": {"duration": "1s", "slide": 1}}, {"window": {"duration": "1s", "slide": 0}}),
    (".spec.window", "idleTimeout must be greater than zero"): (
        {"window": {"duration": "1s", "idleTimeout": "1s"}}, {"window": {"duration": "1s", "idleTimeout": "00"}}),
    (".spec.window", "slide must not be larger than duration"): (
        {"window": {"duration": "1m", "slide": "60000"}}, {"window": {"duration": "1m", "slide": "60001"}}),
}


def _rules(node: dict, path: str = ""):
    for rule in node.get("x-kubernetes-validations") or []:
        yield path, rule
    for name, sub in (node.get("properties") or {}).items():
        yield from _rules(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _rules(node[key], path)


def _case_for(path: str, message: str):
    matches = [k for k in CEL_CASES if k[0] == path and message.startswith(k[1])]
    assert len(matches) == 1, f"no single case for the CEL rule at {path or '<root>'}: {message}"
    return matches[0]


def test_every_cel_rule_of_the_crd_has_a_case():
    rules = list(_rules(monitor_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
    assert len(rules) == len(CEL_CASES) == len({_case_for(p, r["message"]) for p, r in rules})


@pytest.mark.parametrize("key", [k for k, v in CEL_CASES.items() if v], ids=lambda k: f"{k[0]}:{k[1][:30]}")
def test_cel_rule_passes_and_fails_on_the_server(api, key):
    path, message_start = key
    passing, failing = CEL_CASES[key]
    [rule] = [r for p, r in _rules(monitor_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
              if p == path and r["message"].startswith(message_start)]
    status, body = create(api, monitor(name="cel-pass", **copy.deepcopy(passing)))
    assert status == 201, body.get("message")
    message = refusal(*create(api, monitor(name="cel-fail", **copy.deepcopy(failing))))
    assert rule["message"] in message, message
    field = path.lstrip(".") + rule.get("fieldPath", "")
    assert f"{field}: Invalid value" in message, message
