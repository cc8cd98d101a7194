"""Drift of a closed window against the baseline, and the alert policy (DESIGN section 3 "Drift").

Everything here is pure: NumPy arrays and plain dicts in, numbers and plain dicts out. The drift
function reads the finalized ``window.closed`` record and the baseline document; the alert policy
keeps its state in a plain dict that callers store in Redis.

Bins. A numerical feature has the baseline's K inner bins plus an underflow and an overflow bin
(K+2 in all), so values outside the baseline range show up as drift instead of disappearing (the
thesis dropped them). The baseline has no mass outside its own range: its K counts are padded with
a 0 at each end. A categorical feature has one bin per baseline category (sorted) plus one
``unseen`` bin that collects every window category the baseline never saw.

Smoothing. Both sides are smoothed as ``p_i = (c_i + EPS) / (n + B*EPS)`` over their B bins, so a
bin that is empty on one side gives a large but finite divergence (the thesis skipped such bins
in KL and so missed exactly the drift into new ranges).

>>> window = [0, 5, 5, 0]                 # underflow, 2 inner bins, overflow
>>> baseline = [0, 5, 5, 0]               # baseline counts [5, 5] padded with 0, 0
>>> p, q = smooth(window), smooth(baseline)
>>> round(jensen_shannon(p, q), 12)
0.0
>>> shifted = smooth([0, 0, 5, 5])        # half the mass beyond the baseline maximum
>>> round(jensen_shannon(shifted, q), 3), round(wasserstein(shifted, q, [0.0, 1.0, 2.0]), 3)
(0.5, 1.0)
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelmonitor.core import spec as _spec

__all__ = [
    "EPS", "UNSEEN", "METRICS",
    "smooth", "numerical_bins", "categorical_bins",
    "jensen_shannon", "kullback_leibler", "psi", "hellinger", "kolmogorov_smirnov",
    "bin_centres", "wasserstein", "wasserstein_norm", "chi_square",
    "measure_drift", "drifted_feature_names", "evaluate_alert",
]

EPS = 1e-6
"""Pseudo-count added to every bin before normalising (DESIGN section 3)."""

UNSEEN = "__unseen__"
"""Label of the categorical bin that collects window categories absent from the baseline."""

# Relative tolerance for "sums to one": smoothed vectors sum to 1 within a few ulps; anything
# further off is a caller who passed raw counts instead of probabilities.
_SUM_TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------------
# Bins and smoothing
# --------------------------------------------------------------------------------------------

def _counts_vector(counts: Any, what: str) -> np.ndarray:
    try:
        c = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a list of numbers, got {counts!r}") from None
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D list of counts, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{what}: counts must be finite, got {c.tolist()}")
    if np.any(c < 0):
        raise ValueError(f"{what}: counts must not be negative, got {c.tolist()}")
    return c


def smooth(counts: Sequence[float] | np.ndarray, eps: float = EPS) -> np.ndarray:
    """Bin probabilities ``(c_i + eps) / (n + B*eps)`` of a count vector over its B bins.

    >>> smooth([0, 3, 1]).round(6).tolist()
    [0.0, 0.75, 0.25]
    >>> float(smooth([0, 3, 1])[0]) > 0          # no bin is exactly empty
    True
    """
    c = _counts_vector(counts, "smooth")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"smooth: eps must be a positive number, got {eps!r}")
    return (c + eps) / (c.sum() + c.size * eps)


def numerical_bins(window_histogram: Mapping[str, Any], baseline_feature: Mapping[str, Any],
                   feature: str = "feature") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window counts (K+2), baseline counts padded to K+2, and the K+1 edges of one feature.

    ``window_histogram`` is the window record's ``{"edges", "counts"}`` with counts
    ``[underflow, inner K, overflow]``; ``baseline_feature`` the baseline entry with K ``counts``
    over its K+1 ``edges``. Edges that disagree mean the window was binned against another
    baseline, which would make every score meaningless, so that raises.

    >>> w, b, e = numerical_bins({"edges": [0, 1, 2], "counts": [1, 2, 3, 4]},
    ...                          {"edges": [0, 1, 2], "counts": [5, 5]})
    >>> w.tolist(), b.tolist(), e.tolist()
    ([1.0, 2.0, 3.0, 4.0], [0.0, 5.0, 5.0, 0.0], [0.0, 1.0, 2.0])
    """
    if "edges" not in baseline_feature or "counts" not in baseline_feature:
        raise ValueError(f"baseline feature {feature!r}: needs 'edges' and 'counts' for drift")
    edges = _edges_vector(baseline_feature["edges"], f"baseline feature {feature!r} edges")
    base = _counts_vector(baseline_feature["counts"], f"baseline feature {feature!r} counts")
    k = edges.size - 1
    if base.size != k:
        raise ValueError(f"baseline feature {feature!r}: {base.size} counts for {k} bins "
                         f"({edges.size} edges)")
    if not isinstance(window_histogram, Mapping) or "counts" not in window_histogram:
        raise ValueError(f"window feature {feature!r}: histogram with 'counts' is missing")
    win = _counts_vector(window_histogram["counts"], f"window feature {feature!r} histogram counts")
    if win.size != k + 2:
        raise ValueError(f"window feature {feature!r}: histogram has {win.size} counts, expected "
                         f"{k + 2} (underflow, {k} baseline bins, overflow)")
    if window_histogram.get("edges") is not None:
        w_edges = _edges_vector(window_histogram["edges"], f"window feature {feature!r} histogram edges")
        if w_edges.size != edges.size or not np.allclose(w_edges, edges, rtol=1e-9, atol=1e-12):
            raise ValueError(f"window feature {feature!r}: histogram edges differ from the baseline "
                             "edges (was the window binned against another baseline?)")
    padded = np.concatenate(([0.0], base, [0.0]))
    return win, padded, edges


