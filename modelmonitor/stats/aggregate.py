"""Window statistics as mergeable aggregates (DESIGN sections 3 and 4).

One small class per statistic, in the style of River's ``stats``: ``update(values)`` takes a whole
batch (vectorised NumPy, no Python loop per value), ``merge(other)`` folds another partial in
place and returns ``self``, ``get()`` reads the result, and ``to_bytes()`` / ``from_bytes()`` give
a compact binary form (struct headers + raw little-endian NumPy buffers; no pickle, no JSON).
Merging is associative and commutative up to float rounding, so a window's partials can be
built by any number of aggregator replicas and combined in any order.

=================  ==========================================================================
``Count``          number of values
``Sum``            sum of the values
``Min``/``Max``    extremes (``None`` while empty)
``Moments``        count, mean and M2 with Chan et al.'s parallel merge -> variance, stddev
``Quantiles``      every value kept, so percentiles are exact (numpy's linear method)
``Histogram``      counts over fixed edges plus underflow and overflow, numpy's bin rules
``CoMoments``      count, mean vector, co-moment matrix -> covariance, Pearson correlation
``CategoryCounts`` count per category, missing values, share unseen in the baseline
=================  ==========================================================================

:class:`WindowAggregate` bundles them for one window over a monitor's feature layout and
:meth:`WindowAggregate.finalize` produces the ``window.closed`` statistics.

>>> import json
>>> from modelmonitor.core.spec import Feature, StatsSpec
>>> layout = [Feature("x", "numerical", 0), Feature("y", "numerical", 1),
...           Feature("colour", "categorical", 2)]
>>> agg = WindowAggregate(layout, edges={"x": [0, 1, 2]}, known_categories={"colour": ["red"]})
>>> agg.update_rows([[0.5, 1.0, "red"], [1.5, 3.0, "blue"], [2.5, 5.0, None]])
>>> record = agg.finalize(StatsSpec())
>>> record["count"], record["features"]["x"]["mean"], record["features"]["x"]["histogram"]
(3, 1.5, {'edges': [0.0, 1.0, 2.0], 'counts': [0, 1, 1, 1]})
>>> record["features"]["colour"]
{'count': 2, 'categories': {'blue': 1, 'red': 1}, 'unseenShare': 0.5, 'missing': 1}
>>> [[round(r, 9) for r in row] for row in record["correlation"]["matrix"]]
[[1.0, 1.0], [1.0, 1.0]]
>>> again = WindowAggregate.from_bytes(layout, {"x": [0, 1, 2]}, {"colour": ["red"]}, agg.to_bytes())
>>> json.dumps(again.finalize(StatsSpec())) == json.dumps(record)
True
"""
from __future__ import annotations

import math
import struct
import time
import zlib
from collections import Counter
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np

from modelmonitor.core import spec

__all__ = [
    "Count", "Sum", "Min", "Max", "Moments", "Quantiles", "Histogram", "CoMoments", "CategoryCounts",
    "WindowAggregate", "aggregate_throughput", "percentile_key",
]

_F8 = np.dtype("<f8")
_U8 = np.dtype("<u8")
_U4 = np.dtype("<u4")
_VERSION = 1
_HEADER = struct.Struct("<BB")  # (tag, format version) at the start of every statistic's bytes

# Statistic tags in the binary form, so a blob of one kind is never read as another.
_TAG_COUNT, _TAG_SUM, _TAG_MIN, _TAG_MAX, _TAG_MOMENTS = 1, 2, 3, 4, 5
_TAG_QUANTILES, _TAG_HISTOGRAM, _TAG_COMOMENTS, _TAG_CATEGORIES = 6, 7, 8, 9

_DDOF = {"sample": 1, "population": 0}


# ----------------------------------------------------------------------------------------------
# helpers


def _float_values(values: Any, what: str = "values") -> np.ndarray:
    """``values`` as a 1-D float64 array, refusing non-numbers, NaN and infinities."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D batch of numbers, got an array of shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        if arr.dtype.kind != "O" or not all(map(_is_number, arr)):  # object arrays: slow path, rare
            raise ValueError(f"{what}: expected numbers, got {_describe_kind(arr)}")
    try:
        arr = arr.astype(_F8, copy=False)
    except OverflowError:
        raise ValueError(f"{what}: a value is too large for a 64-bit float") from None
    _check_finite(arr, what)
    return arr


def _describe_kind(arr: np.ndarray) -> str:
    """What a non-numeric array holds, for error messages."""
    if arr.dtype.kind == "b":
        return "booleans"
    for index, value in enumerate(arr.flat):
        if not _is_number(value):
            return f"{type(value).__name__} {value!r} at index {index}"
    return f"values of dtype {arr.dtype}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_finite(arr: np.ndarray, what: str) -> None:
    if arr.size and not np.isfinite(arr).all():
        index = np.unravel_index(int(np.flatnonzero(~np.isfinite(arr))[0]), arr.shape)
        where = index[0] if arr.ndim == 1 else index
        raise ValueError(f"{what}: {arr[index]} at index {where} is not a finite number")


def _check_ddof(ddof: Any) -> int:
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative integer (1 = sample, 0 = population), got {ddof!r}")
    return int(ddof)


def _check_same_type(self: Any, other: Any) -> None:
    if type(other) is not type(self):
        raise ValueError(f"cannot merge {type(other).__name__} into {type(self).__name__}")


def _open(blob: bytes | bytearray | memoryview, tag: int, name: str, fixed: struct.Struct) -> tuple:
    """Check a statistic's header and return its fixed fields, then everything after them."""
    data = memoryview(blob).cast("B")
    if len(data) < _HEADER.size + fixed.size:
        raise ValueError(f"{name}.from_bytes: {len(data)} bytes is too short to be a {name}")
    got_tag, version = _HEADER.unpack_from(data)
    if got_tag != tag:
        raise ValueError(f"{name}.from_bytes: the bytes hold statistic tag {got_tag}, not a {name} (tag {tag})")
    if version != _VERSION:
        raise ValueError(f"{name}.from_bytes: unsupported format version {version} (this code reads {_VERSION})")
    return fixed.unpack_from(data, _HEADER.size), data[_HEADER.size + fixed.size:]


