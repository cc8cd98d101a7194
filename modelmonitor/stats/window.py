"""The statistics of one window (or pane) over a monitor's feature layout, composed of the
per-statistic modules; mergeable, with a compact binary form and the ``window.closed`` record.

API (what the aggregate function, the Redis window store and the columnar replay use):

- ``WindowAggregate(features, edges, known_categories)``: an empty partial for a feature layout
  (``spec.Feature`` in row order), the baseline's histogram edges per numerical feature and known
  categories per categorical feature.
- ``update_columns(numeric, categorical)``: add a batch, vectorised: ``numeric`` a float array of
  shape ``(n, numerical features)`` in layout order, ``categorical`` one column (str or None) per
  categorical feature. Validated before anything changes. ``update_rows(rows)`` takes rows.
- ``merge(other)``: fold another partial of the same layout in (associative and commutative:
  exact fields exactly, moments up to float rounding, percentiles within the KLL bound).
- ``to_bytes()`` / ``from_bytes(features, edges, known, blob)``: serialisation at the edge; the
  layout is configuration and is checked by a fingerprint.
- ``finalize(stats_spec)``: the ``features``/``count``/``covariance``/``correlation`` part of the
  ``window.closed`` event. ``quantile_sketch(name)`` gives the feature's KLL sketch
  (``datasketches.kll_doubles_sketch``), e.g. to compare with a baseline's quantiles.

What a partial keeps is fixed in size whatever the number of instances: per numerical feature
count, min, max, sum, mean and M2, histogram counts and a KLL sketch (at most ~10 KB); per
categorical feature exact counts up to 512 distinct categories then a frequent-items sketch;
co-moments for covariance and correlation.

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

import struct
import zlib
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np

from modelmonitor.core import spec
from modelmonitor.stats._codec import _F8, _VERSION, _check_finite, _float_values, _is_number
from modelmonitor.stats.categories import CategoryCounts, _known_set
from modelmonitor.stats.comoments import CoMoments
from modelmonitor.stats.count import Count
from modelmonitor.stats.extremes import Max, Min
from modelmonitor.stats.histogram import Histogram
from modelmonitor.stats.moments import Moments
from modelmonitor.stats.quantiles import Quantiles
from modelmonitor.stats.total import Sum
from modelmonitor.stats.window_record import categorical_record, comoment_records, ddof_of, numerical_record


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
        self.quantiles._update_checked(column)
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
            columns = np.ascontiguousarray(x.T, dtype=_F8)  # one contiguous column per feature
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

    def update_columns(self, numeric: np.ndarray | None, categorical: Sequence[Sequence[str | None]] = ()) -> None:
        """Add a batch of columns (see :meth:`update_arrays`): the vectorised path."""
        self.update_arrays(numeric, categorical)

    def quantile_sketch(self, name: str):
        """The KLL sketch (``datasketches.kll_doubles_sketch``) of numerical feature ``name``."""
        for f, stats in zip(self.numerical, self._numerical_stats):
            if f.name == name:
                return stats.quantiles.sketch
        raise KeyError(f"{name!r} is not a numerical feature of this layout")

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
        """The ``window.closed`` statistics: ``{"count", "features", "covariance", "correlation"}``
        (the records are built in :mod:`modelmonitor.stats.window_record`)."""
        stats = stats if stats is not None else spec.StatsSpec()
        ddof = ddof_of(stats.stddev_type, "stddev")
        features: dict[str, dict] = {}
        numerical = iter(self._numerical_stats)
        categorical = iter(self._category_counts)
        for f in self.features:
            if f.type == spec.NUMERICAL:
                features[f.name] = numerical_record(next(numerical), stats, ddof)
            else:
                features[f.name] = categorical_record(next(categorical))
        covariance, correlation = comoment_records(self._comoments, [f.name for f in self.numerical], stats)
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