def categorical_bins(window_categories: Mapping[str, float], baseline_frequencies: Mapping[str, float],
                     feature: str = "feature") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bin labels, window counts and baseline counts over sorted baseline categories + ``unseen``.

    >>> labels, w, b = categorical_bins({"b": 2, "z": 1, "y": 3}, {"b": 4, "a": 6})
    >>> labels, w.tolist(), b.tolist()
    (['a', 'b', '__unseen__'], [0.0, 2.0, 4.0], [6.0, 4.0, 0.0])
    """
    if not isinstance(baseline_frequencies, Mapping):
        raise ValueError(f"baseline feature {feature!r}: frequencies must be a mapping value -> count")
    if not isinstance(window_categories, Mapping):
        raise ValueError(f"window feature {feature!r}: categories must be a mapping value -> count")
    labels = sorted(baseline_frequencies)
    index = {label: i for i, label in enumerate(labels)}
    base = _counts_vector([baseline_frequencies[label] for label in labels] + [0.0],
                          f"baseline feature {feature!r} frequencies")
    win = np.zeros(len(labels) + 1)
    for value, count in window_categories.items():
        win[index.get(value, len(labels))] += _non_negative(count, f"window feature {feature!r} "
                                                                    f"category {value!r}")
    return labels + [UNSEEN], win, base


def _non_negative(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what}: expected a count, got {value!r}")
    v = float(value)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{what}: expected a non-negative count, got {value!r}")
    return v


def _edges_vector(edges: Any, what: str) -> np.ndarray:
    try:
        e = np.asarray(edges, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a list of numbers, got {edges!r}") from None
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"{what}: expected at least 2 bin edges, got {np.size(e)}")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{what}: edges must be finite, got {e.tolist()}")
    if np.any(np.diff(e) <= 0):
        raise ValueError(f"{what}: edges must be strictly increasing, got {e.tolist()}")
    return e


# --------------------------------------------------------------------------------------------
# Metrics on probability vectors
# --------------------------------------------------------------------------------------------

def _distributions(p: Any, q: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate two probability vectors over the same bins."""
    pa = _counts_vector(p, "p")
    qa = _counts_vector(q, "q")
    if pa.size != qa.size:
        raise ValueError(f"p and q must cover the same bins, got {pa.size} and {qa.size} values")
    for name, v in (("p", pa), ("q", qa)):
        total = float(v.sum())
        if abs(total - 1.0) > _SUM_TOLERANCE:
            raise ValueError(f"{name} must be probabilities summing to 1 (got sum {total:.6g}); "
                             "pass counts through smooth() first")
    return pa, qa


