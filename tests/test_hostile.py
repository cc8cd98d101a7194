"""Hostile and malformed input (SECURITY.md): every bad event gets a 4xx and a dead letter, never
a 5xx, a hang or a moved clock; a valid stream afterwards gives exactly the windows and alerts a
fresh stack gives.

(a) Pure, per role: generated events whose attributes and data are hostile (wrong JSON types,
    lone surrogates, NaN/Infinity, deep nesting, huge arrays, absurd and future times) through
    ingest, outlier, aggregate (encode) and drift (measure): accepted or :class:`Rejected` with
    a reason, the dead letter for it valid and encodable in binary and structured mode, and a
    rejected window.closed leaves the alert state as it was.
(b) HTTP: the same hostile events at real function processes of all four roles (real Redis),
    in binary and structured mode, some with a byte of the encoded body replaced by invalid
    UTF-8: only 200/202/400 (400 for every corrupted body), one dead letter per 400; then a valid stream of instances gives exactly the
    windows the brute-force reference gives over the accepted events, and those windows through
    the drift function give exactly the alerts the pure handler gives from a fresh alert state.
(c) The local broker ingress under malformed HTTP: tests/test_hostile_ingress.py.

Case counts: a few hundred per test by default; ``MODELMONITOR_HOSTILE_EXAMPLES=3000`` (or
``make test-hostile``) runs thousands per role and for the ingress.
"""
from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from event_sink import EventSink
from live_stack import FEATURES, now_ms, wait_until, write_monitor
from modelmonitor.core import events as ev
from modelmonitor.core.events import Event
from modelmonitor.core.schema_check import validate_event_data
from modelmonitor.handlers import Aggregator, MemoryAlertState, Monitor, Rejected, dead_letter, ingest, measure, outliers
from modelmonitor.local.procs import FunctionProcess
from modelmonitor.local.redis_server import RedisServer
from modelmonitor.runtime.wire import to_binary, to_structured
from reference import reference_run

EXAMPLES = int(os.environ.get("MODELMONITOR_HOSTILE_EXAMPLES", "300"))
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))
SKEW_MS = 300_000                      # the default maxClockSkew (5m)
SURROGATES = ["\ud800", "a\udfffb", "\udc00\ud800"]


@pytest.fixture(scope="module")
def mon(tmp_path_factory):
    return Monitor.from_files(str(write_monitor(tmp_path_factory.mktemp("hostile") / "iris")))


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

hostile_text = st.one_of(st.text(max_size=8), st.sampled_from(SURROGATES + ["", " ", "\x00", "é" * 3]))
hostile_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text,
                            st.sampled_from([float("nan"), float("inf"), -float("inf"), 10 ** 400, -0.0]))
hostile_json = st.recursive(hostile_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(hostile_text, kids, max_size=4)), max_leaves=20)


def deep(n: int):
    value: object = 1.0
    for _ in range(n):
        value = [value]
    return value


def absurd_times(now: int):
    return st.one_of(st.sampled_from([10 ** 30, -1, -10 ** 15, now + 86_400_000, now + SKEW_MS + 60_000,
                                      253_402_300_800_000, float(now), str(now), True, None, float("nan")]),
                     st.integers(now + SKEW_MS + 1, now + 10 ** 12), hostile_json)


@st.composite
def hostile_attributes(draw, etype: str):
    attrs = {"specversion": "1.0", "type": etype, "source": "/modelmonitor/default/iris/ingest",
             "id": f"iris/request/{draw(st.integers(0, 10 ** 6))}/h", "datacontenttype": "application/json"}
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(["type", "source", "id", "time", "x-ext", "monitor"]))
        attrs[key] = draw(st.one_of(hostile_scalars, st.lists(st.integers(), max_size=2),
                                    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
                                    st.sampled_from(SURROGATES)))
    return attrs


