"""`modelmonitor bench`: throughput and latency against the thesis and the project's targets
(docs/semantics.md), measured on this machine. Not a test: numbers are printed and recorded
(docs/benchmarks.md), never asserted.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import threading
import time
import uuid

import numpy as np
import requests
import yaml

from modelmonitor.core import events as ev
from modelmonitor.tools.demo import EXAMPLE, machine, percentiles

THESIS = {"outlierP75S": 5.9, "statisticsP75S": 29.92, "driftP75S": 30.86, "peakRequestsPerS": 177}
TARGETS = {"replayInstancesPerS": 500_000, "mergeInstancesPerS": 100_000, "httpEventsPerS": 1_000,
           "outlierP99Ms": 50, "closeP99Ms": 250, "driftP99Ms": 100, "aggregateMathInstancesPerS": 1_000_000}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_aggregate_math() -> dict:
    from modelmonitor.stats.aggregate import aggregate_throughput
    return {"instancesPerS": round(aggregate_throughput(n_instances=1_000_000, n_features=4, repeats=3))}


def bench_merge(redis_url: str, total_instances: int, instances_per_request: int, batch: int = 512) -> dict:
    """One aggregator process: encode instances events and merge them into Redis, one atomic
    script call per group-committed batch (as the group commit forms them under load)."""
    from modelmonitor.handlers import Aggregator, Monitor, ingest
    from modelmonitor.local.redis_server import connect
    from modelmonitor.core.spec import load_monitor
    from modelmonitor.core.events import Event
    mon = Monitor(load_monitor(os.path.join(EXAMPLE, "monitor.yaml")))
    client = connect(redis_url)
    client.delete(*client.keys("{mm:iris}*") or ["-"])
    agg = Aggregator.for_client(mon, client)
    rng = np.random.default_rng(1)
    n_req = total_instances // instances_per_request
    t0 = 1_767_225_600_000
    events = []
    for i in range(n_req):
        rows = np.round(rng.normal(5, 1, (instances_per_request, 4)), 3).tolist()
        logger = Event({"type": ev.KSERVE_REQUEST, "source": "bench", "id": f"b{i}",
                             "time": ev.ms_to_rfc3339(t0 + i * 5), "inferenceservicename": "iris"},
                            {"instances": rows})
        events.append(ingest(mon, logger, t0, check_skew=False))
    start = time.perf_counter()
    for j in range(0, n_req, batch):
        pending = [agg.encode(e) for e in events[j:j + batch]]
        agg.apply(pending, t0)
    seconds = time.perf_counter() - start
    client.close()
    return {"instances": n_req * instances_per_request, "instancesPerRequest": instances_per_request,
            "batch": batch, "seconds": round(seconds, 3),
            "instancesPerS": round(n_req * instances_per_request / seconds),
            "requestsPerS": round(n_req / seconds)}


def bench_window_memory(redis_url: str, windows: int = 50, instances: int = 1000) -> dict:
    """Redis bytes per open window (iris monitor: 4 numerical features, the aggregate's codec)."""
    from modelmonitor.handlers import Aggregator, Monitor
    from modelmonitor.local.redis_server import connect
    from modelmonitor.core.spec import load_monitor
    from state.store import PendingRequest, encode_rows
    mon = Monitor(load_monitor(os.path.join(EXAMPLE, "monitor.yaml")))
    client = connect(redis_url)
    client.flushall()
    store = Aggregator.for_client(mon, client).store
    store.delay_ms = 10 ** 12      # nothing closes: every window stays open
    d = store.duration_ms
    base = client.info("memory")["used_memory"]
    rng = np.random.default_rng(2)
    for w in range(windows):
        reqs = []
        for i in range(instances):
            num, cat = encode_rows(rng.normal(size=(1, 4)), None)
            reqs.append(PendingRequest(f"w{w}-{i}", w * d + i % d, 1, "i", num, cat))
        for j in range(0, instances, 512):
            store.apply(reqs[j:j + 512], now_ms=0)
    used = client.info("memory")["used_memory"] - base
    client.flushall()
    client.close()
    return {"openWindows": windows, "instancesPerWindow": instances, "features": 4,
            "bytesPerWindow": round(used / windows), "bytesPerInstance": round(used / windows / instances, 1)}


class _Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.items: list[tuple[float, str, dict]] = []

    def __call__(self, event):
        # Only the events the latencies need: decoding every event here would count the
        # recorder's work as the broker's CPU.
        if event["type"] in (ev.OUTLIER_DETECTED, ev.WINDOW_CLOSED, ev.DRIFT_MEASURED):
            data = event.data if isinstance(event.data, dict) else json.loads(event.data)
            with self.lock:
                self.items.append((time.time() * 1000, event["type"], data))

    def of(self, type_):
        with self.lock:
            return [(t, d) for t, tp, d in self.items if tp == type_]


LOAD_PROCESSES = 2


def _load_process(url: str, rows: list, rate: float, start: float, out_path: str, threads: int = 6) -> None:
    """A load generator: KServe-logger-like binary CloudEvents at a steady rate."""
    sent: dict[str, float] = {}
    errors = [0]
    lock = threading.Lock()
    n = len(rows)

    def sender(k):
        session = requests.Session()
        for i in range(k, n, threads):
            d = start + i / rate - time.time()
            if d > 0:
                time.sleep(d)
            rid = str(uuid.uuid4())
            now = time.time()
            headers = {"ce-specversion": "1.0", "ce-type": ev.KSERVE_REQUEST, "ce-source": "bench",
                       "ce-id": rid, "ce-time": ev.ms_to_rfc3339(int(now * 1000)),
                       "ce-inferenceservicename": "iris", "content-type": "application/json"}
            with lock:
                sent[rid] = now * 1000
            try:
                r = session.post(url, data=json.dumps({"instances": [rows[i]]}), headers=headers, timeout=30)
                if r.status_code != 202:
                    errors[0] += 1
            except requests.RequestException:
                errors[0] += 1

    ths = [threading.Thread(target=sender, args=(k,)) for k in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    with open(out_path, "w") as fh:
        json.dump({"sent": sent, "errors": errors[0], "end": time.time()}, fh)


def bench_http(rate: float, seconds: float, out_dir: str) -> dict:
    """The HTTP pipeline through `modelmonitor run`: logger events POSTed at `rate` per second
    for `seconds`; 1 s windows and a 0.5 s watermark so windows close all the time."""
    from modelmonitor.local.runner import LocalRun
    doc = yaml.safe_load(open(os.path.join(EXAMPLE, "monitor.yaml")))
    doc["spec"]["baseline"] = {"file": os.path.join(EXAMPLE, "baseline.json")}
    doc["spec"]["window"] = {"duration": "1s", "slide": "1s", "watermarkDelay": "500ms", "idleTimeout": "1s"}
    doc["spec"]["alerts"] = {"minWindowCount": 10 ** 9}
    monitor = os.path.join(out_dir, "bench-monitor.yaml")
    with open(monitor, "w") as fh:
        yaml.safe_dump(doc, fh)
    rec = _Recorder()
    n = int(rate * seconds)
    rng = np.random.default_rng(3)
    train = np.loadtxt(os.path.join(EXAMPLE, "train.csv"), delimiter=",", skiprows=1, usecols=(0, 1, 2, 3))
    rows = train[rng.integers(len(train), size=n)]
    rows[::10, 3] += 5.0  # every tenth request carries an outlier
    with LocalRun(monitor, port=0, on_event=rec, tick_seconds=0.5) as run:
        pids = {role: [p.pid for p in pool] for role, pool in run.pools.items()}
        if run.redis_server is not None and run.redis_server.proc is not None:
            pids["redis"] = [run.redis_server.proc.pid]   # the broker log and window state
        cpu0 = {role: sum(_cpu_seconds(p) for p in ps) for role, ps in pids.items()}
        cpu_self0 = _cpu_seconds(os.getpid())
        start = time.time() + 1.0
        # The load comes from other processes, as a logger's would: it must not share the
        # broker's interpreter lock.
        procs, files = [], []
        for k in range(LOAD_PROCESSES):
            path = os.path.join(out_dir, f"sent-{k}.json")
            files.append(path)
            p = multiprocessing.get_context("spawn").Process(
                target=_load_process, args=(run.ingress_url, rows[k::LOAD_PROCESSES].tolist(), rate / LOAD_PROCESSES,
                                            start, path))
            p.start()
            procs.append(p)
        for p in procs:
            p.join()
        send_end = max(json.load(open(f))["end"] for f in files)
        sent = {rid: t for f in files for rid, t in json.load(open(f))["sent"].items()}
        errors = [sum(json.load(open(f))["errors"] for f in files)]
        run.broker.wait_idle(timeout=120)
        time.sleep(2.5)  # last windows close on idle, their drift gets measured
        run.broker.wait_idle(timeout=30)
        drained = time.time()
        cpu = {role: sum(_cpu_seconds(p) for p in ps) - cpu0[role] for role, ps in pids.items()}
        cpu_broker = _cpu_seconds(os.getpid()) - cpu_self0
    outl = [t - sent[d["requestId"]] for t, d in rec.of(ev.OUTLIER_DETECTED) if d["requestId"] in sent]
    last_t = max(sent.values()) if sent else 0
    closes = [(t, d) for t, d in rec.of(ev.WINDOW_CLOSED)]
    close_lat = [d["closedAtMs"] - (d["window"]["endMs"] + 500) for _, d in closes
                 if d["window"]["endMs"] + 500 <= last_t]
    drift_lat = [d["measuredAtMs"] - d["closedAtMs"] for _, d in rec.of(ev.DRIFT_MEASURED)]
    instances = sum(d["count"] for _, d in closes)
    elapsed = drained - start
    return {
        "requestedRate": rate, "seconds": seconds, "sent": n, "errors": errors[0],
        "sendSeconds": round(send_end - start, 2), "drainSeconds": round(elapsed, 2),
        "sustainedEventsPerS": round(n / max(send_end - start, drained - start - 2.5)),
        "instancesInWindows": instances,
        "outlierLatencyMs": {str(k): v for k, v in percentiles(outl, (50, 95, 99)).items()},
        "closeLatencyMs": {str(k): v for k, v in percentiles(close_lat, (50, 95, 99)).items()},
        "driftLatencyMs": {str(k): v for k, v in percentiles(drift_lat, (50, 95, 99)).items()},
        "cpuMicrosecondsPerEvent": {**{role: round(c / n * 1e6) for role, c in cpu.items()},
                                    "broker": round(cpu_broker / n * 1e6),
                                    "total": round((sum(cpu.values()) + cpu_broker) / n * 1e6)},
        "loadAverage": [round(x, 1) for x in os.getloadavg()],
    }


def run_bench(args) -> int:
    from modelmonitor.local.redis_server import RedisServer
    quick = args.quick
    results = {"machine": machine(), "cores": os.cpu_count(), "thesis": THESIS, "targets": TARGETS,
               "date": time.strftime("%Y-%m-%d")}

    def step(name, fn, *a, **kw):
        print(f"- {name} ...", flush=True)
        t = time.perf_counter()
        results[name] = fn(*a, **kw)
        print(f"  {json.dumps(results[name])}  ({time.perf_counter() - t:.0f} s)", flush=True)

    def http_steps():
        with tempfile.TemporaryDirectory() as tmp:
            step("httpSteady", bench_http, 100, 10 if quick else 30, tmp)
            step("httpSaturation", bench_http, 1000, 8 if quick else 20, tmp)

    if getattr(args, "http_only", False):
        http_steps()
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(results, fh, indent=2)
        print(json.dumps(results, indent=2) if args.json else http_summary(results))
        return 0
    step("aggregateMath", bench_aggregate_math)
    from modelmonitor.tools.bench_detect import bench_alert_rules
    step("alertRules", bench_alert_rules, 1_000 if quick else 5_000, 40 if quick else 200)
    from modelmonitor.tools.bench_functions import bench_functions
    step("functionCalls", bench_functions, 200 if quick else 1000)
    from modelmonitor.tools.bench_replay import bench_replay
    step("replay", bench_replay, 50_000 if quick else 250_000, 1)
    step("replayBatched", bench_replay, 50_000 if quick else 250_000, 10)
    with RedisServer(durable=False) as rs, RedisServer(durable=True) as durable:
        step("merge", bench_merge, rs.url, 50_000 if quick else 200_000, 1)
        step("mergeBatched", bench_merge, rs.url, 100_000 if quick else 400_000, 10)
        step("mergeDurable", bench_merge, durable.url, 50_000 if quick else 200_000, 1)
        step("windowMemory", bench_window_memory, rs.url)
        from modelmonitor.tools.bench_windows import bench_sliding_vs_tumbling, bench_windows
        step("windowState", bench_windows, rs.url,
             (1_000, 100_000) if quick else (1_000, 100_000, 1_000_000, 10_000_000))
        step("slidingVsTumbling", bench_sliding_vs_tumbling, rs.url, 50_000 if quick else 200_000)
        from modelmonitor.tools.bench_windows import bench_batch_sizes
        step("batchSizes", bench_batch_sizes, rs.url, durable.url)
    from modelmonitor.tools.bench_windows import bench_delivery
    step("delivery", bench_delivery, 1_000 if quick else 3_000)
    http_steps()
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_summary(results)
    return 0


def print_summary(r: dict) -> None:
    def ms(d, k):
        v = d.get(k)
        return f"{v:.1f} ms" if v is not None else "-"
    hs, sat = r["httpSteady"], r["httpSaturation"]
    print(f"\nModelMonitor bench on {r['machine']}\n")
    rows = [
        ("aggregate math (NumPy, 4 features)", f"{r['aggregateMath']['instancesPerS']:,} inst/s", "-", "≥ 1,000,000 inst/s"),
        ("replay, 1 instance/request", f"{r['replay']['instancesPerS']:,} inst/s", "-", "≥ 500,000 inst/s"),
        ("replay, 10 instances/request", f"{r['replayBatched']['instancesPerS']:,} inst/s", "-", "≥ 500,000 inst/s"),
        ("whylogs profiling, same rows", f"{r['replay'].get('whylogsRowsPerS', 0):,} rows/s"
         if r['replay'].get('whylogsRowsPerS') else "whylogs not installed", "-", "-"),
        ("merge into Redis, 1 inst/request", f"{r['merge']['instancesPerS']:,} inst/s", "-", "≥ 100,000 inst/s"),
        ("merge into Redis, 10 inst/request", f"{r['mergeBatched']['instancesPerS']:,} inst/s", "-", "≥ 100,000 inst/s"),
        ("merge, Redis fsync on every write", f"{r['mergeDurable']['instancesPerS']:,} inst/s", "-", "-"),
        ("HTTP pipeline sustained", f"{sat['sustainedEventsPerS']:,} events/s", "~177 req/s peak", "≥ 1,000 events/s"),
        ("request -> outlier (p50/p95/p99)", " / ".join(ms(hs['outlierLatencyMs'], k) for k in ("50", "95", "99")),
         "5.9 s (p75)", "p99 < 50 ms"),
        ("end+watermark -> window.closed", " / ".join(ms(hs['closeLatencyMs'], k) for k in ("50", "95", "99")),
         "29.92 s (p75)", "p99 < 250 ms"),
        ("window.closed -> drift.measured", " / ".join(ms(hs['driftLatencyMs'], k) for k in ("50", "95", "99")),
         "30.86 s (p75)", "p99 < 100 ms"),
        ("Redis memory per open window", f"{r['windowMemory']['bytesPerWindow']:,} B "
         f"({r['windowMemory']['instancesPerWindow']} inst x 4 features)", "-", "-"),
    ]
    print(f"{'measure':<38}{'this machine':<36}{'thesis':<18}{'target'}")
    for row in rows:
        print(f"{row[0]:<38}{row[1]:<36}{row[2]:<18}{row[3]}")
    print("\nCPU per logger event (µs), steady run: " +
          ", ".join(f"{k} {v}" for k, v in hs["cpuMicrosecondsPerEvent"].items()))
    print(f"At {sat['requestedRate']:,.0f} events/s offered: CPU per logger event (µs) " +
          ", ".join(f"{k} {v}" for k, v in sat["cpuMicrosecondsPerEvent"].items()) +
          "; latencies p50/p95/p99: outlier " +
          " / ".join(ms(sat['outlierLatencyMs'], k) for k in ("50", "95", "99")) + ", close " +
          " / ".join(ms(sat['closeLatencyMs'], k) for k in ("50", "95", "99")) + ", drift " +
          " / ".join(ms(sat['driftLatencyMs'], k) for k in ("50", "95", "99")))
    if "alertRules" in r:
        from modelmonitor.tools.bench_detect import markdown as alert_markdown
        print("\nAlert rules by simulation (windows of 200, shift in standard deviations):\n")
        print(alert_markdown(r["alertRules"]))
    calls = r["functionCalls"]["roles"]
    print("CPU per function call through func-python, no sockets (µs; target ≤ 300): " +
          ", ".join(f"{k} {v['cpuMicrosecondsPerCall']}" for k, v in calls.items()))


def http_summary(r: dict) -> str:
    """The HTTP pipeline's figures (what `--http-only` measures) as text."""
    lines = [f"ModelMonitor bench (HTTP pipeline) on {r['machine']}"]
    for name in ("httpSteady", "httpSaturation"):
        run = r[name]
        lat = {k: " / ".join(f"{run[k].get(p) or 0:.1f}" for p in ("50", "95", "99"))
               for k in ("outlierLatencyMs", "closeLatencyMs", "driftLatencyMs")}
        lines.append(
            f"{run['requestedRate']:,.0f} events/s offered for {run['seconds']:g} s: sustained "
            f"{run['sustainedEventsPerS']:,} events/s; p50/p95/p99 ms: request -> outlier "
            f"{lat['outlierLatencyMs']}, end+watermark -> window.closed {lat['closeLatencyMs']}, "
            f"window.closed -> drift.measured {lat['driftLatencyMs']}; CPU per event (µs): "
            + ", ".join(f"{k} {v}" for k, v in run["cpuMicrosecondsPerEvent"].items())
            + f"; load average {run.get('loadAverage')}")
    return "\n".join(lines)


def markdown(r: dict) -> str:
    """The results as the table of docs/benchmarks.md."""
    def lat(d):
        return " / ".join(f"{d[k]:.1f}" if d.get(k) is not None else "-" for k in ("50", "95", "99"))
    hs, sat = r["httpSteady"], r["httpSaturation"]
    rows = [
        ("Window statistics math (NumPy batch path, 4 features)", f"{r['aggregateMath']['instancesPerS']:,} instances/s",
         "≥ 1,000,000 instances/s", "—"),
        ("Replay (`modelmonitor replay`, whole process), 1 instance per request",
         f"{r['replay']['instancesPerS']:,} instances/s", "≥ 500,000 instances/s", "—"),
        ("Replay, 10 instances per request", f"{r['replayBatched']['instancesPerS']:,} instances/s",
         "≥ 500,000 instances/s", "—"),
        ("whylogs `log()` on the same rows as a DataFrame (for scale)",
         f"{r['replay']['whylogsRowsPerS']:,} rows/s" if r['replay'].get('whylogsRowsPerS') else "not installed",
         "—", "—"),
        ("Merge into Redis per aggregator process, 1 instance/request",
         f"{r['merge']['instancesPerS']:,} instances/s", "≥ 100,000 instances/s", "—"),
        ("Merge into Redis, 10 instances/request", f"{r['mergeBatched']['instancesPerS']:,} instances/s",
         "≥ 100,000 instances/s", "—"),
        ("Merge, Redis with `appendfsync always`", f"{r['mergeDurable']['instancesPerS']:,} instances/s", "—", "—"),
        ("HTTP pipeline (`modelmonitor run`), sustained", f"{sat['sustainedEventsPerS']:,} logger events/s",
         "≥ 1,000 events/s", "~177 requests/s (7 nodes)"),
        ("Request → `outlier.detected`, p50 / p95 / p99 (ms)", lat(hs["outlierLatencyMs"]), "p99 < 50 ms", "5.9 s (p75)"),
        ("Window end + watermark → `window.closed`, p50 / p95 / p99 (ms)", lat(hs["closeLatencyMs"]),
         "p99 < 250 ms", "29.92 s (p75, from request)"),
        ("`window.closed` → `drift.measured`, p50 / p95 / p99 (ms)", lat(hs["driftLatencyMs"]), "p99 < 100 ms",
         "30.86 s (p75, from request)"),
        ("Redis memory per open window", f"{r['windowMemory']['bytesPerWindow']:,} B for "
         f"{r['windowMemory']['instancesPerWindow']:,} instances × 4 features "
         f"({r['windowMemory']['bytesPerInstance']} B/instance)", "flat memory", "state never freed"),
    ]
    out = ["| measure | this machine | target | thesis |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out.append("")
    for run in (hs, sat):
        cpu = ", ".join(f"{k} {v}" for k, v in run["cpuMicrosecondsPerEvent"].items())
        out.append(f"At {run['requestedRate']:,.0f} events/s offered: CPU per logger event (µs) "
                   f"{cpu}; request → outlier / window close / drift p99 "
                   f"{lat(run['outlierLatencyMs']).split(' / ')[-1]} / "
                   f"{lat(run['closeLatencyMs']).split(' / ')[-1]} / "
                   f"{lat(run['driftLatencyMs']).split(' / ')[-1]} ms.")
    if "alertRules" in r:
        from modelmonitor.tools.bench_detect import markdown as alert_markdown
        out += ["", alert_markdown(r["alertRules"]).rstrip()]
    return "\n".join(out) + "\n"
