"""Wasserstein-1 and Kolmogorov-Smirnov between quantile sketches, in the feature's own units.

A numerical feature of the baseline and of a ``window.closed`` record may carry a
``quantileSketch``: the exact values, an Apache DataSketches KLL sketch of them, or block means::

    {"kind": "exact", "values": [sorted numbers]}
    {"kind": "kll", "k": 200, "n": 12345, "sketch": "<base64 of kll_doubles_sketch.serialize()>"}
    {"kind": "blocks", "values": [block means, sorted], "weights": [block sizes], "min": .., "max": ..}

``blocks`` cuts the sorted values into consecutive blocks (sizes differing by at most one) and
keeps each block's mean and size: deterministic (a KLL sketch compacts with random bits, so the
same window would give different bytes), with a rank error of at most ``max(weights) / n``.

Each form is a weighted sample (a KLL sketch retains some of the items, each with a weight
2^level); its empirical CDF ``F^`` is the distribution the sketch estimates. Between two of them
both distances are computed exactly, on the merged support:

- Wasserstein-1 ``W1 = integral |F(x) - G(x)| dx`` (= the integral of the gap between the two
  quantile functions), in the feature's units;
- Kolmogorov-Smirnov ``D = sup_x |F(x) - G(x)|``, as ``scipy.stats.ks_2samp`` defines it.

Error bound. An exact side has no error. A KLL side in estimation mode has ``|F^(x) - F(x)| <= e``
at 99% confidence, with ``e = kll_doubles_sketch.get_normalized_rank_error(k, True)`` (the
double-sided CDF error: 1.65% for k=200, 0.86% for k=400, 0.45% for k=800); it retains the true
minimum and maximum, so outside ``[min, max]`` both CDFs agree. A ``blocks`` side has
``e = max(weights) / n`` with certainty (a block's mean lies inside the block). Hence::

    |D^ - D|   <= e_window + e_baseline
    |W1^ - W1| <= e_window * (max_w - min_w) + e_baseline * (max_b - min_b)

which ``drift.measured`` reports as the score's ``bound``.

>>> a = sketch_from_values([0.0, 1.0, 2.0, 3.0])
>>> b = sketch_from_values([10.0, 11.0, 12.0, 13.0])
>>> qa, qb = decode(a), decode(b)
>>> wasserstein_distance(qa, qb), ks_statistic(qa, qb), error_bounds(qa, qb)
(10.0, 1.0, (0.0, 0.0))
"""
from __future__ import annotations

import base64
import binascii
import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "BASELINE_EXACT_LIMIT", "BASELINE_K", "WINDOW_K", "WINDOW_EXACT_LIMIT", "WINDOW_BLOCKS",
    "QuantileSample", "sketch_from_values", "blocks_from_values", "encode_kll", "decode", "wasserstein_distance", "ks_statistic", "error_bounds",
]

BASELINE_EXACT_LIMIT = 4096
"""A training feature with at most this many values keeps them all (exact); above, a KLL sketch."""

BASELINE_K = 800
"""KLL parameter of baseline sketches: CDF error at most 0.45% (99% confidence), ~26 KB of JSON."""

WINDOW_K = 400
"""KLL parameter of window sketches: CDF error at most 0.86% (99% confidence)."""

WINDOW_EXACT_LIMIT = 1024
"""A window with at most this many values of a feature sends them all."""

WINDOW_BLOCKS = 512
"""Above that, a window sends 512 block means: CDF error at most 1/512 + 1/n (about 0.2%)."""

# A sketch field is small by construction; anything far larger is not one of ours.
_MAX_SKETCH_CHARS = 8_000_000


@dataclass(frozen=True)
class QuantileSample:
    """A weighted sample: sorted ``values`` with ``weights``; ``rank_error`` bounds its CDF error."""
    values: np.ndarray
    weights: np.ndarray
    rank_error: float
    minimum: float
    maximum: float

    @property
    def total(self) -> float:
        return float(self.weights.sum())


