"""The local broker against real function processes (func-python functions served by hypercorn).

Toy subscribers live in tests/funcs/: echo (records, 202), replier (answers with a Event
of another type), flaky (500 for the first N calls per event id), bad (always 400). Each runs
as its own `python -m modelmonitor.runtime.serve` process on a loopback port and writes one
JSON line per call to its own record file, which the tests read after `broker.wait_idle()`.
"""
from __future__ import annotations

import base64
import collections
import doctest
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from modelmonitor.runtime.wire import to_binary, to_structured
from modelmonitor.core.events import Event

from modelmonitor.local import broker as broker_module
from modelmonitor.local import procs as procs_module
from modelmonitor.local.broker import (AllFilter, AttributesFilter, BrokerConfigError, DeliverySpec,
                                 LocalBroker, UnsupportedFilterError, backoff_delay,
                                 load_triggers, parse_duration, parse_filter)
from modelmonitor.runtime import serve as serve_module
from modelmonitor.local.procs import FunctionPool, FunctionProcess, free_port, start_all, stop_all

FUNCS = Path(__file__).parent / "funcs"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def records_for(path: Path, ids: set[str]) -> list[dict]:
    out = []
    for rec in records(path):
        rec_id = rec.get("id") or rec.get("attrs", {}).get("id")
        if rec_id in ids:
            out.append(rec)
    return out


def event(type_: str, id_: str | None = None, data=None, **extensions) -> Event:
    attrs = {"type": type_, "source": "/tests/broker", "id": id_ or f"ev-{uuid.uuid4().hex[:12]}",
             "datacontenttype": "application/json", **extensions}
    return Event(attrs, data if data is not None else {"n": 1})


def trigger(name: str, subscriber: dict, attributes: dict | None = None, filters=None,
            delivery: dict | None = None, annotations: dict | None = None,
            broker: str = "default") -> dict:
    spec: dict = {"broker": broker, "subscriber": subscriber}
    if attributes is not None:
        spec["filter"] = {"attributes": attributes}
    if filters is not None:
        spec["filters"] = filters
    if delivery is not None:
        spec["delivery"] = delivery
    meta: dict = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": meta,
            "spec": spec}


def ref(name: str, kind: str = "Service") -> dict:
    return {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": kind, "name": name}}


class Funcs:
    """The module's function processes and their record files."""

    def __init__(self, tmp: Path):
        self.tmp = tmp

        def proc(name: str, func: str, **env: str) -> FunctionProcess:
            rec = tmp / f"{name}.jsonl"
            return FunctionProcess(name, ["--func-dir", str(FUNCS / func), "--threads", "8"],
                                   env={"RECORD_FILE": str(rec), **env},
                                   log_file=tmp / f"{name}.log")

        self.echo = proc("echo", "echo")
        self.replier = proc("replier", "replier")
        self.flaky = proc("flaky", "flaky", FLAKY_FAILURES="2")
        self.forever = proc("forever", "flaky", FLAKY_FAILURES="1000000")
        self.bad = proc("bad", "bad")
        self.dls = proc("dls", "echo")
        self.victim = proc("victim", "echo")
        self.pool = FunctionPool("pool", 2, ["--func-dir", str(FUNCS / "echo")],
                                 env={"RECORD_FILE": str(tmp / "pool.jsonl")})
        self.all = [self.echo, self.replier, self.flaky, self.forever, self.bad, self.dls,
                    self.victim, *self.pool]

    def rec(self, name: str) -> Path:
        return self.tmp / f"{name}.jsonl"

    def resolve(self) -> dict[str, list[str]]:
        return {"echo": [self.echo.url], "replier": [self.replier.url],
                "flaky": [self.flaky.url], "forever": [self.forever.url],
                "bad": [self.bad.url], "dls": [self.dls.url], "victim": [self.victim.url],
                "pool": self.pool.urls}


@pytest.fixture(scope="module")
def funcs(tmp_path_factory):
    f = Funcs(tmp_path_factory.mktemp("funcs"))
    try:
        start_all(f.all)
        yield f
    finally:
        stop_all(f.all)


@pytest.fixture
def make_broker():
    brokers: list[LocalBroker] = []

    def make(docs, resolve=None, **kwargs) -> LocalBroker:
        b = LocalBroker(load_triggers(docs), resolve or {}, **kwargs)
        brokers.append(b)
        return b.start()

    yield make
    for b in brokers:
        b.stop(timeout=2.0, drain=False)


def post(url: str, ev: Event, structured: bool = False) -> requests.Response:
    headers, body = (to_structured if structured else to_binary)(ev)
    return requests.post(url, data=body, headers=headers, timeout=5)


# ---------------------------------------------------------------------------------------------
# pure parts: durations, backoff, filters, YAML
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("PT0.2S", 0.2), ("PT1S", 1.0), ("PT10M", 600.0), ("PT1H30M", 5400.0), ("P1D", 86400.0),
    ("P1W", 604800.0), ("P1DT0.5S", 86400.5), ("PT0,25S", 0.25), ("pt2s", 2.0)])
