"""`modelmonitor replay` end to end on a real redis-server, against independent references."""
from __future__ import annotations

import json
import os
import random

import numpy as np
from scipy.stats import ks_2samp, wasserstein_distance
import pytest
import yaml

from modelmonitor.core import events as ev
from modelmonitor.tools.cli import main as cli_main
from modelmonitor.tools.replay import run_replay
from modelmonitor.tools.streams import ThesisStream, logger_events, stage_names, write_jsonl
from reference import assert_close_json, assert_same_window, percentile_within_bound, reference_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRIS = os.path.join(ROOT, "examples", "iris")


def read_events(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def write_monitor(tmp_path, **window):
    doc = yaml.safe_load(open(os.path.join(IRIS, "monitor.yaml")))
    doc["spec"]["baseline"] = {"file": os.path.join(IRIS, "baseline.json")}
    doc["spec"]["window"].update(window)
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def jittered_stream(n=3000, seed=3):
    """Requests out of order (up to 8 s), 5% very late, 15% redelivered."""
    rng = random.Random(seed)
    stream = ThesisStream.from_csv(os.path.join(IRIS, "train.csv"), total=n, seed=seed)
    docs = [doc for _, doc in logger_events(stream, rate_per_s=50)]
    out = []
    for doc in docs:
        t = ev.rfc3339_to_ms(doc["time"]) - rng.randint(0, 8000)
        if rng.random() < 0.05:
            t -= rng.randint(20_000, 60_000)
        doc = dict(doc, time=ev.ms_to_rfc3339(t))
        if rng.random() < 0.5:   # some requests carry several instances
            doc["data"] = {"instances": doc["data"]["instances"] * rng.randint(1, 3)}
        out.append(doc)
        if rng.random() < 0.15:
            out.append(out[rng.randrange(len(out))])
    return out


@pytest.mark.parametrize("duration,slide", [("15s", "15s"), ("15s", "5s")])
def test_replay_windows_equal_reference(tmp_path, redis_url, duration, slide):
    monitor = write_monitor(tmp_path, duration=duration, slide=slide, watermarkDelay="6s")
    docs = jittered_stream()
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "out.jsonl"
    run_replay(monitor, str(inp), str(out), redis_url=redis_url, progress=None, batch=97)

    d = 15_000
    s = 15_000 if slide == "15s" else 5_000
    ref = reference_run([(d0["id"], ev.rfc3339_to_ms(d0["time"]), d0["data"]["instances"]) for d0 in docs],
                        d, s, 6_000)
    got = [e["data"] for e in read_events(out) if e["type"] == ev.WINDOW_CLOSED]
    assert [(w["window"]["startMs"], w["window"]["endMs"]) for w in got] == [(r["start"], r["end"]) for r in ref]
    assert [w["late"] for w in got] == [r["late"] for r in ref]
    assert sum(r["late"] for r in ref) > 0
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    for w, r in zip(got, ref):
        x = np.asarray(r["rows"], dtype=float)
        assert w["count"] == len(x)
        for j, name in enumerate(names):
            f = w["features"][name]
            assert f["count"] == len(x)
            assert f["mean"] == pytest.approx(np.mean(x[:, j]), rel=1e-12)
            assert f["min"] == np.min(x[:, j]) and f["max"] == np.max(x[:, j])
            if len(x) > 1:
                assert f["stddev"] == pytest.approx(np.std(x[:, j], ddof=1), rel=1e-9)
            for q in (25, 50, 75):
                assert percentile_within_bound(f["percentiles"][str(q)], x[:, j], q)
        if len(x) > 2:
            np.testing.assert_allclose(np.asarray(w["covariance"]["matrix"], dtype=float), np.cov(x.T), rtol=1e-9)


def test_replay_is_deterministic_and_windows_ids_unique(tmp_path, redis_url):
    monitor = write_monitor(tmp_path)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in jittered_stream(1500, seed=9)))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run_replay(monitor, str(inp), str(a), redis_url=redis_url, progress=None, batch=50)
    run_replay(monitor, str(inp), str(b), progress=None, batch=50)   # its own private redis-server
    # Byte-identical, except the percentiles of windows past the KLL sketch's exact range (more
    # than 400 values): the sketch compacts with random bits, so those are checked against the raw
    # values of the reference instead, within the documented rank error.
    docs = [json.loads(line) for line in inp.read_text().splitlines()]
    ref = {(r["start"], r["end"]): np.asarray(r["rows"], dtype=float) for r in reference_run(
        [(d0["id"], ev.rfc3339_to_ms(d0["time"]), d0["data"]["instances"]) for d0 in docs], 15_000, 15_000, 6_000)}
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

    base = json.load(open(os.path.join(IRIS, "baseline.json")))["features"]
    train = {name: np.asarray(base[name]["quantileSketch"]["values"]) for name in names}   # exact: 120 rows

    def exact_part(event):
        if event["data"].get("count", 0) <= 400:
            return event
        event = json.loads(json.dumps(event))
        x = ref[(event["data"]["window"]["startMs"], event["data"]["window"]["endMs"])]
        if event["type"] == ev.WINDOW_CLOSED:
            for j, name in enumerate(names):
                f = event["data"]["features"][name]
                for q in (25, 50, 75):
                    assert percentile_within_bound(f["percentiles"].pop(str(q)), x[:, j], q)
                f.pop("iqr")
                sketch = f.pop("quantileSketch")
                assert sketch["kind"] == "kll" and sketch["n"] == len(x)
        elif event["type"] in (ev.DRIFT_MEASURED, ev.DRIFT_DETECTED):
            # Scores from the window's KLL sketch: within their bound of SciPy on the raw rows.
            for j, name in enumerate(names):
                for metric, exact in (("wasserstein", wasserstein_distance(x[:, j], train[name])),
                                      ("kolmogorovSmirnov", ks_2samp(x[:, j], train[name]).statistic)):
                    score = event["data"]["features"].get(name, {}).get(metric)
                    if score is None:
                        continue
                    bound = score.pop("bound")
                    assert abs(score.pop("value") - exact) <= bound + 1e-9, (name, metric)
                    if abs(exact - score["threshold"]) <= bound:
                        score.pop("drifted")     # too close to call within the sketch's error
        return event

    got_a, got_b = read_events(a), read_events(b)
    assert any(e["type"] == ev.WINDOW_CLOSED and e["data"]["count"] > 400 for e in got_a)
    assert len(got_a) == len(got_b)
    for ea, eb in zip(got_a, got_b):
        ea, eb = exact_part(ea), exact_part(eb)
        assert {k: v for k, v in ea.items() if k != "data"} == {k: v for k, v in eb.items() if k != "data"}
        if ea["type"] == ev.WINDOW_CLOSED:   # statistics merged in another order: see assert_same_window
            assert_same_window(eb["data"], ea["data"], ea["id"])
        else:
            assert_close_json(eb["data"], ea["data"], ea["id"])
    ids = [e["id"] for e in read_events(a) if e["type"] == ev.WINDOW_CLOSED]
    assert len(ids) == len(set(ids)) > 0


