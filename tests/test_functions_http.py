"""The four functions over HTTP, each served by func-python (hypercorn) in its own process.

Every function runs as `python -m modelmonitor.runtime.serve --role ROLE` (a `FunctionProcess`),
configured only through its environment (MODELMONITOR_ROLE, MODELMONITOR_CONFIG,
MODELMONITOR_BASELINE, REDIS_URL, K_SINK), exactly as on Knative. K_SINK points at a small
recording HTTP server in this process, so the events a function POSTs beyond its reply (dead
letters, window.closed, drift.detected) can be checked. State lives in a private, durable
redis-server owned by this module, which one test stops and restarts. Requests are built with
the official CloudEvents SDK (binary and structured mode).
"""
from __future__ import annotations

import csv
import json
import re
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from modelmonitor.runtime.wire import to_binary, to_structured
from modelmonitor.core.events import Event
from modelmonitor.runtime.wire import from_http

from event_sink import EventSink
from live_stack import wait_until
from modelmonitor.core import events as ev
from modelmonitor.local.procs import FunctionProcess, start_all, stop_all
from modelmonitor.local.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
IRIS = ROOT / "examples" / "iris"
BASELINE = IRIS / "baseline.json"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LOGGER_SOURCE = "http://localhost:9081/"
WINDOW_MS = 2000          # the test monitor: 2 s tumbling windows,
DELAY_MS = 500            # 0.5 s watermark delay,
IDLE_MS = 1000            # 1 s idle timeout


# ---------------------------------------------------------------------------------------------
# a recording HTTP server (the functions' K_SINK)
# ---------------------------------------------------------------------------------------------

