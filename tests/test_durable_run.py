"""`modelmonitor run` never loses an accepted event: the real local stack (private redis-server
holding the broker log, four function processes, real HTTP) with faults injected.

* a function SIGKILLed mid-stream is restarted by the run's supervisor, and the windows equal
  the backtest's (`modelmonitor replay` of the same input);
* `modelmonitor run` itself SIGKILLed mid-stream and started again on the same state dir and
  the same Redis continues: the windows equal the backtest's;
* a subscriber down longer than its retry budget gets its events from the dead-letter log after
  a redrive (`modelmonitor deadletters redrive`);
* an ordered Trigger keeps its order across a restart of the run.

Every wait polls for a condition with a generous deadline (the machine may be busy).
"""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests
import yaml
from modelmonitor.runtime.wire import to_binary
from modelmonitor.core.events import Event

from event_sink import EventSink
from modelmonitor.core import events as ev
from modelmonitor.local.procs import free_port
from modelmonitor.local.runner import LocalRun
from modelmonitor.tools.replay import run_replay
from test_e2e_local import (MONITOR, check_windows, send, stream_range, thesis_docs, wait_until,
                            window_map, write_monitor)

EXE = str(Path(sys.executable).parent / "modelmonitor")


def backtest(monitor: Path, docs: list[dict], tmp: Path, redis_url: str) -> dict[str, dict]:
    """`modelmonitor replay` of the same logger events: its window.closed by id."""
    inp, out = tmp / "logger.jsonl", tmp / "replay.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
    run_replay(str(monitor), str(inp), str(out), redis_url=redis_url, progress=None)
    with open(out) as fh:
        return window_map(e for e in map(json.loads, fh) if e["type"] == ev.WINDOW_CLOSED)


def closer(docs: list[dict]) -> dict:
    """A logger event a minute after the stream: its watermark closes every stream window."""
    last = max(ev.rfc3339_to_ms(d["time"]) for d in docs)
    doc = json.loads(json.dumps(next(d for d in docs if d["type"] == ev.KSERVE_REQUEST)))
    doc["id"] = str(uuid.uuid4())
    doc["time"] = ev.ms_to_rfc3339(last + 60_000)
    return doc


class WindowSink(EventSink):
    """A user subscriber of window.closed (at-least-once: a window may arrive twice)."""

    def windows(self) -> dict[str, dict]:
        return window_map(self.of_type(ev.WINDOW_CLOSED))


def window_trigger(path: Path, url: str, name: str = "test-windows") -> Path:
    doc = {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"broker": "default",
                    "filter": {"attributes": {"type": ev.WINDOW_CLOSED, "monitor": MONITOR}},
                    "subscriber": {"uri": url},
                    "delivery": {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}}}
    path.write_text(yaml.safe_dump(doc))
    return path


# ---------------------------------------------------------------------------------------------
# a function killed: the supervisor restarts it
# ---------------------------------------------------------------------------------------------

