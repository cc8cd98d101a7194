"""Replay throughput for `modelmonitor bench`: the thesis-style stream (250,000 requests, five
stages: normal, outliers, drift, outliers, normal) at 1 and at 10 instances per request, run
as a whole `modelmonitor replay` process (interpreter start, imports, worker processes and all),
again in one process (``--workers 0``: whether the second core pays), and, for scale, whylogs
profiling the same instances as an already flattened DataFrame.

The stream is generated vectorised (resampled training rows with a little jitter; 10% of the
outlier stages' instances pushed 3.5 to 5 standard deviations out; the drift stage shifted by
one standard deviation and spread 1.5 times), at 177 requests/s of event time as in the thesis.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from modelmonitor.core import events as ev
from modelmonitor.tools.streams import EPOCH_MS, FEATURES, ThesisStream

RATE_PER_S = 177.0


def thesis_rows(train: np.ndarray, total: int, seed: int = 7) -> np.ndarray:
    """``total`` instances of the five-stage thesis experiment, in stream order."""
    rng = np.random.default_rng(seed)
    mean, sd = train.mean(axis=0), train.std(axis=0, ddof=1)
    lo, hi = train.min(axis=0), train.max(axis=0)
    k = train.shape[1]
    x = np.clip(train[rng.integers(len(train), size=total)] + rng.normal(0, 0.02, (total, k)) * sd, lo, hi)
    stage = np.minimum(np.arange(total) * 5 // total, 4)
    out = (stage == 1) | (stage == 3)
    pick = out & (rng.random(total) < 0.10)
    f = rng.integers(k, size=total)
    sign = np.where(rng.random(total) < 0.5, 1.0, -1.0)
    rows = np.nonzero(pick)[0]
    x[rows, f[rows]] = mean[f[rows]] + sign[rows] * (3.0 + rng.uniform(0.5, 2.0, len(rows))) * sd[f[rows]]
    drift = stage == 2
    x[drift] = mean + (x[drift] - mean) * 1.5 + sd
    return np.round(x, 4)


def write_stream(path: str, rows: np.ndarray, per_request: int, *, isvc: str = "iris") -> int:
    """Logger request events (structured-mode JSON lines), ``per_request`` instances each."""
    n_req = len(rows) // per_request
    step = 1000.0 / RATE_PER_S
    times = (EPOCH_MS + (np.arange(n_req) * step).astype(np.int64)).tolist()
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n_req):
            doc = {"specversion": "1.0", "source": "http://localhost:9081/", "id": f"req-{i:08d}",
                   "time": ev.ms_to_rfc3339(times[i]), "datacontenttype": "application/json",
                   "inferenceservicename": isvc, "type": ev.KSERVE_REQUEST,
                   "data": {"instances": rows[i * per_request:(i + 1) * per_request].tolist()}}
            fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
    return n_req


def replay_process(monitor: str, inp: str, out: str, *extra: str) -> dict:
    """Run `modelmonitor replay` as its own process; wall and CPU time of everything it ran."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-P", "-m", "modelmonitor.tools.cli", "replay", monitor, "--input", inp,
                           "--output", out, "--quiet", "--json", *extra], capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"replay failed: {done.stderr.strip()[-500:]}")
    summary = json.loads(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"summary": summary, "wall": wall, "cpu": cpu}


def bench_replay(requests_n: int, per_request: int = 1, *, engine: str = "columnar", workers: int | None = None,
                 example: str | None = None) -> dict:
    from modelmonitor.tools.demo import EXAMPLE
    example = example or EXAMPLE
    train = ThesisStream.from_csv(os.path.join(example, "train.csv"), columns=FEATURES).train
    rows = thesis_rows(train, requests_n * per_request)
    extra = ["--engine", engine] + ([] if workers is None else ["--workers", str(workers)])
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
        write_stream(inp, rows, per_request)
        size = os.path.getsize(inp)
        load = os.getloadavg()[0]
        run = replay_process(os.path.join(example, "monitor.yaml"), inp, out, *extra)
        # The same replay in one process (no decoding worker): does the second core pay?
        single = replay_process(os.path.join(example, "monitor.yaml"), inp, out, "--engine", engine, "--workers", "0") \
            if engine == "columnar" and workers is None else None
    s = run["summary"]
    result = {"requests": requests_n, "instancesPerRequest": per_request, "instances": s["instances"],
              "engine": engine, "inputMB": round(size / 1e6, 1),
              "processSeconds": round(run["wall"], 2), "instancesPerS": round(s["instances"] / run["wall"]),
              "replaySeconds": round(s["seconds"], 2), "replayInstancesPerS": s["instancesPerSecond"],
              "cpuSeconds": round(run["cpu"], 2), "windows": s["windows"], "outlierEvents": s["outlier_events"],
              "loadAverageBefore": round(load, 1)}
    if single is not None:
        result["singleProcessInstancesPerS"] = round(single["summary"]["instances"] / single["wall"])
        result["singleProcessCpuSeconds"] = round(single["cpu"], 2)
    whylogs = bench_whylogs(rows)
    if whylogs is not None:
        result["whylogsRowsPerS"] = whylogs
    return result


def bench_whylogs(rows: np.ndarray) -> int | None:
    """Rows/s of ``whylogs.log`` on the instances as a DataFrame (no JSON, no windows, no drift);
    None when whylogs (a benchmark-only extra: ``pip install .[bench]``) is not installed."""
    try:
        import pandas as pd
        import whylogs
    except ImportError:
        return None
    df = pd.DataFrame(rows, columns=list(FEATURES))
    whylogs.log(df.head(1000))                    # first-call set-up is not profiling
    started = time.perf_counter()
    whylogs.log(df)
    return round(len(df) / (time.perf_counter() - started))


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 250_000
    for k in (1, 10):
        print(json.dumps(bench_replay(n, k)), flush=True)
