"""Training baselines: build from CSV/Parquet, validate, load, convert thesis baselines (DESIGN section 3).

A baseline (``baseline.json``, version 1; layout in ``docs/architecture.md``) holds, per numerical
feature, the descriptive statistics the outlier rules use (``stddev`` with ddof=1), percentiles
(numpy's default linear method) and an equal-width histogram over the training range that the
drift metrics compare windows against; per categorical feature the category frequencies; and the
covariance matrix of the numerical features (``numpy.cov``, ddof=1).

>>> doc = build_baseline({"x": [1.0, 2.0, 3.0, 4.0], "colour": ["red", "red", "blue", ""]}, bins=2)
>>> x = doc["features"]["x"]
>>> x["mean"], round(x["stddev"], 6), x["edges"], x["counts"], x["probabilities"]
(2.5, 1.290994, [1.0, 2.5, 4.0], [2, 2], [0.5, 0.5])
>>> doc["features"]["colour"]["frequencies"], doc["features"]["colour"]["missing"]
({'red': 2, 'blue': 1}, 1)

Missing values: an empty cell (or null, or NaN) is a missing value. It is left out of the
statistics and counted under ``missing``; the covariance uses the rows complete in every
numerical feature. Anything else that is not a number in a numerical column is an error naming
the file, row and column. Row numbers in CSV messages are file line numbers (the header is
row 1); in Parquet messages the first data row is row 1; for in-memory tables they are indexes.

A thesis-style baseline (``descriptive`` + ``distributions``) is converted on load; its bins are
ordered by the numeric value of their lower edge (the thesis sorted the keys as strings, which
puts "10.0" before "2.0").
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
from array import array
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from modelmonitor.core.spec import CATEGORICAL, NUMERICAL, Feature

__all__ = [
    "BASELINE_VERSION", "BaselineError", "TableError", "read_table", "build_baseline",
    "build_baseline_file", "load_baseline", "normalize_baseline", "write_baseline",
    "to_thesis_baseline",
]

BASELINE_VERSION = 1
DEFAULT_BINS = 20
PERCENTILES = (25, 50, 75)


class TableError(ValueError):
    """Training data that cannot be read or used; the message names the file, row and column."""


class BaselineError(ValueError):
    """An invalid baseline document; ``field`` is the dotted path of the offending field."""

    def __init__(self, field_path: str, message: str):
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.reason = message


# ---------------------------------------------------------------------------------------------
# Reading tables

RowLabel = Callable[[int], str]


def _columns_listing(names: Sequence[str]) -> str:
    shown = [str(n) for n in names[:12]]
    if len(names) > 12:
        shown.append(f"... {len(names) - 12} more")
    return ", ".join(shown)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: str, columns: Sequence[str] | None) -> tuple[dict[str, list], RowLabel]:
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets write a BOM
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise TableError(f"{path} is empty: a header row with the column names is required")
            header = [name.strip() for name in header]
            if not any(header):
                raise TableError(f"{path} row 1: the header row is empty")
            if all(_looks_numeric(name) for name in header):
                raise TableError(f"{path} row 1 ({', '.join(header[:6])}) looks like data: a header row "
                                 "with the column names is required")
            seen: set[str] = set()
            for i, name in enumerate(header):
                if not name:
                    raise TableError(f"{path} row 1: column {i + 1} of the header has no name")
                if name in seen:
                    raise TableError(f"{path} row 1: column {name!r} appears twice in the header")
                seen.add(name)
            wanted = list(header) if columns is None else list(columns)
            for name in wanted:
                if name not in seen:
                    raise TableError(f"column {name!r} not in {path} (columns: {_columns_listing(header)})")
            positions = [header.index(name) for name in wanted]
            values: list[list[str]] = [[] for _ in wanted]
            lines = array("q")
            width = len(header)
            for record in reader:
                if not record:  # a blank line, typically the last one
                    continue
                if len(record) != width:
                    raise TableError(f"{path} row {reader.line_num}: {len(record)} cells, the header has {width}")
                lines.append(reader.line_num)
                for column, position in zip(values, positions):
                    column.append(record[position])
        except csv.Error as exc:
            raise TableError(f"{path} row {reader.line_num}: not valid CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise TableError(f"{path} is not UTF-8 text: {exc}") from None
    if not lines:
        raise TableError(f"{path} has a header but no data rows")
    return dict(zip(wanted, values)), lambda i: f"row {lines[i]}"


def _read_parquet(path: str, columns: Sequence[str] | None) -> tuple[dict[str, list], RowLabel]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{path} is not a readable Parquet file: {exc}") from None
    names = list(schema.names)
    wanted = names if columns is None else list(columns)
    for name in wanted:
        if name not in names:
            raise TableError(f"column {name!r} not in {path} (columns: {_columns_listing(names)})")
    try:
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{path}: cannot read Parquet data: {exc}") from None
    if table.num_rows == 0:
        raise TableError(f"{path} has no data rows")
    return {name: table.column(name).to_pylist() for name in wanted}, lambda i: f"row {i + 1}"


def _read(path: str | os.PathLike, columns: Sequence[str] | None) -> tuple[dict[str, list], RowLabel, str]:
    path = os.fspath(path)
    lower = path.lower()
    if lower.endswith(".csv"):
        reader = _read_csv
    elif lower.endswith((".parquet", ".pq")):
        reader = _read_parquet
    else:
        raise TableError(f"{path}: unknown table format (use a .csv or .parquet file)")
    if not os.path.exists(path):
        raise TableError(f"{path}: no such file")
    if os.path.isdir(path):
        raise TableError(f"{path} is a directory, expected a .csv or .parquet file")
    if os.path.getsize(path) == 0:
        raise TableError(f"{path} is empty: a header row with the column names is required"
                         if reader is _read_csv else f"{path} is empty")
    try:
        table, label = reader(path, columns)
    except OSError as exc:
        raise TableError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return table, label, path


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None) -> dict[str, list]:
    """Columns of a CSV (header row required; cells stay strings) or Parquet file, by extension.

    ``columns`` selects and orders the columns; each must exist.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(path, "w").write("a,b\\n1,x\\n2,y\\n")
    >>> read_table(path, columns=["b", "a"])
    {'b': ['x', 'y'], 'a': ['1', '2']}
    """
    return _read(path, columns)[0]


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
    modelmonitor.core.baseline.TableError: table column 'x' mixes numbers (2) and text (1, first 'abc' at index 1): fix the data, or pass it as categorical (--categorical x)
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


# ---------------------------------------------------------------------------------------------
# Validation and the thesis format


def _number(value: Any, field_path: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BaselineError(field_path, f"expected a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise BaselineError(field_path, f"expected a finite number, got {value!r}")
    if minimum is not None and result < minimum:
        raise BaselineError(field_path, f"must not be below {minimum:g}, got {value!r}")
    return result


def _count(value: Any, field_path: str) -> int | float:
    number = _number(value, field_path, minimum=0)
    return int(number) if number.is_integer() else number


def _validate_numerical(name: str, entry: dict, path: str) -> dict:
    out = dict(entry)
    out["type"] = NUMERICAL
    for key in ("count", "mean", "stddev", "min", "max", "edges", "counts"):
        if key not in entry:
            raise BaselineError(f"{path}.{key}", "is required")
    out["count"] = _count(entry["count"], f"{path}.count")
    out["mean"] = _number(entry["mean"], f"{path}.mean")
    out["stddev"] = _number(entry["stddev"], f"{path}.stddev", minimum=0)
    out["min"] = _number(entry["min"], f"{path}.min")
    out["max"] = _number(entry["max"], f"{path}.max")
    if out["min"] > out["max"]:
        raise BaselineError(f"{path}.min", f"{out['min']} is larger than max {out['max']}")
    edges = entry["edges"]
    if not isinstance(edges, list) or len(edges) < 2:
        raise BaselineError(f"{path}.edges", "expected a list of at least 2 bin edges")
    out["edges"] = [_number(e, f"{path}.edges[{i}]") for i, e in enumerate(edges)]
    for i in range(1, len(edges)):
        if not out["edges"][i] > out["edges"][i - 1]:
            raise BaselineError(f"{path}.edges", f"not increasing (edges[{i - 1}] = {out['edges'][i - 1]}, "
                                f"edges[{i}] = {out['edges'][i]})")
    counts = entry["counts"]
    if not isinstance(counts, list) or len(counts) != len(edges) - 1:
        got = len(counts) if isinstance(counts, list) else repr(counts)
        raise BaselineError(f"{path}.counts", f"expected {len(edges) - 1} bin counts (one per pair of edges), "
                            f"got {got}")
    out["counts"] = [_count(c, f"{path}.counts[{i}]") for i, c in enumerate(counts)]
    total = float(sum(out["counts"]))
    if "probabilities" in entry:
        probabilities = entry["probabilities"]
        if not isinstance(probabilities, list) or len(probabilities) != len(counts):
            raise BaselineError(f"{path}.probabilities", f"expected {len(counts)} probabilities (one per bin)")
        out["probabilities"] = [_number(p, f"{path}.probabilities[{i}]", minimum=0)
                                for i, p in enumerate(probabilities)]
        if any(p > 1 for p in out["probabilities"]):
            raise BaselineError(f"{path}.probabilities", "a probability is larger than 1")
    else:
        out["probabilities"] = [c / total if total else 0.0 for c in out["counts"]]
    if "percentiles" in entry:
        percentiles = entry["percentiles"]
        if not isinstance(percentiles, dict):
            raise BaselineError(f"{path}.percentiles", 'expected a mapping like {"25": 5.1, "50": 5.8}')
        out["percentiles"] = {str(k): _number(v, f"{path}.percentiles.{k}") for k, v in percentiles.items()}
    if "missing" in entry:
        out["missing"] = _count(entry["missing"], f"{path}.missing")
    return out


def _validate_categorical(name: str, entry: dict, path: str) -> dict:
    out = dict(entry)
    out["type"] = CATEGORICAL
    frequencies = entry.get("frequencies")
    if not isinstance(frequencies, dict):
        raise BaselineError(f"{path}.frequencies", "is required: a mapping of category -> count")
    out["frequencies"] = {str(k): _count(v, f"{path}.frequencies.{k}") for k, v in frequencies.items()}
    out["count"] = (_count(entry["count"], f"{path}.count") if "count" in entry
                    else sum(out["frequencies"].values()))
    if "missing" in entry:
        out["missing"] = _count(entry["missing"], f"{path}.missing")
    return out


def _validate(doc: dict) -> dict:
    version = doc.get("version", BASELINE_VERSION)
    if version != BASELINE_VERSION:
        raise BaselineError("version", f"{version!r} is not supported (expected {BASELINE_VERSION})")
    features = doc.get("features")
    if not isinstance(features, dict) or not features:
        raise BaselineError("features", "expected a non-empty mapping of feature name -> statistics")
    out = {key: copy.deepcopy(value) for key, value in doc.items() if key not in ("features", "covariance")}
    out["version"] = BASELINE_VERSION
    out["features"] = {}
    for name, entry in features.items():
        path = f"features.{name}"
        if not isinstance(entry, dict):
            raise BaselineError(path, "expected a mapping of statistics")
        kind = entry.get("type", CATEGORICAL if "frequencies" in entry else NUMERICAL)
        if kind == NUMERICAL:
            out["features"][name] = _validate_numerical(name, copy.deepcopy(entry), path)
        elif kind == CATEGORICAL:
            out["features"][name] = _validate_categorical(name, copy.deepcopy(entry), path)
        else:
            raise BaselineError(f"{path}.type", f"{kind!r} is not {NUMERICAL} or {CATEGORICAL}")
    covariance = doc.get("covariance")
    if covariance is not None:
        if not isinstance(covariance, dict):
            raise BaselineError("covariance", "expected {features: [...], matrix: [[...]]}")
        names = covariance.get("features")
        matrix = covariance.get("matrix")
        if not isinstance(names, list):
            raise BaselineError("covariance.features", "expected a list of numerical feature names")
        for i, name in enumerate(names):
            if out["features"].get(name, {}).get("type") != NUMERICAL:
                raise BaselineError(f"covariance.features[{i}]", f"{name!r} is not a numerical feature of this baseline")
        if not isinstance(matrix, list) or len(matrix) != len(names):
            raise BaselineError("covariance.matrix", f"expected a {len(names)} x {len(names)} matrix")
        rows = []
        for i, row in enumerate(matrix):
            if not isinstance(row, list) or len(row) != len(names):
                raise BaselineError(f"covariance.matrix[{i}]", f"expected {len(names)} values")
            rows.append([_number(v, f"covariance.matrix[{i}][{j}]") for j, v in enumerate(row)])
        out["covariance"] = {"features": list(names), "matrix": rows}
    return out


def _from_thesis(doc: dict) -> dict:
    """Thesis ``descriptive`` + ``distributions`` -> our format (edges sorted numerically)."""
    descriptive = doc.get("descriptive") or {}
    distributions = doc.get("distributions") or {}
    for key, value in (("descriptive", descriptive), ("distributions", distributions)):
        if not isinstance(value, dict):
            raise BaselineError(key, "expected a mapping of feature name -> values")
    names = list(descriptive) + [name for name in distributions if name not in descriptive]
    if not names:
        raise BaselineError("descriptive", "no features")
    features: dict[str, dict] = {}
    for name in names:
        stats = descriptive.get(name)
        histogram = distributions.get(name)
        if stats is None:
            raise BaselineError(f"descriptive.{name}", "missing: a thesis baseline needs the descriptive "
                                "statistics (count, avg, stddev, min, max) of every feature in distributions")
        if histogram is None:
            raise BaselineError(f"distributions.{name}", "missing: a thesis baseline needs the distribution "
                                "of every feature in descriptive")
        if not isinstance(stats, dict):
            raise BaselineError(f"descriptive.{name}", "expected {count, avg, stddev, min, max}")
        if not isinstance(histogram, dict) or not histogram:
            raise BaselineError(f"distributions.{name}", 'expected a non-empty mapping {"<lower edge>": count}')
        for key in ("count", "avg", "stddev", "min", "max"):
            if key not in stats:
                raise BaselineError(f"descriptive.{name}.{key}", "is required")
        bins = []
        for key, count in histogram.items():
            try:
                lower = float(key)
            except (TypeError, ValueError):
                raise BaselineError(f"distributions.{name}.{key}", "the key is not a number (expected the "
                                    "bin's lower edge)") from None
            if not math.isfinite(lower):
                raise BaselineError(f"distributions.{name}.{key}", "the lower edge is not finite")
            bins.append((lower, key, count))
        bins.sort(key=lambda b: b[0])  # numerically: the thesis' string order put "10.0" before "2.0"
        for (a, key_a, _), (b, key_b, _) in zip(bins, bins[1:]):
            if a == b:
                raise BaselineError(f"distributions.{name}", f"keys {key_a!r} and {key_b!r} are the same edge")
        high = _number(stats["max"], f"descriptive.{name}.max")
        if not high > bins[-1][0]:
            raise BaselineError(f"descriptive.{name}.max", f"{high} is not above the last lower edge "
                                f"{bins[-1][1]!r} of distributions.{name}, so it cannot close the last bin")
        features[name] = {
            "type": NUMERICAL,
            "count": _count(stats["count"], f"descriptive.{name}.count"),
            "mean": _number(stats["avg"], f"descriptive.{name}.avg"),
            "stddev": _number(stats["stddev"], f"descriptive.{name}.stddev", minimum=0),
            "min": _number(stats["min"], f"descriptive.{name}.min"),
            "max": high,
            "edges": [b[0] for b in bins] + [high],
            "counts": [_count(b[2], f"distributions.{name}.{b[1]}") for b in bins],
        }
    return {"version": BASELINE_VERSION, "source": "thesis baseline", "bins": max(len(f["counts"]) for f in features.values()),
            "features": features}


def normalize_baseline(doc: Any) -> dict:
    """A validated copy of a baseline in our format (thesis baselines are converted).

    Probabilities absent from a bin list are computed as counts / sum(counts).

    >>> thesis = {"descriptive": {"x": {"count": 4, "avg": 7.0, "stddev": 4.0, "min": 2.0, "max": 13.0}},
    ...           "distributions": {"x": {"10.0": 1, "2.0": 1, "6.0": 2}}}
    >>> x = normalize_baseline(thesis)["features"]["x"]
    >>> x["edges"], x["counts"], x["probabilities"], x["mean"]
    ([2.0, 6.0, 10.0, 13.0], [1, 2, 1], [0.25, 0.5, 0.25], 7.0)
    >>> normalize_baseline({"features": {"y": {"count": 2, "mean": 0, "stddev": 1, "min": 0, "max": 1,
    ...                                          "edges": [0, 1, 0.5], "counts": [1, 1]}}})
    Traceback (most recent call last):
    ...
    modelmonitor.core.baseline.BaselineError: features.y.edges: not increasing (edges[1] = 1.0, edges[2] = 0.5)
    """
    if not isinstance(doc, dict):
        raise BaselineError("(document)", f"expected a baseline mapping, got {type(doc).__name__}")
    if "features" in doc:
        return _validate(doc)
    if "descriptive" in doc or "distributions" in doc:
        return _validate(_from_thesis(doc))
    raise BaselineError("(document)", "expected 'features' (a modelmonitor baseline) or 'descriptive' and "
                        "'distributions' (a thesis baseline)")


def load_baseline(path_or_doc: str | os.PathLike | dict) -> dict:
    """A validated baseline from a JSON file or an already loaded document (either format)."""
    if isinstance(path_or_doc, (str, os.PathLike)):
        path = os.fspath(path_or_doc)
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except OSError as exc:
            raise BaselineError("(file)", f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise BaselineError("(file)", f"{path} is not valid JSON: {exc}") from None
        return normalize_baseline(doc)
    return normalize_baseline(path_or_doc)


def write_baseline(doc: dict, path: str | os.PathLike) -> None:
    """Validate ``doc`` and write it as JSON (sorted keys, indent 2), replacing ``path`` atomically."""
    normalized = normalize_baseline(doc)
    path = os.fspath(path)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as fh:
        json.dump(normalized, fh, sort_keys=True, indent=2, allow_nan=False)
        fh.write("\n")
    os.replace(temporary, path)


def to_thesis_baseline(doc: dict) -> dict:
    """The thesis form (``descriptive`` + ``distributions``) of a baseline's numerical features.

    >>> thesis = to_thesis_baseline(build_baseline({"x": [1.0, 2.0, 4.0]}, bins=3))
    >>> thesis["distributions"]["x"], thesis["descriptive"]["x"]["avg"]
    ({'1.0': 1, '2.0': 1, '3.0': 1}, 2.3333333333333335)
    """
    normalized = normalize_baseline(doc)
    descriptive, distributions = {}, {}
    for name, entry in normalized["features"].items():
        if entry["type"] != NUMERICAL:
            continue
        descriptive[name] = {"count": entry["count"], "avg": entry["mean"], "stddev": entry["stddev"],
                             "min": entry["min"], "max": entry["max"]}
        distributions[name] = {repr(lower): count for lower, count in zip(entry["edges"], entry["counts"])}
    return {"descriptive": descriptive, "distributions": distributions}
