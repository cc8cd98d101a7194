"""The upstream schemas the tests validate against, strict (unknown fields rejected, as
`kubectl --validate=strict` does), with nothing needed outside the repository.

Where each schema comes from:

- Kubernetes built-in kinds (core/v1, apps/v1, RBAC, apiextensions, events) of Kubernetes
  `KUBERNETES_VERSION`: the strict JSON Schemas of the pinned `kubernetes-validate` package.
- Knative Serving Service, Eventing Broker/Trigger/PingSource, the KafkaSink, the KServe
  InferenceService and knative-func's func.yaml schema: the upstream files themselves, vendored
  byte for byte in `tests/upstream-schemas/` (provenance and license in its README). Each is
  checked against its SHA-256 in `UPSTREAM_SHA256` before use; a missing or altered file raises
  `SchemaFileError`, so a test fails loudly rather than validating against nothing.

The only hand-written part is `strict()`: a CRD's openAPIV3Schema accepts unknown keys (the API
server prunes them), so strictness is added the way the API server's structural schema defines it.

>>> errors = manifest_errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
...                           "dataa": {}})
>>> "dataa" in errors[0]
True
>>> validator_for("knative-func/func_yaml-schema.json").is_valid({"specVersion": "0.36.0"})
False
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

UPSTREAM_DIR = Path(__file__).resolve().parent / "upstream-schemas"
KUBERNETES_VERSION = "1.35"
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KServe CRD is 2 MB

# Recorded when the files were vendored; also listed in tests/upstream-schemas/README.md.
UPSTREAM_SHA256 = {
    "knative-eventing/broker.yaml": "12514b62f568d9802519d29885fb222bfc5f5f6e97825d4dab42f29ea110edd3",
    "knative-eventing/trigger.yaml": "fdf6c668d4fa1182bbceb417a70ceeccd9bfc1bf893f2fddf247933dcec6a5f1",
    "knative-eventing/pingsource.yaml": "8586d3e05984e71de42289521fd33a03e84a391e890d6ab83ffa5aab9d77a1cf",
    "knative-eventing-kafka-broker/100-kafka-sink.yaml":
        "7e65c5ae371b01fab2f3bca541f4ac2050f074ddded4190e90067bcc97d58acb",
    "knative-serving/service.yaml": "2df2faa748f4d8e9470a2a5e9f208d7310aa89fc8cad1f2b1b9941fefe3def33",
    "knative-func/func_yaml-schema.json": "b7c59580bb4a21d155425d63524297aaf43e01e5c49fcfa622f797fd261634c9",
    "kserve/serving.kserve.io_inferenceservices.yaml":
        "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff",
}

# Custom resources: (apiVersion, kind) -> (vendored CRD file, version in it).
CRD_FILES = {
    ("serving.knative.dev/v1", "Service"): ("knative-serving/service.yaml", "v1"),
    ("eventing.knative.dev/v1", "Trigger"): ("knative-eventing/trigger.yaml", "v1"),
    ("eventing.knative.dev/v1", "Broker"): ("knative-eventing/broker.yaml", "v1"),
    ("sources.knative.dev/v1", "PingSource"): ("knative-eventing/pingsource.yaml", "v1"),
    ("eventing.knative.dev/v1alpha1", "KafkaSink"): ("knative-eventing-kafka-broker/100-kafka-sink.yaml", "v1alpha1"),
    ("serving.kserve.io/v1beta1", "InferenceService"): ("kserve/serving.kserve.io_inferenceservices.yaml", "v1beta1"),
}


class SchemaFileError(RuntimeError):
    """A vendored upstream schema is missing, unknown or not the recorded bytes."""


@functools.lru_cache(maxsize=None)
def upstream_file(name: str) -> bytes:
    """The bytes of one vendored upstream schema file, after checking its SHA-256."""
    if name not in UPSTREAM_SHA256:
        raise SchemaFileError(f"{name}: not a recorded upstream schema (known: {sorted(UPSTREAM_SHA256)})")
    path = UPSTREAM_DIR / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SchemaFileError(f"{path}: upstream schema missing from the repository") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != UPSTREAM_SHA256[name]:
        raise SchemaFileError(f"{path}: SHA-256 {digest}, expected {UPSTREAM_SHA256[name]}")
    return data


def validator_for(name: str) -> jsonschema.Draft4Validator:
    """A validator for a vendored JSON Schema file, e.g. "knative-func/func_yaml-schema.json"
    (draft-04, every object already closed upstream)."""
    return _json_schema_validator(name)


@functools.lru_cache(maxsize=None)
def _json_schema_validator(name: str) -> jsonschema.Draft4Validator:
    schema = json.loads(upstream_file(name))
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def func_yaml_errors(doc) -> list[str]:
    """Errors of a loaded func.yaml against knative-func's schema ([] when valid). Load it with
    yaml.safe_load and quote `created`: unquoted, YAML 1.1 makes it a datetime, not a string."""
    validator = validator_for("knative-func/func_yaml-schema.json")
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def strict(node, cr_root: bool = False):
    """A copy of a schema where every object node with properties rejects unknown keys (unless
    it preserves unknown fields); at a custom resource's root apiVersion/kind/metadata stay allowed.

    >>> strict({"type": "object", "properties": {"a": {"type": "object", "properties": {}}}})["additionalProperties"]
    False
    """
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("anyOf", "allOf", "oneOf", "items") and isinstance(value, list):
            out[key] = [strict(sub) for sub in value]
        else:
            out[key] = value
    if cr_root:
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_version_schema(crd: dict, version: str) -> dict:
    """openAPIV3Schema of one version of a CustomResourceDefinition document."""
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd['metadata']['name']}: no version {version}")


@functools.lru_cache(maxsize=None)
def _crd_validator(name: str, version: str) -> jsonschema.Draft4Validator:
    docs = [d for d in yaml.load_all(upstream_file(name), Loader=YAML_LOADER) if d]
    crd = next(d for d in docs if d.get("kind") == "CustomResourceDefinition")
    return jsonschema.Draft4Validator(strict(crd_version_schema(crd, version), cr_root=True))


def kubernetes_errors(obj: dict) -> list[str]:
    """Strict errors of a built-in Kubernetes object, from kubernetes-validate (its first error:
    the package reports one). KeyError when it has no schema for the kind."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as err:
        raise KeyError(err.message) from None
    except kubernetes_validate.ValidationError as err:
        return [f"{list(err.absolute_path)}: {err.message}"]
    return []


def manifest_errors(obj: dict) -> list[str]:
    """Strict-schema errors of one manifest ([] when valid). Custom resources' metadata is
    checked as ObjectMeta too (their CRDs only say `type: object`)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRD_FILES:
        return kubernetes_errors(obj)
    validator = _crd_validator(*CRD_FILES[key])
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]
    # ObjectMeta is the same type in every kind: check it through a ConfigMap that carries it.
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
    return errors + kubernetes_errors(carrier)