def _array(data: memoryview, dtype: np.dtype, count: int, name: str, offset: int = 0) -> np.ndarray:
    need = offset + count * dtype.itemsize
    if len(data) < need:
        raise ValueError(f"{name}.from_bytes: truncated ({len(data)} bytes, need {need})")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()


def _expect_end(data: memoryview, used: int, name: str) -> None:
    if len(data) != used:
        raise ValueError(f"{name}.from_bytes: {len(data) - used} unexpected trailing bytes")


def _is_constant(x: np.ndarray) -> bool:
    return bool((x == x[0]).all())


def _maybe_constant(m2: float, n: int, mean: float) -> bool:
    # A constant batch leaves only rounding noise (about n*(log2(n)*eps*|mean|)**2 <= 1e-20*n*mean**2)
    # in M2; such batches are checked exactly, so constant data gives a variance of exactly 0.
    return m2 <= 1e-20 * n * mean * mean


def _plain(value: Any) -> float | None:
    """A JSON-ready float: None for undefined or overflowed (non-finite) values."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def percentile_key(q: float) -> str:
    """The ``percentiles`` key for ``q``: shortest decimal form, no trailing ``.0``.

    >>> percentile_key(25.0), percentile_key(99.9), percentile_key(0.001)
    ('25', '99.9', '0.001')
    """
    return np.format_float_positional(float(q), trim="-")


# ----------------------------------------------------------------------------------------------
# scalar statistics


class Count:
    """Number of values seen.

    >>> Count().update([4.0, 5.0]).merge(Count().update([6.0])).get()
    3
    """

    __slots__ = ("n",)
    _FIXED = struct.Struct("<Q")

    def __init__(self) -> None:
        self.n = 0

    def update(self, values: np.ndarray | Sequence) -> "Count":
        if isinstance(values, (str, bytes)):
            raise ValueError("Count.update: expected a batch of values, got a single string")
        try:
            self.n += len(values)
        except TypeError:
            raise ValueError("Count.update: expected a batch (sequence or array), "
                             f"got {type(values).__name__}") from None
        return self

    def merge(self, other: "Count") -> "Count":
        _check_same_type(self, other)
        self.n += other.n
        return self

    def get(self) -> int:
        return self.n

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_TAG_COUNT, _VERSION) + self._FIXED.pack(self.n)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Count":
        (n,), rest = _open(blob, _TAG_COUNT, cls.__name__, cls._FIXED)
        _expect_end(rest, 0, cls.__name__)
        out = cls()
        out.n = n
        return out

    def __repr__(self) -> str:
        return f"Count({self.n})"


class Sum:
    """Sum of the values (0.0 when empty); each batch is summed pairwise by NumPy.

    >>> Sum().update([1.5, 2.5]).merge(Sum().update([4])).get()
    8.0
    """

    __slots__ = ("total",)
    _FIXED = struct.Struct("<d")

    def __init__(self) -> None:
        self.total = 0.0

    def update(self, values: np.ndarray | Sequence) -> "Sum":
        self._update_checked(_float_values(values, "Sum.update"))
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        if x.size:
            self.total += float(x.sum())

    def merge(self, other: "Sum") -> "Sum":
        _check_same_type(self, other)
        self.total += other.total
        return self

    def get(self) -> float:
        return self.total

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_TAG_SUM, _VERSION) + self._FIXED.pack(self.total)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Sum":
        (total,), rest = _open(blob, _TAG_SUM, cls.__name__, cls._FIXED)
        _expect_end(rest, 0, cls.__name__)
        out = cls()
        out.total = total
        return out

    def __repr__(self) -> str:
        return f"Sum({self.total!r})"


class _Extreme:
    """Shared code of :class:`Min` and :class:`Max`; the empty state is the identity (+-inf)."""

    __slots__ = ("value",)
    _FIXED = struct.Struct("<d")
    _EMPTY = math.inf
    _TAG = 0

    def __init__(self) -> None:
        self.value = self._EMPTY

    def update(self, values: np.ndarray | Sequence) -> "_Extreme":
        self._update_checked(_float_values(values, f"{type(self).__name__}.update"))
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        if x.size:
            self._fold(float(self._reduce(x)))

    def merge(self, other: "_Extreme") -> "_Extreme":
        _check_same_type(self, other)
        self._fold(other.value)
        return self

    def get(self) -> float | None:
        return None if self.value == self._EMPTY else self.value

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self._TAG, _VERSION) + self._FIXED.pack(self.value)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "_Extreme":
        (value,), rest = _open(blob, cls._TAG, cls.__name__, cls._FIXED)
        _expect_end(rest, 0, cls.__name__)
        if math.isnan(value) or value == -cls._EMPTY:
            raise ValueError(f"{cls.__name__}.from_bytes: {value} is not a valid state")
        out = cls()
        out.value = value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get()!r})"


class Min(_Extreme):
    """Smallest value (None when empty).

    >>> Min().update([3, -1.5]).merge(Min()).get()
    -1.5
    """

    __slots__ = ()
    _EMPTY = math.inf
    _TAG = _TAG_MIN
    _reduce = staticmethod(np.min)

    def _fold(self, value: float) -> None:
        if value < self.value:
            self.value = value


class Max(_Extreme):
    """Largest value (None when empty).

    >>> Max().update([3, -1.5]).merge(Max().update([7])).get()
    7.0
    """

    __slots__ = ()
    _EMPTY = -math.inf
    _TAG = _TAG_MAX
    _reduce = staticmethod(np.max)

    def _fold(self, value: float) -> None:
        if value > self.value:
            self.value = value


class Moments:
    """Count, mean and M2 (sum of squared deviations) with Chan et al.'s parallel merge.

    Each batch is reduced exactly as a two-pass computation, then combined by
    ``M2 = M2_a + M2_b + delta**2 * n_a * n_b / n``, which is numerically stable and mergeable.
    ``ddof=1`` is the sample variance (default), ``ddof=0`` the population variance; values that
    are undefined (empty, or ``count <= ddof``) are None. Constant data has a variance of exactly 0.

    >>> m = Moments().update([2, 4, 4, 4]).merge(Moments().update([5, 5, 7, 9]))
    >>> m.count, m.mean, m.variance(ddof=0), m.stddev(ddof=0)
    (8, 5.0, 4.0, 2.0)
    >>> Moments().update([3.0]).variance(), Moments().update([3.0]).variance(ddof=0)
    (None, 0.0)
    """

    __slots__ = ("count", "mean", "m2")
    _FIXED = struct.Struct("<Qdd")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, values: np.ndarray | Sequence) -> "Moments":
        self._update_checked(_float_values(values, "Moments.update"))
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        n = x.size
        if n == 0:
            return
        mean = float(x.mean())
        deviations = x - mean
        m2 = float(deviations @ deviations)
        if _maybe_constant(m2, n, mean) and _is_constant(x):
            mean, m2 = float(x[0]), 0.0
        self._combine(n, mean, m2)

    def _combine(self, n_b: int, mean_b: float, m2_b: float) -> None:
        n_a = self.count
        if n_b == 0:
            return
        if n_a == 0:
            self.count, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta * delta * (n_a * n_b / n)
        self.count = n

    def merge(self, other: "Moments") -> "Moments":
        _check_same_type(self, other)
        self._combine(other.count, other.mean, other.m2)
        return self

    def variance(self, ddof: int = 1) -> float | None:
        ddof = _check_ddof(ddof)
        if self.count <= ddof:
            return None
        return self.m2 / (self.count - ddof)

    def stddev(self, ddof: int = 1) -> float | None:
        var = self.variance(ddof)
        return None if var is None else math.sqrt(var)

    def get(self) -> dict:
        """``{"count", "mean", "variance"}`` (sample variance; None where undefined)."""
        return {"count": self.count, "mean": self.mean if self.count else None, "variance": self.variance(1)}

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_TAG_MOMENTS, _VERSION) + self._FIXED.pack(self.count, self.mean, self.m2)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Moments":
        (count, mean, m2), rest = _open(blob, _TAG_MOMENTS, cls.__name__, cls._FIXED)
        _expect_end(rest, 0, cls.__name__)
        if not (math.isfinite(mean) and math.isfinite(m2) and m2 >= 0):
            raise ValueError(f"Moments.from_bytes: mean {mean} / M2 {m2} is not a valid state")
        out = cls()
        out.count, out.mean, out.m2 = count, mean, m2
        return out

    def __repr__(self) -> str:
        return f"Moments(count={self.count}, mean={self.mean!r}, m2={self.m2!r})"


class Quantiles:
    """Exact percentiles: every value is kept (float64), merging concatenates.

    ``percentile(q)`` is ``numpy.percentile`` with its default linear method over all values,
    so the rank error is 0 at any size and the result does not depend on merge order.

    >>> qs = Quantiles().update([1, 2, 3]).merge(Quantiles().update([4]))
    >>> qs.percentile(50), qs.percentile([25, 75]), Quantiles().percentile(50)
    (2.5, [1.75, 3.25], None)
    """

    __slots__ = ("_chunks", "_count")
    _FIXED = struct.Struct("<Q")

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []  # never modified in place, so merges may share them
        self._count = 0

    def update(self, values: np.ndarray | Sequence) -> "Quantiles":
        x = _float_values(values, "Quantiles.update")
        self._add(np.array(x, dtype=_F8, copy=True))  # own copy: the caller may reuse its buffer
        return self

    def _add(self, x: np.ndarray) -> None:
        if x.size:
            self._chunks.append(x)
            self._count += x.size

    @property
    def count(self) -> int:
        return self._count

    @property
    def values(self) -> np.ndarray:
        """All values so far (in arrival order of the batches); read-only."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        out = self._chunks[0] if self._chunks else np.empty(0, dtype=_F8)
        out.flags.writeable = False
        return out

    def merge(self, other: "Quantiles") -> "Quantiles":
        _check_same_type(self, other)
        self._chunks.extend(list(other._chunks))
        self._count += other._count
        return self

    def percentile(self, q: float | Sequence[float]) -> float | None | list:
        """Percentile(s) ``q`` in [0, 100]; None (or a list of None) when empty."""
        qs = np.asarray(q, dtype=_F8)
        if qs.ndim > 1 or not np.isfinite(qs).all() or ((qs < 0) | (qs > 100)).any():
            raise ValueError(f"percentiles must be numbers in [0, 100], got {q!r}")
        if self._count == 0:
            return None if qs.ndim == 0 else [None] * qs.size
        result = np.percentile(self.values, qs)
        return float(result) if qs.ndim == 0 else [float(v) for v in result]

    def get(self) -> float | None:
        """The median (None when empty)."""
        return self.percentile(50.0)

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_TAG_QUANTILES, _VERSION) + self._FIXED.pack(self._count) + self.values.tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Quantiles":
        (count,), rest = _open(blob, _TAG_QUANTILES, cls.__name__, cls._FIXED)
        values = _array(rest, _F8, count, cls.__name__)
        _expect_end(rest, count * 8, cls.__name__)
        _check_finite(values, "Quantiles.from_bytes")
        out = cls()
        out._add(values)
        return out

    def __repr__(self) -> str:
        return f"Quantiles(count={self._count})"


