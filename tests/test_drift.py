"""Drift metrics, per-window drift records and the alert policy (DESIGN section 3 "Drift").

Oracles: SciPy (jensenshannon squared with base 2, entropy, wasserstein_distance, chisquare),
plain Python loops, and NumPy histograms built here from raw samples.
"""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare, entropy, wasserstein_distance

from modelmonitor.detect import drift
from modelmonitor.detect.drift import (
    EPS, chi_square, evaluate_alert, hellinger, jensen_shannon, kolmogorov_smirnov, kullback_leibler,
    measure_drift, psi, smooth, wasserstein, wasserstein_norm,
)
from modelmonitor.core.spec import DETECTORS, MULTIVARIATE_DETECTORS, AlertSpec, DetectorSpec, Feature
from modelmonitor.detect.window_rules import WINDOW_RULES

# --------------------------------------------------------------------------------------------
# Oracles written from the DESIGN text, independent of modelmonitor.detect.drift
# --------------------------------------------------------------------------------------------


def oracle_smooth(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=float)
    return (c + 1e-6) / (c.sum() + c.size * 1e-6)


def oracle_centres(edges) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    w = e[1] - e[0]
    return np.concatenate(([e[0] - w / 2], (e[:-1] + e[1:]) / 2, [e[-1] + w / 2]))


def brute_histogram(values, edges) -> list[int]:
    """[underflow, inner bins, overflow]; inner bins [e_i, e_i+1), the last one closed."""
    k = len(edges) - 1
    counts = [0] * (k + 2)
    for v in values:
        if v < edges[0]:
            counts[0] += 1
        elif v > edges[-1]:
            counts[-1] += 1
        else:
            for i in range(k):
                if edges[i] <= v < edges[i + 1] or (i == k - 1 and v == edges[-1]):
                    counts[i + 1] += 1
                    break
    return counts


def numerical_baseline(values, bins=20) -> dict:
    x = np.asarray(values, dtype=float)
    edges = np.histogram_bin_edges(x, bins, range=(x.min(), x.max()))
    counts, _ = np.histogram(x, edges)
    return {"type": "numerical", "count": int(x.size), "mean": float(x.mean()), "stddev": float(x.std(ddof=1)),
            "min": float(x.min()), "max": float(x.max()),
            "percentiles": {str(p): float(np.percentile(x, p)) for p in (25, 50, 75)},
            "edges": edges.tolist(), "counts": counts.tolist(), "probabilities": (counts / x.size).tolist()}


def numerical_window(values, edges) -> dict:
    x = np.asarray(values, dtype=float)
    return {"count": int(x.size), "mean": float(x.mean()) if x.size else None,
            "histogram": {"edges": list(edges), "counts": brute_histogram(values, edges)}}


def categorical_baseline(values) -> dict:
    freq: dict[str, int] = {}
    for v in values:
        freq[v] = freq.get(v, 0) + 1
    return {"type": "categorical", "count": len(values), "frequencies": freq}


def categorical_window(values) -> dict:
    present = [v for v in values if v is not None]
    return {"count": len(values), "categories": categorical_baseline(present)["frequencies"],
            "missing": len(values) - len(present)}


# Distribution metrics; the window rules and the multivariate scores have their own tests.
ALL_DETECTORS = [DetectorSpec(name, 0.0, True) for name in DETECTORS
                 if name not in WINDOW_RULES + MULTIVARIATE_DETECTORS]

# --------------------------------------------------------------------------------------------
# Metric functions against SciPy and loops (random histograms)
# --------------------------------------------------------------------------------------------

count_pairs = st.integers(min_value=3, max_value=25).flatmap(
    lambda k: st.tuples(st.lists(st.integers(0, 1000), min_size=k, max_size=k),
                        st.lists(st.integers(0, 1000), min_size=k, max_size=k)))


