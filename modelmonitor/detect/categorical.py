"""Drift of a categorical feature: chi-square over the baseline's categories, unseen share, JS.

Category set. The baseline's categories with a positive frequency, sorted, are the bins. A window
value of any other category (one the baseline never saw, or saw with frequency 0) is *unseen*.

- ``chiSquare``: Pearson's statistic ``sum (O_i - E_i)^2 / E_i`` over the baseline's categories
  only, ``E_i = n_seen * q_i`` with ``q_i`` the baseline's (unsmoothed) share of category i and
  ``n_seen`` the window values in baseline categories. Under no drift it follows a chi-square
  distribution with ``K - 1`` degrees of freedom (K baseline categories), whatever the window
  size, so a threshold is a critical value: for a false flag rate of 0.1% use 10.8 (K=2),
  13.8 (K=3), 16.3 (K=4), 20.5 (K=6), 27.9 (K=10). The score also reports ``dof`` and ``pValue``.
  Unseen values do not enter it: they are their own rule.
- ``unseenShare``: the share of the window's values whose category is unseen, in [0, 1].
- ``jensenShannon``: over the baseline's categories plus one ``unseen`` bin, both sides smoothed
  as ``(c_i + 1e-6) / (n + B*1e-6)`` over those B = K + 1 bins.

>>> scores = categorical_scores({"a": 30, "b": 10, "z": 10}, {"a": 60, "b": 40},
...                             {"chiSquare", "unseenShare"})
>>> round(scores["chiSquare"]["value"], 6), scores["chiSquare"]["dof"], scores["unseenShare"]["value"]
(3.75, 1, 0.2)
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelmonitor.detect.metrics import _non_negative, jensen_shannon, smooth

__all__ = ["UNSEEN", "categorical_bins", "chi_square_sf", "categorical_scores"]

UNSEEN = "__unseen__"
"""Label of the categorical bin that collects window categories absent from the baseline."""


def categorical_bins(window_categories: Mapping[str, float], baseline_frequencies: Mapping[str, float],
                     feature: str = "feature") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bin labels, window counts and baseline counts over sorted baseline categories + ``unseen``.

    Baseline categories with frequency 0 are not bins (their window values count as unseen).

    >>> labels, w, b = categorical_bins({"b": 2, "z": 1, "y": 3}, {"b": 4, "a": 6, "q": 0})
    >>> labels, w.tolist(), b.tolist()
    (['a', 'b', '__unseen__'], [0.0, 2.0, 4.0], [6.0, 4.0, 0.0])
    """
    if not isinstance(baseline_frequencies, Mapping):
        raise ValueError(f"baseline feature {feature!r}: frequencies must be a mapping value -> count")
    if not isinstance(window_categories, Mapping):
        raise ValueError(f"window feature {feature!r}: categories must be a mapping value -> count")
    frequencies = {label: _non_negative(count, f"baseline feature {feature!r} frequency of {label!r}")
                   for label, count in baseline_frequencies.items()}
    labels = sorted(label for label, count in frequencies.items() if count > 0)
    index = {label: i for i, label in enumerate(labels)}
    base = np.array([frequencies[label] for label in labels] + [0.0])
    win = np.zeros(len(labels) + 1)
    for value, count in window_categories.items():
        win[index.get(value, len(labels))] += _non_negative(count, f"window feature {feature!r} "
                                                                    f"category {value!r}")
    return labels + [UNSEEN], win, base


def chi_square_sf(statistic: float, dof: int) -> float:
    """``P(X >= statistic)`` for X chi-square with integer ``dof`` (closed forms, no SciPy at run time).

    >>> round(chi_square_sf(3.841459, 1), 6), round(chi_square_sf(5.991465, 2), 6)
    (0.05, 0.05)
    """
    if dof < 1:
        raise ValueError(f"chi_square_sf: dof must be at least 1, got {dof}")
    x = max(float(statistic), 0.0)
    half = x / 2.0
    if dof % 2 == 0:                       # e^-x/2 * sum_{i < dof/2} (x/2)^i / i!
        term, total = 1.0, 1.0
        for i in range(1, dof // 2):
            term *= half / i
            total += term
        return float(min(math.exp(-half) * total, 1.0))
    # Odd dof: erfc(sqrt(x/2)) + e^-x/2 * sum_{i=1}^{(dof-1)/2} (x/2)^(i-1/2) / Gamma(i + 1/2)
    total = math.erfc(math.sqrt(half))
    if dof > 1 and x > 0:
        term = math.sqrt(half) / math.gamma(1.5)
        acc = term
        for i in range(2, (dof - 1) // 2 + 1):
            term *= half / (i - 0.5)
            acc += term
        total += math.exp(-half) * acc
    return float(min(total, 1.0))


def categorical_scores(window_categories: Mapping[str, Any], baseline_frequencies: Mapping[str, Any],
                       wanted: set[str], feature: str = "feature") -> dict[str, dict[str, Any]] | None:
    """``{metric: {"value", ...extra}}`` for the wanted categorical metrics; None for an empty window."""
    labels, win, base = categorical_bins(window_categories, baseline_frequencies, feature)
    total = float(win.sum())
    if total == 0:
        return None
    scores: dict[str, dict[str, Any]] = {}
    if "jensenShannon" in wanted:
        scores["jensenShannon"] = {"value": jensen_shannon(smooth(win), smooth(base))}
    if "unseenShare" in wanted:
        scores["unseenShare"] = {"value": float(win[-1] / total)}
    seen, expected_share = win[:-1], base[:-1]
    n_seen = float(seen.sum())
    if "chiSquare" in wanted and n_seen > 0 and seen.size >= 2:
        expected = n_seen * expected_share / expected_share.sum()
        statistic = float(np.sum((seen - expected) ** 2 / expected))
        dof = int(seen.size - 1)
        scores["chiSquare"] = {"value": statistic, "dof": dof, "pValue": chi_square_sf(statistic, dof)}
    return scores
