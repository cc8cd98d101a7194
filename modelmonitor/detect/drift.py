"""Drift of a closed window against the baseline (DESIGN section 3 "Drift").

Pure: the finalized ``window.closed`` record and the baseline document in, the ``features``
mapping of ``drift.measured`` out. The pieces live by concept:

- :mod:`modelmonitor.detect.metrics`: binned metrics (JS, KL, PSI, Hellinger, binned KS and W1);
- :mod:`modelmonitor.detect.quantile_sketch`: exact Wasserstein-1 and KS from quantile sketches;
- :mod:`modelmonitor.detect.categorical`: chi-square, unseen share and JS of categorical features;
- :mod:`modelmonitor.detect.window_rules`: the thesis' window checks (max, min, mean, stddev);
- :mod:`modelmonitor.detect.multivariate`: Hotelling mean shift and covariance change;
- :mod:`modelmonitor.detect.alert_policy`: when drifted windows become an alert.

Numerical ``wasserstein``, ``wassersteinNorm`` and ``kolmogorovSmirnov`` are computed from the
window's and the baseline's ``quantileSketch`` when both have one (the score then carries its
error ``bound``); otherwise (a thesis baseline, which has no sample) from the bins as before.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from modelmonitor.core import spec as _spec
from modelmonitor.detect import quantile_sketch as _qs
from modelmonitor.detect.alert_policy import evaluate_alert
from modelmonitor.detect.categorical import UNSEEN, categorical_bins, categorical_scores
from modelmonitor.detect.metrics import (EPS, PROBABILITY_METRICS, _non_negative, bin_centres, binned_pair,
                                         chi_square, hellinger, jensen_shannon, kolmogorov_smirnov,
                                         kullback_leibler, numerical_bins, probability_wasserstein, psi, smooth,
                                         smooth_counts, wasserstein, wasserstein_norm)
from modelmonitor.detect.multivariate import multivariate_scores
from modelmonitor.detect.window_rules import WINDOW_RULES, window_rule_scores

__all__ = [
    "EPS", "UNSEEN", "METRICS",
    "smooth", "numerical_bins", "categorical_bins",
    "jensen_shannon", "kullback_leibler", "psi", "hellinger", "kolmogorov_smirnov",
    "bin_centres", "wasserstein", "wasserstein_norm", "chi_square",
    "measure_drift", "measure_multivariate", "shown_scores", "drifted_feature_names", "evaluate_alert",
    "compare_windows", "COMPARED_DETECTORS",
]

METRICS = tuple(_spec.DETECTORS)
"""Detector names, as in the ModelMonitor spec and the ``drift.measured`` records."""

_SKETCHED = {"wasserstein", "wassersteinNorm", "kolmogorovSmirnov"}
#: Binned metrics always computed from the bins, in the order drift.measured lists them.
_BINNED = ("jensenShannon", "kullbackLeibler", "psi", "hellinger")


def _sketched_scores(name: str, window_feature: Mapping, baseline_feature: Mapping,
                     wanted: set[str]) -> dict[str, dict[str, Any]] | None:
    """Exact W1 / KS from the two quantile sketches; None when either side has none."""
    if not wanted & _SKETCHED:
        return {}
    if window_feature.get("quantileSketch") is None or baseline_feature.get("quantileSketch") is None:
        return None
    window = _qs.decode(window_feature["quantileSketch"], f"window feature {name!r} quantileSketch")
    base = _qs.decode(baseline_feature["quantileSketch"], f"baseline feature {name!r} quantileSketch")
    w1_bound, ks_bound = _qs.error_bounds(window, base)
    scores: dict[str, dict[str, Any]] = {}
    if "kolmogorovSmirnov" in wanted:
        scores["kolmogorovSmirnov"] = {"value": _qs.ks_statistic(window, base), "bound": ks_bound}
    if wanted & {"wasserstein", "wassersteinNorm"}:
        w1 = _qs.wasserstein_distance(window, base)
        scores["wasserstein"] = {"value": w1, "bound": w1_bound}
        sd = _baseline_stddev(name, baseline_feature) if "wassersteinNorm" in wanted else 0
        if sd:
            scores["wassersteinNorm"] = {"value": w1 / sd, "bound": w1_bound / sd}
    return scores


def _baseline_stddev(name: str, baseline_feature: Mapping) -> float:
    sd = baseline_feature.get("stddev")
    if sd is None:
        raise ValueError(f"baseline feature {name!r}: 'stddev' is needed by wassersteinNorm")
    return _non_negative(sd, f"baseline feature {name!r} stddev")


def _numerical_scores(name: str, window_feature: Mapping, baseline_feature: Mapping,
                      wanted: set[str]) -> dict[str, dict[str, Any]] | None:
    # The baseline side is validated and smoothed once per baseline (metrics.baseline_bins), the
    # window's counts once here; the metrics then run on the two probability vectors unchecked.
    win, base = binned_pair(window_feature.get("histogram"), baseline_feature, name)
    if win.sum() == 0:
        return None
    p, q = smooth_counts(win), base.q
    rules = window_rule_scores(window_feature, baseline_feature, wanted & set(WINDOW_RULES), name)
    scores = {metric: {"value": PROBABILITY_METRICS[metric](p, q)} for metric in _BINNED if metric in wanted}
    scores.update(rules)
    sketched = _sketched_scores(name, window_feature, baseline_feature, wanted)
    if sketched is not None:
        scores.update(sketched)
        return scores
    if "kolmogorovSmirnov" in wanted:
        scores["kolmogorovSmirnov"] = {"value": PROBABILITY_METRICS["kolmogorovSmirnov"](p, q)}
    if wanted & {"wasserstein", "wassersteinNorm"}:
        w1 = probability_wasserstein(p, q, base.steps)
        scores["wasserstein"] = {"value": w1}
        if "wassersteinNorm" in wanted:
            sd = _baseline_stddev(name, baseline_feature)
            if sd:
                scores["wassersteinNorm"] = {"value": w1 / sd}
    return scores


def _categorical_scores(name: str, window_feature: Mapping, baseline_feature: Mapping,
                        wanted: set[str]) -> dict[str, dict[str, Any]] | None:
    if "frequencies" not in baseline_feature:
        raise ValueError(f"baseline feature {name!r}: 'frequencies' is needed for categorical drift")
    return categorical_scores(window_feature.get("categories") or {}, baseline_feature["frequencies"],
                              wanted, name)


def _check_detectors(detectors: Sequence[_spec.DetectorSpec]) -> None:
    for d in detectors:
        if d.name not in _spec.DETECTORS:
            raise ValueError(f"unknown drift detector {d.name!r} (known: {', '.join(_spec.DETECTORS)})")
        if not (isinstance(d.threshold, (int, float)) and math.isfinite(d.threshold)):
            raise ValueError(f"drift detector {d.name!r}: threshold must be a finite number, got {d.threshold!r}")


def _entries(scores: Mapping[str, Mapping[str, Any]], detectors: Sequence[_spec.DetectorSpec]) -> dict:
    entries = {}
    for d in detectors:
        score = scores.get(d.name)
        if score is None:
            continue
        value = float(score["value"])
        drifted = bool(value > d.threshold)
        if drifted or d.show_all:
            extra = {k: v for k, v in score.items() if k != "value"}
            entries[d.name] = {"value": value, "threshold": float(d.threshold), "drifted": drifted, **extra}
    return entries


def measure_drift(window_record: Mapping[str, Any], baseline: Mapping[str, Any],
                  detectors: Sequence[_spec.DetectorSpec],
                  features: Sequence[_spec.Feature]) -> dict[str, dict[str, dict[str, Any]]]:
    """Score each feature of a closed window against the baseline with the configured detectors.

    Returns ``{feature: {metric: {"value", "threshold", "drifted", ...}}}`` with
    ``drifted = value > threshold``. A detector applies only to the feature types listed in
    ``spec.DETECTORS``. Features empty in the window or absent from the baseline are skipped, as
    is ``wassersteinNorm`` when the baseline stddev is 0 (there is no scale to divide by). With
    ``showAll`` false (the thesis semantics) only drifted entries are kept; features left with no
    entries are omitted.

    >>> from modelmonitor.core.spec import DetectorSpec, Feature
    >>> baseline = {"features": {"x": {"type": "numerical", "stddev": 1.0,
    ...             "edges": [0.0, 1.0, 2.0], "counts": [50, 50]}}}
    >>> window = {"features": {"x": {"count": 10, "histogram": {"counts": [0, 0, 0, 10]}}}}
    >>> out = measure_drift(window, baseline, [DetectorSpec("jensenShannon", 0.1, True),
    ...                     DetectorSpec("psi", 100.0, False)], [Feature("x", "numerical", 0)])
    >>> out["x"]["jensenShannon"]["drifted"], round(out["x"]["jensenShannon"]["value"], 3)
    (True, 1.0)
    >>> "psi" in out["x"]                          # below its threshold and showAll is false
    False
    """
    if not isinstance(window_record, Mapping) or not isinstance(window_record.get("features"), Mapping):
        raise ValueError("window record: 'features' mapping is missing")
    if not isinstance(baseline, Mapping) or not isinstance(baseline.get("features"), Mapping):
        raise ValueError("baseline: 'features' mapping is missing")
    _check_detectors(detectors)
    window_features = window_record["features"]
    baseline_features = baseline["features"]
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for feature in features:
        if feature.type not in _spec.FEATURE_TYPES:
            raise ValueError(f"feature {feature.name!r}: unknown type {feature.type!r}")
        applicable = [d for d in detectors if feature.type in _spec.DETECTORS[d.name]]
        window_feature = window_features.get(feature.name)
        baseline_feature = baseline_features.get(feature.name)
        if not applicable or not isinstance(window_feature, Mapping) or baseline_feature is None:
            continue
        if not window_feature.get("count"):
            continue
        base_type = baseline_feature.get("type", feature.type)
        if base_type != feature.type:
            raise ValueError(f"feature {feature.name!r} is {feature.type} in the monitor but "
                             f"{base_type} in the baseline")
        wanted = {d.name for d in applicable}
        if feature.type == _spec.NUMERICAL:
            scores = _numerical_scores(feature.name, window_feature, baseline_feature, wanted)
        else:
            scores = _categorical_scores(feature.name, window_feature, baseline_feature, wanted)
        if scores is None:
            continue
        entries = _entries(scores, applicable)
        if entries:
            result[feature.name] = entries
    return result


def measure_multivariate(window_record: Mapping[str, Any], baseline: Mapping[str, Any],
                         detectors: Sequence[_spec.DetectorSpec],
                         window_covariance_ddof: int = 1) -> dict[str, dict[str, Any]]:
    """The ``multivariate`` field of ``drift.measured``: ``{metric: {"value", "threshold", "drifted", ...}}``.

    Only the configured multivariate detectors (``hotelling``, ``covarianceChange``); a score that
    cannot be computed for this window (see :mod:`modelmonitor.detect.multivariate`) is left out.
    """
    _check_detectors(detectors)
    chosen = [d for d in detectors if d.name in _spec.MULTIVARIATE_DETECTORS]
    if not chosen:
        return {}
    if not isinstance(baseline, Mapping) or not isinstance(baseline.get("features"), Mapping):
        raise ValueError("baseline: 'features' mapping is missing")
    scores = multivariate_scores(window_record, baseline, {d.name for d in chosen}, window_covariance_ddof)
    return _entries(scores, chosen)


def shown_scores(full: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 detectors: Sequence[_spec.DetectorSpec]) -> dict[str, dict[str, dict[str, Any]]]:
    """``full`` (measured with every ``showAll`` on) reduced to what the detectors' ``showAll`` shows.

    >>> from modelmonitor.core.spec import DetectorSpec
    >>> shown_scores({"x": {"psi": {"value": 0.1, "threshold": 0.2, "drifted": False}}},
    ...              [DetectorSpec("psi", 0.2, False)])
    {}
    """
    show = {d.name: d.show_all for d in detectors}
    out = {}
    for name, scores in full.items():
        kept = {metric: score for metric, score in scores.items() if score["drifted"] or show.get(metric, False)}
        if kept:
            out[name] = kept
    return out


def drifted_feature_names(measured: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Names of the features with at least one drifted score in a :func:`measure_drift` result.

    >>> drifted_feature_names({"a": {"psi": {"drifted": False}}, "b": {"psi": {"drifted": True}}})
    ['b']
    """
    return [name for name, scores in measured.items() if any(s.get("drifted") for s in scores.values())]


