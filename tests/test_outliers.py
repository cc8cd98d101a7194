"""Per-instance outlier rules (DESIGN section 3 "Outliers") against a brute-force oracle.

The oracle loops over every instance, feature and rule in plain Python, and computes the
Mahalanobis distance with SciPy (``mahalanobis(...)**2`` with ``VI = inv(cov)``).
"""
from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import mahalanobis

from modelmonitor.detect import outliers
from modelmonitor.detect.outliers import OutlierDetector, detect_outliers
from modelmonitor.core.spec import Feature, OutlierSpec

FEATURES = [Feature("a", "numerical", 0), Feature("colour", "categorical", 1), Feature("b", "numerical", 2),
            Feature("c", "numerical", 3), Feature("size", "categorical", 4)]
NUMERICAL = [f.name for f in FEATURES if f.type == "numerical"]
CATEGORICAL = [f.name for f in FEATURES if f.type == "categorical"]
ALL_RULES = OutlierSpec(stddev_k=2.5, range=True, iqr_k=1.5, mahalanobis_threshold=9.0, unseen_category=True)


def make_baseline(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.6, 0.2], [0.6, 2.0, -0.4], [0.2, -0.4, 0.5]])
    train = rng.multivariate_normal([1.0, -2.0, 10.0], cov, size=500)
    feats = {}
    for j, name in enumerate(NUMERICAL):
        x = train[:, j]
        feats[name] = {"type": "numerical", "count": x.size, "mean": float(x.mean()), "stddev": float(x.std(ddof=1)),
                       "min": float(x.min()), "max": float(x.max()),
                       "percentiles": {str(p): float(np.percentile(x, p)) for p in (25, 50, 75)}}
    feats["colour"] = {"type": "categorical", "count": 500, "frequencies": {"red": 300, "blue": 200}}
    feats["size"] = {"type": "categorical", "count": 500, "frequencies": {"S": 100, "M": 250, "L": 150}}
    return {"features": feats, "covariance": {"features": NUMERICAL, "matrix": np.cov(train.T, ddof=1).tolist()}}


