"""CPU microseconds per call of each function, through its HTTP runtime's app, without sockets.

Each role's function is set up as in its image (configuration from the environment it gets on
Knative: the example iris monitor and baseline, a private redis-server, a K_SINK that answers
202) and called with binary-mode CloudEvents as the broker delivers them:

- ingest: KServe V1 logger requests of ``--rows`` instances;
- outlier, aggregate: the ``inference.instances`` events ingest makes of them (unique ids);
- drift: ``window.closed`` events the aggregator closed over those instances.

The runtime is the func-python ASGI application (``func_python.cloudevent.ASGIApplication``
around the function's ``new()``): the request goes through its CloudEvent decoding, the
function's ``handle`` and the reply's encoding, as in the image; only hypercorn's socket and
HTTP parsing are left out. (The "before" figures in docs/benchmarks.md came from the same
measurement of the parliament app through Flask's test client, removed with parliament.)

CPU is ``time.process_time()`` of the whole process over the calls (so the aggregator's commit
thread and Redis client count), divided by the number of calls.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from modelmonitor.core import events as ev
from modelmonitor.core.events import Event
from modelmonitor.runtime import wire

ROLES = ("ingest", "outlier", "aggregate", "drift")
EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "iris"


class _AcceptingSink:
    """K_SINK stand-in: answers 202 to every POST (window.closed, dead letters, alerts)."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def make_events(n: int, rows: int, now_ms: int) -> dict[str, list[Event]]:
    """The input events of each role (see the module docstring)."""
    from modelmonitor.handlers import Monitor, ingest
    mon = Monitor.from_files(str(EXAMPLE / "monitor.yaml"), str(EXAMPLE / "baseline.json"))
    rng = np.random.default_rng(7)
    logger, instances = [], []
    for i in range(n):
        t = now_ms - 60_000 + i
        data = {"instances": np.round(rng.normal([5.8, 3.0, 3.7, 1.2], [0.8, 0.4, 1.7, 0.7],
                                                 (rows, 4)), 2).tolist()}
        e = Event({"type": ev.KSERVE_REQUEST, "source": "http://localhost:9081/", "id": f"bench-{i}",
                   "time": ev.ms_to_rfc3339(t), "datacontenttype": "application/json",
                   "inferenceservicename": "iris", "component": "predictor"}, data)
        logger.append(e)
        instances.append(ingest(mon, e, now_ms))
    windows = []
    # Every window ends before now (a window.closed from the future is refused), one after the other.
    start = (now_ms - (n + 2) * 15_000) // 15_000 * 15_000
    sample = np.asarray([r for e in instances[:50] for r in e.data["instances"]], dtype=float)
    bfeat = mon.baseline["features"]
    for k in range(n):
        lo, hi = start + k * 15_000, start + (k + 1) * 15_000
        features = {}
        for j, f in enumerate(mon.inputs.names):
            x = sample[:, j]
            edges = np.asarray(bfeat[f]["edges"])
            inner, _ = np.histogram(x, bins=edges)
            features[f] = {"count": len(x), "min": float(x.min()), "max": float(x.max()),
                           "mean": float(x.mean()), "sum": float(x.sum()),
                           "histogram": {"edges": edges.tolist(),
                                         "counts": [int((x < edges[0]).sum())] + inner.tolist()
                                         + [int((x > edges[-1]).sum())]}}
        data = {"monitor": "iris", "window": {"startMs": lo, "endMs": hi, "start": ev.ms_to_rfc3339(lo),
                                              "end": ev.ms_to_rfc3339(hi)},
                "count": len(sample), "late": 0, "watermarkMs": hi, "closedAtMs": now_ms,
                "features": features, "covariance": None, "correlation": None}
        windows.append(ev.make_event(ev.WINDOW_CLOSED, "iris", ev.window_id("iris", lo, hi), data,
                                     source="/modelmonitor/default/iris/aggregate"))
    return {"ingest": logger, "outlier": instances, "aggregate": instances, "drift": windows}


# ------------------------------------------------------------------------------ runtimes
class FuncPythonDriver:
    """The func-python ASGI application around the role's ``new()``, driven in-process."""

    def __init__(self, role: str, env: dict):
        from func_python.cloudevent import ASGIApplication
        from modelmonitor.runtime.function import new_for_role
        self.loop = asyncio.new_event_loop()
        self.app = ASGIApplication(new_for_role(role))
        self.env = env
        self.loop.run_until_complete(self._lifespan("startup"))

    async def _lifespan(self, phase: str):
        messages = [{"type": f"lifespan.{phase}"}, {"type": "lifespan.unknown"}]
        sent = []

        async def receive():
            return messages.pop(0)

        async def send(msg):
            sent.append(msg)
        old = dict(os.environ)
        os.environ.update(self.env)
        try:
            await self.app({"type": "lifespan"}, receive, send)
        finally:
            os.environ.clear()
            os.environ.update(old)
        return sent

    def call(self, headers: dict[str, str], body: bytes) -> int:
        scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
        chunks = [{"type": "http.request", "body": body, "more_body": False}]
        status = []

        async def receive():
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(msg):
            if msg["type"] == "http.response.start":
                status.append(msg["status"])
        self.loop.run_until_complete(self.app(scope, receive, send))
        return status[0]

    def close(self):
        self.loop.run_until_complete(self._lifespan("shutdown"))
        self.loop.close()


def bench_role(role: str, events: list[Event], driver_cls, env: dict, warmup: int = 20) -> dict:
    driver = driver_cls(role, env)
    try:
        wires = [wire.to_binary(e) for e in events]
        statuses: dict[int, int] = {}
        for h, b in wires[:warmup]:
            driver.call(h, b)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for h, b in wires[warmup:]:
            s = driver.call(h, b)
            statuses[s] = statuses.get(s, 0) + 1
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        driver.close()
    n = len(wires) - warmup
    return {"calls": n, "cpuMicrosecondsPerCall": round(cpu / n * 1e6), "wallMicrosecondsPerCall":
            round(wall / n * 1e6), "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def bench_functions(calls: int = 500, rows: int = 10, roles: tuple[str, ...] = ROLES) -> dict:
    from modelmonitor.local.redis_server import RedisServer
    now_ms = time.time_ns() // 1_000_000
    events = make_events(calls + 20, rows, now_ms)
    sink = _AcceptingSink()
    redis = RedisServer(durable=False).start()
    workdir = tempfile.mkdtemp(prefix="mm-bench-fn-")
    try:
        for name in ("monitor.yaml", "baseline.json"):
            shutil.copy(EXAMPLE / name, workdir)
        results = {}
        for role in roles:
            env = {"MODELMONITOR_ROLE": role, "MODELMONITOR_CONFIG": os.path.join(workdir, "monitor.yaml"),
                   "MODELMONITOR_BASELINE": os.path.join(workdir, "baseline.json"),
                   "REDIS_URL": redis.url, "K_SINK": sink.url}
            results[role] = bench_role(role, events[role], FuncPythonDriver, env)
        return {"runtime": "func-python", "rowsPerRequest": rows, "roles": results}
    finally:
        sink.close()
        redis.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelmonitor.tools.bench_functions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rows", type=int, default=10, help="instances per logger request")
    parser.add_argument("--role", choices=ROLES, action="append", help="only this role (repeatable)")
    args = parser.parse_args(argv)
    print(json.dumps(bench_functions(args.calls, args.rows, tuple(args.role or ROLES)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