def _kll():
    import datasketches  # imported on use: only sketches need it
    return datasketches.kll_doubles_sketch


def sketch_from_values(values: Sequence[float] | np.ndarray, *, exact_limit: int = BASELINE_EXACT_LIMIT,
                       k: int = BASELINE_K) -> dict:
    """The ``quantileSketch`` field of finite values: exact up to ``exact_limit`` values, else KLL.

    >>> sketch_from_values([3.0, 1.0, 2.0])
    {'kind': 'exact', 'values': [1.0, 2.0, 3.0]}
    >>> field = sketch_from_values(np.arange(10_000.0), exact_limit=100, k=200)
    >>> field["kind"], field["k"], field["n"]
    ('kll', 200, 10000)
    """
    x = np.array(values, dtype=np.float64).ravel()  # own writable copy: the binding refuses read-only arrays
    if x.size == 0:
        raise ValueError("quantile sketch: no values")
    if not np.all(np.isfinite(x)):
        raise ValueError("quantile sketch: values must be finite")
    if x.size <= exact_limit:
        return {"kind": "exact", "values": np.sort(x).tolist()}
    sketch = _kll()(int(k))
    sketch.update(x)
    return encode_kll(sketch)


def blocks_from_values(values: Sequence[float] | np.ndarray, *, exact_limit: int = WINDOW_EXACT_LIMIT,
                       blocks: int = WINDOW_BLOCKS) -> dict:
    """The deterministic ``quantileSketch`` of a window: exact up to ``exact_limit``, else block means.

    >>> blocks_from_values([4.0, 1.0, 2.0, 3.0, 10.0], exact_limit=2, blocks=2)
    {'kind': 'blocks', 'values': [2.0, 7.0], 'weights': [3, 2], 'min': 1.0, 'max': 10.0}
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("quantile sketch: expected at least one value, all finite")
    if x.size <= exact_limit:
        return {"kind": "exact", "values": x.tolist()}
    parts = np.array_split(x, min(blocks, x.size))
    # Clipped: the float mean of equal values can land an ulp outside them.
    return {"kind": "blocks", "values": [float(min(max(p.mean(), p[0]), p[-1])) for p in parts], "weights": [int(p.size) for p in parts],
            "min": float(x[0]), "max": float(x[-1])}


def encode_kll(sketch: Any) -> dict:
    """The ``quantileSketch`` field of a ``datasketches.kll_doubles_sketch`` (for the window side)."""
    return {"kind": "kll", "k": int(sketch.k), "n": int(sketch.n),
            "sketch": base64.b64encode(sketch.serialize()).decode("ascii")}


def _exact(field: Mapping, what: str) -> QuantileSample:
    raw = field.get("values")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{what}: 'values' must be a non-empty list of numbers")
    try:
        values = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: 'values' must be a list of numbers") from None
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError(f"{what}: 'values' must be finite numbers")
    values = np.sort(values)
    return QuantileSample(values, np.ones(values.size), 0.0, float(values[0]), float(values[-1]))


def _blocks(field: Mapping, what: str) -> QuantileSample:
    sample = _exact(field, what)
    raw = field.get("weights")
    if not isinstance(raw, list) or len(raw) != sample.values.size:
        raise ValueError(f"{what}: 'weights' must be a list with one block size per value")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in raw):
        raise ValueError(f"{what}: 'weights' must be positive integers")
    order = np.argsort(np.asarray(field["values"], dtype=np.float64), kind="stable")
    weights = np.asarray(raw, dtype=np.float64)[order]
    low, high = field.get("min"), field.get("max")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)) \
            or not low <= sample.minimum <= sample.maximum <= high:
        raise ValueError(f"{what}: 'min' and 'max' must be finite numbers enclosing the block means")
    # The bound needs the true range: block means lie inside it, not at its ends.
    return QuantileSample(sample.values, weights, float(weights.max() / weights.sum()), float(low), float(high))


def _from_kll(field: Mapping, what: str) -> QuantileSample:
    blob = field.get("sketch")
    if not isinstance(blob, str) or not blob or len(blob) > _MAX_SKETCH_CHARS:
        raise ValueError(f"{what}: 'sketch' must be the base64 text of a serialized KLL sketch")
    try:
        return _kll_sample(blob)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _kll_sample(blob: str) -> QuantileSample:
    """The sample of a serialized sketch, read-only and cached: a baseline's sketches are met
    again at every window."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("'sketch' is not valid base64") from None
    try:
        sketch = _kll().deserialize(raw)
    except Exception as exc:  # the binding raises IndexError, RuntimeError, ... on bad bytes
        raise ValueError(f"'sketch' is not a serialized KLL doubles sketch ({exc})") from None
    if sketch.is_empty():
        raise ValueError("the KLL sketch is empty")
    pairs = np.array(sorted(iter(sketch)), dtype=np.float64).reshape(-1, 2)
    values, weights = np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])
    values.setflags(write=False)
    weights.setflags(write=False)
    if not np.all(np.isfinite(values)):
        raise ValueError("the KLL sketch holds non-finite values")
    error = float(_kll().get_normalized_rank_error(sketch.k, True)) if sketch.is_estimation_mode() else 0.0
    return QuantileSample(values, weights, error, float(sketch.get_min_value()), float(sketch.get_max_value()))