@st.composite
def instances_data(draw, now: int):
    t = now - draw(st.integers(0, 60_000))
    n = draw(st.integers(1, 4))
    data = {"monitor": "iris", "requestId": "r", "kind": "request", "eventTime": ev.ms_to_rfc3339(t),
            "eventTimeMs": t, "features": list(FEATURES),
            "instances": [[draw(st.floats(-50, 50)) for _ in FEATURES] for _ in range(n)]}
    what = draw(st.sampled_from(["none", "time", "time", "value", "rows", "features", "kind", "huge", "deep",
                                 "whole", "extra"]))
    if what == "time":
        data["eventTimeMs"] = draw(absurd_times(now))
    elif what == "value":
        data["instances"][0][draw(st.integers(0, 3))] = draw(hostile_json)
    elif what == "rows":
        data["instances"] = draw(hostile_json)
    elif what == "features":
        data["features"] = draw(hostile_json)
    elif what == "kind":
        data["kind"] = draw(hostile_json)
    elif what == "huge":
        data["instances"] = [[1.0, 2.0, 3.0, 4.0]] * 20_000 + [draw(hostile_json)]
    elif what == "deep":
        data["instances"] = [deep(draw(st.integers(50, 400)))]
    elif what == "whole":
        data = draw(hostile_json)
    elif what == "extra":
        data[draw(hostile_text)] = draw(hostile_json)
    return data


@st.composite
def window_data(draw, now: int):
    end = now - draw(st.integers(0, 3_600_000))
    data = {"monitor": "iris", "window": {"startMs": end - 2000, "endMs": end, "start": ev.ms_to_rfc3339(end - 2000),
                                         "end": ev.ms_to_rfc3339(end)},
            "count": draw(st.integers(0, 300)), "late": 0, "watermarkMs": end, "closedAtMs": now,
            "features": {f: {"count": 10, "mean": draw(st.floats(0, 8)), "stddev": 1.0, "min": 0.0, "max": 9.0}
                         for f in FEATURES}}
    what = draw(st.sampled_from(["time", "time", "closed", "count", "features", "window", "whole", "deep"]))
    if what == "time":
        data["window"]["endMs"] = draw(absurd_times(now))
        if isinstance(data["window"]["endMs"], int) and data["window"]["endMs"] > now:
            data["window"]["startMs"] = data["window"]["endMs"] - 2000
    elif what == "closed":
        data["closedAtMs"] = draw(hostile_json)
    elif what == "count":
        data["count"] = draw(hostile_json)
    elif what == "features":
        data["features"] = {FEATURES[0]: draw(hostile_json)} if draw(st.booleans()) else draw(hostile_json)
    elif what == "window":
        data["window"] = draw(hostile_json)
    elif what == "whole":
        data = draw(hostile_json)
    else:
        data["features"] = {FEATURES[0]: deep(draw(st.integers(50, 400)))}
    return data


def logger_data(draw, now: int):
    doc = draw(st.one_of(hostile_json, st.fixed_dictionaries({"instances": hostile_json}),
                         st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries(
                             {"name": hostile_json, "shape": hostile_json, "datatype": hostile_json,
                              "data": hostile_json}), max_size=2)})))
    return doc


def make_event(attrs: dict, data) -> Event:
    """The domain event, when it can exist at all (type and source non-empty strings: what
    the wire layer refuses first, answered 400 "not a CloudEvent", is covered over HTTP)."""
    try:
        return Event(attrs, data)
    except ValueError:
        assume(False)


def check_dead_letter(mon: Monitor, role: str, reason: str, event: Event) -> None:
    assert isinstance(reason, str) and reason.strip()
    dead = dead_letter(mon.name, role, reason, original=event)
    validate_event_data(ev.DEAD_LETTER, dead.data)
    to_binary(dead)[1].decode("utf-8")          # sendable in both modes, whatever the original held
    to_structured(dead)[1].decode("utf-8")


# ---------------------------------------------------------------------------------------------
# (a) pure handlers
# ---------------------------------------------------------------------------------------------

