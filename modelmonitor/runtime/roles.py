"""What each function role does with a request, apart from the HTTP runtime: one handler class
per role, built from the function's configuration (:func:`build_handler`).

``handle(event)`` answers with an :class:`~modelmonitor.core.events.Event` (the reply, HTTP 200;
Knative's broker re-publishes it) or ``(body, status[, headers])``: ``("", 202)`` acknowledges,
400 with the reason refuses an event we cannot use (a dead-letter event goes to the broker), 503
tells the broker to retry when a dependency is unavailable (Redis, or the broker at ``K_SINK``).
Events beyond the single reply are POSTed to the broker ingress in ``K_SINK``. Handlers block
(Redis, the sink): the runtime calls them from worker threads.

Any other exception is a bug of ours that this event triggers (:func:`failure_answer`): retried,
it would fail again and again (a poison message), so it is answered **422** with the reason
``internal error: <exception type>``, dead-lettered like a refused event, counted as outcome
``internal_error`` and logged in one line. 422 and not 500: Knative's broker retries every 5xx
(and 404, 408, 409, 429), and no HTTP code means "our fault, do not retry"; a 422 ends the
retries and puts the original in the Trigger's dead-letter sink, from where it can be sent again
once the bug is fixed.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from typing import Callable, Mapping

import redis
import requests
from modelmonitor.core import events as ev
from modelmonitor.core.events import Event
from modelmonitor.runtime import metrics
from modelmonitor.handlers import (Aggregator, AlertState, Monitor, Rejected, dead_letter, ingest, measure, outliers,
                        wall_clock_ms)
from modelmonitor.local.redis_server import connect
from state.group_commit import GroupCommitter
from state.store import ConflictError

log = logging.getLogger("modelmonitor")
ROLES = ("ingest", "outlier", "aggregate", "drift")
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
#: Errors that mean "the state store is unavailable right now": HTTP 503, the broker retries.
#: Any Redis error (down, out of memory, read-only replica, ...): the aggregate's atomic apply
#: wrote nothing, so a retry is safe and nothing is lost.
UNAVAILABLE = (redis.exceptions.RedisError, ConflictError, TimeoutError)
#: Status of an event that made a handler fail unexpectedly (see the module doc).
INTERNAL_ERROR_STATUS = 422


class SinkUnavailable(RuntimeError):
    """The broker at K_SINK cannot take an event now (unreachable, refusing, or no K_SINK):
    a dependency outage, HTTP 503, the broker redelivers the event that caused the emission."""


#: How a Sink writes an event as a binary-mode HTTP message: ``encode(event) -> (headers, body)``.
Encoder = Callable[[Event], "tuple[Mapping[str, str], bytes]"]


class Sink:
    """POSTs events to the broker ingress (binary mode). Raises when the broker refuses.

    ``encode`` writes the HTTP message; by default the CloudEvents SDK 2.x edge
    (:func:`modelmonitor.runtime.wire.to_binary`, imported only then, so that the legacy
    parliament runtime, which brings SDK 1.x, can pass its own)."""

    def __init__(self, url: str | None, role: str = "?", encode: Encoder | None = None):
        self.url = url
        self.role = role
        if encode is None:
            from modelmonitor.runtime.wire import to_binary as encode
        self.encode = encode
        self.session = requests.Session()
        self.lock = threading.Lock()

    def send(self, event: Event) -> None:
        if not self.url:
            raise SinkUnavailable("K_SINK is not set: cannot emit events beyond the reply")
        headers, body = self.encode(event)
        try:
            resp = self.session.post(self.url, data=body, headers=headers, timeout=10)
        except requests.RequestException as exc:
            raise SinkUnavailable(f"the broker at K_SINK did not answer {event['type']}: "
                                  f"{type(exc).__name__}") from None
        if resp.status_code >= 300:
            raise SinkUnavailable(f"broker answered {resp.status_code} to {event['type']}")
        metrics.EVENTS_OUT.labels(role=self.role, type=event["type"]).inc()

    def send_quietly(self, event: Event) -> None:
        try:
            self.send(event)
        except Exception as exc:  # a dead letter that cannot be sent must not hide the 400
            log.warning("could not emit %s: %s", event["type"], exc)


class Handler:
    role = ""

    def __init__(self, mon: Monitor, sink: Sink):
        self.mon = mon
        self.sink = sink
        self._counters: dict[tuple, object] = {}

    def count(self, counter, **labels: str) -> None:
        """``counter.labels(role=<this role>, **labels).inc()`` with the labelled child kept
        (a labels() lookup costs several microseconds per call)."""
        key = (id(counter), *labels.values())
        child = self._counters.get(key)
        if child is None:
            child = counter.labels(role=self.role, **labels)
            if len(self._counters) < 64:      # label values are a few outcomes and event types
                self._counters[key] = child
        child.inc()

    def close(self) -> None:
        """Stop background work (the function is stopping)."""

    def reject(self, reason: str, event: Event | None, raw: bytes | None = None):
        self.count(metrics.EVENTS_IN, outcome="rejected")
        self.sink.send_quietly(dead_letter(self.mon.name, self.role, reason, original=event, raw=raw,
                                           namespace=self.mon.spec.namespace))
        return json.dumps({"error": reason}), 400, {"Content-Type": "application/json"}

    def internal_error(self, exc: Exception, event: Event | None):
        """An unexpected exception while handling ``event``: one log line, a dead letter, 422."""
        reason = f"internal error: {type(exc).__name__}"
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"
        # repr: attributes and messages may hold newlines; one event, one line.
        log.error("%s: %s handling %r %r at %s: %r; answered %d and dead-lettered", self.role, reason,
                  None if event is None else str(event.get("type"))[:200],
                  None if event is None else str(event.get("id"))[:200], where,
                  ev.text_safe(str(exc))[:300], INTERNAL_ERROR_STATUS)
        self.count(metrics.EVENTS_IN, outcome="internal_error")
        try:
            dead = dead_letter(self.mon.name, self.role, reason, original=event, namespace=self.mon.spec.namespace)
        except Exception:   # the original defeats even the dead letter: keep the reason
            dead = dead_letter(self.mon.name, self.role, reason, namespace=self.mon.spec.namespace)
        self.sink.send_quietly(dead)
        return json.dumps({"error": reason}), INTERNAL_ERROR_STATUS, {"Content-Type": "application/json"}


class IngestHandler(Handler):
    role = "ingest"

    def handle(self, event: Event):
        out = ingest(self.mon, event, wall_clock_ms())
        if out is None:
            self.count(metrics.EVENTS_IN, outcome="ignored")
            return "", 202
        self.count(metrics.EVENTS_IN, outcome="ok")
        self.count(metrics.EVENTS_OUT, type=out["type"])
        return out


class OutlierHandler(Handler):
    role = "outlier"

    def handle(self, event: Event):
        now = wall_clock_ms()
        out = outliers(self.mon, event, now)
        self.count(metrics.EVENTS_IN, outcome="ok")
        if out is None:
            return "", 202
        self.count(metrics.EVENTS_OUT, type=out["type"])
        metrics.OUTLIER_LATENCY.observe(max(0, now - event.data["eventTimeMs"]) / 1000)
        return out


class AggregateHandler(Handler):
    role = "aggregate"

    def __init__(self, mon: Monitor, sink: Sink, client):
        super().__init__(mon, sink)
        self.aggregator = Aggregator.for_client(mon, client)
        try:
            self.aggregator.store.state()      # connect now, not on the first event
        except redis.exceptions.RedisError as exc:
            log.warning("Redis not reachable yet: %s", exc)
        self.committer = GroupCommitter(self._commit, on_batch=metrics.BATCH_SIZE.observe)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.closer = threading.Thread(target=self._close_loop, name="closer", daemon=True)
        self.closer.start()

    def _commit(self, pending):
        t0 = time.perf_counter()
        result = self.aggregator.apply(pending, wall_clock_ms())
        metrics.REDIS_LATENCY.observe(time.perf_counter() - t0)
        if result.watermark_ms is not None:
            metrics.WATERMARK_LAG.set(max(0, wall_clock_ms() - result.watermark_ms) / 1000)
        if result.ready:
            self.wake.set()
        return [(s, result.watermark_ms) for s in result.statuses]

    def close(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.closer.join(timeout=5)

    def _close_loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(timeout=1.0)
            self.wake.clear()
            try:
                self.aggregator.close_ready(wall_clock_ms(), self._emit_window)
            except Exception as exc:
                log.warning("closing windows failed (will retry): %s", exc)
                time.sleep(0.2)

    def _emit_window(self, event: Event) -> None:
        self.sink.send(event)
        if event["type"] != ev.WINDOW_CLOSED:       # segments.excess: no window of its own
            return
        d = event.data
        metrics.WINDOWS_CLOSED.inc()
        metrics.CLOSE_LATENCY.observe(max(0, d["closedAtMs"] - d["window"]["endMs"]
                                          - self.mon.spec.window.watermark_delay_ms) / 1000)

    def handle(self, event: Event):
        if event["type"] == ev.PING:
            self.aggregator.tick(wall_clock_ms())
            self.wake.set()
            self.count(metrics.EVENTS_IN, outcome="tick")
            return "", 202
        pending = self.aggregator.encode(event, wall_clock_ms())
        status, watermark = self.committer.submit(pending)
        if status == "dup":
            metrics.DEDUP_HITS.inc()
            self.count(metrics.EVENTS_IN, outcome="duplicate")
            return "", 202
        self.count(metrics.EVENTS_IN, outcome="ok")
        if status.startswith("late:"):
            metrics.LATE_INSTANCES.inc(pending.instances * len(status[5:].split(",")))
            late = self.aggregator.late_event(event, status, watermark)
            if late is not None:
                self.count(metrics.EVENTS_OUT, type=late["type"])   # emitted as the reply
                return late
        return "", 202


class _TrackedAlertState:
    """The alert state of one request, remembering the transition it made, so that an alert
    the broker refused can be undone: the redelivered window then raises it again (otherwise
    the policy would see the window as already evaluated and the alert would be lost)."""

    def __init__(self, inner: AlertState):
        self.inner = inner
        self.transition = None

    def update(self, fn, segment: str | None = None):
        def step(state):
            new_state, result = fn(state)
            self.transition = (segment, state, new_state)
            return new_state, result
        return self.inner.update(step, segment)

    def roll_back(self) -> None:
        if self.transition is None:
            return
        segment, before, after = self.transition
        # Only if nobody moved the state on since (another replica, a later window).
        self.inner.update(lambda state: (before, None) if state == after else (state, None), segment)


class DriftHandler(Handler):
    role = "drift"

    def __init__(self, mon: Monitor, sink: Sink, client):
        super().__init__(mon, sink)
        self.alerts = AlertState(client, mon.name)

    def handle(self, event: Event):
        now = wall_clock_ms()
        alerts = _TrackedAlertState(self.alerts)
        out = measure(self.mon, event, now, alerts)
        self.count(metrics.EVENTS_IN, outcome="ok")
        closed_at = event.data.get("closedAtMs") if isinstance(event.data, dict) else None
        if closed_at:
            metrics.DRIFT_LATENCY.observe(max(0, now - closed_at) / 1000)
        try:
            for extra in out[1:]:
                self.sink.send(extra)
        except Exception:
            try:
                alerts.roll_back()
            except Exception as exc:  # the original failure is the one to report
                log.warning("could not roll back the alert state: %s", exc)
            raise  # SinkUnavailable: HTTP 503, the broker redelivers the window
        if out:   # drift.measured goes out as the reply: emitted all the same
            self.count(metrics.EVENTS_OUT, type=out[0]["type"])
        return out[0] if out else ("", 202)


def build_handler(role: str, cfg: Mapping[str, str], encode: Encoder | None = None) -> Handler:
    """The handler of a role, configured from ``cfg`` (the function's environment: the monitor
    in MODELMONITOR_CONFIG and MODELMONITOR_BASELINE, REDIS_URL, K_SINK), warmed up so that
    readiness means ready. ``encode``: how its Sink writes events (see :class:`Sink`)."""
    if role not in ROLES:
        raise ValueError(f"function role must be one of {', '.join(ROLES)}, got {role!r}")
    mon = Monitor.from_config(cfg)
    mon.warm_up()
    sink = Sink(cfg.get("K_SINK"), role, encode)
    if role == "ingest":
        return IngestHandler(mon, sink)
    if role == "outlier":
        return OutlierHandler(mon, sink)
    client = connect(cfg.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                     socket_timeout=5, socket_connect_timeout=2, health_check_interval=10)
    if role == "aggregate":
        return AggregateHandler(mon, sink, client)
    return DriftHandler(mon, sink, client)


def respond(h: Handler, event: Event):
    """``h.handle(event)`` with the refusals, outages and bugs turned into answers (see module doc)."""
    try:
        return h.handle(event)
    except Exception as exc:
        return failure_answer(h, exc, event)


def failure_answer(h: Handler, exc: Exception, event: Event | None):
    """The answer to an exception raised while handling ``event``: 400 for a refused event, 503
    for an unavailable dependency, 422 and a dead letter for anything else (a bug)."""
    if isinstance(exc, Rejected):
        return h.reject(exc.reason, event)
    if isinstance(exc, UNAVAILABLE + (SinkUnavailable,)):
        h.count(metrics.EVENTS_IN, outcome="unavailable")
        what = "broker unavailable" if isinstance(exc, SinkUnavailable) else "state store unavailable"
        return json.dumps({"error": f"{what}: {exc}"}), 503, {"Content-Type": "application/json"}
    return h.internal_error(exc, event)