class Histogram:
    """Counts over fixed bin edges plus one underflow and one overflow bin.

    ``counts`` has length K+2: ``[underflow, c_0 .. c_{K-1}, overflow]`` for K+1 edges. Inner bins
    are ``[e_i, e_{i+1})`` and the last one is closed, ``[e_{K-1}, e_K]``, exactly as
    ``numpy.histogram``; values below ``e_0`` go to underflow, above ``e_K`` to overflow.

    >>> h = Histogram([2, 10, 100]).update([1, 2, 9.5, 10, 100, 250])
    >>> h.get().tolist()
    [1, 2, 2, 1]
    """

    __slots__ = ("edges", "counts", "_search_edges")
    _FIXED = struct.Struct("<I")

    def __init__(self, edges: np.ndarray | Sequence[float]) -> None:
        try:
            e = np.array(edges, dtype=_F8, copy=True)
        except (TypeError, ValueError):
            raise ValueError(f"histogram edges must be numbers, got {edges!r}") from None
        if e.ndim != 1 or e.size < 2:
            raise ValueError(f"histogram edges must be a 1-D list of at least 2 numbers, got shape {e.shape}")
        if not np.isfinite(e).all():
            raise ValueError("histogram edges must be finite numbers")
        if not (np.diff(e) > 0).all():
            raise ValueError(f"histogram edges must be strictly increasing, got {e.tolist()}")
        e.flags.writeable = False
        self.edges = e
        # Searching the edges with the last one nudged up by one ulp puts a value equal to e_K in the
        # last inner bin (numpy's closed last bin) and only values above e_K in the overflow bin.
        search = e.copy()
        search[-1] = np.nextafter(e[-1], np.inf)
        self._search_edges = search
        self.counts = np.zeros(e.size + 1, dtype=np.int64)

    @property
    def bins(self) -> int:
        """Number of inner bins K."""
        return self.edges.size - 1

    def update(self, values: np.ndarray | Sequence) -> "Histogram":
        self._update_checked(_float_values(values, "Histogram.update"))
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        if x.size:
            slots = np.searchsorted(self._search_edges, x, side="right")  # 0 = under, K+1 = over
            self.counts += np.bincount(slots, minlength=self.counts.size)

    def merge(self, other: "Histogram") -> "Histogram":
        _check_same_type(self, other)
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot merge histograms with different edges "
                             f"({self.edges.tolist()} vs {other.edges.tolist()})")
        self.counts += other.counts
        return self

    def get(self) -> np.ndarray:
        """A copy of the counts ``[underflow, c_0 .. c_{K-1}, overflow]``."""
        return self.counts.copy()

    def to_bytes(self) -> bytes:
        return (_HEADER.pack(_TAG_HISTOGRAM, _VERSION) + self._FIXED.pack(self.counts.size)
                + self.counts.astype(_U8).tobytes())

    @classmethod
    def from_bytes(cls, edges: np.ndarray | Sequence[float], blob: bytes) -> "Histogram":
        """Read counts written by :meth:`to_bytes`; the edges are configuration, given again."""
        out = cls(edges)
        (size,), rest = _open(blob, _TAG_HISTOGRAM, cls.__name__, cls._FIXED)
        if size != out.counts.size:
            raise ValueError(f"Histogram.from_bytes: the bytes hold {size - 2} bins but the edges give {out.bins}")
        counts = _array(rest, _U8, size, cls.__name__)
        _expect_end(rest, size * 8, cls.__name__)
        if (counts > np.iinfo(np.int64).max).any():
            raise ValueError("Histogram.from_bytes: a count is out of range")
        out.counts = counts.astype(np.int64)
        return out

    def __repr__(self) -> str:
        return f"Histogram(edges={self.edges.tolist()}, counts={self.counts.tolist()})"