def test_bad_lines_become_dead_letters(tmp_path, redis_url):
    monitor = write_monitor(tmp_path)
    good = next(doc for _, doc in logger_events(ThesisStream.from_csv(os.path.join(IRIS, "train.csv"), total=1)))
    lines = [
        "this is not json",
        json.dumps(dict(good, id="w1", data={"instances": [[1.0, 2.0]]})),             # wrong width
        json.dumps(dict(good, id="w2", data={"instances": [[1.0, "x", 3.0, 4.0]]})),   # not a number
        json.dumps(dict(good, id="w3", type="com.example.other")),                     # ignored
        json.dumps(good),
    ]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    stats = run_replay(monitor, str(inp), str(out), redis_url=redis_url, progress=None)
    dead = [e["data"] for e in read_events(out) if e["type"] == ev.DEAD_LETTER]
    assert len(dead) == 3 and stats.rejected == 3 and stats.ignored == 1 and stats.instances == 1
    reasons = " | ".join(d["reason"] for d in dead)
    assert "line 1" in reasons and "2 values" in reasons and "'x'" in reasons


def test_thesis_stream_flags_drift_in_drift_stage_only(tmp_path):
    """The issue's experiment: 250,000 requests in 5 stages, 15 s windows, 6 s watermark."""
    total = 250_000
    stream = ThesisStream.from_csv(os.path.join(IRIS, "train.csv"), total=total)
    inp = tmp_path / "thesis.jsonl"
    write_jsonl(str(inp), stream, rate_per_s=177)
    out = tmp_path / "out.jsonl"
    rc = cli_main(["replay", os.path.join(IRIS, "monitor.yaml"), "--input", str(inp), "--output", str(out), "--quiet"])
    assert rc == 0
    events = read_events(out)
    step = 1000 / 177
    start = ev.rfc3339_to_ms(ev.ms_to_rfc3339(1_767_225_600_000))
    labels = stage_names()

    def stage_at(t):
        i = int((t - start) / step)
        return labels[min(i * 5 // total, 4)]

    flagged = {}
    for e in events:
        if e["type"] != ev.DRIFT_MEASURED:
            continue
        w = e["data"]["window"]
        first, last = stage_at(w["startMs"]), stage_at(w["endMs"] - 1)
        if first != last:
            continue  # a window straddling two stages is mixed data
        drifted = any(m["drifted"] for f in e["data"]["features"].values()
                      for k, m in f.items() if k == "jensenShannon")
        flagged.setdefault(first, []).append(drifted)
    assert set(flagged) == set(labels)
    assert all(flagged["drift"]) and len(flagged["drift"]) >= 10
    for stage in ("normal-1", "outliers-1", "outliers-2", "normal-2"):
        assert not any(flagged[stage]), stage
    n_windows = sum(1 for e in events if e["type"] == ev.WINDOW_CLOSED)
    assert n_windows == len({e["id"] for e in events if e["type"] == ev.WINDOW_CLOSED}) >= 90
    assert sum(e["data"]["count"] for e in events if e["type"] == ev.WINDOW_CLOSED) == total
    alerts = [e for e in events if e["type"] == ev.DRIFT_DETECTED]
    assert alerts and all(stage_at(a["data"]["window"]["startMs"]) == "drift" for a in alerts)


def test_categorical_features_and_predictions_through_replay(tmp_path, redis_url):
    """A mixed schema (numerical + categorical inputs, a categorical prediction from responses):
    window statistics, unseen-category outliers and categorical drift, against Counter/numpy."""
    from collections import Counter
    from modelmonitor.core.baseline import build_baseline, write_baseline
    from modelmonitor.core.spec import Feature
    rng = np.random.default_rng(5)
    train = {"x": rng.normal(0, 1, 500).tolist(), "color": rng.choice(["red", "green", "blue"], 500).tolist(),
             "label": rng.choice(["a", "b"], 500).tolist()}
    feats = [Feature("x", "numerical", 0), Feature("color", "categorical", 1), Feature("label", "categorical", 2)]
    write_baseline(build_baseline(train, feats, bins=10), str(tmp_path / "baseline.json"))
    monitor = {"apiVersion": "monitoring.modelmonitor.io/v1alpha1", "kind": "ModelMonitor",
               "metadata": {"name": "mixed"},
               "spec": {"schema": {"features": [{"name": "x", "type": "numerical"},
                                                {"name": "color", "type": "categorical"}],
                                   "predictions": [{"name": "label", "type": "categorical"}]},
                        "window": {"duration": "10s", "watermarkDelay": "1s"},
                        "drift": {"jensenShannon": {"threshold": 0.1, "showAll": True},
                                  "chiSquare": {"threshold": 30, "showAll": True}},
                        "outliers": {"stddev": {"k": 3}, "unseen": True},
                        "baseline": {"file": "baseline.json"}}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(monitor))
    lines, expect = [], {}
    for i in range(300):
        t = 1_000_000 + i * 100
        color = "purple" if i % 50 == 0 else str(rng.choice(["red", "green", "blue"]))
        x = float(rng.normal())
        base = {"specversion": "1.0", "source": "s", "id": f"r{i}", "time": ev.ms_to_rfc3339(t)}
        lines.append(dict(base, type=ev.KSERVE_REQUEST, data={"instances": [{"x": x, "color": color}]}))
        label = "a" if x < 0 else "b"
        lines.append(dict(base, type=ev.KSERVE_RESPONSE, data={"predictions": [label]}))
        w = expect.setdefault(t // 10_000 * 10_000, {"x": [], "color": [], "label": []})
        w["x"].append(x)
        w["color"].append(color)
        w["label"].append(label)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in lines))
    out = tmp_path / "out.jsonl"
    run_replay(str(tmp_path / "m.yaml"), str(inp), str(out), redis_url=redis_url, progress=None, batch=64)
    events = read_events(out)
    windows = {e["data"]["window"]["startMs"]: e["data"] for e in events if e["type"] == ev.WINDOW_CLOSED}
    assert set(windows) == set(expect)
    for start, w in windows.items():
        exp = expect[start]
        assert w["count"] == len(exp["x"])
        assert w["features"]["x"]["mean"] == pytest.approx(np.mean(exp["x"]))
        assert w["features"]["color"]["categories"] == dict(Counter(exp["color"]))
        unseen = sum(c == "purple" for c in exp["color"]) / len(exp["color"])
        assert w["features"]["color"]["unseenShare"] == pytest.approx(unseen)
        assert w["features"]["label"]["categories"] == dict(Counter(exp["label"]))
    outliers = [o for e in events if e["type"] == ev.OUTLIER_DETECTED for o in e["data"]["outliers"]]
    assert sorted(o["value"] for o in outliers if o["rule"] == "unseen") == ["purple"] * 6
    drift = [e["data"] for e in events if e["type"] == ev.DRIFT_MEASURED]
    assert drift and all({"jensenShannon", "chiSquare"} <= set(d["features"]["color"]) for d in drift)
    assert all("label" in d["features"] for d in drift)


def test_replay_of_a_stream_dated_in_the_future_skips_the_clock_rule(tmp_path, redis_url):
    """A replay has no wall clock: recorded times a year ahead of now are not 'clock skew', in
    either engine (the per-event engine once refused them through the live aggregate's rule)."""
    monitor = write_monitor(tmp_path, duration="15s", slide="15s", watermarkDelay="6s")
    year_ms = 365 * 86_400_000
    docs = [dict(doc, time=ev.ms_to_rfc3339(ev.rfc3339_to_ms(doc["time"]) + year_ms))
            for doc in jittered_stream(n=300, seed=5)]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
    outs = {}
    for engine in ("per-event", "columnar"):
        out = tmp_path / f"{engine}.jsonl"
        stats = run_replay(monitor, str(inp), str(out), redis_url=redis_url if engine == "per-event" else None,
                           engine=engine, progress=None)
        events = read_events(out)
        assert not [e for e in events if e["type"] == ev.DEAD_LETTER], engine
        outs[engine] = sorted((e["data"]["window"]["startMs"], e["data"]["count"])
                              for e in events if e["type"] == ev.WINDOW_CLOSED)
        assert stats.instances > 0
    assert outs["per-event"] == outs["columnar"] and outs["columnar"]
