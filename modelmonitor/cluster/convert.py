"""Convert a thesis ModelMonitor (``monitoring.hops.io/v1beta1``) into ours.

The thesis' resource (its appendix A) nests everything under ``spec.monitoring`` and
``spec.storage``; ours is flat (DESIGN section 5). What maps:

- spec.model {name, id, version} -> spec.model; spec.inferenceService = model.name
- monitoring.trigger.window {duration, slide, watermarkDelay} (ms) -> spec.window ('15s' strings, exact)
- monitoring.stats {stddev, perc, cov, corr, ...} -> spec.stats (perc -> percentiles + iqr)
- monitoring.outliers.descriptive [max, min, stddev] -> spec.outliers {range, stddev {k: 3}} per
  instance, and the thesis' window checks (DescriptiveStatsDetector) as drift window rules:
  max -> maxAboveBaseline, min -> minBelowBaseline, stddev/avg/mean -> meanShift {threshold: 2}
  and stddevRatio {threshold: 2}
- monitoring.drift {wasserstein, kullbackLeibler, jensenShannon} -> spec.drift (threshold, showAll)
- monitoring.baseline {descriptive, distributions} -> spec.baseline, inline in thesis form
- the baseline's descriptive keys -> spec.schema.features (numerical, in that order)
- storage.analysis.{stats,outliers,drift}.kafka -> spec.sinks.kafka {bootstrapServers, topics}
- inferencelogger {minReplicas, maxReplicas, target, metric} -> spec.functions.ingest

What has no counterpart (Spark ``job`` settings, the inference Kafka topic, which the Kafka
Broker replaces, autoscaler windows) is dropped with a note. The result passes
:func:`modelmonitor.core.spec.parse_monitor`.

>>> out = convert_thesis({"apiVersion": "monitoring.hops.io/v1beta1", "kind": "ModelMonitor",
...     "metadata": {"name": "iris"}, "spec": {"model": {"name": "iris", "version": 1},
...     "monitoring": {"trigger": {"window": {"duration": 15000, "slide": 15000, "watermarkDelay": 6000}},
...                    "stats": {}, "baseline": {"descriptive": {"x": {"avg": 1.0}}}}}})
>>> out["spec"]["window"], out["spec"]["schema"]["features"]
({'duration': '15s', 'slide': '15s', 'watermarkDelay': '6s'}, [{'name': 'x', 'type': 'numerical'}])
"""
from __future__ import annotations

import copy
from typing import Any

import yaml

from modelmonitor.core.spec import API_VERSION, KIND, DETECTORS, SpecError, format_duration, parse_duration, parse_monitor

THESIS_API = "monitoring.hops.io/v1beta1"
THESIS_DETECTORS = ("wasserstein", "kullbackLeibler", "jensenShannon")
THESIS_DESCRIPTIVE = ("max", "min", "stddev", "avg", "mean")
# inferencelogger key -> spec.functions.ingest key
LOGGER_SCALING = {"minReplicas": "minScale", "maxReplicas": "maxScale", "target": "target", "metric": "metric"}


class ConversionError(SpecError):
    """A thesis document that cannot be converted; ``field`` is the thesis field."""


