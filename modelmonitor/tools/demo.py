"""`modelmonitor demo` (`make demo`): the thesis experiment end to end over real HTTP.

KServe-logger-style CloudEvents (binary mode, V1 bodies) for the 5-stage Iris stream go to the
local broker of `modelmonitor run` at a steady rate. Event time runs faster than the wall
clock (``--time-scale``), so the 15 s windows and 6 s watermark of the thesis fit in about two
minutes; latencies are measured on the wall clock. The table compares them with the thesis.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import threading
import time
import uuid
from collections import defaultdict

import numpy as np
import requests
import yaml

from modelmonitor.core import events as ev
from modelmonitor.core.baseline import build_baseline_file
from modelmonitor.local.runner import LocalRun
from modelmonitor.core.spec import load_monitor
from modelmonitor.tools.streams import STAGES, ThesisStream, stage_names

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "iris")
THESIS_P75_S = {"outlier": 5.9, "close": 29.92, "drift": 30.86}
TARGET_P99_MS = {"outlier": 50, "close": 250, "drift": 100}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}, {platform.system()}"


def percentiles(values, qs=(50, 75, 99)):
    if not values:
        return {q: None for q in qs}
    arr = np.asarray(values, dtype=float)
    return {q: float(np.percentile(arr, q)) for q in qs}


class Recorder:
    """Every event the broker accepts, with the wall time it arrived."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, dict]] = []

    def __call__(self, event) -> None:
        if event["type"].startswith("io.modelmonitor.") and event["type"] != ev.INSTANCES:
            data = event.data if isinstance(event.data, dict) else json.loads(event.data)
            with self.lock:
                self.events.append((time.time() * 1000, event["type"], data))

    def of(self, type_):
        with self.lock:
            return [(t, d) for t, tp, d in self.events if tp == type_]


