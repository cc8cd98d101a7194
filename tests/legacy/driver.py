"""Serve the legacy parliament project as its image does and post requests to it (standard library
only: it runs on the legacy environment's Python, CloudEvents SDK 1.x).

parliament-functions 0.1.0's own entry point, ``python -m parliament .`` in the project folder
(the Procfile the pack and s2i builders run), always listens on 0.0.0.0:8080. So that a shared
machine's port 8080 does not matter, tests/legacy/test_legacy_parliament.py runs this script in a
private network namespace (``unshare -rn``): it brings the namespace's loopback up, starts a
K_SINK that records what it receives, starts parliament, waits for its readiness probe, posts
each request, stops parliament with SIGTERM and prints one JSON document:
``{"replies": [{"status", "headers", "body"}], "sink": [{"headers", "body"}], "exit": code,
"log": text}`` (bodies base64).

Input (stdin, JSON): ``{"project": dir, "env": {...}, "requests": [{"headers", "body"}],
"namespace": true, "redis": false, "wait_for": null}``: with ``redis`` a private redis-server
(``REDIS_URL``) is started first; with ``wait_for`` (an event type) parliament is stopped only
once K_SINK received an event of that type (or after 30 s).
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PARLIAMENT_URL = "http://127.0.0.1:8080/"   # fixed by parliament's __main__
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40


def loopback_up() -> None:
    """``ip link set lo up`` without the ip tool: a new network namespace starts with lo down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING, b"\0" * 14))


def start_sink(received: list) -> ThreadingHTTPServer:
    class Sink(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                             "body": base64.b64encode(body).decode()})
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def wait_ready(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"parliament exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(PARLIAMENT_URL + "health/readiness", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("parliament did not answer its readiness probe")


def post(headers: dict, body: bytes) -> dict:
    req = urllib.request.Request(PARLIAMENT_URL, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, got, content = resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        status, got, content = err.code, dict(err.headers.items()), err.read()
    return {"status": status, "headers": {k.lower(): v for k, v in got.items()},
            "body": base64.b64encode(content).decode()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def wait_for_type(received: list, event_type: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m["headers"].get("ce-type") == event_type for m in received):
            return
        time.sleep(0.1)


def main() -> int:
    job = json.load(sys.stdin)
    if job.get("namespace"):
        loopback_up()
    received: list = []
    sink = start_sink(received)
    env = {**os.environ, **job["env"], "K_SINK": f"http://127.0.0.1:{sink.server_address[1]}/"}
    redis = None
    if job.get("redis"):
        redis, env["REDIS_URL"] = start_redis(job["project"])
    log_path = os.path.join(job["project"], "parliament.log")
    out: dict = {"replies": [], "sink": received}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "parliament", "."], cwd=job["project"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc)
            for r in job["requests"]:
                out["replies"].append(post(r["headers"], base64.b64decode(r["body"])))
            if job.get("wait_for"):
                wait_for_type(received, job["wait_for"])
        except RuntimeError as err:
            out["error"] = str(err)
        finally:
            if proc.poll() is None:
                proc.terminate()
            out["exit"] = proc.wait(timeout=15)
            if redis is not None:
                redis.terminate()
                redis.wait(timeout=10)
    sink.shutdown()
    with open(log_path, encoding="utf-8", errors="replace") as fh:
        out["log"] = fh.read()[-4000:]
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
