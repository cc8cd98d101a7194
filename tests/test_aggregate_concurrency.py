"""Exactly-once effect across replicas, crashes and Redis restarts (real processes, real Redis)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time

import numpy as np
import pytest

from modelmonitor.core import events as ev
from modelmonitor.local.redis_server import RedisServer, connect, free_port
from agg_worker import flush_and_close, worker
from reference import percentile_within_bound, reference_run

FEATURES = ["a", "b", "c"]
MONITOR = {
    "apiVersion": "monitoring.modelmonitor.io/v1alpha1", "kind": "ModelMonitor",
    "metadata": {"name": "conc"},
    "spec": {"schema": {"features": [{"name": n, "type": "numerical"} for n in FEATURES]},
             "window": {"duration": "15s", "slide": "5s", "watermarkDelay": "60s"},
             "outliers": False},
}


def make_rounds(seed, rounds=8, per_round=120):
    """Logger events in rounds; within a round event times span 20 s (< the 60 s delay), so no
    interleaving of replicas can make any of them late."""
    rng = random.Random(seed)
    out = []
    for r in range(rounds):
        docs = []
        for i in range(per_round):
            t = 1_000_000 + r * 20_000 + rng.randint(0, 19_999)
            rows = [[rng.gauss(0, 1), rng.gauss(5, 2), float(rng.randint(0, 9))] for _ in range(rng.randint(1, 3))]
            docs.append({"specversion": "1.0", "type": ev.KSERVE_REQUEST, "source": "http://localhost:9081/",
                         "id": f"r{r}-{i}", "time": ev.ms_to_rfc3339(t), "datacontenttype": "application/json",
                         "data": {"instances": rows}})
        out.append(docs)
    return out


def reference(rounds):
    flat = [d for docs in rounds for d in docs]
    return reference_run([(d["id"], ev.rfc3339_to_ms(d["time"]), d["data"]["instances"]) for d in flat],
                         15_000, 5_000, 60_000)


def read_windows(paths):
    out = {}
    for p in paths:
        if not os.path.exists(p):
            continue
        for line in open(p):
            e = json.loads(line)
            d = e["data"]
            key = e["id"]
            summary = {"count": d["count"], "late": d["late"], "features": d["features"],
                       "covariance": d["covariance"]}
            out.setdefault(key, []).append(summary)
    return out


def check_against_reference(windows, ref):
    assert sorted(windows) == sorted(f"conc/{r['start']}/{r['end']}" for r in ref)
    for r in ref:
        copies = windows[f"conc/{r['start']}/{r['end']}"]
        assert all(c == copies[0] for c in copies), "a re-emitted window must be identical"
        w = copies[0]
        x = np.asarray(r["rows"])
        assert w["count"] == len(x) and w["late"] == 0
        for j, name in enumerate(FEATURES):
            assert w["features"][name]["sum"] == pytest.approx(x[:, j].sum(), rel=1e-12)
            assert percentile_within_bound(w["features"][name]["percentiles"]["50"], x[:, j], 50)


@pytest.mark.parametrize("replicas", [1, 2, 8])
def test_replicas_and_redelivery_give_identical_windows(tmp_path, redis_url, replicas):
    rounds = make_rounds(seed=replicas)
    rng = random.Random(100 + replicas)
    shares = [[[] for _ in rounds] for _ in range(replicas)]
    for r, docs in enumerate(rounds):
        for d in docs:
            shares[rng.randrange(replicas)][r].append(d)
            if rng.random() < 0.2:                       # redelivered, maybe to another replica
                shares[rng.randrange(replicas)][r].append(d)
        for s in shares:
            rng.shuffle(s[r])
    barrier = mp.Barrier(replicas)
    outs = [str(tmp_path / f"out{i}.jsonl") for i in range(replicas)]
    procs = [mp.Process(target=worker, args=(MONITOR, redis_url, shares[i], outs[i], str(tmp_path / f"ack{i}"),
                                             f"replica-{i}", barrier)) for i in range(replicas)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    flush_and_close(MONITOR, redis_url, str(tmp_path / "final.jsonl"))
    windows = read_windows(outs + [str(tmp_path / "final.jsonl")])
    check_against_reference(windows, reference(rounds))
    assert all(len(c) == 1 for c in windows.values()), "no crash: each window emitted once"


@pytest.mark.parametrize("kill", [{"kill_after_commits": 7}, {"kill_in_close": 3}])
def test_replica_killed_mid_batch_or_mid_close_loses_nothing(tmp_path, redis_url, kill):
    rounds = make_rounds(seed=42)
    flat = [d for docs in rounds for d in docs]
    first = str(tmp_path / "first.jsonl")
    p = mp.Process(target=worker, args=(MONITOR, redis_url, [flat], first, str(tmp_path / "ack1"), "doomed"),
                   kwargs=dict(kill, threads=1))
    p.start()
    p.join(120)
    assert p.exitcode == -9                                # it really died by SIGKILL
    acked = set(open(tmp_path / "ack1").read().split()) if os.path.exists(tmp_path / "ack1") else set()
    assert 0 < len(acked) < len(flat)
    redeliver = [d for d in flat if d["id"] not in acked]  # the broker redelivers everything unacked
    second = str(tmp_path / "second.jsonl")
    q = mp.Process(target=worker, args=(MONITOR, redis_url, [redeliver], second, str(tmp_path / "ack2"), "survivor"))
    q.start()
    q.join(120)
    assert q.exitcode == 0
    time.sleep(1.6)                                        # the dead replica's lease expires
    flush_and_close(MONITOR, redis_url, str(tmp_path / "final.jsonl"))
    windows = read_windows([first, second, str(tmp_path / "final.jsonl")])
    check_against_reference(windows, reference(rounds))
    if "kill_in_close" in kill:
        # the window emitted just before the crash went out again, identical (same id)
        assert sum(len(c) for c in windows.values()) == len(windows) + 1


def test_redis_restart_mid_stream_loses_nothing(tmp_path):
    server = RedisServer(durable=True).start()
    try:
        rounds = make_rounds(seed=5, rounds=10, per_round=200)
        flat = [d for docs in rounds for d in docs]
        out = str(tmp_path / "out.jsonl")
        p = mp.Process(target=worker, args=(MONITOR, server.url, [flat], out, str(tmp_path / "ack"), "r1"),
                       kwargs={"threads": 2})
        p.start()
        deadline = time.time() + 30
        while time.time() < deadline:                        # wait until the stream is under way
            if os.path.exists(tmp_path / "ack") and len(open(tmp_path / "ack").read().split()) > 300:
                break
            time.sleep(0.02)
        server.stop(kill=True)                               # Redis dies (SIGKILL) mid-stream
        time.sleep(1.0)
        server.start()                                       # and comes back from its append-only file
        p.join(120)
        assert p.exitcode == 0
        acked = open(tmp_path / "ack").read().split()
        assert sorted(set(acked)) == sorted(d["id"] for d in flat)
        flush_and_close(MONITOR, server.url, str(tmp_path / "final.jsonl"))
        check_against_reference(read_windows([out, str(tmp_path / "final.jsonl")]), reference(rounds))
    finally:
        server.cleanup()


def monitor_footprint(client, prefix: str) -> dict[bytes, int]:
    """The monitor's own keys (SCAN by its key prefix) and each one's MEMORY USAGE in bytes.

    Counting only these keys makes the figure independent of what else the server holds or
    serves (client buffers, other connections, allocator state), unlike INFO used_memory."""
    pattern = prefix.replace("{", "\\{").replace("}", "\\}") + "*"
    out = {}
    for key in client.scan_iter(match=pattern, count=1000):
        usage = client.memory_usage(key, samples=0)   # None: expired between SCAN and here
        if usage is not None:
            out[key] = usage
    return out


def settled_footprint(client, prefix: str, timeout=10.0) -> dict[bytes, int]:
    """The monitor's footprint once every key it holds only for a retention (dedup ids) has
    expired: poll, since Redis's active expiry removes them within a few hundred ms."""
    deadline = time.time() + timeout
    while any(client.pttl(k) > 0 for k in monitor_footprint(client, prefix)):
        assert time.time() < deadline, "keys held for the dedup retention never expired"
        time.sleep(0.1)
    return monitor_footprint(client, prefix)