def prepare(out: str) -> str:
    """Baseline from the training data, and the demo's copy of the Iris monitor."""
    os.makedirs(out, exist_ok=True)
    monitor_doc = yaml.safe_load(open(os.path.join(EXAMPLE, "monitor.yaml")))
    baseline_path = os.path.join(out, "baseline.json")
    spec = load_monitor(os.path.join(EXAMPLE, "monitor.yaml"))
    build_baseline_file(os.path.join(EXAMPLE, "train.csv"), baseline_path, bins=20, monitor=spec)
    monitor_doc["spec"]["baseline"] = {"file": "baseline.json"}
    # The stream stops at the end: idle windows close after 2 s instead of 30 s.
    monitor_doc["spec"]["window"]["idleTimeout"] = "2s"
    path = os.path.join(out, "monitor.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(monitor_doc, fh, sort_keys=False)
    return path


def run_demo(args) -> int:
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        shutil.rmtree(out)
    monitor_path = prepare(out)
    spec = load_monitor(monitor_path)
    n = args.requests
    seconds = args.seconds
    rate = n / seconds
    stage_wall = seconds / len(STAGES)
    scale = args.time_scale or (10 * spec.window.duration_ms / 1000) / stage_wall  # ~10 windows a stage
    print(f"ModelMonitor demo: {n:,} requests in {len(STAGES)} stages at {rate:,.0f} requests/s for ~{seconds:.0f} s; "
          f"{spec.window.duration_ms / 1000:.0f} s windows, {spec.window.watermark_delay_ms / 1000:.0f} s watermark, "
          f"event time x{scale:.1f}", flush=True)
    stream = ThesisStream.from_csv(os.path.join(EXAMPLE, "train.csv"), total=n)
    rows = list(stream.rows())
    recorder = Recorder()
    events_path = os.path.join(out, "events.jsonl")
    run = LocalRun(monitor_path, port=0, on_event=recorder, events_out=events_path, tick_seconds=0.5).start()
    sent_wall: dict[str, float] = {}
    sent_time: list[int] = [0] * n
    sent_at: list[float] = [0.0] * n            # wall ms each request was sent
    sent_ok = [0]
    lock = threading.Lock()
    try:
        start_wall = time.time() + 0.5
        # Event time never runs ahead of the clock, and the first window starts with the stream.
        t0_event = int((start_wall - seconds * scale - 5) * 1000)
        t0_event -= t0_event % spec.window.duration_ms
        senders = 8

        def sender(k: int) -> None:
            session = requests.Session()
            for i in range(k, n, senders):
                due = start_wall + i / rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                now = time.time()
                # event time follows the schedule: a sender running late must not run ahead
                t = t0_event + int((due - start_wall) * scale * 1000)
                rid = str(uuid.uuid4())
                headers = {"ce-specversion": "1.0", "ce-type": ev.KSERVE_REQUEST, "ce-source": "http://localhost:9081/",
                           "ce-id": rid, "ce-time": ev.ms_to_rfc3339(t), "ce-inferenceservicename": spec.inference_service,
                           "ce-namespace": "default", "ce-component": "predictor", "ce-endpoint": "",
                           "content-type": "application/json"}
                body = json.dumps({"instances": [rows[i][1]]})
                with lock:
                    sent_wall[rid] = now * 1000
                sent_time[i] = t
                sent_at[i] = now * 1000
                try:
                    r = session.post(run.ingress_url, data=body, headers=headers, timeout=10)
                    if r.status_code == 202:
                        with lock:
                            sent_ok[0] += 1
                except requests.RequestException:
                    pass

        threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(senders)]
        for th in threads:
            th.start()
        labels = stage_names()
        last = -1
        while any(th.is_alive() for th in threads):
            time.sleep(0.5)
            i = min(int((time.time() - start_wall) * rate), n - 1)
            stage = stream.stage_of(max(i, 0))
            if stage != last:
                print(f"  stage {labels[stage]:<11} ({stage + 1}/5)  windows closed so far: "
                      f"{len(recorder.of(ev.WINDOW_CLOSED))}", flush=True)
                last = stage
        for th in threads:
            th.join()
        # Let the last windows close (idle timeout) and their drift be measured.
        deadline = time.time() + 30
        while time.time() < deadline:
            run.broker.wait_idle(timeout=2)
            state_windows = len(recorder.of(ev.WINDOW_CLOSED))
            time.sleep(spec.window.idle_timeout_ms / 1000 + 1.5)
            if len(recorder.of(ev.WINDOW_CLOSED)) == state_windows and run.broker.wait_idle(timeout=1):
                break
    finally:
        run.stop()

    stage_of_time = _stage_lookup(sent_time, stream)
    table = summarise(recorder, sent_wall, stage_of_time, spec, n, sent_ok[0], sent_time, sent_at)
    print_table(table, spec)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(table, fh, indent=2)
    try:
        from modelmonitor.core.baseline import load_baseline
        from modelmonitor.tools.report import write_report
        labels = stage_names()
        starts: dict[str, int] = {}
        for i, t in enumerate(sent_time):
            starts.setdefault(labels[stream.stage_of(i)], t)
        paths = write_report(events_path, os.path.join(out, "report"), title="ModelMonitor demo: the thesis experiment",
                             baseline=load_baseline(os.path.join(out, "baseline.json")),
                             watermark_delays={spec.name: spec.window.watermark_delay_ms},
                             stages=sorted(starts.items(), key=lambda item: item[1]))
        print(f"\nreport: {paths.get('html')}\nevents: {events_path}")
    except Exception as exc:  # the table is the demo's result; a plotting problem must not hide it
        print(f"\n(report not written: {exc})")
    return 0


def _stage_lookup(sent_time, stream):
    times = np.asarray(sent_time)
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    labels = stage_names()

    def stage_of(t_ms: int) -> str:  # the stage of the request sent closest before t_ms
        j = int(np.searchsorted(sorted_times, t_ms, side="right")) - 1
        j = min(max(j, 0), len(order) - 1)
        return labels[stream.stage_of(int(order[j]))]

    return stage_of


