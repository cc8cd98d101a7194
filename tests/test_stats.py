"""Window statistics (modelmonitor.stats.aggregate) against independent oracles: NumPy, SciPy, Counter.

Every expected value is computed by the oracle from the same data; merges are checked against
one pass over all rows (exact for counts, extremes, histograms and categories; relative
tolerance 1e-9 for moments and covariance, with an absolute floor scaled to the data's magnitude,
since cancellation makes near-zero results carry rounding of the data's own size). Percentiles come
from a KLL sketch: equal to NumPy's while a window holds at most K values, beyond that within the
documented rank error (1%) of NumPy's on the raw values.
"""
from __future__ import annotations

import collections
import doctest
import json
import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelmonitor.stats import aggregate as stats
from modelmonitor.core.spec import CATEGORICAL, NUMERICAL, Feature, StatsSpec
from modelmonitor.stats.aggregate import (CategoryCounts, CoMoments, Count, Histogram, Max, Min, Moments, Quantiles, Sum,
                                WindowAggregate)
from modelmonitor.stats.quantiles import K as KLL_K, RANK_ERROR

REL = 1e-9

# A mixed layout: three numerical features (two with histograms) and two categorical ones.
LAYOUT = (
    Feature("x", NUMERICAL, 0),
    Feature("colour", CATEGORICAL, 1),
    Feature("y", NUMERICAL, 2),
    Feature("shape", CATEGORICAL, 3),
    Feature("z", NUMERICAL, 4),
)
NUMERICAL_NAMES = ["x", "y", "z"]
EDGES = {"x": np.array([-10.0, -2.5, 0.0, 1.0, 7.5, 100.0]), "z": np.linspace(-3.0, 3.0, 13)}
KNOWN = {"colour": {"a", "b"}}  # "shape" has no known set: its unseenShare is None
SAMPLE = StatsSpec()
POPULATION = StatsSpec(percentiles=(0.0, 2.5, 50.0, 99.9, 100.0), stddev_type="population",
                       covariance_type="population")


def new_window() -> WindowAggregate:
    return WindowAggregate(LAYOUT, EDGES, KNOWN)


def round_trip(window: WindowAggregate) -> WindowAggregate:
    return WindowAggregate.from_bytes(LAYOUT, EDGES, KNOWN, window.to_bytes())


def column(rows, position):
    return [row[position] for row in rows]


def assert_percentiles(got, x, qs):
    """NumPy's percentiles exactly while the sketch keeps every value (n <= K); beyond, each value's
    rank among the raw values within RANK_ERROR of q (the sketch's documented bound)."""
    x = np.sort(np.asarray(x, dtype=float))
    if x.size <= KLL_K:
        assert list(got) == np.percentile(x, qs).tolist()
        return
    for value, q in zip(got, qs):
        below = np.searchsorted(x, value, side="left") / x.size
        at_or_below = np.searchsorted(x, value, side="right") / x.size
        assert below - RANK_ERROR <= q / 100 <= at_or_below + RANK_ERROR, (q, value, below, at_or_below)
        assert x[0] <= value <= x[-1]


def close(got, want, scale, rel=REL):
    """``got`` equals ``want`` to a relative 1e-9, or to 1e-12 of the data's magnitude ``scale``."""
    return got is not None and math.isclose(got, want, rel_tol=rel, abs_tol=1e-12 * scale)


def random_batches(rng, values, max_batches=5):
    """Split ``values`` into consecutive batches of random sizes (some may be empty)."""
    cuts = np.sort(rng.integers(0, len(values) + 1, size=rng.integers(0, max_batches)))
    return np.split(np.asarray(values), cuts)


# ----------------------------------------------------------------------------------------------
# each statistic against its oracle


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 20_000])
def test_scalar_statistics_match_numpy(size):
    rng = np.random.default_rng(size)
    x = rng.normal(50.0, 7.0, size)
    count, total, low, high, moments = Count(), Sum(), Min(), Max(), Moments()
    for batch in random_batches(rng, x):
        for stat in (count, total, low, high, moments):
            stat.update(batch)
    assert count.get() == size
    assert close(total.get(), np.sum(x), np.abs(x).sum())
    assert low.get() == np.min(x) and high.get() == np.max(x)
    assert moments.count == size
    assert close(moments.mean, np.mean(x), np.abs(x).max())
    assert close(moments.variance(ddof=0), np.var(x), x @ x)
    assert close(moments.stddev(ddof=0), np.std(x), np.abs(x).max())
    if size > 1:
        assert close(moments.variance(), np.var(x, ddof=1), x @ x)
        assert close(moments.stddev(ddof=1), np.std(x, ddof=1), np.abs(x).max())
    else:
        assert moments.variance() is None and moments.stddev() is None


