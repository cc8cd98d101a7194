"""Baselines: statistics against numpy oracles, CSV/Parquet round trips, every error, thesis format, Iris files."""
from __future__ import annotations

import collections
import csv
import doctest
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelmonitor.core import baseline as baseline_module
from modelmonitor.core.baseline import (BaselineError, TableError, build_baseline, build_baseline_file, load_baseline,
                                   normalize_baseline, read_table, to_thesis_baseline, write_baseline)
from modelmonitor.core.spec import Feature, SpecError, load_monitor, parse_monitor

IRIS_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "iris")
IRIS_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_FEATURES = tuple(Feature(name, "numerical", i) for i, name in enumerate(IRIS_NAMES))


def test_module_docstring_examples_run():
    assert doctest.testmod(baseline_module).failed == 0
    import importlib
    for name in ("baseline_build", "baseline_tables", "baseline_thesis", "baseline_validate"):
        assert doctest.testmod(importlib.import_module(f"modelmonitor.core.{name}")).failed == 0, name


def assert_numerical_matches_numpy(entry, x, bins):
    """Every statistic of one numerical feature against numpy computed here, independently."""
    x = np.asarray(x, dtype=np.float64)
    assert entry["type"] == "numerical"
    assert entry["count"] == x.size
    np.testing.assert_allclose(entry["mean"], np.mean(x), rtol=1e-12)
    np.testing.assert_allclose(entry["stddev"], np.std(x, ddof=1), rtol=1e-12)
    assert entry["min"] == x.min() and entry["max"] == x.max()
    np.testing.assert_allclose([entry["percentiles"][k] for k in ("25", "50", "75")],
                               np.percentile(x, [25, 50, 75]), rtol=1e-12)
    lo, hi = x.min(), x.max()
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.histogram_bin_edges(x, bins, range=(lo, hi))
    np.testing.assert_array_equal(entry["edges"], edges)
    counts, _ = np.histogram(x, edges)
    assert entry["counts"] == counts.tolist()
    np.testing.assert_allclose(entry["probabilities"], counts / x.size, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Statistics against numpy


@pytest.mark.parametrize("bins", [1, 7, 20])
def test_numerical_statistics_and_covariance_match_numpy(bins):
    rng = np.random.default_rng(5)
    table = {"a": rng.normal(3, 2, 400), "b": rng.exponential(1.5, 400), "c": rng.integers(0, 9, 400)}
    table["c"] = table["c"].tolist()  # a list of Python ints works like an array
    doc = build_baseline(table, bins=bins)
    assert list(doc["features"]) == ["a", "b", "c"]
    for name in "abc":
        assert_numerical_matches_numpy(doc["features"][name], table[name], bins)
    assert doc["covariance"]["features"] == ["a", "b", "c"]
    oracle = np.cov(np.vstack([table["a"], table["b"], np.asarray(table["c"], float)]), ddof=1)
    np.testing.assert_allclose(doc["covariance"]["matrix"], oracle, rtol=1e-12)
    assert doc["rows"] == 400 and doc["bins"] == bins and doc["version"] == 1


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(2, 60), elements=st.floats(-1e6, 1e6, allow_nan=False)),
       st.integers(1, 30))
def test_any_sample_matches_numpy(x, bins):
    doc = build_baseline({"x": x}, bins=bins)
    assert_numerical_matches_numpy(doc["features"]["x"], x, bins)
    assert sum(doc["features"]["x"]["counts"]) == x.size  # the last bin is closed: max is counted


def test_constant_column_gets_a_unit_wide_range():
    doc = build_baseline({"x": [2.5] * 10, "y": [1.0, 2.0] * 5}, bins=4)
    x = doc["features"]["x"]
    np.testing.assert_array_equal(x["edges"], np.histogram_bin_edges([2.5], 4, range=(2.0, 3.0)))
    assert x["counts"] == np.histogram([2.5] * 10, x["edges"])[0].tolist() == [0, 0, 10, 0]
    assert x["stddev"] == 0.0
    assert_numerical_matches_numpy(x, [2.5] * 10, 4)