def _relative_entropy_terms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a_i ln(a_i / b_i)`` with the conventions 0·ln(0/b) = 0 and a·ln(a/0) = inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = a * np.log(a / b)
    terms[a == 0] = 0.0
    terms[(a > 0) & (b == 0)] = np.inf
    return terms


def kullback_leibler(p: Any, q: Any) -> float:
    """``KL(p||q) = sum p_i ln(p_i / q_i)`` in nats; every bin counts, empty baseline bins too.

    >>> round(kullback_leibler([0.5, 0.5], [0.9, 0.1]), 6)
    0.510826
    """
    pa, qa = _distributions(p, q)
    return float(max(_relative_entropy_terms(pa, qa).sum(), 0.0))


def jensen_shannon(p: Any, q: Any) -> float:
    """Jensen-Shannon divergence with log base 2, in [0, 1] (the square of SciPy's distance).

    >>> jensen_shannon([1.0, 0.0], [0.0, 1.0])
    1.0
    >>> round(jensen_shannon([0.5, 0.5], [0.9, 0.1]), 6)
    0.146793
    """
    pa, qa = _distributions(p, q)
    m = (pa + qa) / 2.0
    nats = 0.5 * _relative_entropy_terms(pa, m).sum() + 0.5 * _relative_entropy_terms(qa, m).sum()
    # Rounding can push identical inputs a hair below 0 or disjoint ones a hair above 1.
    return float(min(max(nats / math.log(2.0), 0.0), 1.0))


def psi(p: Any, q: Any) -> float:
    """Population stability index ``sum (p_i - q_i) ln(p_i / q_i)`` (= KL(p||q) + KL(q||p)).

    >>> round(psi([0.5, 0.5], [0.9, 0.1]), 6)
    0.87889
    """
    pa, qa = _distributions(p, q)
    return float(max(_relative_entropy_terms(pa, qa).sum() + _relative_entropy_terms(qa, pa).sum(), 0.0))


def hellinger(p: Any, q: Any) -> float:
    """Hellinger distance ``sqrt(1 - sum sqrt(p_i q_i))`` in [0, 1].

    >>> hellinger([1.0, 0.0], [0.0, 1.0]), hellinger([0.3, 0.7], [0.3, 0.7])
    (1.0, 0.0)
    """
    pa, qa = _distributions(p, q)
    return float(math.sqrt(max(1.0 - float(np.sqrt(pa * qa).sum()), 0.0)))


def kolmogorov_smirnov(p: Any, q: Any) -> float:
    """Kolmogorov-Smirnov statistic of the binned distributions: ``max |P_i - Q_i|`` of the CDFs.

    >>> round(kolmogorov_smirnov([0.2, 0.3, 0.5], [0.5, 0.3, 0.2]), 6)
    0.3
    """
    pa, qa = _distributions(p, q)
    return float(np.max(np.abs(np.cumsum(pa) - np.cumsum(qa))))


