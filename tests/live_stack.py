"""Helpers for the tests that drive the real local stack (`modelmonitor run`'s LocalRun: the local
broker, the four func-python function processes, a real redis-server): a monitor with short
windows, a recorder of every event the broker accepts, a test-driven PingSource, a KServe-logger
look-alike that sends binary-mode CloudEvents, and the comparison of the live `window.closed`
results with the brute-force reference (tests/reference.py) plus numpy.

Used by test_hardening.py and test_soak.py.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import requests
import yaml

from modelmonitor.core import events as ev
from reference import percentile_within_bound, reference_run, windows_brute_force

ROOT = Path(__file__).resolve().parent.parent
IRIS_DIR = ROOT / "examples" / "iris"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS = np.loadtxt(IRIS_DIR / "iris.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2, 3))
LOGGER_SOURCE = "http://localhost:9081/"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1,
               what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def write_monitor(directory: Path, *, duration: str = "2s", slide: str | None = None,
                  watermark: str = "1s", idle: str = "2s", delivery: dict | None = None,
                  late_events: bool = False, max_clock_skew: str | None = None) -> Path:
    """The iris example monitor copied into ``directory`` with short windows (and the baseline
    next to it); returns the monitor.yaml path."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(IRIS_DIR / "baseline.json", directory / "baseline.json")
    doc = yaml.safe_load((IRIS_DIR / "monitor.yaml").read_text())
    spec = doc["spec"]
    spec["window"] = {"duration": duration, "slide": slide or duration, "watermarkDelay": watermark,
                      "idleTimeout": idle}
    if max_clock_skew:
        spec["window"]["maxClockSkew"] = max_clock_skew
    spec["delivery"] = delivery or {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}
    spec["baseline"] = {"file": "baseline.json"}
    if late_events:
        spec["lateEvents"] = True
    path = directory / "monitor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Slim:
    """What a light Recorder keeps of an event: type, id and the data fields the checks read."""
    __slots__ = ("attrs", "data")

    def __init__(self, event, fields: tuple[str, ...] | None):
        self.attrs = {"type": event["type"], "id": event["id"]}
        data = event.data
        self.data = data if fields is None or not isinstance(data, dict) else {k: data.get(k) for k in fields}

    def __getitem__(self, key):
        return self.attrs[key]


class Recorder:
    """Every event the broker accepts, in acceptance order (on_event of LocalRun). A light
    recorder (long soaks) keeps only instances (what the reference needs), closed windows and
    dead letters, and of each only a few fields."""

    LIGHT = {ev.INSTANCES: ("requestId", "eventTimeMs", "instances"), ev.WINDOW_CLOSED: None,
             ev.DEAD_LETTER: None, ev.LATE_INSTANCES: None}

    def __init__(self, light: bool = False):
        self.events: list = []
        self.lock = threading.Lock()
        self.light = light

    def __call__(self, event) -> None:
        if self.light:
            if event["type"] not in self.LIGHT:
                return
            event = Slim(event, self.LIGHT[event["type"]])
        with self.lock:
            self.events.append(event)

    def of(self, type_: str) -> list:
        with self.lock:
            return [e for e in self.events if e["type"] == type_]

    def windows(self) -> dict[str, list[dict]]:
        """window.closed data by event id (a list: a window re-emitted after a crash shows twice)."""
        out: dict[str, list[dict]] = {}
        for e in self.of(ev.WINDOW_CLOSED):
            out.setdefault(e["id"], []).append(e.data)
        return out


class Ticker:
    """The PingSource, driven by the test: LocalRun.tick() every ``period`` seconds while enabled."""

    def __init__(self, run, period: float = 0.3):
        self.run = run
        self.period = period
        self.enabled = threading.Event()
        self.enabled.set()
        self._stop = threading.Event()
        self.ticks = 0
        self._thread = threading.Thread(target=self._loop, name="test-ticker", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            if self.enabled.is_set():
                self.run.tick()
                self.ticks += 1

    def pause(self) -> None:
        """Stop ticking and wait until no tick is in flight any more (none left in a retry)."""
        self.enabled.clear()
        time.sleep(self.period)
        name = f"{self.run.spec.name}-aggregate-tick"

        def settled() -> bool:
            c = self.run.broker.stats()["triggers"][name]
            return c["matched"] == c["delivered"] + c["dropped"] + c["dead_lettered"] + c["abandoned"]

        wait_until(settled, 30, what="ticks in flight to be delivered")

    def resume(self) -> None:
        self.enabled.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Sent:
    """One logger event as the test sent it."""
    id: str
    time_ms: int
    rows: list
    status: int = 0              # the broker ingress' answer (0: no answer)
    valid: bool = True           # ingest must accept it (schema fits, time within the skew)
    note: str = ""


def iris_rows(rng: random.Random, n: int) -> list[list[float]]:
    """n instances near real iris rows (2 decimals, so sums are exact enough to compare)."""
    out = []
    for _ in range(n):
        base = IRIS[rng.randrange(len(IRIS))]
        out.append([round(float(v) + rng.uniform(-0.3, 0.3), 2) for v in base])
    return out


def logger_body(rows: list, form: str) -> bytes:
    """A KServe request body: V1 rows as lists, V1 rows as objects, or one V2 tensor."""
    if form == "v1":
        return json.dumps({"instances": rows}).encode()
    if form == "v1obj":
        return json.dumps({"instances": [dict(zip(FEATURES, r)) for r in rows]}).encode()
    if form == "v2":
        return json.dumps({"inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64",
                                       "data": [v for r in rows for v in r]}]}).encode()
    raise ValueError(form)