NOW = 1_795_341_603_123


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_ingest_accepts_or_rejects_hostile_logger_events(mon, data):
    attrs = data.draw(hostile_attributes(data.draw(st.sampled_from([ev.KSERVE_REQUEST, ev.KSERVE_RESPONSE]))))
    attrs["inferenceservicename"] = "iris"
    if data.draw(st.booleans()):
        attrs["time"] = ev.ms_to_rfc3339(data.draw(st.integers(0, 253_402_300_799_999)))
    event = make_event(attrs, logger_data(data.draw, NOW))
    try:
        out = ingest(mon, event, NOW)
    except Rejected as exc:
        check_dead_letter(mon, "ingest", exc.reason, event)
        return
    if out is not None:
        assert out.data["eventTimeMs"] - NOW <= SKEW_MS
        validate_event_data(ev.INSTANCES, out.data)
        to_binary(out)


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_outlier_and_aggregate_accept_or_reject_hostile_instances(mon, data):
    event = make_event(data.draw(hostile_attributes(ev.INSTANCES)), data.draw(instances_data(NOW)))
    verdicts = []
    for role, run in (("outlier", lambda: outliers(mon, event, NOW)),
                      ("aggregate", lambda: Aggregator(mon, store=None).encode(event, NOW))):
        try:
            run()
            verdicts.append(None)
        except Rejected as exc:
            check_dead_letter(mon, role, exc.reason, event)
            verdicts.append(exc.reason)
    # One validation boundary: both roles accept or refuse the same instances event alike.
    assert (verdicts[0] is None) == (verdicts[1] is None), verdicts
    if verdicts[1] is None:
        t = event.data["eventTimeMs"]
        assert type(t) is int and 0 <= t <= NOW + SKEW_MS


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_drift_rejects_hostile_windows_before_touching_the_alert_state(mon, data):
    event = make_event(data.draw(hostile_attributes(ev.WINDOW_CLOSED)), data.draw(window_data(NOW)))
    alerts = MemoryAlertState()
    alerts.state = {"streak": 1, "lastWindowEndMs": NOW - 7_200_000, "lastAlertEndMs": None}
    before = json.dumps(alerts.state)
    try:
        out = measure(mon, event, NOW, alerts)
    except Rejected as exc:
        check_dead_letter(mon, "drift", exc.reason, event)
        assert json.dumps(alerts.state) == before, "a rejected window moved the alert state"
        return
    end = event.data["window"]["endMs"]
    assert end <= NOW + SKEW_MS
    for e in out:
        json.dumps(e.data, allow_nan=False)


def test_record_line_keeps_events_strict_json_cannot_hold():
    """--events-out: NaN/Infinity data and raw bytes are recorded as data_base64 and read back."""
    for data, expected in (({"x": float("nan"), "y": [float("inf"), -float("inf")]}, b'{"x": NaN, "y": [Infinity, -Infinity]}'),
                           (b"\xff\xfe raw", b"\xff\xfe raw")):
        line = ev.to_record_line(Event({"type": "t", "source": "s", "id": "1"}, data), 5)
        doc = json.loads(line)
        assert doc["brokerreceivedms"] == 5 if "brokerreceivedms" in doc else True
        assert base64.b64decode(doc["data_base64"]) == expected
        assert ev.from_json_doc(doc).data == expected
    strict = ev.to_record_line(Event({"type": "t", "source": "s", "id": "1"}, {"x": 1.5}))
    assert json.loads(strict)["data"] == {"x": 1.5}


def test_dead_letter_data_is_cut_at_64_kib_of_utf8():
    """originalData's limit is in bytes: a body of invalid UTF-8 (one U+FFFD, 3 bytes, per byte)
    or of 2-byte characters is cut there, never into a character (found by (b))."""
    for raw in (b"\xff" * 70_000, "é".encode() * 40_000, b"a" * 65_535 + "é".encode(), b"a" * 65_536):
        data = dead_letter("iris", "ingest", "r", raw=raw).data
        validate_event_data(ev.DEAD_LETTER, data)
        kept = data["originalData"].encode()
        assert 65_534 <= len(kept) <= 65_536 and raw.decode("utf-8", "replace").encode().startswith(kept)
        assert data["truncated"] == (len(raw.decode("utf-8", "replace").encode()) > 65_536)


# ---------------------------------------------------------------------------------------------
# (b) real function processes: hostile events, then a valid stream
# ---------------------------------------------------------------------------------------------

def _process(role, path, redis_url, sink_url, log_file):
    return FunctionProcess(f"hostile-{role}", ["--role", role, "--threads", "4"], env={
        "MODELMONITOR_ROLE": role, "MODELMONITOR_CONFIG": str(path),
        "MODELMONITOR_BASELINE": str(path.parent / "baseline.json"), "REDIS_URL": redis_url,
        "K_SINK": sink_url}, log_file=str(log_file)).start()


