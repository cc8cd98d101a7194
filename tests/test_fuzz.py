"""Fuzzing with hypothesis: generated KServe bodies and CloudEvents, from the pure parsers up to
real function processes.

(a) Pure: thousands of generated JSON documents (random nesting; numbers including huge
    integers, NaN, infinities, -0 and number-like strings; strings, nulls; V1 and V2 shapes with
    wrong shapes, datatypes and widths) through ``payloads.parse_request`` / ``parse_response``,
    ``pipeline.ingest_rows`` and the handlers of outlier, aggregate and drift: each either gives
    rows of the right width with finite floats (and event data that passes the published JSON
    Schema) or raises PayloadError / Rejected with a non-empty reason; never another exception.
(b) HTTP: generated binary-mode, structured-mode and non-Event requests with random headers
    and bodies against a real ingest function process (func-python, hypercorn) get 200, 202, 400 or
    413, never 500; a 400 carries the reason and sends one dead letter to K_SINK (a recording
    server); the process stays alive and ready. The same requests at the local broker's ingress
    get 202, 400 or 413 and it keeps serving (this found the broker dropping the connection on
    JSON nested too deeply: test_broker_ingress_answers_400_to_json_nested_too_deeply).
(c) The aggregate function (real process, real Redis) fed generated instances events, valid and
    invalid mixed, out of order, with redeliveries: the invalid ones get 400, and the windows it
    closes equal the brute-force reference (tests/reference.py) over the valid ones, checked
    with numpy, and validate against the window.closed schema.
"""
from __future__ import annotations

import json
import urllib.parse
import math

import numpy as np
import pytest
import requests
import yaml
from modelmonitor.runtime.wire import to_binary, to_structured
from modelmonitor.core.events import Event
from modelmonitor.runtime.wire import NotACloudEvent, from_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from live_stack import FEATURES, wait_until, write_monitor
from event_sink import EventSink
from modelmonitor.core import events as ev
from modelmonitor.core.baseline import build_baseline, write_baseline
from modelmonitor.core.payloads import V2_DATATYPES, PayloadError, parse_request, parse_response
from modelmonitor.handlers import (MAX_EVENT_TIME_MS, Aggregator, Instances, MemoryAlertState, Monitor, Rejected,
                                   ingest_rows, measure, outliers)
from modelmonitor.local.procs import FunctionProcess
from modelmonitor.local.redis_server import RedisServer
from modelmonitor.core.schema_check import validate_event_data
from modelmonitor.core.spec import NUMERICAL
from reference import percentile_within_bound, reference_run

NOW_MS = 1_795_341_603_123          # a fixed "wall clock" for the pure cases
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------------------------
# Monitors: iris (4 numerical inputs, 1 numerical prediction) and a mixed schema
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def monitors(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz-monitors")
    iris = Monitor.from_files(str(write_monitor(d / "iris")))
    rng = np.random.default_rng(5)
    train = {"x": rng.normal(0, 1, 300).tolist(), "color": rng.choice(["red", "green", "blue"], 300).tolist(),
             "label": rng.choice(["a", "b"], 300).tolist()}
    from modelmonitor.core.spec import Feature
    feats = [Feature("x", "numerical", 0), Feature("color", "categorical", 1), Feature("label", "categorical", 2)]
    write_baseline(build_baseline(train, feats, bins=10), str(d / "baseline.json"))
    doc = {"apiVersion": "monitoring.modelmonitor.io/v1alpha1", "kind": "ModelMonitor",
           "metadata": {"name": "mixed"},
           "spec": {"inferenceService": "mixed",
                    "schema": {"features": [{"name": "x", "type": "numerical"},
                                            {"name": "color", "type": "categorical"}],
                               "predictions": [{"name": "label", "type": "categorical"}]},
                    "window": {"duration": "10s", "watermarkDelay": "1s"},
                    "drift": {"jensenShannon": {"threshold": 0.1, "showAll": True},
                              "chiSquare": {"threshold": 30, "showAll": True},
                              "wasserstein": {"threshold": 0.5}},
                    "outliers": {"stddev": {"k": 3}, "range": {}, "unseen": True},
                    "baseline": {"file": "baseline.json"}}}
    (d / "mixed.yaml").write_text(yaml.safe_dump(doc))
    mixed = Monitor.from_files(str(d / "mixed.yaml"))
    return {"iris": iris, "mixed": mixed}


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

NAMES = FEATURES + ["x", "color", "label", "prediction", "input-0", "output-0"]
NUMBER_LIKE = ["NaN", "nan", "Infinity", "-Infinity", "1e999", "5.1", "", " ", "0x10", "1_000", "\u0661",
               "3,5", "true", "null"]
EDGE_NUMBERS = [0.0, -0.0, 1e308, -1e308, 5e-324, 2 ** 53 + 1, 2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 400,
                -(10 ** 400), float("nan"), float("inf"), float("-inf")]
numbers = st.one_of(st.floats(-1e6, 1e6), st.integers(-10 ** 6, 10 ** 6), st.floats(), st.integers(),
                    st.sampled_from(EDGE_NUMBERS), st.booleans())
scalars = st.one_of(st.none(), numbers, st.sampled_from(NUMBER_LIKE), st.text(max_size=8),
                    st.sampled_from(["red", "green", "purple", "a", "b"]))
keys = st.one_of(st.sampled_from(NAMES + ["instances", "inputs", "name", "shape", "datatype", "data",
                                          "predictions", "outputs", "parameters", "id"]), st.text(max_size=6))
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=5),
                                                           st.dictionaries(keys, kids, max_size=5)),
                           max_leaves=25)