def test_moments_are_stable_far_from_zero():
    # A large offset defeats the naive sum-of-squares formula; Chan's merge keeps full precision.
    rng = np.random.default_rng(1)
    x = 1e9 + rng.normal(0.0, 1.0, 50_000)
    merged = Moments()
    for batch in random_batches(rng, x, 20):
        merged.merge(Moments().update(batch))
    assert math.isclose(merged.variance(), np.var(x, ddof=1), rel_tol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 5, 101, 400, 10_000, 200_000])
def test_quantiles_match_numpys_percentiles_within_the_bound(size):
    rng = np.random.default_rng(size)
    x = rng.exponential(3.0, size).round(2)  # rounding makes ties
    q = [0.0, 1.0, 2.5, 25.0, 50.0, 75.0, 99.9, 100.0]
    merged = Quantiles()
    for batch in random_batches(rng, x):
        merged.merge(Quantiles().update(batch))
    assert merged.count == size
    assert_percentiles(merged.percentile(q), x, q)
    assert_percentiles([merged.percentile(37.5)], x, [37.5])
    assert_percentiles([merged.get()], x, [50.0])
    assert merged.percentile([0.0, 100.0]) == [x.min(), x.max()]  # the extremes are exact


@pytest.mark.parametrize("edges", [
    [2.0, 10.0, 100.0],
    np.linspace(-4.0, 4.0, 21).tolist(),
    [-1e6, -3.0, -2.999999, 0.0, 1e-9, 5.0, 1e6],
])
def test_histogram_matches_numpy_histogram_with_under_and_overflow(edges):
    rng = np.random.default_rng(len(edges))
    e = np.asarray(edges)
    span = e[-1] - e[0]
    x = np.concatenate([rng.uniform(e[0] - span / 2, e[-1] + span / 2, 5000), e, e, e[[0, -1]],
                        np.nextafter(e, -np.inf), np.nextafter(e, np.inf)])
    hist = Histogram(edges)
    for batch in random_batches(rng, x):
        hist.update(batch)
    counts = hist.get()
    assert counts.size == len(edges) + 1
    assert counts[1:-1].tolist() == np.histogram(x, bins=e)[0].tolist()
    assert counts[0] == np.count_nonzero(x < e[0])
    assert counts[-1] == np.count_nonzero(x > e[-1])
    assert counts.sum() == x.size


def test_comoments_match_numpy_cov_and_corrcoef():
    rng = np.random.default_rng(7)
    mix = np.array([[1.0, 0.5, 0.0], [0.0, 2.0, -1.0], [0.0, 0.0, 0.3]])
    x = rng.normal(size=(3000, 3)) @ mix + np.array([5.0, -200.0, 1e4])
    merged = CoMoments(3)
    for cut in random_batches(rng, np.arange(len(x)), 8):
        merged.merge(CoMoments(3).update(x[cut]))
    scale = np.abs(x).max(axis=0)
    for ddof in (0, 1):
        want = np.cov(x, rowvar=False, ddof=ddof)
        got = merged.covariance(ddof)
        for i in range(3):
            for j in range(3):
                assert close(got[i][j], want[i, j], len(x) * scale[i] * scale[j])
    want_r = np.corrcoef(x, rowvar=False)
    got_r = merged.correlation()
    for i in range(3):
        for j in range(3):
            assert math.isclose(got_r[i][j], want_r[i, j], rel_tol=REL, abs_tol=1e-12)
    assert math.isclose(got_r[0][1], scipy.stats.pearsonr(x[:, 0], x[:, 1]).statistic, rel_tol=REL)
    assert merged.get() == merged.covariance(1)


def test_category_counts_match_counter():
    rng = np.random.default_rng(3)
    values = rng.choice(np.array(["a", "b", "c", "d", None], dtype=object), 5000,
                        p=[0.4, 0.3, 0.15, 0.1, 0.05]).tolist()
    known = {"a", "b", "never"}
    merged = CategoryCounts(known)
    for batch in random_batches(rng, np.arange(len(values))):
        merged.merge(CategoryCounts(known).update([values[i] for i in batch]))
    oracle = collections.Counter(values)
    missing = oracle.pop(None)
    assert merged.get() == dict(oracle) and list(merged.get()) == sorted(oracle)
    assert merged.missing == missing and merged.count == sum(oracle.values())
    unseen = sum(c for v, c in oracle.items() if v not in known)
    assert merged.unseen_share == unseen / sum(oracle.values())
    assert CategoryCounts().update(values).unseen_share is None


# ----------------------------------------------------------------------------------------------
# the window record against oracles


