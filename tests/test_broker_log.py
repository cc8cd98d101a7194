"""The broker log on a real redis-server: one stream per Trigger filled at append time, the move
from an earlier version's shared stream, and the bounded dead-letter log (nothing dropped)."""
from __future__ import annotations

import threading
import time

from modelmonitor.core.events import Event
from modelmonitor.local.broker import DeliverySpec, LocalBroker, RedisStreamLog
from modelmonitor.local.broker import dispatch as dispatch_module
from modelmonitor.local.broker.log import GROUP, Entry


def _event(type_: str, id_: str) -> Event:
    return Event({"type": type_, "source": "/tests/log", "id": id_,
                  "datacontenttype": "application/json"}, {"id": id_})


def _ids(client, key: str) -> list[str]:
    import json
    return [json.loads(f[b"h"])["ce-id"] for _i, f in client.xrange(key)]


def _wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_each_trigger_stream_holds_only_the_events_its_filter_passes(redis_client):
    log = RedisStreamLog(redis_client, "ns", "b")
    log.ensure_groups(["to-a", "to-b", "to-all"])
    # Entries appended with their targets (what the broker computes from the filters).
    entries = [Entry("", {"ce-id": f"e{i}", "ce-type": "ab"[i % 2]}, b"{}", 0,
                      ["to-" + "ab"[i % 2], "to-all"]) for i in range(7)]
    log.append(entries)
    assert _ids(redis_client, log.stream("to-a")) == ["e0", "e2", "e4", "e6"]
    assert _ids(redis_client, log.stream("to-b")) == ["e1", "e3", "e5"]
    assert _ids(redis_client, log.stream("to-all")) == [f"e{i}" for i in range(7)]
    assert log.backlogs() == {"to-a": 4, "to-b": 3, "to-all": 7}
    assert log.length == 7

    # Through the broker: in-process subscribers with attribute filters; each stream is
    # checked while its subscriber holds the first delivery back.
    release = threading.Event()
    got: dict[str, list[str]] = {"to-a": [], "to-b": []}

    def sink(name):
        def receive(event):
            release.wait(20)
            got[name].append(event["id"])
        return receive

    redis_client.flushall()
    broker = LocalBroker([], log=RedisStreamLog(redis_client, "default", "default"))
    broker.add_sink_subscriber("to-a", {"type": "a"}, sink("to-a"))
    broker.add_sink_subscriber("to-b", {"type": "b"}, sink("to-b"))
    broker.start()
    try:
        sent = {"a": [], "b": [], "c": []}
        for i in range(30):
            kind = "abc"[i % 3]
            sent[kind].append(f"x{i}")
            assert broker.publish(_event(kind, f"x{i}")) == (0 if kind == "c" else 1)
        assert _ids(redis_client, broker.log.stream("to-a")) == sent["a"]
        assert _ids(redis_client, broker.log.stream("to-b")) == sent["b"]
        release.set()
        assert broker.wait_idle(20)
        assert sorted(got["to-a"]) == sorted(sent["a"]) and sorted(got["to-b"]) == sorted(sent["b"])
        assert broker.stats()["unmatched"] == len(sent["c"])
        broker.log.trim()
        assert redis_client.xlen(broker.log.stream("to-a")) == 0
    finally:
        release.set()
        broker.stop()


def test_shared_stream_of_an_earlier_version_moves_into_the_trigger_streams(redis_client):
    old = "{mm-broker:ns/b}:log"
    ids = [redis_client.xadd(old, {"h": '{"ce-id": "o%d"}' % i, "b": b"{}", "n": 0})
           for i in range(5)]
    redriven = redis_client.xadd(old, {"h": '{"ce-id": "r"}', "b": b"{}", "n": 0, "o": "b"})
    redis_client.xgroup_create(old, "a", id="0")
    redis_client.xgroup_create(old, "b", id="0")
    redis_client.xgroup_create(old, "gone", id="0")
    # a read three, acknowledged the first: the other two are pending, three unread.
    redis_client.xreadgroup("a", "dispatcher", {old: ">"}, count=3)
    redis_client.xack(old, "a", ids[0])
    # b read and acknowledged everything but the last two plain entries.
    redis_client.xreadgroup("b", "dispatcher", {old: ">"}, count=3)
    redis_client.xack(old, "b", *ids[:3])
    log = RedisStreamLog(redis_client, "ns", "b")
    log.ensure_groups(["a", "b"])
    assert not redis_client.exists(old)
    # a: its two pending (o1, o2), then what it had not read (o3, o4); "r" was for b only.
    assert _ids(redis_client, log.stream("a")) == ["o1", "o2", "o3", "o4"]
    assert _ids(redis_client, log.stream("b")) == ["o3", "o4", "r"]
    assert log.backlogs() == {"a": 4, "b": 3}
    got = [e.headers["ce-id"] for e in log.read("b", 10, 0)]
    assert got == ["o3", "o4", "r"] and redriven


def test_full_dead_letter_log_holds_events_back_instead_of_dropping_them(redis_client, monkeypatch):
    monkeypatch.setattr(dispatch_module, "DEAD_LETTER_FULL_WAIT_S", 0.05)
    log = RedisStreamLog(redis_client, "default", "default", max_dead_letters=2)
    broker = LocalBroker([], log=log, delivery_defaults=DeliverySpec(retry=0))

    def refuse(event):
        raise RuntimeError("subscriber down")

    broker.add_sink_subscriber("down", {"type": "a"}, refuse)
    broker.start()
    try:
        for i in range(3):
            broker.publish(_event("a", f"d{i}"))
        assert _wait(lambda: log.dead_letter_count() == 2)
        time.sleep(0.5)   # the third stays in the Trigger's log, unacknowledged
        assert log.dead_letter_count() == 2 and log.backlog("down") == 1
        assert broker.stats()["triggers"]["down"]["dead_letter_logged"] == 2
        first = log.dead_letters()[0]
        assert log.purge([first.id]) == 1
        assert _wait(lambda: log.backlog("down") == 0)
        kept = sorted(d.entry.headers["ce-id"] for d in log.dead_letters())
        assert kept == sorted({"d0", "d1", "d2"} - {first.entry.headers["ce-id"]})
        assert broker.stats()["triggers"]["down"]["dead_letter_logged"] == 3
        assert redis_client.xinfo_groups(log.stream("down"))[0]["name"].decode() == GROUP
    finally:
        broker.stop(timeout=2)
