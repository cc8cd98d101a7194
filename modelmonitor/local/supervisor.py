"""Supervision of `modelmonitor run`'s function processes, as a Kubernetes restart policy
(`Always`) does for pods.

* A process that exits is started again on the same port after a delay that doubles with each
  restart in a row (`backoff_delay("exponential", ...)`, the same model as the broker's
  retries): 0.5 s, 1 s, 2 s, ... at most 30 s; once a process has run `stable_after` seconds
  the next restart waits 0.5 s again (Kubernetes: 10 s doubling to 5 min, reset after 10 min;
  shorter here because a local restart takes about a second, not a pod schedule).
* A liveness probe (`GET /health/liveness`) every `probe_period` seconds; after
  `failure_threshold` failures in a row (no answer within `probe_timeout`, or not 200) the
  process is killed and restarted like one that exited. As a Kubernetes startup probe does,
  failures count only once the process has answered the probe since it (re)started, or once
  `startup_deadline` seconds have passed: a process still importing under load is not killed.
* Every restart is said on the console (the `modelmonitor.run` logger) and counted
  (`restarts`, exported as `modelmonitor_function_restarts_total` by run_metrics).

Deliveries to a process that is down fail and are retried by the broker; what the retries do
not cover stays in the broker log or its dead-letter log (nothing accepted is lost).

>>> delays = [restart_delay(n) for n in (1, 2, 3, 10)]
>>> delays
[0.5, 1.0, 2.0, 30.0]
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterable

from modelmonitor.core.backoff import backoff_delay
from modelmonitor.local.procs import FunctionProcess

log = logging.getLogger("modelmonitor.run")

FIRST_DELAY = 0.5
MAX_DELAY = 30.0


def restart_delay(restart_in_a_row: int, first: float = FIRST_DELAY, maximum: float = MAX_DELAY) -> float:
    """Seconds before restart number `restart_in_a_row` (1 = first) of a crashing process."""
    return backoff_delay("exponential", first / 2, restart_in_a_row, maximum)


@dataclass
class _State:
    restart_at: float | None = None
    in_a_row: int = 0
    restarts: int = 0
    started_at: float = 0.0
    probe_failures: int = 0
    next_probe: float = 0.0
    answered: bool = False      # liveness answered 200 since the last (re)start


class Supervisor:
    """Watches processes from one thread; `start()`, `stop()` (before stopping the processes)."""

    def __init__(self, processes: Iterable[FunctionProcess], *, first_delay: float = FIRST_DELAY,
                 max_delay: float = MAX_DELAY, stable_after: float = 60.0,
                 probe_period: float = 5.0, probe_timeout: float = 5.0,
                 failure_threshold: int = 3, poll: float = 0.1, startup_deadline: float = 60.0,
                 on_restart: Callable[[FunctionProcess], None] | None = None):
        self.processes = list(processes)
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.stable_after = stable_after
        self.probe_period = probe_period
        self.probe_timeout = probe_timeout
        self.failure_threshold = failure_threshold
        self.startup_deadline = startup_deadline
        self.poll = poll
        self.on_restart = on_restart
        now = time.monotonic()
        self._states = {p.name: _State(started_at=now, next_probe=now + probe_period)
                        for p in self.processes}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probes: dict[str, threading.Thread] = {}

    @property
    def restarts(self) -> dict[str, int]:
        """Restarts so far, by process name."""
        return {name: s.restarts for name, s in self._states.items()}

    def start(self) -> "Supervisor":
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            for proc in self.processes:
                try:
                    self._check(proc, time.monotonic())
                except Exception:  # one process' trouble must not end the supervision
                    log.exception("supervising %s failed", proc.name)

    def _check(self, proc: FunctionProcess, now: float) -> None:
        st = self._states[proc.name]
        if proc.running:
            if st.restart_at is not None:      # restarted by someone else meanwhile
                st.restart_at = None
            if st.in_a_row and now - st.started_at >= self.stable_after:
                st.in_a_row = 0
            if now >= st.next_probe and proc.name not in self._probes:
                st.next_probe = now + self.probe_period
                probe = threading.Thread(target=self._probe, args=(proc, st), daemon=True,
                                         name=f"probe-{proc.name}")
                self._probes[proc.name] = probe
                probe.start()
            return
        if self._stop.is_set():
            return
        if st.restart_at is None:
            delay = restart_delay(st.in_a_row + 1, self.first_delay, self.max_delay)
            st.restart_at = now + delay
            log.warning("function %s exited with status %s; restarting it in %.1f s "
                        "(restart %d)", proc.name, proc.returncode, delay, st.restarts + 1)
            return
        if now < st.restart_at:
            return
        st.restart_at = None
        st.in_a_row += 1
        st.restarts += 1
        st.started_at = now
        st.probe_failures = 0
        st.answered = False
        st.next_probe = now + self.probe_period
        proc.start(wait=False)
        log.warning("function %s restarted (pid %s, restart %d)", proc.name, proc.pid, st.restarts)
        if self.on_restart is not None:
            self.on_restart(proc)

    def _probe(self, proc: FunctionProcess, st: _State) -> None:
        try:
            url = f"http://{proc.host}:{proc.port}/health/liveness"
            try:
                with urllib.request.urlopen(url, timeout=self.probe_timeout) as resp:
                    ok, why = resp.status == 200, f"HTTP {resp.status}"
            except urllib.error.HTTPError as err:
                ok, why = False, f"HTTP {err.code}"
            except (urllib.error.URLError, OSError) as err:
                ok, why = False, str(getattr(err, "reason", err))
            if ok or not proc.running or self._stop.is_set():
                st.probe_failures = 0
                st.answered = st.answered or ok
                return
            # A process still starting (never answered since its start, within the startup
            # deadline) has not opened its port yet: not a failure.
            if not st.answered and time.monotonic() - st.started_at < self.startup_deadline:
                return
            st.probe_failures += 1
            if st.probe_failures >= self.failure_threshold:
                log.warning("function %s failed its liveness probe %d times in a row (%s); "
                            "killing it to restart it", proc.name, st.probe_failures, why)
                st.probe_failures = 0
                proc.kill()
        finally:
            self._probes.pop(proc.name, None)