# ----------------------------------------------------------------------------------------------
# multivariate


class CoMoments:
    """Count, mean vector and co-moment matrix ``C = sum (x - mean)(x - mean)^T`` of d-vectors.

    Batches are merged with Chan et al.'s pairwise formula
    ``C = C_a + C_b + outer(delta, delta) * n_a * n_b / n``. ``covariance(ddof)`` is
    ``C / (n - ddof)`` (every entry None when ``n <= ddof``); ``correlation()`` is Pearson's r,
    with None where either variance is 0 (a constant feature, or fewer than 2 values).

    >>> cm = CoMoments(2).update([[1, 2], [2, 4]]).merge(CoMoments(2).update([[3, 5]]))
    >>> [[round(v, 9) for v in row] for row in cm.covariance()]
    [[1.0, 1.5], [1.5, 2.333333333]]
    >>> CoMoments(2).update([[1, 7], [2, 7]]).correlation()
    [[1.0, None], [None, None]]
    """

    __slots__ = ("dim", "count", "mean", "comoment")
    _FIXED = struct.Struct("<IQ")

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"CoMoments: dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.count = 0
        self.mean = np.zeros(self.dim, dtype=_F8)
        self.comoment = np.zeros((self.dim, self.dim), dtype=_F8)

    def update(self, values: np.ndarray | Sequence) -> "CoMoments":
        """Add a batch of rows, shape ``(n, dim)``."""
        arr = values if isinstance(values, np.ndarray) else np.asarray(values)
        if arr.ndim == 1 and arr.size == 0:
            arr = arr.reshape(0, self.dim)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"CoMoments.update: expected rows of shape (n, {self.dim}), got {arr.shape}")
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"CoMoments.update: expected numbers, got {_describe_kind(arr)}")
        arr = arr.astype(_F8, copy=False)
        _check_finite(arr, "CoMoments.update")
        self._update_checked(arr)
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if n == 0:
            return
        mean = x.mean(axis=0)
        deviations = x - mean
        comoment = deviations.T @ deviations
        for j in np.flatnonzero(_maybe_constant(np.diag(comoment), n, mean)):
            if _is_constant(x[:, j]):  # exact zeros, so a constant feature has variance exactly 0
                mean[j] = x[0, j]
                comoment[j, :] = 0.0
                comoment[:, j] = 0.0
        self._combine(n, mean, comoment)

    def _combine(self, n_b: int, mean_b: np.ndarray, comoment_b: np.ndarray) -> None:
        n_a = self.count
        if n_b == 0:
            return
        if n_a == 0:
            self.count, self.mean, self.comoment = n_b, mean_b.copy(), comoment_b.copy()
            return
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.comoment = self.comoment + comoment_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def merge(self, other: "CoMoments") -> "CoMoments":
        _check_same_type(self, other)
        if other.dim != self.dim:
            raise ValueError(f"cannot merge CoMoments of dimension {other.dim} into dimension {self.dim}")
        self._combine(other.count, other.mean, other.comoment)
        return self

    def _symmetric(self) -> np.ndarray:
        upper = np.triu(self.comoment)
        return upper + np.triu(upper, 1).T

    def covariance(self, ddof: int = 1) -> list[list[float | None]]:
        ddof = _check_ddof(ddof)
        if self.count <= ddof:
            return [[None] * self.dim for _ in range(self.dim)]
        return [[_plain(v) for v in row] for row in self._symmetric() / (self.count - ddof)]

    def correlation(self) -> list[list[float | None]]:
        c = self._symmetric()
        scale = np.sqrt(np.diag(c))
        defined = scale > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.clip(c / np.outer(scale, scale), -1.0, 1.0)
        np.fill_diagonal(r, 1.0)
        return [[_plain(r[i, j]) if defined[i] and defined[j] else None for j in range(self.dim)]
                for i in range(self.dim)]

    def get(self) -> list[list[float | None]]:
        """The sample covariance matrix (ddof=1)."""
        return self.covariance(1)

    def to_bytes(self) -> bytes:
        return (_HEADER.pack(_TAG_COMOMENTS, _VERSION) + self._FIXED.pack(self.dim, self.count)
                + self.mean.astype(_F8).tobytes() + self.comoment.astype(_F8).tobytes())

    @classmethod
    def from_bytes(cls, blob: bytes) -> "CoMoments":
        (dim, count), rest = _open(blob, _TAG_COMOMENTS, cls.__name__, cls._FIXED)
        out = cls(dim)
        mean = _array(rest, _F8, dim, cls.__name__)
        comoment = _array(rest, _F8, dim * dim, cls.__name__, offset=dim * 8).reshape(dim, dim)
        _expect_end(rest, (dim + dim * dim) * 8, cls.__name__)
        _check_finite(mean, "CoMoments.from_bytes")
        _check_finite(comoment, "CoMoments.from_bytes")
        out.count, out.mean, out.comoment = count, mean, comoment
        return out

    def __repr__(self) -> str:
        return f"CoMoments(dim={self.dim}, count={self.count})"


