"""A bug that an event triggers inside a function (an exception that is neither a refusal nor a
dependency outage) is answered 422 with the reason `internal error: <type>`, dead-lettered,
counted and logged in one line; never a 500, which Knative's broker would retry until the event
is dropped (a poison message). Real function processes (func-python) with a planted bug
(tests/funcs/buggy): ingest (handled inline on the event loop) and aggregate (on worker threads,
real Redis), then the local broker delivering to it: one attempt, no retry, the original in the
Trigger's dead-letter sink.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import requests

from event_sink import EventSink
from live_stack import FEATURES, now_ms, wait_until, write_monitor
from modelmonitor.core import events as ev
from modelmonitor.core.events import Event
from modelmonitor.local.broker import LocalBroker, load_triggers
from modelmonitor.local.procs import FunctionProcess
from modelmonitor.local.redis_server import RedisServer
from modelmonitor.runtime.wire import to_binary

BUGGY = Path(__file__).parent / "funcs" / "buggy"
REASON = "internal error: KeyError"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("internal")
    path = write_monitor(tmp / "monitor", duration="2s", watermark="1s", idle="1h")
    redis = RedisServer(durable=False).start()
    sink = EventSink()
    procs = {role: FunctionProcess(f"buggy-{role}", ["--func-dir", str(BUGGY), "--threads", "2"], env={
        "MODELMONITOR_ROLE": role, "MODELMONITOR_CONFIG": str(path),
        "MODELMONITOR_BASELINE": str(path.parent / "baseline.json"), "REDIS_URL": redis.url,
        "K_SINK": sink.url}, log_file=tmp / f"{role}.log") for role in ("ingest", "aggregate")}
    try:
        for proc in procs.values():
            proc.start()
        yield procs, sink
    finally:
        for proc in procs.values():
            proc.stop()
        sink.close()
        redis.cleanup()


def logger_event(**extensions) -> Event:
    return Event({"type": ev.KSERVE_REQUEST, "source": "http://localhost:9081/", "id": str(uuid.uuid4()),
                  "datacontenttype": "application/json", "inferenceservicename": "iris",
                  "time": ev.ms_to_rfc3339(now_ms() - 1000), **extensions},
                 {"instances": [[5.1, 3.5, 1.4, 0.2]]})


def instances_event(**extensions) -> Event:
    t = now_ms() - 1000
    rid = str(uuid.uuid4())
    return Event({"type": ev.INSTANCES, "source": "/modelmonitor/default/iris/ingest",
                  "id": f"iris/request/{rid}/0123456789abcdef", **extensions},
                 {"monitor": "iris", "requestId": rid, "kind": "request", "eventTime": ev.ms_to_rfc3339(t),
                  "eventTimeMs": t, "features": list(FEATURES), "instances": [[5.1, 3.5, 1.4, 0.2]]})


def internal_errors(proc: FunctionProcess, role: str) -> float:
    text = requests.get(proc.metrics_url, timeout=10).text
    m = re.search(r'^modelmonitor_events_in_total\{(?=[^}]*outcome="internal_error")(?=[^}]*role="%s")[^}]*\} (\S+)$'
                  % role, text, re.M)
    return float(m.group(1)) if m else 0.0


def post(url: str, event: Event) -> requests.Response:
    headers, body = to_binary(event)
    return requests.post(url, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize("role, make, ok", [("ingest", logger_event, 200), ("aggregate", instances_event, 202)])
def test_a_bug_is_answered_422_with_a_dead_letter_a_count_and_one_log_line(stack, role, make, ok):
    procs, sink = stack
    proc = procs[role]
    before = internal_errors(proc, role)
    bad = make(plantedbug="1")
    resp = post(proc.url, bad)
    assert resp.status_code == 422, resp.text
    assert resp.json() == {"error": REASON}
    wait_until(lambda: [e for e in sink.of_type(ev.DEAD_LETTER) if e.data["originalId"] == bad["id"]], 10,
               what="the dead letter")
    (dead,) = [e for e in sink.of_type(ev.DEAD_LETTER) if e.data["originalId"] == bad["id"]]
    assert (dead.data["reason"], dead.data["role"], dead.data["originalType"]) == (REASON, role, bad["type"])
    assert "5.1" in dead.data["originalData"]
    assert internal_errors(proc, role) == before + 1
    lines = [line for line in Path(proc.log_file).read_text().splitlines() if bad["id"] in line]
    assert len(lines) == 1 and REASON in lines[0] and "planted bug" in lines[0], lines
    assert "Traceback" not in Path(proc.log_file).read_text()
    # The function goes on: the same event without the bug is handled.
    assert post(proc.url, make()).status_code == ok


def test_the_broker_does_not_retry_a_bug_and_keeps_the_original(stack):
    procs, sink = stack
    proc = procs["ingest"]
    broker = LocalBroker(load_triggers([{
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": "ingest"},
        "spec": {"broker": "default", "filter": {"attributes": {"type": ev.KSERVE_REQUEST}},
                 "subscriber": {"ref": {"kind": "Service", "name": "ingest"}},
                 "delivery": {"retry": 5, "backoffDelay": "PT0.05S", "deadLetterSink": {"uri": sink.url + "dls"}}}}]),
        {"ingest": [proc.url]}).start()
    before = internal_errors(proc, "ingest")
    try:
        bad = logger_event(plantedbug="1")
        broker.publish(bad)
        assert broker.wait_idle(20)
        stats = broker.stats()["triggers"]["ingest"]
        assert (stats["retried"], stats["dead_lettered"], stats["delivered"]) == (0, 1, 0)
    finally:
        broker.stop()
    assert internal_errors(proc, "ingest") == before + 1          # one attempt
    kept = [e for status, path, e in sink.calls if path == "/dls" and e["id"] == bad["id"]]
    assert len(kept) == 1 and kept[0]["knativeerrorcode"] == "422"
    assert kept[0].data == bad.data                                # the whole original, to redrive