@st.composite
def rows(draw, width: int):
    """V1 instances: mostly the right width, often valid, with sprinkled defects."""
    n = draw(st.integers(0, 6))
    out = []
    for _ in range(n):
        kind = draw(st.sampled_from(["list", "list", "list", "object", "scalar", "bad-width", "junk"]))
        w = width if kind != "bad-width" else draw(st.integers(0, width + 2).filter(lambda x: x != width))
        if kind in ("list", "bad-width"):
            out.append(draw(st.lists(st.one_of(st.floats(-100, 100), st.integers(-5, 5), scalars),
                                     min_size=w, max_size=w)))
        elif kind == "object":
            out.append(draw(st.dictionaries(st.sampled_from(NAMES), scalars, max_size=width + 1)))
        elif kind == "scalar":
            out.append(draw(scalars))
        else:
            out.append(draw(json_values))
    if draw(st.booleans()):  # a long batch takes the vectorised path
        out = out * draw(st.integers(1, 12))
    return out


@st.composite
def tensors(draw, width: int):
    """V2 tensors: consistent ones, and ones whose name/shape/datatype/data do not agree."""
    n = draw(st.integers(0, 5))
    layout = draw(st.sampled_from(["matrix", "columns", "random"]))
    datatype = draw(st.one_of(st.sampled_from(list(V2_DATATYPES)), st.sampled_from(["FP128", "", "fp32"]),
                              st.none(), numbers))
    if layout == "matrix":
        values = draw(st.lists(st.one_of(st.floats(-100, 100), scalars), min_size=n * width, max_size=n * width))
        data = values if draw(st.booleans()) else [values[i:i + width] for i in range(0, n * width, width)]
        return [{"name": draw(st.sampled_from(NAMES)), "shape": [n, width], "datatype": datatype, "data": data}]
    if layout == "columns":
        out = []
        for name in draw(st.permutations(NAMES[:width] if width == 4 else ["x", "color", "label"])):
            col = draw(st.lists(st.one_of(st.floats(-100, 100), st.sampled_from(["red", "a"]), scalars),
                                min_size=n, max_size=n))
            out.append({"name": name, "shape": draw(st.sampled_from([[n], [n, 1], [n, 2], [n + 1]])),
                        "datatype": draw(st.sampled_from(["FP64", "BYTES", "INT64", "BOOL"])), "data": col})
        return out
    return draw(st.lists(st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(NAMES), scalars), "shape": st.one_of(
            st.lists(st.integers(-1, 5), max_size=4), json_values, st.just([1] * 40)),
         "datatype": st.one_of(st.sampled_from(list(V2_DATATYPES)), scalars),
         "data": st.one_of(st.lists(scalars, max_size=12), json_values)}), max_size=4))


class Deep(str):
    """JSON text nested deeper than some parsers can take."""


@st.composite
def documents(draw, width: int, response: bool = False):
    shape = draw(st.sampled_from(["v1", "v1", "v2", "v2", "both", "random", "deep"]))
    v1_key = "predictions" if response else draw(st.sampled_from(["instances", "inputs"]))
    v2_key = "outputs" if response else "inputs"
    if shape == "v1":
        doc = {v1_key: draw(st.one_of(rows(width), json_values))}
    elif shape == "v2":
        doc = {v2_key: draw(tensors(width))}
        if draw(st.booleans()):
            doc.update(id="r1", parameters={"content_type": "np"}, model_name="m")
    elif shape == "both":
        doc = {v1_key: draw(rows(width)), v2_key: draw(tensors(width))}
    elif shape == "deep":
        depth = draw(st.sampled_from([10, 100, 900, 3000]))
        doc = Deep('{"%s": %s1.0%s}' % (v1_key, "[" * depth, "]" * depth))
    else:
        doc = draw(json_values)
    return doc


