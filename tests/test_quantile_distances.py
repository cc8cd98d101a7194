"""Exact Wasserstein-1 and KS from quantile sketches, against SciPy on the raw samples.

Oracles: ``scipy.stats.wasserstein_distance`` and ``scipy.stats.ks_2samp`` on the samples the
sketches were built from; the difference must stay within the bound the score reports.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp, wasserstein_distance

from modelmonitor.core.baseline import build_baseline, normalize_baseline
from modelmonitor.core.baseline_validate import BaselineError
from modelmonitor.core.spec import DetectorSpec, Feature, StatsSpec, parse_monitor
from modelmonitor.detect import quantile_sketch as qs
from modelmonitor.detect.drift import measure_drift
from modelmonitor.stats.aggregate import WindowAggregate

SKETCHED = [DetectorSpec("wasserstein", 0.5, True), DetectorSpec("wassersteinNorm", 0.1, True),
            DetectorSpec("kolmogorovSmirnov", 0.1, True)]
X = [Feature("x", "numerical", 0)]


def window_record(values, baseline, k_stats=StatsSpec(quantile_sketch=True)):
    agg = WindowAggregate(X, edges={"x": baseline["features"]["x"]["edges"]})
    for chunk in np.array_split(np.asarray(values, dtype=float), 7):   # several merged partials
        part = WindowAggregate(X, edges={"x": baseline["features"]["x"]["edges"]})
        part.update_arrays(chunk.reshape(-1, 1))
        agg.merge(part)
    return agg.finalize(k_stats)


@pytest.mark.parametrize("n_train,n_window,shift,scale", [
    (800, 150, 0.0, 1.0),          # both exact: no error at all
    (800, 5_000, 0.7, 1.3),        # exact baseline, sketched window
    (60_000, 300, 2.0, 1.0),       # sketched baseline, window in exact mode (n <= k)
    (60_000, 40_000, -0.4, 2.5),   # both summarised
    (20_000, 20_000, 25.0, 1.0),   # far beyond the baseline range
])
def test_scores_match_scipy_on_raw_samples_within_the_reported_bound(n_train, n_window, shift, scale):
    rng = np.random.default_rng(n_train + n_window)
    train = rng.normal(3.0, 1.5, n_train)
    live = rng.normal(3.0 + shift, 1.5 * scale, n_window)
    baseline = normalize_baseline(build_baseline({"x": train}, X))
    out = measure_drift(window_record(live, baseline), baseline, SKETCHED, X)["x"]
    w1, ks = wasserstein_distance(live, train), ks_2samp(live, train).statistic
    for metric, exact in (("wasserstein", w1), ("kolmogorovSmirnov", ks),
                          ("wassersteinNorm", w1 / baseline["features"]["x"]["stddev"])):
        score = out[metric]
        assert abs(score["value"] - exact) <= score["bound"] + 1e-9 * max(1.0, exact), (metric, score, exact)
    if n_train <= qs.BASELINE_EXACT_LIMIT and n_window <= qs.WINDOW_K:
        assert out["wasserstein"]["bound"] == 0.0
        assert out["wasserstein"]["value"] == pytest.approx(w1, rel=1e-12)
        assert out["kolmogorovSmirnov"]["value"] == pytest.approx(ks, rel=1e-12)


def test_wasserstein_keeps_growing_with_the_shift_unlike_the_binned_estimate():
    rng = np.random.default_rng(3)
    train = rng.normal(0.0, 1.0, 2_000)
    baseline = normalize_baseline(build_baseline({"x": train}, X))
    binned = [DetectorSpec("wasserstein", 0.5, True)]
    values = []
    for shift in (1.0, 10.0, 100.0):
        live = rng.normal(shift, 1.0, 300)
        exact = measure_drift(window_record(live, baseline), baseline, binned, X)["x"]["wasserstein"]
        assert exact["value"] == pytest.approx(wasserstein_distance(live, train), abs=exact["bound"] + 1e-9)
        values.append(exact["value"])
    assert values[2] > 90 and values[1] > 9 and values[0] > 0.5


def test_without_sketches_the_binned_estimate_is_used_and_has_no_bound():
    rng = np.random.default_rng(4)
    baseline = normalize_baseline(build_baseline({"x": rng.normal(size=500)}, X))
    record = window_record(rng.normal(size=200), baseline, StatsSpec())
    assert "quantileSketch" not in record["features"]["x"]
    out = measure_drift(record, baseline, SKETCHED, X)["x"]
    assert all("bound" not in out[m] for m in ("wasserstein", "kolmogorovSmirnov"))


def test_baseline_keeps_exact_values_when_small_and_a_kll_sketch_when_large():
    rng = np.random.default_rng(5)
    small = build_baseline({"x": rng.normal(size=qs.BASELINE_EXACT_LIMIT)}, X)["features"]["x"]["quantileSketch"]
    large = build_baseline({"x": rng.normal(size=50_000)}, X)["features"]["x"]["quantileSketch"]
    assert small["kind"] == "exact" and len(small["values"]) == qs.BASELINE_EXACT_LIMIT
    assert large["kind"] == "kll" and large["k"] == qs.BASELINE_K and large["n"] == 50_000
    assert len(large["sketch"]) < 40_000          # stays ConfigMap-sized


def test_malformed_sketches_are_refused_with_the_field_named():
    doc = build_baseline({"x": [1.0, 2.0, 3.0]}, X)
    for bad, words in (({"kind": "kll", "sketch": "%%%"}, "base64"),
                       ({"kind": "kll", "sketch": "AAAA"}, "KLL"),
                       ({"kind": "tdigest"}, "kind"),
                       ({"kind": "exact", "values": [1.0, "a"]}, "numbers"),
                       ({"kind": "exact", "values": [1.0, 2.0]}, "count")):
        doc["features"]["x"]["quantileSketch"] = bad
        with pytest.raises(BaselineError) as info:
            normalize_baseline(doc)
        assert "features.x.quantileSketch" in str(info.value) and words in str(info.value), (bad, str(info.value))
    baseline = normalize_baseline(build_baseline({"x": [1.0, 2.0, 3.0]}, X))
    record = window_record([1.0, 2.0], baseline)
    record["features"]["x"]["quantileSketch"] = {"kind": "kll", "sketch": "AAAA"}
    with pytest.raises(ValueError, match="window feature 'x' quantileSketch"):
        measure_drift(record, baseline, SKETCHED, X)


def test_monitors_with_sketched_detectors_make_windows_carry_sketches():
    doc = {"metadata": {"name": "m"}, "spec": {"schema": {"features": [{"name": "x"}]},
                                               "baseline": {"file": "b.json"}}}
    doc["spec"]["drift"] = {"jensenShannon": {}}
    assert parse_monitor(doc).stats.quantile_sketch is False
    doc["spec"]["drift"] = {"kolmogorovSmirnov": {}}
    assert parse_monitor(doc).stats.quantile_sketch is True


def test_windows_send_their_kll_sketch_and_block_summaries_are_read_too():
    rng = np.random.default_rng(8)
    train, live = rng.normal(size=30_000), rng.normal(0.5, 1.0, size=30_000)
    baseline = normalize_baseline(build_baseline({"x": train}, X))
    record = window_record(live, baseline)
    assert record["features"]["x"]["quantileSketch"]["kind"] == "kll"
    assert record["features"]["x"]["quantileSketch"]["n"] == live.size
    # A deterministic block-means summary of the same window is scored within its own bound.
    record["features"]["x"]["quantileSketch"] = qs.blocks_from_values(live)
    out = measure_drift(record, baseline, SKETCHED, X)["x"]
    assert abs(out["wasserstein"]["value"] - wasserstein_distance(live, train)) <= out["wasserstein"]["bound"]
    assert abs(out["kolmogorovSmirnov"]["value"] - ks_2samp(live, train).statistic) <= out["kolmogorovSmirnov"]["bound"]


def test_block_summary_bound_is_certain_on_adversarial_samples():
    # Heavy tails and ties: the bound of a blocks summary holds deterministically, not just w.h.p.
    rng = np.random.default_rng(9)
    for sample in (rng.standard_cauchy(5_000), np.repeat([0.0, 1.0, 1e6], [3_000, 3_000, 7]),
                   rng.exponential(size=2_000) ** 3):
        exact = qs.decode({"kind": "exact", "values": sample.tolist()})
        summary = qs.decode(qs.blocks_from_values(sample, exact_limit=10, blocks=64))
        other = qs.decode({"kind": "exact", "values": (sample[:500] + 1.0).tolist()})
        w1_bound, ks_bound = qs.error_bounds(summary, other)
        assert abs(qs.wasserstein_distance(summary, other) - qs.wasserstein_distance(exact, other)) <= w1_bound + 1e-9
        assert abs(qs.ks_statistic(summary, other) - qs.ks_statistic(exact, other)) <= ks_bound + 1e-12