def mixed_rows(rng, n):
    x = rng.normal(0.0, 20.0, n)
    y = 3.0 * x + rng.normal(0.0, 5.0, n)
    z = rng.normal(0.0, 1.5, n)
    colour = rng.choice(np.array(["a", "b", "c", None], dtype=object), n).tolist()
    shape = rng.choice(np.array(["round", "flat", None], dtype=object), n).tolist()
    return [[float(x[i]), colour[i], float(y[i]), shape[i], float(z[i])] for i in range(n)]


def check_record_against_numpy(record, rows, stats_spec):
    """Every field of a finalised record against NumPy/SciPy/Counter over ``rows``."""
    n = len(rows)
    ddof = 1 if stats_spec.stddev_type == "sample" else 0
    cov_ddof = 1 if stats_spec.covariance_type == "sample" else 0
    assert record["count"] == n
    json.dumps(record, allow_nan=False)  # plain numbers and null, never NaN
    matrix = np.array([[row[f.index] for f in LAYOUT if f.type == NUMERICAL] for row in rows]).reshape(n, 3)
    for j, name in enumerate(NUMERICAL_NAMES):
        got, x = record["features"][name], matrix[:, j]
        scale = float(np.abs(x).max()) if n else 1.0
        assert got["count"] == n
        assert got["sum"] == pytest.approx(np.sum(x), rel=REL, abs=1e-12 * n * scale)
        keys = [np.format_float_positional(q, trim="-") for q in stats_spec.percentiles]
        assert list(got["percentiles"]) == keys
        if n == 0:
            assert got["min"] is got["max"] is got["mean"] is got["stddev"] is got["variance"] is None
            assert all(v is None for v in got["percentiles"].values())
        else:
            assert got["min"] == np.min(x) and got["max"] == np.max(x)
            assert close(got["mean"], np.mean(x), scale)
            assert_percentiles(list(got["percentiles"].values()), x, stats_spec.percentiles)
            if n > ddof:
                assert close(got["variance"], np.var(x, ddof=ddof), n * scale * scale)
                assert close(got["stddev"] ** 2, np.std(x, ddof=ddof) ** 2, n * scale * scale)
            else:
                assert got["variance"] is None and got["stddev"] is None
        if stats_spec.iqr:
            if n:
                if n <= KLL_K:
                    assert got["iqr"] == np.percentile(x, 75) - np.percentile(x, 25)
                    assert math.isclose(got["iqr"], scipy.stats.iqr(x), rel_tol=REL, abs_tol=1e-12 * scale)
                else:  # the difference of two sketch percentiles, each within the rank bound
                    lo, hi = np.quantile(x, [0.75 - RANK_ERROR, 0.25 + RANK_ERROR], method="inverted_cdf")
                    top, bottom = np.quantile(x, [0.75 + RANK_ERROR, 0.25 - RANK_ERROR], method="inverted_cdf")
                    assert lo - hi - 1e-12 * scale <= got["iqr"] <= top - bottom + 1e-12 * scale
            else:
                assert got["iqr"] is None
        else:
            assert "iqr" not in got
        if name in EDGES:
            e = EDGES[name]
            assert got["histogram"]["edges"] == e.tolist()
            assert got["histogram"]["counts"] == [int(np.sum(x < e[0])), *np.histogram(x, e)[0].tolist(),
                                                  int(np.sum(x > e[-1]))]
        else:
            assert got["histogram"] is None
    for f in LAYOUT:
        if f.type != CATEGORICAL:
            continue
        got = record["features"][f.name]
        oracle = collections.Counter(row[f.index] for row in rows)
        missing = oracle.pop(None, 0)
        assert got["categories"] == dict(oracle) and got["missing"] == missing
        assert got["count"] == sum(oracle.values())
        if f.name in KNOWN and got["count"]:
            assert got["unseenShare"] == sum(c for v, c in oracle.items() if v not in KNOWN[f.name]) / got["count"]
        else:
            assert got["unseenShare"] is None
    scales = np.abs(matrix).max(axis=0) if n else np.ones(3)
    assert record["covariance"]["features"] == NUMERICAL_NAMES == record["correlation"]["features"]
    cov = record["covariance"]["matrix"]
    if n <= cov_ddof:
        assert cov == [[None] * 3] * 3
    else:
        want = np.cov(matrix, rowvar=False, ddof=cov_ddof)
        for i in range(3):
            for j in range(3):
                assert close(cov[i][j], want[i, j], n * scales[i] * scales[j])
    corr = record["correlation"]["matrix"]
    constant = [n == 0 or bool(np.all(matrix[:, j] == matrix[0, j])) for j in range(3)]
    well_conditioned = [n > 1 and np.var(matrix[:, j]) > 1e-4 * scales[j] ** 2 for j in range(3)]
    with np.errstate(divide="ignore", invalid="ignore"):
        want_r = np.corrcoef(matrix, rowvar=False) if n > 1 else None
    for i in range(3):
        for j in range(3):
            if constant[i] or constant[j]:
                assert corr[i][j] is None
            elif well_conditioned[i] and well_conditioned[j]:
                assert math.isclose(corr[i][j], want_r[i, j], rel_tol=REL, abs_tol=1e-8)
            else:  # rounding noise of a nearly constant feature: only the range is guaranteed
                assert -1.0 <= corr[i][j] <= 1.0