def test_parse_duration_accepts_iso8601(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "P", "PT", "P1DT", "0.2s", "PT-1S", "1S", "P1M", "P1Y",
                                  "PT1S2M", "2007-03-01T13:00:00Z/P1Y2M10DT2H30M"])
def test_parse_duration_refuses_other_text(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_backoff_arithmetic_linear_and_exponential():
    assert [backoff_delay("linear", 0.2, n) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.2, 0.4, 0.6, 0.8])
    assert [backoff_delay("exponential", 0.2, n) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.4, 0.8, 1.6, 3.2])
    assert backoff_delay("exponential", 0.2, 20, maximum=5.0) == 5.0
    assert backoff_delay("linear", 0.2, 3, maximum=5.0) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        backoff_delay("linear", 0.2, 0)
    with pytest.raises(ValueError):
        backoff_delay("fibonacci", 0.2, 1)


def test_filter_dialects():
    attrs = {"type": "io.modelmonitor.drift.detected", "source": "/m/iris/drift", "id": "1",
             "monitor": "iris"}
    assert AttributesFilter({"type": "io.modelmonitor.drift.detected", "monitor": "iris"}).matches(attrs)
    assert not AttributesFilter({"monitor": "wine"}).matches(attrs)
    assert AttributesFilter({"monitor": ""}).matches({"type": "x"})        # "" = any value
    assert not parse_filter({"exact": {"monitor": "iris"}}).matches({"type": "x"})
    assert parse_filter({"prefix": {"type": "io.modelmonitor."}}).matches(attrs)
    assert parse_filter({"suffix": {"type": ".detected"}}).matches(attrs)
    assert not parse_filter({"suffix": {"type": ".measured"}}).matches(attrs)
    assert parse_filter({"not": {"exact": {"monitor": "wine"}}}).matches(attrs)
    both = parse_filter({"all": [{"prefix": {"type": "io."}}, {"exact": {"monitor": "wine"}}]})
    either = parse_filter({"any": [{"prefix": {"type": "io."}}, {"exact": {"monitor": "wine"}}]})
    assert not both.matches(attrs) and either.matches(attrs)
    assert AllFilter(()).matches(attrs)
    with pytest.raises(UnsupportedFilterError, match="cesql"):
        parse_filter({"cesql": "type = 'x'"})
    with pytest.raises(BrokerConfigError, match="exactly one dialect"):
        parse_filter({"exact": {"type": "a"}, "prefix": {"type": "b"}})
    with pytest.raises(BrokerConfigError, match="non-empty string"):
        parse_filter({"prefix": {"type": ""}})