def make_batch(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    numeric = rng.normal([1.0, -2.0, 10.0], [1.5, 2.0, 1.0], size=(n, 3))
    numeric[rng.random((n, 3)) < 0.03] = np.nan  # missing values
    numeric[::17, 0] += 8.0                      # far outliers
    colour = list(rng.choice(["red", "blue", "green", None], n, p=[0.5, 0.4, 0.05, 0.05]))
    size = list(rng.choice(["S", "M", "L", "XL"], n, p=[0.3, 0.3, 0.3, 0.1]))
    return numeric, [[None if v is None else str(v) for v in colour], [str(v) for v in size]]


def brute_force(numeric, categorical, features, baseline, rules) -> list[dict]:
    base = baseline["features"]
    cov = baseline.get("covariance")
    numerical = [f.name for f in features if f.type == "numerical"]
    cat_names = [f.name for f in features if f.type == "categorical"]
    n = len(numeric) if numerical else len(categorical[0])
    found = []
    for i in range(n):
        for f in features:
            if f.name not in base:
                continue
            b = base[f.name]
            if f.type == "categorical":
                v = categorical[cat_names.index(f.name)][i]
                if rules.unseen_category and v is not None and v not in b["frequencies"]:
                    found.append({"instance": i, "feature": f.name, "value": v, "rule": "unseen",
                                  "score": 1.0, "threshold": 0.0})
                continue
            x = float(numeric[i][numerical.index(f.name)])
            if math.isnan(x):
                continue
            if rules.stddev_k is not None and b["stddev"] > 0:
                z = abs(x - b["mean"]) / b["stddev"]
                if abs(x - b["mean"]) > rules.stddev_k * b["stddev"]:
                    found.append({"instance": i, "feature": f.name, "value": x, "rule": "zscore",
                                  "score": z, "threshold": rules.stddev_k})
            if rules.range and (x < b["min"] or x > b["max"]):
                found.append({"instance": i, "feature": f.name, "value": x, "rule": "range", "score": x,
                              "threshold": b["min"] if x < b["min"] else b["max"]})
            if rules.iqr_k is not None:
                q1, q3 = b["percentiles"]["25"], b["percentiles"]["75"]
                low, high = q1 - rules.iqr_k * (q3 - q1), q3 + rules.iqr_k * (q3 - q1)
                if x < low or x > high:
                    found.append({"instance": i, "feature": f.name, "value": x, "rule": "iqr", "score": x,
                                  "threshold": low if x < low else high})
        if rules.mahalanobis_threshold is not None and cov is not None:
            names = [name for name in cov["features"] if name in numerical and name in base]
            keep = [cov["features"].index(name) for name in names]
            sigma = np.asarray(cov["matrix"])[np.ix_(keep, keep)]
            x = np.array([numeric[i][numerical.index(name)] for name in names], dtype=float)
            if names and not np.isnan(x).any():
                mu = np.array([base[name]["mean"] for name in names])
                d2 = mahalanobis(x, mu, np.linalg.inv(sigma)) ** 2
                if d2 > rules.mahalanobis_threshold:
                    found.append({"instance": i, "feature": "*", "value": None, "rule": "mahalanobis",
                                  "score": d2, "threshold": rules.mahalanobis_threshold})
    return found


def assert_same(got: list[dict], expected: list[dict]) -> None:
    assert [(o["instance"], o["feature"], o["rule"]) for o in got] == \
           [(o["instance"], o["feature"], o["rule"]) for o in expected]
    for g, e in zip(got, expected):
        assert set(g) == {"instance", "feature", "value", "rule", "score", "threshold"}
        assert g["value"] == e["value"] or g["value"] == pytest.approx(e["value"], rel=1e-12)
        assert g["score"] == pytest.approx(e["score"], rel=1e-9)
        assert g["threshold"] == pytest.approx(e["threshold"], rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_all_rules_match_the_brute_force_oracle(seed):
    baseline = make_baseline(seed)
    numeric, categorical = make_batch(seed + 100)
    got = detect_outliers(numeric, categorical, FEATURES, baseline, ALL_RULES)
    expected = brute_force(numeric, categorical, FEATURES, baseline, ALL_RULES)
    assert {o["rule"] for o in expected} == {"zscore", "range", "iqr", "mahalanobis", "unseen"}  # all exercised
    assert_same(got, expected)


@pytest.mark.parametrize("rules", [
    OutlierSpec(stddev_k=3.0, range=False, iqr_k=None, mahalanobis_threshold=None, unseen_category=False),
    OutlierSpec(stddev_k=None, range=True, iqr_k=None, mahalanobis_threshold=None, unseen_category=False),
    OutlierSpec(stddev_k=None, range=False, iqr_k=0.0, mahalanobis_threshold=None, unseen_category=False),
    OutlierSpec(stddev_k=None, range=False, iqr_k=None, mahalanobis_threshold=4.0, unseen_category=False),
    OutlierSpec(stddev_k=None, range=False, iqr_k=None, mahalanobis_threshold=None, unseen_category=True),
    OutlierSpec(stddev_k=None, range=False, iqr_k=None, mahalanobis_threshold=None, unseen_category=False),
])
def test_each_rule_alone_matches_the_oracle(rules):
    baseline = make_baseline(4)
    numeric, categorical = make_batch(5)
    got = OutlierDetector(FEATURES, baseline, rules).detect(numeric, categorical)
    assert_same(got, brute_force(numeric, categorical, FEATURES, baseline, rules))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(0, 12), st.just(3)),
                  elements=st.one_of(st.floats(-30, 30), st.just(float("nan")))),
       st.data())
