"""The ``window.closed`` record of a window's statistics (what ``WindowAggregate.finalize``
returns): per numerical feature count, min, max, mean, stddev, variance, sum, percentiles, IQR,
histogram and KLL sketch; per categorical feature counts, unseen share and missing values;
covariance and correlation of the numerical features. Field meanings: docs/events.md.
"""
from __future__ import annotations

from typing import Any, Sequence

from modelmonitor.core import spec
from modelmonitor.detect.quantile_sketch import encode_kll
from modelmonitor.stats._codec import _DDOF, _plain, percentile_key
from modelmonitor.stats.categories import CategoryCounts
from modelmonitor.stats.comoments import CoMoments


def ddof_of(kind: str, what: str) -> int:
    """Delta degrees of freedom of "sample" (1) or "population" (0).

    >>> ddof_of("sample", "stddev"), ddof_of("population", "covariance")
    (1, 0)
    """
    if kind not in _DDOF:
        raise ValueError(f"{what} type {kind!r} is not sample or population")
    return _DDOF[kind]


def numerical_record(stats, spec_: spec.StatsSpec, ddof: int) -> dict:
    """The record of one numerical feature (``stats``: its moments, extremes, sum, quantiles and
    histogram, as ``WindowAggregate`` keeps them)."""
    wanted = [float(q) for q in spec_.percentiles]
    needed = sorted(set(wanted) | ({25.0, 75.0} if spec_.iqr else set()))
    values = dict(zip(needed, stats.quantiles.percentile(needed))) if needed else {}
    record: dict[str, Any] = {
        "count": stats.moments.count,
        "min": _plain(stats.min.get()),
        "max": _plain(stats.max.get()),
        "mean": _plain(stats.moments.mean) if stats.moments.count else None,
        "stddev": _plain(stats.moments.stddev(ddof)),
        "variance": _plain(stats.moments.variance(ddof)),
        "sum": _plain(stats.sum.get()),
        "percentiles": {percentile_key(q): _plain(values[q]) for q in wanted},
    }
    if spec_.iqr:
        p25, p75 = values[25.0], values[75.0]
        record["iqr"] = None if p25 is None else _plain(p75 - p25)
    hist = stats.histogram
    record["histogram"] = None if hist is None else {
        "edges": hist.edges.tolist(), "counts": hist.counts.tolist()}
    if spec_.quantile_sketch and stats.moments.count:
        # For the drift function's exact Wasserstein-1 / KS (modelmonitor.detect.quantile_sketch).
        record["quantileSketch"] = encode_kll(stats.quantiles.sketch)
    return record


def categorical_record(counts: CategoryCounts) -> dict:
    """The record of one categorical feature; ``other`` once past the exact bound."""
    record = {"count": counts.count, "categories": counts.get(),
              "unseenShare": _plain(counts.unseen_share), "missing": counts.missing}
    if not counts.exact:  # past the exact bound: what the sketch does not list
        record["other"] = counts.other
    return record


def comoment_records(comoments: CoMoments | None, names: Sequence[str],
                     stats: spec.StatsSpec) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(covariance, correlation)`` of the numerical features, each None when not asked for
    (or when the window keeps no co-moments)."""
    covariance = correlation = None
    if comoments is not None:
        if stats.covariance:
            covariance = {"features": list(names),
                          "matrix": comoments.covariance(ddof_of(stats.covariance_type, "covariance"))}
        if stats.correlation:
            correlation = {"features": list(names), "matrix": comoments.correlation()}
    return covariance, correlation