def _mapping(value: Any, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConversionError(path, f"expected a mapping, got {type(value).__name__}")
    return value


def _window(trigger: dict, notes: list[str]) -> dict:
    window = _mapping(trigger.get("window"), "spec.monitoring.trigger.window")
    if "duration" not in window:
        raise ConversionError("spec.monitoring.trigger.window.duration", "is required")
    out = {}
    for key in ("duration", "slide", "watermarkDelay"):
        if key in window:
            ms = parse_duration(window[key], f"spec.monitoring.trigger.window.{key}")
            out[key] = format_duration(ms)
    extra = sorted(set(window) - {"duration", "slide", "watermarkDelay"})
    if extra:
        notes.append(f"spec.monitoring.trigger.window.{extra[0]}: no counterpart, dropped")
    return out


def _stats(stats: dict, notes: list[str]) -> dict:
    out: dict = {}
    perc = _mapping(stats.get("perc"), "spec.monitoring.stats.perc")
    if "percentiles" in perc:
        values = []
        for i, p in enumerate(perc["percentiles"] or []):
            try:
                # The thesis wrote percentiles as strings ("25"); ours are numbers.
                number = float(p)
            except (TypeError, ValueError):
                raise ConversionError(f"spec.monitoring.stats.perc.percentiles[{i}]", f"{p!r} is not a number") from None
            values.append(int(number) if number.is_integer() else number)
        out["percentiles"] = values
    if "iqr" in perc:
        out["iqr"] = bool(perc["iqr"])
    for old, new in (("stddev", "stddev"), ("cov", "covariance"), ("corr", "correlation")):
        block = stats.get(old)
        if isinstance(block, dict):
            out[new] = {"type": block["type"]} if "type" in block else {}
    if "cov" not in stats or "corr" not in stats:
        notes.append("covariance and correlation are always computed here (the thesis made them optional)")
    if "mean" in stats:
        notes.append("stats.mean is the arithmetic mean here (the thesis computed (max-min)/count under that name)")
    return out


def _outliers(outliers: dict, notes: list[str]) -> dict:
    descriptive = outliers.get("descriptive") or []
    if not isinstance(descriptive, list):
        raise ConversionError("spec.monitoring.outliers.descriptive", "expected a list of stat names")
    out: dict = {}
    for i, name in enumerate(descriptive):
        if name not in THESIS_DESCRIPTIVE:
            raise ConversionError(f"spec.monitoring.outliers.descriptive[{i}]",
                                  f"unknown outlier stat {name!r} (max, min, stddev)")
        if name in ("max", "min"):
            out["range"] = {}
        else:
            out["stddev"] = {"k": 3}
    # The thesis had no categorical features, so no unseen-category rule to keep.
    out["unseen"] = False
    return out


def _window_rules(outliers: dict) -> dict:
    """The thesis flagged a window whose max/min/mean/stddev left the baseline's: keep those checks."""
    rules: dict = {}
    for name in outliers.get("descriptive") or []:
        if name == "max":
            rules["maxAboveBaseline"] = {"threshold": 0}
        elif name == "min":
            rules["minBelowBaseline"] = {"threshold": 0}
        elif name in ("stddev", "avg", "mean"):
            rules["meanShift"] = {"threshold": 2}
            rules["stddevRatio"] = {"threshold": 2}
    return rules


def _drift(drift: dict, notes: list[str]) -> dict:
    out = {}
    for name, cfg in drift.items():
        if name not in DETECTORS:
            raise ConversionError(f"spec.monitoring.drift.{name}", "unknown drift detector")
        cfg = _mapping(cfg, f"spec.monitoring.drift.{name}")
        out[name] = {k: cfg[k] for k in ("threshold", "showAll") if k in cfg}
        if name == "wasserstein":
            notes.append("drift.wasserstein is in the feature's units here (the thesis measured it in "
                         "histogram bins): review its threshold, or use wassersteinNorm")
    return out


def _features(baseline: dict) -> list[dict]:
    source = baseline.get("descriptive") or baseline.get("distributions")
    if not isinstance(source, dict) or not source:
        raise ConversionError("spec.monitoring.baseline.descriptive",
                              "features are taken from the baseline's descriptive statistics; none found")
    # The thesis had numerical features only, in the order its baseline lists them.
    return [{"name": str(name), "type": "numerical"} for name in source]


def _sinks(storage: dict, notes: list[str]) -> dict:
    analysis = _mapping(storage.get("analysis"), "spec.storage.analysis")
    topics, servers, sized = {}, [], []
    for key in ("stats", "outliers", "drift"):
        kafka = _mapping(_mapping(analysis.get(key), f"spec.storage.analysis.{key}").get("kafka"),
                         f"spec.storage.analysis.{key}.kafka")
        if not kafka:
            continue
        topic = kafka.get("topic")
        name = topic.get("name") if isinstance(topic, dict) else topic
        if not isinstance(name, str) or not name:
            raise ConversionError(f"spec.storage.analysis.{key}.kafka.topic.name", "a topic name is required")
        topics[key] = name
        if kafka.get("brokers"):
            servers.append(str(kafka["brokers"]))
        if isinstance(topic, dict) and ({"partitions", "replicationFactor"} & set(topic)):
            sized.append(key)
    if sized:
        notes.append(f"topic partitions/replicationFactor of {', '.join(sized)}: the KafkaSinks do not create "
                     "topics, create them beforehand with those settings")
    if not topics:
        return {}
    if not servers:
        raise ConversionError("spec.storage.analysis.stats.kafka.brokers", "bootstrap servers are required")
    if len(set(servers)) > 1:
        notes.append(f"the analysis topics used different brokers; all now use {servers[0]}")
    if storage.get("inference"):
        notes.append("spec.storage.inference: logger events now go through the Knative Kafka Broker "
                     "(set the InferenceService logger url to the monitor's status.loggerUrl)")
    return {"kafka": {"bootstrapServers": servers[0], "topics": topics}}


def _ingest_function(logger: dict, notes: list[str]) -> dict:
    out = {}
    for old, new in LOGGER_SCALING.items():
        if logger.get(old) is not None:
            out[new] = logger[old]
    resources = logger.get("resources")
    if isinstance(resources, dict):
        out["resources"] = {k: dict(v) for k, v in resources.items() if k in ("requests", "limits") and isinstance(v, dict)}
    dropped = sorted(set(logger) - set(LOGGER_SCALING) - {"resources"})
    if dropped:
        notes.append(f"spec.inferencelogger.{', '.join(dropped)}: no counterpart (Knative defaults apply)")
    return out


def convert_thesis(doc: dict, notes: list[str] | None = None) -> dict:
    """Our ModelMonitor for a thesis one; ``notes`` (if given) collects what did not carry over.

    Raises ConversionError (a SpecError) naming the thesis field when the input cannot be
    converted, and SpecError when the result would not validate.
    """
    notes = notes if notes is not None else []
    if not isinstance(doc, dict):
        raise ConversionError("(document)", "expected a ModelMonitor mapping")
    if doc.get("apiVersion") != THESIS_API:
        raise ConversionError("apiVersion", f"{doc.get('apiVersion')!r} is not {THESIS_API}")
    if doc.get("kind", KIND) != KIND:
        raise ConversionError("kind", f"{doc.get('kind')!r} is not {KIND}")
    meta = _mapping(doc.get("metadata"), "metadata")
    spec = _mapping(doc.get("spec"), "spec")
    model = _mapping(spec.get("model"), "spec.model")
    if not isinstance(model.get("name"), str) or not model["name"]:
        raise ConversionError("spec.model.name", "is required")
    monitoring = _mapping(spec.get("monitoring"), "spec.monitoring")
    baseline = _mapping(monitoring.get("baseline"), "spec.monitoring.baseline")

    out_meta = {"name": meta.get("name")}
    if meta.get("namespace"):
        out_meta["namespace"] = meta["namespace"]
    out_model = {"name": model["name"]}
    if model.get("id") is not None:
        out_model["id"] = str(model["id"])
    if model.get("version") is not None:
        out_model["version"] = str(model["version"])
    out_spec: dict = {
        # The thesis linked the model through its own logger URL; ours matches the logger's
        # inferenceservicename, which is the InferenceService's (usually the model's) name.
        "inferenceService": model["name"],
        "model": out_model,
        "schema": {"features": _features(baseline)},
        "window": _window(_mapping(monitoring.get("trigger"), "spec.monitoring.trigger"), notes),
    }
    notes.append(f"spec.inferenceService is the model name {model['name']!r}: change it if the "
                 "InferenceService is named differently")
    stats = _stats(_mapping(monitoring.get("stats"), "spec.monitoring.stats"), notes)
    if stats:
        out_spec["stats"] = stats
    # Absent thesis outliers meant no outlier detection, so the block is always written.
    out_spec["outliers"] = _outliers(_mapping(monitoring.get("outliers"), "spec.monitoring.outliers"), notes)
    drift = _drift(_mapping(monitoring.get("drift"), "spec.monitoring.drift"), notes)
    drift.update(_window_rules(_mapping(monitoring.get("outliers"), "spec.monitoring.outliers")))
    if drift:
        out_spec["drift"] = drift
    out_spec["baseline"] = {k: copy.deepcopy(baseline[k]) for k in ("descriptive", "distributions") if k in baseline}
    sinks = _sinks(_mapping(spec.get("storage"), "spec.storage"), notes)
    if sinks:
        out_spec["sinks"] = sinks
    logger = _mapping(spec.get("inferencelogger"), "spec.inferencelogger")
    if logger:
        ingest = _ingest_function(logger, notes)
        if ingest:
            out_spec["functions"] = {"ingest": ingest}
    if spec.get("job"):
        notes.append("spec.job (Spark driver/executor settings) has no counterpart: the functions scale "
                     "with Knative (spec.functions)")
    out = {"apiVersion": API_VERSION, "kind": KIND, "metadata": out_meta, "spec": out_spec}
    parse_monitor(copy.deepcopy(out))  # the result must be a valid ModelMonitor
    return out


def convert_file(path: str) -> str:
    """YAML of the converted thesis monitor in ``path``, notes as comments on top (for the CLI)."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except OSError as exc:
        raise ConversionError("(file)", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConversionError("(file)", f"{path} is not valid YAML: {exc}") from None
    notes: list[str] = []
    out = convert_thesis(doc, notes)
    header = f"# Converted by `modelmonitor convert` from {path} (thesis {THESIS_API}).\n"
    header += "".join(f"# - {note}\n" for note in notes)
    return header + yaml.safe_dump(out, sort_keys=False, default_flow_style=False, width=1000)
