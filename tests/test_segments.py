"""Segments (spec.segment): windows, statistics, drift and alerts per segment of the traffic.

Oracles: a stream with two interleaved segments gives, per segment, the windows (and drift
measurements and alerts) of two separate replays of the split streams, and statistics equal to
NumPy's on the segment's raw rows; excess segments beyond maxSegments are counted exactly (brute
force over the stream); the Redis admission script and the in-process rule agree on random
sequences; the segment's sources (extension, KServe metadata header) and the spec's errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from scipy import stats

from modelmonitor.core import events as ev
from modelmonitor.core.baseline import build_baseline, write_baseline
from modelmonitor.core.segments import SegmentAdmission, segment_of
from modelmonitor.core.spec import Feature, SegmentSpec, SpecError, parse_monitor
from modelmonitor.handlers import Monitor, Rejected, ingest
from modelmonitor.runtime import metrics
from modelmonitor.tools.replay import run_replay
from reference import assert_close_json, assert_same_window
from state.store import WindowStore

T0 = 1_767_225_600_000
WINDOW = 2000
ENGINES = ("per-event", "columnar")


def _monitor(tmp, *, segment: dict, name: str = "seg", drift: dict | None = None) -> str:
    rng = np.random.default_rng(7)
    baseline = tmp / "baseline.json"
    if not baseline.exists():
        train = {"x": rng.normal(0, 1, 500).tolist(), "y": rng.normal(5, 2, 500).tolist()}
        write_baseline(build_baseline(train, [Feature("x", "numerical", 0), Feature("y", "numerical", 1)], bins=8),
                       str(baseline))
    spec = {"inferenceService": "svc", "schema": {"features": ["x", "y"]},
            "window": {"duration": WINDOW, "watermarkDelay": 400},
            "outliers": {"stddev": {"k": 3}},
            "drift": drift or {"jensenShannon": {"threshold": 0.2}, "wasserstein": {"threshold": 1.0}},
            "alerts": {"minWindowCount": 3, "consecutiveWindows": 2, "cooldown": 0},
            "segment": segment, "baseline": {"file": str(baseline)}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "monitoring.modelmonitor.io/v1alpha1", "kind": "ModelMonitor",
                                    "metadata": {"name": name}, "spec": spec}))
    return str(path)


def _request(i: int, t: int, rows, **attrs) -> dict:
    doc = {"specversion": "1.0", "type": ev.KSERVE_REQUEST, "source": "http://svc/", "id": f"r{i}",
           "time": ev.ms_to_rfc3339(t), "inferenceservicename": "svc", "data": {"instances": rows}}
    doc.update(attrs)
    return doc


def _replay(tmp, monitor: str, docs: list[dict], engine: str, redis_url: str, tag: str) -> list[dict]:
    inp, out = tmp / f"{tag}-in.jsonl", tmp / f"{tag}-{engine}.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
    run_replay(monitor, str(inp), str(out), engine=engine, redis_url=redis_url if engine == "per-event" else None,
               progress=None)
    return [json.loads(line) for line in out.read_text().splitlines()]


def _two_segment_stream(seed: int) -> tuple[list[dict], dict[str, list[tuple[int, list]]]]:
    """v1 (the current model) and v2 (a canary whose inputs drift from the 5th window on),
    interleaved, in time order with some disorder inside the watermark delay."""
    rng = np.random.default_rng(seed)
    docs, rows_of = [], {"v1": [], "v2": []}
    t = T0
    for i in range(220):
        t += int(rng.integers(20, 90))
        when = t - int(rng.integers(0, 300))            # out of order, never late (delay 400)
        seg = "v1" if rng.random() < 0.6 else "v2"
        shift = 3.0 if seg == "v2" and when >= T0 + 4 * WINDOW else 0.0
        rows = [[round(float(rng.normal(shift, 1)), 6), round(float(rng.normal(5 + shift, 2)), 6)]
                for _ in range(int(rng.integers(1, 4)))]
        docs.append(_request(i, when, rows, modelversion=seg))
        rows_of[seg].append((when, rows))
    return docs, rows_of


def _by_segment(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in events:
        if e["type"] in (ev.WINDOW_CLOSED, ev.DRIFT_MEASURED, ev.DRIFT_DETECTED):
            out.setdefault(e["data"]["segment"], []).append(e)
    return out


# Fields of the monitor's own progress (shared by its segments: one watermark per monitor), which
# a replay of one segment alone reaches at other moments; everything else must be equal.
MONITOR_CLOCK = {"watermarkMs", "closedAtMs", "measuredAtMs", "late"}


@pytest.mark.parametrize("engine", ENGINES)
def test_two_interleaved_segments_give_the_windows_of_two_separate_replays(engine, tmp_path, redis_url):
    monitor = _monitor(tmp_path, segment={"extension": "modelversion"})
    docs, rows_of = _two_segment_stream(11)
    together = _by_segment(_replay(tmp_path, monitor, docs, engine, redis_url, "all"))
    assert set(together) == {"v1", "v2"}
    for seg in ("v1", "v2"):
        alone = _replay(tmp_path, monitor, [d for d in docs if d["modelversion"] == seg], engine, redis_url, seg)
        alone = [e for e in alone if e["type"] in (ev.WINDOW_CLOSED, ev.DRIFT_MEASURED, ev.DRIFT_DETECTED)]
        got = together[seg]
        assert [e["id"] for e in got] == [e["id"] for e in alone]
        for g, a in zip(got, alone):
            assert g["type"] == a["type"] and g["data"]["segment"] == seg
            gd = {k: v for k, v in g["data"].items() if k not in MONITOR_CLOCK}
            ad = {k: v for k, v in a["data"].items() if k not in MONITOR_CLOCK}
            if g["type"] == ev.WINDOW_CLOSED:
                assert_same_window(gd, ad, g["id"])
            else:
                assert_close_json(gd, ad, g["id"])
        # Independent oracle: each window's count and moments from the segment's raw rows.
        windows = [e for e in got if e["type"] == ev.WINDOW_CLOSED]
        for w in windows:
            start, end = w["data"]["window"]["startMs"], w["data"]["window"]["endMs"]
            x = np.array([r for t, rows in rows_of[seg] if start <= t < end for r in rows])
            assert w["data"]["count"] == len(x)
            assert w["data"]["features"]["x"]["mean"] == pytest.approx(x[:, 0].mean(), rel=1e-9, abs=1e-12)
            assert w["data"]["features"]["y"]["max"] == x[:, 1].max()
        assert sum(w["data"]["count"] for w in windows) == sum(len(rows) for _, rows in rows_of[seg])
    # The alert state is per segment: the canary's drift alerts, the current model's stay quiet.
    alerts = {seg: [e for e in events if e["type"] == ev.DRIFT_DETECTED] for seg, events in together.items()}
    assert alerts["v2"] and all(e["id"].split("/")[2].endswith("@v2") for e in alerts["v2"])
    assert not alerts["v1"]


@pytest.mark.parametrize("engine", ENGINES)
def test_segments_beyond_max_segments_are_counted_not_merged(engine, tmp_path, redis_url):
    monitor = _monitor(tmp_path, segment={"metadataHeader": "X-Model-Version", "maxSegments": 2,
                                          "default": "stable"})
    rng = np.random.default_rng(5)
    docs, expected = [], {}
    order = ["a", "b", None, "c", "a", "b"]       # a and b take the two slots; stable (no value) and c do not
    for i in range(120):
        t = T0 + i * 40
        value = order[i % len(order)]
        rows = [[float(rng.normal()), float(rng.normal(5, 2))] for _ in range(1 + i % 3)]
        attrs = {}
        if value is not None:   # KServe's metadata: a JSON object of header -> list of values
            attrs["metadata"] = json.dumps({"x-model-version": [value]})
        docs.append(_request(i, t, rows, **attrs))
        start = t // WINDOW * WINDOW
        if value not in ("a", "b"):
            counts = expected.setdefault(start, {"requests": 0, "instances": 0, "segments": set()})
            counts["requests"] += 1
            counts["instances"] += len(rows)
            counts["segments"].add(value or "stable")
        else:
            expected.setdefault(start, {"requests": 0, "instances": 0, "segments": set()})
    before = metrics.SEGMENT_EXCESS._value.get()
    events = _replay(tmp_path, monitor, docs, engine, redis_url, "excess")
    excess = {e["data"]["window"]["startMs"]: e["data"] for e in events if e["type"] == ev.SEGMENTS_EXCESS}
    assert {s: {"requests": d["requests"], "instances": d["instances"], "segments": set(d["segments"])}
            for s, d in excess.items()} == expected
    assert all(d["maxSegments"] == 2 for d in excess.values())
    windows = [e for e in events if e["type"] == ev.WINDOW_CLOSED]
    assert {e["data"]["segment"] for e in windows} == {"a", "b"}
    assert sum(e["data"]["count"] for e in windows) + sum(d["instances"] for d in excess.values()) \
        == sum(len(d["data"]["instances"]) for d in docs)
    if engine == "per-event":    # the live aggregate's counter
        assert metrics.SEGMENT_EXCESS._value.get() - before == sum(d["instances"] for d in excess.values())


def test_events_without_a_value_go_to_the_default_segment(tmp_path, redis_url):
    monitor = _monitor(tmp_path, segment={"extension": "modelversion"})
    docs = [_request(i, T0 + i * 100, [[0.1 * i, 5.0]]) for i in range(10)]
    docs[3]["modelversion"] = ""                    # empty is no value
    for engine in ENGINES:
        events = _replay(tmp_path, monitor, docs, engine, redis_url, f"default-{engine}")
        windows = [e for e in events if e["type"] == ev.WINDOW_CLOSED]
        assert [e["data"]["segment"] for e in windows] == ["default"]
        assert windows[0]["id"].endswith("@default") and windows[0]["data"]["count"] == 10


def test_a_bad_segment_value_is_refused_with_a_dead_letter(tmp_path):
    mon = Monitor.from_files(_monitor(tmp_path, segment={"extension": "modelversion"}))
    good = ev.from_json_doc(_request(1, T0, [[1.0, 2.0]], modelversion="v1.2_rc-3"))
    assert ingest(mon, good, T0).data["segment"] == "v1.2_rc-3"
    for bad in ("a b", "x" * 64, "-lead", "a:b", "v2@x", "é"):
        event = ev.from_json_doc(_request(2, T0, [[1.0, 2.0]], modelversion=bad))
        with pytest.raises(Rejected, match="is not a segment name"):
            ingest(mon, event, T0)


def test_the_segment_from_an_extension_or_a_metadata_header():
    ext = SegmentSpec(extension="modelversion")
    assert segment_of(ext, {"modelversion": "v2"}) == "v2"
    assert segment_of(ext, {"modelversion": 3}) == "3"         # an integer extension (structured mode)
    assert segment_of(ext, {}) == "default"
    hdr = SegmentSpec(metadata_header="X-Model-Version", default="main")
    assert segment_of(hdr, {"metadata": '{"X-Model-Version": ["v2"]}'}) == "v2"
    assert segment_of(hdr, {"metadata": {"x-model-version": "v3"}}) == "v3"      # structured: an object
    assert segment_of(hdr, {"metadata": '{"X-Model-Version": ["v2", "v2"]}'}) == "v2"
    assert segment_of(hdr, {"metadata": '{"X-Model-Version": []}'}) == "main"
    assert segment_of(hdr, {"metadata": '{"X-Tenant": ["t1"]}'}) == "main"
    assert segment_of(hdr, {}) == "main"
    for metadata, words in (('{"X-Model-Version": ["v1", "v2"]}', "several values"), ("not json", "not JSON"),
                            ("[1]", "not a JSON object"), ('{"X-Model-Version": [1]}', "list of strings"),
                            ('{"X-Model-Version": ["a/b"]}', "not a segment name")):
        with pytest.raises(ValueError, match=words):
            segment_of(hdr, {"metadata": metadata})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 20_000)), max_size=40),
       max_segments=st.integers(1, 4), retention=st.sampled_from([1, 2000, 5000, 10**9]),
       batch=st.integers(1, 7))
def test_redis_admission_is_the_in_process_rule(seq, max_segments, retention, batch, redis_client):
    store = WindowStore(redis_client, "adm", duration_ms=1000, slide_ms=1000, delay_ms=0)
    redis_client.delete(store.prefix + ":segments")
    rule = SegmentAdmission(max_segments, retention)
    got = []
    for i in range(0, len(seq), batch):
        got += store.admit_segments(seq[i:i + batch], max_segments, retention)
    assert got == rule.admit(seq)
    # brute force of the documented rule
    newest: dict = {}
    want = []
    for name, t in seq:
        if name not in newest and len(newest) >= max_segments:
            top = max(max(newest.values()), t)
            newest = {n: v for n, v in newest.items() if v >= top - retention}
        ok = name in newest or len(newest) < max_segments
        if ok:
            newest[name] = max(newest.get(name, t), t)
        want.append(ok)
    assert got == want


def _spec(segment) -> dict:
    return {"metadata": {"name": "m"}, "spec": {"schema": {"features": ["x"]}, "window": {"duration": "15s"},
                                                "segment": segment}}


@pytest.mark.parametrize("segment, field, words", [
    ({}, "spec.segment", "exactly one of extension"),
    ({"extension": "v", "metadataHeader": "X"}, "spec.segment", "exactly one of extension"),
    ({"extension": "Model-Version"}, "spec.segment.extension", "lower-case letters or digits"),
    ({"extension": "id"}, "spec.segment.extension", "every logger event has"),
    ({"metadataHeader": "X Model"}, "spec.segment.metadataHeader", "not an HTTP header name"),
    ({"extension": "v", "maxSegments": 0}, "spec.segment.maxSegments", "from 1 to 100"),
    ({"extension": "v", "maxSegments": 101}, "spec.segment.maxSegments", "from 1 to 100"),
    ({"extension": "v", "maxSegments": True}, "spec.segment.maxSegments", "from 1 to 100"),
    ({"extension": "v", "default": "a b"}, "spec.segment.default", "not a segment name"),
    ({"extension": "v", "retention": "10s"}, "spec.segment.retention", "shorter than spec.window.duration"),
    ({"extension": "v", "retention": "soon"}, "spec.segment.retention", "not a duration"),
    ({"extension": "v", "max": 3}, "spec.segment.max", "unknown field"),
    ("modelversion", "spec.segment", "expected {extension"),
])
def test_spec_errors_name_the_field(segment, field, words):
    with pytest.raises(SpecError) as caught:
        parse_monitor(_spec(segment))
    assert caught.value.field == field and words in caught.value.reason


def test_spec_defaults_and_an_unsegmented_monitor_is_unchanged():
    seg = parse_monitor(_spec({"extension": "modelversion"})).segment
    assert (seg.extension, seg.max_segments, seg.default, seg.retention_ms) == ("modelversion", 10, "default", 86_400_000)
    plain = parse_monitor({"metadata": {"name": "m"}, "spec": {"schema": {"features": ["x"]}}})
    assert plain.segment is None


def test_validate_says_how_the_monitor_is_segmented_and_refuses_a_bad_segment_in_one_line(tmp_path, capsys):
    from modelmonitor.tools.cli import main
    doc = _spec({"metadataHeader": "X-Model-Version", "maxSegments": 4, "retention": "2h"})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "per segment of metadata header 'X-Model-Version': at most 4, default 'default'" in out
    assert "freed after 2h" in out
    doc["spec"]["segment"]["maxSegments"] = 400
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "spec.segment.maxSegments: expected an integer from 1 to 100, got 400" in err



def _js_base2(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


def _smoothed_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[underflow, inner bins (the last closed), overflow] smoothed with 1e-6 (docs/drift.md)."""
    inner, _ = np.histogram(x, bins=edges)
    c = np.concatenate([[np.sum(x < edges[0])], inner, [np.sum(x > edges[-1])]]).astype(float)
    return (c + 1e-6) / (c.sum() + c.size * 1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_candidate_segment_compared_with_the_reference_matches_scipy_on_the_raw_rows(engine, tmp_path, redis_url):
    drift = {"jensenShannon": {"threshold": 0.2}, "wasserstein": {"threshold": 1.0},
             "kolmogorovSmirnov": {"threshold": 0.3}, "meanShift": {"threshold": 2.0}}
    monitor = _monitor(tmp_path, segment={"extension": "modelversion", "compare": {"candidate": "v2", "reference": "v1"}},
                       drift=drift)
    docs, rows_of = _two_segment_stream(11)
    events = _replay(tmp_path, monitor, docs, engine, redis_url, "compare")
    edges = np.asarray(json.loads((tmp_path / "baseline.json").read_text())["features"]["x"]["edges"])
    compared = [e for e in events if e["type"] == ev.SEGMENTS_COMPARED]
    both = {w["data"]["window"]["startMs"] for w in events if w["type"] == ev.WINDOW_CLOSED and w["data"]["segment"] == "v1"} \
        & {w["data"]["window"]["startMs"] for w in events if w["type"] == ev.WINDOW_CLOSED and w["data"]["segment"] == "v2"}
    assert sorted(e["data"]["window"]["startMs"] for e in compared) == sorted(both) and len(both) >= 6
    drifted_windows = 0
    for e in compared:
        d = e["data"]
        start, end = d["window"]["startMs"], d["window"]["endMs"]
        assert e["id"] == f"seg/{start}/{end}/compare" and (d["candidate"], d["reference"]) == ("v2", "v1")
        cand = np.array([r for t, rows in rows_of["v2"] if start <= t < end for r in rows])
        ref = np.array([r for t, rows in rows_of["v1"] if start <= t < end for r in rows])
        assert (d["candidateCount"], d["referenceCount"]) == (len(cand), len(ref))
        for j, name in enumerate(("x", "y")):
            scores = d["features"][name]
            assert set(scores) == {"jensenShannon", "wasserstein", "kolmogorovSmirnov"}   # no window rule
            w1, ks = scores["wasserstein"], scores["kolmogorovSmirnov"]
            assert abs(w1["value"] - stats.wasserstein_distance(cand[:, j], ref[:, j])) <= w1["bound"] + 1e-9
            assert abs(ks["value"] - stats.ks_2samp(cand[:, j], ref[:, j]).statistic) <= ks["bound"] + 1e-9
            if name == "x":
                want = _js_base2(_smoothed_counts(cand[:, 0], edges), _smoothed_counts(ref[:, 0], edges))
                assert scores["jensenShannon"]["value"] == pytest.approx(want, rel=1e-9)
            for score in scores.values():
                assert score["drifted"] == (score["value"] > score["threshold"])
        drifted_windows += d["features"]["x"]["wasserstein"]["drifted"]
    # the canary's inputs move by 3 from the 5th window: the comparison sees it there, not before
    early = [e for e in compared if e["data"]["window"]["endMs"] <= T0 + 4 * WINDOW]
    assert drifted_windows == len(compared) - len(early) >= 2
    assert not any(e["data"]["features"]["x"]["wasserstein"]["drifted"] for e in early)


def test_compare_is_validated():
    for compare, field, words in (({"candidate": "v1", "reference": "v1"}, "spec.segment.compare.reference", "differ"),
                                  ({"candidate": "v1"}, "spec.segment.compare", "expected {candidate"),
                                  ({"candidate": "v 1", "reference": "v1"}, "spec.segment.compare.candidate",
                                   "not a segment name")):
        with pytest.raises(SpecError) as caught:
            parse_monitor(_spec({"extension": "v", "compare": compare}))
        assert caught.value.field == field and words in caught.value.reason
    with pytest.raises(SpecError) as caught:          # nothing to compare with: no drift detector
        parse_monitor(_spec({"extension": "v", "compare": {"candidate": "a", "reference": "b"}}))
    assert caught.value.field == "spec.segment.compare" and "needs a drift detector" in caught.value.reason



def test_a_comparison_that_cannot_be_computed_says_why_and_the_window_still_closes(tmp_path):
    from modelmonitor.handlers.segment_windows import compared_data
    mon = Monitor.from_files(_monitor(tmp_path, segment={"extension": "v", "compare": {"candidate": "b", "reference": "a"}}))
    hist = {"edges": [0.0, 1.0], "counts": [0, 2, 0]}
    records = [["w", {"segment": "a", "count": 2, "features": {"x": {"count": 2, "histogram": hist}}}],
               ["w", {"segment": "b", "count": 2, "features": {"x": {"count": 2, "histogram": dict(hist, edges=[0.0, 2.0])}}}]]
    out = compared_data(mon, records, {"startMs": 0, "endMs": 1}, 5)
    assert out["features"] == {} and "different bins" in out["error"]
    assert compared_data(mon, records[:1], {"startMs": 0, "endMs": 1}, 5) is None      # the candidate is absent