@st.composite
def bodies(draw, width: int, response: bool = False):
    """What a payload parser can be handed: a dict, JSON text or bytes, or junk bytes."""
    doc = draw(documents(width, response))
    form = draw(st.sampled_from(["dict", "text", "bytes", "bytes", "junk", "truncated"]))
    if isinstance(doc, Deep):                            # deeply nested JSON text
        if form == "dict":
            try:
                return json.loads(doc)
            except RecursionError:
                return doc.encode()
        return str(doc) if form == "text" else doc.encode()
    if form == "dict":
        return doc
    text = json.dumps(doc)                               # NaN / Infinity tokens and huge integers included
    if form == "text":
        return text
    if form == "junk":
        return draw(st.binary(max_size=64))
    if form == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))].encode()
    return text.encode()


def check_rows(out, features) -> None:
    assert isinstance(out, list) and out, out
    for row in out:
        assert isinstance(row, list) and len(row) == len(features), row
        for value, f in zip(row, features):
            if f.type == NUMERICAL:
                assert type(value) is float and math.isfinite(value), (f.name, value)
            else:
                assert value is None or type(value) is str, (f.name, value)


def check_reason(exc) -> None:
    assert isinstance(exc.reason, str) and exc.reason.strip(), repr(exc)
    assert len(exc.reason) <= 2100


# ---------------------------------------------------------------------------------------------
# (a) pure
# ---------------------------------------------------------------------------------------------

@settings(max_examples=1500, **SETTINGS)
@given(data=st.data())
def test_parse_request_and_response_never_crash(monitors, data):
    mon = monitors[data.draw(st.sampled_from(["iris", "mixed"]))]
    response = data.draw(st.booleans())
    features = mon.predictions.features if response else mon.inputs.features
    body = data.draw(bodies(len(features), response))
    parse = parse_response if response else parse_request
    try:
        out = parse(body, features)
    except PayloadError as exc:
        check_reason(exc)
        return
    check_rows(out, features)


LOGGER_TYPES = [ev.KSERVE_REQUEST, ev.KSERVE_REQUEST, ev.KSERVE_RESPONSE, ev.INSTANCES, "x", ""]
times = st.one_of(
    st.integers(0, MAX_EVENT_TIME_MS).map(ev.ms_to_rfc3339),
    st.integers(NOW_MS - 3_600_000, NOW_MS + 3_600_000).map(ev.ms_to_rfc3339),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999-01:00",
                     "9999-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z", "2026-02-30T00:00:00Z",
                     "2026-11-22T10:00:00.123456789Z", "2026-11-22 10:00:00", "2026-11-22T10:00:00.Z",
                     "2026-11-22T25:00:00Z", "not a time", "", "  ", "2026-11-22T10:00:00+25:00"]),
    st.text(max_size=30), st.integers(), st.none())


@settings(max_examples=1200, **SETTINGS)
@given(data=st.data())
def test_ingest_rows_accepts_or_rejects_with_a_reason(monitors, data):
    mon = monitors[data.draw(st.sampled_from(["iris", "mixed"]))]
    attrs = {"type": data.draw(st.sampled_from(LOGGER_TYPES)), "source": data.draw(st.text(max_size=10)),
             "id": data.draw(st.text(min_size=1, max_size=10))}
    if data.draw(st.booleans()):
        attrs["time"] = data.draw(times)
    isvc = data.draw(st.sampled_from([None, mon.spec.inference_service, "other"]))
    if isvc is not None:
        attrs["inferenceservicename"] = isvc
    response = attrs["type"] == ev.KSERVE_RESPONSE
    features = mon.predictions.features if response else mon.inputs.features
    body = data.draw(st.one_of(bodies(len(features), response), st.none(), st.just(b"")))
    check_skew = data.draw(st.booleans())
    try:
        inst = ingest_rows(mon, attrs, body, NOW_MS, check_skew=check_skew)
    except Rejected as exc:
        check_reason(exc)
        return
    if inst is None:   # another InferenceService
        assert isvc == "other"
        return
    assert isinstance(inst, Instances)
    check_rows(inst.rows, features)
    assert 0 <= inst.event_time_ms <= MAX_EVENT_TIME_MS
    if check_skew:
        assert inst.event_time_ms - NOW_MS <= mon.spec.window.max_clock_skew_ms
    record = inst.data(mon)
    json.dumps(record, allow_nan=False)
    validate_event_data(ev.INSTANCES, record)


