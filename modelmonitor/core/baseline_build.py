"""Building a baseline from training data (``modelmonitor baseline``).

Missing values: an empty cell (or null, or NaN) is a missing value. It is left out of the
statistics and counted under ``missing``; the covariance uses the rows complete in every
numerical feature. Anything else that is not a number in a numerical column is an error naming
the file, row and column.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from modelmonitor.core.baseline_tables import RowLabel, TableError, _columns_listing, _read
from modelmonitor.core.baseline_validate import BASELINE_VERSION, write_baseline
from modelmonitor.core.spec import CATEGORICAL, NUMERICAL, Feature
from modelmonitor.detect.quantile_sketch import sketch_from_values

__all__ = ["DEFAULT_BINS", "PERCENTILES", "infer_features", "describe_inference", "build_baseline",
           "build_baseline_file"]

DEFAULT_BINS = 20
PERCENTILES = (25, 50, 75)


# ---------------------------------------------------------------------------------------------
# Building

_MISSING = object()  # marker returned by _cell_number for an empty / null / NaN cell


def _cell_number(cell: Any) -> Any:
    """A float, _MISSING, or None when the cell is not a number (inf is a number here: checked later)."""
    if cell is None:
        return _MISSING
    if isinstance(cell, str):
        text = cell.strip()
        if not text:
            return _MISSING
        try:
            value = float(text)
        except ValueError:
            return None
    elif isinstance(cell, (bool, np.bool_)):
        value = float(cell)
    elif isinstance(cell, (int, float, np.integer, np.floating)):
        try:
            value = float(cell)
        except OverflowError:
            return None
    else:
        return None
    return _MISSING if value != value else value


def _cell_kinds(column: Sequence[Any]) -> tuple[int, int, int | None]:
    """(numbers, non-numbers, index of the first non-number) of a column; booleans count as text."""
    if isinstance(column, np.ndarray) and column.dtype.kind in "iuf":
        numbers = int(np.count_nonzero(~np.isnan(column.astype(np.float64))))
        return numbers, 0, None
    numbers = texts = 0
    first_text = None
    for i, cell in enumerate(column):
        value = None if isinstance(cell, (bool, np.bool_)) else _cell_number(cell)
        if value is None:
            texts += 1
            if first_text is None:
                first_text = i
        elif value is not _MISSING:
            numbers += 1
    return numbers, texts, first_text


def infer_features(columns: Mapping[str, Sequence[Any]], categorical: Sequence[str] | None = None,
                   source: str = "table", label: RowLabel = lambda i: f"index {i}") -> tuple[Feature, ...]:
    """Feature types of every column when no monitor declares them.

    A column whose non-empty cells are all numbers is numerical; one with no numbers is
    categorical; one mixing numbers and text is refused (one stray cell such as ``abc`` must not
    turn a numerical feature into a categorical one silently) unless it is listed in
    ``categorical``, which forces those columns to categorical.

    >>> [(f.name, f.type) for f in infer_features({"x": ["1", "2.5", ""], "c": ["a", "b", "a"]})]
    [('x', 'numerical'), ('c', 'categorical')]
    >>> infer_features({"x": ["1", "abc", "3"]})
    Traceback (most recent call last):
    ...
    modelmonitor.core.baseline_tables.TableError: table column 'x' mixes numbers (2) and text (1, first 'abc' at index 1): fix the data, or pass it as categorical (--categorical x)
    """
    forced = list(categorical or ())
    for name in forced:
        if name not in columns:
            raise TableError(f"categorical column {name!r} not in {source} (columns: {_columns_listing(list(columns))})")
    features = []
    for i, name in enumerate(columns):
        if name in forced:
            features.append(Feature(name, CATEGORICAL, i))
            continue
        numbers, texts, first_text = _cell_kinds(columns[name])
        if numbers and texts:
            cell = columns[name][first_text]
            shown = repr(cell) if len(repr(cell)) <= 40 else repr(cell)[:37] + "..."
            raise TableError(f"{source} column {name!r} mixes numbers ({numbers}) and text ({texts}, first "
                             f"{shown} at {label(first_text)}): fix the data, or pass it as categorical "
                             f"(--categorical {name})")
        features.append(Feature(name, NUMERICAL if numbers else CATEGORICAL, i))
    return tuple(features)


def describe_inference(doc: Mapping[str, Any]) -> list[str]:
    """One line per feature of a baseline built without a monitor: the type inferred and its counts.

    >>> describe_inference({"rows": 3, "features": {"x": {"type": "numerical", "count": 2, "missing": 1,
    ...     "min": 1.0, "max": 2.5}, "c": {"type": "categorical", "count": 3, "missing": 0,
    ...     "frequencies": {"a": 2, "b": 1}}}})
    ['x: numerical, 2 values, 1 missing, range 1 .. 2.5', 'c: categorical, 3 values, 0 missing, 2 categories (a, b)']
    """
    lines = []
    for name, entry in doc["features"].items():
        head = f"{name}: {entry['type']}, {entry.get('count', '?')} values, {entry.get('missing', 0)} missing"
        if entry["type"] == NUMERICAL:
            lines.append(f"{head}, range {entry['min']:g} .. {entry['max']:g}")
        else:
            categories = list(entry.get("frequencies", {}))
            shown = ", ".join(categories[:5]) + (", ..." if len(categories) > 5 else "")
            lines.append(f"{head}, {len(categories)} categories ({shown})")
    return lines


def _numeric_values(column: Sequence[Any], name: str, source: str, label: RowLabel) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64 with NaN for missing, mask of present values); errors name row and column."""
    array_values = None
    if not (isinstance(column, np.ndarray) and column.dtype.kind not in "iufb"):
        try:  # vectorised when every cell converts; the loop below explains any failure
            array_values = np.asarray(column, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            array_values = None
        if array_values is not None and array_values.ndim != 1:
            array_values = None
    if array_values is None:
        array_values = np.empty(len(column), dtype=np.float64)
        for i, cell in enumerate(column):
            value = _cell_number(cell)
            if value is None:
                shown = repr(cell) if len(repr(cell)) <= 40 else repr(cell)[:37] + "..."
                raise TableError(f"{source} {label(i)} column {name!r}: {shown} is not a number")
            array_values[i] = math.nan if value is _MISSING else value
    infinite = np.isinf(array_values)
    if infinite.any():
        i = int(np.flatnonzero(infinite)[0])
        raise TableError(f"{source} {label(i)} column {name!r}: {column[i]!r} is not a finite number")
    return array_values, ~np.isnan(array_values)


def _numerical_entry(values: np.ndarray, missing: int, bins: int) -> dict:
    count = int(values.size)
    low, high = float(values.min()), float(values.max())
    # A constant column has no width to split: give it a unit-wide range centred on the value.
    edge_range = (low - 0.5, high + 0.5) if low == high else (low, high)
    edges = np.histogram_bin_edges(values, bins=bins, range=edge_range)
    counts, _ = np.histogram(values, bins=edges)
    quartiles = np.percentile(values, PERCENTILES)
    return {
        "type": NUMERICAL,
        "count": count,
        "missing": missing,
        "mean": float(values.mean()),
        "stddev": float(values.std(ddof=1)),
        "min": low,
        "max": high,
        "percentiles": {str(p): float(q) for p, q in zip(PERCENTILES, quartiles)},
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "probabilities": [float(c) / count for c in counts],
        "quantileSketch": sketch_from_values(values),
    }


def _categorical_entry(column: Sequence[Any]) -> dict:
    frequencies: dict[str, int] = {}
    missing = 0
    for cell in column:
        if cell is None or cell == "" or (isinstance(cell, float) and cell != cell):
            missing += 1
            continue
        key = cell if isinstance(cell, str) else str(cell)
        frequencies[key] = frequencies.get(key, 0) + 1
    return {"type": CATEGORICAL, "count": len(column) - missing, "missing": missing, "frequencies": frequencies}


def _check_bins(bins: Any) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    return int(bins)


def _build(columns: Mapping[str, Sequence[Any]], features: Sequence[Feature] | None, bins: int,
           source: str, label: RowLabel, categorical: Sequence[str] | None = None) -> dict:
    bins = _check_bins(bins)
    names = list(columns)
    if not names:
        raise TableError(f"{source} has no columns")
    if features is None:
        features = infer_features(columns, categorical, source, label)
    else:
        for feature in features:
            if feature.name not in columns:
                raise TableError(f"column {feature.name!r} not in {source} (columns: {_columns_listing(names)})")
    if not features:
        raise TableError(f"{source}: no features to build a baseline for")
    lengths = {f.name: len(columns[f.name]) for f in features}
    n_rows = next(iter(lengths.values()))
    for name, length in lengths.items():
        if length != n_rows:
            first = next(iter(lengths))
            raise TableError(f"{source}: column {name!r} has {length} values, column {first!r} has {n_rows}")
    if n_rows == 0:
        raise TableError(f"{source} has no data rows")

    entries: dict[str, dict] = {}
    numerical_columns: list[np.ndarray] = []
    numerical_names: list[str] = []
    complete = np.ones(n_rows, dtype=bool)
    for feature in features:
        column = columns[feature.name]
        if feature.type == NUMERICAL:
            values, present = _numeric_values(column, feature.name, source, label)
            kept = values[present]
            if kept.size < 2:
                raise TableError(f"{source} column {feature.name!r}: {kept.size} value(s); a numerical feature "
                                 "needs at least 2 (stddev with ddof=1 is undefined for fewer)")
            entries[feature.name] = _numerical_entry(kept, int(n_rows - kept.size), bins)
            numerical_columns.append(values)
            numerical_names.append(feature.name)
            complete &= present
        else:
            entries[feature.name] = _categorical_entry(column)

    doc: dict[str, Any] = {"version": BASELINE_VERSION, "source": source, "rows": int(n_rows), "bins": bins,
                           "features": entries}
    if numerical_names:
        matrix = np.column_stack(numerical_columns)[complete]
        if matrix.shape[0] < 2:
            raise TableError(f"{source}: {matrix.shape[0]} row(s) have every numerical feature; the covariance "
                             "needs at least 2")
        covariance = np.atleast_2d(np.cov(matrix, rowvar=False, ddof=1))
        doc["covariance"] = {"features": numerical_names, "matrix": covariance.tolist()}
    else:
        doc["covariance"] = {"features": [], "matrix": []}
    return doc


def build_baseline(table: Mapping[str, Sequence[Any]] | str | os.PathLike,
                   features: Sequence[Feature] | None = None, bins: int = DEFAULT_BINS, *,
                   categorical: Sequence[str] | None = None) -> dict:
    """A baseline document from training data: a mapping of columns, or a CSV / Parquet path.

    ``features`` (:class:`modelmonitor.core.spec.Feature`) choose the columns, their order and types;
    without them every column is used, typed by :func:`infer_features` (``categorical`` names the
    columns forced to categorical). ``bins`` equal-width bins span each numerical feature's training range.

    >>> import numpy as np
    >>> from modelmonitor.core.spec import Feature
    >>> x = np.array([0.5, 1.5, 1.5, 2.5, 3.5])
    >>> doc = build_baseline({"x": x, "unused": list("abcde")}, [Feature("x", "numerical", 0)], bins=3)
    >>> doc["features"]["x"]["counts"], bool(doc["features"]["x"]["stddev"] == np.std(x, ddof=1))
    ([1, 2, 2], True)
    >>> list(doc["features"]), doc["covariance"]["matrix"]
    (['x'], [[1.3]])
    """
    if isinstance(table, (str, os.PathLike)):
        names = None if features is None else [f.name for f in features]
        columns, label, path = _read(table, names)
        return _build(columns, features, bins, path, label, categorical)
    if isinstance(table, Mapping):
        return _build(table, features, bins, "table", lambda i: f"index {i}", categorical)
    raise TypeError(f"table must be a mapping of columns or a path, got {type(table).__name__}")


def build_baseline_file(input_path: str | os.PathLike, output_path: str | os.PathLike,
                        bins: int = DEFAULT_BINS, feature_names: Sequence[str] | None = None,
                        monitor: Any = None, categorical: Sequence[str] | None = None) -> dict:
    """Build a baseline from a CSV/Parquet file, write it as JSON and return it (``modelmonitor baseline``).

    ``monitor`` (a :class:`modelmonitor.core.spec.MonitorSpec`) gives the feature names and types: its
    features must all be columns of the file, its predictions are included when the file has a
    column of that name. ``feature_names`` restricts and orders the columns (types from the monitor
    when given, else inferred by :func:`infer_features`, ``categorical`` naming the columns
    forced to categorical).
    """
    source = os.path.basename(os.fspath(input_path))
    if monitor is not None:
        declared = {f.name: f for f in tuple(monitor.features) + tuple(monitor.predictions)}
        columns, label, path = _read(input_path, None)
        if feature_names is not None:
            for name in feature_names:
                if name not in declared:
                    raise TableError(f"feature {name!r} is not declared by monitor {monitor.name!r} "
                                     f"(features: {_columns_listing(list(declared))})")
            chosen = [declared[name] for name in feature_names]
        else:
            chosen = list(monitor.features) + [p for p in monitor.predictions if p.name in columns]
        features = tuple(Feature(f.name, f.type, i) for i, f in enumerate(chosen))
        doc = _build(columns, features, bins, path, label)
    else:
        columns, label, path = _read(input_path, list(feature_names) if feature_names is not None else None)
        doc = _build(columns, None, bins, path, label, categorical)
    doc["source"] = source
    write_baseline(doc, output_path)
    return doc
