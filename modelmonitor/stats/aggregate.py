"""Window statistics as mergeable aggregates: one module per statistic, re-exported here.

One small class per statistic, in the style of River's ``stats``: ``update(values)`` takes a whole
batch (vectorised NumPy, no Python loop per value), ``merge(other)`` folds another partial in
place and returns ``self``, ``get()`` reads the result, and ``to_bytes()`` / ``from_bytes()`` give
a compact binary form. Merging is associative and commutative (up to float rounding, and within
the sketches' error bounds), so a window's partials can be built by any number of aggregator
replicas and combined in any order.

=================  ==========================================================================
``Count``          number of values                                    (:mod:`.count`)
``Sum``            sum of the values                                   (:mod:`.total`)
``Min``/``Max``    extremes (``None`` while empty)                     (:mod:`.extremes`)
``Moments``        count, mean and M2, Chan et al.'s parallel merge    (:mod:`.moments`)
``Quantiles``      KLL sketch (DataSketches, k=400): rank error < 1%   (:mod:`.quantiles`)
``Histogram``      counts over fixed edges plus under/overflow         (:mod:`.histogram`)
``CoMoments``      co-moment matrix -> covariance, Pearson correlation (:mod:`.comoments`)
``CategoryCounts`` exact counts up to a bound, then frequent items     (:mod:`.categories`)
=================  ==========================================================================

:class:`WindowAggregate` (:mod:`.window`) bundles them for one window over a monitor's layout.

>>> from modelmonitor.core.spec import Feature, StatsSpec
>>> w = WindowAggregate([Feature("a", "numerical", 0)])
>>> w.update_columns(np.array([[1.0], [2.0], [4.0]]))
>>> w.finalize(StatsSpec(percentiles=(50.0,), iqr=False))["features"]["a"]["percentiles"]
{'50': 2.0}
"""
from __future__ import annotations

import math
import time

import numpy as np

from modelmonitor.core import spec
from modelmonitor.stats._codec import percentile_key
from modelmonitor.stats.categories import CategoryCounts
from modelmonitor.stats.comoments import CoMoments
from modelmonitor.stats.count import Count
from modelmonitor.stats.extremes import Max, Min
from modelmonitor.stats.histogram import Histogram
from modelmonitor.stats.moments import Moments
from modelmonitor.stats.quantiles import Quantiles
from modelmonitor.stats.total import Sum
from modelmonitor.stats.window import WindowAggregate

__all__ = [
    "Count", "Sum", "Min", "Max", "Moments", "Quantiles", "Histogram", "CoMoments", "CategoryCounts",
    "WindowAggregate", "aggregate_throughput", "percentile_key",
]


def aggregate_throughput(n_instances: int = 1_000_000, n_features: int = 4, repeats: int = 3,
                         batch_size: int = 10_000, seed: int = 0) -> float:
    """Instances per second of the NumPy batch path (best of ``repeats``), for ``modelmonitor bench``.

    Builds one window from random normal data in batches of ``batch_size``: each batch becomes a
    partial :class:`WindowAggregate` (``update_arrays``) merged into the window, which is then
    finalised with the default :class:`spec.StatsSpec` (20-bin histograms, covariance, correlation).

    >>> aggregate_throughput(n_instances=2_000, repeats=1, batch_size=500) > 0
    True
    """
    for name, value, low in (("n_instances", n_instances, 1), ("n_features", n_features, 1),
                             ("repeats", repeats, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    features = [spec.Feature(f"x{i}", spec.NUMERICAL, i) for i in range(n_features)]
    edges = {f.name: np.linspace(-4.0, 4.0, 21) for f in features}
    data = np.random.default_rng(seed).normal(size=(n_instances, n_features))
    stats_spec = spec.StatsSpec()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        window = WindowAggregate(features, edges)
        for start in range(0, n_instances, batch_size):
            partial = WindowAggregate(features, edges)
            partial.update_arrays(data[start:start + batch_size])
            window.merge(partial)
        window.finalize(stats_spec)
        best = min(best, time.perf_counter() - started)
    return n_instances / best