def summarise(recorder, sent_wall, stage_of_time, spec, n, accepted, sent_time, sent_at):
    labels = stage_names()
    per = {s: defaultdict(int) for s in labels}
    per_instances = {s: 0 for s in labels}
    # A window can close once a request at or past its end + watermark delay was sent: the first
    # such request in send order (by the largest event time sent so far) starts its close latency.
    order = np.argsort(np.asarray(sent_at), kind="stable")
    sends = np.asarray(sent_at)[order]
    reached = np.maximum.accumulate(np.asarray(sent_time)[order])
    outlier_lat = []
    for t, d in recorder.of(ev.OUTLIER_DETECTED):
        per[stage_of_time(d["eventTimeMs"])]["outliers"] += len({o["instance"] for o in d["outliers"]})
        if d.get("requestId") in sent_wall:
            outlier_lat.append(t - sent_wall[d["requestId"]])
    close_lat, drift_lat = [], []
    delay = spec.window.watermark_delay_ms
    windows = {}
    for t, d in recorder.of(ev.WINDOW_CLOSED):
        w = d["window"]
        key = (w["startMs"], w["endMs"])
        if key in windows:
            continue
        windows[key] = d
        stage = stage_of_time((w["startMs"] + w["endMs"]) // 2)
        per[stage]["windows"] += 1
        per_instances[stage] += d["count"]
        i = int(np.searchsorted(reached, w["endMs"] + delay, side="left"))
        if i < len(reached) and sends[i] <= d["closedAtMs"]:
            # closed by the watermark; the last windows are closed by the idle timeout instead
            close_lat.append(d["closedAtMs"] - float(sends[i]))
    for t, d in recorder.of(ev.DRIFT_MEASURED):
        w = d["window"]
        stage = stage_of_time((w["startMs"] + w["endMs"]) // 2)
        if d["count"] >= spec.alerts.min_window_count and \
                any(m["drifted"] for f in d["features"].values() for m in f.values()):
            per[stage]["drift"] += 1
        drift_lat.append(d["measuredAtMs"] - d["closedAtMs"])
    alerts = [(stage_of_time((d["window"]["startMs"] + d["window"]["endMs"]) // 2), d["reason"])
              for _, d in recorder.of(ev.DRIFT_DETECTED)]
    return {
        "machine": machine(),
        "requests": n, "accepted": accepted,
        "stages": [{"stage": s, "instances": per_instances[s], "outliers": per[s]["outliers"],
                    "windows": per[s]["windows"], "driftFlagged": per[s]["drift"]} for s in labels],
        "alerts": alerts,
        "latencyMs": {"outlier": percentiles(outlier_lat), "close": percentiles(close_lat),
                      "drift": percentiles(drift_lat)},
        "targetMet": {key: (None if not values else bool(np.percentile(values, 99) < TARGET_P99_MS[key]))
                      for key, values in (("outlier", outlier_lat), ("close", close_lat), ("drift", drift_lat))},
        "samples": {"outlier": len(outlier_lat), "close": len(close_lat), "drift": len(drift_lat)},
    }


def print_table(table, spec) -> None:
    print(f"\nMachine: {table['machine']}")
    print(f"Requests sent: {table['requests']:,} (accepted by the broker: {table['accepted']:,})\n")
    print(f"{'stage':<12}{'instances':>10}{'outliers':>10}{'windows':>9}{'drift flagged':>15}"
          "   (a window belongs to the stage of its middle)")
    for s in table["stages"]:
        print(f"{s['stage']:<12}{s['instances']:>10,}{s['outliers']:>10,}{s['windows']:>9}{s['driftFlagged']:>15}")
    print("\nLatency (wall clock)                         p50        p75        p99    target p99   met   thesis p75")
    names = {"outlier": "request -> outlier.detected",
             "close": "window end + watermark -> window.closed",
             "drift": "window.closed -> drift.measured"}
    for key, label in names.items():
        p = table["latencyMs"][key]
        cells = "".join(f"{(f'{p[q]:.1f} ms' if p[q] is not None else '-'):>11}" for q in (50, 75, 99))
        met = "-" if p[99] is None else ("yes" if p[99] < TARGET_P99_MS[key] else "NO")
        print(f"{label:<42}{cells}{f'< {TARGET_P99_MS[key]} ms':>14}{met:>6}{f'{THESIS_P75_S[key]} s':>13}")
    if table["alerts"]:
        print("\nAlerts (drift.detected):")
        for stage, reason in table["alerts"]:
            print(f"  [{stage}] {reason}")