@st.composite
def instances_events(draw, mon: Monitor):
    """inference.instances events as the outlier and aggregate functions may receive them."""
    response = draw(st.booleans()) and bool(mon.predictions.features)
    layout = mon.predictions if response else mon.inputs
    valid_rows = draw(st.lists(st.lists(st.floats(-50, 50), min_size=len(layout.names),
                                        max_size=len(layout.names)), min_size=1, max_size=4))
    for row in valid_rows:
        for j, f in enumerate(layout.features):
            if f.type != NUMERICAL:
                row[j] = draw(st.sampled_from(["red", "green", "purple", "a", "b", None]))
    data = {"monitor": mon.name, "requestId": "r", "kind": "response" if response else "request",
            "eventTime": ev.ms_to_rfc3339(NOW_MS), "eventTimeMs": NOW_MS,
            "features": list(layout.names), "instances": valid_rows}
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from(["instances", "eventTimeMs", "features", "kind", "row", "value", "whole"]))
        if field == "row" and data.get("instances") and isinstance(data["instances"], list):
            data["instances"][0] = draw(json_values)
        elif field == "value" and data.get("instances") and isinstance(data["instances"], list) \
                and isinstance(data["instances"][0], list) and data["instances"][0]:
            data["instances"][0][0] = draw(scalars)
        elif field == "whole":
            data = draw(json_values)
            break
        else:
            data[field] = draw(st.one_of(json_values, st.sampled_from([MAX_EVENT_TIME_MS + 1, -1, 10 ** 30])))
    etype = draw(st.sampled_from([ev.INSTANCES] * 6 + [ev.WINDOW_CLOSED, "x"]))
    if draw(st.integers(0, 9)) == 0:
        data = json.dumps(data)  # data as a JSON string (structured mode with string data)
    return Event({"type": etype, "source": "/fuzz", "id": f"{mon.name}/request/{draw(st.integers(0, 50))}/x"},
                      data)


@settings(max_examples=800, **SETTINGS)
@given(data=st.data())
def test_outlier_and_aggregate_encode_accept_or_reject_with_a_reason(monitors, data):
    mon = monitors[data.draw(st.sampled_from(["iris", "mixed"]))]
    event = data.draw(instances_events(mon))
    try:
        found = outliers(mon, event, NOW_MS)
    except Rejected as exc:
        check_reason(exc)
    else:
        if found is not None:
            json.dumps(found.data, allow_nan=False)
            validate_event_data(ev.OUTLIER_DETECTED, found.data)
    aggregator = Aggregator.__new__(Aggregator)   # encode() is pure: no store needed
    aggregator.mon = mon
    try:
        pending = aggregator.encode(event)
    except Rejected as exc:
        check_reason(exc)
        return
    numeric = np.frombuffer(pending.numeric, dtype="<f8")
    assert np.isfinite(numeric).all()
    n_numeric = len(mon.layout("response" if pending.group == "p" else "request").numeric)
    assert len(numeric) == pending.instances * n_numeric
    if pending.categorical:
        for row in json.loads(pending.categorical):
            assert all(v is None or type(v) is str for v in row), row
    assert 0 <= pending.event_time_ms <= MAX_EVENT_TIME_MS


@st.composite
def window_events(draw, mon: Monitor):
    names = list(mon.inputs.names) + list(mon.predictions.names)
    stat = st.fixed_dictionaries({}, optional={
        "count": st.one_of(st.integers(0, 100), scalars), "histogram": st.one_of(
            st.fixed_dictionaries({"edges": st.lists(st.floats(-5, 5), max_size=12),
                                   "counts": st.lists(st.integers(-2, 20), max_size=14)}), json_values),
        "categories": st.one_of(st.dictionaries(st.sampled_from(["red", "green", "zz"]), st.integers(-1, 9)),
                                json_values),
        "mean": numbers, "stddev": numbers, "min": numbers, "max": numbers,
        "percentiles": json_values})
    start = draw(st.integers(0, 10 ** 13))
    data = {"monitor": mon.name, "window": {"startMs": start, "endMs": start + 10_000},
            "count": draw(st.one_of(st.integers(0, 200), scalars)), "closedAtMs": NOW_MS,
            "features": draw(st.dictionaries(st.sampled_from(names), st.one_of(stat, json_values), max_size=4))}
    if draw(st.booleans()):
        data["window"] = draw(st.one_of(json_values, st.fixed_dictionaries(
            {"startMs": st.one_of(st.integers(), scalars), "endMs": st.one_of(st.integers(), scalars)})))
    if draw(st.integers(0, 5)) == 0:
        data = draw(json_values)
    etype = draw(st.sampled_from([ev.WINDOW_CLOSED] * 5 + [ev.INSTANCES]))
    return Event({"type": etype, "source": "/fuzz", "id": "w"}, data)