@pytest.mark.parametrize("stats_spec", [SAMPLE, POPULATION], ids=["sample", "population"])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 500])
def test_window_record_matches_numpy(stats_spec, n):
    rows = mixed_rows(np.random.default_rng(n), n)
    window = new_window()
    window.update_rows(rows)
    check_record_against_numpy(window.finalize(stats_spec), rows, stats_spec)


def test_update_rows_equals_update_arrays():
    rows = mixed_rows(np.random.default_rng(11), 300)
    by_rows, by_arrays, in_batches = new_window(), new_window(), new_window()
    by_rows.update_rows(rows)
    numeric = np.array([[r[0], r[2], r[4]] for r in rows])
    by_arrays.update_arrays(numeric, [column(rows, 1), column(rows, 3)])
    in_batches.update_rows(rows[:100])
    in_batches.update_rows(rows[100:])
    assert by_rows.count == by_arrays.count == in_batches.count == 300
    assert by_rows.to_bytes() == by_arrays.to_bytes()  # the same batch gives the same state
    for spec_ in (SAMPLE, POPULATION):
        check_record_against_numpy(by_rows.finalize(spec_), rows, spec_)
        check_record_against_numpy(in_batches.finalize(spec_), rows, spec_)


def test_record_shape_follows_the_stats_spec():
    rows = mixed_rows(np.random.default_rng(5), 50)
    window = new_window()
    window.update_rows(rows)
    full = window.finalize(StatsSpec(percentiles=(2.5, 50.0, 99.9)))
    x = full["features"]["x"]
    assert list(x) == ["count", "min", "max", "mean", "stddev", "variance", "sum", "percentiles", "iqr", "histogram"]
    assert list(x["percentiles"]) == ["2.5", "50", "99.9"]
    xs = np.array(column(rows, 0))
    assert x["iqr"] == np.percentile(xs, 75) - np.percentile(xs, 25)  # IQR is always p75 - p25
    assert list(full["features"]["colour"]) == ["count", "categories", "unseenShare", "missing"]
    lean = window.finalize(StatsSpec(iqr=False, covariance=False, correlation=False))
    assert "iqr" not in lean["features"]["x"]
    assert lean["covariance"] is None and lean["correlation"] is None
    only_corr = window.finalize(StatsSpec(covariance=False))
    assert only_corr["covariance"] is None and only_corr["correlation"] is not None
    single = WindowAggregate([Feature("v", NUMERICAL, 0), Feature("c", CATEGORICAL, 1)])
    single.update_rows([[1.0, "p"], [2.0, None]])
    out = single.finalize(SAMPLE)
    assert out["covariance"] is None and out["correlation"] is None  # fewer than 2 numerical features
    categorical_only = WindowAggregate([Feature("c", CATEGORICAL, 0)])
    categorical_only.update_arrays(None, [["p", "q", "p"]])
    assert categorical_only.finalize()["features"]["c"]["categories"] == {"p": 2, "q": 1}


# ----------------------------------------------------------------------------------------------
# merging in any order equals one pass; bytes round-trip (property tests)

EDGE_VALUES = sorted({*EDGES["x"].tolist(), *EDGES["z"].tolist()})
numbers = st.one_of(
    st.integers(-4000, 4000).map(lambda i: i / 16),
    st.floats(-1e4, 1e4, allow_nan=False, allow_subnormal=False).filter(lambda v: v == 0 or abs(v) >= 1e-6),
    st.sampled_from(EDGE_VALUES),  # values exactly on bin edges
)
rows_strategy = st.lists(
    st.tuples(numbers, st.sampled_from(["a", "b", "c", "zz", None]), numbers,
              st.sampled_from(["round", "flat", None]), numbers).map(list),
    max_size=40)