def test_categorical_frequencies_match_counter():
    rng = np.random.default_rng(9)
    colours = rng.choice(["red", "green", "blue", "10", "2"], size=300).tolist()
    doc = build_baseline({"colour": colours, "x": rng.normal(size=300)}, categorical=["colour"])
    entry = doc["features"]["colour"]
    assert entry["type"] == "categorical" and entry["count"] == 300 and entry["missing"] == 0
    assert entry["frequencies"] == dict(collections.Counter(colours))
    assert doc["covariance"]["features"] == ["x"]  # only numerical features


def test_declared_features_choose_order_and_types():
    table = {"code": ["1", "2", "2", "3"], "x": ["0.5", "1.5", "2.5", "3.5"], "unused": list("abcd")}
    features = (Feature("x", "numerical", 0), Feature("code", "categorical", 1))
    doc = build_baseline(table, features, bins=2)
    assert list(doc["features"]) == ["x", "code"]
    assert doc["features"]["code"]["frequencies"] == {"1": 1, "2": 2, "3": 1}
    assert_numerical_matches_numpy(doc["features"]["x"], [0.5, 1.5, 2.5, 3.5], 2)


def test_type_inference_from_strings():
    table = {"num": ["1", " 2.5", "1e1", ""], "cat": ["a", "x", "b", "c"], "empty": ["", "", "", ""],
             "flag": [True, False, True, True]}
    doc = build_baseline(table, bins=3)
    types = {name: entry["type"] for name, entry in doc["features"].items()}
    assert types == {"num": "numerical", "cat": "categorical", "empty": "categorical", "flag": "categorical"}
    assert doc["features"]["flag"]["frequencies"] == {"True": 3, "False": 1}


def test_a_column_mixing_numbers_and_text_is_refused_unless_declared_categorical():
    table = {"x": ["5.1", "4.9", "abc", "6.0"], "y": ["1", "2", "3", "4"]}
    with pytest.raises(TableError, match=r"column 'x' mixes numbers \(3\) and text \(1, first 'abc' at index 2\)"):
        build_baseline(table)
    doc = build_baseline(table, categorical=["x"])
    assert doc["features"]["x"]["type"] == "categorical"
    assert doc["features"]["x"]["frequencies"] == {"5.1": 1, "4.9": 1, "abc": 1, "6.0": 1}
    assert doc["features"]["y"]["type"] == "numerical"
    with pytest.raises(TableError, match="'nope'"):
        build_baseline(table, categorical=["nope"])


def test_missing_values_are_counted_and_left_out():
    x = ["1.0", "", "3.0", "4.0", "nan", "6.0"]
    y = ["2.0", "4.0", "", "8.0", "9.0", "13.0"]
    c = ["a", "", "b", None, "a", "a"]
    doc = build_baseline({"x": x, "y": y, "c": c}, bins=3)
    assert doc["features"]["x"]["missing"] == 2 and doc["features"]["y"]["missing"] == 1
    assert_numerical_matches_numpy(doc["features"]["x"], [1.0, 3.0, 4.0, 6.0], 3)
    assert_numerical_matches_numpy(doc["features"]["y"], [2.0, 4.0, 8.0, 9.0, 13.0], 3)
    assert doc["features"]["c"] == {"type": "categorical", "count": 4, "missing": 2, "frequencies": {"a": 3, "b": 1}}
    complete_rows = np.array([[1.0, 2.0], [4.0, 8.0], [6.0, 13.0]])  # rows with both x and y
    np.testing.assert_allclose(doc["covariance"]["matrix"], np.cov(complete_rows, rowvar=False, ddof=1), rtol=1e-12)


def test_single_numerical_feature_covariance_is_its_variance():
    x = [1.0, 4.0, 9.0, 16.0]
    doc = build_baseline({"x": x})
    assert doc["covariance"] == {"features": ["x"], "matrix": [[pytest.approx(np.var(x, ddof=1), rel=1e-12)]]}


# --------------------------------------------------------------------------------------------
# Files


def write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def random_table(n=200, seed=1):
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(10, 3, n), "b": rng.uniform(-1, 1, n), "kind": rng.choice(["x", "y", "z"], n).tolist()}


def test_csv_round_trip_equals_the_in_memory_baseline(tmp_path):
    table = random_table()
    rows = [[repr(a), repr(b), k] for a, b, k in zip(table["a"].tolist(), table["b"].tolist(), table["kind"])]
    path = write_csv(tmp_path / "train.csv", ["a", "b", "kind"], rows)
    read = read_table(path)
    assert read == {"a": [r[0] for r in rows], "b": [r[1] for r in rows], "kind": table["kind"]}
    assert read_table(path, columns=["kind", "a"]) == {"kind": table["kind"], "a": [r[0] for r in rows]}
    from_file = build_baseline(path, bins=15)
    from_memory = build_baseline(table, bins=15)
    assert from_file["source"] == path
    from_file.pop("source"), from_memory.pop("source")
    assert from_file == from_memory