class Recorder(EventSink):
    """Records every Event POSTed to it and answers 202; while `refuse[type]` is
    positive, events of that type are answered 500 instead."""

    def __init__(self):
        self.refuse: dict[str, int] = {}
        super().__init__()

    def answer(self, event):
        if self.refuse.get(event["type"], 0) > 0:
            self.refuse[event["type"]] -= 1
            return 500, b""
        return 202, b""


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sink():
    rec = Recorder()
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory):
    server = RedisServer(directory=str(tmp_path_factory.mktemp("redis")), durable=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def funcs(tmp_path_factory, sink, redis_srv):
    tmp = tmp_path_factory.mktemp("functions")
    doc = yaml.safe_load((IRIS / "monitor.yaml").read_text())
    doc["spec"]["baseline"] = {"file": str(BASELINE)}
    doc["spec"]["window"] = {"duration": WINDOW_MS, "slide": WINDOW_MS, "watermarkDelay": DELAY_MS,
                             "idleTimeout": IDLE_MS}
    monitor = tmp / "monitor.yaml"
    monitor.write_text(yaml.safe_dump(doc))
    procs = function_processes(monitor, ("ingest", "outlier", "aggregate", "drift"), redis_srv.url, sink.url, tmp)
    try:
        start_all(procs.values())
        yield procs
    finally:
        stop_all(procs.values())


def function_processes(monitor: Path, roles, redis_url: str, sink_url: str, tmp: Path, threads: int = 8) -> dict:
    """One func-python process per role, configured only through its environment."""
    procs = {}
    for role in roles:
        env = {"MODELMONITOR_ROLE": role, "MODELMONITOR_CONFIG": str(monitor),
               "MODELMONITOR_BASELINE": str(BASELINE), "REDIS_URL": redis_url, "K_SINK": sink_url}
        procs[role] = FunctionProcess(f"fn-{role}", ["--role", role, "--threads", str(threads)], env=env,
                                      log_file=tmp / f"{role}.log")
    return procs


_bases = iter(range(0, 10**6))


def next_base() -> int:
    """A window-aligned event time an hour or more in the past, later than any earlier call:
    the aggregate tests share one monitor (and so one watermark) in Redis."""
    first = (time.time_ns() // 1_000_000 - 3 * 3600 * 1000) // 60_000 * 60_000
    return first + next(_bases) * 10 * 60_000


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def now_ms() -> int:
    return time.time_ns() // 1_000_000


def logger_event(data, *, response=False, id_=None, time_ms=None, isvc="iris", **extensions) -> Event:
    """A KServe payload-logger event as the logger sends it (binary mode on the wire)."""
    attrs = {"type": ev.KSERVE_RESPONSE if response else ev.KSERVE_REQUEST, "source": LOGGER_SOURCE,
             "id": id_ or str(uuid.uuid4()), "datacontenttype": "application/json",
             "inferenceservicename": isvc, "namespace": "default", "component": "predictor",
             "endpoint": ""}
    if time_ms is not False:
        attrs["time"] = ev.ms_to_rfc3339(now_ms() - 1000 if time_ms is None else time_ms)
    attrs.update(extensions)
    return Event(attrs, data)


def post(url: str, event: Event, structured: bool = False, body: bytes | None = None) -> requests.Response:
    headers, data = (to_structured if structured else to_binary)(event)
    return requests.post(url, data=data if body is None else body, headers=headers, timeout=15)


def reply_event(resp: requests.Response) -> Event:
    """The reply of a 200 answer, which must be in binary mode (ce-* headers, JSON body)."""
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("ce-specversion") == "1.0", dict(resp.headers)
    assert resp.headers["Content-Type"].startswith("application/json")
    return from_http(dict(resp.headers), resp.content)


def instances_event(t: int, rows, request_id: str | None = None, kind: str = "request") -> Event:
    """An io.modelmonitor.inference.instances event as ingest emits it (docs/events.md)."""
    request_id = request_id or str(uuid.uuid4())
    data = {"monitor": "iris", "requestId": request_id, "kind": kind, "eventTime": ev.ms_to_rfc3339(t),
            "eventTimeMs": t, "features": FEATURES if kind == "request" else ["prediction"],
            "instances": rows, "loggerType": ev.KSERVE_REQUEST, "loggerSource": LOGGER_SOURCE}
    return Event({"type": ev.INSTANCES, "source": "/modelmonitor/default/iris/ingest",
                       "id": f"iris/{kind}/{request_id}/0123456789abcdef",
                       "datacontenttype": "application/json", "monitor": "iris"}, data)


def ping_event() -> Event:
    """What the PingSource `iris-tick` sends."""
    return Event({"type": ev.PING, "source": "/apis/v1/namespaces/default/pingsources/iris-tick",
                       "id": str(uuid.uuid4()), "datacontenttype": "application/json", "monitor": "iris"},
                      {"monitor": "iris"})


def windows_closed(sink: Recorder, start_ms: int) -> list[Event]:
    return [e for e in sink.of_type(ev.WINDOW_CLOSED) if e.data["window"]["startMs"] == start_ms]


def metric_value(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if m.group(1) == name and all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def rejected_for(sink: Recorder, original_id) -> list[Event]:
    return [e for e in sink.of_type(ev.DEAD_LETTER) if e.data["originalId"] == original_id]


def train_rows() -> np.ndarray:
    with open(IRIS / "train.csv", newline="") as fh:
        return np.asarray([[float(r[f]) for f in FEATURES] for r in csv.DictReader(fh)])


def baseline_doc() -> dict:
    return json.loads(BASELINE.read_text())


# ---------------------------------------------------------------------------------------------
# every function: health and metrics
# ---------------------------------------------------------------------------------------------

def test_health_endpoints_answer_200(funcs):
    for role, proc in funcs.items():
        for path in ("health/liveness", "health/readiness"):
            resp = requests.get(proc.url + path, timeout=5)
            assert resp.status_code == 200, (role, path, resp.text)


def test_metrics_port_serves_prometheus_metrics(funcs):
    bad = logger_event({"instances": [[1.0, 2.0]]})
    assert post(funcs["ingest"].url, bad).status_code == 400
    assert post(funcs["ingest"].url, logger_event({"instances": [[5.1, 3.5, 1.4, 0.2]]})).status_code == 200
    # func-python hands every path but the health probes to the function, as CloudEvents:
    assert requests.get(funcs["ingest"].url, timeout=5).status_code == 400
    resp = requests.get(funcs["ingest"].metrics_url, timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE modelmonitor_events_in_total counter" in resp.text
    assert metric_value(resp.text, "modelmonitor_events_in_total", role="ingest", outcome="rejected") >= 1
    assert metric_value(resp.text, "modelmonitor_events_in_total", role="ingest", outcome="ok") >= 1
    # Each function process exposes its own registry.
    agg = requests.get(funcs["aggregate"].metrics_url, timeout=5)
    assert agg.status_code == 200 and "modelmonitor_events_in_total" in agg.text


# ---------------------------------------------------------------------------------------------
# ingest
# ---------------------------------------------------------------------------------------------

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
COLUMNS = [list(c) for c in zip(*ROWS)]

ACCEPTED = {
    "v1-instances-lists": (False, {"instances": ROWS}, ROWS),
    "v1-instances-objects": (False, {"instances": [
        {"petal_width": 0.2, "sepal_length": 5.1, "petal_length": 1.4, "sepal_width": 3.5},
        {"sepal_width": 3.0, "petal_width": 2.3, "sepal_length": 6.7, "petal_length": 5.2}]}, ROWS),
    "v1-inputs": (False, {"inputs": ROWS}, ROWS),
    "v2-tensor-flat": (False, {"id": "r1", "inputs": [
        {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": ROWS[0] + ROWS[1]}]}, ROWS),
    "v2-tensor-nested": (False, {"inputs": [
        {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]}, ROWS),
    "v2-per-feature": (False, {"inputs": [
        {"name": name, "shape": [2], "datatype": "FP32", "data": COLUMNS[i]}
        for i, name in reversed(list(enumerate(FEATURES)))]}, ROWS),
    "v2-per-feature-nested": (False, {"inputs": [
        {"name": name, "shape": [2, 1], "datatype": "FP64", "data": [[v] for v in COLUMNS[i]]}
        for i, name in enumerate(FEATURES)]}, ROWS),
    "v1-predictions": (True, {"predictions": [0, 2]}, [[0.0], [2.0]]),
    "v2-outputs": (True, {"model_name": "iris", "id": "r1", "outputs": [
        {"name": "predict", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}, [[1.0], [2.0]]),
    "v2-outputs-nested": (True, {"model_name": "iris", "id": "r1", "outputs": [
        {"name": "prediction", "shape": [2, 1], "datatype": "INT64", "data": [[2], [0]]}]}, [[2.0], [0.0]]),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_ingest_turns_logger_events_into_instances_in_both_content_modes(funcs, sink, case):
    response, payload, rows = ACCEPTED[case]
    t = now_ms() - 2500
    logger = logger_event(payload, response=response, time_ms=t)
    replies = []
    for structured in (False, True):
        resp = post(funcs["ingest"].url, logger, structured=structured)
        replies.append(reply_event(resp))
    binary, structured = replies
    kind = "response" if response else "request"
    assert binary["type"] == ev.INSTANCES
    assert binary["source"] == "/modelmonitor/default/iris/ingest"
    assert binary["monitor"] == "iris"
    assert binary["datacontenttype"] == "application/json"
    assert binary["id"].startswith(f"iris/{kind}/{logger['id']}/")
    data = binary.data
    assert data["monitor"] == "iris" and data["requestId"] == logger["id"] and data["kind"] == kind
    assert data["eventTimeMs"] == t and data["eventTime"] == ev.ms_to_rfc3339(t)
    assert data["features"] == (["prediction"] if response else FEATURES)
    assert np.shape(data["instances"]) == np.shape(rows)
    np.testing.assert_allclose(data["instances"], rows, rtol=1e-6)
    # The same logger event in structured mode is the same event: same id, same data.
    assert structured["id"] == binary["id"] and structured.data == data


def test_request_and_response_sharing_a_logger_id_get_distinct_ids(funcs):
    rid = str(uuid.uuid4())
    req = reply_event(post(funcs["ingest"].url, logger_event({"instances": ROWS}, id_=rid)))
    res = reply_event(post(funcs["ingest"].url, logger_event({"predictions": [1, 1]}, id_=rid, response=True)))
    assert req.data["requestId"] == res.data["requestId"] == rid
    assert req["id"] != res["id"]


def test_ingest_without_time_attribute_uses_arrival_time(funcs):
    before = now_ms()
    out = reply_event(post(funcs["ingest"].url, logger_event({"instances": ROWS}, time_ms=False)))
    assert before <= out.data["eventTimeMs"] <= now_ms()


def test_ingest_filters_out_another_inference_service(funcs, sink):
    logger = logger_event({"instances": ROWS}, isvc="wine")
    resp = post(funcs["ingest"].url, logger)
    assert resp.status_code == 202
    assert resp.content == b"" and "ce-type" not in resp.headers
    time.sleep(0.2)
    assert rejected_for(sink, logger["id"]) == []


REJECTED = {
    "row-too-short": (dict(data={"instances": [[5.1, 3.5, 1.4]]}), ["instance 0", "3"]),
    "numeric-string": (dict(data={"instances": [[5.1, "3.5", 1.4, 0.2]]}), ["sepal_width", "'3.5'"]),
    "nan": (dict(body=b'{"instances": [[5.1, 3.5, NaN, 0.2]]}'), ["petal_length", "NaN"]),
    "no-instances": (dict(data={"rows": [[5.1, 3.5, 1.4, 0.2]]}), ["rows"]),
    "v2-shape-mismatch": (dict(data={"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                                 "data": [5.1, 3.5, 1.4, 0.2]}]}), ["shape"]),
    "v2-unknown-datatype": (dict(data={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FLOAT",
                                                   "data": [5.1, 3.5, 1.4, 0.2]}]}), ["FLOAT"]),
    "response-wrong-width": (dict(data={"predictions": [[0, 1]]}, response=True), ["prediction"]),
    "not-json": (dict(body=b"instances=5.1,3.5"), ["JSON"]),
    "empty-body": (dict(body=b""), ["empty"]),
    "not-a-logger-type": (dict(data={"instances": ROWS}, type="com.example.other"), ["com.example.other"]),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_ingest_rejects_bad_payloads_with_400_and_a_dead_letter(funcs, sink, case):
    spec, fragments = REJECTED[case]
    spec = dict(spec)
    body = spec.pop("body", None)
    data = spec.pop("data", {"placeholder": True})
    response = spec.pop("response", False)
    logger = logger_event(data, response=response, **spec)
    resp = post(funcs["ingest"].url, logger, body=body)
    assert resp.status_code == 400, resp.text
    reason = resp.json()["error"]
    for fragment in fragments:
        assert fragment in reason, (fragment, reason)
    # The dead letter went to K_SINK before the answer, with the same reason.
    dead = rejected_for(sink, logger["id"])
    assert len(dead) == 1, [e.data for e in sink.of_type(ev.DEAD_LETTER)][-3:]
    d = dead[0]
    assert d["source"] == "/modelmonitor/default/iris/ingest" and d["monitor"] == "iris"
    assert re.fullmatch(r"iris/rejected/ingest/[0-9a-f]{16}", d["id"])
    assert d.data["reason"] == reason and d.data["role"] == "ingest"
    assert d.data["originalType"] == logger["type"] and d.data["originalSource"] == LOGGER_SOURCE
    assert d.data["truncated"] is False
    if body:
        assert d.data["originalData"] == body.decode()


def test_ingest_rejects_a_body_that_is_no_cloudevent(funcs, sink):
    # func-python decodes the CloudEvent before the function runs; the function makes that
    # decoding lenient, so what is none (plain JSON, a binary event whose time is no timestamp)
    # still reaches the role: 400 with the reason and one dead letter each, like any bad event.
    before = len(sink.of_type(ev.DEAD_LETTER))
    marker = str(uuid.uuid4())
    body = json.dumps({"instances": ROWS, "marker": marker})
    resp = requests.post(funcs["ingest"].url, data=body, headers={"Content-Type": "application/json"},
                         timeout=10)
    assert resp.status_code == 400 and "CloudEvent" in resp.json()["error"]
    headers = {"ce-specversion": "1.0", "ce-type": ev.KSERVE_REQUEST, "ce-source": LOGGER_SOURCE,
               "ce-id": str(uuid.uuid4()), "ce-time": "yesterday", "content-type": "application/json"}
    resp = requests.post(funcs["ingest"].url, data=json.dumps({"instances": ROWS}), headers=headers, timeout=10)
    assert resp.status_code == 400 and "CloudEvent" in resp.json()["error"]
    # The function still works, and sent one dead letter for each, with the body it got.
    assert post(funcs["ingest"].url, logger_event({"instances": ROWS})).status_code == 200
    wait_until(lambda: len(sink.of_type(ev.DEAD_LETTER)) >= before + 2, 10, what="two dead letters")
    dead = sink.of_type(ev.DEAD_LETTER)[before:]
    assert len(dead) == 2 and all("not a CloudEvent" in d.data["reason"] for d in dead)
    assert any(marker in d.data["originalData"] for d in dead)


def test_ingest_rejects_event_time_beyond_max_clock_skew(funcs, sink):
    ahead = logger_event({"instances": ROWS}, time_ms=now_ms() + 10 * 60_000)   # default maxClockSkew 5m
    resp = post(funcs["ingest"].url, ahead)
    assert resp.status_code == 400
    reason = resp.json()["error"]
    assert "maxClockSkew" in reason and "ahead" in reason
    dead = rejected_for(sink, ahead["id"])
    assert len(dead) == 1 and dead[0].data["reason"] == reason
    # A clock a minute fast is within the allowed skew.
    slightly = logger_event({"instances": ROWS}, time_ms=now_ms() + 60_000)
    assert reply_event(post(funcs["ingest"].url, slightly)).data["eventTimeMs"] == \
        ev.rfc3339_to_ms(slightly["time"])


# ---------------------------------------------------------------------------------------------
# outlier
# ---------------------------------------------------------------------------------------------

def test_outlier_flags_an_instance_beyond_3_sd_and_acknowledges_a_normal_one(funcs):
    base = baseline_doc()["features"]
    normal = [round(base[f]["mean"], 3) for f in FEATURES]
    far = list(normal)
    far[2] = round(base["petal_length"]["mean"] + 3.5 * base["petal_length"]["stddev"], 3)

    # The ingest reply is what the broker delivers to the outlier function.
    quiet = reply_event(post(funcs["ingest"].url, logger_event({"instances": [normal]})))
    headers, body = to_binary(quiet)
    resp = requests.post(funcs["outlier"].url, data=body, headers=headers, timeout=10)
    assert resp.status_code == 202 and "ce-type" not in resp.headers

    t = now_ms() - 1234
    logger = logger_event({"instances": [normal, far]}, time_ms=t)
    inst = reply_event(post(funcs["ingest"].url, logger))
    headers, body = to_binary(inst)
    out = reply_event(requests.post(funcs["outlier"].url, data=body, headers=headers, timeout=10))
    assert out["type"] == ev.OUTLIER_DETECTED and out["id"] == inst["id"] + "/outliers"
    assert out["source"] == "/modelmonitor/default/iris/outlier" and out["monitor"] == "iris"
    d = out.data
    assert d["requestId"] == logger["id"] and d["eventTimeMs"] == t
    assert t <= d["detectedAtMs"] <= now_ms()
    assert {o["instance"] for o in d["outliers"]} == {1}
    z = [o for o in d["outliers"] if o["rule"] == "zscore"]
    assert len(z) == 1 and z[0]["feature"] == "petal_length" and z[0]["value"] == far[2]
    assert z[0]["threshold"] == 3.0
    expected = abs(far[2] - base["petal_length"]["mean"]) / base["petal_length"]["stddev"]
    assert z[0]["score"] == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# aggregate
# ---------------------------------------------------------------------------------------------

def test_aggregate_counts_duplicate_deliveries_once(funcs, sink):
    url, metrics_url = funcs["aggregate"].url, funcs["aggregate"].metrics_url
    base = next_base()
    a = instances_event(base + 100, [[5.0, 3.0, 1.5, 0.2], [6.0, 2.9, 4.5, 1.5]])
    b = instances_event(base + 1500, [[7.0, 3.2, 6.0, 2.2]])
    dedup_before = metric_value(requests.get(metrics_url, timeout=5).text, "modelmonitor_dedup_hits_total")
    # At-least-once delivery: a three times (binary, binary, structured), b twice.
    for event, structured in ((a, False), (b, False), (a, False), (a, True), (b, True)):
        resp = post(url, event, structured=structured)
        assert resp.status_code == 202, resp.text
    dedup_after = metric_value(requests.get(metrics_url, timeout=5).text, "modelmonitor_dedup_hits_total")
    assert dedup_after - dedup_before == 3

    # An event in the next window moves the watermark past the first window's end.
    c = instances_event(base + WINDOW_MS + 1900, [[5.5, 2.5, 4.0, 1.3]])
    assert post(url, c).status_code == 202
    first = sink.wait_for(lambda s: windows_closed(s, base))
    assert len(first) == 1, "window.closed must be emitted exactly once"
    w = first[0]
    assert w["id"] == f"iris/{base}/{base + WINDOW_MS}" and w["monitor"] == "iris"
    assert w.data["count"] == 3 and w.data["late"] == 0
    sl = w.data["features"]["sepal_length"]
    assert sl["count"] == 3 and sl["sum"] == pytest.approx(18.0) and sl["min"] == 5.0 and sl["max"] == 7.0

    # A late redelivery of `a` is still a duplicate, not a late instance.
    assert post(url, a).status_code == 202

    # Nothing more arrives: the second window closes only once the idle timeout has passed
    # and a PingSource tick advances the watermark with processing time.
    second = base + WINDOW_MS
    time.sleep(0.3)
    assert windows_closed(sink, second) == []
    deadline = time.monotonic() + 10
    while not windows_closed(sink, second) and time.monotonic() < deadline:
        assert post(url, ping_event()).status_code == 202
        sink.wait_for(lambda s: windows_closed(s, second), timeout=0.4)
    closed = windows_closed(sink, second)
    assert len(closed) == 1
    assert closed[0].data["count"] == 1 and closed[0].data["late"] == 0
    assert closed[0].data["watermarkMs"] >= second + WINDOW_MS


def test_aggregate_answers_503_while_redis_is_down_and_recovers(funcs, sink, redis_srv):
    url = funcs["aggregate"].url
    base = next_base()
    e1 = instances_event(base + 100, [[5.0, 3.0, 1.5, 0.2]])
    e2 = instances_event(base + 900, [[6.0, 3.0, 4.5, 1.5], [6.1, 2.8, 4.7, 1.2]])
    assert post(url, e1).status_code == 202
    redis_srv.stop(kill=True)
    try:
        resp = post(url, e2)
        assert resp.status_code == 503, resp.text
        assert "state store unavailable" in resp.json()["error"]
    finally:
        redis_srv.start()
    # What a broker does: retry until the function takes the event (bounded here).
    deadline = time.monotonic() + 15
    while (status := post(url, e2).status_code) == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 202
    assert post(url, instances_event(base + WINDOW_MS + 700, [[5.5, 2.5, 4.0, 1.3]])).status_code == 202
    closed = sink.wait_for(lambda s: windows_closed(s, base), timeout=10)
    # e1 (acknowledged before the crash) survived it; e2 counted once.
    assert closed and closed[0].data["count"] == 3


# ---------------------------------------------------------------------------------------------
# drift
# ---------------------------------------------------------------------------------------------

def window_closed_event(start: int, rows: np.ndarray) -> Event:
    """A window.closed event for `rows` (counts over the baseline bins, as aggregate emits)."""
    bfeat = baseline_doc()["features"]
    features = {}
    for j, name in enumerate(FEATURES):
        x = rows[:, j]
        edges = np.asarray(bfeat[name]["edges"])
        inner, _ = np.histogram(x, bins=edges)
        counts = [int((x < edges[0]).sum())] + inner.tolist() + [int((x > edges[-1]).sum())]
        features[name] = {"count": len(x), "min": float(x.min()), "max": float(x.max()),
                          "mean": float(x.mean()), "sum": float(x.sum()),
                          "histogram": {"edges": edges.tolist(), "counts": counts}}
    end = start + WINDOW_MS
    data = {"monitor": "iris", "window": {"startMs": start, "endMs": end, "start": ev.ms_to_rfc3339(start),
                                          "end": ev.ms_to_rfc3339(end)},
            "count": len(rows), "late": 0, "watermarkMs": end, "closedAtMs": now_ms(), "features": features,
            "covariance": None, "correlation": None}
    return Event({"type": ev.WINDOW_CLOSED, "source": "/modelmonitor/default/iris/aggregate",
                       "id": f"iris/{start}/{end}", "datacontenttype": "application/json", "monitor": "iris"},
                      data)


def js_base2(window_counts, baseline_counts) -> float:
    """Jensen-Shannon divergence (log base 2) of the smoothed distributions (DESIGN section 3)."""
    def smooth(c):
        c = np.asarray(c, dtype=float)
        return (c + 1e-6) / (c.sum() + len(c) * 1e-6)
    p, q = smooth(window_counts), smooth(baseline_counts)
    m = (p + q) / 2
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


def test_drift_replies_measured_and_alerts_after_consecutive_drifted_windows(funcs, sink):
    url = funcs["drift"].url
    base = next_base()
    train = train_rows()
    shifted = train + 2.0 * train.std(axis=0, ddof=1)
    alerts_before = len(sink.of_type(ev.DRIFT_DETECTED))
    windows = [(base, train), (base + WINDOW_MS, shifted), (base + 2 * WINDOW_MS, shifted)]
    replies = []
    for start, rows in windows:
        closed = window_closed_event(start, rows)
        headers, body = to_binary(closed)
        out = reply_event(requests.post(url, data=body, headers=headers, timeout=10))
        assert out["type"] == ev.DRIFT_MEASURED and out["id"] == closed["id"] + "/drift"
        assert out["source"] == "/modelmonitor/default/iris/drift" and out["monitor"] == "iris"
        assert out.data["window"] == closed.data["window"] and out.data["count"] == len(rows)
        assert out.data["closedAtMs"] == closed.data["closedAtMs"] <= out.data["measuredAtMs"]
        replies.append(out)
        if start == base + WINDOW_MS:
            # One drifted window is not yet an alert (consecutiveWindows: 2).
            assert len(sink.of_type(ev.DRIFT_DETECTED)) == alerts_before

    normal, first_drift, _ = (r.data["features"] for r in replies)
    assert all(not s["drifted"] for scores in normal.values() for s in scores.values())
    assert all(first_drift[f]["jensenShannon"]["drifted"] for f in FEATURES)
    # The score is the documented JS divergence over baseline bins plus under/overflow.
    bl = baseline_doc()["features"]["petal_length"]
    hist = window_closed_event(base, shifted).data["features"]["petal_length"]["histogram"]["counts"]
    assert first_drift["petal_length"]["jensenShannon"]["value"] == pytest.approx(
        js_base2(hist, [0] + bl["counts"] + [0]), rel=1e-9)
    assert first_drift["petal_length"]["jensenShannon"]["threshold"] == 0.1

    # The second drifted window in a row fires the alert, POSTed to K_SINK besides the reply.
    alert_id = f"iris/{base + 2 * WINDOW_MS}/{base + 3 * WINDOW_MS}/alert"
    alerts = [e for e in sink.of_type(ev.DRIFT_DETECTED) if e["id"] == alert_id]
    assert len(alerts) == 1
    a = alerts[0].data
    assert a["severity"] == "critical" and sorted(a["driftedFeatures"]) == sorted(FEATURES)
    assert a["reason"] and a["window"]["startMs"] == base + 2 * WINDOW_MS
    assert a["features"] == replies[2].data["features"]

    # A redelivered window is measured again but raises no second alert.
    headers, body = to_binary(window_closed_event(base + 2 * WINDOW_MS, shifted))
    again = reply_event(requests.post(url, data=body, headers=headers, timeout=10))
    assert again["id"] == replies[2]["id"]
    time.sleep(0.2)
    assert len([e for e in sink.of_type(ev.DRIFT_DETECTED) if e["id"] == alert_id]) == 1
    assert len(sink.of_type(ev.DRIFT_DETECTED)) == alerts_before + 1


def test_drift_alert_survives_a_broker_that_refuses_it_once(funcs, sink):
    """The alert goes to K_SINK besides the reply; if the broker refuses it, the function must
    answer 503 (so the broker redelivers the window) and the redelivery must raise it."""
    url = funcs["drift"].url
    base = next_base()
    shifted = train_rows() + 2.0 * train_rows().std(axis=0, ddof=1)
    normal = window_closed_event(base, train_rows())            # resets the streak
    first = window_closed_event(base + WINDOW_MS, shifted)
    second = window_closed_event(base + 2 * WINDOW_MS, shifted)
    alert_id = second["id"] + "/alert"
    for closed in (normal, first):
        assert reply_event(post(url, closed))["type"] == ev.DRIFT_MEASURED
    assert [e for e in sink.of_type(ev.DRIFT_DETECTED) if e.data["window"]["startMs"] >= base] == []
    with sink.lock:
        sink.refuse[ev.DRIFT_DETECTED] = 1
    failed = post(url, second)
    assert failed.status_code == 503 and "broker unavailable" in failed.json()["error"], failed.text
    assert [e for e in sink.of_type(ev.DRIFT_DETECTED) if e["id"] == alert_id] == []
    # The broker's retry.
    assert reply_event(post(url, second))["type"] == ev.DRIFT_MEASURED
    alerts = [e for e in sink.of_type(ev.DRIFT_DETECTED) if e["id"] == alert_id]
    assert len(alerts) == 1 and alerts[0].data["severity"] == "critical"
    # Once delivered, the alert is not repeated.
    assert reply_event(post(url, second))["type"] == ev.DRIFT_MEASURED
    assert len([e for e in sink.of_type(ev.DRIFT_DETECTED) if e["id"] == alert_id]) == 1


def test_drift_rejects_a_window_without_features(funcs, sink):
    bad = Event({"type": ev.WINDOW_CLOSED, "source": "/modelmonitor/default/iris/aggregate",
                      "id": f"iris/bad/{uuid.uuid4()}", "datacontenttype": "application/json", "monitor": "iris"},
                     {"monitor": "iris", "count": 3})
    resp = post(funcs["drift"].url, bad)
    assert resp.status_code == 400 and "features" in resp.json()["error"]
    dead = sink.wait_for(lambda s: rejected_for(s, bad["id"]))
    assert dead and dead[0].data["role"] == "drift" and dead[0]["source"] == "/modelmonitor/default/iris/drift"
