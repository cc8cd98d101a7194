"""Rendered manifests (modelmonitor.cluster.render): shape, wiring rules, determinism, and validity
against the upstream schemas in strict mode (unknown fields rejected, as `kubectl
--validate=strict` does; see schema_sources.py for where each schema comes from). Also the
generated files that must not rot: eventing/, operator/install.yaml, requirements.txt.
"""
from __future__ import annotations

import copy
import importlib.metadata as md
import json
import re
from pathlib import Path

import pytest
import yaml

from modelmonitor.core import events

from modelmonitor.cluster import generated, render
from modelmonitor.core.spec import SpecError, load_monitor, parse_monitor
from schema_sources import manifest_errors

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "iris" / "monitor.yaml"
EXAMPLE_BASELINE = ROOT / "examples" / "iris" / "baseline.json"


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

def example_doc() -> dict:
    with open(EXAMPLE, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def example_spec():
    return load_monitor(str(EXAMPLE))


def variant(**spec_changes):
    """The example monitor with spec keys replaced (None deletes), parsed next to its baseline."""
    doc = example_doc()
    for key, value in spec_changes.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return parse_monitor(doc, base_dir=str(EXAMPLE.parent))


KAFKA = {"kafka": {"bootstrapServers": "k1:9092, k2:9092", "topics": {"stats": "s", "outliers": "o", "drift": "d"}}}


def kinds_names(objects):
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def by_name(objects, kind, name):
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name, kinds_names(objects))
    return matches[0]


# ---------------------------------------------------------------------------------------------
# What is rendered
# ---------------------------------------------------------------------------------------------

def test_example_renders_every_child_in_apply_order():
    objects = render.render(example_spec())
    assert kinds_names(objects) == [
        ("ConfigMap", "iris-config"),
        ("Service", "iris-ingest"), ("Service", "iris-outlier"),
        ("Service", "iris-aggregate"), ("Service", "iris-drift"),
        ("Trigger", "iris-ingest-request"), ("Trigger", "iris-ingest-response"),
        ("Trigger", "iris-outlier"), ("Trigger", "iris-aggregate"), ("Trigger", "iris-aggregate-tick"),
        ("Trigger", "iris-drift"),
        ("PingSource", "iris-tick"),
    ]


def test_optional_children_follow_the_spec():
    # No predictions, no drift, outliers off: no response trigger, no drift/outlier function.
    spec = variant(drift=None, outliers={"unseen": False})
    doc = copy.deepcopy(spec.raw)
    doc["spec"]["schema"].pop("predictions")
    spec = parse_monitor(doc, base_dir=str(EXAMPLE.parent))
    names = [n for _, n in kinds_names(render.render(spec))]
    assert names == ["iris-config", "iris-ingest", "iris-aggregate", "iris-ingest-request",
                     "iris-aggregate", "iris-aggregate-tick", "iris-tick"]
    # Outlier rules without a baseline have nothing to compare with: no outlier function.
    no_baseline = variant(drift=None, baseline=None)
    assert "outlier" not in render.roles_for(no_baseline)
    # Kafka sinks add their KafkaSinks (stats, outliers, drift, dead letters) and Triggers.
    names = kinds_names(render.render(variant(sinks=KAFKA)))
    assert names[-8:] == [("Trigger", "iris-sink-stats"), ("Trigger", "iris-sink-outliers"),
                          ("Trigger", "iris-sink-drift"), ("PingSource", "iris-tick"),
                          ("KafkaSink", "iris-stats"), ("KafkaSink", "iris-outliers"), ("KafkaSink", "iris-drift"),
                          ("KafkaSink", "iris-deadletter")]
    # Only the configured topics get a sink.
    names = kinds_names(render.render(variant(sinks={"kafka": {"bootstrapServers": "k:9092", "topics": {"drift": "d"}}})))
    assert [n for n in names if n[0] == "KafkaSink"] == [("KafkaSink", "iris-drift"), ("KafkaSink", "iris-deadletter")]
    assert [n for n in names if n[1].startswith("iris-sink-")] == [("Trigger", "iris-sink-drift")]


