"""Window state in constant memory, on a real redis-server: mergeable partials against NumPy,
an injected Redis error mid-batch, identical re-closes, bounded bytes, far-future events, and
the spec's window limits."""
from __future__ import annotations

import copy
import math
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelmonitor.core import events as ev
from modelmonitor.core.spec import Feature, SpecError, StatsSpec, load_monitor, parse_monitor
from modelmonitor.handlers import Aggregator, Monitor, Rejected
from modelmonitor.handlers.monitor import wall_clock_ms
from modelmonitor.local.redis_server import RedisServer, connect
from modelmonitor.stats.quantiles import RANK_ERROR
from modelmonitor.stats.window import WindowAggregate
from reference import percentile_within_bound
from state.store import PendingRequest, encode_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRIS_MONITOR = os.path.join(ROOT, "examples", "iris", "monitor.yaml")
LAYOUT = [Feature("a", "numerical", 0), Feature("b", "numerical", 1)]
EDGES = {"a": np.linspace(-3, 3, 13)}


# ---------------------------------------------------------------------------------------------
# merging partials in any grouping and order equals one pass (NumPy oracle on the raw values)

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 6000), cuts=st.lists(st.integers(0, 6000), max_size=12), seed=st.integers(0, 2**32 - 1),
       order=st.randoms(use_true_random=False))
def test_partials_merged_in_any_grouping_equal_one_pass(n, cuts, seed, order):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(0, 1.5, n), rng.exponential(2.0, n).round(1)])
    bounds = sorted({0, n, *[c % (n + 1) for c in cuts]})
    partials = []
    for lo, hi in zip(bounds, bounds[1:]):
        p = WindowAggregate(LAYOUT, EDGES)
        p.update_columns(x[lo:hi])
        partials.append(p.to_bytes())            # through the binary form, as Redis keeps them
    order.shuffle(partials)
    # merge as a random binary tree: any grouping
    aggs = [WindowAggregate.from_bytes(LAYOUT, EDGES, None, b) for b in partials]
    while len(aggs) > 1:
        i = order.randrange(len(aggs) - 1)
        aggs[i:i + 2] = [aggs[i].merge(aggs[i + 1])]
    rec = aggs[0].finalize(StatsSpec(percentiles=(1.0, 25.0, 50.0, 75.0, 99.0)))
    assert rec["count"] == n
    for j, name in enumerate(("a", "b")):
        f, col = rec["features"][name], x[:, j]
        scale = float(np.abs(col).max())
        assert f["count"] == n and f["min"] == col.min() and f["max"] == col.max()
        assert math.isclose(f["mean"], col.mean(), rel_tol=1e-9, abs_tol=1e-12 * scale)
        assert math.isclose(f["sum"], col.sum(), rel_tol=1e-9, abs_tol=1e-12 * n * scale)
        if n > 1:
            assert math.isclose(f["variance"], col.var(ddof=1), rel_tol=1e-9, abs_tol=1e-12 * scale * scale)
        for q, v in f["percentiles"].items():
            assert percentile_within_bound(v, col, float(q), RANK_ERROR), (name, q, v)
    hist = rec["features"]["a"]["histogram"]["counts"]
    e = EDGES["a"]
    assert hist == [int((x[:, 0] < e[0]).sum()), *np.histogram(x[:, 0], e)[0].tolist(), int((x[:, 0] > e[-1]).sum())]
    if n > 2:
        want = np.cov(x.T)
        got = np.asarray(rec["covariance"]["matrix"], dtype=float)
        assert np.allclose(got, want, rtol=1e-9, atol=1e-12 * float(np.abs(x).max()) ** 2)


def test_kll_rank_error_measured_on_a_million_values_merged_from_a_thousand_partials():
    rng = np.random.default_rng(4)
    x = rng.lognormal(0, 1, 1_000_000)
    window = WindowAggregate(LAYOUT[:1])
    for chunk in np.array_split(x, 1000):
        p = WindowAggregate(LAYOUT[:1])
        p.update_columns(chunk[:, None])
        window.merge(p)
    qs = np.arange(1, 100, dtype=float)
    got = window._numerical_stats[0].quantiles.percentile(qs.tolist())
    xs = np.sort(x)
    ranks = np.searchsorted(xs, got, side="right") / xs.size
    assert np.max(np.abs(ranks - qs / 100)) <= RANK_ERROR


# ---------------------------------------------------------------------------------------------
# the aggregate on Redis

def iris() -> Monitor:
    return Monitor(load_monitor(IRIS_MONITOR))


def requests_for(n: int, t0: int, prefix: str, rng) -> list[PendingRequest]:
    out = []
    for i in range(n):
        num, cat = encode_rows(rng.normal(5, 1, (1, 4)), None)
        out.append(PendingRequest(f"{prefix}{i}", t0 + i, 1, "i", num, cat))
    return out


def close_all(agg: Aggregator, now_ms: int) -> list:
    sent = []
    agg.store.flush()
    agg.close_ready(now_ms, sent.append)
    return sent


def snapshot(client) -> dict:
    """Every key's logical content (DUMP bytes may differ for equal sets being rehashed)."""
    out = {}
    for k in client.keys("*"):
        kind = client.type(k)
        out[k] = {b"string": client.get, b"list": lambda key: client.lrange(key, 0, -1),
                  b"set": lambda key: sorted(client.smembers(key)),
                  b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
                  b"hash": client.hgetall}[kind](k)
    return out