def test_parquet_round_trip_equals_the_in_memory_baseline(tmp_path):
    table = random_table(seed=2)
    path = str(tmp_path / "train.parquet")
    pq.write_table(pa.table(table), path)
    read = read_table(path)
    assert read["a"] == table["a"].tolist() and read["kind"] == table["kind"]
    from_file = build_baseline(path, bins=10)
    from_memory = build_baseline(table, bins=10)
    from_file.pop("source"), from_memory.pop("source")
    assert from_file == from_memory
    features = (Feature("b", "numerical", 0),)
    assert list(build_baseline(path, features)["features"]) == ["b"]


def test_build_baseline_file_with_a_monitor(tmp_path):
    table = random_table(seed=3)
    rows = [[repr(a), repr(b), k, str(i % 3)] for i, (a, b, k) in
            enumerate(zip(table["a"].tolist(), table["b"].tolist(), table["kind"]))]
    path = write_csv(tmp_path / "train.csv", ["a", "b", "kind", "label"], rows)
    monitor = parse_monitor({"metadata": {"name": "m"}, "spec": {"schema": {
        "features": [{"name": "b"}, {"name": "kind", "type": "categorical"}],
        "predictions": [{"name": "label", "type": "categorical"}, {"name": "score"}]}}})
    out = tmp_path / "baseline.json"
    doc = build_baseline_file(path, out, bins=5, monitor=monitor)
    # monitor features in order, then the predictions the file has a column for ("score" has none)
    assert list(doc["features"]) == ["b", "kind", "label"]
    assert doc["features"]["label"]["frequencies"] == dict(collections.Counter(r[3] for r in rows))
    assert doc["source"] == "train.csv"
    assert load_baseline(str(out)) == normalize_baseline(doc)
    restricted = build_baseline_file(path, out, bins=5, feature_names=["kind"], monitor=monitor)
    assert list(restricted["features"]) == ["kind"]
    with pytest.raises(TableError, match=r"feature 'a' is not declared by monitor 'm' \(features: b, kind, label, score\)"):
        build_baseline_file(path, out, feature_names=["a"], monitor=monitor)