#: What a comparison of two segments' windows computes (``spec.segment.compare``): the configured
#: detectors among these; window rules and multivariate scores need a baseline's spread and are not compared.
COMPARED_DETECTORS = _spec.COMPARED


def compare_windows(candidate: Mapping[str, Any], reference: Mapping[str, Any],
                    detectors: Sequence[_spec.DetectorSpec],
                    features: Sequence[_spec.Feature]) -> dict[str, dict[str, dict[str, Any]]]:
    """Score each feature of a candidate window against a reference window of the same span
    (two segments' ``window.closed`` records), every score listed: ``{feature: {metric: {"value",
    "threshold", "drifted", ...}}}``. The reference takes the baseline's place: binned metrics over
    both windows' histograms (underflow and overflow included, both smoothed), Wasserstein-1 and
    KS from both quantile sketches (with their error ``bound``; ``wassersteinNorm`` divides by the
    reference's stddev), categorical metrics over the reference's category counts. A feature
    with no values on either side is left out.

    >>> from modelmonitor.core.spec import DetectorSpec, Feature
    >>> a = {"features": {"x": {"count": 4, "histogram": {"edges": [0.0, 1.0], "counts": [0, 4, 0]}}}}
    >>> b = {"features": {"x": {"count": 4, "histogram": {"edges": [0.0, 1.0], "counts": [0, 0, 4]}}}}
    >>> out = compare_windows(a, b, [DetectorSpec("jensenShannon", 0.1)], [Feature("x", "numerical", 0)])
    >>> round(out["x"]["jensenShannon"]["value"], 3), out["x"]["jensenShannon"]["drifted"]
    (1.0, True)
    """
    _check_detectors(detectors)
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for feature in features:
        applicable = [d for d in detectors if d.name in COMPARED_DETECTORS and feature.type in _spec.DETECTORS[d.name]]
        cand, ref = candidate["features"].get(feature.name), reference["features"].get(feature.name)
        if not applicable or not isinstance(cand, Mapping) or not isinstance(ref, Mapping) \
                or not cand.get("count") or not ref.get("count"):
            continue
        wanted = {d.name for d in applicable}
        if feature.type == _spec.NUMERICAL:
            scores = _numerical_pair(feature.name, cand, ref, wanted)
        else:
            scores = categorical_scores(cand.get("categories") or {}, ref.get("categories") or {}, wanted, feature.name)
        if scores:
            entries = _entries(scores, [replace(d, show_all=True) for d in applicable])
            if entries:
                result[feature.name] = entries
    return result


def _numerical_pair(name: str, cand: Mapping, ref: Mapping, wanted: set[str]) -> dict[str, dict[str, Any]]:
    scores: dict[str, dict[str, Any]] = {}
    hc, hr = cand.get("histogram"), ref.get("histogram")
    if isinstance(hc, Mapping) and isinstance(hr, Mapping):
        if list(hc["edges"]) != list(hr["edges"]) or len(hc["counts"]) != len(hr["counts"]):
            raise ValueError(f"feature {name!r}: the two windows' histograms have different bins")
        p, q = smooth(hc["counts"]), smooth(hr["counts"])
        scores.update({m: {"value": PROBABILITY_METRICS[m](p, q)} for m in _BINNED if m in wanted})
    if ref.get("stddev") is None:          # a single reference value: no scale to divide by
        wanted = wanted - {"wassersteinNorm"}
    sketched = _sketched_scores(name, cand, ref, wanted)
    if sketched:
        scores.update(sketched)
    return scores