def test_out_of_memory_mid_stream_loses_nothing_and_counts_nothing_twice():
    rng = np.random.default_rng(1)
    with RedisServer(durable=False) as server:
        client = connect(server.url)
        agg = Aggregator.for_client(iris(), client)
        t0 = 1_767_225_600_000
        first, second = requests_for(300, t0, "a", rng), requests_for(300, t0 + 300, "b", rng)
        assert set(agg.apply(first, t0).statuses) == {"ok"}
        before = snapshot(client)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)                 # every write is refused from now on
        with pytest.raises(Exception, match="maxmemory"):
            agg.apply(second, t0)
        client.config_set("maxmemory", 0)
        assert snapshot(client) == before                                # nothing half-written
        assert set(agg.apply(second, t0).statuses) == {"ok"}            # the redelivery is not a "dup"
        assert set(agg.apply(second, t0).statuses) == {"dup"}           # and counted once
        (window,) = close_all(agg, t0)
        assert window.data["count"] == 600
        x = np.frombuffer(b"".join(r.numeric for r in first + second), dtype="<f8").reshape(-1, 4)
        assert math.isclose(window.data["features"]["sepal_length"]["sum"], x[:, 0].sum(), rel_tol=1e-12)
        client.close()


def test_a_re_close_after_the_closer_died_and_a_close_slower_than_the_lease_emit_one_identical_event(redis_client):
    mon = iris()
    rng = np.random.default_rng(2)
    dead = Aggregator.for_client(mon, redis_client, lease_ms=200)
    dead.token = "dead"
    t0 = 1_767_225_600_000
    dead.apply(requests_for(500, t0, "x", rng), t0)
    dead.store.flush()
    (claim,) = dead.store.claim("dead")
    (fixed,) = dead.closed_events(claim, now_ms=t0 + 123)     # computed and fixed, then the closer dies
    time.sleep(0.3)                                        # its lease expires
    other = Aggregator.for_client(mon, redis_client, lease_ms=200)
    sent = []
    assert other.close_ready(t0 + 99_999, sent.append) == 1
    assert [e.data for e in sent] == [fixed.data]          # same data, same closedAtMs
    assert sent[0].data["closedAtMs"] == t0 + 123
    # the slow closer wakes up past its lease: it must not emit a second time
    assert dead.closed_events(claim, now_ms=t0 + 500) is None
    assert not dead.store.complete(claim, "dead")
    assert not redis_client.keys(dead.store.prefix + ":p*") and not redis_client.keys(dead.store.prefix + ":res*")


def test_bytes_per_open_window_stay_flat(redis_client):
    mon = iris()
    agg = Aggregator.for_client(mon, redis_client)
    agg.store.delay_ms = 10 ** 12        # nothing closes
    rng = np.random.default_rng(3)
    t0 = 1_767_225_600_000
    peak = {"early": 0, "late": 0}
    total = 0
    # A pane holds one aggregate per writing replica, merged batch after batch: past the
    # sketch's first levels the bytes stop growing with the number of instances.
    while total < 60_000:
        agg.apply(requests_for(500, t0 + total % 10_000, f"f{total}-", rng), t0)
        total += 500
        if total >= 10_000 and total % 2_500 == 0:
            used = sum(redis_client.memory_usage(k) or 0 for k in redis_client.keys(agg.store.prefix + ":p*"))
            phase = "early" if total <= 30_000 else "late"
            peak[phase] = max(peak[phase], used)
    assert peak["late"] <= 1.25 * peak["early"], peak
    (slot,) = redis_client.keys(agg.store.prefix + ":p:*")
    assert redis_client.hkeys(slot) == [agg.store.token.encode()]


def test_a_far_future_instances_event_is_rejected_live_and_accepted_in_a_replay():
    mon = iris()
    now = wall_clock_ms()
    skew = mon.spec.window.max_clock_skew_ms
    data = {"monitor": "iris", "requestId": "r", "kind": "request", "features": mon.inputs.names,
            "instances": [[5.0, 3.0, 1.5, 0.2]]}

    def event(t):
        return ev.make_event(ev.INSTANCES, "iris", f"iris/x/{t}", dict(data, eventTimeMs=t,
                                                                         eventTime=ev.ms_to_rfc3339(t)))
    live = Aggregator.__new__(Aggregator)
    live.mon, live.live = mon, True
    with pytest.raises(Rejected, match="maxClockSkew"):
        live.encode(event(now + skew + 60_000))
    with pytest.raises(Rejected, match="maxClockSkew"):
        live.encode(event(253_402_300_799_999))           # year 9999
    assert live.encode(event(now + skew // 2)).instances == 1
    replay = Aggregator.__new__(Aggregator)
    replay.mon, replay.live = mon, False
    assert replay.encode(event(now + skew + 60_000)).instances == 1


@pytest.mark.parametrize("window, field, message", [
    ({"duration": "1d", "slide": "1ms"}, "spec.window.slide", "86400000 panes"),
    ({"duration": "1d", "slide": "59s"}, "spec.window.slide", "at most 1440"),
    ({"duration": "8d"}, "spec.window.duration", "longer than the maximum 168h"),
])
def test_spec_refuses_too_many_panes_and_too_long_windows(window, field, message):
    doc = {"metadata": {"name": "m"}, "spec": {"schema": {"features": [{"name": "a", "type": "numerical"}]},
                                                "window": window}}
    with pytest.raises(SpecError, match=message) as info:
        parse_monitor(copy.deepcopy(doc))
    assert str(info.value).startswith(field)
    ok = copy.deepcopy(doc)
    ok["spec"]["window"] = {"duration": "1d", "slide": "1m"}   # 1440 panes: the limit itself
    assert parse_monitor(ok).window.slide_ms == 60_000
