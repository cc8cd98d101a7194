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


def _aggregator(client, duration: str = "1d", slide: str | None = None, **store):
    from modelmonitor.core.spec import load_monitor
    from modelmonitor.handlers import Aggregator, Monitor
    from dataclasses import replace
    from modelmonitor.core.spec import parse_duration
    spec = load_monitor(EXAMPLE)
    d = parse_duration(duration, "duration")
    s = parse_duration(slide or duration, "slide")
    spec = replace(spec, window=replace(spec.window, duration_ms=d, slide_ms=s))
    return Aggregator.for_client(Monitor(spec), client, **store)


def _requests(n: int, t_from: int, t_step: float, key: str, rng):
    from state.store import PendingRequest
    rows = rng.normal(5, 1, (n, 4)).astype("<f8")
    return [PendingRequest(f"{key}{i}", t_from + int(i * t_step), 1, "i", rows[i].tobytes(), b"")
            for i in range(n)]


def bench_windows(redis_url: str, sizes=(1_000, 100_000, 1_000_000), batch: int = 2048, progress=None) -> dict:
    """Fill one 1-day window at 1,000 requests/s of (compressed) event time; at each size record
    the Redis bytes of its panes, the merge rate, and the time to close a window of that size."""
    from modelmonitor.local.redis_server import connect
    client = connect(redis_url)
    client.flushall()
    # Dedup ids kept 2 s of processing time (the wall clock here), not 10 minutes: 10 M ids
    # would take ~1 GB of the machine's memory. A real stream at 1,000 requests/s keeps 600,000.
    agg = _aggregator(client, dedup_retention_ms=2_000, dedup_bucket_ms=1_000)
    agg.store.delay_ms = 10 ** 12                      # nothing seals while filling
    rng = np.random.default_rng(0)
    out = {"batch": batch, "features": 4, "points": []}
    done, spent = 0, 0.0
    for size in sizes:
        while done < size:
            n = min(batch, size - done)
            reqs = _requests(n, T0 + done, 1.0, f"w{done}-", rng)    # 1,000 req/s: 1 ms apart
            started = time.perf_counter()
            agg.apply(reqs, int(time.time() * 1000))
            spent += time.perf_counter() - started
            done += n
        used = sum(client.memory_usage(k) or 0 for k in client.scan_iter(match=agg.store.prefix + ":p*"))
        out["points"].append({"instances": done, "redisBytesOpenWindow": used,
                              "mergeInstancesPerS": round(done / spent)})
        if progress:
            progress(out["points"][-1])
    # Close it: seal, claim, read the panes' partials, merge, finalise, fix the event, emit.
    agg.store.flush()
    sent = []
    started = time.perf_counter()
    agg.close_ready(T0, sent.append)
    out["closeMs"] = round((time.perf_counter() - started) * 1000, 1)
    out["closedCount"] = sent[0].data["count"] if sent else None
    client.flushall(asynchronous=True)
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


def bench_delivery(events: int = 3_000) -> dict:
    """The aggregate's intake through `modelmonitor run` (local broker, func-python aggregate, the
    run's fsynced redis-server), in the shipped wiring and the alternatives: a backlog of
    ``events`` ``inference.instances`` events (one instance each) is put in the broker's log (by
    8 threads, in process) and the time until the aggregate Trigger delivered all of them is
    measured; also the rate at which it drained what was left once the log had them all.

    - ``ordered``: the shipped Trigger (``delivery.order: ordered``): one event at a time, so one
      HTTP request, one script call and one fsync per event;
    - ``unordered``: the same Trigger without the annotation (16 delivery workers): concurrent
      requests share the group commit, one script call per batch.
    """
    from concurrent.futures import ThreadPoolExecutor

    from modelmonitor.core import events as ev
    from modelmonitor.core.events import Event
    from modelmonitor.core.spec import load_monitor
    from modelmonitor.handlers import Monitor, ingest
    from modelmonitor.local import runner as runner_mod

    mon = Monitor(load_monitor(EXAMPLE))
    rng = np.random.default_rng(5)
    out: dict = {"events": events}
    for mode in ("ordered", "unordered"):
        now = int(time.time() * 1000)
        bodies = []
        for i in range(events):
            logger = Event({"type": ev.KSERVE_REQUEST, "source": "bench", "id": f"{mode}-{i}",
                            "time": ev.ms_to_rfc3339(now - 20_000 + i * 20_000 // events),
                            "inferenceservicename": "iris"}, {"instances": np.round(rng.normal(5, 1, (1, 4)), 3).tolist()})
            bodies.append(ingest(mon, logger, now))
        original = runner_mod.load_triggers

        def load_triggers(docs, _mode=mode):
            if _mode == "unordered":
                for d in docs:
                    if isinstance(d, dict) and d.get("kind") == "Trigger" and d["metadata"]["name"].endswith("-aggregate"):
                        d["metadata"].get("annotations", {}).pop("kafka.eventing.knative.dev/delivery.order", None)
            return original(docs)

        runner_mod.load_triggers = load_triggers
        try:
            with runner_mod.LocalRun(EXAMPLE, port=0, tick_seconds=3600) as run:
                name = f"{run.spec.name}-aggregate"
                started = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:      # in-process, as if POSTed to the ingress
                    list(pool.map(run.broker.publish, bodies))
                posted = time.perf_counter() - started
                delivered = run.broker.stats()["triggers"][name]["delivered"]
                while run.broker.stats()["triggers"][name]["delivered"] < events:
                    time.sleep(0.05)
                spent = time.perf_counter() - started
        finally:
            runner_mod.load_triggers = original
        # While the log was filling the aggregate competed with it for the CPU; the backlog left
        # when the last event was in is drained by the aggregate alone.
        out[mode] = {"eventsPerS": round(events / spent), "logEventsPerS": round(events / posted),
                     "backlogWhenLogged": events - delivered,
                     "drainEventsPerS": round((events - delivered) / (spent - posted)) if spent - posted > 0.5 else None}
    return out


def bench_batch_sizes(redis_url: str, durable_url: str, sizes=(1, 16, 256, 2048)) -> dict:
    """Store apply rate (one instance per request) by requests per script call, on a Redis
    without persistence and on one with its append-only file fsynced on every write (what
    `modelmonitor run`'s own redis-server does): the cost of one call per event."""
    from modelmonitor.local.redis_server import connect
    out = {}
    for label, url in (("memory", redis_url), ("fsyncAlways", durable_url)):
        client = connect(url)
        for batch in sizes:
            client.flushall()
            agg = _aggregator(client)
            rng = np.random.default_rng(2)
            total = max(batch * 20, 4_000)
            reqs = _requests(total, T0, 1.0, f"b{batch}-", rng)
            started = time.perf_counter()
            for j in range(0, total, batch):
                agg.apply(reqs[j:j + batch], T0)
            out[f"{label}Batch{batch}InstancesPerS"] = round(total / (time.perf_counter() - started))
        client.flushall()
        client.close()
    return out