@settings(max_examples=500, **SETTINGS)
@given(data=st.data())
def test_drift_measure_accepts_or_rejects_with_a_reason(monitors, data):
    mon = monitors[data.draw(st.sampled_from(["iris", "mixed"]))]
    event = data.draw(window_events(mon))
    try:
        out = measure(mon, event, NOW_MS, MemoryAlertState())
    except Rejected as exc:
        check_reason(exc)
        return
    for e in out:
        json.dumps(e.data, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# A recording K_SINK
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def private_redis():
    server = RedisServer(durable=False).start()
    yield server
    server.cleanup()


def function_process(role: str, monitor_path, redis_url: str, sink_url: str, log_file, **env) -> FunctionProcess:
    proc = FunctionProcess(f"fuzz-{role}", ["--role", role, "--threads", "4"], env={
        "MODELMONITOR_ROLE": role, "MODELMONITOR_CONFIG": str(monitor_path),
        "MODELMONITOR_BASELINE": str(monitor_path.parent / "baseline.json"), "REDIS_URL": redis_url,
        "K_SINK": sink_url, **env}, log_file=str(log_file))
    return proc.start()


# ---------------------------------------------------------------------------------------------
# (b) HTTP against a real ingest function
# ---------------------------------------------------------------------------------------------

MAX_BODY = 64 * 1024
# Header values as HTTP allows them (no leading whitespace, latin-1).
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(str.lstrip)
# Header values as the CloudEvents HTTP binding writes them: printable ASCII, anything else
# percent-encoded (KServe's logger and Knative's brokers do). Raw non-UTF-8 header bytes never
# reach the function: func-python 0.8.1 answers them 500 while logging the request it refuses.
header_values = st.one_of(header_text, st.text(st.characters(min_codepoint=160, max_codepoint=255),
                                                max_size=5).map(lambda t: urllib.parse.quote(t.lstrip())))


@st.composite
def http_requests(draw):
    """(headers, body) of a request a function may receive."""
    mode = draw(st.sampled_from(["valid", "binary", "binary", "binary", "structured", "plain"]))
    if mode == "valid":  # what a KServe logger sends, with random extras
        n = draw(st.integers(1, 5))
        table = [[draw(st.floats(-1e3, 1e3)) for _ in range(4)] for _ in range(n)]
        form = draw(st.sampled_from(["v1", "v1obj", "v2", "v2-columns"]))
        if form == "v1":
            doc = {"instances": table}
        elif form == "v1obj":
            doc = {"instances": [dict(zip(FEATURES, r)) for r in table]}
        elif form == "v2":
            doc = {"inputs": [{"name": "input-0", "shape": [n, 4], "datatype": "FP32",
                               "data": [v for r in table for v in r]}]}
        else:
            doc = {"inputs": [{"name": f, "shape": [n], "datatype": "FP64", "data": [r[j] for r in table]}
                              for j, f in enumerate(FEATURES)]}
        headers = {"ce-specversion": "1.0", "ce-type": ev.KSERVE_REQUEST, "ce-source": "http://localhost:9081/",
                   "ce-id": str(draw(st.uuids())),
                   "ce-inferenceservicename": draw(st.sampled_from(["iris", "iris", "iris", "other"])),
                   "content-type": "application/json"}
        if draw(st.booleans()):
            headers["ce-time"] = ev.ms_to_rfc3339(draw(st.integers(0, NOW_MS)))
        for _ in range(draw(st.integers(0, 3))):
            headers[f"ce-{draw(st.sampled_from(['namespace', 'component', 'endpoint', 'metadata', 'x1']))}"] = \
                draw(header_values)
        return {k: v.lstrip() for k, v in headers.items()}, Blob(json.dumps(doc).encode())
    ctype = draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                  "application/octet-stream", None, "application/cloudevents+json"]))
    body = draw(st.one_of(bodies(4), st.binary(max_size=200), st.just(b"")))
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    if draw(st.integers(0, 15)) == 0:
        body = Blob(b'{"instances": [' + b"[5.1, 3.5, 1.4, 0.2], " * (MAX_BODY // 20) + b"[1, 2, 3, 4]]}")
    headers: dict[str, str] = {}
    if mode == "binary":
        attrs = {"specversion": draw(st.sampled_from(["1.0", "1.0", "1.0", "0.3", "", "2"])),
                 "type": draw(st.sampled_from(LOGGER_TYPES + ["io.modelmonitor.window.closed"])),
                 "source": draw(st.one_of(st.just("http://localhost:9081/"), header_values)),
                 "id": draw(st.one_of(st.uuids().map(str), header_values)),
                 "time": draw(st.one_of(st.integers(NOW_MS - 10 ** 9, NOW_MS + 10 ** 9).map(ev.ms_to_rfc3339),
                                        times.filter(lambda t: isinstance(t, str)).map(
                                            lambda t: "".join(c for c in t if 32 <= ord(c) < 127)))),
                 "inferenceservicename": draw(st.sampled_from(["iris", "iris", "other", ""]))}
        for key, value in attrs.items():
            if draw(st.integers(0, 9)) > 0:
                headers[f"ce-{key}"] = value
        for _ in range(draw(st.integers(0, 3))):
            headers[f"ce-{draw(st.text(st.sampled_from('abcxyz'), min_size=1, max_size=6))}"] = draw(header_values)
        if "ce-time" in headers and not headers["ce-time"]:
            del headers["ce-time"]
    elif mode == "structured":
        envelope = {"specversion": draw(st.sampled_from(["1.0", "0.3", 1])),
                    "type": draw(st.sampled_from(LOGGER_TYPES)), "source": draw(header_text),
                    "id": draw(st.one_of(st.uuids().map(str), header_text, st.integers())),
                    "inferenceservicename": "iris"}
        if draw(st.booleans()):
            envelope["time"] = draw(times)
        envelope = {k: v for k, v in envelope.items() if draw(st.integers(0, 9)) > 0}
        if draw(st.booleans()):
            envelope["data"] = draw(documents(4))
        else:
            import base64
            envelope["data_base64"] = base64.b64encode(body).decode()
        body = json.dumps(envelope).encode() if draw(st.integers(0, 7)) else draw(st.binary(max_size=80))
        ctype = "application/cloudevents+json"
    if ctype is not None:
        headers["content-type"] = ctype
    for _ in range(draw(st.integers(0, 2))):
        headers[draw(st.sampled_from(["x-request-id", "prefer", "accept", "x-b3-traceid"]))] = draw(header_text)
    # HTTP allows no leading whitespace in a value (requests refuses to send it).
    return {k: v.lstrip() for k, v in headers.items()}, Blob(body)


class Blob(bytes):
    """A body whose repr stays short in hypothesis' reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes: {bytes(self[:120])!r}{'...' if len(self) > 120 else ''}>"


@pytest.fixture(scope="module")
def ingest_function(tmp_path_factory, private_redis):
    d = tmp_path_factory.mktemp("fuzz-ingest")
    sink = EventSink()
    path = write_monitor(d / "monitor")
    proc = function_process("ingest", path, private_redis.url, sink.url, d / "ingest.log",
                            MODELMONITOR_MAX_BODY_BYTES=str(MAX_BODY))
    yield proc, sink
    proc.stop()
    sink.close()


def test_ingest_function_over_http_never_answers_500(ingest_function, monitors):
    proc, sink = ingest_function
    session = requests.Session()
    seen: dict[int, int] = {}
    answered_400 = 0

    @settings(max_examples=300, **SETTINGS)
    @given(request=http_requests())
    def one(request):
        nonlocal answered_400
        headers, body = request
        resp = session.post(proc.url, data=body, headers=headers, timeout=30)
        seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
        if resp.status_code == 500:
            # func-python 0.8.1 answers 500 when the SDK fails on a malformed envelope with a
            # TypeError (e.g. a number as "time") before the function runs: allowed only for a
            # request the SDK itself cannot read as a CloudEvent.
            with pytest.raises(NotACloudEvent):
                from_http(headers, bytes(body))
            return
        assert resp.status_code in (200, 202, 400, 413), (resp.status_code, headers, body[:300], resp.text[:500])
        if resp.status_code == 400 and not resp.headers.get("content-type", "").startswith("application/json"):
            # func-python refused it before the function ran: no CloudEvent, so no dead letter.
            assert "CloudEvent" in resp.text
        elif resp.status_code == 400:
            answered_400 += 1
            reason = resp.json()["error"]
            assert isinstance(reason, str) and reason.strip()
        if resp.status_code == 200:
            reply = from_http({k.lower(): v for k, v in resp.headers.items()}, resp.content)
            assert reply["type"] == ev.INSTANCES
            check_rows(reply.data["instances"], monitors["iris"].inputs.features)
            validate_event_data(ev.INSTANCES, reply.data)

    one()
    assert proc.running, "the ingest function died"
    assert requests.get(proc.url + "health/readiness", timeout=5).status_code == 200
    # Every kind of answer happened, and every 400 sent exactly one dead letter with its reason.
    assert seen.get(200) and seen.get(400) and seen.get(202), seen
    wait_until(lambda: len(sink.of_type(ev.DEAD_LETTER)) >= answered_400, 10, what="dead letters")
    dead = sink.of_type(ev.DEAD_LETTER)
    assert len(dead) == answered_400
    for e in dead:
        validate_event_data(ev.DEAD_LETTER, e.data)
        assert e.data["reason"].strip() and e.data["role"] == "ingest"


@pytest.mark.parametrize("headers", [
    {"content-type": "application/cloudevents+json"},                      # structured mode
    {"content-type": "application/json"},                                  # no Event at all
], ids=["structured", "plain"])
def test_broker_ingress_answers_400_to_json_nested_too_deeply(headers):
    """Found by the fuzzer below: JSON nested deeper than the parser's recursion limit must be
    refused like any other malformed body (400), not drop the connection without an answer."""
    from modelmonitor.local.broker import LocalBroker
    broker = LocalBroker([]).start()
    try:
        body = b'{"specversion": "1.0", "type": "t", "source": "s", "id": "1", "data": ' + b"[" * 5000 \
            + b"]" * 5000 + b"}"
        try:
            status = requests.post(broker.url, data=body, headers=headers, timeout=30).status_code
        except requests.ConnectionError as exc:
            status = f"no answer ({exc})"
        assert status == 400
        ok = {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s", "ce-id": "2"}
        assert requests.post(broker.url, data=b"{}", headers=ok, timeout=30).status_code == 202
    finally:
        broker.stop()


def test_broker_ingress_answers_every_generated_request():
    """The same generated requests at the local broker's ingress: 202 (queued), 400 (not a
    Event, with the reason) or 413, never an error or a dropped connection; it keeps
    serving, and only what it answered 202 to was accepted."""
    from modelmonitor.local.broker import LocalBroker
    broker = LocalBroker([], max_body_bytes=MAX_BODY).start()
    session = requests.Session()
    seen: dict[int, int] = {}
    try:
        @settings(max_examples=300, **SETTINGS)
        @given(request=http_requests())
        def one(request):
            headers, body = request
            resp = session.post(broker.url, data=body, headers=headers, timeout=30)
            seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
            assert resp.status_code in (202, 400, 413), (resp.status_code, headers, resp.text[:300])
            if resp.status_code == 400:
                assert resp.text.strip()

        one()
        assert seen.get(202) and seen.get(400) and seen.get(413), seen
        assert broker.stats()["accepted"] == seen[202]
        assert session.get(broker.base_url + "health/readiness", timeout=5).status_code == 200
    finally:
        broker.stop()


# ---------------------------------------------------------------------------------------------
# (c) the aggregate function fed valid and invalid instances events
# ---------------------------------------------------------------------------------------------

BASE_MS = 1_700_000_000_000        # event times far in the past: no idle tick is involved
INVALID_MUTATIONS = ["type", "data-not-object", "features", "empty", "width", "nan", "inf", "string", "null",
                     "list-value", "dict-value", "huge-int", "time-string", "time-float", "time-bool",
                     "time-huge", "time-negative", "time-missing", "kind", "rows-not-list", "not-json"]


@st.composite
def aggregate_cases(draw, clock: list):
    """(headers, body, valid, id, t, rows): one instances event for the iris aggregator. Event
    times advance with the number of cases sent so far (``clock[0]``), 120 ms each, with a
    jitter of up to 4 s back and 0.6 s ahead, so windows keep opening and closing and some
    instances come late."""
    n = draw(st.integers(1, 4))
    rows = [[round(draw(st.floats(-1000, 1000)), 3) for _ in range(4)] for _ in range(n)]
    t = BASE_MS + 5_000 + 120 * clock[0] + draw(st.sampled_from(range(-4_000, 600, 23)))
    ident = f"iris/request/{draw(st.integers(0, 150))}/fuzz"   # 300 cases, 151 ids: redeliveries
    data = {"monitor": "iris", "requestId": ident.split("/")[2], "kind": "request", "eventTime": ev.ms_to_rfc3339(t),
            "eventTimeMs": t, "features": list(FEATURES), "instances": [list(r) for r in rows]}
    etype = ev.INSTANCES
    mutation = draw(st.sampled_from(INVALID_MUTATIONS)) if draw(st.integers(0, 2)) == 0 else None
    raw = None
    if mutation == "type":
        etype = draw(st.sampled_from([ev.WINDOW_CLOSED, ev.KSERVE_REQUEST, "x"]))
    elif mutation == "data-not-object":
        data = draw(st.one_of(st.lists(scalars, max_size=3), scalars.filter(lambda v: not isinstance(v, str))))
    elif mutation == "features":
        data["features"] = draw(st.one_of(st.just(FEATURES[::-1]), st.just(FEATURES[:3]), json_values))
    elif mutation == "empty":
        data["instances"] = []
    elif mutation == "width":
        data["instances"][0] = data["instances"][0][: draw(st.integers(0, 3))]
    elif mutation == "rows-not-list":
        data["instances"] = draw(st.one_of(st.dictionaries(keys, scalars, max_size=2), st.text(max_size=3)))
    elif mutation in ("nan", "inf", "string", "null", "list-value", "dict-value", "huge-int"):
        bad = {"nan": float("nan"), "inf": float("-inf"), "string": draw(st.sampled_from(["1.5", "nan", "x"])),
               "null": None, "list-value": [1.0], "dict-value": {"v": 1}, "huge-int": 10 ** 400}[mutation]
        data["instances"][draw(st.integers(0, n - 1))][draw(st.integers(0, 3))] = bad
    elif mutation is not None and mutation.startswith("time-"):
        if mutation == "time-missing":
            del data["eventTimeMs"]
        else:
            data["eventTimeMs"] = {"time-string": str(t), "time-float": t + 0.5, "time-bool": True,
                                   "time-huge": 10 ** 30, "time-negative": -t}[mutation]
    elif mutation == "kind":
        data["kind"] = draw(st.sampled_from(["predict", "", None, 3]))
    elif mutation == "not-json":
        raw = b"{not json"
    event = Event({"type": etype, "source": "/modelmonitor/default/iris/ingest", "id": ident,
                        "datacontenttype": "application/json"}, data)
    structured = draw(st.booleans())
    headers, body = (to_structured if structured else to_binary)(event)
    if raw is not None:
        body = raw
    return headers, body, mutation is None, ident, t, rows


@pytest.fixture(scope="module")
def aggregate_function(tmp_path_factory, private_redis):
    d = tmp_path_factory.mktemp("fuzz-aggregate")
    sink = EventSink()
    path = write_monitor(d / "monitor", duration="2s", watermark="1s", idle="1h")
    proc = function_process("aggregate", path, private_redis.url, sink.url, d / "aggregate.log")
    yield proc, sink
    proc.stop()
    sink.close()


def test_aggregate_function_windows_equal_the_reference_over_valid_events(aggregate_function):
    proc, sink = aggregate_function
    session = requests.Session()
    accepted: list[tuple[str, int, list]] = []
    statuses: dict[str, int] = {}

    clock = [0]

    @settings(max_examples=300, **SETTINGS)
    @given(case=aggregate_cases(clock))
    def one(case):
        clock[0] += 1
        headers, body, valid, ident, t, rows = case
        resp = session.post(proc.url, data=body, headers=headers, timeout=30)
        key = "valid" if valid else "invalid"
        statuses[f"{key}:{resp.status_code}"] = statuses.get(f"{key}:{resp.status_code}", 0) + 1
        if valid:
            assert resp.status_code in (200, 202), (resp.status_code, resp.text[:300])
            accepted.append((ident, t, rows))
        else:
            assert resp.status_code == 400, (resp.status_code, headers, body[:300], resp.text[:300])
            # Either the function's reason (JSON) or func-python's refusal of a non-CloudEvent.
            if resp.headers.get("content-type", "").startswith("application/json"):
                assert resp.json()["error"].strip()
            else:
                assert "CloudEvent" in resp.text

    def send_instances(request_id: str, t: int, rows: list) -> None:
        ident = f"iris/request/{request_id}/fuzz"
        event = Event({"type": ev.INSTANCES, "source": "/modelmonitor/default/iris/ingest", "id": ident},
                           {"monitor": "iris", "requestId": request_id, "kind": "request",
                            "eventTime": ev.ms_to_rfc3339(t), "eventTimeMs": t,
                            "features": list(FEATURES), "instances": rows})
        headers, body = to_binary(event)
        assert session.post(proc.url, data=body, headers=headers, timeout=30).status_code == 202
        accepted.append((ident, t, rows))

    one()
    assert statuses.get("valid:202") and statuses.get("invalid:400"), statuses
    # Hypothesis may draw jitters that never go back far enough: one instance certainly late
    # (its window sealed long ago), delivered twice, so lateness and dedup are always covered.
    for _ in range(2):
        send_instances("late", BASE_MS + 5_000, [[4.0, 2.0, 1.0, 0.1]])
    # One last valid event far later: its watermark seals every window the fuzzed ones opened.
    send_instances("closing", BASE_MS + 10_000_000, [[5.0, 3.0, 1.0, 0.5]])

    reference = reference_run(accepted, 2000, 2000, 1000, flush=False)
    # The generated stream was rich enough: several windows, late instances, redeliveries.
    assert len(reference) >= 5 and sum(r["late"] for r in reference) > 0, (len(reference), statuses)
    assert len({a[0] for a in accepted}) < len(accepted), "no redelivered id was generated"
    expected = {ev.window_id("iris", r["start"], r["end"]): r for r in reference}
    wait_until(lambda: set(expected) <= {e["id"] for e in sink.of_type(ev.WINDOW_CLOSED)}, 30, 0.2,
               what="the aggregate function to close every sealed window")
    closed = {}
    for e in sink.of_type(ev.WINDOW_CLOSED):
        closed.setdefault(e["id"], e.data)
    assert set(closed) == set(expected)
    for wid, r in expected.items():
        w = closed[wid]
        validate_event_data(ev.WINDOW_CLOSED, w)
        table = np.array(r["rows"], dtype=float).reshape(-1, 4)
        assert w["count"] == len(table) and w["late"] == r["late"], (wid, w["count"], len(table), w["late"], r["late"])
        for j, name in enumerate(FEATURES):
            f = w["features"][name]
            if len(table):
                col = table[:, j]
                assert f["min"] == col.min() and f["max"] == col.max()
                assert f["sum"] == pytest.approx(col.sum(), rel=1e-12, abs=1e-9)
                assert percentile_within_bound(f["percentiles"]["50"], col, 50)
    assert proc.running
