"""False-alarm rate and detection delay of the alert rules, by simulation (``modelmonitor bench``).

One numerical feature; the baseline is 4,000 draws of N(0, 1) (20 bins, exact quantile sketch);
each window holds 200 draws. Every window is scored by the real drift code
(:func:`modelmonitor.detect.drift.measure_drift`: Wasserstein-1 with threshold 0.15 and KS with
threshold 0.1, the exact sketch-based ones) and fed to the real alert policy
(:func:`modelmonitor.detect.alert_policy.evaluate_alert`) under each rule, with no cooldown and
``minWindowCount`` 0, so every alarm counts.

- False alarms: windows drawn from the baseline's own distribution; alerts per 1,000 windows.
- Detection delay: 20 windows from the baseline, then the mean shifts by ``shift`` standard
  deviations; the delay is the number of shifted windows up to and including the first alert
  (runs that do not alert within 100 shifted windows count as 100 and are reported).
"""
from __future__ import annotations

import time

import numpy as np

from modelmonitor.core.baseline import build_baseline, normalize_baseline
from modelmonitor.core.spec import AlertSpec, DetectorSpec, Feature, SequentialSpec
from modelmonitor.detect.alert_policy import drift_ratios, evaluate_alert
from modelmonitor.detect.drift import measure_drift
from modelmonitor.detect.quantile_sketch import sketch_from_values

RULES = {
    "consecutive-1": AlertSpec(0, 1, 0),
    "consecutive-2": AlertSpec(0, 2, 0),
    "consecutive-3": AlertSpec(0, 3, 0),
    "cusum": AlertSpec(0, 1, 0, SequentialSpec("cusum", 1.5, 0.8)),
    "pageHinkley": AlertSpec(0, 1, 0, SequentialSpec("pageHinkley", 2.0, 0.1)),
}
DETECTORS = [DetectorSpec("wasserstein", 0.15, True), DetectorSpec("kolmogorovSmirnov", 0.1, True)]
FEATURE = [Feature("x", "numerical", 0)]
WINDOW, BURN_IN, HORIZON = 200, 20, 100


def _scores(rng: np.random.Generator, baseline: dict, shift: float) -> dict:
    x = rng.normal(shift, 1.0, WINDOW)
    edges = np.asarray(baseline["features"]["x"]["edges"])
    inner, _ = np.histogram(x, edges)
    counts = [int((x < edges[0]).sum()), *inner.tolist(), int((x > edges[-1]).sum())]
    record = {"features": {"x": {"count": WINDOW, "histogram": {"edges": edges.tolist(), "counts": counts},
                                 "quantileSketch": sketch_from_values(x)}}}
    return measure_drift(record, baseline, DETECTORS, FEATURE)


def _step(state, policy, i, measured):
    drifted = [n for n, s in measured.items() if any(v["drifted"] for v in s.values())]
    return evaluate_alert(state, window_end_ms=(i + 1) * 1000, window_count=WINDOW, drifted_features=drifted,
                          policy=policy, monitored_features=1, ratios=drift_ratios(measured))


def bench_alert_rules(stationary_windows: int = 5_000, runs: int = 200, shifts=(0.2, 0.5), seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    baseline = normalize_baseline(build_baseline({"x": rng.normal(size=4_000)}, FEATURE))
    started = time.perf_counter()
    calm = [_scores(rng, baseline, 0.0) for _ in range(stationary_windows)]
    result: dict = {"windowSize": WINDOW, "stationaryWindows": stationary_windows, "runs": runs, "rules": {}}
    for name, policy in RULES.items():
        state, alarms = None, 0
        for i, measured in enumerate(calm):
            state, alert = _step(state, policy, i, measured)
            alarms += alert is not None
        result["rules"][name] = {"falseAlarmsPer1000Windows": round(1000 * alarms / stationary_windows, 2)}
    for shift in shifts:
        sequences = [[_scores(rng, baseline, 0.0) for _ in range(BURN_IN)]
                     + [_scores(rng, baseline, shift) for _ in range(HORIZON)] for _ in range(runs)]
        for name, policy in RULES.items():
            delays, missed = [], 0
            for seq in sequences:
                state, delay = None, None
                for i, measured in enumerate(seq):
                    state, alert = _step(state, policy, i, measured)
                    if alert is not None and i >= BURN_IN:
                        delay = i - BURN_IN + 1
                        break
                missed += delay is None
                delays.append(HORIZON if delay is None else delay)
            result["rules"][name][f"delayWindows@{shift}sd"] = {
                "mean": round(float(np.mean(delays)), 2), "p90": float(np.percentile(delays, 90)), "missed": missed}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def markdown(r: dict) -> str:
    shifts = sorted({k for rule in r["rules"].values() for k in rule if k.startswith("delay")})
    head = "| rule | false alarms / 1,000 stationary windows | " + " | ".join(
        f"delay at {k.split('@')[1]} (mean / p90 windows)" for k in shifts) + " |"
    out = [head, "|---" * (2 + len(shifts)) + "|"]
    for name, v in r["rules"].items():
        cells = [f"{v[k]['mean']:.2f} / {v[k]['p90']:g}" + (f" ({v[k]['missed']} missed)" if v[k]["missed"] else "")
                 for k in shifts]
        out.append(f"| {name} | {v['falseAlarmsPer1000Windows']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import json
    res = bench_alert_rules()
    print(json.dumps(res, indent=2))
    print(markdown(res))