@settings(max_examples=200, deadline=None)
@given(count_pairs)
def test_jensen_shannon_matches_scipy_squared_distance_and_is_bounded_and_symmetric(pair):
    p, q = oracle_smooth(pair[0]), oracle_smooth(pair[1])
    js = jensen_shannon(p, q)
    assert js == pytest.approx(jensenshannon(p, q, base=2) ** 2, rel=1e-9, abs=1e-12)
    assert 0.0 <= js <= 1.0
    assert jensen_shannon(q, p) == pytest.approx(js, rel=1e-12, abs=1e-15)
    assert jensen_shannon(p, p) == 0.0


@settings(max_examples=200, deadline=None)
@given(count_pairs)
def test_kullback_leibler_matches_scipy_entropy_and_is_non_negative(pair):
    p, q = oracle_smooth(pair[0]), oracle_smooth(pair[1])
    kl = kullback_leibler(p, q)
    assert kl == pytest.approx(entropy(p, q), rel=1e-9, abs=1e-12)
    assert kl >= 0.0
    assert kullback_leibler(p, p) == 0.0


@settings(max_examples=200, deadline=None)
@given(count_pairs)
def test_psi_hellinger_and_ks_match_loops(pair):
    p, q = oracle_smooth(pair[0]), oracle_smooth(pair[1])
    psi_loop = sum((pi - qi) * math.log(pi / qi) for pi, qi in zip(p, q))
    assert psi(p, q) == pytest.approx(psi_loop, rel=1e-9, abs=1e-12)
    assert psi(p, q) >= 0.0
    hell = np.linalg.norm(np.sqrt(p) - np.sqrt(q)) / math.sqrt(2)
    assert hellinger(p, q) == pytest.approx(hell, rel=1e-6, abs=1e-7)
    assert 0.0 <= hellinger(p, q) <= 1.0
    cp = cq = 0.0
    ks = 0.0
    for pi, qi in zip(p, q):
        cp, cq = cp + pi, cq + qi
        ks = max(ks, abs(cp - cq))
    assert kolmogorov_smirnov(p, q) == pytest.approx(ks, rel=1e-12, abs=1e-15)


@settings(max_examples=200, deadline=None)
@given(count_pairs, st.floats(-1e3, 1e3), st.floats(1e-3, 1e3))
def test_wasserstein_matches_scipy_on_bin_centres(pair, start, width):
    p, q = oracle_smooth(pair[0]), oracle_smooth(pair[1])
    k = len(p) - 2
    edges = start + width * np.arange(k + 1)
    centres = oracle_centres(edges)
    expected = wasserstein_distance(centres, centres, p, q)
    assert wasserstein(p, q, edges) == pytest.approx(expected, rel=1e-9, abs=1e-9 * width)
    assert wasserstein_norm(p, q, edges, 2.0) == pytest.approx(expected / 2.0, rel=1e-9, abs=1e-9 * width)


@settings(max_examples=200, deadline=None)
@given(count_pairs)
def test_chi_square_matches_scipy_chisquare(pair):
    observed = np.asarray(pair[0], dtype=float)
    if observed.sum() == 0:
        observed[0] = 1.0
    q = oracle_smooth(pair[1])
    expected = chisquare(observed, f_exp=q * observed.sum()).statistic
    assert chi_square(observed, q) == pytest.approx(expected, rel=1e-9)


def test_smooth_follows_the_design_formula():
    counts = [0, 3, 7, 0, 1]
    np.testing.assert_allclose(smooth(counts), oracle_smooth(counts), rtol=1e-15)
    assert EPS == 1e-6


