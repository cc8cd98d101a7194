"""Thesis ModelMonitor (monitoring.hops.io/v1beta1) -> ours (modelmonitor.cluster.convert), on the
thesis-format Iris monitor in examples/iris/thesis-monitor.yaml."""
from __future__ import annotations

import copy

import pytest
import yaml

from modelmonitor.cluster import render
from modelmonitor.cluster.convert import ConversionError, convert_file, convert_thesis
from modelmonitor.core.spec import SpecError, parse_monitor
from test_operator import crd_errors
from schema_sources import manifest_errors
from test_render import ROOT

THESIS = ROOT / "examples" / "iris" / "thesis-monitor.yaml"


def thesis_doc() -> dict:
    with open(THESIS, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_thesis_example_converts_field_by_field():
    thesis = thesis_doc()
    out = convert_thesis(copy.deepcopy(thesis))
    assert out["apiVersion"] == "monitoring.modelmonitor.io/v1alpha1" and out["kind"] == "ModelMonitor"
    assert out["metadata"] == {"name": "iris", "namespace": "default"}
    spec = out["spec"]
    assert spec["inferenceService"] == "iris"
    assert spec["model"] == {"name": "iris", "id": "iris_1", "version": "1"}
    # Features: the baseline's descriptive keys, in order, numerical.
    assert spec["schema"]["features"] == [{"name": n, "type": "numerical"} for n in
                                          thesis["spec"]["monitoring"]["baseline"]["descriptive"]]
    assert spec["window"] == {"duration": "15s", "slide": "15s", "watermarkDelay": "6s"}
    # Percentiles were strings in the thesis; ours are numbers.
    assert spec["stats"] == {"percentiles": [25, 50, 75], "iqr": True, "stddev": {"type": "sample"},
                             "covariance": {"type": "sample"}, "correlation": {"type": "sample"}}
    assert spec["outliers"] == {"stddev": {"k": 3}, "unseen": False}
    # The thesis' drift detectors, plus its window checks (descriptive: [stddev]) as window rules.
    assert spec["drift"] == {**thesis["spec"]["monitoring"]["drift"],
                             "meanShift": {"threshold": 2}, "stddevRatio": {"threshold": 2}}
    assert spec["baseline"] == thesis["spec"]["monitoring"]["baseline"]
    analysis = thesis["spec"]["storage"]["analysis"]
    assert spec["sinks"] == {"kafka": {
        "bootstrapServers": analysis["stats"]["kafka"]["brokers"],
        "topics": {k: analysis[k]["kafka"]["topic"]["name"] for k in ("stats", "outliers", "drift")}}}
    logger = thesis["spec"]["inferencelogger"]
    assert spec["functions"] == {"ingest": {"minScale": logger["minReplicas"], "maxScale": logger["maxReplicas"],
                                            "target": logger["target"], "metric": logger["metric"]}}
    assert "job" not in spec and "storage" not in spec and "monitoring" not in spec


def test_converted_monitor_parses_validates_and_renders():
    out = convert_thesis(thesis_doc())
    parsed = parse_monitor(copy.deepcopy(out))
    assert parsed.window.duration_ms == 15000 and parsed.window.watermark_delay_ms == 6000
    assert parsed.stats.percentiles == (25.0, 50.0, 75.0) and parsed.stats.iqr
    assert parsed.outliers.stddev_k == 3.0 and not parsed.outliers.range and not parsed.outliers.unseen_category
    assert [(d.name, d.threshold, d.show_all) for d in parsed.drift] == [
        ("wasserstein", 0.5, True), ("kullbackLeibler", 0.5, True), ("jensenShannon", 0.1, True),
        ("meanShift", 2.0, False), ("stddevRatio", 2.0, False)]
    assert parsed.baseline_ref == {"inline": True}
    # It is also a valid object for the cluster: CRD schema and CEL rules.
    assert crd_errors(out) == []
    objects = render.render(parsed, owner_uid="u")
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert ("Service", "iris-outlier") in names and ("Service", "iris-drift") in names
    assert [n for k, n in names if k == "KafkaSink"] == ["iris-stats", "iris-outliers", "iris-drift", "iris-deadletter"]
    sink = next(o for o in objects if o["metadata"]["name"] == "iris-stats" and o["kind"] == "KafkaSink")
    assert sink["spec"]["topic"] == "iris-stats"
    assert sink["spec"]["bootstrapServers"] == ["my-cluster-kafka-bootstrap.kafka:9092"]
    ingest = next(o for o in objects if o["metadata"]["name"] == "iris-ingest" and o["kind"] == "Service")
    assert ingest["spec"]["template"]["metadata"]["annotations"] == {
        "autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "10",
        "autoscaling.knative.dev/target": "80", "autoscaling.knative.dev/metric": "concurrency"}
    # The thesis baseline goes into the ConfigMap as the functions' baseline.json.
    assert yaml.safe_load(objects[0]["data"]["baseline.json"]) == thesis_doc()["spec"]["monitoring"]["baseline"]
    for obj in objects:
        assert manifest_errors(obj) == [], obj["metadata"]["name"]


def test_functions_load_the_converted_monitor(tmp_path, monkeypatch):
    """The thesis baseline travels inline, lands in the ConfigMap and loads in the functions."""
    from modelmonitor.handlers import Monitor
    parsed = parse_monitor(convert_thesis(thesis_doc()))
    cm = render.render(parsed)[0]
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text, encoding="utf-8")
    monkeypatch.setenv("MODELMONITOR_CONFIG", str(tmp_path / "monitor.yaml"))
    monkeypatch.setenv("MODELMONITOR_BASELINE", str(tmp_path / "baseline.json"))
    monitor = Monitor.from_env()
    assert set(monitor.edges) == set(parsed.feature_names)
    assert monitor.outlier_detector is not None


