"""Supervision of function processes for the local broker (`modelmonitor run`) and tests.

A `FunctionProcess` is one `python -P -m modelmonitor.runtime.serve ...` child process bound
to one loopback port (``-P``: the working directory is not put on ``sys.path``, so a folder named
``state/`` or ``modelmonitor/`` where `modelmonitor run` was started cannot shadow the packages); a `FunctionPool` is several replicas of the same function (the local stand-in
for a Knative Service scaled to N pods). The port is chosen once, when the object is built, so
`url` stays valid across `restart()` and can be handed to the broker before the process runs.

    with FunctionProcess("ingest", ["--role", "ingest"], env={"MONITOR": "iris"}) as proc:
        requests.post(proc.url, ...)

>>> p = FunctionProcess("echo", ["--func-dir", "tests/funcs/echo"], port=18080)
>>> p.url, p.running
('http://127.0.0.1:18080/', False)
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import IO, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

SERVE_MODULE = "modelmonitor.runtime.serve"


class FunctionStartError(RuntimeError):
    """The function process exited or never became ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick for port 0).

    Another process could take it before the child binds it; on a test machine that race is
    rare enough, and the readiness check reports it clearly when it happens.

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class FunctionProcess:
    """One function served by `modelmonitor.runtime.serve` in a child process.

    `args` are the serve arguments that pick the function (`["--role", "ingest"]` or
    `["--func-dir", DIR]`, optionally `--threads N`); host and port are added here. `env` is
    added to this process' environment. `log_file` receives the child's stdout and stderr
    (default: inherited); `cwd` is its working directory. Port 0 or None picks a free port now.
    """

    def __init__(self, name: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 host: str = "127.0.0.1", port: int | None = None, *,
                 ready_timeout: float = 60.0, log_file: str | os.PathLike | None = None,
                 cwd: str | os.PathLike | None = None):
        self.name = name
        self.args = list(args)
        self.env = dict(env or {})
        self.host = host
        self.port = port or free_port(host)
        # func-python serves only the function and its health probes: metrics get their own port.
        self.metrics_port = free_port(host)
        self.ready_timeout = ready_timeout
        self.log_file = log_file
        self.cwd = cwd
        self._proc: subprocess.Popen | None = None
        self._log_handle: IO | None = None
        self._terminating = False
        self._lock = threading.Lock()

    # -- properties ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Where the function's `POST /` is (the subscriber URL for the broker)."""
        return f"http://{self.host}:{self.port}/"

    @property
    def metrics_url(self) -> str:
        """Where the function process serves its Prometheus metrics."""
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def command(self) -> list[str]:
        # -P (safe path): `-m` would put the working directory first on sys.path, and any folder
        # there named like a top-level package (`state/`, even empty) would be imported instead.
        return [sys.executable, "-P", "-m", SERVE_MODULE, *self.args,
                "--host", self.host, "--port", str(self.port)]

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, wait: bool = True) -> "FunctionProcess":
        """Spawn the process; with `wait`, return once GET /health/readiness answers 200."""
        with self._lock:
            if self.running:
                return self
            self._terminating = False
            env = {**os.environ, **self.env, "MODELMONITOR_METRICS_PORT": str(self.metrics_port),
                   "MODELMONITOR_METRICS_ADDRESS": self.host}
            # Function output must show up at once in logs, not when a buffer fills.
            env.setdefault("PYTHONUNBUFFERED", "1")
            out = None
            if self.log_file is not None:
                self._log_handle = open(self.log_file, "ab")
                out = self._log_handle
            # Its own process group: a terminal's Ctrl-C reaches `modelmonitor run` only, which
            # drains the broker into the still running functions before it stops them.
            self._proc = subprocess.Popen(self.command(), env=env, stdout=out, cwd=self.cwd,
                                          stderr=subprocess.STDOUT if out else None,
                                          stdin=subprocess.DEVNULL, process_group=0)
            log.info("started function %s (pid %d) at %s", self.name, self._proc.pid, self.url)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll the readiness probe (bounded by `timeout`, default `ready_timeout`)."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        probe = f"http://{self.host}:{self.port}/health/readiness"
        last_error = "no answer yet"
        while True:
            proc = self._proc
            if proc is None:
                raise FunctionStartError(f"function {self.name} was not started")
            if proc.poll() is not None:
                raise FunctionStartError(
                    f"function {self.name} exited with status {proc.returncode} before it "
                    f"was ready ({' '.join(self.command())})")
            try:
                with urllib.request.urlopen(probe, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as err:
                last_error = str(err)
            if time.monotonic() >= deadline:
                raise FunctionStartError(
                    f"function {self.name} not ready at {probe} after "
                    f"{self.ready_timeout if timeout is None else timeout} s: {last_error}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if the process has not exited after `timeout` seconds."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            if proc.poll() is None:
                if not self._terminating:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("function %s ignored SIGTERM for %.1f s; killing it",
                                self.name, timeout)
                    proc.kill()
                    proc.wait(5)
            self._close_log()
            return proc.returncode

    def terminate(self) -> None:
        """Send SIGTERM and return at once (`stop` waits; this lets many stop in parallel)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            # A second SIGTERM would interrupt waitress' own orderly shutdown.
            self._terminating = True
            proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL without warning (fault-injection: a pod that dies mid-request)."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
            self._close_log()

    def restart(self, wait: bool = True) -> "FunctionProcess":
        """Stop (if running) and start again on the same port."""
        self.stop()
        return self.start(wait=wait)

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> "FunctionProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"FunctionProcess({self.name!r}, {self.url}, {state})"


class FunctionPool:
    """`replicas` copies of one function, each its own process and port; round robin.

    >>> pool = FunctionPool("echo", 2, ["--func-dir", "tests/funcs/echo"])
    >>> len(pool.urls), pool.next_url() == pool.urls[0], pool.next_url() == pool.urls[1]
    (2, True, True)
    """

    def __init__(self, name: str, replicas: int, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, host: str = "127.0.0.1", **kwargs):
        if replicas < 1:
            raise ValueError(f"a function pool needs at least one replica, got {replicas}")
        self.name = name
        self.processes = [FunctionProcess(f"{name}-{i}", args, env, host, **kwargs)
                          for i in range(replicas)]
        self._turn = itertools.count()

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.processes]

    def next_url(self) -> str:
        # itertools.count's __next__ is atomic under the GIL, so threads share it safely.
        return self.processes[next(self._turn) % len(self.processes)].url

    def start(self, wait: bool = True) -> "FunctionPool":
        """Spawn every replica first, then wait for all (they start in parallel)."""
        for proc in self.processes:
            proc.start(wait=False)
        if wait:
            for proc in self.processes:
                proc.wait_ready()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        stop_all(self.processes, timeout)

    def __iter__(self):
        return iter(self.processes)

    def __len__(self) -> int:
        return len(self.processes)

    def __enter__(self) -> "FunctionPool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_all(processes: Iterable[FunctionProcess]) -> list[FunctionProcess]:
    """Start several processes in parallel and wait until every one is ready."""
    procs = list(processes)
    for proc in procs:
        proc.start(wait=False)
    for proc in procs:
        proc.wait_ready()
    return procs


def stop_all(processes: Iterable[FunctionProcess], timeout: float = 10.0) -> None:
    """SIGTERM every process at once, then wait for each (SIGKILL after `timeout`)."""
    procs = [p for p in processes if p.running]
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.stop(timeout)