# ----------------------------------------------------------------------------------------------
# categorical


class CategoryCounts:
    """Count per category, the number of missing (None) values, and the share unseen in a baseline.

    ``unseen_share`` is the share of non-missing values whose category is not in
    ``known_categories``; it is None without a known set or without non-missing values.

    >>> cc = CategoryCounts({"a", "b"}).update(["a", "c", None, "a"])
    >>> cc.get(), cc.count, cc.missing, cc.unseen_share
    ({'a': 2, 'c': 1}, 3, 1, 0.3333333333333333)
    """

    __slots__ = ("known", "counts", "missing")
    _FIXED = struct.Struct("<QI")

    def __init__(self, known_categories: Collection[str] | None = None) -> None:
        self.known = _known_set(known_categories, "known_categories")
        self.counts: Counter[str] = Counter()
        self.missing = 0

    def update(self, values: np.ndarray | Sequence[str | None]) -> "CategoryCounts":
        if isinstance(values, (str, bytes)):
            raise ValueError("CategoryCounts.update: expected a batch of categories, got a single string")
        try:
            batch = Counter(values)  # counted in C, not in a Python loop
        except TypeError as exc:
            raise ValueError(f"CategoryCounts.update: expected a batch of strings or None ({exc})") from None
        self.missing += batch.pop(None, 0)
        for key in batch:
            if type(key) is not str:
                if not isinstance(key, str):
                    raise ValueError("categorical values must be strings or None, "
                                     f"got {type(key).__name__} {key!r}")
                batch = Counter({str(k): c for k, c in batch.items()})  # e.g. numpy.str_ keys
                break
        self.counts.update(batch)
        return self

    @property
    def count(self) -> int:
        """Number of non-missing values."""
        return sum(self.counts.values())

    @property
    def unseen_share(self) -> float | None:
        if self.known is None:
            return None
        seen = self.count
        if seen == 0:
            return None
        unseen = sum(c for category, c in self.counts.items() if category not in self.known)
        return unseen / seen

    def merge(self, other: "CategoryCounts") -> "CategoryCounts":
        _check_same_type(self, other)
        if other.known != self.known:
            raise ValueError("cannot merge category counts with different known categories")
        self.counts.update(dict(other.counts))
        self.missing += other.missing
        return self

    def get(self) -> dict[str, int]:
        """Counts per category, sorted by category so the result never depends on merge order."""
        return {category: self.counts[category] for category in sorted(self.counts)}

    def to_bytes(self) -> bytes:
        categories = sorted(self.counts)
        encoded = [c.encode("utf-8", "surrogatepass") for c in categories]
        lengths = np.fromiter(map(len, encoded), dtype=_U4, count=len(encoded))
        counts = np.fromiter((self.counts[c] for c in categories), dtype=_U8, count=len(categories))
        return b"".join([_HEADER.pack(_TAG_CATEGORIES, _VERSION), self._FIXED.pack(self.missing, len(categories)),
                         lengths.tobytes(), counts.tobytes(), *encoded])

    @classmethod
    def from_bytes(cls, known_categories: Collection[str] | None, blob: bytes) -> "CategoryCounts":
        """Read counts written by :meth:`to_bytes`; the known set is configuration, given again."""
        out = cls(known_categories)
        (missing, size), rest = _open(blob, _TAG_CATEGORIES, cls.__name__, cls._FIXED)
        lengths = _array(rest, _U4, size, cls.__name__)
        counts = _array(rest, _U8, size, cls.__name__, offset=size * 4)
        start = size * 12
        ends = start + np.cumsum(lengths, dtype=np.int64)
        _expect_end(rest, int(ends[-1]) if size else start, cls.__name__)
        raw = bytes(rest[start:])
        names: list[str] = []
        offset = 0
        for length in lengths.tolist():
            try:
                names.append(raw[offset:offset + length].decode("utf-8", "surrogatepass"))
            except UnicodeDecodeError:
                raise ValueError("CategoryCounts.from_bytes: a category name is not valid UTF-8") from None
            offset += length
        out.counts = Counter(dict(zip(names, counts.tolist())))
        if len(out.counts) != size:
            raise ValueError("CategoryCounts.from_bytes: duplicate category names")
        out.missing = missing
        return out

    def __repr__(self) -> str:
        return f"CategoryCounts({self.get()}, missing={self.missing})"