def test_function_sigkilled_is_restarted_and_windows_equal_the_backtest(tmp_path, redis_url):
    monitor = write_monitor(tmp_path / "monitor.yaml", duration="1s", slide="1s",
                            watermarkDelay="1s", idleTimeout="60s")
    first = (time.time_ns() // 1_000_000 - 4 * 3600 * 1000) // 60_000 * 60_000
    docs, distinct = thesis_docs(900, first, seed=31)
    docs.append(closer(docs))
    lo, hi = stream_range(distinct)
    replayed = {wid: w for wid, w in backtest(monitor, docs, tmp_path, redis_url).items()
                if lo <= w["window"]["startMs"] < hi}
    sink = WindowSink()
    run = LocalRun(str(monitor), port=0, tick_seconds=3600, log_dir=str(tmp_path / "logs"),
                   state_dir=str(tmp_path / "run-state"), alerts=False,
                   subscribe=[str(window_trigger(tmp_path / "windows.yaml", sink.url))])
    try:
        run.start()
        aggregate = run.pools["aggregate"].processes[0]
        ingest = run.pools["ingest"].processes[0]
        killed: list[tuple[str, int]] = []
        plan = [(0.3, aggregate), (0.6, ingest)]
        lock = threading.Lock()

        def kill_mid_stream(n: int) -> None:
            with lock:
                if len(killed) < len(plan) and n >= plan[len(killed)][0] * len(docs):
                    proc = plan[len(killed)][1]
                    killed.append((proc.name, proc.pid))
                    os.kill(proc.pid, signal.SIGKILL)     # not restarted by the test

        send(run.ingress_url, docs[:-1], on_progress=kill_mid_stream)
        assert len(killed) == 2
        # The supervisor restarted both, on the same port, and counted it.
        assert wait_until(lambda: aggregate.running and ingest.running and
                          run.supervisor.restarts[aggregate.name] >= 1 and
                          run.supervisor.restarts[ingest.name] >= 1, 60), run.supervisor.restarts
        assert {aggregate.pid, ingest.pid}.isdisjoint(pid for _, pid in killed)
        assert run.broker.wait_idle(120)
        send(run.ingress_url, docs[-1:])          # the closer, once nothing can overtake it
        assert wait_until(lambda: set(replayed) <= set(sink.windows()), 60), \
            sorted(set(replayed) - set(sink.windows()))[:5]
        stats = run.broker.stats()
        assert stats["triggers"][f"{MONITOR}-aggregate"]["retried"] > 0, "the kills hit deliveries"
        assert stats["dead_letters"] == 0 and stats["dropped"] == 0
        live = {wid: w for wid, w in sink.windows().items() if lo <= w["window"]["startMs"] < hi}
        check_windows(live, replayed, distinct)
        # The restart counter reaches Prometheus through the run's collector.
        from modelmonitor.local.run_metrics import RunCollector
        samples = {(s.labels["function"], s.value) for fam in RunCollector(run).collect()
                   if fam.name == "modelmonitor_function_restarts" for s in fam.samples}
        assert ("aggregate", 1.0) in samples and ("ingest", 1.0) in samples, samples
    finally:
        left = run.stop()
        sink.close()
    assert left == {"log": 0, "deadLetters": 0}


# ---------------------------------------------------------------------------------------------
# `modelmonitor run` killed: started again on the same state, it continues
# ---------------------------------------------------------------------------------------------

def _start_run(monitor: Path, tmp: Path, state: Path, redis_url: str, port: int, triggers: Path,
               log_name: str, metrics_port: int) -> tuple[subprocess.Popen, Path]:
    log = tmp / log_name
    proc = subprocess.Popen([EXE, "run", str(monitor), "--port", str(port), "--metrics-port", str(metrics_port),
                             "--redis", redis_url, "--state-dir", str(state), "--tick", "3600",
                             "--subscribe", str(triggers), "--no-alerts"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=tmp, start_new_session=True, env={**os.environ, "TMPDIR": str(tmp)})
    assert wait_until(lambda: b"is running" in log.read_bytes() or proc.poll() is not None, 120), \
        log.read_text()
    assert proc.poll() is None, log.read_text()
    return proc, log


def broker_pending(metrics_port: int) -> float | None:
    """The run's modelmonitor_broker_pending gauge (events some Trigger has not finished)."""
    try:
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    except requests.RequestException:
        return None
    values = [float(line.split()[1]) for line in text.splitlines()
              if line.startswith("modelmonitor_broker_pending ")]
    return values[0] if values else None


def _post_all(url: str, docs: list[dict]) -> None:
    """Every doc accepted (202); a refused or failed one is sent again (the logger's retry)."""
    session = requests.Session()
    for d in docs:
        headers, body = to_binary(Event({k: v for k, v in d.items() if k != "data"}, d["data"]))
        for _ in range(100):
            try:
                if session.post(url, data=body, headers=headers, timeout=10).status_code == 202:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"the broker never accepted {d['id']}")


def test_run_sigkilled_and_started_again_on_the_same_state_continues(tmp_path, redis_url):
    monitor = write_monitor(tmp_path / "monitor.yaml", duration="1s", slide="1s",
                            watermarkDelay="1s", idleTimeout="60s")
    first = (time.time_ns() // 1_000_000 - 4 * 3600 * 1000) // 60_000 * 60_000
    docs, distinct = thesis_docs(1000, first, seed=32, dup_share=0.0)
    docs.sort(key=lambda d: ev.rfc3339_to_ms(d["time"]))
    docs.append(closer(docs))
    (tmp_path / "bt").mkdir()
    lo, hi = stream_range(distinct)
    replayed = {wid: w for wid, w in backtest(monitor, docs, tmp_path / "bt", redis_url).items()
                if lo <= w["window"]["startMs"] < hi}
    # The backtest used the same Redis: clean it, as a fresh deployment would be.
    import redis as redis_lib
    redis_lib.Redis.from_url(redis_url).flushall()
    sink = WindowSink()
    triggers = window_trigger(tmp_path / "windows.yaml", sink.url)
    state = tmp_path / "run-state"
    port, metrics_port = free_port(), free_port()
    ingress = f"http://127.0.0.1:{port}/default/default"
    half = len(docs) // 2
    proc, log1 = _start_run(monitor, tmp_path, state, redis_url, port, triggers, "run1.log", metrics_port)
    try:
        _post_all(ingress, docs[:half - 100])
        # Hold the aggregator (SIGSTOP) so the last events surely wait in the broker log when
        # the run dies; the next run ends this process and resumes them.
        aggregator = next(pid for pid in json.loads((state / "run.json").read_text())["children"]
                          if "--role aggregate" in Path(f"/proc/{pid}/cmdline").read_bytes()
                          .replace(b"\0", b" ").decode())
        os.kill(aggregator, signal.SIGSTOP)
        _post_all(ingress, docs[half - 100:half])
        proc.kill()                           # SIGKILL: no drain, functions and Redis left behind
        proc.wait(10)
        proc, log2 = _start_run(monitor, tmp_path, state, redis_url, port, triggers, "run2.log", metrics_port)
        text = log2.read_text()
        # The new run ended what the killed one left behind and resumed its undelivered events.
        assert "left behind by a run that was killed" in text, text
        assert "undelivered events from an earlier run resume now" in text, text
        _post_all(ingress, docs[half:-1])
        assert wait_until(lambda: broker_pending(metrics_port) == 0, 120), log2.read_text()[-3000:]
        _post_all(ingress, docs[-1:])             # the closer, once nothing can overtake it
        assert wait_until(lambda: set(replayed) <= set(sink.windows()), 120), \
            (sorted(set(replayed) - set(sink.windows()))[:5], log2.read_text()[-3000:])
        live = {wid: w for wid, w in sink.windows().items() if lo <= w["window"]["startMs"] < hi}
        check_windows(live, replayed, distinct)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log2.read_text()[-3000:]
        assert "every accepted event was delivered" in log2.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        sink.close()


# ---------------------------------------------------------------------------------------------
# dead letters: kept, listed, redriven
# ---------------------------------------------------------------------------------------------

class DownSink(EventSink):
    """Answers 503 while `down` is set."""

    def __init__(self):
        self.down = threading.Event()
        self.down.set()
        super().__init__()

    def answer(self, event):
        return (503, b"down for maintenance") if self.down.is_set() else (202, b"")


def user_trigger_doc(name: str, type_: str, url: str, delivery: dict, ordered: bool = False) -> dict:
    meta = {"name": name, "namespace": "default"}
    if ordered:
        meta["annotations"] = {"kafka.eventing.knative.dev/delivery.order": "ordered"}
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": meta,
            "spec": {"broker": "default", "filter": {"attributes": {"type": type_}},
                     "subscriber": {"uri": url}, "delivery": delivery}}


def publish(url: str, type_: str, n: int) -> list[str]:
    ids = []
    session = requests.Session()
    for i in range(n):
        event = Event({"type": type_, "source": "/tests/durable", "id": f"{type_}-{i}",
                            "datacontenttype": "application/json"}, {"seq": i})
        headers, body = to_binary(event)
        assert session.post(url, data=body, headers=headers, timeout=10).status_code == 202
        ids.append(event["id"])
    return ids


def test_subscriber_down_past_its_retries_gets_its_events_after_a_redrive(tmp_path, caplog):
    monitor = write_monitor(tmp_path / "monitor.yaml", duration="1s", slide="1s",
                            watermarkDelay="1s", idleTimeout="60s")
    sink = DownSink()
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(user_trigger_doc(
        "to-receiver", "test.notice", sink.url,
        {"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"})))
    state = tmp_path / "run-state"
    run = LocalRun(str(monitor), port=0, tick_seconds=3600, log_dir=str(tmp_path / "logs"),
                   state_dir=str(state), alerts=False, subscribe=[str(tmp_path / "user.yaml")])
    try:
        run.start()
        ids = publish(run.ingress_url, "test.notice", 12)
        assert wait_until(lambda: run.broker.stats()["dead_letters"] == 12, 60), run.broker.stats()
        assert run.broker.wait_idle(30)
        assert len([c for c in sink.snapshot() if c[0] == 503]) == 12 * 3    # 1 + 2 retries each
        assert "kept in the local dead-letter log" in caplog.text
        # The CLI lists them (the run is up: it uses the run's own Redis).
        out = subprocess.run([EXE, "deadletters", "list", str(monitor), "--state-dir", str(state), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert sorted(d["eventId"] for d in listed) == sorted(ids)
        assert {(d["trigger"], d["status"]) for d in listed} == {("to-receiver", 503)}
        # The receiver is back; a redrive delivers every one of them, to that Trigger only.
        sink.down.clear()
        out = subprocess.run([EXE, "deadletters", "redrive", str(monitor), "--state-dir", str(state)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "redrove 12" in out.stdout, (out.stdout, out.stderr)
        assert wait_until(lambda: sorted(e["id"] for e in sink.events) == sorted(ids), 30), sink.events
        assert [e.data["seq"] for e in sorted(sink.events, key=lambda e: e.data["seq"])] == list(range(12))
        assert run.broker.wait_idle(30) and run.broker.stats()["dead_letters"] == 0
        # Left undelivered at stop: counted, so `run` can say so and exit non-zero.
        sink.down.set()
        publish(run.ingress_url, "test.notice", 2)
        assert wait_until(lambda: run.broker.stats()["dead_letters"] == 2, 60)
    finally:
        left = run.stop()
        sink.close()
    assert left == {"log": 0, "deadLetters": 2}
    # The dead letters outlive the run; the CLI reads them from the state dir.
    out = subprocess.run([EXE, "deadletters", "list", str(monitor), "--state-dir", str(state), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 2, (out.stdout, out.stderr)


# ---------------------------------------------------------------------------------------------
# ordered delivery across a restart
# ---------------------------------------------------------------------------------------------

class SlowSink(EventSink):
    def answer(self, event):
        time.sleep(0.01)
        return 202, b""


def test_ordered_trigger_keeps_its_order_across_a_restart(tmp_path):
    monitor = write_monitor(tmp_path / "monitor.yaml", duration="1s", slide="1s",
                            watermarkDelay="1s", idleTimeout="60s")
    sink = SlowSink()
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(user_trigger_doc(
        "in-order", "test.seq", sink.url, {"retry": 3, "backoffDelay": "PT0.05S"}, ordered=True)))
    state = tmp_path / "run-state"

    def new_run() -> LocalRun:
        return LocalRun(str(monitor), port=0, tick_seconds=3600, log_dir=str(tmp_path / "logs"),
                        state_dir=str(state), alerts=False, subscribe=[str(tmp_path / "user.yaml")],
                        stop_timeout=0.0)
    run = new_run().start()
    try:
        ids = publish(run.ingress_url, "test.seq", 300)
        # Stop while most are still waiting in the log (no drain).
        left = run.stop()
        assert left["log"] > 0 and left["deadLetters"] == 0, left
        delivered_before = len(sink.events)
        assert delivered_before < 300
        run = new_run().start()
        assert wait_until(lambda: len({e["id"] for e in sink.events}) == 300, 90), len(sink.events)
        arrivals = [e["id"] for e in sink.events]
        first_seen = list(dict.fromkeys(arrivals))
        assert first_seen == ids                   # log order, across the restart
        # At-least-once: only the delivery in flight at the stop may come twice.
        assert len(arrivals) - len(first_seen) <= 1
        assert run.broker.wait_idle(30)
    finally:
        run.stop()
        sink.close()