def test_redis_memory_returns_to_baseline(redis_client):
    """After a warm-up, a long stream leaves nothing behind: closed windows are deleted and old
    dedup ids expire, so the monitor's keys and their MEMORY USAGE return to the baseline."""
    from state.store import PendingRequest, WindowStore, encode_rows
    from modelmonitor.handlers.aggregate import AggregateCodec
    from modelmonitor.handlers.monitor import Monitor
    from modelmonitor.core.spec import load_monitor
    mon = Monitor(load_monitor(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                            "examples", "iris", "monitor.yaml")))
    store = WindowStore(redis_client, "mem", duration_ms=1000, slide_ms=1000, delay_ms=0,
                        codec=AggregateCodec(mon), dedup_retention_ms=1000, dedup_bucket_ms=500)
    prefix = store.prefix
    num, cat = encode_rows(np.ones((1, 4)), None)
    t = [10_000]
    peak = [0]

    def stream(windows):
        for batch in range(windows):                  # one window of 500 instances per batch
            reqs = [PendingRequest(f"k{t[0]}-{i}", t[0] + i, 1, "i", num, cat) for i in range(500)]
            t[0] += 1000
            store.apply(reqs, now_ms=t[0] // 100)
            if batch % 50 == 0:
                peak[0] = max(peak[0], sum(monitor_footprint(redis_client, prefix).values()))
            for c in store.claim("x"):
                assert store.complete(c, "x")
        store.flush()
        for c in store.claim("x"):
            store.complete(c, "x")

    stream(100)
    base = settled_footprint(redis_client, prefix)
    peak[0] = 0
    stream(400)
    after = settled_footprint(redis_client, prefix)
    # The measure sees the stream: open windows and held dedup ids weigh far more than the rest.
    assert peak[0] > sum(base.values()) + 64 * 1024, (peak[0], base)
    # Nothing but the monitor's keys is in this private server, and they are what they were.
    assert redis_client.dbsize() == len(after)
    assert set(after) == set(base), (sorted(set(after) - set(base))[:10], sorted(set(base) - set(after))[:10])
    assert sum(after.values()) <= sum(base.values()) + 1024, (base, after)