def test_build_baseline_file_with_feature_names_infers_types(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x", "y", "c"], [["1", "2", "u"], ["2", "5", "v"], ["4", "6", "u"]])
    doc = build_baseline_file(path, tmp_path / "b.json", bins=2, feature_names=["c", "x"])
    assert [(n, e["type"]) for n, e in doc["features"].items()] == [("c", "categorical"), ("x", "numerical")]


def test_write_baseline_sorted_keys_indent_2(tmp_path):
    doc = build_baseline(random_table(50, seed=4), bins=4)
    path = tmp_path / "b.json"
    write_baseline(doc, path)
    text = path.read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert json.loads(text) == doc
    assert load_baseline(str(path)) == normalize_baseline(doc)


# --------------------------------------------------------------------------------------------
# Table errors name the file, row and column


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.csv")
    with pytest.raises(TableError, match=r"nope\.csv: no such file"):
        build_baseline(path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("a\n1\n")
    with pytest.raises(TableError, match=r"train\.txt: unknown table format \(use a \.csv or \.parquet file\)"):
        read_table(str(path))


def test_empty_csv(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("")
    with pytest.raises(TableError, match=r"train\.csv is empty: a header row with the column names is required"):
        build_baseline(str(path))


def test_header_only_csv(tmp_path):
    path = write_csv(tmp_path / "train.csv", ["a", "b"], [])
    with pytest.raises(TableError, match=r"train\.csv has a header but no data rows"):
        read_table(path)


def test_csv_without_header(tmp_path):
    path = write_csv(tmp_path / "train.csv", ["5.1", "3.5"], [["4.9", "3.0"]])
    with pytest.raises(TableError, match=r"train\.csv row 1 \(5\.1, 3\.5\) looks like data: a header row"):
        read_table(path)


def test_duplicate_header(tmp_path):
    path = write_csv(tmp_path / "train.csv", ["a", "b", "a"], [["1", "2", "3"]])
    with pytest.raises(TableError, match=r"train\.csv row 1: column 'a' appears twice in the header"):
        read_table(path)


def test_missing_column(tmp_path):
    path = write_csv(tmp_path / "train.csv", IRIS_NAMES[:3] + ["species"], [["1", "2", "3", "x"]] * 3)
    with pytest.raises(TableError) as err:
        build_baseline(path, IRIS_FEATURES)
    assert str(err.value) == (f"column 'petal_width' not in {path} "
                              "(columns: sepal_length, sepal_width, petal_length, species)")


def test_missing_column_in_memory():
    with pytest.raises(TableError, match=r"column 'petal_width' not in table \(columns: sepal_length\)"):
        build_baseline({"sepal_length": [1.0, 2.0]}, [IRIS_FEATURES[0], IRIS_FEATURES[3]])


def test_non_numeric_cell_names_file_row_and_column(tmp_path):
    rows = [["5.1", "3.5", "1.4", "0.2"]] * 5 + [["abc", "3.0", "1.4", "0.2"]] + [["4.7", "3.2", "1.3", "0.2"]]
    path = write_csv(tmp_path / "train.csv", IRIS_NAMES, rows)
    with pytest.raises(TableError) as err:
        build_baseline(path, IRIS_FEATURES)
    # the header is row 1, so the sixth data row is row 7 of the file
    assert str(err.value) == f"{path} row 7 column 'sepal_length': 'abc' is not a number"


def test_infinite_cell_is_refused(tmp_path):
    path = write_csv(tmp_path / "train.csv", ["x"], [["1"], ["inf"], ["2"]])
    with pytest.raises(TableError, match=r"train\.csv row 3 column 'x': 'inf' is not a finite number"):
        build_baseline(path, (Feature("x", "numerical", 0),))


def test_non_numeric_value_in_parquet_and_in_memory(tmp_path):
    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"x": ["1.5", "2.5", "oops"]}), path)
    with pytest.raises(TableError, match=r"t\.parquet row 3 column 'x': 'oops' is not a number"):
        build_baseline(path, (Feature("x", "numerical", 0),))
    with pytest.raises(TableError, match=r"^table index 1 column 'x': \[1\] is not a number"):
        build_baseline({"x": [1.0, [1], 2.0]}, (Feature("x", "numerical", 0),))


def test_fewer_than_two_values(tmp_path):
    path = write_csv(tmp_path / "train.csv", ["x", "y"], [["1.5", "2"]])
    with pytest.raises(TableError, match=r"train\.csv column 'x': 1 value\(s\); a numerical feature needs at least 2 "
                                         r"\(stddev with ddof=1 is undefined"):
        build_baseline(path)
    with pytest.raises(TableError, match=r"column 'x': 1 value\(s\)"):
        build_baseline({"x": ["1", "", ""]}, (Feature("x", "numerical", 0),))


def test_ragged_csv_row(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(TableError, match=r"train\.csv row 3: 1 cells, the header has 2"):
        read_table(str(path))


def test_unequal_in_memory_columns():
    with pytest.raises(TableError, match=r"table: column 'b' has 2 values, column 'a' has 3"):
        build_baseline({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0]})


def test_parquet_errors(tmp_path):
    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"a": [1.0, 2.0]}), path)
    with pytest.raises(TableError, match=r"column 'b' not in .*t\.parquet \(columns: a\)"):
        read_table(path, columns=["b"])
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet at all")
    with pytest.raises(TableError, match=r"bad\.parquet is not a readable Parquet file"):
        read_table(str(bad))
    empty_rows = str(tmp_path / "none.parquet")
    pq.write_table(pa.table({"a": pa.array([], pa.float64())}), empty_rows)
    with pytest.raises(TableError, match=r"none\.parquet has no data rows"):
        read_table(empty_rows)
    zero = tmp_path / "zero.parquet"
    zero.write_bytes(b"")
    with pytest.raises(TableError, match=r"zero\.parquet is empty"):
        read_table(str(zero))


@pytest.mark.parametrize("bins", [0, -3, 2.5, True, "20"])
def test_bins_must_be_a_positive_integer(bins):
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        build_baseline({"x": [1.0, 2.0]}, bins=bins)


# --------------------------------------------------------------------------------------------
# The thesis format


