"""Binned drift metrics: smoothing and divergences on bin probabilities (DESIGN section 3 "Drift").

Bins. A numerical feature has the baseline's K inner bins plus an underflow and an overflow bin
(K+2 in all), so values outside the baseline range show up as drift instead of disappearing (the
thesis dropped them). The baseline has no mass outside its own range: its K counts are padded with
a 0 at each end.

Smoothing. Both sides are smoothed as ``p_i = (c_i + EPS) / (n + B*EPS)`` over their B bins, so a
bin that is empty on one side gives a large but finite divergence (the thesis skipped such bins
in KL and so missed exactly the drift into new ranges).

The Wasserstein-1 and KS functions here work on the bins; :mod:`modelmonitor.detect.quantile_sketch`
computes both exactly from quantile sketches, which is what ``drift.measured`` reports whenever the
window and the baseline carry one.

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

__all__ = [
    "EPS", "smooth", "numerical_bins",
    "jensen_shannon", "kullback_leibler", "psi", "hellinger", "kolmogorov_smirnov",
    "bin_centres", "wasserstein", "wasserstein_norm", "chi_square",
]

EPS = 1e-6
"""Pseudo-count added to every bin before normalising (DESIGN section 3)."""

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
    # Quick check (two reductions instead of four): a non-negative minimum and a finite sum mean
    # every count is finite and non-negative. Anything else takes the checks that say what is wrong.
    if c.min() >= 0 and math.isfinite(c.sum()):
        return c
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
    return smooth_counts(c, eps)


def smooth_counts(c: np.ndarray, eps: float = EPS) -> np.ndarray:
    """:func:`smooth` of a count vector already validated (finite, non-negative, 1-D)."""
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
    win, base = binned_pair(window_histogram, baseline_feature, feature)
    return win, base.padded.copy(), base.edges.copy()


class BaselineBins:
    """One numerical baseline feature, validated and prepared once: its K+1 ``edges``, its counts
    ``padded`` to K+2 with empty under- and overflow bins, their smoothed probabilities ``q``,
    and the ``centres`` of the K+2 bins with their ``steps`` (read-only arrays, shared)."""

    __slots__ = ("edges", "padded", "q", "centres", "steps")

    def __init__(self, baseline_feature: Mapping[str, Any], feature: str):
        if "edges" not in baseline_feature or "counts" not in baseline_feature:
            raise ValueError(f"baseline feature {feature!r}: needs 'edges' and 'counts' for drift")
        edges = _edges_vector(baseline_feature["edges"], f"baseline feature {feature!r} edges")
        base = _counts_vector(baseline_feature["counts"], f"baseline feature {feature!r} counts")
        k = edges.size - 1
        if base.size != k:
            raise ValueError(f"baseline feature {feature!r}: {base.size} counts for {k} bins "
                             f"({edges.size} edges)")
        self.edges = edges
        self.padded = np.concatenate(([0.0], base, [0.0]))
        self.q = smooth(self.padded)
        self.centres = bin_centres(edges)
        self.steps = np.diff(self.centres)
        for array in (self.edges, self.padded, self.q, self.centres, self.steps):
            array.flags.writeable = False


# Prepared baseline features by value (edges and counts as tuples: hashing 2 x 21 floats costs
# ~1 us, preparing ~40 us); a baseline is the same document for every window of a monitor.
_BASELINE_BINS: dict[tuple, BaselineBins] = {}
_BASELINE_BINS_MAX = 1024


def baseline_bins(baseline_feature: Mapping[str, Any], feature: str = "feature") -> BaselineBins:
    """:class:`BaselineBins` of a baseline feature (cached by its edges and counts)."""
    try:
        key = (tuple(baseline_feature["edges"]), tuple(baseline_feature["counts"]))
        cached = _BASELINE_BINS.get(key)
    except (KeyError, TypeError):   # missing or not hashable: let the checks say what is wrong
        return BaselineBins(baseline_feature, feature)
    if cached is None:
        cached = BaselineBins(baseline_feature, feature)
        if len(_BASELINE_BINS) >= _BASELINE_BINS_MAX:
            _BASELINE_BINS.clear()
        _BASELINE_BINS[key] = cached
    return cached


def binned_pair(window_histogram: Mapping[str, Any], baseline_feature: Mapping[str, Any],
                feature: str = "feature") -> tuple[np.ndarray, BaselineBins]:
    """The window's K+2 counts (validated) and the prepared baseline: :func:`numerical_bins`
    without copying the baseline's arrays."""
    base = baseline_bins(baseline_feature, feature)
    k = base.edges.size - 1
    if not isinstance(window_histogram, Mapping) or "counts" not in window_histogram:
        raise ValueError(f"window feature {feature!r}: histogram with 'counts' is missing")
    win = _counts_vector(window_histogram["counts"], f"window feature {feature!r} histogram counts")
    if win.size != k + 2:
        raise ValueError(f"window feature {feature!r}: histogram has {win.size} counts, expected "
                         f"{k + 2} (underflow, {k} baseline bins, overflow)")
    w_raw = window_histogram.get("edges")
    # The aggregator copies the baseline's edges: equal values need no numeric comparison.
    if w_raw is not None and not (type(w_raw) is list and w_raw == baseline_feature["edges"]):
        w_edges = _edges_vector(w_raw, f"window feature {feature!r} histogram edges")
        if w_edges.size != base.edges.size or not np.allclose(w_edges, base.edges, rtol=1e-9, atol=1e-12):
            raise ValueError(f"window feature {feature!r}: histogram edges differ from the baseline "
                             "edges (was the window binned against another baseline?)")
    return win, base


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
    # Quick check: a finite sum means finite edges; then only the steps need to be positive.
    if math.isfinite(e.sum()) and np.diff(e).min() > 0:
        return e
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
    if a.min() > 0 and b.min() > 0:   # smoothed vectors: no convention applies
        return a * np.log(a / b)
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
    return _kullback_leibler(*_distributions(p, q))