def test_labels_namespace_and_owner_reference_on_every_object():
    doc = example_doc()
    doc["metadata"]["namespace"] = "team-a"
    spec = parse_monitor(doc, base_dir=str(EXAMPLE.parent))
    for obj in render.render(spec, owner_uid="uid-123") + render.render(variant(sinks=KAFKA), owner_uid="u"):
        meta = obj["metadata"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "modelmonitor"
        assert labels["app.kubernetes.io/part-of"] == "modelmonitor"
        assert labels["monitoring.modelmonitor.io/monitor"] == "iris"
        assert labels["app.kubernetes.io/component"]
        [owner] = meta["ownerReferences"]
        assert owner["apiVersion"] == "monitoring.modelmonitor.io/v1alpha1" and owner["kind"] == "ModelMonitor"
        assert owner["name"] == "iris" and owner["controller"] is True and owner["blockOwnerDeletion"] is True
    assert {o["metadata"]["namespace"] for o in render.render(spec)} == {"team-a"}
    assert all("ownerReferences" not in o["metadata"] for o in render.render(spec))
    components = {o["metadata"]["name"]: o["metadata"]["labels"]["app.kubernetes.io/component"]
                  for o in render.render(spec)}
    assert components["iris-ingest"] == "ingest" and components["iris-drift"] == "drift"
    assert components["iris-config"] == "config"


def test_function_services_env_probes_resources_and_mounts():
    spec = example_spec()
    objects = render.render(spec, image="registry.local/mm:dev")
    for role in render.ROLES:
        svc = by_name(objects, "Service", f"iris-{role}")
        pod = svc["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["image"] == "registry.local/mm:dev"
        env = {e["name"]: e for e in container["env"]}
        assert env["MODELMONITOR_ROLE"]["value"] == role
        assert env["MODELMONITOR_CONFIG"]["value"] == "/etc/modelmonitor/monitor.yaml"
        assert env["MODELMONITOR_BASELINE"]["value"] == "/etc/modelmonitor/baseline.json"
        assert env["K_SINK"]["value"] == "http://kafka-broker-ingress.knative-eventing.svc.cluster.local/default/default"
        # The Redis URL is never a literal: it comes from the Secret.
        assert "value" not in env["REDIS_URL"]
        assert env["REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "modelmonitor-redis", "key": "url"}}
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/liveness"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["volumeMounts"] == [{"mountPath": "/etc/modelmonitor", "name": "modelmonitor-config",
                                              "readOnly": True}]
        [volume] = pod["volumes"]
        assert volume["projected"]["sources"] == [{"configMap": {"name": "iris-config", "items": [
            {"key": "monitor.yaml", "path": "monitor.yaml"}, {"key": "baseline.json", "path": "baseline.json"}]}}]
    # A custom Redis secret and a baseline kept in the user's own ConfigMap.
    custom = variant(state={"redis": {"urlSecretRef": {"name": "my-redis", "key": "uri"}}},
                     baseline={"configMapRef": {"name": "iris-baseline", "key": "b.json"}})
    svc = by_name(render.render(custom), "Service", "iris-aggregate")
    pod = svc["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "uri"}
    assert pod["volumes"][0]["projected"]["sources"] == [
        {"configMap": {"name": "iris-config", "items": [{"key": "monitor.yaml", "path": "monitor.yaml"}]}},
        {"configMap": {"name": "iris-baseline", "items": [{"key": "b.json", "path": "baseline.json"}]}}]


def test_autoscaling_annotations_and_concurrency():
    spec = variant(functions={
        "ingest": {"minScale": 2, "maxScale": 8, "target": 80, "metric": "rps", "concurrency": 100,
                   "resources": {"limits": {"memory": "1Gi", "cpu": 2}}},
        "outlier": {"metric": "cpu", "target": 70},
        "aggregate": {"minScale": 3},
    })
    objects = render.render(spec)

    def template(role):
        return by_name(objects, "Service", f"iris-{role}")["spec"]["template"]

    ingest = template("ingest")
    assert ingest["metadata"]["annotations"] == {
        "autoscaling.knative.dev/min-scale": "2", "autoscaling.knative.dev/max-scale": "8",
        "autoscaling.knative.dev/target": "80", "autoscaling.knative.dev/metric": "rps"}
    assert ingest["spec"]["containerConcurrency"] == 100
    assert ingest["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert ingest["spec"]["containers"][0]["resources"]["requests"] == render.DEFAULT_RESOURCES["requests"]
    # CPU scaling needs the HPA class; the KPA cannot do it.
    assert template("outlier")["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"
    assert template("aggregate")["metadata"]["annotations"] == {"autoscaling.knative.dev/min-scale": "3"}
    # Defaults: the aggregator keeps one replica alive, the others scale to zero.
    defaults = render.render(example_spec())
    agg = by_name(defaults, "Service", "iris-aggregate")["spec"]["template"]
    assert agg["metadata"]["annotations"] == {"autoscaling.knative.dev/min-scale": "1"}
    assert "annotations" not in by_name(defaults, "Service", "iris-ingest")["spec"]["template"]["metadata"]
    assert "containerConcurrency" not in agg["spec"]


def test_trigger_filters_and_subscribers_are_exact():
    objects = render.render(variant(sinks=KAFKA))
    triggers = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "Trigger"}
    expected = {
        "iris-ingest-request": ({"type": events.KSERVE_REQUEST, "inferenceservicename": "iris"}, "Service", "iris-ingest"),
        "iris-ingest-response": ({"type": events.KSERVE_RESPONSE, "inferenceservicename": "iris"}, "Service", "iris-ingest"),
        "iris-outlier": ({"type": events.INSTANCES, "monitor": "iris"}, "Service", "iris-outlier"),
        "iris-aggregate": ({"type": events.INSTANCES, "monitor": "iris"}, "Service", "iris-aggregate"),
        "iris-aggregate-tick": ({"type": events.PING, "monitor": "iris"}, "Service", "iris-aggregate"),
        "iris-drift": ({"type": events.WINDOW_CLOSED, "monitor": "iris"}, "Service", "iris-drift"),
        "iris-sink-stats": ({"type": events.WINDOW_CLOSED, "monitor": "iris"}, "KafkaSink", "iris-stats"),
        "iris-sink-outliers": ({"type": events.OUTLIER_DETECTED, "monitor": "iris"}, "KafkaSink", "iris-outliers"),
        "iris-sink-drift": ({"type": events.DRIFT_MEASURED, "monitor": "iris"}, "KafkaSink", "iris-drift"),
    }
    assert set(triggers) == set(expected)
    for name, (attributes, kind, target) in expected.items():
        spec = triggers[name]
        assert spec["broker"] == "default"
        assert spec["filter"] == {"attributes": attributes}, name
        api = "serving.knative.dev/v1" if kind == "Service" else "eventing.knative.dev/v1alpha1"
        assert spec["subscriber"] == {"ref": {"apiVersion": api, "kind": kind, "name": target}}, name
    annotations = {o["metadata"]["name"]: o["metadata"].get("annotations") for o in objects if o["kind"] == "Trigger"}
    assert annotations.pop("iris-aggregate") == {"kafka.eventing.knative.dev/delivery.order": "ordered"}
    assert annotations.pop("iris-drift") == {"kafka.eventing.knative.dev/delivery.order": "ordered"}
    assert set(annotations.values()) == {None}
    # The InferenceService name comes from spec.inferenceService, not the monitor's name.
    other = variant(inferenceService="iris-v2")
    request = by_name(render.render(other), "Trigger", "iris-ingest-request")
    assert request["spec"]["filter"]["attributes"]["inferenceservicename"] == "iris-v2"


# What each function emits (its reply and the events it POSTs to K_SINK).
EMITS = {
    "ingest": {events.INSTANCES, events.DEAD_LETTER},
    "outlier": {events.OUTLIER_DETECTED, events.DEAD_LETTER},
    "aggregate": {events.WINDOW_CLOSED, events.LATE_INSTANCES, events.DEAD_LETTER, events.SEGMENTS_EXCESS,
                  events.SEGMENTS_COMPARED},
    "drift": {events.DRIFT_MEASURED, events.DRIFT_DETECTED, events.DEAD_LETTER},
}


def _matches(attributes: dict, event: dict) -> bool:
    return all(event.get(k) == v for k, v in attributes.items())


def test_no_reply_loops():
    """A function's output never matches its own Trigger, and outputs never lead back to the
    function that produced them (the event graph is acyclic)."""
    objects = render.render(variant(sinks=KAFKA, lateEvents=True))
    routes = []  # (filter attributes, subscriber role)
    for obj in objects:
        if obj["kind"] != "Trigger" or obj["spec"]["subscriber"]["ref"]["kind"] != "Service":
            continue
        role = obj["spec"]["subscriber"]["ref"]["name"].removeprefix("iris-")
        routes.append((obj["spec"]["filter"]["attributes"], role))
    assert {role for _, role in routes} == set(render.ROLES)

    def emitted(role):
        # Derived events carry the monitor extension and nothing of the logger's.
        return [{"type": t, "monitor": "iris", "source": events.source_for("iris", role)} for t in EMITS[role]]

    for attributes, role in routes:
        for event in emitted(role):
            assert not _matches(attributes, event), (role, event["type"], attributes)
    # Reachability: starting from each role, following outputs through Triggers never returns.
    graph = {role: {r for a, r in routes for e in emitted(role) if _matches(a, e)} for role in render.ROLES}
    assert graph == {"ingest": {"outlier", "aggregate"}, "outlier": set(), "aggregate": {"drift"}, "drift": set()}
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            nxt = todo.pop()
            assert nxt != start, f"loop through {start}"
            if nxt not in seen:
                seen.add(nxt)
                todo.extend(graph[nxt])


def test_delivery_and_dead_letter_sink():
    def delivery(spec, name="iris-aggregate"):
        return by_name(render.render(spec), "Trigger", name)["spec"]["delivery"]

    # Defaults, no dead letters anywhere to send to: the broker drops after the retries.
    assert delivery(example_spec()) == {"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}
    custom = variant(delivery={"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT1S", "timeout": "PT10S"},
                     deadLetterSink={"uri": "http://dlq.example/"})
    assert delivery(custom) == {"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT1S", "timeout": "PT10S",
                                "deadLetterSink": {"uri": "http://dlq.example/"}}
    # With Kafka sinks and no explicit sink, the monitor's own dead-letter topic is used.
    kafka = variant(sinks=KAFKA)
    for obj in render.render(kafka):
        if obj["kind"] == "Trigger":
            assert obj["spec"]["delivery"]["deadLetterSink"] == {"ref": {
                "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink", "name": "iris-deadletter"}}
    sink = by_name(render.render(kafka), "KafkaSink", "iris-deadletter")
    assert sink["spec"]["topic"] == "iris-deadletter"
    # An explicit sink wins, and then no dead-letter KafkaSink is rendered.
    both = variant(sinks=KAFKA, deadLetterSink={"uri": "http://dlq.example/"})
    assert delivery(both)["deadLetterSink"] == {"uri": "http://dlq.example/"}
    assert ("KafkaSink", "iris-deadletter") not in kinds_names(render.render(both))


def test_ping_source_and_kafka_sinks():
    objects = render.render(variant(sinks=KAFKA, broker="monitoring"))
    ping = by_name(objects, "PingSource", "iris-tick")
    assert ping["spec"] == {
        "schedule": "*/5 * * * * *", "contentType": "application/json", "data": '{"monitor": "iris"}',
        "ceOverrides": {"extensions": {"monitor": "iris"}},
        "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "monitoring"}}}
    assert json.loads(ping["spec"]["data"]) == {"monitor": "iris"}
    for key, topic in (("stats", "s"), ("outliers", "o"), ("drift", "d")):
        sink = by_name(objects, "KafkaSink", f"iris-{key}")
        assert sink["apiVersion"] == "eventing.knative.dev/v1alpha1"
        assert sink["spec"] == {"topic": topic, "bootstrapServers": ["k1:9092", "k2:9092"], "contentMode": "structured"}
    assert all(o["spec"]["broker"] == "monitoring" for o in objects if o["kind"] == "Trigger")
    env = by_name(objects, "Service", "iris-drift")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"]: e.get("value") for e in env}["K_SINK"].endswith("/default/monitoring")


def test_config_map_carries_monitor_and_baseline_never_secrets(tmp_path):
    spec = variant(state={"redis": {"urlSecretRef": {"name": "my-redis", "key": "url"}}})
    cm = render.render(spec)[0]
    assert cm["kind"] == "ConfigMap" and set(cm["data"]) == {"monitor.yaml", "baseline.json"}
    with open(EXAMPLE_BASELINE, encoding="utf-8") as fh:
        assert json.loads(cm["data"]["baseline.json"]) == json.load(fh)
    # The mounted monitor points at the mounted baseline and parses as it is.
    mounted = yaml.safe_load(cm["data"]["monitor.yaml"])
    assert mounted["spec"]["baseline"] == {"file": "/etc/modelmonitor/baseline.json"}
    assert mounted["metadata"] == {"name": "iris", "namespace": "default"}
    parsed = parse_monitor(mounted)
    assert parsed.baseline_ref == {"file": "/etc/modelmonitor/baseline.json"}
    assert parsed.features == spec.features and parsed.window == spec.window and parsed.drift == spec.drift
    # Only a reference to the Secret, never a URL or password.
    text = json.dumps(cm)
    assert "redis://" not in text and "rediss://" not in text and "password" not in text.lower()
    # The same monitor works locally: files written where the ConfigMap is mounted parse as such.
    (tmp_path / "baseline.json").write_text(cm["data"]["baseline.json"])
    local = dict(mounted, spec=dict(mounted["spec"], baseline={"file": str(tmp_path / "baseline.json")}))
    assert render.baseline_document(parse_monitor(local)) == json.loads(cm["data"]["baseline.json"])


def test_functions_load_what_the_config_map_holds(tmp_path, monkeypatch):
    """Mounted as the Services mount it, the ConfigMap is what the functions' loader expects."""
    from modelmonitor.handlers import Monitor
    spec = example_spec()
    cm = render.render(spec)[0]
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text, encoding="utf-8")
    monkeypatch.setenv("MODELMONITOR_CONFIG", str(tmp_path / "monitor.yaml"))
    monkeypatch.setenv("MODELMONITOR_BASELINE", str(tmp_path / "baseline.json"))
    monitor = Monitor.from_env()
    assert monitor.name == "iris" and monitor.spec.drift == spec.drift
    assert set(monitor.edges) == set(spec.feature_names)
    assert monitor.outlier_detector is not None


def test_inline_and_configmap_baselines():
    thesis_baseline = {"descriptive": {"sepal_length": {"avg": 5.8, "stddev": 0.8, "min": 4.3, "max": 7.9}},
                       "distributions": {"sepal_length": {"4.3": 4, "6.1": 9}}}
    cm = render.render(variant(baseline=thesis_baseline))[0]
    assert json.loads(cm["data"]["baseline.json"]) == thesis_baseline
    assert yaml.safe_load(cm["data"]["monitor.yaml"])["spec"]["baseline"] == {"file": "/etc/modelmonitor/baseline.json"}
    ref = render.render(variant(baseline={"configMapRef": {"name": "iris-baseline"}}))[0]
    assert set(ref["data"]) == {"monitor.yaml"}
    none = render.render(variant(baseline=None, drift=None))[0]
    assert set(none["data"]) == {"monitor.yaml"}
    assert "baseline" not in yaml.safe_load(none["data"]["monitor.yaml"])["spec"]
    # An explicit baseline document (what the operator may pass) wins over the spec's.
    override = render.render(example_spec(), baseline_doc={"version": 1, "features": {}})[0]
    assert json.loads(override["data"]["baseline.json"]) == {"version": 1, "features": {}}


def test_render_errors_name_the_field(tmp_path):
    doc = example_doc()
    doc["spec"]["baseline"] = {"file": "missing.json"}
    with pytest.raises(SpecError) as err:
        render.render(parse_monitor(doc, base_dir=str(tmp_path)))
    assert err.value.field == "spec.baseline.file" and "missing.json" in str(err.value)
    (tmp_path / "bad.json").write_text("{not json")
    doc["spec"]["baseline"] = {"file": "bad.json"}
    with pytest.raises(SpecError, match="not JSON"):
        render.render(parse_monitor(doc, base_dir=str(tmp_path)))
    doc = example_doc()
    doc["metadata"]["name"] = "m" * 48
    with pytest.raises(SpecError) as err:
        render.render(parse_monitor(doc, base_dir=str(EXAMPLE.parent)))
    assert err.value.field == "metadata.name"
    doc["metadata"]["name"] = "m" * 47
    assert render.render(parse_monitor(doc, base_dir=str(EXAMPLE.parent)))


def test_output_is_deterministic_and_sorted():
    first = render.render_yaml(example_spec(), owner_uid="u1")
    second = render.render_yaml(example_spec(), owner_uid="u1")
    assert first == second
    docs = list(yaml.safe_load_all(first))
    assert kinds_names(docs) == kinds_names(render.render(example_spec()))

    def keys_sorted(value):
        if isinstance(value, dict):
            return list(value) == sorted(value) and all(keys_sorted(v) for v in value.values())
        if isinstance(value, list):
            return all(keys_sorted(v) for v in value)
        return True

    assert all(keys_sorted(o) for o in render.render(example_spec()))
    assert render.render_monitor_file(str(EXAMPLE)).endswith(render.render_yaml(example_spec()))
    with_image = render.render_monitor_file(str(EXAMPLE), image="example.org/mm:1")
    images = {c["image"] for d in yaml.safe_load_all(with_image) if d["kind"] == "Service"
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"example.org/mm:1"}


def test_rendered_manifests_validate_against_upstream_schemas():
    specs = [example_spec(), variant(sinks=KAFKA, lateEvents=True),
             variant(baseline={"configMapRef": {"name": "iris-baseline"}},
                     deadLetterSink={"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "dlq"}},
                     delivery={"retry": 1, "timeout": "PT5S"},
                     functions={"ingest": {"minScale": 1, "maxScale": 3, "concurrency": 10, "metric": "cpu", "target": 60,
                                           "resources": {"requests": {"cpu": "250m"}}}})]
    seen = set()
    for spec in specs:
        for obj in render.render(spec, owner_uid="0b0e7c1e-1111-2222-3333-444455556666"):
            seen.add(obj["kind"])
            assert manifest_errors(obj) == [], (obj["kind"], obj["metadata"]["name"])
    assert seen == {"ConfigMap", "Service", "Trigger", "PingSource", "KafkaSink"}


def test_strict_validation_rejects_typos():
    """The validators are not vacuous: a misspelt field fails where the schemas are typed."""
    objects = render.render(variant(sinks=KAFKA))
    svc = copy.deepcopy(by_name(objects, "Service", "iris-ingest"))
    svc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert any("imagePullPolicyy" in e for e in manifest_errors(svc))
    ping = copy.deepcopy(by_name(objects, "PingSource", "iris-tick"))
    ping["spec"]["sink"]["reff"] = ping["spec"]["sink"].pop("ref")
    assert manifest_errors(ping)
    sink = copy.deepcopy(by_name(objects, "KafkaSink", "iris-stats"))
    del sink["spec"]["topic"]
    assert manifest_errors(sink)
    cm = copy.deepcopy(objects[0])
    cm["data"]["n"] = 5
    assert manifest_errors(cm)
    cm = copy.deepcopy(objects[0])
    cm["dataa"] = {}
    assert any("dataa" in e for e in manifest_errors(cm))
    trigger = copy.deepcopy(by_name(objects, "Trigger", "iris-drift"))
    trigger["metadata"]["labelz"] = {}
    assert any("labelz" in e for e in manifest_errors(trigger))


# ---------------------------------------------------------------------------------------------
# Generated files that must not rot
# ---------------------------------------------------------------------------------------------

def test_eventing_dir_is_what_render_produces():
    expected = generated.eventing_files(EXAMPLE)
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "eventing").glob("*.yaml")}
    assert set(on_disk) == set(expected), "run: python -m modelmonitor.cluster.render --write-eventing"
    for name, text in expected.items():
        assert on_disk[name] == text, f"eventing/{name} is stale: python -m modelmonitor.cluster.render --write-eventing"
    docs = [d for text in expected.values() for d in yaml.safe_load_all(text)]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Broker") == 1 and kinds.count("PingSource") == 1
    for doc in docs:
        assert manifest_errors(doc) == [], (doc["kind"], doc["metadata"]["name"])
    broker = next(d for d in docs if d["kind"] == "Broker")
    assert broker["metadata"]["annotations"] == {"eventing.knative.dev/broker.class": "Kafka"}
    assert broker["spec"]["config"] == {"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka-broker-config",
                                        "namespace": "knative-eventing"}
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert set(config["data"]) == {"bootstrap.servers", "default.topic.partitions", "default.topic.replication.factor"}
    alert = yaml.safe_load(expected["alert-subscription.yaml"])
    assert alert["spec"]["filter"]["attributes"] == {"type": events.DRIFT_DETECTED, "monitor": "iris"}
    assert alert["spec"]["subscriber"] == {"uri": "http://127.0.0.1:9999/alerts"}


def test_write_eventing_dir_removes_stale_files(tmp_path):
    (tmp_path / "old-monitor-triggers.yaml").write_text("stale")
    (tmp_path / "notes.txt").write_text("kept")
    written = generated.write_eventing_dir(EXAMPLE, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == sorted(p.name for p in written)
    assert (tmp_path / "notes.txt").exists()


def test_install_yaml_is_generated_and_valid():
    text = (ROOT / "operator" / "install.yaml").read_text(encoding="utf-8")
    assert text == generated.render_install(), "run: python -m modelmonitor.cluster.render --write-install"
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["Namespace", "CustomResourceDefinition", "ServiceAccount",
                                         "ClusterRole", "ClusterRoleBinding", "Deployment"]
    for doc in docs:
        assert manifest_errors(doc) == [], doc["kind"]
    deployment = docs[-1]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    command = container["command"]
    assert command[:4] == ["kopf", "run", "--standalone", "--all-namespaces"]
    assert command[-1] == "/app/operator/controller.py"
    liveness = next(a for a in command if a.startswith("--liveness="))
    url = liveness.split("=", 1)[1]
    assert url.endswith(container["livenessProbe"]["httpGet"]["path"])
    assert f":{container['livenessProbe']['httpGet']['port']}/" in url
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["serviceAccountName"] == docs[2]["metadata"]["name"]
    assert deployment["metadata"]["namespace"] == docs[0]["metadata"]["name"] == "modelmonitor-system"
    assert {"name": "MODELMONITOR_IMAGE", "value": render.DEFAULT_IMAGE} in container["env"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_rbac_is_least_privilege():
    docs = list(yaml.safe_load_all((ROOT / "operator" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    grants = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants[(group, resource)] = set(rule["verbs"])
    assert "*" not in json.dumps(role["rules"])
    assert not any(res in ("secrets", "leases", "namespaces") for _, res in grants)
    # Every child kind the operator applies: list (find), create + patch (server-side apply), delete.
    from modelmonitor.cluster.k8s_apply import CHILD_TYPES
    for (api_version, _kind), plural in CHILD_TYPES.items():
        group = api_version.rpartition("/")[0]
        assert {"list", "create", "patch", "delete"} <= grants[(group, plural)], plural
        assert "update" not in grants[(group, plural)] and "deletecollection" not in grants[(group, plural)]
    # kopf watches exactly the kinds that have handlers in operator/controller.py.
    watched = {key for key, verbs in grants.items() if "watch" in verbs}
    assert watched == {("monitoring.modelmonitor.io", "modelmonitors"), ("serving.knative.dev", "services"),
                       ("eventing.knative.dev", "triggers"), ("sources.knative.dev", "pingsources"),
                       ("apiextensions.k8s.io", "customresourcedefinitions")}
    assert grants[("monitoring.modelmonitor.io", "modelmonitors/status")] == {"patch"}
    assert grants[("", "events")] == {"create"}
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_closure() -> set[str]:
    """pyproject runtime dependencies and what they pull in on this platform."""
    import tomllib
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    with open(ROOT / "pyproject.toml", "rb") as fh:
        todo = [Requirement(r).name for r in tomllib.load(fh)["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for raw in md.distribution(name).requires or []:
            req = Requirement(raw)
            if req.marker is not None and not Marker(str(req.marker)).evaluate({"extra": ""}):
                continue
            todo.append(req.name)
    return seen


def test_requirements_pin_the_runtime_closure_as_constraints_do():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[_norm(name)] = version
    lines = [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[-1] == "."
    required = {}
    for line in lines[:-1]:
        name, version = line.split("==")
        required[_norm(name)] = version
    for name, version in required.items():
        assert pins.get(name) == version, f"{name}=={version} differs from constraints.txt"
    missing = _runtime_closure() - set(required)
    assert not missing, f"runtime dependencies missing from requirements.txt: {sorted(missing)}"
    assert not {"pytest", "cel-python", "hypothesis", "scipy", "confluent-kafka"} & set(required)


def test_operator_is_no_package():
    # The operator is run by path: a package named `operator` would shadow the stdlib module.
    assert not (ROOT / "operator" / "__init__.py").exists()


def _doc_yaml_blocks(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    docs = []
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        docs.extend(d for d in yaml.safe_load_all(block) if isinstance(d, dict))
    return docs


def test_cluster_guide_examples_are_valid():
    docs = _doc_yaml_blocks(ROOT / "docs" / "cluster.md")
    kinds = {d.get("kind") for d in docs}
    assert {"InferenceService", "ModelMonitor", "Secret", "Trigger"} <= kinds
    isvc = next(d for d in docs if d.get("kind") == "InferenceService")
    assert manifest_errors(isvc) == []
    logger = isvc["spec"]["predictor"]["logger"]
    assert logger == {"mode": "all", "url": render.broker_url(isvc["metadata"].get("namespace", "default"), "default")}
    assert isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] == "sklearn"
    for doc in docs:
        if doc.get("kind") in ("Trigger", "Secret"):
            assert manifest_errors(doc) == [], doc["kind"]
    monitor = next(d for d in docs if d.get("kind") == "ModelMonitor")
    parse_monitor(copy.deepcopy(monitor))
    from test_operator import crd_errors  # late: test_operator imports this module
    assert crd_errors(monitor) == []
    assert render.render(parse_monitor(monitor))  # a configMapRef baseline needs no local file
    # A wrong logger field would be caught (the KServe schema is strict here).
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["logger"]["modee"] = "all"
    assert manifest_errors(broken)


def test_gitops_output_reads_like_a_hand_written_manifest():
    text = render.render_monitor_file(str(EXAMPLE), image="registry.example/mm:2")
    header = text.split("apiVersion:", 1)[0]
    assert "registry.example/mm:2" in header and "push" in header and "kn func build" in header
    assert "kubectl create secret generic modelmonitor-redis" in header
    docs = list(yaml.safe_load_all(text))
    assert docs == [yaml.safe_load(yaml.safe_dump(o)) for o in render.render(example_spec(), "registry.example/mm:2")]
    for chunk in text.split("\n---\n"):
        body = [line for line in chunk.splitlines() if line and not line.startswith("#")]
        top = [line.split(":")[0] for line in body if not line.startswith(" ")]
        assert top[:3] == ["apiVersion", "kind", "metadata"], top
        meta = body.index("metadata:")
        assert body[meta + 1].startswith("  name: "), body[meta + 1]
    config = text.split("\n---\n")[0]
    assert "  baseline.json: |\n" in config and "  monitor.yaml: |\n" in config
    assert "\\n" not in config                                   # no escaped one-line strings
    cm = docs[0]
    with open(EXAMPLE.parent / "baseline.json") as fh:
        assert json.loads(cm["data"]["baseline.json"]) == json.load(fh)


def test_module_docstring_examples_run():
    import doctest
    from modelmonitor.cluster import manifest_common, wiring
    for module in (render, wiring, manifest_common):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