def test_thesis_baseline_edges_sorted_numerically_not_as_strings():
    # As strings "10.0" < "2.0" < "4.0" < "8.0": the thesis' order; numerically 2 < 4 < 8 < 10.
    lower_edges = {"10.0": 5, "2.0": 1, "4.0": 2, "8.0": 4}
    thesis = {"descriptive": {"x": {"count": 12.0, "avg": 7.1, "stddev": 2.5, "min": 2.0, "max": 12.0, "mean": 0.8}},
              "distributions": {"x": lower_edges}}
    x = normalize_baseline(thesis)["features"]["x"]
    numeric_order = sorted(lower_edges, key=float)
    assert sorted(lower_edges) != numeric_order  # the string order really is different
    assert x["edges"] == [float(k) for k in numeric_order] + [12.0]
    assert x["counts"] == [lower_edges[k] for k in numeric_order]
    np.testing.assert_allclose(x["probabilities"], np.array(x["counts"]) / sum(lower_edges.values()))
    assert x["mean"] == 7.1 and x["count"] == 12 and type(x["count"]) is int  # avg, not the thesis' "mean"


@pytest.mark.parametrize("thesis, field, fragment", [
    ({"descriptive": {"x": {"count": 1, "avg": 1, "stddev": 1, "min": 0, "max": 2}}}, "distributions.x", "missing"),
    ({"distributions": {"x": {"0": 1}}}, "descriptive.x", "missing"),
    ({"descriptive": {"x": {"count": 1, "stddev": 1, "min": 0, "max": 2}}, "distributions": {"x": {"0": 1}}},
     "descriptive.x.avg", "is required"),
    ({"descriptive": {"x": {"count": 1, "avg": 1, "stddev": 1, "min": 0, "max": 2}},
      "distributions": {"x": {"zero": 1}}}, "distributions.x.zero", "the key is not a number"),
    ({"descriptive": {"x": {"count": 1, "avg": 1, "stddev": 1, "min": 0, "max": 2}},
      "distributions": {"x": {"1": 1, "1.0": 2}}}, "distributions.x", "keys '1' and '1.0' are the same edge"),
    ({"descriptive": {"x": {"count": 1, "avg": 1, "stddev": 1, "min": 0, "max": 1.0}},
      "distributions": {"x": {"0": 1, "1": 2}}}, "descriptive.x.max", "is not above the last lower edge '1'"),
    ({"descriptive": {"x": {"count": 1, "avg": 1, "stddev": -1, "min": 0, "max": 2}},
      "distributions": {"x": {"0": 1}}}, "descriptive.x.stddev", "must not be below 0"),
    ({"descriptive": {"x": {"count": 1, "avg": 1, "stddev": 1, "min": 0, "max": 2}},
      "distributions": {"x": {"0": -1}}}, "distributions.x.0", "must not be below 0"),
])
def test_thesis_baseline_errors_name_the_field(thesis, field, fragment):
    with pytest.raises(BaselineError) as err:
        normalize_baseline(thesis)
    assert err.value.field == field
    assert fragment in err.value.reason
    assert str(err.value).startswith(f"{field}: ")


def test_thesis_round_trip_of_a_built_baseline():
    rng = np.random.default_rng(21)
    doc = build_baseline({"a": rng.normal(size=100), "b": rng.gamma(2.0, size=100) * 10}, bins=20)
    back = normalize_baseline(to_thesis_baseline(doc))
    for name in ("a", "b"):
        for key in ("count", "mean", "stddev", "min", "max", "edges", "counts", "probabilities"):
            assert back["features"][name][key] == doc["features"][name][key], (name, key)


# --------------------------------------------------------------------------------------------
# Our format: validation


def valid_doc():
    return {"version": 1, "features": {
        "x": {"type": "numerical", "count": 4, "mean": 2.5, "stddev": 1.29, "min": 1.0, "max": 4.0,
              "percentiles": {"25": 1.75, "50": 2.5, "75": 3.25}, "edges": [1.0, 2.5, 4.0], "counts": [2, 2],
              "probabilities": [0.5, 0.5]},
        "c": {"type": "categorical", "count": 3, "frequencies": {"a": 2, "b": 1}}},
        "covariance": {"features": ["x"], "matrix": [[1.6667]]}}


