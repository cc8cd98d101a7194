"""The Redis window store against the brute-force reference, on a real redis-server."""
from __future__ import annotations

import random

import numpy as np
import pytest

from state.store import PendingRequest, WindowStore, encode_rows
from reference import reference_run, windows_brute_force
from modelmonitor.windowing.assigner import assign_windows


class Rows:
    """A pane aggregate that is the packed rows themselves (merge = concatenation)."""

    def __init__(self, packed=b""):
        self.packed = packed

    def merge(self, other):
        self.packed += other.packed
        return self

    def to_bytes(self):
        return self.packed


class RowsCodec:
    """Aggregates that keep the rows: the window store's semantics checked row for row against the
    reference, independently of the statistics."""

    def empty(self, group):
        return Rows()

    def add(self, partial, group, requests):
        return partial.merge(Rows(b"".join(r.numeric for r in requests)))

    def read(self, group, blob):
        return Rows(bytes(blob))


ROWS = RowsCodec()


def rows_of(partials, group="i", n_numeric=2):
    return np.frombuffer(b"".join(partials.get(group, [])), dtype="<f8").reshape(-1, n_numeric)


def make_stream(seed: int, n: int = 400, dup_rate: float = 0.2, late_rate: float = 0.1):
    """Out-of-order event times with some far-late ones and redeliveries."""
    rng = random.Random(seed)
    events, t = [], 1_000_000
    for i in range(n):
        t += rng.randint(0, 400)
        et = t - rng.randint(0, 3000)
        if rng.random() < late_rate:
            et -= rng.randint(5_000, 40_000)
        rows = [[float(rng.randint(0, 1000)), float(i)] for _ in range(rng.randint(1, 3))]
        events.append((f"k{i}", et, rows))
        if rng.random() < dup_rate:
            j = rng.randrange(len(events))
            events.append(events[j])
    return events


def run_store(client, events, d, s, delay, batch_sizes, monitor="m"):
    store = WindowStore(client, monitor, duration_ms=d, slide_ms=s, delay_ms=delay, codec=ROWS)
    closed, i = [], 0
    rng = random.Random(7)
    while i < len(events):
        size = rng.choice(batch_sizes)
        batch = events[i:i + size]
        i += size
        reqs = []
        for key, t, rows in batch:
            num, cat = encode_rows(np.array(rows), None)
            reqs.append(PendingRequest(key, t, len(rows), "i", num, cat))
        res = store.apply(reqs, now_ms=i)
        assert len(res.statuses) == len(batch)
        if res.ready:
            closed += drain(store)
    store.flush()
    closed += drain(store)
    return closed, store


def drain(store):
    out = []
    for claim in store.claim("t1", limit=1000):
        num = rows_of(store.read(claim))
        out.append({"start": claim.start_ms, "end": claim.end_ms, "late": claim.late,
                    "rows": sorted(map(tuple, num.tolist())), "watermark": claim.watermark_ms})
        assert store.complete(claim, "t1")
    return out


def normalise(ref):
    return [{"start": w["start"], "end": w["end"], "late": w["late"], "rows": sorted(map(tuple, w["rows"]))}
            for w in ref]