def decode(field: Any, what: str = "quantileSketch") -> QuantileSample:
    """The weighted sample of a ``quantileSketch`` field; ValueError naming ``what`` if malformed."""
    if not isinstance(field, Mapping):
        raise ValueError(f"{what}: expected {{kind: exact|kll, ...}}, got {type(field).__name__}")
    kind = field.get("kind")
    if kind == "exact":
        return _exact(field, what)
    if kind == "kll":
        return _from_kll(field, what)
    if kind == "blocks":
        return _blocks(field, what)
    raise ValueError(f"{what}: kind must be 'exact', 'kll' or 'blocks', got {kind!r}")


def _cdf_gaps(a: QuantileSample, b: QuantileSample) -> tuple[np.ndarray, np.ndarray]:
    """Merged support points and ``|F(x) - G(x)|`` at each (right-continuous CDFs)."""
    support = np.union1d(a.values, b.values)

    def cdf(s: QuantileSample) -> np.ndarray:
        cumulative = np.concatenate(([0.0], np.cumsum(s.weights)))
        return cumulative[np.searchsorted(s.values, support, side="right")] / cumulative[-1]

    return support, np.abs(cdf(a) - cdf(b))


def wasserstein_distance(a: QuantileSample, b: QuantileSample) -> float:
    """Wasserstein-1 between two weighted samples (the area between their CDFs).

    >>> x = decode({"kind": "exact", "values": [0, 1, 3]})
    >>> y = decode({"kind": "exact", "values": [5, 6, 8]})
    >>> wasserstein_distance(x, y)
    5.0
    """
    support, gaps = _cdf_gaps(a, b)
    return float(np.dot(gaps[:-1], np.diff(support)))


def ks_statistic(a: QuantileSample, b: QuantileSample) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``sup |F - G|`` of two weighted samples.

    >>> x = decode({"kind": "exact", "values": [1, 2, 3, 4]})
    >>> ks_statistic(x, decode({"kind": "exact", "values": [3, 4, 5, 6]}))
    0.5
    """
    _, gaps = _cdf_gaps(a, b)
    return float(gaps.max())


def error_bounds(window: QuantileSample, baseline: QuantileSample) -> tuple[float, float]:
    """``(wasserstein bound, ks bound)``: how far the sketched values can be from the exact ones."""
    w1 = (window.rank_error * (window.maximum - window.minimum)
          + baseline.rank_error * (baseline.maximum - baseline.minimum))
    ks = min(window.rank_error + baseline.rank_error, 1.0)
    return (float(w1) if math.isfinite(w1) else math.inf), float(ks)
