"""Where the upstream schemas come from (schema_sources.py): vendored files are the recorded
bytes, a missing or altered one fails loudly, and each source really is strict."""
from __future__ import annotations

import doctest
import hashlib
import shutil

import pytest
import yaml

import schema_sources
from schema_sources import (CRD_FILES, UPSTREAM_DIR, UPSTREAM_SHA256, SchemaFileError, func_yaml_errors,
                            manifest_errors, upstream_file, validator_for)


def test_doctests():
    assert doctest.testmod(schema_sources).failed == 0


def test_every_vendored_file_is_recorded_and_matches():
    on_disk = {str(p.relative_to(UPSTREAM_DIR)) for p in UPSTREAM_DIR.rglob("*")
               if p.is_file() and p.name not in ("README.md", "LICENSE")}
    assert on_disk == set(UPSTREAM_SHA256)
    readme = (UPSTREAM_DIR / "README.md").read_text(encoding="utf-8")
    for name, digest in UPSTREAM_SHA256.items():
        assert hashlib.sha256((UPSTREAM_DIR / name).read_bytes()).hexdigest() == digest, name
        assert digest in readme and name in readme, f"{name}: provenance missing from the README"
        assert upstream_file(name)
    assert {file for file, _ in CRD_FILES.values()} <= set(UPSTREAM_SHA256)


@pytest.fixture
def vendored_copy(tmp_path, monkeypatch):
    """schema_sources reading a private copy of the vendored folder (caches emptied around it)."""
    copy = tmp_path / "upstream-schemas"
    shutil.copytree(UPSTREAM_DIR, copy)
    monkeypatch.setattr(schema_sources, "UPSTREAM_DIR", copy)
    caches = (schema_sources.upstream_file, schema_sources._json_schema_validator, schema_sources._crd_validator)
    for cache in caches:
        cache.cache_clear()
    yield copy
    for cache in caches:
        cache.cache_clear()


def test_missing_file_fails_loudly(vendored_copy):
    (vendored_copy / "knative-func" / "func_yaml-schema.json").unlink()
    with pytest.raises(SchemaFileError, match="missing"):
        validator_for("knative-func/func_yaml-schema.json")
    (vendored_copy / "knative-eventing" / "trigger.yaml").unlink()
    with pytest.raises(SchemaFileError, match="missing"):
        manifest_errors({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": "t"}})


def test_altered_file_fails_loudly(vendored_copy):
    path = vendored_copy / "knative-eventing-kafka-broker" / "100-kafka-sink.yaml"
    path.write_bytes(path.read_bytes().replace(b"- topic", b"- topicc"))
    with pytest.raises(SchemaFileError, match="SHA-256"):
        manifest_errors({"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink",
                         "metadata": {"name": "s"}, "spec": {"topic": "t", "bootstrapServers": ["b:9092"]}})
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))    # what a line-ending conversion does
    with pytest.raises(SchemaFileError, match="SHA-256"):
        upstream_file("knative-eventing-kafka-broker/100-kafka-sink.yaml")
    with pytest.raises(SchemaFileError, match="not a recorded upstream schema"):
        upstream_file("knative-eventing/sinkbindings.yaml")


def test_unknown_kind_is_an_error_not_a_pass():
    with pytest.raises(KeyError):
        manifest_errors({"apiVersion": "example.org/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_built_in_kinds_are_strict_and_typed():
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b"}},
                  "spec": {"selector": {"matchLabels": {"a": "b"}},
                           "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
                           "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{
                               "name": "c", "image": "i", "ports": [{"containerPort": 8080}],
                               "resources": {"limits": {"cpu": 1, "memory": "1Gi"}},
                               "livenessProbe": {"httpGet": {"port": "http", "path": "/"}}}]}}}}
    assert manifest_errors(deployment) == []       # int-or-string and quantities as integers pass
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert any("imagePullPolicyy" in e for e in manifest_errors(deployment))
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"},
            "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": "create"}]}
    assert any("verbs" in e for e in manifest_errors(role))


def test_custom_resources_are_strict_including_metadata():
    service = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"template": {"spec": {"containers": [{"image": "i", "ports": [{"containerPort": 8080}]}]}}}}
    assert manifest_errors(service) == []
    service["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    assert any("containerPort" in e or "8080" in e for e in manifest_errors(service))
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "m"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://b/m"}}}}
    assert manifest_errors(isvc) == []
    assert any("predictor" in e for e in manifest_errors(dict(isvc, spec={})))
    isvc["metadata"]["annotationz"] = {}
    assert any("annotationz" in e for e in manifest_errors(isvc))


def test_func_yaml_schema():
    good = {"specVersion": "0.36.0", "name": "f", "runtime": "python", "created": "2026-11-22T00:00:00Z",
            "run": {"envs": [{"name": "A", "value": "b"}]}}
    assert func_yaml_errors(good) == []
    assert any("created" in e for e in func_yaml_errors({"specVersion": "0.36.0"}))
    assert any("envz" in e for e in func_yaml_errors(dict(good, run={"envz": []})))


def test_every_func_yaml_in_the_repository_is_valid():
    """Each per-role project under functions/ (kn func build reads each); the four roles exist."""
    root = UPSTREAM_DIR.parent.parent
    paths = sorted(root.glob("functions/*/func.yaml"))
    assert {p.parent.name for p in paths} >= {"ingest", "outlier", "aggregate", "drift"}
    for path in paths:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert func_yaml_errors(doc) == [], path
