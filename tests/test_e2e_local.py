"""End to end on one machine: `LocalRun` (the engine of `modelmonitor run`) against `replay`.

A `LocalRun` starts a private durable redis-server, the four functions (each a func-python
process), the local broker wired by the rendered Broker/Trigger YAML plus user Trigger YAML,
and the PingSource ticker. Thesis-stream logger events are POSTed to the broker ingress over
HTTP in binary mode, with duplicate deliveries; the same events, written as JSON lines, go
through `modelmonitor.tools.replay.run_replay`; the windows of both must be the same. Then the
same with the aggregate function SIGKILLed mid-stream, user Triggers that fail (retries,
dead-letter sink), and `modelmonitor run` as a real subprocess stopped by Ctrl-C.

The monitor here has 1 s windows, a 1 s watermark delay and a 1 s idle timeout; the streams
carry 354 requests per second of event time. The ingest Trigger is unordered, so instances
reach the aggregator slightly out of order; for both runs to see the same (no) lateness, the
disorder must stay below the watermark delay: here a delivery would have to be overtaken by
354 others, which even a heavily loaded machine does not do. Event times lie hours in the past
(the clock-skew check passes) and each stream gets its own stretch of event time, later than
the previous one, because the streams share the run's watermark.
The ticker is slowed down and the tests tick through `LocalRun.tick()` (the same PingSource
event) once a stream is delivered, so no idle advance happens while a stream is in flight.
"""
from __future__ import annotations

import base64
import collections
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path


import pytest
import requests
import yaml
from modelmonitor.runtime.wire import to_binary
from modelmonitor.core.events import Event

from event_sink import EventSink
from modelmonitor.core import events as ev
from modelmonitor.local.procs import free_port
from modelmonitor.tools.replay import run_replay
from modelmonitor.local.runner import LocalRun
from modelmonitor.tools.streams import ThesisStream, logger_events
from reference import assert_same_window

ROOT = Path(__file__).resolve().parent.parent
IRIS = ROOT / "examples" / "iris"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
WINDOW_MS = 1000
RATE = 354.0             # requests per second of event time (twice the thesis peak)
MONITOR = "iris"


# ---------------------------------------------------------------------------------------------
# recording HTTP servers (user subscribers, dead-letter sink, alert receiver)
# ---------------------------------------------------------------------------------------------

class Recorder(EventSink):
    """Records every POSTed Event with the status it answered: 500 for the first
    `fail_first` requests (or for all with `fail_always`), 202 otherwise."""

    FAIL_BODY = b"subscriber is down for maintenance"

    def __init__(self, fail_first: int = 0, fail_always: bool = False):
        self.fail_first = fail_first
        self.fail_always = fail_always
        super().__init__()

    def answer(self, event):
        if self.fail_always or len(self.calls) < self.fail_first:
            return 500, self.FAIL_BODY
        return 202, b""

    def accepted_ids(self) -> collections.Counter:
        return collections.Counter(e["id"] for e in self.events)


def wait_until(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(step)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

def write_monitor(path: Path, **window) -> Path:
    doc = yaml.safe_load((IRIS / "monitor.yaml").read_text())
    doc["spec"]["baseline"] = {"file": str(IRIS / "baseline.json")}
    doc["spec"]["window"] = window
    path.write_text(yaml.safe_dump(doc))
    return path


def user_trigger(path: Path, name: str, subscriber: str, delivery: dict) -> Path:
    doc = {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"broker": "default",
                    "filter": {"attributes": {"type": ev.DRIFT_MEASURED, "monitor": MONITOR}},
                    "subscriber": {"uri": subscriber}, "delivery": delivery}}
    path.write_text(yaml.safe_dump(doc))
    return path