def logger_headers(event_id: str, t_ms: int | None, isvc: str = "iris") -> dict:
    """Binary-mode headers as the KServe payload logger sets them."""
    h = {"ce-specversion": "1.0", "ce-type": ev.KSERVE_REQUEST, "ce-source": LOGGER_SOURCE,
         "ce-id": event_id, "ce-inferenceservicename": isvc, "ce-namespace": "default",
         "ce-component": "predictor", "ce-endpoint": "", "content-type": "application/json"}
    if t_ms is not None:
        h["ce-time"] = ev.ms_to_rfc3339(t_ms)
    return h


class Logger:
    """A KServe payload logger look-alike: POSTs binary-mode CloudEvents to the broker ingress and
    remembers what it sent and what the broker answered."""

    def __init__(self, url: str, seed: int = 1, time_scale: float = 1.0):
        """``time_scale`` > 1 makes event time run that many times faster than the wall clock
        (from now on), so a long stretch of stream time fits in a shorter test."""
        self.url = url
        self.time_scale = time_scale
        self.t0 = now_ms()
        self.rng = random.Random(seed)
        self.sent: list[Sent] = []
        self.lock = threading.Lock()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def post(self, headers: dict, body: bytes, timeout: float = 15) -> int:
        try:
            return self._session().post(self.url, data=body, headers=headers, timeout=timeout).status_code
        except requests.RequestException:
            return 0

    def send(self, rows: list | None = None, *, t_ms: int | None = None, event_id: str | None = None,
             form: str | None = None, valid: bool = True, note: str = "", body: bytes | None = None) -> Sent:
        with self.lock:
            rows = rows if rows is not None else iris_rows(self.rng, self.rng.randint(1, 3))
            form = form or self.rng.choice(["v1", "v1", "v1obj", "v2"])
        t = self.clock() if t_ms is None else t_ms
        sent = Sent(event_id or str(uuid.uuid4()), t, rows, valid=valid, note=note)
        sent.status = self.post(logger_headers(sent.id, t), body if body is not None else logger_body(rows, form))
        with self.lock:
            self.sent.append(sent)
        return sent

    def clock(self) -> int:
        """The event time of an event sent now."""
        now = now_ms()
        return now if self.time_scale == 1.0 else self.t0 + int((now - self.t0) * self.time_scale)

    def resend(self, original: Sent) -> Sent:
        """A duplicate delivery: the same logger event (same id, time and body) again."""
        copy = Sent(original.id, original.time_ms, original.rows, valid=original.valid, note="duplicate")
        copy.status = self.post(logger_headers(copy.id, copy.time_ms), logger_body(copy.rows, "v1"))
        with self.lock:
            self.sent.append(copy)
        return copy

    def steady(self, rate: float, seconds: float, *, during: Callable[[float], None] | None = None,
               duplicate_share: float = 0.0, burst_every: float | None = None, burst_factor: int = 10,
               burst_seconds: float = 0.5, threads: int = 8) -> None:
        """Send at ``rate`` events/s for ``seconds``; ``during(elapsed)`` is called between sends
        (fault injection); a share of events is delivered again (soon or after a while); every
        ``burst_every`` seconds the rate jumps ``burst_factor``-fold for ``burst_seconds``."""
        start = time.monotonic()
        pending_dups: list[tuple[float, Sent]] = []
        duplicated: set[str] = set()
        with ThreadPoolExecutor(threads) as pool:
            futures = []
            next_at = start
            while True:
                elapsed = time.monotonic() - start
                if elapsed >= seconds:
                    break
                if during is not None:
                    during(elapsed)
                in_burst = burst_every is not None and (elapsed % burst_every) < burst_seconds \
                    and elapsed >= burst_every
                interval = 1.0 / (rate * (burst_factor if in_burst else 1))
                now = time.monotonic()
                if now < next_at:
                    time.sleep(min(next_at - now, 0.05))
                    continue
                next_at = max(next_at + interval, now - 0.2)
                futures.append(pool.submit(self.send))
                due = [d for d in pending_dups if d[0] <= now]
                for d in due:
                    pending_dups.remove(d)
                    futures.append(pool.submit(self.resend, d[1]))
                if duplicate_share and self.rng.random() < duplicate_share:
                    # duplicate a recent event not duplicated yet: at once, or a while later
                    with self.lock:
                        recent = [x for x in self.sent[-20:] if x.note == "" and x.id not in duplicated]
                    if recent:
                        original = self.rng.choice(recent)
                        duplicated.add(original.id)
                        pending_dups.append((now + self.rng.choice([0.0, 0.05, 0.5]), original))
            for _, original in pending_dups:
                futures.append(pool.submit(self.resend, original))
            for f in futures:
                f.result(timeout=60)


