"""Multivariate drift of a closed window: mean shift (Hotelling) and covariance change.

Both read only what the window state keeps anyway (count, mean vector, covariance from the
co-moments) and the baseline's means and covariance (``numpy.cov``, ddof=1), over the numerical
features of the baseline's covariance, in its order. With ``n`` the window count, ``d`` the
window mean minus the baseline mean, ``S0`` the baseline covariance, ``S`` the window's sample
covariance (ddof=1) and ``p`` the number of features:

- ``hotelling``: ``T2 = n * d' S0^-1 d``. The baseline is taken as the population (it is usually
  far larger than a window), so under no drift T2 follows a chi-square distribution with ``p``
  degrees of freedom whatever the window size. It also reports ``meanDistance = sqrt(T2 / n)``,
  the Mahalanobis distance of the mean shift (in baseline standard deviations): T2 grows with
  the window, so a large window flags tiny shifts; a threshold of ``n * D^2`` asks for a shift
  of at least D.
- ``covarianceChange``: the likelihood-ratio statistic for ``Sigma = S0``,
  ``(n - 1) * (tr(S0^-1 S) - ln det(S0^-1 S) - p)``; under no drift approximately chi-square with
  ``p(p+1)/2`` degrees of freedom (windows much larger than ``p``). Undefined (left out) while
  the window covariance is singular, e.g. ``n <= p``.

A singular baseline covariance (a constant or collinear feature) is handled with its
pseudo-inverse and ``p`` replaced by its rank. Each score reports ``dof`` and ``pValue``.

>>> baseline = {"features": {"a": {"mean": 0.0}, "b": {"mean": 0.0}},
...             "covariance": {"features": ["a", "b"], "matrix": [[1.0, 0.0], [0.0, 4.0]]}}
>>> window = {"count": 100, "features": {"a": {"count": 100, "mean": 0.3}, "b": {"count": 100, "mean": 0.0}},
...           "covariance": {"features": ["a", "b"], "matrix": [[1.0, 0.0], [0.0, 4.0]]}}
>>> out = multivariate_scores(window, baseline, {"hotelling", "covarianceChange"})
>>> round(out["hotelling"]["value"], 9), out["hotelling"]["dof"], round(out["covarianceChange"]["value"], 9)
(9.0, 2, 0.0)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelmonitor.detect.categorical import chi_square_sf

__all__ = ["MULTIVARIATE", "multivariate_scores"]

MULTIVARIATE = ("hotelling", "covarianceChange")


def _matrix(block: Any, what: str) -> tuple[list[str], np.ndarray]:
    if not isinstance(block, Mapping) or not isinstance(block.get("features"), list):
        raise ValueError(f"{what}: expected {{features: [names], matrix: [[...]]}}")
    names = block["features"]
    try:
        matrix = np.asarray(block.get("matrix"), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: matrix must hold numbers (null entries are not allowed)") from None
    if matrix.shape != (len(names), len(names)) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"{what}: expected a finite {len(names)} x {len(names)} matrix")
    return names, matrix


def _mean(feature: Any, what: str) -> float:
    value = feature.get("mean") if isinstance(feature, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{what}: a finite mean is required")
    return float(value)


def multivariate_scores(window_record: Mapping[str, Any], baseline: Mapping[str, Any], wanted: set[str],
                        window_covariance_ddof: int = 1) -> dict[str, dict[str, Any]]:
    """``{metric: {"value", "dof", "pValue"}}`` for the wanted multivariate metrics.

    Empty when there is nothing to compare: fewer than 2 numerical features in the baseline's
    covariance, a window with fewer than 2 instances, or (for ``covarianceChange``) no window
    covariance. ``window_covariance_ddof`` says how the window's covariance was computed
    (``spec.stats.covariance.type``: 1 for sample, 0 for population).
    """
    wanted = set(wanted) & set(MULTIVARIATE)
    base_cov = baseline.get("covariance")
    if not wanted or not base_cov or len(base_cov.get("features") or []) < 2:
        return {}
    names, s0 = _matrix(base_cov, "baseline covariance")
    n = window_record.get("count")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        return {}
    window_features, base_features = window_record.get("features") or {}, baseline["features"]
    if any(not (window_features.get(f) or {}).get("count") for f in names):
        return {}                                    # a feature with no values in this window
    d = np.array([_mean(window_features.get(f), f"window feature {f!r}")
                  - _mean(base_features.get(f), f"baseline feature {f!r}") for f in names])
    # Whiten with the baseline covariance: W' S0 W = I on its range (rank r <= p).
    eigenvalues, vectors = np.linalg.eigh(s0)
    keep = eigenvalues > max(float(eigenvalues.max()), 0.0) * 1e-12
    rank = int(keep.sum())
    if rank == 0:
        return {}
    whiten = vectors[:, keep] / np.sqrt(eigenvalues[keep])
    scores: dict[str, dict[str, Any]] = {}
    if "hotelling" in wanted:
        z = whiten.T @ d
        t2 = float(n * z @ z)
        scores["hotelling"] = {"value": t2, "dof": rank, "pValue": chi_square_sf(t2, rank),
                               "meanDistance": float(np.sqrt(t2 / n))}
    if "covarianceChange" in wanted and window_record.get("covariance"):
        w_names, s = _matrix(window_record["covariance"], "window covariance")
        if set(names) <= set(w_names):
            index = [w_names.index(f) for f in names]
            s = s[np.ix_(index, index)] * (n / (n - 1) if window_covariance_ddof == 0 else 1.0)
            m = whiten.T @ s @ whiten                 # S0^-1 S in whitened coordinates
            sign, logdet = np.linalg.slogdet(m)
            if sign > 0 and np.isfinite(logdet):
                value = max(float((n - 1) * (np.trace(m) - logdet - rank)), 0.0)
                dof = rank * (rank + 1) // 2
                scores["covarianceChange"] = {"value": value, "dof": dof, "pValue": chi_square_sf(value, dof)}
    return scores