def _known_set(known: Collection[str] | None, what: str) -> frozenset[str] | None:
    if known is None:
        return None
    if isinstance(known, (str, bytes)) or not isinstance(known, Iterable):
        raise ValueError(f"{what}: expected a collection of category strings, got {known!r}")
    out = frozenset(known)
    bad = next((k for k in out if not isinstance(k, str)), None)
    if bad is not None:
        raise ValueError(f"{what}: categories must be strings, got {type(bad).__name__} {bad!r}")
    return frozenset(str(k) for k in out)


# ----------------------------------------------------------------------------------------------
# one window over a feature layout


class _NumericalStats:
    """The statistics kept per numerical feature."""

    __slots__ = ("min", "max", "sum", "moments", "quantiles", "histogram")

    def __init__(self, edges: np.ndarray | None) -> None:
        self.min, self.max, self.sum = Min(), Max(), Sum()
        self.moments, self.quantiles = Moments(), Quantiles()
        self.histogram = Histogram(edges) if edges is not None else None

    def parts(self) -> list:
        out = [self.min, self.max, self.sum, self.moments, self.quantiles]
        return out + [self.histogram] if self.histogram is not None else out

    def update(self, column: np.ndarray) -> None:
        self.min._update_checked(column)
        self.max._update_checked(column)
        self.sum._update_checked(column)
        self.moments._update_checked(column)
        self.quantiles._add(column)
        if self.histogram is not None:
            self.histogram._update_checked(column)

    def merge(self, other: "_NumericalStats") -> None:
        for mine, theirs in zip(self.parts(), other.parts()):
            mine.merge(theirs)


_MAGIC = b"MMW"
_AGG_FIXED = struct.Struct("<3sBIIQ")  # magic, version, layout fingerprint, number of parts, count
_LENGTH = struct.Struct("<Q")