def assert_same_record(got, want, rows):
    """``got`` (merged) equals ``want`` (one pass): exact except float sums of moments."""
    assert got["count"] == want["count"]
    matrix = np.array([[r[0], r[2], r[4]] for r in rows]).reshape(len(rows), 3)
    scales = np.abs(matrix).max(axis=0) if len(rows) else np.ones(3)
    n = max(len(rows), 1)
    for j, name in enumerate(NUMERICAL_NAMES):
        g, w, s = got["features"][name], want["features"][name], scales[j]
        for key in ("count", "min", "max", "percentiles", "iqr", "histogram"):
            assert g[key] == w[key], key
        for key, scale in (("mean", s), ("sum", n * s), ("variance", n * s * s)):
            assert (g[key] is None) == (w[key] is None), key
            if w[key] is not None:
                assert close(g[key], w[key], scale), key
        if w["stddev"] is not None:
            assert close(g["stddev"] ** 2, w["stddev"] ** 2, n * s * s)
        else:
            assert g["stddev"] is None
    for name in ("colour", "shape"):
        assert got["features"][name] == want["features"][name]
    for i in range(3):
        for j in range(3):
            g, w = got["covariance"]["matrix"][i][j], want["covariance"]["matrix"][i][j]
            assert (g is None) == (w is None)
            if w is not None:
                assert close(g, w, n * scales[i] * scales[j])
            g, w = got["correlation"]["matrix"][i][j], want["correlation"]["matrix"][i][j]
            assert (g is None) == (w is None)  # None exactly when a feature is constant


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rows=rows_strategy)
def test_merging_partials_in_any_tree_order_equals_one_pass(data, rows):
    one_pass = new_window()
    one_pass.update_rows(rows)
    k = data.draw(st.integers(1, 6), label="groups")
    groups = data.draw(st.lists(st.integers(0, k - 1), min_size=len(rows), max_size=len(rows)), label="assignment")
    rnd = data.draw(st.randoms(use_true_random=False))
    partials = []
    for g in range(k):
        part = new_window()
        part.update_rows([row for row, group in zip(rows, groups) if group == g])
        partials.append(round_trip(part) if rnd.random() < 0.3 else part)
    while len(partials) > 1:  # a random binary merge tree, each merge in a random direction
        i, j = rnd.sample(range(len(partials)), 2)
        merged = partials[i].merge(partials[j])
        partials = [p for index, p in enumerate(partials) if index not in (i, j)]
        partials.append(round_trip(merged) if rnd.random() < 0.3 else merged)
    merged = partials[0]
    assert merged.count == len(rows)
    for stats_spec in (SAMPLE, POPULATION):
        want = one_pass.finalize(stats_spec)
        check_record_against_numpy(want, rows, stats_spec)
        assert_same_record(merged.finalize(stats_spec), want, rows)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy)
def test_window_bytes_round_trip(rows):
    window = new_window()
    window.update_rows(rows)
    blob = window.to_bytes()
    again = WindowAggregate.from_bytes(LAYOUT, EDGES, KNOWN, blob)
    assert again.to_bytes() == blob
    for stats_spec in (SAMPLE, POPULATION):
        assert json.dumps(again.finalize(stats_spec)) == json.dumps(window.finalize(stats_spec))


@settings(max_examples=80, deadline=None)
@given(values=st.lists(numbers, max_size=30),
       categories=st.lists(st.sampled_from(["a", "é", "", "☃", None]), max_size=30))
def test_each_statistic_bytes_round_trip(values, categories):
    edges = EDGES["x"]
    x = np.array(values, dtype=float)
    pairs = np.column_stack([x, x[::-1] * 2.0]) if len(x) else np.empty((0, 2))
    built = [Count().update(x), Sum().update(x), Min().update(x), Max().update(x), Moments().update(x),
             Quantiles().update(x), Histogram(edges).update(x), CoMoments(2).update(pairs),
             CategoryCounts({"a"}).update(categories)]
    readers = [Count.from_bytes, Sum.from_bytes, Min.from_bytes, Max.from_bytes, Moments.from_bytes,
               Quantiles.from_bytes, lambda b: Histogram.from_bytes(edges, b), CoMoments.from_bytes,
               lambda b: CategoryCounts.from_bytes({"a"}, b)]
    for stat, read in zip(built, readers):
        blob = stat.to_bytes()
        again = read(blob)
        assert type(again) is type(stat) and again.to_bytes() == blob
    moments, again = built[4], Moments.from_bytes(built[4].to_bytes())
    assert (again.count, again.mean, again.m2) == (moments.count, moments.mean, moments.m2)
    cats = CategoryCounts.from_bytes({"a"}, built[8].to_bytes())
    assert (cats.get(), cats.missing, cats.unseen_share) == (built[8].get(), built[8].missing, built[8].unseen_share)
    assert Histogram.from_bytes(edges, built[6].to_bytes()).get().tolist() == built[6].get().tolist()


# ----------------------------------------------------------------------------------------------
# edge cases