@dataclass
class Expected:
    """The reference windows of a run and what they were computed from."""
    windows: list[dict]                  # reference_run output
    accepted: list[Sent]                 # unique logger events the stack accepted, in apply order
    instance_windows: int                # instance-window pairs of those events
    monitor: str = "iris"
    extra: dict = field(default_factory=dict)


def accepted_in_order(recorder: Recorder, logger: Logger) -> list[Sent]:
    """The valid logger events the broker accepted (202), in the order their
    inference.instances events reached the broker, i.e. the order the ordered aggregate
    Trigger applies them. Checks that ingest turned each into the right instances.

    Caveat: the local broker calls on_event just before it queues the event, not atomically
    with it; on a machine so overloaded that a delivery thread stalls for longer than the
    watermark delay between the two, the recorded order can differ from the applied one in a
    way that changes which instances are late. Tests that must be exact under arbitrary load
    use a watermark delay longer than any such stall (the soak)."""
    by_id: dict[str, Sent] = {}
    for s in logger.sent:
        if s.valid and s.status == 202:
            by_id.setdefault(s.id, s)
    order: list[Sent] = []
    seen: set[str] = set()
    for e in recorder.of(ev.INSTANCES):
        d = e.data
        rid = d["requestId"]
        assert rid in by_id, f"an instances event for a logger event the test did not send valid: {rid}"
        s = by_id[rid]
        assert d["eventTimeMs"] == s.time_ms, (rid, d["eventTimeMs"], s.time_ms)
        assert d["instances"] == s.rows, (rid, d["instances"], s.rows)
        if rid not in seen:
            seen.add(rid)
            order.append(s)
    missing = set(by_id) - seen
    assert not missing, f"{len(missing)} accepted logger events never became instances: {sorted(missing)[:5]}"
    return order


def expected_windows(spec, order: list[Sent]) -> Expected:
    w = spec.window
    events = [(s.id, s.time_ms, s.rows) for s in order]
    ref = reference_run(events, w.duration_ms, w.slide_ms, w.watermark_delay_ms, flush=True)
    pairs = sum(len(s.rows) * len(windows_brute_force(s.time_ms, w.duration_ms, w.slide_ms)) for s in order)
    return Expected(ref, order, pairs, spec.name)


def wait_for_windows(recorder: Recorder, expected: Expected, timeout: float) -> dict[str, list[dict]]:
    ids = {ev.window_id(expected.monitor, r["start"], r["end"]) for r in expected.windows}
    wait_until(lambda: ids <= set(recorder.windows()), timeout, 0.2,
               what=f"{len(ids)} windows to close (have {len(set(recorder.windows()) & ids)})")
    return recorder.windows()


def assert_windows_match(live: dict[str, list[dict]], expected: Expected) -> None:
    """Every reference window closed with the reference's count, late count and statistics;
    no other window closed; copies of a re-emitted window agree; nothing accepted is lost."""
    ref_ids = {}
    for r in expected.windows:
        ref_ids[ev.window_id(expected.monitor, r["start"], r["end"])] = r
    assert set(live) == set(ref_ids), (sorted(set(live) ^ set(ref_ids)))
    total_count = total_late = 0
    for wid, r in ref_ids.items():
        copies = live[wid]
        first = copies[0]
        for other in copies[1:]:
            assert (other["count"], other["late"], other["features"]) == \
                   (first["count"], first["late"], first["features"]), f"{wid}: re-emitted copies differ"
        rows = np.array(r["rows"], dtype=float).reshape(-1, 4)
        assert first["count"] == len(rows), (wid, first["count"], len(rows))
        assert first["late"] == r["late"], (wid, first["late"], r["late"])
        total_count += first["count"]
        total_late += first["late"]
        for j, name in enumerate(FEATURES):
            f = first["features"][name]
            col = rows[:, j]
            assert f["count"] == len(col)
            if not len(col):
                continue
            assert np.isclose(f["sum"], col.sum(), rtol=1e-12, atol=1e-9), (wid, name, f["sum"], col.sum())
            assert f["min"] == col.min() and f["max"] == col.max(), (wid, name)
            assert np.isclose(f["mean"], col.mean(), rtol=1e-12), (wid, name)
            for q in ("25", "50", "75"):
                assert percentile_within_bound(f["percentiles"][q], col, float(q)), \
                    (wid, name, q, f["percentiles"][q], np.percentile(col, float(q)))
            if len(col) > 1:
                assert np.isclose(f["stddev"], col.std(ddof=1), rtol=1e-9, atol=1e-12), (wid, name)
    # Nothing accepted is lost: every instance-window pair is in a window or counted late.
    assert total_count + total_late == expected.instance_windows, (total_count, total_late,
                                                                   expected.instance_windows)


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")