def test_valid_document_is_kept_and_not_mutated():
    doc = valid_doc()
    original = json.loads(json.dumps(doc))
    normalized = normalize_baseline(doc)
    assert doc == original
    assert normalized == original


def test_probabilities_are_recomputed_when_absent():
    doc = valid_doc()
    doc["features"]["x"].update(edges=[0.0, 1.0, 2.0, 3.0], counts=[1, 0, 3])
    del doc["features"]["x"]["probabilities"]
    np.testing.assert_allclose(normalize_baseline(doc)["features"]["x"]["probabilities"], np.array([1, 0, 3]) / 4)


def edit(path, value):
    doc = valid_doc()
    *parents, last = path
    target = doc
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize("path, value, field, fragment", [
    (("features", "x", "counts"), KeyError, "features.x.counts", "is required"),
    (("features", "x", "edges"), [1.0, 4.0, 2.5], "features.x.edges", "not increasing (edges[1] = 4.0, edges[2] = 2.5)"),
    (("features", "x", "edges"), [1.0, 1.0, 4.0], "features.x.edges", "not increasing"),
    (("features", "x", "edges"), [1.0], "features.x.edges", "at least 2"),
    (("features", "x", "edges"), [1.0, "2", 4.0], "features.x.edges[1]", "expected a number"),
    (("features", "x", "counts"), [2, 1, 1], "features.x.counts", "expected 2 bin counts (one per pair of edges), got 3"),
    (("features", "x", "counts"), [2, -1], "features.x.counts[1]", "must not be below 0"),
    (("features", "x", "probabilities"), [1.0], "features.x.probabilities", "expected 2 probabilities"),
    (("features", "x", "probabilities"), [1.5, 0.5], "features.x.probabilities", "larger than 1"),
    (("features", "x", "stddev"), -0.1, "features.x.stddev", "must not be below 0"),
    (("features", "x", "mean"), float("nan"), "features.x.mean", "expected a finite number"),
    (("features", "x", "min"), 5.0, "features.x.min", "5.0 is larger than max 4.0"),
    (("features", "x", "type"), "ordinal", "features.x.type", "'ordinal' is not numerical or categorical"),
    (("features", "x", "percentiles"), [1, 2], "features.x.percentiles", "expected a mapping"),
    (("features", "c", "frequencies"), KeyError, "features.c.frequencies", "is required"),
    (("features", "c", "frequencies"), {"a": -2}, "features.c.frequencies.a", "must not be below 0"),
    (("covariance", "features"), ["c"], "covariance.features[0]", "'c' is not a numerical feature"),
    (("covariance", "matrix"), [[1.0, 2.0]], "covariance.matrix[0]", "expected 1 values"),
    (("covariance", "matrix"), [], "covariance.matrix", "expected a 1 x 1 matrix"),
    (("features",), {}, "features", "expected a non-empty mapping"),
    (("version",), 2, "version", "2 is not supported"),
])
def test_validation_errors_name_the_field(path, value, field, fragment):
    with pytest.raises(BaselineError) as err:
        normalize_baseline(edit(path, value))
    assert err.value.field == field
    assert fragment in err.value.reason, err.value.reason