class WindowAggregate:
    """The mergeable statistics of one window over a monitor's feature layout.

    ``features`` are the monitor's features in row order; ``edges`` maps numerical feature names
    to the baseline's histogram edges (None or absent: no histogram); ``known_categories`` maps
    categorical feature names to the baseline's categories (absent: ``unseenShare`` is None).
    A covariance/correlation accumulator is kept when there are at least two numerical features.

    Partials built anywhere merge in any order; :meth:`finalize` gives the ``window.closed``
    statistics (DESIGN section 4) with plain floats/ints and None (JSON null) for undefined values.

    >>> from modelmonitor.core.spec import Feature, StatsSpec
    >>> layout = [Feature("a", "numerical", 0), Feature("b", "numerical", 1)]
    >>> one = WindowAggregate(layout)
    >>> one.update_arrays(np.array([[1.0, 10.0], [2.0, 20.0]]))
    >>> other = WindowAggregate(layout)
    >>> other.update_arrays(np.array([[3.0, 40.0]]))
    >>> one.merge(other).count
    3
    >>> out = one.finalize(StatsSpec(percentiles=(50.0,), iqr=False))
    >>> out["features"]["a"]["percentiles"], out["features"]["a"]["stddev"], out["covariance"]["matrix"][0]
    ({'50': 2.0}, 1.0, [1.0, 15.0])
    """

    def __init__(self, features: Sequence[spec.Feature], edges: Mapping[str, Any] | None = None,
                 known_categories: Mapping[str, Collection[str]] | None = None) -> None:
        self.features = _check_layout(features)
        positions = {f.name: i for i, f in enumerate(self.features)}
        self.numerical = tuple(f for f in self.features if f.type == spec.NUMERICAL)
        self.categorical = tuple(f for f in self.features if f.type == spec.CATEGORICAL)
        self._numerical_positions = [positions[f.name] for f in self.numerical]
        self._categorical_positions = [positions[f.name] for f in self.categorical]
        self._edges = self._check_config(edges, spec.NUMERICAL, "edges")
        self._known = self._check_config(known_categories, spec.CATEGORICAL, "known_categories")
        self._count = Count()
        self._numerical_stats = [_NumericalStats(self._edges_of(f.name)) for f in self.numerical]
        self._category_counts = [CategoryCounts(self._known_of(f.name)) for f in self.categorical]
        self._comoments = CoMoments(len(self.numerical)) if len(self.numerical) >= 2 else None
        self._layout_key = tuple((f.name, f.type) for f in self.features)
        self._fingerprint = self._layout_fingerprint()

    # -- configuration ------------------------------------------------------------------------

    def _check_config(self, mapping: Mapping | None, want_type: str, what: str) -> dict:
        if mapping is None:
            return {}
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{what}: expected a mapping of feature name -> value, got {type(mapping).__name__}")
        types = {f.name: f.type for f in self.features}
        out = {}
        for name, value in mapping.items():
            if name not in types:
                raise ValueError(f"{what}: {name!r} is not a feature of this layout ({', '.join(types)})")
            if value is None:
                continue
            if types[name] != want_type:
                raise ValueError(f"{what}: feature {name!r} is {types[name]}, {what} apply to {want_type} features")
            if want_type == spec.NUMERICAL:
                try:
                    out[name] = Histogram(value).edges
                except ValueError as exc:
                    raise ValueError(f"{what}[{name!r}]: {exc}") from None
            else:
                out[name] = _known_set(value, f"{what}[{name!r}]")
        return out

    def _edges_of(self, name: str) -> np.ndarray | None:
        return self._edges.get(name)

    def _known_of(self, name: str) -> frozenset[str] | None:
        return self._known.get(name)

    def _layout_fingerprint(self) -> int:
        # A CRC of everything that shapes the binary form, so bytes or partials written for another
        # layout (other features, edges or known categories) are refused instead of misread.
        crc = 0
        for f in self.features:
            crc = zlib.crc32(f"{f.name}\0{f.type}\0".encode("utf-8", "surrogatepass"), crc)
            if f.name in self._edges:
                crc = zlib.crc32(self._edges[f.name].tobytes(), crc)
            if f.name in self._known:
                for category in sorted(self._known[f.name]):
                    crc = zlib.crc32(category.encode("utf-8", "surrogatepass") + b"\0", crc)
            crc = zlib.crc32(b"\1", crc)
        return crc

    @property
    def count(self) -> int:
        """Number of instances in the window."""
        return self._count.n

    # -- updates --------------------------------------------------------------------------------

    def update_arrays(self, numeric: np.ndarray | None, categorical: Sequence[Sequence[str | None]] = ()) -> None:
        """Add a batch: ``numeric`` of shape ``(n, number of numerical features)`` in layout order,
        ``categorical`` one column (list of str or None) per categorical feature in layout order."""
        n_num, n_cat = len(self.numerical), len(self.categorical)
        x = self._check_numeric(numeric)
        categorical = () if categorical is None else categorical
        if len(categorical) != n_cat:
            raise ValueError(f"categorical: expected {n_cat} columns (one per categorical feature), "
                             f"got {len(categorical)}")
        for f, column in zip(self.categorical, categorical):
            if isinstance(column, (str, bytes)) or not hasattr(column, "__len__"):
                raise ValueError(f"feature {f.name!r}: expected a column of values, got {type(column).__name__}")
        n = x.shape[0] if x is not None else (len(categorical[0]) if n_cat else 0)
        for f, column in zip(self.categorical, categorical):
            if len(column) != n:
                raise ValueError(f"feature {f.name!r}: column has {len(column)} values, expected {n}")
        if n_num:
            columns = np.array(x.T, dtype=_F8, order="C", copy=True)  # own rows: Quantiles keep them
        # Validate everything before changing anything, so a bad batch leaves the window untouched.
        for f, column in zip(self.categorical, categorical):
            _check_categories(column, f.name)
        self._count.n += n
        if n == 0:
            return
        if n_num:
            for stats, column in zip(self._numerical_stats, columns):
                stats.update(column)
            if self._comoments is not None:
                self._comoments._update_checked(x)
        for counts, column in zip(self._category_counts, categorical):
            counts.update(column)

    def _check_numeric(self, numeric: Any) -> np.ndarray | None:
        n_num = len(self.numerical)
        if n_num == 0:
            if numeric is not None and np.size(numeric):
                raise ValueError("numeric: this layout has no numerical features, pass None")
            return None
        if numeric is None:
            raise ValueError(f"numeric: expected an array of shape (n, {n_num}), got None")
        x = numeric if isinstance(numeric, np.ndarray) else np.asarray(numeric)
        if x.ndim == 1 and x.size == 0:
            x = x.reshape(0, n_num)
        if x.ndim != 2 or x.shape[1] != n_num:
            raise ValueError(f"numeric: expected shape (n, {n_num}) for numerical features "
                             f"{[f.name for f in self.numerical]}, got {x.shape}")
        if x.dtype.kind not in "iuf":
            for j, f in enumerate(self.numerical):
                _float_values(x[:, j], f"feature {f.name!r}")  # raises, naming the offending feature
        x = x.astype(_F8, copy=False)
        if x.size and not np.isfinite(x).all():
            for j, f in enumerate(self.numerical):
                _check_finite(x[:, j], f"feature {f.name!r}")
        return x

    def update_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Add a batch of rows in feature order (numbers for numerical features, str or None for
        categorical ones), as in ``inference.instances``."""
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise ValueError(f"rows: expected a list of rows, got {type(rows).__name__}")
        width = len(self.features)
        try:
            lengths = set(map(len, rows))
        except TypeError:
            bad = next(i for i, row in enumerate(rows) if not hasattr(row, "__len__"))
            raise ValueError(f"rows[{bad}]: expected a list of {width} values, "
                             f"got {type(rows[bad]).__name__}") from None
        if lengths - {width}:
            bad = next(i for i, row in enumerate(rows) if len(row) != width)
            raise ValueError(f"rows[{bad}]: has {len(rows[bad])} values, expected {width} "
                             f"({', '.join(f.name for f in self.features)})")
        columns = list(zip(*rows)) if rows else [()] * width
        numeric = np.empty((len(rows), len(self.numerical)), dtype=_F8)
        for j, (f, pos) in enumerate(zip(self.numerical, self._numerical_positions)):
            numeric[:, j] = _numeric_column(columns[pos], f.name)
        self.update_arrays(numeric, [columns[pos] for pos in self._categorical_positions])

    # -- merging and bytes ----------------------------------------------------------------------

    def merge(self, other: "WindowAggregate") -> "WindowAggregate":
        """Fold ``other`` (same layout, edges and known categories) into this window; returns self."""
        if not isinstance(other, WindowAggregate):
            raise ValueError(f"cannot merge {type(other).__name__} into WindowAggregate")
        if other._fingerprint != self._fingerprint or other._layout_key != self._layout_key:
            raise ValueError("cannot merge window aggregates over different feature layouts, edges or known categories")
        self._count.merge(other._count)
        for mine, theirs in zip(self._numerical_stats, other._numerical_stats):
            mine.merge(theirs)
        for mine, theirs in zip(self._category_counts, other._category_counts):
            mine.merge(theirs)
        if self._comoments is not None:
            self._comoments.merge(other._comoments)
        return self

    def _parts(self) -> list:
        parts: list = [self._count]
        for stats in self._numerical_stats:
            parts.extend(stats.parts())
        parts.extend(self._category_counts)
        if self._comoments is not None:
            parts.append(self._comoments)
        return parts

    def to_bytes(self) -> bytes:
        """Compact binary form: a header, then each statistic's bytes with a length prefix."""
        blobs = [part.to_bytes() for part in self._parts()]
        out = [_AGG_FIXED.pack(_MAGIC, _VERSION, self._fingerprint, len(blobs), self.count)]
        for blob in blobs:
            out.append(_LENGTH.pack(len(blob)))
            out.append(blob)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, features: Sequence[spec.Feature], edges: Mapping[str, Any] | None,
                   known_categories: Mapping[str, Collection[str]] | None, blob: bytes) -> "WindowAggregate":
        """Rebuild an aggregate from :meth:`to_bytes`, given the same layout configuration."""
        out = cls(features, edges, known_categories)
        data = memoryview(blob).cast("B")
        if len(data) < _AGG_FIXED.size:
            raise ValueError(f"WindowAggregate.from_bytes: {len(data)} bytes is too short")
        magic, version, fingerprint, n_parts, count = _AGG_FIXED.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError("WindowAggregate.from_bytes: not a window aggregate (bad magic)")
        if version != _VERSION:
            raise ValueError(f"WindowAggregate.from_bytes: unsupported format version {version}")
        if fingerprint != out._fingerprint:
            raise ValueError("WindowAggregate.from_bytes: the bytes were written for another feature layout "
                             "(features, histogram edges or known categories differ)")
        blobs = []
        offset = _AGG_FIXED.size
        for _ in range(n_parts):
            if offset + _LENGTH.size > len(data):
                raise ValueError("WindowAggregate.from_bytes: truncated")
            (length,) = _LENGTH.unpack_from(data, offset)
            offset += _LENGTH.size
            if offset + length > len(data):
                raise ValueError("WindowAggregate.from_bytes: truncated")
            blobs.append(data[offset:offset + length])
            offset += length
        if offset != len(data):
            raise ValueError("WindowAggregate.from_bytes: unexpected trailing bytes")
        expected = out._parts()
        if len(blobs) != len(expected):
            raise ValueError(f"WindowAggregate.from_bytes: {len(blobs)} statistics, the layout needs {len(expected)}")
        it = iter(blobs)
        out._count = Count.from_bytes(next(it))
        for f, stats in zip(out.numerical, out._numerical_stats):
            stats.min, stats.max = Min.from_bytes(next(it)), Max.from_bytes(next(it))
            stats.sum, stats.moments = Sum.from_bytes(next(it)), Moments.from_bytes(next(it))
            stats.quantiles = Quantiles.from_bytes(next(it))
            if stats.histogram is not None:
                stats.histogram = Histogram.from_bytes(stats.histogram.edges, next(it))
            if not stats.moments.count == stats.quantiles.count == out._count.n:
                raise ValueError(f"WindowAggregate.from_bytes: counts of feature {f.name!r} "
                                 "disagree with the window count")
        for i, f in enumerate(out.categorical):
            out._category_counts[i] = CategoryCounts.from_bytes(out._known_of(f.name), next(it))
        if out._comoments is not None:
            out._comoments = CoMoments.from_bytes(next(it))
            if out._comoments.dim != len(out.numerical) or out._comoments.count != out._count.n:
                raise ValueError("WindowAggregate.from_bytes: covariance state disagrees with the layout")
        if out._count.n != count:
            raise ValueError("WindowAggregate.from_bytes: header count disagrees with the statistics")
        return out

    # -- result ---------------------------------------------------------------------------------

    def finalize(self, stats: spec.StatsSpec | None = None) -> dict:
        """The ``window.closed`` statistics: ``{"count", "features", "covariance", "correlation"}``."""
        stats = stats if stats is not None else spec.StatsSpec()
        ddof = _ddof(stats.stddev_type, "stddev")
        features: dict[str, dict] = {}
        numerical = iter(self._numerical_stats)
        categorical = iter(self._category_counts)
        for f in self.features:
            if f.type == spec.NUMERICAL:
                features[f.name] = _numerical_record(next(numerical), stats, ddof)
            else:
                counts = next(categorical)
                features[f.name] = {"count": counts.count, "categories": counts.get(),
                                    "unseenShare": _plain(counts.unseen_share), "missing": counts.missing}
        names = [f.name for f in self.numerical]
        covariance = correlation = None
        if self._comoments is not None:
            if stats.covariance:
                matrix = self._comoments.covariance(_ddof(stats.covariance_type, "covariance"))
                covariance = {"features": names, "matrix": matrix}
            if stats.correlation:
                correlation = {"features": list(names), "matrix": self._comoments.correlation()}
        return {"count": self.count, "features": features, "covariance": covariance, "correlation": correlation}

    def __repr__(self) -> str:
        return f"WindowAggregate(features={[f.name for f in self.features]}, count={self.count})"


