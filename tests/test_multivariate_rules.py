"""Multivariate drift, the thesis' window rules and the sequential alert rules.

Oracles: NumPy (inverse, slogdet, np.cov on the raw samples), SciPy's chi-square distribution
(null distributions and p-values), and direct loops for CUSUM / Page-Hinkley.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2, kstest

from modelmonitor.core.baseline import build_baseline, normalize_baseline
from modelmonitor.core.schema_check import validate_event_data
from modelmonitor.core.spec import (AlertSpec, DetectorSpec, Feature, SequentialSpec, SpecError, StatsSpec,
                                    parse_monitor)
from modelmonitor.detect.alert_policy import drift_ratios, evaluate_alert
from modelmonitor.detect.drift import measure_drift, measure_multivariate
from modelmonitor.stats.aggregate import WindowAggregate

NAMES = ["a", "b", "c"]
LAYOUT = [Feature(n, "numerical", i) for i, n in enumerate(NAMES)]
COV = np.array([[1.0, 0.6, 0.2], [0.6, 2.0, -0.3], [0.2, -0.3, 0.5]])
MV = [DetectorSpec("hotelling", 20.0, True), DetectorSpec("covarianceChange", 30.0, True)]


def baseline_of(rows):
    return normalize_baseline(build_baseline({n: rows[:, i] for i, n in enumerate(NAMES)}, LAYOUT))


def window_of(rows, baseline, stats=StatsSpec()):
    agg = WindowAggregate(LAYOUT, edges={n: baseline["features"][n]["edges"] for n in NAMES})
    agg.update_arrays(rows)
    return agg.finalize(stats)


def oracle(rows, train):
    mu, s0 = train.mean(axis=0), np.cov(train, rowvar=False, ddof=1)
    n, p = rows.shape
    d = rows.mean(axis=0) - mu
    t2 = n * d @ np.linalg.inv(s0) @ d
    s = np.cov(rows, rowvar=False, ddof=1)
    m = np.linalg.inv(s0) @ s
    lr = (n - 1) * (np.trace(m) - np.linalg.slogdet(m)[1] - p)
    return t2, lr


@pytest.mark.parametrize("shift,scale,stats", [
    (0.0, 1.0, StatsSpec()), (0.3, 1.0, StatsSpec()), (0.0, 1.6, StatsSpec()),
    (0.2, 0.7, StatsSpec(covariance_type="population")),
])
def test_multivariate_scores_match_numpy_on_the_samples(shift, scale, stats):
    rng = np.random.default_rng(int(shift * 10 + scale * 10))
    train = rng.multivariate_normal([1.0, -2.0, 0.5], COV, size=3_000)
    rows = rng.multivariate_normal([1.0 + shift, -2.0, 0.5], COV * scale, size=250)
    baseline = baseline_of(train)
    ddof = 0 if stats.covariance_type == "population" else 1
    out = measure_multivariate(window_of(rows, baseline, stats), baseline, MV, ddof)
    t2, lr = oracle(rows, train)
    assert out["hotelling"]["value"] == pytest.approx(t2, rel=1e-8)
    assert out["covarianceChange"]["value"] == pytest.approx(lr, rel=1e-8)
    assert out["hotelling"]["dof"] == 3 and out["covarianceChange"]["dof"] == 6
    assert out["hotelling"]["pValue"] == pytest.approx(chi2.sf(t2, 3), rel=1e-9, abs=1e-300)
    assert out["covarianceChange"]["pValue"] == pytest.approx(chi2.sf(lr, 6), rel=1e-9, abs=1e-300)
    assert out["hotelling"]["drifted"] == (t2 > 20.0)


def test_under_no_drift_the_statistics_follow_their_chi_square_laws():
    # The baseline is the population (known mean and covariance); windows are drawn from it.
    rng = np.random.default_rng(11)
    baseline = {"features": {n: {"mean": m} for n, m in zip(NAMES, [1.0, -2.0, 0.5])},
                "covariance": {"features": NAMES, "matrix": COV.tolist()}}
    t2s, lrs = [], []
    for _ in range(400):
        rows = rng.multivariate_normal([1.0, -2.0, 0.5], COV, size=400)
        record = {"count": 400, "features": {n: {"count": 400, "mean": float(rows[:, i].mean())}
                                             for i, n in enumerate(NAMES)},
                  "covariance": {"features": NAMES, "matrix": np.cov(rows, rowvar=False).tolist()}}
        out = measure_multivariate(record, baseline, MV)
        t2s.append(out["hotelling"]["value"])
        lrs.append(out["covarianceChange"]["value"])
    assert kstest(t2s, chi2(3).cdf).pvalue > 0.001
    assert kstest(lrs, chi2(6).cdf).pvalue > 0.001


def test_singular_baseline_covariance_uses_its_rank_and_tiny_windows_are_skipped():
    rng = np.random.default_rng(12)
    x = rng.normal(size=500)
    train = np.column_stack([x, 2 * x, rng.normal(size=500)])      # a and b collinear
    baseline = baseline_of(train)
    rows = np.column_stack([x[:100] + 0.5, 2 * x[:100] + 1.0, rng.normal(size=100)])
    out = measure_multivariate(window_of(rows, baseline), baseline, MV)
    assert out["hotelling"]["dof"] == 2 and out["hotelling"]["value"] > 20
    one = window_of(rows[:1], baseline)
    assert measure_multivariate(one, baseline, MV) == {}


@pytest.mark.parametrize("seed", [0, 1])
def test_window_rules_match_numpy_on_the_samples(seed):
    rng = np.random.default_rng(seed)
    train = rng.multivariate_normal([0, 0, 0], COV, size=1_000)
    scale = np.diag([1.0, 5.0, 1.0])
    rows = rng.multivariate_normal([0.9, 0, 0], scale @ COV @ scale, size=300)
    baseline = baseline_of(train)
    dets = [DetectorSpec(n, t, True) for n, t in (("maxAboveBaseline", 0.0), ("minBelowBaseline", 0.0),
                                                    ("meanShift", 2.0), ("stddevRatio", 2.0))]
    out = measure_drift(window_of(rows, baseline), baseline, dets, LAYOUT)
    for i, name in enumerate(NAMES):
        x, t = rows[:, i], train[:, i]
        sd = t.std(ddof=1)
        expected = {"maxAboveBaseline": x.max() - t.max(), "minBelowBaseline": t.min() - x.min(),
                    "meanShift": abs(x.mean() - t.mean()) / sd, "stddevRatio": x.std(ddof=1) / sd}
        for rule, value in expected.items():
            assert out[name][rule]["value"] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, rule)
            assert out[name][rule]["drifted"] == (value > out[name][rule]["threshold"])
    assert out["b"]["stddevRatio"]["drifted"] is True and out["c"]["stddevRatio"]["drifted"] is False


def _oracle_cusum(ratios, k, h):
    s, alarms = 0.0, []
    for i, r in enumerate(ratios):
        s = max(0.0, s + r - k)
        if s > h:
            alarms.append(i)
            s = 0.0
    return alarms


def _oracle_page_hinkley(ratios, delta, lam):
    total, m, low, alarms = 0.0, 0.0, 0.0, []
    for i, r in enumerate(ratios):
        total += r
        m += r - total / (i + 1) - delta
        low = min(low, m)
        if m - low > lam:
            alarms.append(i)
            m = low = 0.0
    return alarms


@pytest.mark.parametrize("method,drift,threshold,oracle", [
    ("cusum", 0.8, 1.5, _oracle_cusum), ("pageHinkley", 0.1, 2.0, _oracle_page_hinkley)])
def test_sequential_rules_alarm_where_a_direct_loop_does(method, drift, threshold, oracle):
    rng = np.random.default_rng(5)
    ratios = np.concatenate([rng.uniform(0, 0.6, 60), rng.uniform(0.8, 2.0, 20), rng.uniform(0, 0.6, 40)])
    policy = AlertSpec(min_window_count=0, cooldown_ms=0, sequential=SequentialSpec(method, threshold, drift))
    state, alarms = None, []
    for i, r in enumerate(ratios):
        state, alert = evaluate_alert(state, window_end_ms=(i + 1) * 1000, window_count=10,
                                      drifted_features=["x"] if r > 1 else [], policy=policy,
                                      monitored_features=1, ratios={"x": float(r)})
        if alert is not None:
            alarms.append(i)
            assert ("CUSUM" if method == "cusum" else "Page-Hinkley") in alert["reason"]
    assert alarms == oracle(ratios, drift, threshold)
    assert alarms and all(a >= 60 for a in alarms[:1])


def test_drift_ratio_and_the_spec_of_the_sequential_rule():
    assert drift_ratios({"x": {"psi": {"value": 0.3, "threshold": 0.2, "drifted": True},
                               "jensenShannon": {"value": 0.01, "threshold": 0.1, "drifted": False}}}) == \
        {"x": pytest.approx(1.5)}
    doc = {"metadata": {"name": "m"}, "spec": {"schema": {"features": [{"name": "x"}]},
                                               "alerts": {"sequential": {"method": "pageHinkley"}}}}
    assert parse_monitor(doc).alerts.sequential == SequentialSpec("pageHinkley", 2.0, 0.1)
    doc["spec"]["alerts"] = {"sequential": {"method": "ewma"}}
    with pytest.raises(SpecError, match="spec.alerts.sequential.method"):
        parse_monitor(doc)
    doc["spec"]["alerts"] = {"sequential": {"threshold": 0}}
    with pytest.raises(SpecError, match="spec.alerts.sequential.threshold"):
        parse_monitor(doc)
    doc["spec"]["alerts"] = {"sequential": {}, "consecutiveWindows": 1}   # as the CRD defaults it
    assert parse_monitor(doc).alerts.sequential == SequentialSpec("cusum", 1.5, 0.8)


def test_drift_handler_reports_multivariate_scores_and_alerts_on_them():
    from modelmonitor.core import events as ev
    from modelmonitor.handlers.drift import MemoryAlertState, measure
    from modelmonitor.handlers.monitor import Monitor
    rng = np.random.default_rng(21)
    train = rng.multivariate_normal([0, 0, 0], COV, size=2_000)
    baseline = baseline_of(train)
    spec = parse_monitor({"metadata": {"name": "m"}, "spec": {
        "schema": {"features": [{"name": n} for n in NAMES]}, "baseline": {"features": baseline["features"]},
        "drift": {"hotelling": {"threshold": 16.3}, "covarianceChange": {"threshold": 22.5, "showAll": True},
                  "jensenShannon": {"threshold": 0.9}},
        "alerts": {"minWindowCount": 10, "cooldown": 0}}})
    monitor = Monitor(spec, baseline)
    # A shift along the correlated direction: small per feature, large for Hotelling.
    rows = rng.multivariate_normal([0.25, -0.25, 0.0], COV, size=400)
    record = window_of(rows, baseline, spec.stats)
    record.update(monitor="m", window={"startMs": 0, "endMs": 15_000, "start": ev.ms_to_rfc3339(0),
                                       "end": ev.ms_to_rfc3339(15_000)}, late=0, watermarkMs=15_000,
                  closedAtMs=15_001)
    closed = ev.make_event(ev.WINDOW_CLOSED, "m", "m/0/15000", record, source=monitor.source("aggregate"),
                           time_ms=15_000)
    emitted = measure(monitor, closed, 15_002, MemoryAlertState())
    measured = emitted[0].data
    validate_event_data(ev.DRIFT_MEASURED, measured)
    t2, lr = oracle(rows, train)
    assert measured["multivariate"]["hotelling"]["value"] == pytest.approx(t2, rel=1e-6)
    assert measured["multivariate"]["covarianceChange"]["value"] == pytest.approx(lr, rel=1e-6)
    assert not any(s["drifted"] for f in measured["features"].values() for s in f.values())
    assert len(emitted) == 2 and "multivariate drift (hotelling)" in emitted[1].data["reason"]
    assert emitted[1].data["driftedMultivariate"] == ["hotelling"] and emitted[1].data["driftedFeatures"] == []
    assert emitted[1].data["severity"] == "critical"
    validate_event_data(ev.DRIFT_DETECTED, emitted[1].data)


def test_alert_rule_benchmark_runs_the_real_policy_and_ranks_the_rules():
    from modelmonitor.tools.bench_detect import bench_alert_rules, markdown
    r = bench_alert_rules(stationary_windows=400, runs=8, shifts=(0.5,), seed=3)
    rules = r["rules"]
    # More consecutive windows: fewer false alarms, longer delay; a large shift is caught by all.
    assert rules["consecutive-1"]["falseAlarmsPer1000Windows"] >= rules["consecutive-3"]["falseAlarmsPer1000Windows"]
    assert rules["consecutive-1"]["falseAlarmsPer1000Windows"] > rules["cusum"]["falseAlarmsPer1000Windows"]
    assert rules["consecutive-3"]["delayWindows@0.5sd"]["mean"] > 2.5   # (a streak may start in burn-in)
    assert rules["cusum"]["delayWindows@0.5sd"]["mean"] < rules["consecutive-3"]["delayWindows@0.5sd"]["mean"]
    assert all(v["delayWindows@0.5sd"]["missed"] == 0 for v in rules.values())
    assert "| cusum |" in markdown(r)