def test_unknown_document_and_file_errors(tmp_path):
    with pytest.raises(BaselineError, match=r"^\(document\): expected 'features' .* or 'descriptive' and 'distributions'"):
        normalize_baseline({"stats": {}})
    with pytest.raises(BaselineError, match=r"^\(document\): expected a baseline mapping, got list"):
        load_baseline([1, 2])
    with pytest.raises(BaselineError, match=r"cannot read .*missing\.json"):
        load_baseline(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(BaselineError, match=r"broken\.json is not valid JSON"):
        load_baseline(str(broken))
    with pytest.raises(BaselineError, match=r"features\.x\.edges: not increasing"):
        write_baseline(edit(("features", "x", "edges"), [3.0, 2.0, 1.0]), tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


# --------------------------------------------------------------------------------------------
# The Iris example files


def read_csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_iris_csv_is_fishers_iris():
    rows = read_csv_rows(os.path.join(IRIS_DIR, "iris.csv"))
    assert rows[0] == IRIS_NAMES + ["species"]
    data = rows[1:]
    assert len(data) == 150
    assert collections.Counter(r[4] for r in data) == {"setosa": 50, "versicolor": 50, "virginica": 50}
    values = np.array([[float(v) for v in r[:4]] for r in data])
    # Published column means of the Iris data (Fisher 1936; UCI summary statistics)
    np.testing.assert_allclose(values.mean(axis=0), [5.843, 3.057, 3.758, 1.199], atol=5e-4)
    assert data[0] == ["5.1", "3.5", "1.4", "0.2", "setosa"] and data[-1] == ["5.9", "3.0", "5.1", "1.8", "virginica"]


def test_iris_train_csv_is_the_seeded_split():
    full = read_csv_rows(os.path.join(IRIS_DIR, "iris.csv"))
    train = read_csv_rows(os.path.join(IRIS_DIR, "train.csv"))
    permutation = np.random.default_rng(42).permutation(150)
    assert train[0] == full[0]
    assert train[1:] == [full[1 + i] for i in permutation[:120]]


def test_iris_baseline_json_is_built_from_train_csv():
    stored = load_baseline(os.path.join(IRIS_DIR, "baseline.json"))
    train = os.path.join(IRIS_DIR, "train.csv")
    rebuilt = normalize_baseline(build_baseline(train, IRIS_FEATURES, bins=20))
    rebuilt["source"] = "train.csv"
    assert stored == rebuilt
    values = np.array([[float(v) for v in r[:4]] for r in read_csv_rows(train)[1:]])
    for j, name in enumerate(IRIS_NAMES):
        assert_numerical_matches_numpy(stored["features"][name], values[:, j], 20)
    np.testing.assert_allclose(stored["covariance"]["matrix"], np.cov(values, rowvar=False), rtol=1e-12)


def test_iris_monitor_yaml():
    spec = load_monitor(os.path.join(IRIS_DIR, "monitor.yaml"))
    assert spec.name == "iris" and spec.inference_service == "iris"
    assert [(f.name, f.type) for f in spec.features] == [(n, "numerical") for n in IRIS_NAMES]
    assert [(p.name, p.type) for p in spec.predictions] == [("prediction", "numerical")]
    w = spec.window
    assert (w.duration_ms, w.slide_ms, w.watermark_delay_ms, w.idle_timeout_ms) == (15000, 15000, 6000, 30000)
    assert spec.stats.percentiles == (25.0, 50.0, 75.0) and spec.stats.iqr and spec.stats.stddev_type == "sample"
    assert spec.stats.covariance and spec.stats.correlation
    assert spec.outliers.stddev_k == 3.0 and spec.outliers.range
    # The thesis' three detectors, each reporting every score (thresholds are tuned for the demo).
    drift = {d.name: d for d in spec.drift}
    assert {"jensenShannon", "kullbackLeibler", "wasserstein"} <= set(drift)
    assert all(drift[name].show_all for name in ("jensenShannon", "kullbackLeibler", "wasserstein"))
    assert (spec.alerts.min_window_count, spec.alerts.consecutive_windows, spec.alerts.cooldown_ms) == (100, 2, 300000)
    assert os.path.samefile(spec.baseline_ref["file"], os.path.join(IRIS_DIR, "baseline.json"))


def test_iris_thesis_monitor_yaml_carries_the_same_baseline():
    with open(os.path.join(IRIS_DIR, "thesis-monitor.yaml")) as fh:
        doc = yaml.safe_load(fh)
    assert doc["apiVersion"] == "monitoring.hops.io/v1beta1" and doc["kind"] == "ModelMonitor"
    with pytest.raises(SpecError, match="convert"):
        parse_monitor(doc)
    monitoring = doc["spec"]["monitoring"]
    assert monitoring["trigger"]["window"] == {"duration": 15000, "slide": 15000, "watermarkDelay": 6000}
    assert set(doc["spec"]["storage"]["analysis"]) == {"stats", "outliers", "drift"}
    for sink in [doc["spec"]["storage"]["inference"]] + list(doc["spec"]["storage"]["analysis"].values()):
        assert set(sink["kafka"]) == {"brokers", "topic"} and {"name", "partitions", "replicationFactor"} <= set(
            sink["kafka"]["topic"])
    converted = normalize_baseline(monitoring["baseline"])
    stored = load_baseline(os.path.join(IRIS_DIR, "baseline.json"))
    for name in IRIS_NAMES:
        for key in ("count", "mean", "stddev", "min", "max", "edges", "counts", "probabilities"):
            assert converted["features"][name][key] == stored["features"][name][key], (name, key)