def test_random_batches_match_the_oracle(numeric, data):
    n = numeric.shape[0]
    values = st.one_of(st.none(), st.sampled_from(["red", "blue", "S", "M", "L", "XL", "green"]))
    categorical = [data.draw(st.lists(values, min_size=n, max_size=n)) for _ in CATEGORICAL]
    baseline = make_baseline(6)
    got = detect_outliers(numeric, categorical, FEATURES, baseline, ALL_RULES)
    assert_same(got, brute_force(numeric, categorical, FEATURES, baseline, ALL_RULES))


def test_mahalanobis_uses_the_pseudo_inverse_for_singular_covariances():
    # b duplicates a, so the covariance is singular; on that line d2 equals the 1-D distance.
    rng = np.random.default_rng(8)
    a = rng.normal(3.0, 2.0, 300)
    var = float(np.var(a, ddof=1))
    baseline = {"features": {name: {"type": "numerical", "mean": float(a.mean())} for name in ("a", "b")},
                "covariance": {"features": ["a", "b"], "matrix": [[var, var], [var, var]]}}
    feats = [Feature("a", "numerical", 0), Feature("b", "numerical", 1)]
    live = np.array([3.0, 9.0, -5.0, 4.5])
    rules = OutlierSpec(stddev_k=None, range=False, mahalanobis_threshold=0.0, unseen_category=False)
    got = detect_outliers(np.column_stack([live, live]), [], feats, baseline, rules)
    expected = [mahalanobis([x], [a.mean()], [[1.0 / var]]) ** 2 for x in live]
    flagged = [i for i, d2 in enumerate(expected) if d2 > 0.0]
    assert [o["instance"] for o in got] == flagged
    for o in got:
        assert o["score"] == pytest.approx(expected[o["instance"]], rel=1e-9)


def test_mahalanobis_uses_the_covariance_of_the_monitored_subset():
    baseline = make_baseline(9)
    feats = [f for f in FEATURES if f.name != "b"]  # the monitor no longer has feature b
    numeric, categorical = make_batch(10)
    numeric = numeric[:, [0, 2]]
    rules = OutlierSpec(stddev_k=None, range=False, mahalanobis_threshold=3.0, unseen_category=False)
    got = detect_outliers(numeric, categorical, feats, baseline, rules)
    sigma = np.asarray(baseline["covariance"]["matrix"])[np.ix_([0, 2], [0, 2])]
    mu = [baseline["features"]["a"]["mean"], baseline["features"]["c"]["mean"]]
    expected = {i: mahalanobis(row, mu, np.linalg.inv(sigma)) ** 2 for i, row in enumerate(numeric)
                if not np.isnan(row).any()}
    assert [o["instance"] for o in got] == [i for i, d2 in expected.items() if d2 > 3.0]
    assert all(o["score"] == pytest.approx(expected[o["instance"]], rel=1e-9) for o in got)


def test_no_covariance_means_no_mahalanobis_and_missing_features_are_skipped():
    baseline = make_baseline(11)
    del baseline["covariance"]
    del baseline["features"]["b"]
    del baseline["features"]["size"]
    numeric, categorical = make_batch(12)
    got = detect_outliers(numeric, categorical, FEATURES, baseline, ALL_RULES)
    assert {o["feature"] for o in got} <= {"a", "c", "colour"}
    assert_same(got, brute_force(numeric, categorical, FEATURES, baseline, ALL_RULES))


def test_zscore_is_not_applied_to_a_constant_baseline_feature_but_range_is():
    baseline = {"features": {"k": {"type": "numerical", "mean": 2.0, "stddev": 0.0, "min": 2.0, "max": 2.0}}}
    got = detect_outliers([[2.0], [2.5]], [], [Feature("k", "numerical", 0)], baseline,
                          OutlierSpec(stddev_k=3.0, range=True))
    assert [(o["instance"], o["rule"], o["threshold"]) for o in got] == [(1, "range", 2.0)]