@pytest.mark.parametrize("d,s,delay", [(15_000, 15_000, 6_000), (15_000, 5_000, 2_000), (10_000, 3_000, 0)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_windows_match_reference(redis_client, d, s, delay, seed):
    events = make_stream(seed)
    ref = reference_run(events, d, s, delay)
    got, store = run_store(redis_client, events, d, s, delay, batch_sizes=[1, 2, 5, 17, 64])
    assert [{k: w[k] for k in ("start", "end", "late", "rows")} for w in got] == normalise(ref)
    assert sum(w["late"] for w in got) == sum(w["late"] for w in ref) > 0
    # everything closed is gone: only the watermark hash and dedup sets remain
    keys = {k.decode() for k in redis_client.keys("*")}
    assert all(k.endswith(":wm") or ":dd:" in k for k in keys), keys


def test_batch_size_does_not_change_results(redis_client):
    events = make_stream(11)
    a, _ = run_store(redis_client, events, 15_000, 5_000, 3_000, batch_sizes=[1], monitor="a")
    b, _ = run_store(redis_client, events, 15_000, 5_000, 3_000, batch_sizes=[500], monitor="b")
    assert a == b


def test_assigner_matches_brute_force():
    rng = random.Random(5)
    for _ in range(2000):
        d = rng.randint(1, 50)
        s = rng.randint(1, d)
        t = rng.randint(-200, 200)
        assert assign_windows(t, d, s) == windows_brute_force(t, d, s)


def test_duplicates_within_a_batch_count_once(redis_client):
    store = WindowStore(redis_client, "dup", duration_ms=1000, slide_ms=1000, delay_ms=0, codec=ROWS)
    num, cat = encode_rows(np.array([[1.0, 2.0]]), None)
    r = PendingRequest("same", 10, 1, "i", num, cat)
    res = store.apply([r, r, r], now_ms=0)
    assert res.statuses == ["ok", "dup", "dup"]
    assert store.apply([r], now_ms=0).statuses == ["dup"]
    store.flush()
    (claim,) = store.claim("x")
    assert rows_of(store.read(claim)).shape == (1, 2)


def test_idle_tick_closes_quiet_stream(redis_client):
    store = WindowStore(redis_client, "idle", duration_ms=1000, slide_ms=1000, delay_ms=500, codec=ROWS)
    num, cat = encode_rows(np.array([[1.0]]), None)
    store.apply([PendingRequest("a", 100, 1, "i", num, cat)], now_ms=10_000)
    assert store.tick(now_ms=10_500, idle_timeout_ms=2_000)[1] == 0      # not idle long enough
    w, ready = store.tick(now_ms=12_000, idle_timeout_ms=2_000)
    assert w == 100 + 2_000 - 500 and ready == 1
    # an instance older than the idle watermark is now late
    res = store.apply([PendingRequest("b", 200, 1, "i", num, cat)], now_ms=12_001)
    assert res.statuses == ["late:0"]


def test_lease_blocks_second_closer_until_expiry(redis_client):
    store = WindowStore(redis_client, "lease", duration_ms=1000, slide_ms=1000, delay_ms=0, codec=ROWS, lease_ms=200)
    num, cat = encode_rows(np.array([[1.0]]), None)
    store.apply([PendingRequest("a", 100, 1, "i", num, cat), PendingRequest("b", 5000, 1, "i", num, cat)], 0)
    (c1,) = store.claim("dead-replica")
    assert store.claim("other") == []                 # lease held
    import time
    time.sleep(0.3)                                   # the first closer died; its lease expires
    (c2,) = store.claim("other")
    assert c2.member == c1.member
    assert store.complete(c2, "other")
    assert not store.complete(c1, "dead-replica")     # already done: no second close


def test_a_lost_reply_or_a_shared_token_loses_and_doubles_nothing(redis_client):
    """The script ran but its reply was lost (the process cannot tell whether the batch was
    applied), and another store writes under the same token: each replica's pane aggregate is
    version-checked, so the stale view is read back instead of overwriting what Redis holds."""
    store = WindowStore(redis_client, "lost", duration_ms=1000, slide_ms=1000, delay_ms=10_000, codec=ROWS)
    twin = WindowStore(redis_client, "lost", duration_ms=1000, slide_ms=1000, delay_ms=10_000, codec=ROWS,
                       token=store.token)

    def req(key, value):
        num, cat = encode_rows(np.array([[value, 0.0]]), None)
        return PendingRequest(key, 100 + int(value), 1, "i", num, cat)

    assert store.apply([req("a", 1.0)], 0).statuses == ["ok"]
    applied = store._apply

    def reply_lost(**kw):
        applied(**kw)
        raise ConnectionError("reply lost")

    store._apply = reply_lost
    with pytest.raises(ConnectionError):
        store.apply([req("b", 2.0)], 0)
    store._apply = applied
    assert store.apply([req("b", 2.0)], 0).statuses == ["dup"]      # the redelivery
    assert twin.apply([req("c", 3.0)], 0).statuses == ["ok"]        # same token, its own view
    assert store.apply([req("d", 4.0)], 0).statuses == ["ok"]       # stale: read back, then written
    store.flush()
    (claim,) = store.claim("x")
    assert sorted(rows_of(store.read(claim))[:, 0].tolist()) == [1.0, 2.0, 3.0, 4.0]