def test_load_triggers_from_yaml_files_and_folders(tmp_path):
    (tmp_path / "broker.yaml").write_text("""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, annotations: {eventing.knative.dev/broker.class: Kafka}}
spec:
  delivery:
    retry: 4
    backoffPolicy: linear
    backoffDelay: PT0.5S
    deadLetterSink: {uri: "http://127.0.0.1:9/dead"}
""")
    (tmp_path / "triggers.yml").write_text("""
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: outlier
  annotations: {kafka.eventing.knative.dev/delivery.order: ordered}
spec:
  broker: default
  filter: {attributes: {type: io.modelmonitor.inference.instances, monitor: iris}}
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: outlier}}
  delivery: {retry: 1, timeout: PT2S}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: elsewhere}
spec: {broker: other, subscriber: {uri: "http://127.0.0.1:9/"}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata: {name: iris-stats}
spec: {topic: iris-stats, bootstrapServers: ["127.0.0.1:9092"], contentMode: structured}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: tick}
spec: {schedule: "*/5 * * * * *"}
""")
    (tmp_path / "notes.txt").write_text("not yaml: [")
    loaded = load_triggers([tmp_path])
    assert [t.name for t in loaded] == ["outlier", "elsewhere"]
    outlier = loaded[0]
    assert outlier.ordered and outlier.subscriber.ref_name == "outlier"
    assert outlier.matches({"type": "io.modelmonitor.inference.instances", "monitor": "iris"})
    assert not outlier.matches({"type": "io.modelmonitor.inference.instances", "monitor": "x"})
    assert loaded.kafka_sinks["iris-stats"].content_mode == "structured"
    assert [d["kind"] for d in loaded.other_docs] == ["PingSource"]
    # Field-by-field fallback: the Trigger's retry and timeout, the Broker's policy, delay, DLS.
    b = LocalBroker(loaded, {"outlier": "http://127.0.0.1:9/"})
    assert [t.name for t in b.triggers] == ["outlier"]           # 'elsewhere' is another broker's
    effective = outlier.delivery.merged_over(b.delivery_defaults)
    assert (effective.retry, effective.backoff_policy, effective.backoff_delay,
            effective.timeout) == (1, "linear", 0.5, 2.0)
    assert effective.dead_letter_sink.uri == "http://127.0.0.1:9/dead"
    # Without any Broker document, Knative's defaults apply.
    bare = LocalBroker([], {})
    assert (bare.delivery_defaults.retry, bare.delivery_defaults.backoff_policy,
            bare.delivery_defaults.backoff_delay) == (10, "exponential", 0.2)