def _post(session, url, attrs: dict, data, structured: bool, corrupt_at: int | None = None):
    """POST an event in binary or structured mode; what a client library refuses to encode (an
    attribute that is no string, a header value HTTP forbids) goes out as hand-made structured JSON.
    ``corrupt_at``: that byte of the body (modulo its length) becomes 0xFF, never valid UTF-8."""
    def send(body: bytes, headers):
        if corrupt_at is not None:
            k = corrupt_at % max(len(body), 1)
            body = body[:k] + b"\xff" + body[k + 1:]
        return session.post(url, data=body, headers=headers, timeout=60)

    if not structured:
        try:
            headers, body = to_binary(Event(attrs, data))
            return send(body, headers)
        except (ValueError, TypeError, UnicodeError, RecursionError):
            pass
    try:
        body = json.dumps(dict(attrs, data=data)).encode()
    except (ValueError, TypeError, RecursionError):
        return None
    return send(body, {"content-type": "application/cloudevents+json"})


def test_functions_answer_hostile_events_and_stay_exact(tmp_path):
    redis = RedisServer(durable=False).start()
    sink = EventSink()
    path = write_monitor(tmp_path / "monitor", duration="2s", watermark="1s", idle="1h")
    procs = {role: _process(role, path, redis.url, sink.url, tmp_path / f"{role}.log")
             for role in ("ingest", "outlier", "aggregate", "drift")}
    agg, drift = procs["aggregate"], procs["drift"]
    mon = Monitor.from_files(str(path))
    session = requests.Session()
    start = now_ms()
    accepted_instances: list = []
    accepted_windows: list = []
    answers: dict[str, int] = {}
    rejected = 0
    try:
        @settings(max_examples=max(EXAMPLES, 50), **SETTINGS)
        @given(data=st.data())
        def one(data):
            nonlocal rejected
            role = data.draw(st.sampled_from(["ingest", "outlier", "aggregate", "aggregate", "drift", "drift"]))
            # Accepted ones must lie before the valid stream: event times up to an hour back.
            now = start - 3_700_000
            if role == "ingest":
                attrs = data.draw(hostile_attributes(data.draw(st.sampled_from([ev.KSERVE_REQUEST,
                                                                                ev.KSERVE_RESPONSE]))))
                attrs.setdefault("inferenceservicename", "iris")
                body = logger_data(data.draw, now)
            else:
                attrs = data.draw(hostile_attributes(ev.WINDOW_CLOSED if role == "drift" else ev.INSTANCES))
                body = data.draw(window_data(now) if role == "drift" else instances_data(now))
            if isinstance(body, dict) and data.draw(st.integers(0, 3)) == 0:   # the forged clocks
                ahead = now_ms() + data.draw(st.sampled_from([86_400_000, SKEW_MS + 60_000]))  # of the clock now:
                if role in ("aggregate", "outlier"):                    # 3,000 cases take minutes
                    body["eventTimeMs"] = ahead
                elif isinstance(body.get("window"), dict):
                    body["window"].update(startMs=ahead - 2000, endMs=ahead)
            corrupt_at = data.draw(st.integers(0, 10 ** 6)) if data.draw(st.integers(0, 9)) == 0 else None
            resp = _post(session, procs[role].url, attrs, body, data.draw(st.booleans()), corrupt_at)
            if resp is None:
                return
            answers[f"{role}:{resp.status_code}"] = answers.get(f"{role}:{resp.status_code}", 0) + 1
            assert resp.status_code in (200, 202, 400), (role, resp.status_code, resp.text[:300])
            assert corrupt_at is None or resp.status_code == 400, (role, resp.status_code, resp.text[:300])
            if resp.status_code == 400:
                if "json" in resp.headers.get("content-type", ""):
                    rejected += 1           # the function's answer: it sends a dead letter
                    assert resp.json()["error"].strip()
                # else the HTTP server refused the request itself (a control character in a
                # header): no event ever reached the function, so there is nothing to dead-letter.
            elif role in ("ingest", "outlier"):
                pass                        # stateless: nothing they accept can disturb what follows
            elif role == "aggregate":
                accepted_instances.append((attrs["id"], body["eventTimeMs"], body["instances"]))
            else:
                accepted_windows.append(Event(attrs, body))

        one()
        assert all(answers.get(f"{role}:400") for role in procs), answers
        assert all(proc.running for proc in procs.values())
        wait_until(lambda: len(sink.of_type(ev.DEAD_LETTER)) >= rejected, 30, what="one dead letter per 400")
        assert len(sink.of_type(ev.DEAD_LETTER)) == rejected
        for dead in sink.of_type(ev.DEAD_LETTER):
            validate_event_data(ev.DEAD_LETTER, dead.data)

        # The valid stream: 8 windows of 120 drifted rows (every value shifted; minWindowCount is 100),
        # then one request that seals them.
        rng = np.random.default_rng(16)
        # After every accepted instance (the clock rule lets one be up to maxClockSkew ahead).
        latest = max([t for _, t, _ in accepted_instances], default=0)
        base = (max(now_ms() - 40_000, latest + 2000) + 1999) // 2000 * 2000
        assert base + 30_000 < now_ms() + SKEW_MS - 30_000, "an accepted instance left no room for the stream"
        stream = []
        for i in range(80):
            t = base + i * 200
            rows = (rng.normal([5.8, 3.0, 3.7, 1.2], 0.3, (12, 4)) + 4.0).round(3).tolist()
            stream.append((f"iris/request/valid-{i}/h", t, rows))
        stream.append(("iris/request/valid-seal/h", base + 30_000, [[5.0, 3.0, 1.5, 0.2]]))
        for ident, t, rows in stream:
            event = Event({"type": ev.INSTANCES, "source": "/modelmonitor/default/iris/ingest", "id": ident},
                          {"monitor": "iris", "requestId": ident, "kind": "request", "eventTime": ev.ms_to_rfc3339(t),
                           "eventTimeMs": t, "features": list(FEATURES), "instances": rows})
            resp = _post(session, agg.url, dict(event.get_attributes()), event.data, False)
            assert resp.status_code in (200, 202), (resp.status_code, resp.text[:300])
        reference = reference_run(accepted_instances + stream, 2000, 2000, 1000, flush=False)
        valid_windows = [r for r in reference if r["start"] >= base]
        assert len(valid_windows) >= 8
        expected = {ev.window_id("iris", r["start"], r["end"]): r for r in reference}
        wait_until(lambda: set(expected) <= {e["id"] for e in sink.of_type(ev.WINDOW_CLOSED)}, 60, 0.2,
                   what="every sealed window")
        closed = {e["id"]: e for e in sink.of_type(ev.WINDOW_CLOSED)}
        assert set(closed) == set(expected), "the windows differ from the reference over the accepted events"
        for wid, r in expected.items():
            w = closed[wid].data
            table = np.array(r["rows"], dtype=float).reshape(-1, 4)
            assert w["count"] == len(table) and w["late"] == r["late"]
            if len(table):
                assert w["features"][FEATURES[0]]["min"] == table[:, 0].min()

        # Those windows through the drift function, in order: the alerts a fresh alert state gives
        # after the windows drift accepted during the hostile phase.
        fresh = MemoryAlertState()
        for event in accepted_windows:
            measure(mon, event, now_ms(), fresh)
        want_alerts = []
        for r in valid_windows:
            event = closed[ev.window_id("iris", r["start"], r["end"])]
            want_alerts += [e["id"] for e in measure(mon, event, now_ms(), fresh) if e["type"] == ev.DRIFT_DETECTED]
            resp = _post(session, drift.url, dict(event.get_attributes()), event.data, False)
            assert resp.status_code in (200, 202), (resp.status_code, resp.text[:300])
        assert want_alerts, "the drifted stream should raise an alert"
        wait_until(lambda: len(sink.of_type(ev.DRIFT_DETECTED)) >= len(want_alerts), 30, what="alerts")
        got = [e["id"] for e in sink.of_type(ev.DRIFT_DETECTED) if e["id"] in
               {ev.window_id("iris", r["start"], r["end"]) + "/alert" for r in valid_windows}]
        assert got == want_alerts
    finally:
        for proc in procs.values():
            proc.stop()
        sink.close()
        redis.cleanup()