def test_disjoint_distributions_reach_the_upper_bounds():
    assert jensen_shannon([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert hellinger([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert math.isinf(kullback_leibler([1.0, 0.0], [0.0, 1.0]))  # unsmoothed: infinite, as SciPy says
    assert math.isinf(entropy([1.0, 0.0], [0.0, 1.0]))

# --------------------------------------------------------------------------------------------
# The thesis' bugs, each done right
# --------------------------------------------------------------------------------------------


def test_kl_counts_bins_empty_in_the_baseline():
    # Baseline in the lower half, window entirely in the upper half: the thesis skipped every bin
    # where the baseline is 0, i.e. all the window's mass, and reported no divergence at all.
    base_counts = [0] + [10] * 5 + [0] * 5 + [0]
    win_counts = [0] + [0] * 5 + [10] * 5 + [0]
    p, q = oracle_smooth(win_counts), oracle_smooth(base_counts)
    thesis_kl = sum(pi * math.log(pi / qi) for pi, qi, b in zip(p, q, base_counts) if b > 0)
    ours = kullback_leibler(p, q)
    assert ours == pytest.approx(entropy(p, q), rel=1e-9)
    assert math.isfinite(ours) and ours > 10.0
    assert abs(thesis_kl) < 1e-4  # the thesis saw (almost) no drift at all


def test_wasserstein_is_in_feature_units_not_bin_units():
    rng = np.random.default_rng(7)
    train = rng.normal(10.0, 2.0, 2000)
    live = rng.normal(12.0, 2.0, 500)
    results = []
    for scale in (1.0, 2.0, 10.0):
        base = numerical_baseline(train * scale)
        window = numerical_window(live * scale, base["edges"])
        out = measure_drift({"features": {"x": window}}, {"features": {"x": base}},
                            [DetectorSpec("wasserstein", 0.0, True), DetectorSpec("wassersteinNorm", 0.0, True)],
                            [Feature("x", "numerical", 0)])
        results.append((out["x"]["wasserstein"]["value"], out["x"]["wassersteinNorm"]["value"]))
    (w1, n1), (w2, n2), (w10, n10) = results
    assert w2 == pytest.approx(2 * w1, rel=1e-9)
    assert w10 == pytest.approx(10 * w1, rel=1e-9)
    assert n1 == pytest.approx(n2, rel=1e-9) == pytest.approx(n10, rel=1e-9)
    # A location shift of 2 units shows up as roughly 2 units (bin units would be ~20/range*2).
    assert w1 == pytest.approx(2.0, abs=0.5)


def test_values_beyond_the_baseline_range_make_drift_visible():
    base = numerical_baseline(np.linspace(0.0, 1.0, 200))
    window = numerical_window(np.full(50, 5.0), base["edges"])  # every value above the baseline max
    assert window["histogram"]["counts"][-1] == 50
    out = measure_drift({"features": {"x": window}}, {"features": {"x": base}},
                        [DetectorSpec("jensenShannon", 0.1, False)], [Feature("x", "numerical", 0)])
    js = out["x"]["jensenShannon"]
    assert js["drifted"] is True and js["value"] > 0.99
    p = oracle_smooth(window["histogram"]["counts"])
    q = oracle_smooth([0] + base["counts"] + [0])
    assert js["value"] == pytest.approx(jensenshannon(p, q, base=2) ** 2, rel=1e-9)


def test_drift_records_carry_threshold_and_flag():
    rng = np.random.default_rng(3)
    base = numerical_baseline(rng.normal(0, 1, 1000))
    window = numerical_window(rng.normal(0.5, 1, 300), base["edges"])
    out = measure_drift({"features": {"x": window}}, {"features": {"x": base}},
                        [DetectorSpec("psi", 1e6, True), DetectorSpec("kolmogorovSmirnov", 1e-9, True)],
                        [Feature("x", "numerical", 0)])
    assert set(out["x"]) == {"psi", "kolmogorovSmirnov"}
    for name, threshold in (("psi", 1e6), ("kolmogorovSmirnov", 1e-9)):
        entry = out["x"][name]
        assert set(entry) == {"value", "threshold", "drifted"}
        assert entry["threshold"] == threshold
        assert entry["drifted"] is (entry["value"] > threshold)
    assert out["x"]["kolmogorovSmirnov"]["drifted"] is True
    assert out["x"]["psi"]["drifted"] is False

# --------------------------------------------------------------------------------------------
# measure_drift end to end against oracles built from raw samples
# --------------------------------------------------------------------------------------------


def make_case(seed: int):
    rng = np.random.default_rng(seed)
    features = [Feature("a", "numerical", 0), Feature("colour", "categorical", 1), Feature("b", "numerical", 2)]
    train_a, train_b = rng.normal(5, 1, 800), rng.exponential(2.0, 800)
    train_c = list(rng.choice(["red", "green", "blue"], 800, p=[0.5, 0.3, 0.2]))
    live_a, live_b = rng.normal(5.5, 1.5, 200), rng.exponential(2.5, 200)
    live_c = list(rng.choice(["red", "green", "purple", "pink"], 200, p=[0.4, 0.3, 0.2, 0.1])) + [None] * 5
    baseline = {"features": {"a": numerical_baseline(train_a), "b": numerical_baseline(train_b),
                             "colour": categorical_baseline(train_c)}}
    window = {"count": 200, "features": {
        "a": numerical_window(live_a, baseline["features"]["a"]["edges"]),
        "b": numerical_window(live_b, baseline["features"]["b"]["edges"]),
        "colour": categorical_window(live_c)}}
    return features, baseline, window


def oracle_numerical(window_feature, baseline_feature) -> dict[str, float]:
    p = oracle_smooth(window_feature["histogram"]["counts"])
    q = oracle_smooth([0] + list(baseline_feature["counts"]) + [0])
    centres = oracle_centres(baseline_feature["edges"])
    w1 = wasserstein_distance(centres, centres, p, q)
    return {"jensenShannon": jensenshannon(p, q, base=2) ** 2, "kullbackLeibler": entropy(p, q),
            "psi": entropy(p, q) + entropy(q, p), "hellinger": np.linalg.norm(np.sqrt(p) - np.sqrt(q)) / math.sqrt(2),
            "kolmogorovSmirnov": float(np.max(np.abs(np.cumsum(p) - np.cumsum(q)))),
            "wasserstein": w1, "wassersteinNorm": w1 / baseline_feature["stddev"]}


def oracle_categorical(window_feature, baseline_feature) -> dict[str, float]:
    labels = sorted(baseline_feature["frequencies"])
    observed = [window_feature["categories"].get(v, 0) for v in labels]
    observed.append(sum(c for v, c in window_feature["categories"].items() if v not in labels))
    q = oracle_smooth([baseline_feature["frequencies"][v] for v in labels] + [0])
    p = oracle_smooth(observed)
    seen = observed[:-1]
    base = np.array([baseline_feature["frequencies"][v] for v in labels], dtype=float)
    return {"jensenShannon": jensenshannon(p, q, base=2) ** 2,
            # Pearson's statistic over the baseline's categories only; unseen values are their own rule.
            "chiSquare": chisquare(seen, f_exp=base / base.sum() * sum(seen)).statistic,
            "unseenShare": observed[-1] / sum(observed)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measure_drift_matches_oracles_for_every_detector(seed):
    features, baseline, window = make_case(seed)
    out = measure_drift(window, baseline, ALL_DETECTORS, features)
    assert list(out) == ["a", "colour", "b"]  # schema order
    for name in ("a", "b"):
        expected = oracle_numerical(window["features"][name], baseline["features"][name])
        assert set(out[name]) == set(expected)
        for metric, value in expected.items():
            assert out[name][metric]["value"] == pytest.approx(value, rel=1e-7, abs=1e-10), (name, metric)
    expected = oracle_categorical(window["features"]["colour"], baseline["features"]["colour"])
    assert set(out["colour"]) == {"jensenShannon", "chiSquare", "unseenShare"}  # categorical only
    for metric, value in expected.items():
        assert out["colour"][metric]["value"] == pytest.approx(value, rel=1e-7), metric


def test_unseen_categories_share_one_bin_and_have_their_own_rule():
    baseline = {"features": {"c": categorical_baseline(["x"] * 60 + ["y"] * 40)}}
    same = {"features": {"c": categorical_window(["x"] * 30 + ["y"] * 20)}}
    novel = {"features": {"c": categorical_window(["x"] * 30 + ["y"] * 10 + ["z"] * 6 + ["w"] * 4)}}
    dets = [DetectorSpec("chiSquare", 10.0, True), DetectorSpec("jensenShannon", 0.1, True),
            DetectorSpec("unseenShare", 0.05, True)]
    feature = [Feature("c", "categorical", 0)]
    calm = measure_drift(same, baseline, dets, feature)["c"]
    hot = measure_drift(novel, baseline, dets, feature)["c"]
    assert calm["chiSquare"]["drifted"] is False and calm["jensenShannon"]["value"] < 1e-6
    assert calm["unseenShare"] == {"value": 0.0, "threshold": 0.05, "drifted": False}
    # z and w land in the same "unseen" bin: [x, y, unseen] = [30, 10, 10]; unseen share 10/50.
    assert hot["unseenShare"]["value"] == pytest.approx(0.2) and hot["unseenShare"]["drifted"] is True
    # chi-square over the baseline's categories only: [30, 10] against 40 * [0.6, 0.4].
    expected = chisquare([30, 10], f_exp=[24.0, 16.0])
    assert hot["chiSquare"]["value"] == pytest.approx(expected.statistic, rel=1e-12)
    assert hot["chiSquare"]["pValue"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert hot["chiSquare"]["dof"] == 1
    q = oracle_smooth([60, 40, 0])
    assert hot["jensenShannon"]["value"] == pytest.approx(
        jensenshannon(oracle_smooth([30, 10, 10]), q, base=2) ** 2, rel=1e-9)


def test_one_unseen_value_does_not_blow_up_chi_square():
    # Before: the unseen bin's expected count n*1e-6/N made chi-square about n*1e6 for one new value.
    baseline = {"features": {"c": categorical_baseline(["x"] * 500 + ["y"] * 500)}}
    window = {"features": {"c": categorical_window(["x"] * 250 + ["y"] * 249 + ["new"])}}
    out = measure_drift(window, baseline, [DetectorSpec("chiSquare", 30.0, True),
                                           DetectorSpec("unseenShare", 0.01, True)],
                        [Feature("c", "categorical", 0)])["c"]
    assert out["chiSquare"]["value"] < 0.01 and out["chiSquare"]["drifted"] is False
    assert out["unseenShare"]["value"] == pytest.approx(1 / 500) and out["unseenShare"]["drifted"] is False


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 5, 6, 9, 10, 25])
def test_chi_square_p_value_matches_scipy(dof):
    from scipy.stats import chi2
    from modelmonitor.detect.categorical import chi_square_sf
    for x in (0.0, 0.3, 1.0, dof * 0.7, float(dof), dof * 1.6, dof * 3.0 + 10):
        assert chi_square_sf(x, dof) == pytest.approx(chi2.sf(x, dof), rel=1e-9, abs=1e-300)


def test_chi_square_follows_its_null_distribution_whatever_the_window_size():
    # A threshold is a critical value only if, under no drift, the statistic is chi-square(K-1)
    # at any window size: simulate windows drawn from the baseline's shares.
    from scipy.stats import chi2, kstest
    rng = np.random.default_rng(7)
    shares = np.array([0.5, 0.3, 0.15, 0.05])
    baseline = {"features": {"c": {"type": "categorical", "count": 10**6,
                                   "frequencies": dict(zip("abcd", (shares * 10**6).astype(int).tolist()))}}}
    dets, feature = [DetectorSpec("chiSquare", 16.27, True)], [Feature("c", "categorical", 0)]
    for n in (200, 20_000):
        stats = []
        for _ in range(400):
            counts = rng.multinomial(n, shares)
            window = {"features": {"c": {"count": n, "categories": dict(zip("abcd", counts.tolist()))}}}
            stats.append(measure_drift(window, baseline, dets, feature)["c"]["chiSquare"]["value"])
        assert kstest(stats, chi2(3).cdf).pvalue > 0.001, n


def test_show_all_false_keeps_only_drifted_entries_and_drops_empty_features():
    features, baseline, window = make_case(5)
    full = measure_drift(window, baseline, ALL_DETECTORS, features)
    thresholds = {"jensenShannon": full["a"]["jensenShannon"]["value"] * 0.5,        # a drifts
                  "wasserstein": full["a"]["wasserstein"]["value"] * 2.0,            # a does not
                  "chiSquare": full["colour"]["chiSquare"]["value"] * 2.0}
    dets = [DetectorSpec(n, t, False) for n, t in thresholds.items()]
    out = measure_drift(window, baseline, dets, features)
    for name, entries in full.items():
        for metric, threshold in thresholds.items():
            if metric not in entries:
                continue
            should = entries[metric]["value"] > threshold
            assert (metric in out.get(name, {})) is should, (name, metric)
    assert "colour" not in out or "chiSquare" not in out["colour"]
    assert all(entry["drifted"] for entries in out.values() for entry in entries.values())
    assert all(entries for entries in out.values())


def test_empty_window_features_and_features_missing_from_the_baseline_are_skipped():
    features, baseline, window = make_case(1)
    window["features"]["a"] = numerical_window([], baseline["features"]["a"]["edges"])
    del baseline["features"]["b"]
    window["features"]["colour"] = categorical_window([None, None])  # only missing values
    out = measure_drift(window, baseline, ALL_DETECTORS, features)
    assert out == {}


def test_wasserstein_norm_is_left_out_when_the_baseline_stddev_is_zero():
    base = numerical_baseline([3.0] * 50)  # constant feature: numpy widens the range to [2.5, 3.5]
    assert base["stddev"] == 0.0
    window = numerical_window([3.0] * 10 + [4.0] * 10, base["edges"])
    out = measure_drift({"features": {"x": window}}, {"features": {"x": base}}, ALL_DETECTORS,
                        [Feature("x", "numerical", 0)])
    assert "wassersteinNorm" not in out["x"]
    assert out["x"]["wasserstein"]["value"] > 0
    assert wasserstein_norm([0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0], [0.0, 1.0, 2.0], 0.0) is None


@pytest.mark.parametrize("mutate, message", [
    (lambda w, b: w["features"]["a"]["histogram"].update(counts=[1, 2, 3]), "histogram has 3 counts"),
    (lambda w, b: w["features"]["a"]["histogram"].update(edges=[e + 1 for e in b["features"]["a"]["edges"]]),
     "differ from the baseline edges"),
    (lambda w, b: w["features"]["a"]["histogram"].update(edges=[0.0, 1.0] * 11), "strictly increasing"),
    (lambda w, b: w["features"]["a"].pop("histogram"), "histogram"),
    (lambda w, b: b["features"]["a"].pop("edges"), "edges"),
    (lambda w, b: b["features"]["a"].update(type="categorical"), "categorical in the baseline"),
    (lambda w, b: w["features"]["a"]["histogram"]["counts"].__setitem__(0, -1), "negative"),
    (lambda w, b: b["features"]["colour"].pop("frequencies"), "frequencies"),
])
def test_measure_drift_rejects_inconsistent_inputs(mutate, message):
    features, baseline, window = make_case(0)
    mutate(window, baseline)
    with pytest.raises(ValueError, match=message):
        measure_drift(window, baseline, ALL_DETECTORS, features)


def test_measure_drift_rejects_unknown_detectors_and_missing_sections():
    features, baseline, window = make_case(0)
    with pytest.raises(ValueError, match="unknown drift detector 'entropy'"):
        measure_drift(window, baseline, [DetectorSpec("entropy", 0.1)], features)
    with pytest.raises(ValueError, match="window record"):
        measure_drift({}, baseline, ALL_DETECTORS, features)
    with pytest.raises(ValueError, match="baseline"):
        measure_drift(window, {"rows": 3}, ALL_DETECTORS, features)


@pytest.mark.parametrize("call, message", [
    (lambda: jensen_shannon([0.5, 0.5], [1.0]), "same bins"),
    (lambda: kullback_leibler([2, 3], [1, 4]), "summing to 1"),
    (lambda: psi([0.5, float("nan")], [0.5, 0.5]), "finite"),
    (lambda: hellinger([1.5, -0.5], [0.5, 0.5]), "negative"),
    (lambda: kolmogorov_smirnov([], []), "non-empty"),
    (lambda: wasserstein([0.25] * 4, [0.25] * 4, [0.0, 1.0, 1.0]), "strictly increasing"),
    (lambda: wasserstein([0.25] * 4, [0.25] * 4, [0.0, 1.0]), "edges"),
    (lambda: chi_square([1, 2], [1.0, 0.0]), "positive"),
    (lambda: chi_square([1, 2, 3], [0.5, 0.5]), "3 observed counts for 2"),
    (lambda: chi_square([0, 0], [0.5, 0.5]), "all zero"),
    (lambda: smooth([[1, 2]]), "1-D"),
    (lambda: smooth(["a"]), "numbers"),
])
def test_metric_functions_reject_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()

# --------------------------------------------------------------------------------------------
# Alert policy
# --------------------------------------------------------------------------------------------

POLICY = AlertSpec(min_window_count=10, consecutive_windows=2, cooldown_ms=60_000)


def run_windows(windows, policy=POLICY, monitored=4, state=None):
    """windows: (end_ms, count, drifted names); returns (final state, [(end_ms, alert)])."""
    alerts = []
    for end, count, drifted in windows:
        state, alert = evaluate_alert(state, window_end_ms=end, window_count=count, drifted_features=drifted,
                                      policy=policy, monitored_features=monitored)
        if alert is not None:
            alerts.append((end, alert))
    return state, alerts


def test_alert_fires_after_the_consecutive_streak():
    state, alerts = run_windows([(15_000, 50, ["a"]), (30_000, 50, ["a"])])
    assert [end for end, _ in alerts] == [30_000]
    assert state == {"streak": 2, "lastAlertEndMs": 30_000, "lastWindowEndMs": 30_000}
    assert alerts[0][1]["severity"] == "warning"
    assert "a" in alerts[0][1]["reason"] and "2 consecutive" in alerts[0][1]["reason"]


def test_a_clean_window_resets_the_streak():
    state, alerts = run_windows([(15_000, 50, ["a"]), (30_000, 50, []), (45_000, 50, ["a"])])
    assert alerts == [] and state["streak"] == 1


def test_small_windows_neither_fire_nor_break_nor_extend_the_streak():
    # drifted, tiny clean window (ignored), drifted: the two drifted windows count as consecutive.
    state, alerts = run_windows([(15_000, 50, ["a"]), (30_000, 3, []), (45_000, 50, ["a"])])
    assert [end for end, _ in alerts] == [45_000]
    # tiny drifted windows do not extend a streak either
    state, alerts = run_windows([(15_000, 50, ["a"]), (30_000, 3, ["a"]), (45_000, 9, ["a"])])
    assert alerts == [] and state["streak"] == 1 and state["lastWindowEndMs"] == 45_000


def test_cooldown_in_event_time_suppresses_repeats():
    windows = [(t, 50, ["a"]) for t in range(15_000, 180_001, 15_000)]  # 12 drifted windows
    _, alerts = run_windows(windows)
    # first at 30 s (streak 2), then no earlier than 30 s + 60 s cooldown, and so on.
    assert [end for end, _ in alerts] == [30_000, 90_000, 150_000]
    _, alerts = run_windows(windows, policy=AlertSpec(10, 1, 0))
    assert [end for end, _ in alerts] == [end for end, _, _ in windows]


def test_severity_is_critical_when_more_than_half_the_features_drift():
    one_window = AlertSpec(min_window_count=0, consecutive_windows=1, cooldown_ms=0)
    _, alerts = run_windows([(1, 5, ["a", "b"])], policy=one_window, monitored=4)
    assert alerts[0][1]["severity"] == "warning"  # exactly half is not more than half
    _, alerts = run_windows([(1, 5, ["a", "b", "c"])], policy=one_window, monitored=4)
    assert alerts[0][1]["severity"] == "critical"
    _, alerts = run_windows([(1, 5, ["a", "a"])], policy=one_window, monitored=1)  # duplicates count once
    assert alerts[0][1]["severity"] == "critical"


def test_without_the_monitored_count_severity_stays_warning():
    one_window = AlertSpec(min_window_count=0, consecutive_windows=1, cooldown_ms=0)
    _, alert = evaluate_alert(None, window_end_ms=1, window_count=5, drifted_features=["a", "b", "c"],
                              policy=one_window)
    assert alert["severity"] == "warning" and "a, b, c" in alert["reason"]


def test_redelivered_windows_change_nothing():
    state, alerts = run_windows([(15_000, 50, ["a"]), (30_000, 50, ["a"])])
    again, alert = evaluate_alert(state, window_end_ms=30_000, window_count=50, drifted_features=["a"],
                                  policy=POLICY, monitored_features=4)
    assert alert is None and again == state
    older, alert = evaluate_alert(state, window_end_ms=15_000, window_count=50, drifted_features=[],
                                  policy=POLICY, monitored_features=4)
    assert alert is None and older == state


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=30), st.randoms())
def test_alerts_are_the_same_whatever_redeliveries_happen(windows, rnd):
    sequence = [((i + 1) * 15_000, count, ["a"] if drifted else []) for i, (count, drifted) in enumerate(windows)]
    _, clean = run_windows(sequence)
    # Redeliver random already-evaluated windows (at least once delivery) between the originals.
    noisy = []
    for i, window in enumerate(sequence):
        noisy.append(window)
        for _ in range(rnd.randint(0, 2)):
            noisy.append(sequence[rnd.randint(0, i)])
    _, replayed = run_windows(noisy)
    assert replayed == clean


def test_callers_extra_state_keys_survive():
    state = {"streak": 0, "lastAlertEndMs": None, "lastWindowEndMs": None, "monitor": "iris"}
    new, _ = evaluate_alert(state, window_end_ms=15_000, window_count=50, drifted_features=[], policy=POLICY,
                            monitored_features=2)
    assert new["monitor"] == "iris" and new["lastWindowEndMs"] == 15_000


def test_input_state_is_not_mutated():
    state = {"streak": 1, "lastAlertEndMs": None, "lastWindowEndMs": 15_000}
    snapshot = dict(state)
    evaluate_alert(state, window_end_ms=30_000, window_count=50, drifted_features=["a"], policy=POLICY,
                   monitored_features=2)
    assert state == snapshot


@pytest.mark.parametrize("kwargs, message", [
    ({"state": {"streak": -1}}, "streak"),
    ({"state": {"lastAlertEndMs": "soon"}}, "lastAlertEndMs"),
    ({"state": [1, 2]}, "mapping"),
    ({"window_count": -1}, "window_count"),
    ({"window_end_ms": 1.5}, "window_end_ms"),
    ({"drifted_features": "a"}, "list of feature names"),
    ({"monitored_features": 0}, "monitored_features"),
    ({"drifted_features": ["a", "b", "c"], "monitored_features": 2}, "monitored_features"),
])
def test_evaluate_alert_rejects_bad_input(kwargs, message):
    args = {"state": None, "window_end_ms": 15_000, "window_count": 50, "drifted_features": ["a"],
            "policy": POLICY, "monitored_features": 2}
    args.update(kwargs)
    state = args.pop("state")
    with pytest.raises(ValueError, match=message):
        evaluate_alert(state, **args)


def test_drifted_feature_names_reads_measure_drift_output():
    features, baseline, window = make_case(2)
    out = measure_drift(window, baseline, [DetectorSpec("jensenShannon", 0.0, True)], features)
    expected = [name for name in out if out[name]["jensenShannon"]["value"] > 0.0]
    assert drift.drifted_feature_names(out) == expected


@pytest.mark.parametrize("module", ["drift", "metrics", "categorical", "quantile_sketch", "alert_policy",
                                    "multivariate", "window_rules"])
def test_docstring_examples_run(module):
    import importlib
    result = doctest.testmod(importlib.import_module(f"modelmonitor.detect.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0
