"""The event data contract: packaged JSON Schemas, schema_check, and the catalogue in docs/events.md."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest

from modelmonitor.core import events as ev
from modelmonitor.core import schema_check
from modelmonitor.core.schema_check import EventDataError, validate_event, validate_event_data

DOCS = Path(__file__).resolve().parents[1] / "docs" / "events.md"
SCHEMA_DIR = Path(schema_check.__file__).resolve().parent / "schemas"

START = 1_795_341_600_000            # 2026-11-22T10:00:00.000Z
END = START + 15_000


def window() -> dict:
    return {"startMs": START, "endMs": END, "start": "2026-11-22T10:00:00.000Z", "end": "2026-11-22T10:00:15.000Z"}


def numerical_stats() -> dict:
    return {"count": 5, "min": 4.5, "max": 8.1, "mean": 5.9, "stddev": 1.4, "variance": 1.96, "sum": 29.5,
            "percentiles": {"25": 5.0, "50": 5.6, "75": 6.2}, "iqr": 1.2,
            "histogram": {"edges": [4.4, 5.1, 5.8, 6.5, 7.2, 7.9], "counts": [0, 2, 1, 1, 0, 0, 1]}}


def valid_data() -> dict[str, dict]:
    """One valid data document per emitted type (fresh copies on every call)."""
    measured = {"monitor": "iris", "window": window(), "count": 5, "closedAtMs": END + 6_040,
                "measuredAtMs": END + 6_050,
                "features": {"sepal_length": {"psi": {"value": 0.41, "threshold": 0.2, "drifted": True},
                                              "wasserstein": {"value": 0.1, "threshold": 0.5, "drifted": False}},
                             "species_hint": {"chiSquare": {"value": 0.01, "threshold": 0.05, "drifted": False}}}}
    return {
        ev.INSTANCES: {"monitor": "iris", "requestId": "r-1", "kind": "request",
                       "eventTime": "2026-11-22T10:00:03.123Z", "eventTimeMs": START + 3_123,
                       "features": ["sepal_length", "species_hint"],
                       "instances": [[5.1, "a"], [9.8, None]],
                       "loggerType": ev.KSERVE_REQUEST, "loggerSource": "http://localhost:9081/"},
        ev.OUTLIER_DETECTED: {"monitor": "iris", "requestId": "r-1", "eventTimeMs": START + 3_123,
                              "detectedAtMs": START + 3_130,
                              "outliers": [{"instance": 1, "feature": "sepal_length", "value": 9.8, "rule": "zscore",
                                            "score": 4.55, "threshold": 3.0},
                                           {"instance": 1, "feature": "*", "value": None, "rule": "mahalanobis",
                                            "score": 31.7, "threshold": 20.0},
                                           {"instance": 0, "feature": "species_hint", "value": "z",
                                            "rule": "unseen", "score": 1.0, "threshold": 0.0}]},
        ev.WINDOW_CLOSED: {"monitor": "iris", "window": window(), "count": 6, "late": 1,
                           "watermarkMs": END + 10, "closedAtMs": END + 6_040,
                           "features": {"sepal_length": numerical_stats(),
                                        "species_hint": {"count": 5, "categories": {"a": 4, "z": 1},
                                                         "unseenShare": 0.2, "missing": 1}},
                           "covariance": {"features": ["sepal_length"], "matrix": [[1.96]]},
                           "correlation": {"features": ["sepal_length"], "matrix": [[1.0]]}},
        ev.DRIFT_MEASURED: measured,
        ev.DRIFT_DETECTED: dict(copy.deepcopy(measured), severity="warning",
                                reason="1 of 2 features drifted (sepal_length) for 2 consecutive windows",
                                driftedFeatures=["sepal_length"]),
        ev.LATE_INSTANCES: {"monitor": "iris", "requestId": "r-2", "eventTimeMs": START - 2_000,
                            "watermarkMs": START + 500, "lateWindows": [{"startMs": START - 15_000, "endMs": START}],
                            "instances": 2},
        ev.DEAD_LETTER: {"monitor": "iris", "reason": "instances[0]: expected 2 values, got 1", "role": "ingest",
                         "originalType": ev.KSERVE_REQUEST, "originalSource": "http://localhost:9081/",
                         "originalId": "r-3", "originalData": "{\"instances\": [[1]]}", "truncated": False},
        ev.SEGMENTS_EXCESS: {"monitor": "iris", "window": window(), "maxSegments": 2, "requests": 3,
                             "instances": 7, "segments": ["v3", "v4"], "watermarkMs": END + 10,
                             "closedAtMs": END + 6_040},
        ev.SEGMENTS_COMPARED: {"monitor": "iris", "window": window(), "candidate": "v2", "reference": "v1",
                               "candidateCount": 12, "referenceCount": 31, "closedAtMs": END + 6_040,
                               "features": {"sepal_length": {"jensenShannon": {"value": 0.31, "threshold": 0.1,
                                                                               "drifted": True}}}},
    }


def roles() -> dict[str, str]:
    return {ev.INSTANCES: "ingest", ev.OUTLIER_DETECTED: "outlier", ev.WINDOW_CLOSED: "aggregate",
            ev.DRIFT_MEASURED: "drift", ev.DRIFT_DETECTED: "drift", ev.LATE_INSTANCES: "aggregate",
            ev.DEAD_LETTER: "ingest", ev.SEGMENTS_EXCESS: "aggregate",
            ev.SEGMENTS_COMPARED: "aggregate"}


# --------------------------------------------------------------------------- the schema files

def test_every_emitted_type_has_exactly_one_schema_file():
    files = sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
    assert files == sorted(t + ".json" for t in ev.EMITTED_TYPES)
    assert schema_check.known_types() == tuple(sorted(ev.EMITTED_TYPES))


@pytest.mark.parametrize("event_type", ev.EMITTED_TYPES)
def test_schema_is_draft_2020_12_with_the_dataschema_url_as_id(event_type):
    schema = json.loads((SCHEMA_DIR / f"{event_type}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == ev.SCHEMA_BASE + event_type + ".json"
    # The id is what make_event puts in the dataschema attribute.
    assert ev.make_event(event_type, "iris", "x", {})["dataschema"] == schema["$id"]
    assert schema_check.schema_for(event_type) == schema


def test_every_ref_resolves_to_a_packaged_schema():
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in SCHEMA_DIR.glob("*.json"):
        walk(json.loads(path.read_text()))
    external = {r.split("#")[0] for r in refs if not r.startswith("#")}
    assert external == {"io.modelmonitor.window.closed.json", "io.modelmonitor.drift.measured.json"}
    assert all((SCHEMA_DIR / name).is_file() for name in external)


# --------------------------------------------------------------------------- valid data

@pytest.mark.parametrize("event_type", ev.EMITTED_TYPES)
def test_valid_data_passes(event_type):
    validate_event_data(event_type, valid_data()[event_type])


@pytest.mark.parametrize("event_type", ev.EMITTED_TYPES)
def test_added_fields_are_accepted_as_the_version_policy_promises(event_type):
    data = valid_data()[event_type]
    data["someFutureField"] = {"anything": [1, 2]}
    validate_event_data(event_type, data)


def test_empty_window_with_null_statistics_passes():
    data = valid_data()[ev.WINDOW_CLOSED]
    data["count"] = 0
    data["features"] = {
        "sepal_length": {"count": 0, "min": None, "max": None, "mean": None, "stddev": None, "variance": None,
                         "sum": None, "percentiles": {"25": None, "50": None, "75": None}, "iqr": None,
                         "histogram": {"edges": [0.0, 1.0], "counts": [0, 0, 0]}},
        "other": {"count": 0, "min": None, "max": None, "mean": None, "stddev": None, "variance": None,
                  "sum": 0.0, "percentiles": {}, "histogram": None},
        "species_hint": {"count": 0, "categories": {}, "unseenShare": None, "missing": 0}}
    data["covariance"] = None
    data["correlation"] = {"features": ["sepal_length", "other"], "matrix": [[None, None], [None, None]]}
    validate_event_data(ev.WINDOW_CLOSED, data)


def test_response_rows_and_iqr_less_statistics_pass():
    data = valid_data()[ev.INSTANCES]
    data.update(kind="response", features=["species"], instances=[["setosa"], [None]],
                loggerType=ev.KSERVE_RESPONSE)
    validate_event_data(ev.INSTANCES, data)
    window_data = valid_data()[ev.WINDOW_CLOSED]
    del window_data["features"]["sepal_length"]["iqr"]
    window_data["features"]["sepal_length"]["percentiles"] = {"5": 4.6, "99.9": 8.0}
    validate_event_data(ev.WINDOW_CLOSED, window_data)


# --------------------------------------------------------------------------- invalid data

def _set(path, value):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


INVALID = [
    # (type, mutation, path named in the error, words in the reason)
    (ev.WINDOW_CLOSED, _delete(["closedAtMs"]), "data.closedAtMs", "required"),
    (ev.WINDOW_CLOSED, _delete(["features", "sepal_length", "mean"]), "data.features.sepal_length.mean", "required"),
    (ev.WINDOW_CLOSED, _delete(["features", "species_hint", "missing"]), "data.features.species_hint.missing",
     "required"),
    (ev.WINDOW_CLOSED, _delete(["window", "end"]), "data.window.end", "required"),
    (ev.WINDOW_CLOSED, _set(["features", "sepal_length", "histogram", "counts", 2], 2.5),
     "data.features.sepal_length.histogram.counts[2]", "integer"),
    (ev.WINDOW_CLOSED, _set(["features", "sepal_length", "histogram", "counts", 0], "0"),
     "data.features.sepal_length.histogram.counts[0]", "integer"),
    (ev.WINDOW_CLOSED, _set(["count"], -1), "data.count", "minimum"),
    (ev.WINDOW_CLOSED, _set(["late"], -3), "data.late", "minimum"),
    (ev.WINDOW_CLOSED, _set(["features", "species_hint", "categories", "a"], -4),
     "data.features.species_hint.categories.a", "minimum"),
    (ev.WINDOW_CLOSED, _set(["features", "sepal_length", "stddev"], -0.5), "data.features.sepal_length.stddev",
     "minimum"),
    (ev.WINDOW_CLOSED, _set(["features", "sepal_length", "mean"], "5.9"), "data.features.sepal_length.mean",
     "not of type"),
    (ev.WINDOW_CLOSED, _set(["features", "sepal_length", "percentiles", "p25"], 5.0),
     "data.features.sepal_length.percentiles", "does not match"),
    (ev.WINDOW_CLOSED, _set(["features", "species_hint", "unseenShare"], 1.5),
     "data.features.species_hint.unseenShare", "maximum"),
    (ev.WINDOW_CLOSED, _set(["window", "start"], "2026-11-22T10:00:00Z"), "data.window.start", "does not match"),
    (ev.WINDOW_CLOSED, _set(["window", "startMs"], float(START) + 0.5), "data.window.startMs", "integer"),
    (ev.WINDOW_CLOSED, _set(["covariance"], [[1.0]]), "data.covariance", "not of type"),
    (ev.INSTANCES, _set(["eventTimeMs"], "1795341603123"), "data.eventTimeMs", "not of type 'integer'"),
    (ev.INSTANCES, _set(["kind"], "reply"), "data.kind", "is not one of"),
    (ev.INSTANCES, _set(["instances", 0, 0], [5.1]), "data.instances[0][0]", "not of type"),
    (ev.INSTANCES, _set(["features"], []), "data.features", "should be non-empty"),
    (ev.INSTANCES, _delete(["requestId"]), "data.requestId", "required"),
    (ev.OUTLIER_DETECTED, _set(["outliers", 0, "rule"], "sigma"), "data.outliers[0].rule", "is not one of"),
    (ev.OUTLIER_DETECTED, _set(["outliers", 1, "instance"], -1), "data.outliers[1].instance", "minimum"),
    (ev.OUTLIER_DETECTED, _set(["outliers"], []), "data.outliers", "should be non-empty"),
    (ev.OUTLIER_DETECTED, _delete(["outliers", 2, "threshold"]), "data.outliers[2].threshold", "required"),
    (ev.DRIFT_MEASURED, _set(["features", "sepal_length", "entropy"], {"value": 1, "threshold": 1, "drifted": False}),
     "data.features.sepal_length", "is not one of"),
    (ev.DRIFT_MEASURED, _set(["features", "sepal_length", "psi", "drifted"], "yes"),
     "data.features.sepal_length.psi.drifted", "boolean"),
    (ev.DRIFT_MEASURED, _set(["count"], -2), "data.count", "minimum"),
    (ev.DRIFT_DETECTED, _set(["severity"], "info"), "data.severity", "is not one of"),
    (ev.DRIFT_DETECTED, _delete(["measuredAtMs"]), "data.measuredAtMs", "required"),   # via drift.measured
    (ev.DRIFT_DETECTED, _set(["window", "endMs"], "x"), "data.window.endMs", "integer"),  # via window.closed
    (ev.DRIFT_DETECTED, _set(["driftedFeatures"], [7]), "data.driftedFeatures[0]", "not of type"),
    (ev.DRIFT_DETECTED, _set(["driftedMultivariate"], ["mahalanobis"]), "data.driftedMultivariate[0]", "is not one of"),
    (ev.LATE_INSTANCES, _set(["instances"], 0), "data.instances", "minimum"),
    (ev.LATE_INSTANCES, _set(["lateWindows", 0], {"startMs": 0}), "data.lateWindows[0].endMs", "required"),
    (ev.DEAD_LETTER, _set(["role"], "broker"), "data.role", "is not one of"),
    (ev.DEAD_LETTER, _set(["originalData"], "x" * 65_537), "data.originalData", "is too long"),
    (ev.DEAD_LETTER, _delete(["truncated"]), "data.truncated", "required"),
]


@pytest.mark.parametrize("event_type,mutate,path,words", INVALID,
                         ids=[f"{t.split('.', 2)[2]}:{p}:{w}" for t, _, p, w in INVALID])
def test_invalid_data_fails_naming_the_path(event_type, mutate, path, words):
    data = valid_data()[event_type]
    mutate(data)
    with pytest.raises(EventDataError) as caught:
        validate_event_data(event_type, data)
    assert caught.value.path == path
    assert words in caught.value.reason
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(f"{event_type}: {path}: ")


CROSS_FIELD = [
    (ev.INSTANCES, _set(["instances", 1], [9.8]), "data.instances[1]", "1 values but there are 2 features"),
    (ev.INSTANCES, _set(["eventTimeMs"], START), "data.eventTime", "is not eventTimeMs"),
    (ev.WINDOW_CLOSED, _set(["features", "sepal_length", "histogram", "counts"], [0, 2, 1, 1, 0, 1]),
     "data.features.sepal_length.histogram.counts", "6 counts for 6 edges"),
    (ev.WINDOW_CLOSED, _set(["features", "sepal_length", "histogram", "counts"], [0, 2, 1, 1, 0, 0, 2]),
     "data.features.sepal_length.histogram.counts", "sum to 6 but count is 5"),
    (ev.WINDOW_CLOSED, _set(["features", "sepal_length", "histogram", "edges"], [4.4, 5.8, 5.1, 6.5, 7.2, 7.9]),
     "data.features.sepal_length.histogram.edges", "must not decrease"),
    (ev.WINDOW_CLOSED, _set(["window", "endMs"], START), "data.window.endMs", "is not after startMs"),
    (ev.WINDOW_CLOSED, _set(["window", "end"], "2026-11-22T10:00:16.000Z"), "data.window.end", "is not endMs"),
    (ev.WINDOW_CLOSED, _set(["covariance", "matrix"], [[1.0, 0.0]]), "data.covariance.matrix[0]",
     "2 columns for 1 features"),
    (ev.WINDOW_CLOSED, _set(["correlation", "features"], ["a", "b"]), "data.correlation.matrix",
     "1 rows for 2 features"),
    (ev.DRIFT_MEASURED, _set(["window", "startMs"], END + 1), "data.window.endMs", "is not after startMs"),
    (ev.DRIFT_DETECTED, _set(["driftedFeatures"], ["sepal_length", "species_hint"]), "data.driftedFeatures[1]",
     "no drifted score"),
    (ev.LATE_INSTANCES, _set(["lateWindows", 0], {"startMs": START, "endMs": END}), "data.lateWindows[0].endMs",
     "is after watermarkMs"),
    # 30,000 three-byte characters: within the schema's character bound, beyond 64 KiB of UTF-8.
    (ev.DEAD_LETTER, _set(["originalData"], "\u20ac" * 30_000), "data.originalData", "90000 bytes"),
]


@pytest.mark.parametrize("event_type,mutate,path,words", CROSS_FIELD,
                         ids=[f"{t.split('.', 2)[2]}:{p}" for t, _, p, _ in CROSS_FIELD])
def test_cross_field_rules_fail_naming_the_path(event_type, mutate, path, words):
    data = valid_data()[event_type]
    mutate(data)
    with pytest.raises(EventDataError) as caught:
        validate_event_data(event_type, data)
    assert caught.value.path == path
    assert words in caught.value.reason


def test_paths_quote_feature_names_that_are_not_identifiers():
    data = valid_data()[ev.WINDOW_CLOSED]
    data["features"]["petal width (cm)"] = data["features"].pop("sepal_length")
    data["features"]["petal width (cm)"]["histogram"]["counts"][1] = -1
    with pytest.raises(EventDataError) as caught:
        validate_event_data(ev.WINDOW_CLOSED, data)
    assert caught.value.path == 'data.features["petal width (cm)"].histogram.counts[1]'


@pytest.mark.parametrize("data", [None, [], "text", 3])
def test_data_that_is_not_an_object_fails_at_the_root(data):
    with pytest.raises(EventDataError) as caught:
        validate_event_data(ev.WINDOW_CLOSED, data)
    assert caught.value.path == "data"
    assert "not of type 'object'" in caught.value.reason


def test_unknown_type_is_a_value_error_naming_the_known_types():
    with pytest.raises(ValueError) as caught:
        validate_event_data("io.modelmonitor.window.opened", {})
    assert caught.value.path == "type"
    assert "io.modelmonitor.window.closed" in str(caught.value)


def test_validators_are_built_once_per_type():
    schema_check._validator.cache_clear()
    for _ in range(3):
        validate_event_data(ev.LATE_INSTANCES, valid_data()[ev.LATE_INSTANCES])
    info = schema_check._validator.cache_info()
    assert (info.misses, info.hits) == (1, 2)


# --------------------------------------------------------------------------- whole events

@pytest.mark.parametrize("event_type", ev.EMITTED_TYPES)
def test_events_built_by_make_event_pass_validate_event(event_type):
    data = valid_data()[event_type]
    event = ev.make_event(event_type, "iris", "iris/some/id", data,
                          source=ev.source_for("iris", roles()[event_type], "ml"))
    validate_event(event)                                       # a CloudEvent
    validate_event(json.loads(ev.to_json_line(event)))          # its structured JSON form


@pytest.mark.parametrize("attribute,value,words", [
    ("monitor", "wine", "differs from data.monitor"),
    ("source", "/modelmonitor/default/wine/drift", "names monitor 'wine'"),
    ("source", "http://localhost:9081/", "is not /modelmonitor/<namespace>/<monitor>/<role>"),
    ("dataschema", "https://example.com/x.json", "is not 'https://modelmonitor.io/schemas/"),
    ("datacontenttype", "text/plain", "is not 'application/json'"),
    ("id", "", "missing or empty"),
])
def test_validate_event_names_the_bad_attribute(attribute, value, words):
    doc = json.loads(ev.to_json_line(ev.make_event(ev.DRIFT_MEASURED, "iris", "iris/1/2/drift",
                                                   valid_data()[ev.DRIFT_MEASURED],
                                                   source=ev.source_for("iris", "drift"))))
    doc[attribute] = value
    with pytest.raises(EventDataError) as caught:
        validate_event(doc)
    assert caught.value.path == f"attributes.{attribute}"
    assert words in caught.value.reason


def test_validate_event_checks_the_data_too():
    doc = json.loads(ev.to_json_line(ev.make_event(ev.WINDOW_CLOSED, "iris", "iris/1/2",
                                                   valid_data()[ev.WINDOW_CLOSED],
                                                   source=ev.source_for("iris", "aggregate"))))
    doc["data"]["count"] = -5
    with pytest.raises(EventDataError) as caught:
        validate_event(doc)
    assert caught.value.path == "data.count"


# --------------------------------------------------------------------------- the catalogue

def _doc_examples() -> list[dict]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S)]


def test_catalogue_has_one_section_and_one_valid_example_per_type():
    text = DOCS.read_text()
    for event_type in ev.EMITTED_TYPES:
        assert f"\n## {event_type}\n" in text
    examples = _doc_examples()
    assert sorted(e["type"] for e in examples) == sorted(ev.EMITTED_TYPES)
    for example in examples:
        validate_event(example)


def test_catalogue_examples_use_the_documented_ids_and_roles():
    examples = {e["type"]: e for e in _doc_examples()}
    instances = examples[ev.INSTANCES]
    data = instances["data"]
    assert instances["id"] == ev.instances_id("iris", data["loggerType"], data["loggerSource"], data["requestId"])
    window_data = examples[ev.WINDOW_CLOSED]["data"]["window"]
    window_id = ev.window_id("iris", window_data["startMs"], window_data["endMs"])
    assert examples[ev.WINDOW_CLOSED]["id"] == window_id
    assert examples[ev.DRIFT_MEASURED]["id"] == window_id + "/drift"
    assert examples[ev.DRIFT_DETECTED]["id"] == window_id + "/alert"
    assert examples[ev.OUTLIER_DETECTED]["id"] == instances["id"] + "/outliers"
    assert examples[ev.LATE_INSTANCES]["id"].endswith("/late")
    for event_type, role in roles().items():
        assert examples[event_type]["source"] == f"/modelmonitor/default/iris/{role}"


def test_catalogue_states_the_version_policy_of_events_module():
    text = DOCS.read_text()
    assert "## Version suffix policy" in text
    assert "`.v2`" in text and "Adding a field" in text and "one minor release" in text
    assert ".v2" in ev.__doc__ and "Adding a field is not breaking" in ev.__doc__
