"""The columnar replay writes exactly what the per-event replay (the live handlers, one event at
a time, on a real redis-server) writes: property tests over generated streams with out-of-order,
late, duplicate, malformed, V1/V2, multi-instance, categorical and response events, tumbling
and sliding windows, compared line for line."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from modelmonitor.core import events as ev
from modelmonitor.core.baseline import build_baseline, write_baseline
from modelmonitor.core.spec import Feature
from modelmonitor.tools.replay import run_replay
from reference import assert_close_json, assert_same_window

T0 = 1_767_225_600_000
MINUTE = 60_000


def _monitor(tmp, name: str, *, categorical: bool, duration: int, slide: int, delay: int, late_events: bool,
             segment: dict | None = None) -> str:
    rng = np.random.default_rng(3)
    train = {"x": rng.normal(0, 1, 400).tolist(), "y": rng.normal(5, 2, 400).tolist()}
    features = [Feature("x", "numerical", 0), Feature("y", "numerical", 1)]
    schema = [{"name": "x", "type": "numerical"}, {"name": "y", "type": "numerical"}]
    drift = {"jensenShannon": {"threshold": 0.1, "showAll": True}, "wasserstein": {"threshold": 0.5}}
    if categorical:
        train["color"] = rng.choice(["red", "green", "blue"], 400).tolist()
        train["label"] = rng.choice(["a", "b"], 400).tolist()
        features += [Feature("color", "categorical", 2), Feature("label", "categorical", 3)]
        schema.append({"name": "color", "type": "categorical"})
        predictions = [{"name": "label", "type": "categorical"}]
        drift["chiSquare"] = {"threshold": 5, "showAll": True}
    else:
        train["label"] = rng.integers(0, 3, 400).astype(float).tolist()
        features.append(Feature("label", "numerical", 2))
        predictions = [{"name": "label", "type": "numerical"}]
    baseline = tmp / f"{name}-baseline.json"
    write_baseline(build_baseline(train, features, bins=8), str(baseline))
    spec = {"inferenceService": "svc",
            "schema": {"features": schema, "predictions": predictions},
            "window": {"duration": duration, "slide": slide, "watermarkDelay": delay, "idleTimeout": 30_000},
            "stats": {"percentiles": [25, 50, 75], "iqr": True, "covariance": {}, "correlation": {}},
            "outliers": {"stddev": {"k": 2}, "range": {}, **({"unseen": True} if categorical else {})},
            "drift": drift, "alerts": {"minWindowCount": 2, "consecutiveWindows": 2, "cooldown": 3000},
            "lateEvents": late_events, "baseline": {"file": str(baseline)}}
    if segment is not None:
        spec["segment"] = segment
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "monitoring.modelmonitor.io/v1alpha1", "kind": "ModelMonitor",
                                    "metadata": {"name": name}, "spec": spec}))
    return str(path)


MONITORS = {  # name: (categorical, duration, slide, delay, late events)
    "tumbling": (False, 2000, 2000, 500, True),
    "sliding": (False, 2000, 500, 0, True),
    "mixed": (True, 1500, 500, 300, False),
    "uneven": (True, 1000, 300, 700, True),     # slide does not divide duration
    "segments": (False, 2000, 500, 300, True),
    "segments-meta": (True, 1500, 1500, 300, False),
}
# Segmented monitors: few slots and a short retention, so streams fill, free and overflow them.
SEGMENTS = {"segments": {"extension": "modelversion", "maxSegments": 2, "retention": 2000,
                         "compare": {"candidate": "v2", "reference": "v1"}},
            "segments-meta": {"metadataHeader": "X-Model-Version", "maxSegments": 2, "retention": "3s",
                              "default": "main"}}


@pytest.fixture(scope="module")
def monitors(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitors")
    return {name: _monitor(tmp, name, categorical=c, duration=d, slide=s, delay=w, late_events=le,
                           segment=SEGMENTS.get(name))
            for name, (c, d, s, w, le) in MONITORS.items()}


number = st.one_of(st.floats(-6, 12, allow_nan=False).map(lambda v: round(v, 3)), st.integers(-3, 9),
                   st.floats(-1e6, 1e6, allow_nan=False))


@st.composite
def streams(draw, categorical: bool, segment: dict | None = None):
    n = draw(st.integers(1, 40))
    lines: list[str] = []
    docs: list[dict] = []
    t = T0 + draw(st.integers(0, 3000))
    for i in range(n):
        t += draw(st.integers(0, 400))
        if draw(st.integers(0, 30)) == 0:
            t += 12 * MINUTE                               # beyond the dedup retention
        when = t - draw(st.sampled_from([0, 0, 0, 200, 900, 2500, 6000]))   # out of order / late
        rid = f"r{draw(st.integers(0, n))}"                 # ids repeat: some events are redeliveries
        k = draw(st.integers(1, 3))
        what = draw(st.sampled_from(["v1", "v1", "v1", "v1obj", "v2", "response", "response", "dup", "garbage",
                                     "wrongwidth", "string", "othertype", "othersvc", "notime", "offset", "b64",
                                     "blank", "nodata", "emptyid", "nullsvc", "nulltime", "both", "noinst",
                                     "huge", "resphuge", "respboth"]))
        doc = {"specversion": "1.0", "type": ev.KSERVE_REQUEST, "source": "http://svc/", "id": rid,
               "time": ev.ms_to_rfc3339(when), "inferenceservicename": "svc"}
        rows = [[draw(number), draw(number)] + ([draw(st.sampled_from(["red", "green", "blue", "pink", None]))]
                                                if categorical else []) for _ in range(k)]
        if what == "dup" and docs:
            lines.append(json.dumps(docs[draw(st.integers(0, len(docs) - 1))]))
            continue
        if what == "garbage":
            lines.append(draw(st.sampled_from(['{"type": ', "[1, 2]", "null", '{"type": "x"}', "\ufeff{}"])))
            continue
        if what == "blank":
            lines.append(draw(st.sampled_from(["", "   "])))
            continue
        if what in ("response", "resphuge", "respboth"):
            doc["type"] = ev.KSERVE_RESPONSE
            preds = [draw(st.sampled_from(["a", "b", "c"])) if categorical else float(draw(st.integers(0, 2)))
                     for _ in range(k)]
            doc["data"] = {"predictions": preds}
            if what == "resphuge" and not categorical:
                doc["data"]["predictions"][-1] = 3e100             # beyond the value limit
            elif what == "respboth":
                doc["data"]["outputs"] = [{"name": "o", "shape": [1], "datatype": "FP64", "data": [1.0]}]
        elif what == "v1obj":
            names = ["x", "y", "color"] if categorical else ["x", "y"]
            doc["data"] = {"instances": [dict(zip(names, r)) for r in rows]}
        elif what == "v2":
            cols = list(zip(*rows))
            inputs = [{"name": "x", "shape": [k], "datatype": "FP64", "data": list(cols[0])},
                      {"name": "y", "shape": [k], "datatype": "FP64", "data": list(cols[1])}]
            if categorical:
                inputs.append({"name": "color", "shape": [k], "datatype": "BYTES", "data": list(cols[2])})
            doc["data"] = {"inputs": inputs}
        else:
            doc["data"] = {"instances": rows}
        if what == "wrongwidth":
            doc["data"] = {"instances": [r[:1] for r in rows]}
        elif what == "string":
            doc["data"] = {"instances": [["1.5"] + r[1:] for r in rows]}
        elif what == "othertype":
            doc["type"] = "com.example.other"
        elif what == "othersvc":
            doc["inferenceservicename"] = "someone-else"
        elif what == "notime":
            del doc["time"]
        elif what == "offset":
            doc["time"] = ev.ms_to_rfc3339(when).replace("Z", "+00:00")
        elif what == "b64":
            doc["data_base64"] = base64.b64encode(json.dumps(doc.pop("data")).encode()).decode()
        elif what == "nodata":
            del doc["data"]
        elif what == "emptyid":
            doc["id"] = ""
        elif what == "nullsvc":
            doc["inferenceservicename"] = None
        elif what == "nulltime":
            doc["time"] = None
        elif what == "both":
            doc["data"]["inputs"] = [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]
        elif what == "noinst":
            doc["data"] = {"instances": []}
        if segment is not None:
            value = draw(st.sampled_from([None, "", "v1", "v1", "v2", "v3", "v4", "bad value", 7]))
            if segment.get("extension") and value is not None:
                doc[segment["extension"]] = value
            elif value is not None:
                header = draw(st.sampled_from(["X-Model-Version", "x-model-version"]))
                doc["metadata"] = draw(st.sampled_from([json.dumps({header: [value]})] * 4 + [
                    json.dumps({header: value}), json.dumps({header: [value, "v9"]}), "{not json"]))
        docs.append(doc)
        text = json.dumps(doc)
        if what == "huge" and "instances" in doc["data"]:   # a number beyond float64: not finite once read
            text = re.sub(r'"instances": \[\[[^,\]]+', '"instances": [[1e400', text, count=1)
            doc = json.loads(text)
            docs[-1] = doc
        lines.append(text)
    return lines


def _replay_both(tmp_path, monitor: str, lines: list[str], chunk: int, workers: int = 0):
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    ref, col = tmp_path / "ref.jsonl", tmp_path / "col.jsonl"
    a = run_replay(monitor, str(inp), str(ref), engine="per-event", redis_url=_replay_both.redis_url, progress=None)
    b = run_replay(monitor, str(inp), str(col), engine="columnar", batch=chunk, workers=workers, progress=None)
    return ref.read_bytes().splitlines(), col.read_bytes().splitlines(), a, b


def _assert_same(ref, col, a, b):
    """Line for line the same events; byte for byte, except window.closed data whose statistics
    may be merged in another order (moments to 1e-9, percentiles within the sketch's bound: see
    reference.assert_same_window) and drift scores computed from them (to 1e-9)."""
    assert len(col) == len(ref)
    for i, (x, y) in enumerate(zip(ref, col)):
        if y == x:
            continue
        ex, ey = json.loads(x), json.loads(y)
        assert ex["type"] == ey["type"] and ex["id"] == ey["id"], f"line {i} differs"
        assert {k: v for k, v in ex.items() if k != "data"} == {k: v for k, v in ey.items() if k != "data"}
        if ex["type"] == ev.WINDOW_CLOSED:
            assert_same_window(ey["data"], ex["data"], f"line {i}")
        elif ex["type"] == ev.DEAD_LETTER and ex["data"].get("originalType") == ev.WINDOW_CLOSED:
            # a window drift refused: the window itself as above, the rest exactly
            rest = {k: v for k, v in ex["data"].items() if k != "originalData"}
            assert rest == {k: v for k, v in ey["data"].items() if k != "originalData"}, f"line {i}"
            assert_same_window(json.loads(ey["data"]["originalData"]), json.loads(ex["data"]["originalData"]),
                               f"line {i}")
        else:
            assert_close_json(ey["data"], ex["data"], f"line {i}")
    for key in ("lines", "logger_events", "instances", "ignored", "rejected", "duplicates", "late_requests",
                "outlier_events", "windows", "drift_alerts", "emitted"):
        assert getattr(b, key) == getattr(a, key), key


@pytest.mark.parametrize("name", list(MONITORS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_columnar_equals_per_event(name, data, monitors, tmp_path, redis_url):
    _replay_both.redis_url = redis_url
    lines = data.draw(streams(MONITORS[name][0], SEGMENTS.get(name)))
    chunk = data.draw(st.sampled_from([1, 3, 7, 64]))
    ref, col, a, b = _replay_both(tmp_path, monitors[name], lines, chunk)
    _assert_same(ref, col, a, b)


def test_columnar_equals_per_event_on_a_long_jittered_stream_with_workers(monitors, tmp_path, redis_url):
    """Several chunks decoded by a worker process; thousands of events with every kind of trouble."""
    _replay_both.redis_url = redis_url
    rng = np.random.default_rng(8)
    lines, docs = [], []
    for i in range(3000):
        t = T0 + i * 7 - int(rng.choice([0, 0, 0, 400, 3000, 9000]))
        doc = {"type": ev.KSERVE_REQUEST, "source": "s", "id": f"q{i}", "time": ev.ms_to_rfc3339(t),
               "data": {"instances": np.round(rng.normal([0, 5], [1.5, 3], (int(rng.integers(1, 4)), 2)), 3).tolist()}}
        if i % 3 == 0:
            doc = dict(doc, type=ev.KSERVE_RESPONSE, data={"predictions": [float(rng.integers(0, 3))]})
        docs.append(doc)
        lines.append(json.dumps(doc))
        if rng.random() < 0.1:
            lines.append(json.dumps(docs[int(rng.integers(0, len(docs)))]))
        if rng.random() < 0.01:
            lines.append('{"broken": ')
    ref, col, a, b = _replay_both(tmp_path, monitors["sliding"], lines, 256, workers=1)
    _assert_same(ref, col, a, b)
    assert a.duplicates > 100 and a.late_requests > 50 and a.rejected > 10 and a.windows > 20


def test_columnar_needs_no_redis_and_is_deterministic(monitors, tmp_path):
    lines = [json.dumps({"type": ev.KSERVE_REQUEST, "source": "s", "id": f"i{i}",
                         "time": ev.ms_to_rfc3339(T0 + 100 * i), "data": {"instances": [[i % 7 - 3.0, 5.0]]}})
             for i in range(500)]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    outs = []
    for chunk, workers in ((8192, 0), (13, 0), (50, 1)):
        out = tmp_path / f"out-{chunk}.jsonl"
        stats = run_replay(monitors["tumbling"], str(inp), str(out), batch=chunk, workers=workers, progress=None)
        outs.append(out.read_bytes())
        assert stats.engine == "columnar" and stats.instances == 500
    assert outs[0] == outs[1] == outs[2]
    windows = [json.loads(x) for x in outs[0].splitlines() if b'"io.modelmonitor.window.closed"' in x]
    # 100 ms apart, 2 s windows: 20 instances per window, independent of the engine's own output
    assert [w["data"]["count"] for w in windows] == [20] * 25


# ------------------------------------------------------------------ the columnar helpers alone
@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.integers(0, 253_402_300_799_999).map(ev.ms_to_rfc3339),
    st.text(alphabet="0123456789-:TZ.+ z", min_size=20, max_size=29),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z")), max_size=30))
def test_time_column_agrees_with_the_per_event_parser(values):
    from modelmonitor.tools.replay.timecols import parse_times
    ms, converted = parse_times(values)
    strict = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z")
    for value, got, ok in zip(values, ms.tolist(), converted.tolist()):
        if ok:     # converted: exactly what the per-event parser says
            assert got == ev.rfc3339_to_ms(value) and got >= 0
        elif strict.match(value):   # left to the per-event parser: only what it refuses or puts before 1970
            try:
                assert ev.rfc3339_to_ms(value) < 0
            except ValueError:
                pass


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "instance": st.integers(0, 10**6), "feature": st.text(max_size=6),
    "value": st.one_of(finite, st.none(), st.text(max_size=4), st.floats(), st.integers(-2**70, 2**70)),
    "rule": st.sampled_from(["zscore", "range", "iqr", "unseen", "mahalanobis"]),
    "score": st.one_of(finite, st.floats(), st.floats(1e-6, 1e-3), st.floats(1e14, 1e17)),
    "threshold": finite}), max_size=5))
def test_outlier_records_text_is_json_dumps(hits):
    from modelmonitor.tools.replay.fastjson import hits_text
    assert hits_text(hits) == json.dumps(hits, separators=(",", ":"))


def test_a_reader_of_documents_plugs_in(monitors, tmp_path):
    """Other input formats hand decoded structured-mode documents to the same engine."""
    docs = [{"type": ev.KSERVE_REQUEST, "source": "s", "id": f"d{i}", "time": ev.ms_to_rfc3339(T0 + 150 * i),
             "data": {"instances": [[(i % 9) - 4.0, 5.0 + i % 3]]}} for i in range(300)]
    docs.insert(40, {"type": ev.KSERVE_REQUEST, "source": "s", "id": "bad", "data": {"instances": [[1.0]]}})
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
    from_file, from_docs = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run_replay(monitors["sliding"], str(inp), str(from_file), progress=None)

    def chunks():
        for i in range(0, len(docs), 64):
            yield docs[i:i + 64], 0

    stats = run_replay(monitors["sliding"], "-", str(from_docs), progress=None, chunks=chunks, workers=0)
    assert from_docs.read_bytes() == from_file.read_bytes()
    assert stats.rejected == 1 and stats.instances == 300


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=12).filter(lambda p: sum(p) > 1), st.integers(0, 2**32 - 1))
def test_window_rows_are_added_in_fixed_blocks_whatever_the_chunks(parts, seed):
    """A window holds fewer than BLOCK_ROWS pending rows at any time, and its statistics are the
    same bytes however its rows arrive in parts (independent oracle: NumPy on all rows)."""
    from modelmonitor.stats.window import WindowAggregate
    from modelmonitor.tools.replay.windows import BLOCK_ROWS, _Group
    layout = [Feature("x", "numerical", 0), Feature("y", "numerical", 1), Feature("c", "categorical", 2)]
    rng = np.random.default_rng(seed)
    total = sum(parts)
    x = rng.normal(3, 2, (total, 2))
    c = rng.choice(["a", "b", "c"], total).tolist()
    group = _Group(WindowAggregate(layout))
    at = 0
    for n in parts:
        group.add(x[at:at + n], [c[at:at + n]])
        at += n
        assert group.pending < BLOCK_ROWS
        assert sum(len(p) for p in group.numeric) == group.pending
    got = group.done().finalize()
    whole = _Group(WindowAggregate(layout))
    whole.add(x, [c])
    want = whole.done().finalize()
    for rec in (got, want):
        rec["features"]["x"].pop("percentiles"), rec["features"]["y"].pop("percentiles")
        for f in ("x", "y"):
            rec["features"][f].pop("iqr"), rec["features"][f].pop("quantileSketch", None)
    assert json.dumps(got) == json.dumps(want)
    assert got["count"] == total and got["features"]["c"]["categories"] == dict(zip(*np.unique(c, return_counts=True)))
    assert np.isclose(got["features"]["x"]["mean"], x[:, 0].mean(), rtol=1e-12)
    assert np.isclose(got["features"]["y"]["variance"], x[:, 1].var(ddof=1), rtol=1e-9)


class _Colliding:
    """A dedup identity whose hash collides with others on purpose (the exact path must decide)."""

    def __init__(self, v):
        self.v = v

    def __hash__(self):
        return self.v % 3

    def __eq__(self, other):
        return self.v == other.v


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 25), st.integers(0, 2)), min_size=1, max_size=80),
       st.integers(1, 4), st.lists(st.integers(1, 20), min_size=1, max_size=10), st.booleans())
def test_chunk_dedup_equals_one_record_at_a_time(records, buckets, cuts, colliding):
    """Hash check plus exact fallback == the store's rule applied record by record (brute force):
    a key is a duplicate if accepted in a bucket no older than ``buckets - 1`` before its own."""
    from modelmonitor.tools.replay.dedup import Deduplicator
    keys, numbers, b = [], [], 0
    for v, step in records:
        b += step
        keys.append(_Colliding(v) if colliding else ("t", "s", f"id{v}"))
        numbers.append(b)
    want, accepted = [], []
    for key, number in zip(keys, numbers):
        is_dup = any(k == key and sb >= number - buckets + 1 for k, sb in accepted)
        want.append(is_dup)
        if not is_dup:
            accepted.append((key, number))
    dedup, got, at, i = Deduplicator(buckets), [], 0, 0
    while at < len(keys):
        size = cuts[i % len(cuts)]
        i += 1
        got += dedup.duplicates(keys[at:at + size], np.asarray(numbers[at:at + size], dtype=np.int64)).tolist()
        at += size
    assert got == want


def test_progress_line_shows_rate_share_and_eta_and_stays_quiet_without_a_stream():
    import io
    from modelmonitor.tools.replay.progress import Progress
    shown = io.StringIO()
    bar = Progress(shown, total_bytes=1000, after=0.0, every=0.0)
    bar.update(250, 12_345, 3)
    bar.close()
    text = shown.getvalue()
    assert re.fullmatch(r"\r +12,345 instances +[\d,]+/s +3 windows +25\.0% +ETA \d+:\d\d\n", text), text
    quiet = Progress(None, total_bytes=1000, after=0.0, every=0.0)
    quiet.update(500, 1, 0)
    quiet.close()            # nothing to write to, nothing raised
    late = io.StringIO()
    slow_start = Progress(late, total_bytes=1000, after=3600.0)
    slow_start.update(999, 5, 0)
    slow_start.close()
    assert late.getvalue() == ""   # a short replay prints nothing
