"""Window-state benchmarks (``modelmonitor bench``): Redis bytes per open window by instances,
the close time of a large window, and merge throughput of one aggregator process.

All on the iris monitor (4 numerical features) through the aggregate's own codec and the real
window store, one instance per request, group-committed batches of ``batch`` requests.
"""
from __future__ import annotations

import os
import time

import numpy as np

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "examples", "iris", "monitor.yaml")
T0 = 1_767_225_600_000


def _aggregator(client, duration: str = "1d", slide: str | None = None):
    from modelmonitor.core.spec import load_monitor
    from modelmonitor.handlers import Aggregator, Monitor
    from dataclasses import replace
    from modelmonitor.core.spec import parse_duration
    spec = load_monitor(EXAMPLE)
    d = parse_duration(duration, "duration")
    s = parse_duration(slide or duration, "slide")
    spec = replace(spec, window=replace(spec.window, duration_ms=d, slide_ms=s))
    return Aggregator.for_client(Monitor(spec), client)


def _requests(n: int, t_from: int, t_step: float, key: str, rng):
    from state.store import PendingRequest
    rows = rng.normal(5, 1, (n, 4)).astype("<f8")
    return [PendingRequest(f"{key}{i}", t_from + int(i * t_step), 1, "i", rows[i].tobytes(), b"")
            for i in range(n)]


def bench_windows(redis_url: str, sizes=(1_000, 100_000, 1_000_000), batch: int = 2048) -> dict:
    """Fill one 1-day window at 1,000 requests/s of (compressed) event time; at each size record
    the Redis bytes of its panes, the merge rate, and the time to close a window of that size."""
    from modelmonitor.local.redis_server import connect
    client = connect(redis_url)
    client.flushall()
    agg = _aggregator(client)
    agg.store.delay_ms = 10 ** 12                      # nothing seals while filling
    rng = np.random.default_rng(0)
    out = {"batch": batch, "features": 4, "points": []}
    done, spent = 0, 0.0
    for size in sizes:
        while done < size:
            n = min(batch, size - done)
            reqs = _requests(n, T0 + done, 1.0, f"w{done}-", rng)    # 1,000 req/s: 1 ms apart
            started = time.perf_counter()
            agg.apply(reqs, T0)
            spent += time.perf_counter() - started
            done += n
        used = sum(client.memory_usage(k) or 0 for k in client.scan_iter(match=agg.store.prefix + ":p*"))
        out["points"].append({"instances": done, "redisBytesOpenWindow": used,
                              "mergeInstancesPerS": round(done / spent)})
    # Close it: seal, claim, read the panes' partials, merge, finalise, fix the event, emit.
    agg.store.flush()
    sent = []
    started = time.perf_counter()
    agg.close_ready(T0, sent.append)
    out["closeMs"] = round((time.perf_counter() - started) * 1000, 1)
    out["closedCount"] = sent[0].data["count"] if sent else None
    client.flushall()
    client.close()
    return out


def bench_sliding_vs_tumbling(redis_url: str, instances: int = 200_000, batch: int = 2048) -> dict:
    """Apply rate of a 1 h tumbling window and a 1 h window sliding every 5 min (12 panes),
    event time compressed at 1,000 requests/s."""
    from modelmonitor.local.redis_server import connect
    client = connect(redis_url)
    out = {}
    for name, slide in (("tumbling1h", "1h"), ("sliding1h5m", "5m")):
        client.flushall()
        agg = _aggregator(client, "1h", slide)
        rng = np.random.default_rng(1)
        started = time.perf_counter()
        for j in range(0, instances, batch):
            agg.apply(_requests(min(batch, instances - j), T0 + j * 18, 18.0, f"{name}{j}-", rng), T0)
        out[name + "InstancesPerS"] = round(instances / (time.perf_counter() - started))
    client.flushall()
    client.close()
    return out