def test_empty_window_is_all_null_never_nan():
    record = new_window().finalize(SAMPLE)
    text = json.dumps(record, allow_nan=False)
    assert "NaN" not in text
    x = record["features"]["x"]
    assert x["count"] == 0 and x["sum"] == 0.0
    assert x["min"] is x["max"] is x["mean"] is x["stddev"] is x["variance"] is x["iqr"] is None
    assert x["percentiles"] == {"25": None, "50": None, "75": None}
    assert x["histogram"]["counts"] == [0] * (len(EDGES["x"]) + 1)
    assert record["features"]["colour"] == {"count": 0, "categories": {}, "unseenShare": None, "missing": 0}
    assert record["covariance"]["matrix"] == [[None] * 3] * 3
    assert record["correlation"]["matrix"] == [[None] * 3] * 3
    assert new_window().merge(new_window()).finalize(POPULATION)["covariance"]["matrix"] == [[None] * 3] * 3


def test_one_value():
    window = new_window()
    window.update_rows([[4.25, "a", -1.0, None, 0.5]])
    sample, population = window.finalize(SAMPLE), window.finalize(POPULATION)
    x = sample["features"]["x"]
    assert (x["min"], x["max"], x["mean"], x["sum"]) == (4.25, 4.25, 4.25, 4.25)
    assert x["stddev"] is None and x["variance"] is None  # sample stddev of one value is undefined
    assert set(x["percentiles"].values()) == {4.25} and x["iqr"] == 0.0
    px = population["features"]["x"]
    assert px["stddev"] == 0.0 and px["variance"] == 0.0
    assert sample["covariance"]["matrix"] == [[None] * 3] * 3
    assert population["covariance"]["matrix"] == [[0.0] * 3] * 3
    assert sample["correlation"]["matrix"] == [[None] * 3] * 3


def test_values_on_edges_and_out_of_range():
    edges = [2.0, 10.0, 100.0]
    window = WindowAggregate([Feature("v", NUMERICAL, 0)], {"v": edges})
    values = [1.999, 2.0, 9.999, 10.0, 99.999, 100.0, 100.001, -5.0, 1e9]
    window.update_arrays(np.array(values).reshape(-1, 1))
    counts = window.finalize()["features"]["v"]["histogram"]["counts"]
    inner = np.histogram(values, edges)[0].tolist()
    assert counts == [2, *inner, 2]  # 1.999 and -5 below; 100.001 and 1e9 above
    assert inner == [2, 3]  # [2, 10) holds 2 and 9.999; the closed [10, 100] holds 10, 99.999 and 100
    assert sum(counts) == len(values)


def test_all_equal_values_have_zero_variance_and_no_correlation():
    # 0.1 is not exactly representable, so its mean accumulates rounding; variance must still be 0.
    window = new_window()
    rng = np.random.default_rng(2)
    rows = [[0.1, "a", float(v), "flat", float(w)] for v, w in rng.normal(size=(3000, 2))]
    for start in range(0, 3000, 700):
        part = new_window()
        part.update_rows(rows[start:start + 700])
        window.merge(part)
    record = window.finalize(POPULATION)
    x = record["features"]["x"]
    assert x["variance"] == 0.0 and x["stddev"] == 0.0 and x["mean"] == 0.1
    corr = record["correlation"]["matrix"]
    assert corr[0] == [None, None, None] and [row[0] for row in corr] == [None, None, None]
    assert corr[1][1] == 1.0 and corr[1][2] is not None
    assert record["covariance"]["matrix"][0] == [0.0, 0.0, 0.0]
    assert CoMoments(2).update([[0.1, 1.0]] * 10).correlation() == [[None, None], [None, None]]


def test_missing_categorical_values():
    window = new_window()
    window.update_rows([[1.0, None, 2.0, None, 3.0], [1.5, None, 2.5, "flat", 3.5]])
    colour = window.finalize()["features"]["colour"]
    assert colour == {"count": 0, "categories": {}, "unseenShare": None, "missing": 2}
    assert window.finalize()["features"]["shape"] == {"count": 1, "categories": {"flat": 1},
                                                      "unseenShare": None, "missing": 1}


# ----------------------------------------------------------------------------------------------
# the thesis' bugs are not ours