def bin_centres(edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Centres of [underflow, K inner bins, overflow] for K+1 edges.

    The underflow bin sits one bin width below the first edge's bin, the overflow bin one width
    above the last, so values beyond the baseline range count as at least one bin width away.

    >>> bin_centres([0.0, 1.0, 2.0]).tolist()
    [-0.5, 0.5, 1.5, 2.5]
    """
    e = _edges_vector(edges, "edges")
    inner = (e[:-1] + e[1:]) / 2.0
    # Baseline edges are equal width; using each end's own width keeps this sane for others.
    under = e[0] - (e[1] - e[0]) / 2.0
    over = e[-1] + (e[-1] - e[-2]) / 2.0
    return np.concatenate(([under], inner, [over]))


def wasserstein(p: Any, q: Any, edges: Sequence[float] | np.ndarray) -> float:
    """Wasserstein-1 distance in the feature's own units between p and q placed at bin centres.

    ``p`` and ``q`` cover the K+2 bins [underflow, inner, overflow] of the K+1 ``edges``.

    >>> wasserstein([0, 1, 0, 0], [0, 0, 1, 0], [0.0, 10.0, 20.0])    # one bin of width 10 apart
    10.0
    """
    pa, qa = _distributions(p, q)
    centres = bin_centres(edges)
    if centres.size != pa.size:
        raise ValueError(f"wasserstein: {pa.size} probabilities need {pa.size - 1} edges "
                         f"(K+2 bins for K+1 edges), got {centres.size - 1} edges")
    # W1 on the line = integral of |CDF_p - CDF_q|; the CDFs are steps between sorted centres.
    cdf_gap = np.abs(np.cumsum(pa) - np.cumsum(qa))[:-1]
    return float(np.dot(cdf_gap, np.diff(centres)))


def wasserstein_norm(p: Any, q: Any, edges: Sequence[float] | np.ndarray, stddev: float) -> float | None:
    """Wasserstein-1 divided by the baseline standard deviation; None when the stddev is 0.

    >>> wasserstein_norm([0, 1, 0, 0], [0, 0, 1, 0], [0.0, 10.0, 20.0], 5.0)
    2.0
    >>> wasserstein_norm([0, 1, 0, 0], [0, 0, 1, 0], [0.0, 10.0, 20.0], 0.0) is None
    True
    """
    sd = _non_negative(stddev, "wasserstein_norm: baseline stddev")
    w1 = wasserstein(p, q, edges)
    return None if sd == 0 else w1 / sd


def chi_square(observed_counts: Any, baseline_probs: Any) -> float:
    """Pearson chi-square statistic ``sum (O_i - E_i)^2 / E_i`` with ``E_i = n * q_i``.

    ``baseline_probs`` are the smoothed baseline probabilities over the same bins, so a category
    the baseline never saw has a tiny expected count and dominates the statistic.

    >>> chi_square([30, 70], [0.5, 0.5])
    16.0
    """
    observed = _counts_vector(observed_counts, "chi_square observed counts")
    probs = _counts_vector(baseline_probs, "chi_square baseline probabilities")
    if observed.size != probs.size:
        raise ValueError(f"chi_square: {observed.size} observed counts for {probs.size} probabilities")
    if abs(float(probs.sum()) - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"chi_square: baseline probabilities must sum to 1 (got {float(probs.sum()):.6g})")
    if np.any(probs == 0):
        raise ValueError("chi_square: baseline probabilities must be positive (smooth them first)")
    if observed.sum() == 0:
        raise ValueError("chi_square: observed counts are all zero (nothing to compare)")
    expected = observed.sum() * probs
    return float(np.sum((observed - expected) ** 2 / expected))


METRICS = tuple(_spec.DETECTORS)
"""Detector names, as in the ModelMonitor spec and the ``drift.measured`` records."""


# --------------------------------------------------------------------------------------------
# Per-window drift
# --------------------------------------------------------------------------------------------

def _numerical_scores(name: str, window_feature: Mapping, baseline_feature: Mapping,
                      wanted: set[str]) -> dict[str, float | None] | None:
    win, base, edges = numerical_bins(window_feature.get("histogram"), baseline_feature, name)
    if win.sum() == 0:
        return None
    p, q = smooth(win), smooth(base)
    scores: dict[str, float | None] = {}
    if "jensenShannon" in wanted:
        scores["jensenShannon"] = jensen_shannon(p, q)
    if "kullbackLeibler" in wanted:
        scores["kullbackLeibler"] = kullback_leibler(p, q)
    if "psi" in wanted:
        scores["psi"] = psi(p, q)
    if "hellinger" in wanted:
        scores["hellinger"] = hellinger(p, q)
    if "kolmogorovSmirnov" in wanted:
        scores["kolmogorovSmirnov"] = kolmogorov_smirnov(p, q)
    if wanted & {"wasserstein", "wassersteinNorm"}:
        w1 = wasserstein(p, q, edges)
        scores["wasserstein"] = w1
        if "wassersteinNorm" in wanted:
            sd = baseline_feature.get("stddev")
            if sd is None:
                raise ValueError(f"baseline feature {name!r}: 'stddev' is needed by wassersteinNorm")
            sd = _non_negative(sd, f"baseline feature {name!r} stddev")
            scores["wassersteinNorm"] = None if sd == 0 else w1 / sd
    return scores


def _categorical_scores(name: str, window_feature: Mapping, baseline_feature: Mapping,
                        wanted: set[str]) -> dict[str, float | None] | None:
    if "frequencies" not in baseline_feature:
        raise ValueError(f"baseline feature {name!r}: 'frequencies' is needed for categorical drift")
    _, win, base = categorical_bins(window_feature.get("categories") or {},
                                    baseline_feature["frequencies"], name)
    if win.sum() == 0:
        return None
    q = smooth(base)
    scores: dict[str, float | None] = {}
    if "jensenShannon" in wanted:
        scores["jensenShannon"] = jensen_shannon(smooth(win), q)
    if "chiSquare" in wanted:
        scores["chiSquare"] = chi_square(win, q)
    return scores


def measure_drift(window_record: Mapping[str, Any], baseline: Mapping[str, Any],
                  detectors: Sequence[_spec.DetectorSpec],
                  features: Sequence[_spec.Feature]) -> dict[str, dict[str, dict[str, Any]]]:
    """Score each feature of a closed window against the baseline with the configured detectors.

    Returns ``{feature: {metric: {"value", "threshold", "drifted"}}}`` with
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
    for d in detectors:
        if d.name not in _spec.DETECTORS:
            raise ValueError(f"unknown drift detector {d.name!r} (known: {', '.join(_spec.DETECTORS)})")
        if not (isinstance(d.threshold, (int, float)) and math.isfinite(d.threshold)):
            raise ValueError(f"drift detector {d.name!r}: threshold must be a finite number, got {d.threshold!r}")
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
        entries = {}
        for d in applicable:
            value = scores.get(d.name)
            if value is None:
                continue
            drifted = bool(value > d.threshold)
            if drifted or d.show_all:
                entries[d.name] = {"value": float(value), "threshold": float(d.threshold), "drifted": drifted}
        if entries:
            result[feature.name] = entries
    return result


def drifted_feature_names(measured: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Names of the features with at least one drifted score in a :func:`measure_drift` result.

    >>> drifted_feature_names({"a": {"psi": {"drifted": False}}, "b": {"psi": {"drifted": True}}})
    ['b']
    """
    return [name for name, scores in measured.items() if any(s.get("drifted") for s in scores.values())]


# --------------------------------------------------------------------------------------------
# Alert policy
# --------------------------------------------------------------------------------------------

_STATE_KEYS = ("streak", "lastAlertEndMs", "lastWindowEndMs")


def _check_state(state: Any) -> dict:
    if state is None:
        return {"streak": 0, "lastAlertEndMs": None, "lastWindowEndMs": None}
    if not isinstance(state, Mapping):
        raise ValueError(f"alert state: expected a mapping with {', '.join(_STATE_KEYS)}, got {state!r}")
    streak = state.get("streak", 0)
    if isinstance(streak, bool) or not isinstance(streak, int) or streak < 0:
        raise ValueError(f"alert state: streak must be a non-negative integer, got {streak!r}")
    for key in ("lastAlertEndMs", "lastWindowEndMs"):
        v = state.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"alert state: {key} must be an integer (ms) or null, got {v!r}")
    # Keys other than ours are kept: callers may store their own bookkeeping alongside.
    return {**state, "streak": streak, "lastAlertEndMs": state.get("lastAlertEndMs"),
            "lastWindowEndMs": state.get("lastWindowEndMs")}


def evaluate_alert(state: Mapping[str, Any] | None, *, window_end_ms: int, window_count: int,
                   drifted_features: Sequence[str], policy: _spec.AlertSpec,
                   monitored_features: int | None = None) -> tuple[dict, dict | None]:
    """Advance the alert policy by one closed window; return ``(new_state, alert or None)``.

    Windows are evaluated in the order of their ends. A window ending at or before
    ``lastWindowEndMs`` was already evaluated (a redelivery) and changes nothing. A window with
    fewer than ``policy.min_window_count`` instances is too small to judge: it neither fires nor
    extends nor breaks the streak. Otherwise a window with any drifted feature extends the streak
    and one without resets it. The alert fires once the streak reaches
    ``policy.consecutive_windows``, unless an earlier alert ended less than ``policy.cooldown_ms``
    before this window's end (event time, so replays give the same alerts). Severity is
    ``critical`` when more than half of the ``monitored_features`` (how many features the drift
    detectors watch) drifted, else ``warning``; without that count severity stays ``warning``,
    since "more than half" cannot be judged.

    >>> from modelmonitor.core.spec import AlertSpec
    >>> policy = AlertSpec(min_window_count=10, consecutive_windows=2, cooldown_ms=60_000)
    >>> s, alert = evaluate_alert(None, window_end_ms=15_000, window_count=50,
    ...                           drifted_features=["x"], policy=policy, monitored_features=3)
    >>> s["streak"], alert
    (1, None)
    >>> s, alert = evaluate_alert(s, window_end_ms=30_000, window_count=50,
    ...                           drifted_features=["x"], policy=policy, monitored_features=3)
    >>> alert["severity"], s["lastAlertEndMs"]
    ('warning', 30000)
    """
    current = _check_state(state)
    for name, v in (("window_end_ms", window_end_ms), ("window_count", window_count),
                    ("monitored_features", 1 if monitored_features is None else monitored_features)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"evaluate_alert: {name} must be an integer, got {v!r}")
    if window_count < 0:
        raise ValueError(f"evaluate_alert: window_count must not be negative, got {window_count}")
    if isinstance(drifted_features, str) or not all(isinstance(f, str) for f in drifted_features):
        raise ValueError(f"evaluate_alert: drifted_features must be a list of feature names, "
                         f"got {drifted_features!r}")
    drifted = list(dict.fromkeys(drifted_features))     # drop duplicates, keep order
    if monitored_features is not None and monitored_features < max(len(drifted), 1):
        raise ValueError(f"evaluate_alert: monitored_features ({monitored_features}) must be at least 1 "
                         f"and at least the number of drifted features ({len(drifted)})")

    last_window = current["lastWindowEndMs"]
    if last_window is not None and window_end_ms <= last_window:
        return current, None
    new_state = dict(current, lastWindowEndMs=int(window_end_ms))
    if window_count < policy.min_window_count:
        return new_state, None
    new_state["streak"] = current["streak"] + 1 if drifted else 0
    if new_state["streak"] < policy.consecutive_windows:
        return new_state, None
    last_alert = current["lastAlertEndMs"]
    if last_alert is not None and window_end_ms < last_alert + policy.cooldown_ms:
        return new_state, None
    new_state["lastAlertEndMs"] = int(window_end_ms)
    severity = "critical" if monitored_features is not None and 2 * len(drifted) > monitored_features \
        else "warning"
    streak = new_state["streak"]
    of_total = f" of {monitored_features}" if monitored_features is not None else ""
    reason = (f"{len(drifted)}{of_total} features drifted ({', '.join(drifted)}) "
              f"for {streak} consecutive window{'s' if streak != 1 else ''}")
    return new_state, {"severity": severity, "reason": reason}
