"""The ModelMonitor resource: parse, default and validate.

One function, :func:`parse_monitor`, turns the resource (a dict loaded from YAML) into a
frozen :class:`MonitorSpec`. Every problem raises :class:`SpecError` naming the field, e.g.
``spec.window.slide: 20s is larger than spec.window.duration (15s)``. The same validation runs
in ``modelmonitor validate``, in the functions at start-up and in the operator.

>>> spec = parse_monitor({"metadata": {"name": "iris"}, "spec": {
...     "schema": {"features": [{"name": "x", "type": "numerical"}]},
...     "window": {"duration": "15s", "watermarkDelay": 6000}}})
>>> (spec.window.duration_ms, spec.window.slide_ms, spec.window.watermark_delay_ms)
(15000, 15000, 6000)
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import replace
from typing import Any

import yaml
from modelmonitor.core.spec.model import (
    API_VERSION,
    AlertSpec,
    DEFAULT_THRESHOLDS,
    DETECTORS,
    DetectorSpec,
    FEATURE_TYPES,
    Feature,
    KIND,
    MonitorSpec,
    NUMERICAL,
    OutlierSpec,
    SEQUENTIAL_DEFAULTS,
    SKETCH_DETECTORS,
    SequentialSpec,
    SpecError,
    StatsSpec,
    WindowSpec,
    _NAME_RE,
    format_duration,
    parse_duration)
from modelmonitor.core.spec.segment import parse_segment

# What spec.segment.compare computes (modelmonitor.detect.drift.COMPARED_DETECTORS).
COMPARED = ("jensenShannon", "kullbackLeibler", "psi", "hellinger", "kolmogorovSmirnov", "wasserstein",
            "wassersteinNorm", "chiSquare", "unseenShare")


def _get(d: Any, key: str, path: str, kind: type | tuple = dict, default: Any = None) -> Any:
    if not isinstance(d, dict):
        raise SpecError(path, f"expected a mapping, got {type(d).__name__}")
    if key not in d or d[key] is None:
        return default
    value = d[key]
    if kind is float:
        kind = (int, float)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in ((int, float), int)):
        want = {dict: "a mapping", list: "a list", str: "a string", bool: "true or false",
                (int, float): "a number", int: "an integer"}.get(kind, str(kind))
        raise SpecError(f"{path}.{key}", f"expected {want}, got {value!r}")
    return value


def _check_keys(d: dict, allowed: set[str], path: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _features(items: Any, path: str, required: bool) -> tuple[Feature, ...]:
    if items is None:
        if required:
            raise SpecError(path, "at least one feature is required")
        return ()
    if not isinstance(items, list) or (required and not items):
        raise SpecError(path, "expected a non-empty list of {name, type}")
    out, seen = [], set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise SpecError(p, f"expected {{name, type}}, got {item!r}")
        _check_keys(item, {"name", "type", "description"}, p)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError(f"{p}.name", "a non-empty string is required")
        if name in seen:
            raise SpecError(f"{p}.name", f"duplicate feature name {name!r}")
        seen.add(name)
        ftype = item.get("type", NUMERICAL)
        if ftype not in FEATURE_TYPES:
            raise SpecError(f"{p}.type", f"{ftype!r} is not one of {', '.join(FEATURE_TYPES)}")
        out.append(Feature(name=name, type=ftype, index=i))
    return tuple(out)


#: The longest window a monitor may have (its state lives in Redis until it closes).
MAX_WINDOW_DURATION_MS = 7 * 24 * 3_600_000
#: Most panes per window: a window's state is kept per pane of gcd(duration, slide), a close
#: reads every pane of the window, and closing one frees the panes no other window needs.
MAX_PANES_PER_WINDOW = 1440


def _window(w: dict, path: str) -> WindowSpec:
    _check_keys(w, {"duration", "slide", "watermarkDelay", "idleTimeout", "maxClockSkew"}, path)
    if "duration" not in w:
        raise SpecError(f"{path}.duration", "is required")
    duration = parse_duration(w["duration"], f"{path}.duration")
    if duration <= 0:
        raise SpecError(f"{path}.duration", "must be greater than zero")
    slide = parse_duration(w.get("slide", duration), f"{path}.slide")
    if slide <= 0:
        raise SpecError(f"{path}.slide", "must be greater than zero")
    if slide > duration:
        raise SpecError(f"{path}.slide", f"{format_duration(slide)} is larger than {path}.duration "
                        f"({format_duration(duration)}): instances between windows would be lost")
    if duration > MAX_WINDOW_DURATION_MS:
        raise SpecError(f"{path}.duration", f"{format_duration(duration)} is longer than the maximum "
                        f"{format_duration(MAX_WINDOW_DURATION_MS)}")
    panes = duration // math.gcd(duration, slide)
    if panes > MAX_PANES_PER_WINDOW:
        raise SpecError(f"{path}.slide", f"{format_duration(slide)} cuts a {format_duration(duration)} window "
                        f"into {panes} panes of {format_duration(math.gcd(duration, slide))} "
                        f"(gcd of duration and slide); at most {MAX_PANES_PER_WINDOW} are allowed")
    delay = parse_duration(w.get("watermarkDelay", 0), f"{path}.watermarkDelay")
    idle = parse_duration(w.get("idleTimeout", "30s"), f"{path}.idleTimeout")
    if idle <= 0:
        raise SpecError(f"{path}.idleTimeout", "must be greater than zero")
    skew = parse_duration(w.get("maxClockSkew", "5m"), f"{path}.maxClockSkew")
    return WindowSpec(duration, slide, delay, idle, skew)


def _stats(s: dict, path: str) -> StatsSpec:
    # Thesis names are accepted: perc {percentiles, iqr}, cov {type}, corr {type}, and the
    # switches max/min/count/sum/avg/mean/distr which are always computed here.
    _check_keys(s, {"percentiles", "iqr", "stddev", "covariance", "correlation", "perc", "cov", "corr",
                    "max", "min", "count", "sum", "avg", "mean", "distr", "pow2Sum", "histogram", "variance"}, path)
    perc = s.get("percentiles")
    iqr = s.get("iqr", True)
    if isinstance(s.get("perc"), dict):
        perc = s["perc"].get("percentiles", perc)
        iqr = s["perc"].get("iqr", iqr)
    if perc is None:
        perc = [25, 50, 75]
    if not isinstance(perc, list) or not perc:
        raise SpecError(f"{path}.percentiles", "expected a non-empty list of numbers in [0, 100]")
    values = []
    for i, p in enumerate(perc):
        try:
            v = float(p)
        except (TypeError, ValueError):
            raise SpecError(f"{path}.percentiles[{i}]", f"{p!r} is not a number") from None
        if not 0 <= v <= 100:
            raise SpecError(f"{path}.percentiles[{i}]", f"{p!r} is outside [0, 100]")
        values.append(v)
    if not isinstance(iqr, bool):
        raise SpecError(f"{path}.iqr", "expected true or false")

    def typed(key_new: str, key_old: str) -> tuple[bool, str]:
        block = s.get(key_new, s.get(key_old, {}))
        if block is False:
            return False, "sample"
        if block is None or block is True:
            block = {}
        if not isinstance(block, dict):
            raise SpecError(f"{path}.{key_new}", "expected a mapping like {type: sample}")
        t = block.get("type", "sample")
        if t not in ("sample", "population"):
            raise SpecError(f"{path}.{key_new}.type", f"{t!r} is not sample or population")
        return True, t

    _, sd_type = typed("stddev", "stddev")
    cov_on, cov_type = typed("covariance", "cov")
    corr_on, _ = typed("correlation", "corr")
    return StatsSpec(tuple(sorted(set(values))), iqr, sd_type, cov_on, cov_type, corr_on)


def _outliers(o: Any, path: str) -> OutlierSpec:
    if o is None:
        return OutlierSpec()
    if o is False:
        return OutlierSpec(None, False, None, None, False)
    if not isinstance(o, dict):
        raise SpecError(path, "expected a mapping")
    _check_keys(o, {"stddev", "range", "iqr", "mahalanobis", "unseen", "descriptive"}, path)
    k = None
    rng = False
    if "descriptive" in o:  # thesis: list of stats names (max, min, stddev/avg)
        desc = o["descriptive"]
        if not isinstance(desc, list):
            raise SpecError(f"{path}.descriptive", "expected a list of stat names")
        for i, name in enumerate(desc):
            if name in ("max", "min"):
                rng = True
            elif name in ("stddev", "avg", "mean"):
                k = 3.0
            else:
                raise SpecError(f"{path}.descriptive[{i}]", f"unknown outlier stat {name!r} (max, min, stddev)")

    def block(key: str) -> dict | None:
        v = o.get(key)
        if v is None or v is False:
            return None
        if v is True:
            return {}
        if not isinstance(v, dict):
            raise SpecError(f"{path}.{key}", "expected a mapping (or true/false)")
        return v

    if (b := block("stddev")) is not None:
        k = float(_get(b, "k", f"{path}.stddev", float, 3.0))
        if k <= 0:
            raise SpecError(f"{path}.stddev.k", "must be greater than zero")
    if block("range") is not None:
        rng = True
    iqr_k = None
    if (b := block("iqr")) is not None:
        iqr_k = float(_get(b, "k", f"{path}.iqr", float, 1.5))
        if iqr_k < 0:
            raise SpecError(f"{path}.iqr.k", "must not be negative")
    maha = None
    if (b := block("mahalanobis")) is not None:
        maha = float(_get(b, "threshold", f"{path}.mahalanobis", float, 20.0))
        if maha < 0:
            raise SpecError(f"{path}.mahalanobis.threshold", "must not be negative")
    unseen = o.get("unseen", True) is not False
    if not o.get("stddev") and "stddev" in o and o["stddev"] is False:
        k = None
    return OutlierSpec(k, rng, iqr_k, maha, unseen)


def _drift(d: Any, path: str) -> tuple[DetectorSpec, ...]:
    if d is None:
        return ()
    if not isinstance(d, dict):
        raise SpecError(path, "expected a mapping of detector -> {threshold, showAll}")
    out = []
    for name, cfg in d.items():
        p = f"{path}.{name}"
        if name not in DETECTORS:
            raise SpecError(p, f"unknown drift detector (known: {', '.join(DETECTORS)})")
        if cfg is None or cfg is True:
            cfg = {}
        if not isinstance(cfg, dict):
            raise SpecError(p, "expected a mapping {threshold, showAll}")
        _check_keys(cfg, {"threshold", "showAll"}, p)
        thr = _get(cfg, "threshold", p, float, DEFAULT_THRESHOLDS[name])
        if thr < 0:
            raise SpecError(f"{p}.threshold", f"must not be negative, got {thr}")
        show = _get(cfg, "showAll", p, bool, False)
        out.append(DetectorSpec(name, float(thr), show))
    return tuple(out)


def _alerts(a: Any, path: str) -> AlertSpec:
    if a is None:
        return AlertSpec()
    if not isinstance(a, dict):
        raise SpecError(path, "expected a mapping")
    _check_keys(a, {"minWindowCount", "consecutiveWindows", "cooldown", "sequential"}, path)
    mwc = _get(a, "minWindowCount", path, int, 100)
    cw = _get(a, "consecutiveWindows", path, int, 1)
    if mwc < 0:
        raise SpecError(f"{path}.minWindowCount", "must not be negative")
    if cw < 1:
        raise SpecError(f"{path}.consecutiveWindows", "must be at least 1")
    cd = parse_duration(a.get("cooldown", "5m"), f"{path}.cooldown")
    return AlertSpec(mwc, cw, cd, _sequential(a.get("sequential"), f"{path}.sequential"))


def _sequential(q: Any, path: str) -> SequentialSpec | None:
    # When given it replaces consecutiveWindows (which the CRD defaults, so both may be present).
    if q is None or q is False:
        return None
    if not isinstance(q, dict):
        raise SpecError(path, "expected {method: cusum|pageHinkley, threshold, drift}")
    _check_keys(q, {"method", "threshold", "drift"}, path)
    method = q.get("method", "cusum")
    if method not in SEQUENTIAL_DEFAULTS:
        raise SpecError(f"{path}.method", f"{method!r} is not cusum or pageHinkley")
    threshold = float(_get(q, "threshold", path, float, SEQUENTIAL_DEFAULTS[method]["threshold"]))
    drift = float(_get(q, "drift", path, float, SEQUENTIAL_DEFAULTS[method]["drift"]))
    if threshold <= 0:
        raise SpecError(f"{path}.threshold", "must be greater than zero")
    if drift < 0:
        raise SpecError(f"{path}.drift", "must not be negative")
    return SequentialSpec(method, threshold, drift)


def _baseline(b: Any, path: str, base_dir: str | None) -> tuple[dict | None, dict | None]:
    if b is None:
        return None, None
    if not isinstance(b, dict):
        raise SpecError(path, "expected {file: path}, {configMapRef: {name, key}} or inline {features: ...}")
    if "file" in b:
        f = b["file"]
        if not isinstance(f, str) or not f:
            raise SpecError(f"{path}.file", "expected a path")
        full = f if os.path.isabs(f) or base_dir is None else os.path.join(base_dir, f)
        return {"file": full}, None
    if "configMapRef" in b:
        ref = b["configMapRef"]
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
            raise SpecError(f"{path}.configMapRef.name", "a ConfigMap name is required")
        return {"configMapRef": {"name": ref["name"], "key": ref.get("key", "baseline.json")}}, None
    if "features" in b or "descriptive" in b or "distributions" in b:
        return {"inline": True}, b
    raise SpecError(path, "expected {file: path}, {configMapRef: {name, key}} or an inline baseline "
                    "(features, or thesis-style descriptive/distributions)")


def parse_monitor(doc: Any, base_dir: str | None = None) -> MonitorSpec:
    """Validate a ModelMonitor document and return its :class:`MonitorSpec`."""
    if not isinstance(doc, dict):
        raise SpecError("(document)", "expected a ModelMonitor mapping")
    api = doc.get("apiVersion", API_VERSION)
    if api != API_VERSION:
        hint = " (convert it with `modelmonitor convert`)" if "hops.io" in str(api) else ""
        raise SpecError("apiVersion", f"{api!r} is not {API_VERSION}{hint}")
    if doc.get("kind", KIND) != KIND:
        raise SpecError("kind", f"{doc.get('kind')!r} is not {KIND}")
    meta = _get(doc, "metadata", "", dict, {})
    name = meta.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError("metadata.name", f"{name!r} is not a valid name (lower-case letters, digits and '-', "
                        "at most 63 characters)")
    namespace = meta.get("namespace") or "default"
    spec = _get(doc, "spec", "", dict, None)
    if spec is None:
        raise SpecError("spec", "is required")
    _check_keys(spec, {"inferenceService", "model", "schema", "window", "stats", "outliers", "drift",
                       "alerts", "baseline", "state", "broker", "sinks", "functions", "lateEvents",
                       "deadLetterSink", "delivery", "segment"}, "spec")
    model = _get(spec, "model", "spec", dict, {})
    schema = _get(spec, "schema", "spec", dict, None)
    if schema is None:
        raise SpecError("spec.schema.features", "is required (name and type of each feature)")
    _check_keys(schema, {"features", "predictions"}, "spec.schema")
    features = _features(schema.get("features"), "spec.schema.features", required=True)
    predictions = _features(schema.get("predictions"), "spec.schema.predictions", required=False)
    clash = {f.name for f in features} & {p.name for p in predictions}
    if clash:
        raise SpecError("spec.schema.predictions", f"name {sorted(clash)[0]!r} is also a feature name")
    window = _window(_get(spec, "window", "spec", dict, None) or {"duration": "15s"}, "spec.window")
    stats = _stats(_get(spec, "stats", "spec", dict, {}), "spec.stats")
    outliers = _outliers(spec.get("outliers"), "spec.outliers")
    drift = _drift(spec.get("drift"), "spec.drift")
    if any(d.name in SKETCH_DETECTORS for d in drift):
        stats = replace(stats, quantile_sketch=True)
    alerts = _alerts(spec.get("alerts"), "spec.alerts")
    baseline_ref, baseline_inline = _baseline(spec.get("baseline"), "spec.baseline", base_dir)
    if drift and baseline_ref is None:
        raise SpecError("spec.baseline", f"drift detector {drift[0].name!r} needs a baseline "
                        "(spec.baseline.file, configMapRef or inline)")
    state = _get(spec, "state", "spec", dict, {})
    redis_ref = None
    if state:
        _check_keys(state, {"redis"}, "spec.state")
        r = _get(state, "redis", "spec.state", dict, {})
        _check_keys(r, {"urlSecretRef"}, "spec.state.redis")
        if "urlSecretRef" in r:
            ref = r["urlSecretRef"]
            if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
                raise SpecError("spec.state.redis.urlSecretRef.name", "a Secret name is required")
            redis_ref = {"name": ref["name"], "key": ref.get("key", "url")}
    sinks = _get(spec, "sinks", "spec", dict, {})
    if sinks:
        _check_keys(sinks, {"kafka"}, "spec.sinks")
        k = _get(sinks, "kafka", "spec.sinks", dict, {})
        if k:
            _check_keys(k, {"bootstrapServers", "topics"}, "spec.sinks.kafka")
            if not isinstance(k.get("bootstrapServers"), str) or not k["bootstrapServers"]:
                raise SpecError("spec.sinks.kafka.bootstrapServers", "is required (host:port[,host:port])")
            topics = _get(k, "topics", "spec.sinks.kafka", dict, {})
            _check_keys(topics, {"stats", "outliers", "drift"}, "spec.sinks.kafka.topics")
            if not topics:
                raise SpecError("spec.sinks.kafka.topics", "name at least one of stats, outliers, drift")
            for key, topic in topics.items():
                if not isinstance(topic, str) or not topic:
                    raise SpecError(f"spec.sinks.kafka.topics.{key}", "expected a topic name")
    functions = _get(spec, "functions", "spec", dict, {})
    for fname, cfg in functions.items():
        if fname not in ("ingest", "outlier", "aggregate", "drift"):
            raise SpecError(f"spec.functions.{fname}", "unknown function (ingest, outlier, aggregate, drift)")
        if not isinstance(cfg, dict):
            raise SpecError(f"spec.functions.{fname}", "expected a mapping")
        _check_keys(cfg, {"minScale", "maxScale", "target", "metric", "concurrency", "resources"},
                    f"spec.functions.{fname}")
        lo, hi = cfg.get("minScale", 0), cfg.get("maxScale")
        for key in ("minScale", "maxScale", "target", "concurrency"):
            v = cfg.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise SpecError(f"spec.functions.{fname}.{key}", f"expected a non-negative integer, got {v!r}")
        if hi is not None and lo is not None and hi and lo > hi:
            raise SpecError(f"spec.functions.{fname}.minScale", f"{lo} is larger than maxScale {hi}")
        if cfg.get("metric") not in (None, "concurrency", "rps", "cpu"):
            raise SpecError(f"spec.functions.{fname}.metric", "expected concurrency, rps or cpu")
    broker = spec.get("broker", "default")
    if not isinstance(broker, str) or not broker:
        raise SpecError("spec.broker", "expected a Broker name")
    isvc = spec.get("inferenceService", name)
    if not isinstance(isvc, str) or not isvc:
        raise SpecError("spec.inferenceService", "expected an InferenceService name")
    late_events = spec.get("lateEvents", False)
    if not isinstance(late_events, bool):
        raise SpecError("spec.lateEvents", "expected true or false")
    dls = spec.get("deadLetterSink")
    if dls is not None and (not isinstance(dls, dict) or not (isinstance(dls.get("uri"), str) or isinstance(dls.get("ref"), dict))):
        raise SpecError("spec.deadLetterSink", "expected a Knative destination {uri: ...} or {ref: {kind, name}}")
    delivery = _get(spec, "delivery", "spec", dict, None)
    if delivery is not None:
        _check_keys(delivery, {"retry", "backoffPolicy", "backoffDelay", "timeout"}, "spec.delivery")
        retry = delivery.get("retry", 5)
        if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
            raise SpecError("spec.delivery.retry", f"expected a non-negative integer, got {retry!r}")
        if delivery.get("backoffPolicy", "exponential") not in ("linear", "exponential"):
            raise SpecError("spec.delivery.backoffPolicy", "expected linear or exponential")
        for key in ("backoffDelay", "timeout"):
            v = delivery.get(key)
            if v is not None and (not isinstance(v, str) or not re.match(r"^P(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)$", v)):
                raise SpecError(f"spec.delivery.{key}", f"{v!r} is not an ISO-8601 duration like PT0.2S")
    segment = parse_segment(spec.get("segment"), "spec.segment")
    if segment is not None and segment.retention_ms < window.duration_ms:
        raise SpecError("spec.segment.retention", f"{format_duration(segment.retention_ms)} is shorter than "
                        f"spec.window.duration ({format_duration(window.duration_ms)}): a segment would lose "
                        "its slot inside one window")
    if segment is not None and segment.compare is not None and not any(d.name in COMPARED for d in drift):
        raise SpecError("spec.segment.compare", "needs a drift detector it can compute in spec.drift "
                        f"({', '.join(COMPARED)})")
    return MonitorSpec(
        dead_letter_sink=dls, segment=segment, delivery=delivery,
        name=name, namespace=namespace, inference_service=isvc,
        model_name=str(model.get("name", isvc)), model_version=str(model.get("version", "")),
        features=features, predictions=predictions, window=window, stats=stats, outliers=outliers,
        drift=drift, alerts=alerts, baseline_ref=baseline_ref, baseline_inline=baseline_inline,
        redis_secret_ref=redis_ref, broker=broker, sinks=sinks, functions=functions,
        late_events=late_events, raw=doc,
    )


def load_monitor(path: str) -> MonitorSpec:
    """Read and validate a ModelMonitor YAML file (relative baseline files resolve next to it)."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except OSError as exc:
        raise SpecError("(file)", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError("(file)", f"{path} is not valid YAML: {exc}") from None
    return parse_monitor(doc, base_dir=os.path.dirname(os.path.abspath(path)))