def _kullback_leibler(pa: np.ndarray, qa: np.ndarray) -> float:
    return float(max(_relative_entropy_terms(pa, qa).sum(), 0.0))


def jensen_shannon(p: Any, q: Any) -> float:
    """Jensen-Shannon divergence with log base 2, in [0, 1] (the square of SciPy's distance).

    >>> jensen_shannon([1.0, 0.0], [0.0, 1.0])
    1.0
    >>> round(jensen_shannon([0.5, 0.5], [0.9, 0.1]), 6)
    0.146793
    """
    return _jensen_shannon(*_distributions(p, q))


def _jensen_shannon(pa: np.ndarray, qa: np.ndarray) -> float:
    m = (pa + qa) / 2.0
    nats = 0.5 * _relative_entropy_terms(pa, m).sum() + 0.5 * _relative_entropy_terms(qa, m).sum()
    # Rounding can push identical inputs a hair below 0 or disjoint ones a hair above 1.
    return float(min(max(nats / math.log(2.0), 0.0), 1.0))


def psi(p: Any, q: Any) -> float:
    """Population stability index ``sum (p_i - q_i) ln(p_i / q_i)`` (= KL(p||q) + KL(q||p)).

    >>> round(psi([0.5, 0.5], [0.9, 0.1]), 6)
    0.87889
    """
    return _psi(*_distributions(p, q))


def _psi(pa: np.ndarray, qa: np.ndarray) -> float:
    return float(max(_relative_entropy_terms(pa, qa).sum() + _relative_entropy_terms(qa, pa).sum(), 0.0))


def hellinger(p: Any, q: Any) -> float:
    """Hellinger distance ``sqrt(1 - sum sqrt(p_i q_i))`` in [0, 1].

    >>> hellinger([1.0, 0.0], [0.0, 1.0]), hellinger([0.3, 0.7], [0.3, 0.7])
    (1.0, 0.0)
    """
    return _hellinger(*_distributions(p, q))


def _hellinger(pa: np.ndarray, qa: np.ndarray) -> float:
    return float(math.sqrt(max(1.0 - float(np.sqrt(pa * qa).sum()), 0.0)))


def kolmogorov_smirnov(p: Any, q: Any) -> float:
    """Kolmogorov-Smirnov statistic of the binned distributions: ``max |P_i - Q_i|`` of the CDFs.

    >>> round(kolmogorov_smirnov([0.2, 0.3, 0.5], [0.5, 0.3, 0.2]), 6)
    0.3
    """
    return _kolmogorov_smirnov(*_distributions(p, q))


def _kolmogorov_smirnov(pa: np.ndarray, qa: np.ndarray) -> float:
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
    return probability_wasserstein(pa, qa, np.diff(centres))


def probability_wasserstein(pa: np.ndarray, qa: np.ndarray, steps: np.ndarray) -> float:
    """W1 on the line = integral of |CDF_p - CDF_q|; the CDFs are steps between sorted centres
    ``steps`` apart."""
    cdf_gap = np.abs(np.cumsum(pa) - np.cumsum(qa))[:-1]
    return float(np.dot(cdf_gap, steps))


#: The binned metrics of two validated probability vectors (what drift's per-window loop calls).
PROBABILITY_METRICS = {"jensenShannon": _jensen_shannon, "kullbackLeibler": _kullback_leibler,
                       "psi": _psi, "hellinger": _hellinger, "kolmogorovSmirnov": _kolmogorov_smirnov}


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