def test_thesis_bugs_are_fixed():
    layout = [Feature("a", NUMERICAL, 0), Feature("b", NUMERICAL, 1)]
    edges = {"a": [2.0, 10.0, 100.0]}
    a = np.array([1.0, 3.0, 4.0, 5.0, 50.0, 150.0, 7.0, 2.5])
    b = np.array([0.5, 1.0, 4.0, 2.0, 30.0, 90.0, 3.0, 1.5])
    window = WindowAggregate(layout, edges)
    window.update_arrays(np.column_stack([a[:5], b[:5]]))
    other = WindowAggregate(layout, edges)
    other.update_arrays(np.column_stack([a[5:], b[5:]]))
    record = window.merge(other).finalize(StatsSpec())
    got = record["features"]["a"]
    # mean is the arithmetic mean, not (max - min) / count
    assert got["mean"] == pytest.approx(np.mean(a), rel=REL)
    assert got["mean"] != pytest.approx((a.max() - a.min()) / a.size)
    # covariance equals numpy.cov, not twice it
    want_cov = np.cov(a, b)
    assert record["covariance"]["matrix"][0][1] == pytest.approx(want_cov[0, 1], rel=REL)
    assert record["covariance"]["matrix"][0][1] != pytest.approx(2 * want_cov[0, 1], rel=1e-3)
    # percentiles are real percentiles, not the lower edge of the bin they fall in
    for key, q in (("25", 25), ("50", 50), ("75", 75)):
        assert got["percentiles"][key] == np.percentile(a, q)
        assert got["percentiles"][key] not in edges["a"]
    # values outside the baseline bins are counted in underflow / overflow, not dropped
    counts = got["histogram"]["counts"]
    assert counts[0] == np.sum(a < 2.0) == 1 and counts[-1] == np.sum(a > 100.0) == 1
    assert sum(counts) == a.size
    # bins are in numeric order (2, 10, 100), not string order ("10" < "100" < "2")
    assert got["histogram"]["edges"] == [2.0, 10.0, 100.0]
    assert counts[1:-1] == np.histogram(a, edges["a"])[0].tolist() == [5, 1]


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("make, message", [
    (lambda: Moments().update([1.0, float("nan")]), "not a finite number"),
    (lambda: Sum().update([1.0, float("inf")]), "not a finite number"),
    (lambda: Min().update(["1.5", "2"]), "expected numbers"),
    (lambda: Max().update([True, False]), "booleans"),
    (lambda: Quantiles().update([[1.0, 2.0]]), "1-D"),
    (lambda: Quantiles().update([1.0]).percentile(101), r"\[0, 100\]"),
    (lambda: Moments().update([1.0]).variance(ddof=-1), "ddof"),
    (lambda: Histogram([1.0]), "at least 2"),
    (lambda: Histogram([0.0, 2.0, 1.0]), "strictly increasing"),
    (lambda: Histogram([0.0, float("nan")]), "finite"),
    (lambda: Histogram([0.0, 1.0]).merge(Histogram([0.0, 2.0])), "different edges"),
    (lambda: CoMoments(2).update([[1.0, 2.0, 3.0]]), r"shape \(n, 2\)"),
    (lambda: CoMoments(0), "positive integer"),
    (lambda: CategoryCounts().update(["a", 3]), "strings or None"),
    (lambda: CategoryCounts().update("abc"), "single string"),
    (lambda: CategoryCounts({"a"}).merge(CategoryCounts({"b"})), "known categories"),
    (lambda: Min().merge(Max()), "cannot merge Max into Min"),
    (lambda: Count.from_bytes(Sum().to_bytes()), "not a Count"),
    (lambda: Quantiles.from_bytes(Quantiles().update([1.0, 2.0]).to_bytes()[:-3]), "truncated"),
    (lambda: Moments.from_bytes(Moments().to_bytes() + b"x"), "trailing"),
    (lambda: Histogram.from_bytes([0.0, 1.0, 2.0], Histogram([0.0, 1.0]).to_bytes()), "bins"),
])
def test_statistics_reject_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("call, message", [
    (lambda w: w.update_rows([[1.0, "a", "oops", None, 2.0]]), r"feature 'y' \(numerical\).*'oops'"),
    (lambda w: w.update_rows([[1.0, "a", None, None, 2.0]]), "feature 'y'"),
    (lambda w: w.update_rows([[1.0, "a", 2.0, None, True]]), "feature 'z'"),
    (lambda w: w.update_rows([[1.0, "a", 2.0, None, float("nan")]]), "feature 'z'.*finite"),
    (lambda w: w.update_rows([[1.0, 5, 2.0, None, 3.0]]), "feature 'colour'.*string or None"),
    (lambda w: w.update_rows([[1.0, "a", 2.0, None]]), r"rows\[0\].*4 values, expected 5"),
    (lambda w: w.update_rows("rows"), "list of rows"),
    (lambda w: w.update_arrays(np.ones((2, 2)), [["a", "b"], ["c", "d"]]), r"shape \(n, 3\)"),
    (lambda w: w.update_arrays(np.array([[1.0, np.inf, 2.0]]), [["a"], ["b"]]), "feature 'y'"),
    (lambda w: w.update_arrays(np.ones((2, 3)), [["a", "b"]]), "2 columns"),
    (lambda w: w.update_arrays(np.ones((2, 3)), [["a", "b"], ["c"]]), "feature 'shape'.*1 values, expected 2"),
    (lambda w: w.update_arrays(None, [["a"], ["b"]]), "got None"),
    (lambda w: w.merge(WindowAggregate(LAYOUT, {"x": EDGES["x"]}, KNOWN)), "different feature layouts"),
    (lambda w: w.merge(Moments()), "cannot merge Moments"),
    (lambda w: WindowAggregate.from_bytes(LAYOUT, EDGES, {"colour": {"a"}}, w.to_bytes()), "another feature layout"),
    (lambda w: WindowAggregate.from_bytes(LAYOUT, EDGES, KNOWN, w.to_bytes()[:-1]), "truncated"),
    (lambda w: WindowAggregate.from_bytes(LAYOUT, EDGES, KNOWN, b"nonsense" * 4), "bad magic"),
    (lambda w: w.finalize(StatsSpec(stddev_type="robust")), "robust"),
])
def test_window_rejects_bad_input_naming_the_problem(call, message):
    window = new_window()
    window.update_rows(mixed_rows(np.random.default_rng(0), 4))
    before = window.to_bytes()
    with pytest.raises(ValueError, match=message):
        call(window)
    assert window.to_bytes() == before  # a rejected batch leaves the window untouched


