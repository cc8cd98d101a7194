"""Exactly-once window results with 1, 2 and 8 aggregate replicas, through the real stack:
`modelmonitor run --replicas aggregate=N` as a subprocess (local broker, func-python function
processes, the aggregate's closer, its own redis-server), fed the same logger events in a
different interleaving per run (shuffled, sent by 8 threads at once) with 20% of them delivered a
second time. Every closed window must equal the reference computed with NumPy from the distinct
events: exact count, late, min, max, histogram counts and categorical counts; moments to 1e-9
relative; percentiles within the KLL bound (exact up to 400 values).

Event times span 6 s and the watermark delay is 30 s, so no interleaving makes an instance late;
a last event dated now (sent once every other event is in the broker's log: ingest is
unordered) moves the watermark past every window of the stream. The aggregate Trigger is ordered
(one event at a time, spread round robin over the replicas), so the replicas take turns on the
same windows and each pane holds one aggregate per replica; the closers of all replicas race for
the windows. About 15 s per case (30 s for 8 replicas) on 2 busy cores.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from live_stack import logger_headers, now_ms, wait_until
from modelmonitor.core import events as ev
from modelmonitor.core.baseline_build import build_baseline
from modelmonitor.local.procs import free_port
from reference import percentile_within_bound

EXE = str(Path(sys.executable).parent / "modelmonitor")
COLOURS = ["red", "green", "blue", "violet"]          # violet is not in the baseline: unseenShare
DURATION, SLIDE = 2_000, 1_000


def write_monitor(directory: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    baseline = build_baseline({"x": rng.normal(0, 1, 500), "y": rng.normal(5, 2, 500),
                               "colour": list(rng.choice(COLOURS[:3], 500))}, categorical=["colour"], bins=10)
    (directory / "baseline.json").write_text(json.dumps(baseline))
    doc = {"apiVersion": "monitoring.modelmonitor.io/v1alpha1", "kind": "ModelMonitor",
           "metadata": {"name": "iris"},
           "spec": {"inferenceService": "iris",
                    "schema": {"features": [{"name": "x", "type": "numerical"}, {"name": "y", "type": "numerical"},
                                            {"name": "colour", "type": "categorical"}]},
                    "window": {"duration": "2s", "slide": "1s", "watermarkDelay": "30s", "idleTimeout": "10m"},
                    "outliers": False, "alerts": {"minWindowCount": 10 ** 9},
                    "baseline": {"file": "baseline.json"}}}
    path = directory / "monitor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, baseline


def make_events(seed: int, n: int, t0: int) -> list[tuple[str, int, list]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rows = [[round(rng.gauss(0, 1), 3), round(rng.gauss(5, 2), 3),
                 rng.choice(COLOURS + [None]) if rng.random() < 0.95 else None] for _ in range(rng.randint(1, 3))]
        out.append((f"ev-{seed}-{i}", t0 + rng.randrange(6_000), rows))
    return out


def post(session: requests.Session, url: str, event: tuple[str, int, list]) -> None:
    event_id, t, rows = event
    body = json.dumps({"instances": rows}).encode()
    for _ in range(100):
        try:
            if session.post(url, data=body, headers=logger_headers(event_id, t), timeout=15).status_code == 202:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the broker never accepted {event_id}")


def reference_windows(events, baseline) -> dict[str, dict]:
    """What each window of the stream must hold, from the distinct events, with NumPy."""
    out = {}
    times = [t for _, t, _ in events]
    for k in range((min(times) - DURATION) // SLIDE + 1, max(times) // SLIDE + 1):
        start, end = k * SLIDE, k * SLIDE + DURATION
        rows = [r for _, t, rs in events if start <= t < end for r in rs]
        if rows:
            out[ev.window_id("iris", start, end)] = {"rows": rows}
    return out


def histogram(values: np.ndarray, edges: list[float]) -> list[int]:
    e = np.asarray(edges)
    inner = np.histogram(values[(values >= e[0]) & (values <= e[-1])], bins=e)[0]
    return [int((values < e[0]).sum()), *inner.tolist(), int((values > e[-1]).sum())]


def check_window(got: dict, rows: list, baseline: dict, what: str) -> None:
    assert got["count"] == len(rows) and got["late"] == 0, (what, got["count"], len(rows), got["late"])
    for j, name in enumerate(("x", "y")):
        col = np.array([r[j] for r in rows], dtype=float)
        f = got["features"][name]
        assert (f["count"], f["min"], f["max"]) == (len(col), col.min(), col.max()), (what, name)
        assert f["histogram"]["counts"] == histogram(col, baseline["features"][name]["edges"]), (what, name)
        assert np.isclose(f["mean"], col.mean(), rtol=1e-9, atol=0), (what, name)
        assert np.isclose(f["sum"], col.sum(), rtol=1e-9, atol=1e-9), (what, name)
        if len(col) > 1:
            assert np.isclose(f["stddev"], col.std(ddof=1), rtol=1e-9, atol=0), (what, name)
        for q, value in f["percentiles"].items():
            assert percentile_within_bound(value, col, float(q)), (what, name, q, value)
    colours = [r[2] for r in rows]
    present = [c for c in colours if c is not None]
    f = got["features"]["colour"]
    assert f["count"] == len(present) and f["missing"] == len(colours) - len(present), what
    assert f["categories"] == {c: present.count(c) for c in sorted(set(present))}, what
    assert f["unseenShare"] == pytest.approx(present.count("violet") / len(present), rel=1e-12), what


@pytest.mark.parametrize("replicas", [1, 2, 8])
def test_replicas_and_redeliveries_give_the_reference_windows(tmp_path, replicas):
    monitor, baseline = write_monitor(tmp_path)
    t0 = (now_ms() - 100_000) // 1000 * 1000
    events = make_events(seed=replicas, n=700, t0=t0)
    rng = random.Random(100 + replicas)
    deliveries = events + rng.sample(events, len(events) // 5)          # 20% delivered twice
    rng.shuffle(deliveries)
    port, metrics_port = free_port(), free_port()
    # The state dir is ./state on purpose: a folder in the working directory named like the
    # `state` package must not shadow it in the function processes.
    out = tmp_path / "events.jsonl"
    log = tmp_path / "run.log"
    proc = subprocess.Popen([EXE, "run", str(monitor), "--port", str(port), "--metrics-port", str(metrics_port),
                             "--replicas", f"aggregate={replicas}", "--events-out", str(out),
                             "--state-dir", str(tmp_path / "state"), "--tick", "1", "--no-alerts"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=tmp_path, start_new_session=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        wait_until(lambda: b"is running" in log.read_bytes() or proc.poll() is not None, 180, what="run to start")
        assert proc.poll() is None, log.read_text()
        url = f"http://127.0.0.1:{port}/default/default"
        sessions = [requests.Session() for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda ie: post(sessions[ie[0] % 8], url, ie[1]), enumerate(deliveries)))
        # Ingest is unordered: the last one of the stream's instances events must be in the
        # broker's log before the sweeper's, or the sweeper could make it late.
        def instances_in_log() -> int:
            return sum(1 for line in out.read_text().splitlines() if f'"type":"{ev.INSTANCES}"' in line)

        wait_until(lambda: instances_in_log() == len(deliveries), 60, 0.2, what="every event ingested")
        post(sessions[0], url, ("sweeper", now_ms(), [[0.0, 5.0, "red"]]))   # W = now - 30 s: all close
        want = reference_windows(events, baseline)

        def closed() -> dict[str, list[dict]]:
            got: dict[str, list[dict]] = {}
            for line in out.read_text().splitlines():
                e = json.loads(line)
                if e["type"] == ev.WINDOW_CLOSED and e["id"] in want:
                    got.setdefault(e["id"], []).append(e["data"])
            return got

        wait_until(lambda: set(closed()) == set(want), 120, 0.5, what=f"{len(want)} windows to close")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    got = closed()
    for wid, copies in got.items():
        assert all(c == copies[0] for c in copies), (wid, "re-emitted with other data")
        check_window(copies[0], want[wid]["rows"], baseline, f"{replicas} replicas, {wid}")
    assert sum(w["count"] for c in got.values() for w in c) == \
        sum(len(w["rows"]) for w in want.values()) > 2_000