class Live:
    """A started LocalRun, every event its broker accepted, and the user subscribers."""

    FLAKY_FAILURES = 3

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.monitor = write_monitor(tmp / "monitor.yaml", duration="1s", slide="1s",
                                     watermarkDelay="1s", idleTimeout="1s")
        self.flaky = Recorder(fail_first=self.FLAKY_FAILURES)
        self.failing = Recorder(fail_always=True)
        self.dls = Recorder()
        flaky = user_trigger(tmp / "flaky-trigger.yaml", "drift-to-flaky", self.flaky.url,
                             {"retry": 4, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"})
        failing = user_trigger(tmp / "failing-trigger.yaml", "drift-to-failing", self.failing.url,
                               {"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.05S",
                                "deadLetterSink": {"uri": self.dls.url}})
        self.seen: list[Event] = []
        self.lock = threading.Lock()
        self.run = LocalRun(str(self.monitor), port=0, subscribe=[str(flaky), str(failing)],
                            tick_seconds=3600.0, on_event=self._record, log_dir=str(tmp / "logs"))
        first = (time.time_ns() // 1_000_000 - 4 * 3600 * 1000) // 60_000 * 60_000
        self._epochs = iter(range(first, first + 10**9, 20 * 60_000))

    def _record(self, event: Event) -> None:
        with self.lock:
            self.seen.append(event)

    def events(self, type_: str) -> list[Event]:
        with self.lock:
            return [e for e in self.seen if e["type"] == type_]

    def next_epoch(self) -> int:
        """Start of a stretch of event time no earlier stream reached (20 minutes each)."""
        return next(self._epochs)

    def close(self):
        self.run.stop()
        for rec in (self.flaky, self.failing, self.dls):
            rec.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    lv = Live(tmp_path_factory.mktemp("live"))
    try:
        lv.run.start()
        yield lv
    finally:
        lv.close()


# ---------------------------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------------------------

def thesis_docs(n: int, start_ms: int, seed: int, dup_share: float = 0.10, response_every: int = 5):
    """Logger events (structured dicts) of an n-request thesis stream: every `response_every`-th
    request also has its response logged; ~dup_share of the events are delivered twice (the
    copy follows within a few events). Returns (docs in send order, distinct docs)."""
    stream = ThesisStream.from_csv(str(IRIS / "train.csv"), total=n, seed=seed)
    distinct = []
    for doc in (d for _, d in logger_events(stream, rate_per_s=RATE, start_ms=start_ms,
                                                     responses=True, seed=seed)):
        if doc["type"] == ev.KSERVE_RESPONSE and int(doc["id"][-12:], 16) % response_every:
            continue
        distinct.append(doc)
    rng = random.Random(seed)
    order, pending = [], []
    for doc in distinct:
        order.append(doc)
        if rng.random() < dup_share:
            pending.append([rng.randint(1, 5), doc])
        for item in pending:
            item[0] -= 1
        order.extend(d for k, d in pending if k <= 0)
        pending = [p for p in pending if p[0] > 0]
    order.extend(d for _, d in pending)
    return order, distinct


def send(url: str, docs: list[dict], threads: int = 4, on_progress=None) -> None:
    """POST every doc in binary mode (SDK) from a few threads taking them in order: the events
    reach the broker nearly in order (disorder of a few events, far below the watermark delay)."""
    work: queue.Queue = queue.Queue()
    for i, doc in enumerate(docs):
        work.put((i, doc))
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def worker():
        session = requests.Session()
        while not errors:
            try:
                i, doc = work.get_nowait()
            except queue.Empty:
                return
            try:
                attrs = {k: v for k, v in doc.items() if k != "data"}
                headers, body = to_binary(Event(attrs, doc["data"]))
                resp = session.post(url, data=body, headers=headers, timeout=30)
                if resp.status_code != 202:
                    errors.append(f"event {i}: HTTP {resp.status_code} {resp.text}")
                with lock:
                    done[0] += 1
                    n = done[0]
                if on_progress is not None:
                    on_progress(n)
            except Exception as exc:      # reported by the test, not lost in a thread
                errors.append(f"event {i}: {exc!r}")

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors, errors[:3]
    assert done[0] == len(docs)


def settle(live: Live, expected: set[str], timeout: float = 45.0) -> None:
    """Wait until the broker has delivered everything, then tick (PingSource) until every
    expected window has closed: the idle timeout lets the watermark pass the last windows."""
    assert live.run.broker.wait_idle(timeout)
    deadline = time.monotonic() + timeout
    while not expected <= set(window_map(live.events(ev.WINDOW_CLOSED))):
        assert time.monotonic() < deadline, "windows did not close in time"
        live.run.tick()
        time.sleep(0.25)
    assert live.run.broker.wait_idle(timeout)


def window_map(events, lo: int | None = None, hi: int | None = None) -> dict[str, dict]:
    """window.closed events by id, their data without the processing-time fields; a window
    emitted twice (a closer killed between send and commit) must carry the same data."""
    out: dict[str, dict] = {}
    for e in events:
        d = e["data"] if isinstance(e, dict) else e.data
        if d["monitor"] != MONITOR:
            continue
        if lo is not None and not lo <= d["window"]["startMs"] < hi:
            continue
        d = {k: v for k, v in d.items() if k not in ("closedAtMs", "watermarkMs")}
        wid = e["id"]
        assert out.setdefault(wid, d) == d, f"window {wid} was emitted twice with different data"
    return out


def backtest(live: Live, docs: list[dict], tmp: Path, redis_url: str) -> dict[str, dict]:
    inp, out = tmp / "logger.jsonl", tmp / "replay.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
    stats = run_replay(str(live.monitor), str(inp), str(out), redis_url=redis_url, progress=None)
    assert stats.duplicates == len(docs) - len({(d["type"], d["id"]) for d in docs})
    with open(out) as fh:
        return window_map(e for e in map(json.loads, fh) if e["type"] == ev.WINDOW_CLOSED)


def check_windows(live_windows: dict, replayed: dict, distinct: list[dict]) -> None:
    assert replayed, "the backtest closed no window"
    summary = [(wid, live_windows.get(wid, {}).get("count"), live_windows.get(wid, {}).get("late"),
                replayed.get(wid, {}).get("count"), replayed.get(wid, {}).get("late"))
               for wid in sorted(set(live_windows) | set(replayed))]
    assert set(live_windows) == set(replayed), summary
    for wid in sorted(replayed):
        assert_same_window(live_windows[wid], replayed[wid], wid)
    # Independently of the backtest: every distinct instance counted once, none late.
    requests_ = [d for d in distinct if d["type"] == ev.KSERVE_REQUEST]
    responses = [d for d in distinct if d["type"] == ev.KSERVE_RESPONSE]
    assert sum(w["count"] for w in live_windows.values()) == len(requests_)
    assert sum(w["features"]["prediction"]["count"] for w in live_windows.values()) == len(responses)
    assert all(w["late"] == 0 for w in live_windows.values())
    means = {wid: w["features"]["petal_length"]["mean"] for wid, w in live_windows.items()}
    assert max(means.values()) - min(means.values()) > 0.5, "the drift stage should show"


def stream_range(distinct: list[dict]) -> tuple[int, int]:
    times = [ev.rfc3339_to_ms(d["time"]) for d in distinct]
    return min(times) - WINDOW_MS, max(times) + WINDOW_MS


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------

def test_http_stream_windows_equal_the_backtest(live, tmp_path, redis_url):
    docs, distinct = thesis_docs(2000, live.next_epoch(), seed=21)
    assert len(docs) - len(distinct) > 150            # ~10% duplicate deliveries
    replayed = backtest(live, docs, tmp_path, redis_url)
    send(live.run.ingress_url, docs)
    settle(live, set(replayed))
    lo, hi = stream_range(distinct)
    check_windows(window_map(live.events(ev.WINDOW_CLOSED), lo, hi), replayed, distinct)
    for name, counters in live.run.broker.stats()["triggers"].items():
        if name.startswith("iris-"):                  # the monitor's own wiring lost nothing
            assert counters["dropped"] == 0 and counters["dead_lettered"] == 0, name
    agg = requests.get(live.run.pools["aggregate"].processes[0].metrics_url, timeout=5).text
    dedup = [line for line in agg.splitlines() if line.startswith("modelmonitor_dedup_hits_total ")]
    assert dedup and float(dedup[0].split()[1]) >= len(docs) - len(distinct)


def test_aggregate_killed_mid_stream_loses_and_double_counts_nothing(live, tmp_path, redis_url):
    docs, distinct = thesis_docs(1200, live.next_epoch(), seed=22)
    replayed = backtest(live, docs, tmp_path, redis_url)
    retried_before = live.run.broker.stats()["triggers"]["iris-aggregate"]["retried"]
    aggregate = live.run.pools["aggregate"]
    killed = threading.Event()
    codes = []

    def kill_at_40_percent(n):
        if n >= 0.4 * len(docs) and not killed.is_set():
            killed.set()
            for proc in aggregate:
                proc.kill()                      # SIGKILL, requests in flight die with it
                codes.append(proc.returncode)
                proc.restart()                   # same port: the broker's retries reach it

    send(live.run.ingress_url, docs, on_progress=kill_at_40_percent)
    assert killed.is_set() and codes == [-signal.SIGKILL]
    settle(live, set(replayed))
    lo, hi = stream_range(distinct)
    check_windows(window_map(live.events(ev.WINDOW_CLOSED), lo, hi), replayed, distinct)
    triggers = live.run.broker.stats()["triggers"]
    assert triggers["iris-aggregate"]["retried"] > retried_before, "the broker should have retried"
    for name in ("iris-ingest-request", "iris-ingest-response", "iris-aggregate", "iris-drift"):
        assert triggers[name]["dropped"] == 0 and triggers[name]["dead_lettered"] == 0, name


def test_user_triggers_get_retries_and_dead_letters(live, tmp_path, redis_url):
    docs, distinct = thesis_docs(500, live.next_epoch(), seed=23, dup_share=0.0)
    replayed = backtest(live, docs, tmp_path, redis_url)
    send(live.run.ingress_url, docs)
    settle(live, set(replayed))
    measured = collections.Counter(e["id"] for e in live.events(ev.DRIFT_MEASURED))
    assert {wid + "/drift" for wid in replayed} <= set(measured)

    # The flaky subscriber failed its first deliveries, then got every drift.measured event.
    assert wait_until(lambda: live.flaky.accepted_ids() == measured, 10), \
        (live.flaky.accepted_ids(), measured)
    failures = [c for c in live.flaky.snapshot() if c[0] == 500]
    assert len(failures) == Live.FLAKY_FAILURES
    assert all(e["type"] == ev.DRIFT_MEASURED for _, _, e in live.flaky.snapshot())
    flaky_stats = live.run.broker.stats()["triggers"]["drift-to-flaky"]
    assert flaky_stats["retried"] == Live.FLAKY_FAILURES and flaky_stats["dropped"] == 0

    # The subscriber that always fails: 1 + retry attempts, then the deadLetterSink.
    assert wait_until(lambda: live.dls.accepted_ids() == measured, 10), (live.dls.accepted_ids(), measured)
    attempts = collections.Counter(e["id"] for _, _, e in live.failing.snapshot())
    assert attempts == collections.Counter({i: 3 * n for i, n in measured.items()})
    originals = collections.defaultdict(list)         # a re-closed window is measured again
    for e in live.events(ev.DRIFT_MEASURED):
        originals[e["id"]].append(e.data)
    for _, path, dead in live.dls.snapshot():
        assert dead["type"] == ev.DRIFT_MEASURED and dead["monitor"] == MONITOR
        assert dead["knativeerrorcode"] == "500"
        assert dead["knativeerrordest"] == live.failing.url
        assert base64.b64decode(dead["knativeerrordata"]) == Recorder.FAIL_BODY
        assert dead.data in originals[dead["id"]]
    stats = live.run.broker.stats()["triggers"]["drift-to-failing"]
    assert stats["dead_lettered"] == sum(measured.values()) and stats["dropped"] == 0


# ---------------------------------------------------------------------------------------------
# `modelmonitor run` as a real subprocess
# ---------------------------------------------------------------------------------------------

def session_pids(sid: int) -> set[int]:
    """Live (non-zombie) processes of a session."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            out.add(int(entry))
    return out


def listening_addresses(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by these processes."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:
                continue
            addr, port = cols[1].split(":")
            if len(addr) == 8:
                ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1])
            else:
                raw = bytes.fromhex(addr)
                ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            out.add((ip, int(port, 16)))
    return out


def test_modelmonitor_run_subprocess_starts_serves_and_stops_on_ctrl_c(tmp_path):
    monitor = write_monitor(tmp_path / "monitor.yaml", duration="1s", slide="1s",
                            watermarkDelay="500ms", idleTimeout="30s")
    alerts = Recorder()
    # The shipped user subscription, pointed at a local receiver, plus one for drift.measured.
    trigger = yaml.safe_load((ROOT / "eventing" / "alert-subscription.yaml").read_text())
    trigger["spec"]["subscriber"]["uri"] = alerts.url + "alerts"
    measured = yaml.safe_load(yaml.safe_dump(trigger))
    measured["metadata"]["name"] = "iris-measured"
    measured["spec"]["filter"]["attributes"]["type"] = ev.DRIFT_MEASURED
    measured["spec"]["subscriber"]["uri"] = alerts.url + "measured"
    (tmp_path / "alert-trigger.yaml").write_text(yaml.safe_dump_all([trigger, measured]))
    port = free_port()
    exe = str(Path(sys.executable).parent / "modelmonitor")
    log = open(tmp_path / "run.log", "wb")
    metrics_port = free_port()
    proc = subprocess.Popen([exe, "run", str(monitor), "--port", str(port), "--metrics-port", str(metrics_port),
                             "--state-dir", str(tmp_path / "run-state"), "--subscribe",
                             str(tmp_path / "alert-trigger.yaml")], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})     # its function logs
    try:
        ingress = f"http://127.0.0.1:{port}/default/default"

        def ready():
            try:
                return requests.get(f"http://127.0.0.1:{port}/health/readiness", timeout=1).status_code == 200
            except requests.ConnectionError:
                return proc.poll() is not None
        assert wait_until(ready, 60, 0.2) and proc.poll() is None, (tmp_path / "run.log").read_text()
        assert wait_until(lambda: b"is running" in (tmp_path / "run.log").read_bytes(), 10)
        pids = session_pids(proc.pid)
        assert len(pids) >= 6        # modelmonitor run, redis-server, four functions
        listening = listening_addresses(pids)
        assert ("127.0.0.1", port) in listening
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening

        # Two windows of drifted data, closed one after the other by later events (watermark
        # delay 500 ms): the second drifted window in a row raises drift.detected, delivered
        # to the user Trigger.
        base = (time.time_ns() // 1_000_000 - 3600_000) // 1000 * 1000
        drifted = [[7.9, 4.4, 6.9, 2.5]] * 120

        log_text = (tmp_path / "run.log").read_text()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"    # every function's metrics + the broker's
        assert metrics_url in log_text

        def aggregated():
            text = requests.get(metrics_url, timeout=5).text
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("modelmonitor_events_in_total{") and 'role="aggregate"' in line
                       and 'outcome="ok"' in line)

        def logger(t, rows):
            # One at a time through the pipeline: the ingest Trigger is unordered, and events
            # overtaking each other by more than the watermark delay would be late.
            before = aggregated()
            event = Event({"type": ev.KSERVE_REQUEST, "source": "http://localhost:9081/",
                                "id": str(uuid.uuid4()), "time": ev.ms_to_rfc3339(t),
                                "datacontenttype": "application/json", "inferenceservicename": "iris"},
                               {"instances": rows})
            headers, body = to_binary(event)
            resp = requests.post(ingress, data=body, headers=headers, timeout=10)
            assert resp.status_code == 202, resp.text
            assert wait_until(lambda: aggregated() > before, 20)

        def measured_windows():
            return {e.data["window"]["startMs"] for s, p, e in alerts.snapshot() if p == "/measured"}

        logger(base + 100, drifted)
        logger(base + 1100, drifted)
        logger(base + 1600, drifted[:1])                 # closes the first window
        assert wait_until(lambda: base in measured_windows(), 30), (tmp_path / "run.log").read_text()[-3000:]
        logger(base + 2700, drifted[:1])                 # closes the second
        got = wait_until(lambda: [e for s, p, e in alerts.snapshot() if p == "/alerts"], 30)
        assert got, (tmp_path / "run.log").read_text()[-3000:]
        assert got[0]["type"] == ev.DRIFT_DETECTED and got[0]["id"] == f"iris/{base + 1000}/{base + 2000}/alert"
        # The same alert on the console, one line, without any receiver of the user's.
        window = f"{ev.ms_to_rfc3339(base + 1000)} .. {ev.ms_to_rfc3339(base + 2000)}"
        assert wait_until(lambda: [line for line in (tmp_path / "run.log").read_text().splitlines()
                                   if line.startswith("ALERT ") and window in line], 10), \
            (tmp_path / "run.log").read_text()[-3000:]

        # Ctrl-C: SIGINT to the whole foreground process group, as a terminal sends it.
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=20) == 0, (tmp_path / "run.log").read_text()[-3000:]
        assert time.monotonic() - started < 10
        assert wait_until(lambda: not session_pids(proc.pid), 5), session_pids(proc.pid)
        assert b"stopping" in (tmp_path / "run.log").read_bytes()
        assert b"every accepted event was delivered" in (tmp_path / "run.log").read_bytes()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        alerts.close()