def test_convert_file_prints_yaml_with_notes():
    text = convert_file(str(THESIS))
    assert text.startswith("# Converted by `modelmonitor convert`")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    joined = "\n".join(comments)
    assert "spec.job" in joined and "wasserstein" in joined and "histogram bins" in joined
    assert "spec.inferencelogger.autoscaler" in joined
    assert "stats.mean is the arithmetic mean" in joined
    assert yaml.safe_load(text) == convert_thesis(thesis_doc())
    with pytest.raises(ConversionError) as err:
        convert_file(str(ROOT / "no-such-file.yaml"))
    assert err.value.field == "(file)"


def _thesis(**monitoring_changes) -> dict:
    doc = thesis_doc()
    for key, value in monitoring_changes.items():
        if value is None:
            doc["spec"]["monitoring"].pop(key, None)
        else:
            doc["spec"]["monitoring"][key] = value
    return doc


def test_thesis_variants():
    # max/min mean the range rule; no outliers block means no outlier detection at all.
    ranged = convert_thesis(_thesis(outliers={"descriptive": ["max", "min"]}))
    assert ranged["spec"]["outliers"] == {"range": {}, "unseen": False}
    # ... and, per window, the thesis' max/min checks.
    assert {k: v for k, v in ranged["spec"]["drift"].items() if k.endswith("Baseline")} == {
        "maxAboveBaseline": {"threshold": 0}, "minBelowBaseline": {"threshold": 0}}
    none = parse_monitor(convert_thesis(_thesis(outliers=None)))
    assert not none.outliers.enabled and "outlier" not in render.roles_for(none)
    # Millisecond integers that are not whole seconds stay exact.
    odd = convert_thesis(_thesis(trigger={"window": {"duration": 1500, "slide": 500, "watermarkDelay": 0}}))
    assert odd["spec"]["window"] == {"duration": "1500ms", "slide": "500ms", "watermarkDelay": "0ms"}
    assert parse_monitor(odd).window.slide_ms == 500
    # Without analysis topics there are no sinks; without logger settings no functions block.
    bare = thesis_doc()
    del bare["spec"]["storage"], bare["spec"]["inferencelogger"], bare["spec"]["job"]
    out = convert_thesis(bare)
    assert "sinks" not in out["spec"] and "functions" not in out["spec"]
    # A baseline with only distributions still names the features.
    dist_only = _thesis(baseline={"distributions": {"a": {"0.0": 1}, "b": {"0.0": 2}}})
    assert [f["name"] for f in convert_thesis(dist_only)["spec"]["schema"]["features"]] == ["a", "b"]
    notes: list[str] = []
    convert_thesis(thesis_doc(), notes)
    assert any("create them beforehand" in n for n in notes)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(apiVersion="monitoring.modelmonitor.io/v1alpha1"), "apiVersion"),
    (lambda d: d["spec"]["monitoring"].pop("baseline"), "spec.monitoring.baseline.descriptive"),
    (lambda d: d["spec"]["monitoring"]["trigger"]["window"].pop("duration"), "spec.monitoring.trigger.window.duration"),
    (lambda d: d["spec"]["monitoring"]["stats"]["perc"].update(percentiles=["p25"]),
     "spec.monitoring.stats.perc.percentiles[0]"),
    (lambda d: d["spec"]["monitoring"]["outliers"].update(descriptive=["median"]),
     "spec.monitoring.outliers.descriptive[0]"),
    (lambda d: d["spec"]["monitoring"]["drift"].update(energy={"threshold": 1}), "spec.monitoring.drift.energy"),
    (lambda d: d["spec"]["model"].pop("name"), "spec.model.name"),
    (lambda d: d["spec"]["storage"]["analysis"]["stats"]["kafka"].update(topic={}),
     "spec.storage.analysis.stats.kafka.topic.name"),
])
def test_unconvertible_documents_name_the_thesis_field(mutate, field):
    doc = thesis_doc()
    mutate(doc)
    with pytest.raises(ConversionError) as err:
        convert_thesis(doc)
    assert err.value.field == field


def test_result_is_validated_by_the_parser():
    # A thesis monitor whose result would be invalid is refused with our field name.
    doc = _thesis(trigger={"window": {"duration": 15000, "slide": 20000}})
    with pytest.raises(SpecError) as err:
        convert_thesis(doc)
    assert err.value.field == "spec.window.slide" and not isinstance(err.value, ConversionError)