@pytest.mark.parametrize("features, edges, known, message", [
    ([], None, None, "at least one feature"),
    ([Feature("a", NUMERICAL, 0), Feature("a", NUMERICAL, 1)], None, None, "duplicate"),
    ([Feature("a", "text", 0)], None, None, "'text'"),
    ([Feature("a", NUMERICAL, 0)], {"b": [0, 1]}, None, "'b' is not a feature"),
    ([Feature("a", CATEGORICAL, 0)], {"a": [0, 1]}, None, "categorical"),
    ([Feature("a", NUMERICAL, 0)], {"a": [1, 0]}, None, "edges\\['a'\\].*strictly increasing"),
    ([Feature("a", NUMERICAL, 0)], None, {"a": ["x"]}, "numerical"),
    ([Feature("a", CATEGORICAL, 0)], None, {"a": "xyz"}, "collection"),
])
def test_window_rejects_bad_layouts(features, edges, known, message):
    with pytest.raises(ValueError, match=message):
        WindowAggregate(features, edges, known)


# ----------------------------------------------------------------------------------------------
# documentation and benchmark


@pytest.mark.parametrize("module", ["aggregate", "count", "total", "extremes", "moments", "quantiles",
                                    "histogram", "comoments", "categories", "window", "window_record"])
def test_docstring_examples_run(module):
    import importlib
    result = doctest.testmod(importlib.import_module(f"modelmonitor.stats.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 1 and result.failed == 0


def test_aggregate_throughput_reports_a_rate():
    # A smoke test only: the speed itself is measured by `modelmonitor bench`, not asserted here.
    rate = stats.aggregate_throughput(n_instances=30_000, n_features=3, repeats=1, batch_size=7_000)
    assert rate > 0 and math.isfinite(rate)
    with pytest.raises(ValueError, match="n_instances"):
        stats.aggregate_throughput(n_instances=0)


def test_categories_past_the_exact_bound_keep_exact_totals():
    rng = np.random.default_rng(3)
    values = [f"c{int(v)}" for v in rng.zipf(1.3, 20_000) if v < 100_000] + [None] * 7
    known = {f"c{i}" for i in range(1, 50)}
    merged = CategoryCounts(known)
    for chunk in np.array_split(np.array(values, dtype=object), 17):
        merged.merge(CategoryCounts(known).update(list(chunk)))
    oracle = collections.Counter(values)
    missing = oracle.pop(None)
    assert not merged.exact and len(oracle) > 512
    assert merged.count == sum(oracle.values()) and merged.missing == missing
    assert merged.unseen_share == sum(c for v, c in oracle.items() if v not in known) / merged.count
    reported = merged.get()
    assert sum(reported.values()) + merged.other == merged.count
    epsilon = 3.5 / 1024 * merged.count  # the frequent-items sketch's a-priori error, lg_max_k = 10
    for category, estimate in reported.items():
        assert abs(estimate - oracle[category]) <= epsilon
    for category, c in oracle.items():  # every heavy hitter is reported
        if c > 2 * epsilon:
            assert category in reported
    again = CategoryCounts.from_bytes(known, merged.to_bytes())
    assert (again.get(), again.count, again.missing, again.unseen_share) == (
        reported, merged.count, merged.missing, merged.unseen_share)