def _check_layout(features: Sequence[spec.Feature]) -> tuple:
    if isinstance(features, (str, bytes)) or not isinstance(features, Iterable):
        raise ValueError(f"features: expected a sequence of spec.Feature, got {type(features).__name__}")
    out = tuple(features)
    if not out:
        raise ValueError("features: at least one feature is required")
    seen = set()
    for i, f in enumerate(out):
        name, ftype = getattr(f, "name", None), getattr(f, "type", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"features[{i}]: expected a spec.Feature with a name, got {f!r}")
        if ftype not in spec.FEATURE_TYPES:
            raise ValueError(f"features[{i}] ({name!r}): type {ftype!r} is not one of {', '.join(spec.FEATURE_TYPES)}")
        if name in seen:
            raise ValueError(f"features[{i}]: duplicate feature name {name!r}")
        seen.add(name)
    return out


def _ddof(kind: str, what: str) -> int:
    if kind not in _DDOF:
        raise ValueError(f"{what} type {kind!r} is not sample or population")
    return _DDOF[kind]


def _check_categories(column: Sequence, name: str) -> None:
    try:
        kinds = set(map(type, column))
    except TypeError:
        raise ValueError(f"feature {name!r}: expected a column of strings or None") from None
    if kinds - {str, type(None)}:
        for index, value in enumerate(column):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"feature {name!r} (categorical): value {value!r} at row {index} is a "
                                 f"{type(value).__name__}, expected a string or None")


def _numeric_column(column: Sequence, name: str) -> np.ndarray:
    kinds = set(map(type, column))
    if not kinds <= {float, int}:
        for i, value in enumerate(column):
            if not _is_number(value):
                raise ValueError(f"feature {name!r} (numerical): value {value!r} at row {i} is not a number")
    try:
        values = np.asarray(column, dtype=_F8) if column else np.empty(0, dtype=_F8)
    except OverflowError:
        raise ValueError(f"feature {name!r} (numerical): a value is too large for a 64-bit float") from None
    return _float_values(values, f"feature {name!r}")


def _numerical_record(stats: _NumericalStats, spec_: spec.StatsSpec, ddof: int) -> dict:
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
    return record


# ----------------------------------------------------------------------------------------------
# micro-benchmark


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
