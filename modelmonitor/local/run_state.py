"""The state dir of `modelmonitor run` and the run that holds it: where it is by default, the
run file (``run.json``: the run's pid and start time, its child processes), whether that run
still lives, and ending what a killed run left behind (used by `run` and `deadletters`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time

from modelmonitor.local.procs import SERVE_MODULE

log = logging.getLogger("modelmonitor.run")

#: In the state dir while a run uses it: its pid and its child processes' pids.
RUN_FILE = "run.json"


def default_state_dir(spec) -> str:
    """Where `modelmonitor run` keeps a monitor's broker log (and private Redis) by default:
    $XDG_STATE_HOME/modelmonitor/<namespace>/<monitor> (~/.local/state/...)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "modelmonitor", spec.namespace, spec.name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_time(pid: int) -> str | None:
    """A process' start time (clock ticks since boot): with the pid, it tells a process from a
    later one that got the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def run_alive(doc: dict) -> bool:
    """Whether the run a run file describes is still running."""
    pid = int(doc.get("pid") or 0)
    return bool(pid) and _pid_alive(pid) and process_start_time(pid) == doc.get("started")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reap_previous_run(state_dir: str) -> None:
    """End the processes a killed run left behind on this state dir (its functions would keep
    closing windows, its redis-server holds the log's files); refuse while that run lives."""
    path = os.path.join(state_dir, RUN_FILE)
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return
    pid = int(doc.get("pid") or 0)
    if pid != os.getpid() and run_alive(doc):
        raise RunStateBusyError(f"another modelmonitor run (pid {pid}) uses the state dir {state_dir}; "
                                f"stop it first or pass another --state-dir")
    for child in doc.get("children") or []:
        cmd = _cmdline(int(child))
        if SERVE_MODULE in cmd or "redis-server" in cmd:
            log.warning("ending pid %d left behind by a run that was killed (%s)", child, cmd.strip()[:80])
            with contextlib.suppress(ProcessLookupError):
                # redis-server flushes its AOF on SIGTERM; functions hold nothing unwritten.
                os.kill(int(child), signal.SIGTERM if "redis-server" in cmd else signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(int(child)) and "redis-server" in _cmdline(int(child)) and time.monotonic() < deadline:
                time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.remove(path)


class RunStateBusyError(RuntimeError):
    """The state dir belongs to a run that is still running."""