def test_yaml_errors_name_the_trigger_and_field(tmp_path):
    with pytest.raises(BrokerConfigError, match="Trigger t1.*backoffDelay"):
        load_triggers([trigger("t1", {"uri": "http://127.0.0.1:9/"},
                               delivery={"backoffDelay": "200ms"})])
    with pytest.raises(BrokerConfigError, match="Trigger t2.*subscriber"):
        load_triggers([{"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                        "metadata": {"name": "t2"}, "spec": {"broker": "default"}}])
    with pytest.raises(UnsupportedFilterError, match="Trigger t3.*cesql"):
        load_triggers([trigger("t3", {"uri": "http://127.0.0.1:9/"},
                               filters=[{"cesql": "type = 'a'"}])])
    with pytest.raises(BrokerConfigError, match="declared twice"):
        load_triggers([trigger("t4", {"uri": "http://127.0.0.1:9/"})] * 2)
    with pytest.raises(BrokerConfigError, match="no such file"):
        load_triggers([tmp_path / "missing.yaml"])


def test_unresolvable_ref_is_a_clear_error_at_start():
    b = LocalBroker(load_triggers([trigger("ingest", ref("ingest"))]), {"drift": ["http://x/"]})
    with pytest.raises(BrokerConfigError, match="Trigger ingest.*Service/ingest.*known: drift"):
        b.start()


def test_docstring_examples_hold():
    from modelmonitor.core import backoff as backoff_module
    from modelmonitor.local import runner, supervisor
    from modelmonitor.local.broker import config, dispatch, filters, log, targets, wire
    for module in (broker_module, config, filters, targets, log, wire, dispatch, backoff_module,
                   procs_module, serve_module, supervisor, runner):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# ---------------------------------------------------------------------------------------------
# the broker with real function processes
# ---------------------------------------------------------------------------------------------

def test_binary_and_structured_events_are_delivered(funcs, make_broker):
    seen: list[Event] = []
    lock = threading.Lock()

    def on_event(ev):
        with lock:
            seen.append(ev)

    b = make_broker([trigger("basic", ref("echo"), {"type": "test.basic"})], funcs.resolve(),
                    on_event=on_event)
    binary = event("test.basic", data={"instances": [[1.0, 2.0]]}, monitor="iris")
    structured = event("test.basic", data={"instances": [[3.0, 4.0]]}, monitor="wine")
    assert post(b.url, binary).status_code == 202              # /default/default
    assert post(b.base_url, structured, structured=True).status_code == 202   # /
    assert b.wait_idle(10)
    got = {r["attrs"]["id"]: r for r in records_for(funcs.rec("echo"),
                                                      {binary["id"], structured["id"]})}
    assert got[binary["id"]]["data"] == {"instances": [[1.0, 2.0]]}
    assert got[binary["id"]]["attrs"]["monitor"] == "iris"
    assert got[structured["id"]]["data"] == {"instances": [[3.0, 4.0]]}
    assert got[structured["id"]]["attrs"]["monitor"] == "wine"
    assert {r["prefer"] for r in got.values()} == {"reply"}
    assert sorted(e["id"] for e in seen) == sorted([binary["id"], structured["id"]])
    stats = b.stats()
    assert stats["accepted"] == 2 and stats["triggers"]["basic"]["delivered"] == 2


def test_filters_route_by_attributes_and_extensions(funcs, make_broker):
    b = make_broker([
        trigger("iris-only", ref("echo"), {"type": "test.filter", "monitor": "iris"}),
        trigger("not-iris", ref("echo"), filters=[{"prefix": {"type": "test.filt"}},
                                                  {"not": {"exact": {"monitor": "iris"}}}]),
    ], funcs.resolve())
    iris = event("test.filter", monitor="iris")
    wine = event("test.filter", monitor="wine")
    stray = event("test.other", monitor="iris")
    for ev in (iris, wine, stray):
        assert post(b.url, ev).status_code == 202
    assert b.wait_idle(10)
    delivered = collections.Counter(r["attrs"]["id"] for r in records_for(
        funcs.rec("echo"), {iris["id"], wine["id"], stray["id"]}))
    assert delivered == {iris["id"]: 1, wine["id"]: 1}
    stats = b.stats()
    assert stats["triggers"]["iris-only"]["delivered"] == 1
    assert stats["triggers"]["not-iris"]["delivered"] == 1
    assert stats["unmatched"] == 1


def test_replies_are_republished_to_matching_triggers_without_looping(funcs, make_broker):
    seen = []
    b = make_broker([
        trigger("ask", ref("replier"), {"type": "test.request"}),
        trigger("answer", ref("echo"), {"type": "test.reply"}),
    ], funcs.resolve(), on_event=seen.append)
    request = event("test.request", testcase="reply")
    assert post(b.url, request).status_code == 202
    assert b.wait_idle(10)
    assert len(records_for(funcs.rec("replier"), {request["id"]})) == 1
    replies = records_for(funcs.rec("echo"), {"reply-" + request["id"]})
    assert len(replies) == 1
    assert replies[0]["attrs"]["type"] == "test.reply"
    assert replies[0]["attrs"]["testcase"] == "reply"
    assert replies[0]["data"] == {"original": request["id"], "originalType": "test.request"}
    stats = b.stats()
    assert stats["triggers"]["ask"]["replies"] == 1 and stats["triggers"]["answer"]["replies"] == 0
    assert [e["type"] for e in seen] == ["test.request", "test.reply"]


def test_reply_loop_is_cut_after_max_hops(funcs, make_broker):
    # A Trigger without filter sends the replier its own replies: a loop Knative would not stop.
    b = make_broker([trigger("everything", ref("replier"))], funcs.resolve(), max_hops=3)
    first = event("test.loop")
    b.publish(first)
    assert b.wait_idle(10)
    chain = {first["id"], *("reply-" * n + first["id"] for n in range(1, 6))}
    calls = records_for(funcs.rec("replier"), chain)
    assert len(calls) == 4                      # the original and 3 replies
    assert b.stats()["loops_dropped"] == 1


def test_flaky_subscriber_is_retried_with_backoff(funcs, make_broker):
    b = make_broker([trigger("flaky", ref("flaky"), {"type": "test.flaky"},
                             delivery={"retry": 3, "backoffPolicy": "linear",
                                       "backoffDelay": "PT0.15S"})], funcs.resolve())
    ev = event("test.flaky")
    b.publish(ev)
    assert b.wait_idle(10)
    calls = sorted(records_for(funcs.rec("flaky"), {ev["id"]}), key=lambda r: r["start"])
    assert [c["status"] for c in calls] == [500, 500, 202]
    gaps = [calls[1]["start"] - calls[0]["start"], calls[2]["start"] - calls[1]["start"]]
    assert gaps[0] >= 0.15 * 1 - 0.01 and gaps[1] >= 0.15 * 2 - 0.01, gaps
    assert gaps[1] > gaps[0]
    stats = b.stats()["triggers"]["flaky"]
    assert (stats["delivered"], stats["retried"], stats["dead_lettered"]) == (1, 2, 0)


def test_permanent_failure_goes_to_dead_letter_sink_after_retries(funcs, make_broker):
    b = make_broker([trigger("forever", ref("forever"), {"type": "test.forever"},
                             delivery={"retry": 2, "backoffPolicy": "exponential",
                                       "backoffDelay": "PT0.05S",
                                       "deadLetterSink": ref("dls")})], funcs.resolve())
    ev = event("test.forever", data={"x": 1}, monitor="iris")
    b.publish(ev)
    assert b.wait_idle(10)
    calls = sorted(records_for(funcs.rec("forever"), {ev["id"]}), key=lambda r: r["start"])
    assert len(calls) == 3
    assert calls[1]["start"] - calls[0]["start"] >= 0.1 - 0.01        # 0.05 * 2**1
    assert calls[2]["start"] - calls[1]["start"] >= 0.2 - 0.01        # 0.05 * 2**2
    dead = records_for(funcs.rec("dls"), {ev["id"]})
    assert len(dead) == 1
    attrs = dead[0]["attrs"]
    assert attrs["knativeerrorcode"] == "500"
    assert attrs["knativeerrordest"] == funcs.forever.url
    assert base64.b64decode(attrs["knativeerrordata"]).decode().startswith(
        f"flaky failure 3 of 1000000 for {ev['id']}")
    assert attrs["monitor"] == "iris" and dead[0]["data"] == {"x": 1}
    stats = b.stats()["triggers"]["forever"]
    assert (stats["retried"], stats["dead_lettered"], stats["delivered"]) == (2, 1, 0)


def test_non_retryable_400_is_dead_lettered_at_once_or_kept_in_the_dead_letter_log(funcs, make_broker):
    b = make_broker([
        trigger("bad-dls", ref("bad"), {"type": "test.bad", "testcase": "dls"},
                delivery={"retry": 5, "backoffDelay": "PT0.05S",
                          "deadLetterSink": {"uri": funcs.dls.url}}),
        trigger("bad-drop", ref("bad"), {"type": "test.bad", "testcase": "drop"},
                delivery={"retry": 5, "backoffDelay": "PT0.05S"}),
    ], funcs.resolve())
    to_dls = event("test.bad", testcase="dls")
    to_drop = event("test.bad", testcase="drop")
    b.publish(to_dls)
    b.publish(to_drop)
    assert b.wait_idle(10)
    assert len(records_for(funcs.rec("bad"), {to_dls["id"]})) == 1
    assert len(records_for(funcs.rec("bad"), {to_drop["id"]})) == 1
    dead = records_for(funcs.rec("dls"), {to_dls["id"]})
    assert len(dead) == 1 and dead[0]["attrs"]["knativeerrorcode"] == "400"
    assert "accepts nothing" in base64.b64decode(dead[0]["attrs"]["knativeerrordata"]).decode()
    assert records_for(funcs.rec("dls"), {to_drop["id"]}) == []
    stats = b.stats()
    assert stats["triggers"]["bad-dls"]["retried"] == 0
    assert stats["triggers"]["bad-dls"]["dead_lettered"] == 1
    # Without a deadLetterSink nothing is dropped: the event waits in the local dead-letter log
    # with the reason, and a redrive delivers it again to that Trigger only.
    assert stats["triggers"]["bad-drop"]["dead_letter_logged"] == 1 and stats["dropped"] == 0
    kept = b.log.dead_letters()
    assert [(d.trigger, d.status, d.entry.headers["ce-id"]) for d in kept] == \
        [("bad-drop", 400, to_drop["id"])]
    assert "non-retryable" in kept[0].reason and stats["dead_letters"] == 1
    assert b.log.redrive(trigger="bad-drop") == 1 and b.log.dead_letter_count() == 0
    assert b.wait_idle(10)
    assert len(records_for(funcs.rec("bad"), {to_drop["id"]})) == 2
    assert len(records_for(funcs.rec("bad"), {to_dls["id"]})) == 1   # not redriven
    assert [d.entry.headers["ce-id"] for d in b.log.dead_letters()] == [to_drop["id"]]


def test_ingress_paths_and_rejections(funcs, make_broker):
    b = make_broker([trigger("any", ref("echo"), {"type": "test.ingress"}, broker="monitoring")],
                    funcs.resolve(), namespace="ml", name="monitoring", max_body_bytes=1024)
    assert [t.name for t in b.triggers] == ["any"]
    assert b.url.endswith("/ml/monitoring")
    ok = event("test.ingress")
    assert post(b.url, ok).status_code == 202
    assert post(b.url + "/", event("test.ingress")).status_code == 202
    assert post(b.base_url + "default/default", event("test.ingress")).status_code == 404
    assert requests.get(b.base_url + "healthz", timeout=5).status_code == 200

    garbage = requests.post(b.url, data=b"hello", headers={"Content-Type": "text/plain"},
                            timeout=5)
    assert garbage.status_code == 400 and "not a CloudEvent" in garbage.text
    long_garbage = requests.post(b.url, data=b"z" * 1000, timeout=5)
    assert long_garbage.status_code == 400 and len(long_garbage.text) < 400
    no_id = requests.post(b.url, data=b"{}", timeout=5, headers={
        "ce-specversion": "1.0", "ce-type": "test.ingress", "ce-source": "/x",
        "content-type": "application/json"})
    assert no_id.status_code == 400 and "ce-id" in no_id.text

    big = event("test.ingress", data={"blob": "x" * 2048})
    too_big = post(b.url, big)
    assert too_big.status_code == 413 and "1024" in too_big.text
    # A structured event over the limit is refused the same way; the ingress still works after.
    assert post(b.url, big, structured=True).status_code == 413
    assert post(b.url, event("test.ingress")).status_code == 202
    assert b.wait_idle(10)
    stats = b.stats()
    assert stats["accepted"] == 3 and stats["rejected"] == 6      # every refused request, by status:
    assert stats["refused"] == {404: 1, 400: 3, 413: 2}
    assert records_for(funcs.rec("echo"), {big["id"]}) == []


def test_killed_function_is_retried_until_restarted(funcs, make_broker):
    victim = funcs.victim
    b = make_broker([trigger("victim", ref("victim"), {"type": "test.victim"},
                             delivery={"retry": 30, "backoffPolicy": "linear",
                                       "backoffDelay": "PT0.1S"})], funcs.resolve())
    warmup = event("test.victim")
    b.publish(warmup)
    assert b.wait_idle(10)
    old_pid = victim.pid
    victim.kill()                                   # SIGKILL: no goodbye
    assert not victim.running
    ev = event("test.victim")
    b.publish(ev)
    time.sleep(0.5)                                 # some attempts fail while it is down
    assert b.stats()["triggers"]["victim"]["retried"] >= 1
    victim.start()
    assert b.wait_idle(15)
    got = records_for(funcs.rec("victim"), {ev["id"]})
    assert len(got) == 1 and got[0]["pid"] == victim.pid != old_pid
    stats = b.stats()["triggers"]["victim"]
    assert stats["delivered"] == 2 and stats["dropped"] == 0


def test_events_are_spread_round_robin_over_replicas(funcs, make_broker):
    b = make_broker([trigger("pool", ref("pool"), {"type": "test.pool"})], funcs.resolve())
    events = [event("test.pool") for _ in range(10)]
    for ev in events:
        b.publish(ev)
    assert b.wait_idle(10)
    per_pid = collections.Counter(r["pid"] for r in records_for(
        funcs.rec("pool"), {e["id"] for e in events}))
    assert sorted(per_pid) == sorted(p.pid for p in funcs.pool)
    assert sorted(per_pid.values()) == [5, 5]


def test_ordered_trigger_delivers_one_at_a_time_in_arrival_order(funcs, make_broker):
    b = make_broker([
        trigger("ordered", ref("echo"), {"type": "test.order", "testcase": "ordered"},
                annotations={"kafka.eventing.knative.dev/delivery.order": "ordered"}),
        trigger("unordered", ref("echo"), {"type": "test.order", "testcase": "unordered"}),
    ], funcs.resolve(), concurrency=8)
    ordered = [event("test.order", testcase="ordered", echosleepms="60") for _ in range(5)]
    unordered = [event("test.order", testcase="unordered", echosleepms="300") for _ in range(5)]
    for ev in ordered + unordered:
        b.publish(ev)
    assert b.wait_idle(15)
    by_start = sorted(records_for(funcs.rec("echo"), {e["id"] for e in ordered}),
                      key=lambda r: r["start"])
    assert [r["attrs"]["id"] for r in by_start] == [e["id"] for e in ordered]
    assert all(nxt["start"] >= prev["end"] for prev, nxt in zip(by_start, by_start[1:]))
    # Unordered deliveries overlap: some call starts before another one ended.
    calls = sorted(records_for(funcs.rec("echo"), {e["id"] for e in unordered}),
                   key=lambda r: r["start"])
    assert len(calls) == 5
    assert any(nxt["start"] < prev["end"] for prev, nxt in zip(calls, calls[1:]))


def test_stop_abandons_retries_within_the_timeout(make_broker):
    dead_port = free_port()
    b = make_broker([trigger("nowhere", {"uri": f"http://127.0.0.1:{dead_port}/"},
                             delivery={"retry": 100, "backoffDelay": "PT1S",
                                       "backoffPolicy": "linear"})])
    b.publish(event("test.nowhere"))
    assert not b.wait_idle(0.3)
    started = time.monotonic()
    assert b.stop(timeout=0.3) is False
    assert time.monotonic() - started < 3.0
    assert b.stats()["triggers"]["nowhere"]["abandoned"] == 1
    with pytest.raises(broker_module.BrokerClosedError):
        b.publish(event("test.nowhere"))


def test_in_process_sink_subscriber_receives_matching_events():
    got = []
    b = LocalBroker(load_triggers([trigger("to-audit", ref("audit", kind="KafkaSink"),
                                           {"type": "test.audit"})]), {})
    b.add_sink_subscriber("audit", None, got.append)
    b.add_sink_subscriber("everything-iris", {"monitor": "iris"}, got.append)
    with b:
        b.publish(event("test.audit", id_="a1"))
        b.publish(event("test.other", id_="a2", monitor="iris"))
        b.publish(event("test.other", id_="a3", monitor="wine"))
        assert b.wait_idle(5)
    assert sorted(e["id"] for e in got) == ["a1", "a2"]


def test_serve_role_resolution_and_clean_sigterm_exit(monkeypatch, tmp_path):
    assert serve_module.main(["--role", "no-such-role"]) == 2
    assert serve_module.main(["--func-dir", str(tmp_path)]) == 2          # no function/ there
    monkeypatch.setenv(serve_module.FUNCTIONS_DIR_ENV, str(FUNCS))
    assert serve_module.role_dir("echo") == FUNCS / "echo"
    rec = tmp_path / "role.jsonl"
    proc = FunctionProcess("by-role", ["--role", "echo"], env={
        serve_module.FUNCTIONS_DIR_ENV: str(FUNCS), "RECORD_FILE": str(rec)})
    with proc:
        assert post(proc.url, event("test.role", id_="r1")).status_code == 202
        assert requests.get(proc.url + "health/liveness", timeout=5).text == "OK"
    assert proc.returncode == 0                        # SIGTERM is a clean exit
    assert [r["attrs"]["id"] for r in records(rec)] == ["r1"]


def test_serve_loads_the_named_function_package_even_if_another_is_on_the_path(tmp_path):
    # The function folder's own `function` package must win over one on the path (python -m
    # puts the working directory first).
    decoy = tmp_path / "decoy"
    (decoy / "function").mkdir(parents=True)
    (decoy / "function" / "__init__.py").write_text("def handle(scope, receive, send):\n    raise RuntimeError('decoy')\n")
    rec = tmp_path / "named.jsonl"
    with FunctionProcess("named", ["--func-dir", str(FUNCS / "echo")], cwd=decoy,
                         env={"RECORD_FILE": str(rec), "PYTHONPATH": str(decoy)}) as proc:
        assert post(proc.url, event("test.named", id_="n1")).status_code == 202
    assert [r["attrs"]["id"] for r in records(rec)] == ["n1"]


def test_delivery_timeout_counts_as_a_failure(funcs, make_broker):
    b = make_broker([trigger("slow", ref("echo"), {"type": "test.slow"},
                             delivery={"retry": 0, "timeout": "PT0.2S",
                                       # not echo: the dead letter keeps echosleepms
                                       "deadLetterSink": ref("replier")})], funcs.resolve())
    ev = event("test.slow", echosleepms="2000")
    started = time.monotonic()
    b.publish(ev)
    assert b.wait_idle(10)
    assert time.monotonic() - started < 1.5          # did not wait for the slow answer
    dead = records_for(funcs.rec("replier"), {ev["id"]})
    assert len(dead) == 1 and dead[0]["attrs"]["knativeerrorcode"] == "0"
    assert "Timeout" in base64.b64decode(dead[0]["attrs"]["knativeerrordata"]).decode()


def test_ingress_answers_an_event_dated_year_one_without_dropping_the_connection():
    """Found by the fuzz test: ce- headers without ce-specversion, dated 0001-01-01, were accepted
    and then failed to encode (the year written as '1'), closing the connection unanswered."""
    import requests
    from modelmonitor.local.broker import LocalBroker
    broker = LocalBroker([], max_body_bytes=1 << 20).start()
    try:
        headers = {"ce-type": "org.kubeflow.serving.inference.request", "ce-source": "http://localhost:9081/",
                   "ce-time": "0001-01-01T00:00:00Z", "content-type": "application/json"}
        for _ in range(2):
            resp = requests.post(broker.url, data=b"", headers=headers, timeout=10)
            assert resp.status_code in (202, 400), resp.status_code
        assert broker.stats()["accepted"] == (2 if resp.status_code == 202 else 0)
    finally:
        broker.stop()