def test_range_below_minimum_reports_the_minimum():
    baseline = {"features": {"x": {"mean": 0.0, "stddev": 1.0, "min": -1.0, "max": 1.0}}}
    got = detect_outliers([[-4.0]], [], [Feature("x", "numerical", 0)], baseline, OutlierSpec(stddev_k=None))
    assert got == [{"instance": 0, "feature": "x", "value": -4.0, "rule": "range", "score": -4.0,
                    "threshold": -1.0}]


def test_results_are_plain_json_types():
    baseline = make_baseline(13)
    numeric, categorical = make_batch(14, n=50)
    got = detect_outliers(numeric, categorical, FEATURES, baseline, ALL_RULES)
    assert got and json.loads(json.dumps(got)) == got
    assert all(type(o["instance"]) is int and type(o["score"]) is float for o in got)


def test_detect_rows_splits_rows_by_feature_index():
    baseline = make_baseline(15)
    numeric, categorical = make_batch(16, n=60)
    rows = []
    for i in range(60):
        row = [None] * 5
        for j, name in enumerate(NUMERICAL):
            v = numeric[i, j]
            row[[f.index for f in FEATURES if f.name == name][0]] = None if math.isnan(v) else float(v)
        for j, name in enumerate(CATEGORICAL):
            row[[f.index for f in FEATURES if f.name == name][0]] = categorical[j][i]
        rows.append(row)
    detector = OutlierDetector(FEATURES, baseline, ALL_RULES)
    assert_same(detector.detect_rows(rows, FEATURES), brute_force(numeric, categorical, FEATURES, baseline, ALL_RULES))


def test_empty_batches_give_no_outliers():
    detector = OutlierDetector(FEATURES, make_baseline(0), ALL_RULES)
    assert detector.detect(np.empty((0, 3)), [[], []]) == []
    only_categorical = [f for f in FEATURES if f.type == "categorical"]
    cat_detector = OutlierDetector(only_categorical, make_baseline(0), ALL_RULES)
    assert [o["instance"] for o in cat_detector.detect([], [["green", "red"], ["S", "XXL"]])] == [0, 1]


@pytest.mark.parametrize("numeric, categorical, message", [
    (np.zeros((4, 2)), [["red"] * 4, ["S"] * 4], r"shape \(instances, 3\)"),
    (np.zeros((4, 3)), [["red"] * 4], "expected 2 columns"),
    (np.zeros((4, 3)), [["red"] * 4, ["S"] * 3], "'size': expected 4 values"),
    (np.zeros((4, 3)), [["red"] * 4, "SSSS"], "'size': expected 4 values"),
    ([["x", 1, 2]], [["red"], ["S"]], "array of numbers"),
])
def test_detect_rejects_malformed_batches(numeric, categorical, message):
    detector = OutlierDetector(FEATURES, make_baseline(0), ALL_RULES)
    with pytest.raises(ValueError, match=message):
        detector.detect(numeric, categorical)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b["features"]["a"].pop("mean"), "'mean' must be a finite number"),
    (lambda b: b["features"]["a"].update(stddev=-1.0), "stddev must not be negative"),
    (lambda b: b["features"]["a"].pop("percentiles"), "percentiles"),
    (lambda b: b["features"]["a"].update(max="big"), "'max' must be a finite number"),
    (lambda b: b["features"]["a"].update(type="categorical"), "categorical in the baseline"),
    (lambda b: b["features"]["colour"].pop("frequencies"), "frequencies"),
    (lambda b: b["covariance"].update(matrix=[[1.0, 0.0], [0.0, 1.0]]), "matrix shape"),
    (lambda b: b.pop("features"), "'features' mapping is missing"),
])
def test_detector_rejects_unusable_baselines(mutate, message):
    baseline = make_baseline(0)
    mutate(baseline)
    with pytest.raises(ValueError, match=message):
        OutlierDetector(FEATURES, baseline, ALL_RULES)


def test_docstring_examples_run():
    result = doctest.testmod(outliers)
    assert result.attempted > 5 and result.failed == 0
