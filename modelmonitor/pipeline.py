"""What the four functions do, apart from HTTP: shared by the Knative functions and `replay`.

- :func:`ingest`   logger event -> ``inference.instances`` (or :class:`Rejected`)
- :func:`outliers` ``inference.instances`` -> ``outlier.detected`` (or nothing)
- :class:`Aggregator` ``inference.instances`` -> Redis windows -> ``window.closed``
- :func:`measure`  ``window.closed`` -> ``drift.measured`` (+ ``drift.detected`` under the alert policy)

Times: ``now_ms`` is passed in. Live functions pass the wall clock; a replay passes its own
event-time clock so its output is deterministic.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from cloudevents.http import CloudEvent

from . import events as ev
from . import metrics
from .baseline import load_baseline
from .drift import evaluate_alert, measure_drift
from .outliers import OutlierDetector
from .payloads import PayloadError, cap_reason, parse_request, parse_response, split_columns
from .spec import CATEGORICAL, NUMERICAL, Feature, MonitorSpec, load_monitor
from .state.store import GROUPS, INPUTS, PREDICTIONS, ApplyResult, PendingRequest, WindowStore, decode_rows, encode_rows
from .stats import WindowAggregate

MAX_DEAD_LETTER_DATA = 64 * 1024
#: Event times are epoch milliseconds from 1970-01-01 to 9999-12-31T23:59:59.999Z: what RFC 3339
#: can write. Outside that range a time cannot be formatted, and an absurd one (1e30) would make
#: the window store's per-window loop run for ever inside Redis.
MIN_EVENT_TIME_MS = 0
MAX_EVENT_TIME_MS = 253_402_300_799_999


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Rejected(Exception):
    """An event we cannot use: answered with HTTP 400 and sent on as a dead letter."""

    def __init__(self, reason: str):
        reason = cap_reason(reason)
        super().__init__(reason)
        self.reason = reason


def check_event_time(t: int, what: str) -> int:
    """``t`` if it is a representable event time (see MAX_EVENT_TIME_MS), else :class:`Rejected`."""
    if not MIN_EVENT_TIME_MS <= t <= MAX_EVENT_TIME_MS:
        raise Rejected(f"{what} {t} ms is outside the event times ModelMonitor handles "
                       f"(1970-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z)")
    return t


@dataclass
class Layout:
    """One row group (inputs or predictions): its features and where each type sits."""
    features: tuple[Feature, ...]

    def __post_init__(self):
        self.names = [f.name for f in self.features]
        self.numeric = [f for f in self.features if f.type == NUMERICAL]
        self.categorical = [f for f in self.features if f.type == CATEGORICAL]


class Monitor:
    """A validated monitor with its baseline and everything precomputed for the hot paths."""

    def __init__(self, spec: MonitorSpec, baseline: dict | None = None):
        self.spec = spec
        self.name = spec.name
        if baseline is None and spec.baseline_inline is not None:
            baseline = load_baseline(spec.baseline_inline)
        elif baseline is None and spec.baseline_ref and "file" in spec.baseline_ref:
            baseline = load_baseline(spec.baseline_ref["file"])
        self.baseline = baseline
        self.inputs = Layout(spec.features)
        self.predictions = Layout(spec.predictions)
        bfeat = (baseline or {}).get("features", {})
        self.edges = {n: np.asarray(f["edges"], dtype=float) for n, f in bfeat.items()
                      if f.get("type", NUMERICAL) == NUMERICAL and f.get("edges") is not None}
        self.known_categories = {n: set(f.get("frequencies", {})) for n, f in bfeat.items()
                                 if f.get("type") == CATEGORICAL}
        self.outlier_detector = None
        if baseline is not None and spec.outliers.enabled:
            self.outlier_detector = OutlierDetector(spec.features, baseline, spec.outliers)

    def warm_up(self) -> None:
        """Run every hot path once on synthetic data (no I/O), so the first real event does not
        pay for lazy imports and first-call set-up."""
        rows = [[(self.baseline or {}).get("features", {}).get(f.name, {}).get("mean", 0.0)
                 if f.type == NUMERICAL else "x" for f in self.inputs.features]] * 3
        numeric, categorical = split_columns(rows, self.inputs.features)
        if self.outlier_detector is not None:
            self.outlier_detector.detect(numeric, categorical)
        agg = WindowAggregate(self.inputs.features, {n: e for n, e in self.edges.items() if n in self.inputs.names},
                              {n: c for n, c in self.known_categories.items() if n in self.inputs.names})
        agg.update_arrays(numeric, categorical)
        record = agg.finalize(self.spec.stats)
        if self.baseline is not None and self.spec.drift:
            try:
                measure_drift(record, self.baseline, self.spec.drift, self.spec.features)
            except (ValueError, KeyError):
                pass

    @classmethod
    def from_files(cls, config_path: str, baseline_path: str | None = None) -> "Monitor":
        spec = load_monitor(config_path)
        baseline = load_baseline(baseline_path) if baseline_path else None
        return cls(spec, baseline)

    @classmethod
    def from_env(cls) -> "Monitor":
        config = os.environ.get("MODELMONITOR_CONFIG", "/etc/modelmonitor/monitor.yaml")
        baseline = os.environ.get("MODELMONITOR_BASELINE") or None
        if baseline and not os.path.exists(baseline):
            baseline = None
        return cls.from_files(config, baseline)

    def layout(self, kind: str) -> Layout:
        return self.predictions if kind == "response" else self.inputs

    def source(self, role: str) -> str:
        return ev.source_for(self.name, role, self.spec.namespace)


# --------------------------------------------------------------------------------- ingest
def event_time_ms(attrs, now_ms: int) -> int:
    t = attrs.get("time")
    if not t:
        return now_ms
    try:
        ms = ev.rfc3339_to_ms(str(t))
    except (ValueError, OverflowError):
        raise Rejected(f"attribute 'time' is not an RFC 3339 timestamp: {t!r}") from None
    return check_event_time(ms, f"attribute 'time' ({t!s})")


@dataclass
class Instances:
    """What ingest makes of one logger event (the data of an ``inference.instances`` event)."""
    id: str                 # the instances event id (deterministic)
    kind: str               # request | response
    event_time_ms: int
    rows: list
    request_id: str
    logger_type: str
    logger_source: str

    def data(self, mon: Monitor) -> dict:
        return {"monitor": mon.name, "requestId": self.request_id, "kind": self.kind,
                "eventTime": ev.ms_to_rfc3339(self.event_time_ms), "eventTimeMs": self.event_time_ms,
                "features": mon.layout(self.kind).names, "instances": self.rows,
                "loggerType": self.logger_type, "loggerSource": self.logger_source}


def ingest_rows(mon: Monitor, attrs, data, now_ms: int, *, check_skew: bool = True,
                rows_parser: Callable | None = None) -> Instances | None:
    """Validate a logger event (attributes + body) into :class:`Instances`; None when it is not
    for this monitor (another InferenceService, or a response with no predictions declared)."""
    etype = attrs["type"]
    if etype not in (ev.KSERVE_REQUEST, ev.KSERVE_RESPONSE):
        raise Rejected(f"event type {etype!r} is not a KServe logger request or response")
    for key in ("source", "id"):  # they name the request downstream (requestId, dedup key)
        if not isinstance(attrs.get(key), str) or not attrs[key]:
            raise Rejected(f"attribute '{key}' is missing or empty")
    isvc = attrs.get("inferenceservicename")
    if isvc is not None and isvc != mon.spec.inference_service:
        return None
    kind = "response" if etype == ev.KSERVE_RESPONSE else "request"
    if kind == "response" and not mon.spec.predictions:
        return None
    t = event_time_ms(attrs, now_ms)
    if check_skew and t - now_ms > mon.spec.window.max_clock_skew_ms:
        raise Rejected(f"event time {ev.ms_to_rfc3339(t)} is {t - now_ms} ms ahead of this function's clock "
                       f"(maxClockSkew {mon.spec.window.max_clock_skew_ms} ms)")
    if data is None or data == b"" or data == "":
        raise Rejected("empty body: expected a KServe V1 or V2 payload")
    try:
        if kind == "request":
            rows = (rows_parser and rows_parser(data)) or parse_request(data, mon.inputs.features)
        else:
            rows = parse_response(data, mon.predictions.features)
    except PayloadError as exc:
        raise Rejected(exc.reason) from None
    source = attrs["source"]
    return Instances(ev.instances_id(mon.name, etype, source, attrs["id"]), kind, t, rows, attrs["id"],
                     etype, source)


def ingest(mon: Monitor, event: CloudEvent, now_ms: int, *, check_skew: bool = True) -> CloudEvent | None:
    """A KServe logger event as an ``inference.instances`` event (or None, see ingest_rows)."""
    inst = ingest_rows(mon, event, event.data, now_ms, check_skew=check_skew)
    if inst is None:
        return None
    return ev.make_event(ev.INSTANCES, mon.name, inst.id, inst.data(mon), source=mon.source("ingest"),
                         time_ms=inst.event_time_ms)


def event_data(event: CloudEvent, expected_type: str) -> dict:
    """The JSON object data of a derived event of the expected type, or :class:`Rejected`."""
    if event["type"] != expected_type:
        raise Rejected(f"event type {event['type']!r} is not {expected_type}")
    data = event.data
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except ValueError:
            raise Rejected("data is not JSON") from None
    if not isinstance(data, dict):
        raise Rejected("data must be a JSON object")
    return data


def check_instances(mon: Monitor, event: CloudEvent) -> tuple[dict, Layout]:
    """The data of an ``inference.instances`` event, checked against this monitor's layout."""
    data = event_data(event, ev.INSTANCES)
    kind = data.get("kind", "request")
    if kind not in ("request", "response"):
        raise Rejected(f"data.kind {kind!r} is not request or response")
    layout = mon.layout(kind)
    if data.get("features") != layout.names:
        raise Rejected(f"data.features {data.get('features')!r} do not match the monitor's {layout.names!r}")
    rows = data.get("instances")
    if not isinstance(rows, list) or not rows:
        raise Rejected("data.instances must be a non-empty list of rows")
    t = data.get("eventTimeMs")
    if not isinstance(t, int) or isinstance(t, bool):
        raise Rejected("data.eventTimeMs must be an integer")
    check_event_time(t, "data.eventTimeMs")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(layout.names):
            raise Rejected(f"data.instances[{i}] must be a list of {len(layout.names)} values")
    return data, layout


def _split(rows: list, layout: Layout) -> tuple[np.ndarray, list[list]]:
    try:
        return split_columns(rows, layout.features)
    except (ValueError, TypeError) as exc:
        raise Rejected(f"data.instances: {exc}") from None


# -------------------------------------------------------------------------------- outliers
def outliers(mon: Monitor, event: CloudEvent, now_ms: int) -> CloudEvent | None:
    """One ``outlier.detected`` event listing every flagged value of the request, or None."""
    if mon.outlier_detector is None:
        return None
    data, layout = check_instances(mon, event)
    if data.get("kind", "request") != "request":
        return None
    numeric, categorical = _split(data["instances"], layout)
    found = mon.outlier_detector.detect(numeric, categorical)
    if not found:
        return None
    return outlier_event(mon, event["id"], data.get("requestId"), data["eventTimeMs"], found, now_ms)


def outlier_event(mon: Monitor, inst_id: str, request_id, t: int, found: list, now_ms: int) -> CloudEvent:
    out = {"monitor": mon.name, "requestId": request_id, "eventTimeMs": t, "detectedAtMs": now_ms,
           "outliers": found}
    return ev.make_event(ev.OUTLIER_DETECTED, mon.name, inst_id + "/outliers", out,
                         source=mon.source("outlier"), time_ms=t)


# ------------------------------------------------------------------------------- aggregate
def _pack_numeric_rows(rows: list) -> bytes | None:
    """Rows of plain finite numbers packed as float64 (the common case, without NumPy's
    per-call overhead); None when anything needs the general path and its error messages."""
    flat = [v for row in rows for v in row]
    for v in flat:
        if type(v) is not float and type(v) is not int:
            return None
    try:
        packed = struct.pack(f"<{len(flat)}d", *flat)
    except (struct.error, OverflowError):
        return None
    return packed if all(math.isfinite(v) for v in flat) else None


def dedup_key(instances_event_id: str) -> str:
    """What the window store remembers of a logger event: a digest of the instances id, which
    is itself derived from the logger event's (type, source, id) for this monitor."""
    return ev.short_hash(instances_event_id)


class Aggregator:
    """Feeds instances into the monitor's Redis windows and turns sealed windows into
    ``window.closed`` events."""

    def __init__(self, mon: Monitor, store: WindowStore, *, replica: str | None = None):
        self.mon = mon
        self.store = store
        self.token = replica or uuid.uuid4().hex
        # Processing time this replica last received a valid instances event, applied or not
        # (the store may have been down), or started; and since when its applies fail: tick().
        self.last_received_ms = wall_clock_ms()
        self.failing_since_ms: int | None = None
        self.redelivery_horizon_ms = redelivery_horizon_ms(mon.spec.delivery)

    @classmethod
    def for_client(cls, mon: Monitor, client, **kwargs) -> "Aggregator":
        w = mon.spec.window
        store = WindowStore(client, mon.name, duration_ms=w.duration_ms, slide_ms=w.slide_ms,
                            delay_ms=w.watermark_delay_ms, **kwargs)
        return cls(mon, store)

    def encode(self, event: CloudEvent) -> PendingRequest:
        """Validate and pack one instances event (pure: no Redis)."""
        data, layout = check_instances(self.mon, event)
        num = _pack_numeric_rows(data["instances"]) if not layout.categorical else None
        if num is not None:
            cat = b""
        else:
            numeric, categorical = _split(data["instances"], layout)
            cat_rows = [list(r) for r in zip(*categorical)] if categorical else None
            num, cat = encode_rows(numeric, cat_rows)
        group = PREDICTIONS if data.get("kind") == "response" else INPUTS
        self.last_received_ms = wall_clock_ms()
        # Dedup key: the logger event (type, source, id), which the instances id encodes.
        return PendingRequest(dedup_key(event["id"]), data["eventTimeMs"], len(data["instances"]),
                              group, num, cat)

    def apply(self, pending: Sequence[PendingRequest], now_ms: int) -> ApplyResult:
        try:
            result = self.store.apply(pending, now_ms)
        except Exception:
            if self.failing_since_ms is None:
                self.failing_since_ms = now_ms
            raise
        self.failing_since_ms = None
        return result

    def late_event(self, event: CloudEvent, status: str, watermark_ms: int | None) -> CloudEvent | None:
        """The optional ``instances.late`` event for a request that was late for some window."""
        if not self.mon.spec.late_events or not status.startswith("late:"):
            return None
        data = event.data if isinstance(event.data, dict) else json.loads(event.data)
        return self.late_event_for(event["id"], data.get("requestId"), data["eventTimeMs"],
                                   len(data["instances"]), status, watermark_ms)

    def late_event_for(self, inst_id: str, request_id, t: int, n: int, status: str,
                       watermark_ms: int | None) -> CloudEvent | None:
        if not self.mon.spec.late_events or not status.startswith("late:"):
            return None
        d = self.mon.spec.window.duration_ms
        starts = [int(x) for x in status[5:].split(",") if x]
        out = {"monitor": self.mon.name, "requestId": request_id, "eventTimeMs": t,
               "watermarkMs": watermark_ms, "lateWindows": [{"startMs": x, "endMs": x + d} for x in starts],
               "instances": n}
        return ev.make_event(ev.LATE_INSTANCES, self.mon.name, inst_id + "/late", out,
                             source=self.mon.source("aggregate"), time_ms=t)

    def tick(self, now_ms: int) -> int:
        """The PingSource tick: advance the watermark of an idle stream (see WindowStore.tick).

        The store measures idleness from the last *applied* request. While the store is down
        requests keep arriving but none is applied, so the first tick after it comes back would
        see a long-idle stream and push the watermark past the windows the backlog belongs to,
        making all of it late. So a stream is not idle, whatever the store says, while this
        replica received an event within idleTimeout (or started less than idleTimeout ago: a
        restarted replica cannot tell whether a backlog waits at the broker), nor while the
        broker may still be redelivering requests whose apply failed here (the Trigger's retry
        horizon, from spec.delivery, after the first failure; a successful apply ends it).
        """
        idle = self.mon.spec.window.idle_timeout_ms
        if now_ms - self.last_received_ms < idle:
            return 0
        if self.failing_since_ms is not None and now_ms - self.failing_since_ms < self.redelivery_horizon_ms + idle:
            return 0
        return self.store.tick(now_ms, idle)[1]

    def close_ready(self, now_ms: int, emit: Callable[[CloudEvent], None], limit: int = 64) -> int:
        """Close sealed windows: claim (lease), compute, emit, then free. ``emit`` must raise
        if the event could not be sent; the window is then released for a later retry.
        Afterwards (whatever happened) the open / ready window gauges are refreshed."""
        try:
            return self._close_ready(now_ms, emit, limit)
        finally:
            self.observe_windows()

    def observe_windows(self) -> None:
        """Set the windows-open and windows-ready gauges (one pipelined round trip; skipped
        quietly when the store is unreachable: the closer reports that failure itself)."""
        prefix = self.store.prefix
        try:
            pipe = self.store.client.pipeline(transaction=False)
            pipe.zcard(prefix + ":open")
            pipe.zcard(prefix + ":ready")
            n_open, n_ready = pipe.execute()
        except Exception:
            return
        metrics.WINDOWS_OPEN.set(n_open)
        metrics.WINDOWS_READY.set(n_ready)

    def _close_ready(self, now_ms: int, emit: Callable[[CloudEvent], None], limit: int) -> int:
        closed = 0
        while True:
            claims = self.store.claim(self.token, limit)
            if not claims:
                return closed
            for claim in claims:
                try:
                    event = self.window_event(claim, now_ms)
                    emit(event)
                except BaseException:
                    self.store.release(claim, self.token)
                    raise
                self.store.complete(claim, self.token)
                closed += 1
            if len(claims) < limit:
                return closed

    def window_event(self, claim, now_ms: int) -> CloudEvent:
        stored = self.store.read(claim)
        record = self.finalize(stored)
        mon = self.mon
        data = {
            "monitor": mon.name,
            "window": window_info(claim.start_ms, claim.end_ms),
            "count": record["count"],
            "late": claim.late,
            "watermarkMs": claim.watermark_ms,
            "closedAtMs": now_ms,
            "features": record["features"],
            "covariance": record.get("covariance"),
            "correlation": record.get("correlation"),
        }
        return ev.make_event(ev.WINDOW_CLOSED, mon.name, ev.window_id(mon.name, claim.start_ms, claim.end_ms),
                             data, source=mon.source("aggregate"), time_ms=claim.end_ms)

    def finalize(self, stored: dict) -> dict:
        """Statistics of a window from its stored rows (both groups)."""
        mon = self.mon
        out: dict[str, Any] = {"count": 0, "features": {}, "covariance": None, "correlation": None}
        for group, layout in ((INPUTS, mon.inputs), (PREDICTIONS, mon.predictions)):
            if not layout.features:
                continue
            num_bytes, cat_bytes = stored[group]
            numeric, cat_rows = decode_rows(num_bytes, cat_bytes, len(layout.numeric))
            if len(layout.numeric):
                # A canonical row order makes float results independent of arrival order,
                # and so of how many replicas there were and how events were spread.
                numeric = numeric[np.lexsort(numeric.T[::-1])] if len(numeric) else numeric
            categorical = [list(c) for c in zip(*cat_rows)] if cat_rows else [[] for _ in layout.categorical]
            names = set(layout.names)
            agg = WindowAggregate(layout.features, {n: e for n, e in mon.edges.items() if n in names},
                                  {n: c for n, c in mon.known_categories.items() if n in names})
            if len(numeric) or cat_rows:
                agg.update_arrays(numeric if layout.numeric else np.empty((max(len(cat_rows), 0), 0)), categorical)
            rec = agg.finalize(mon.spec.stats)
            out["features"].update(rec["features"])
            if group == INPUTS:
                out["count"] = rec["count"]
                out["covariance"] = rec.get("covariance")
                out["correlation"] = rec.get("correlation")
            else:
                out["predictionCount"] = rec["count"]
        return out


_ISO_SECONDS = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


def redelivery_horizon_ms(delivery: dict | None) -> int:
    """How long the broker keeps redelivering a failed event: the sum of the backoff waits of
    the monitor's Trigger delivery (spec.delivery over the rendered defaults: 5 retries,
    exponential, PT0.2S), at most an hour.

    >>> redelivery_horizon_ms(None), redelivery_horizon_ms({"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT1S"})
    (12400, 6000)
    """
    d = {"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S", **(delivery or {})}
    m = _ISO_SECONDS.match(str(d.get("backoffDelay") or ""))
    delay = (int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60 + float(m.group(3) or 0)) if m else 0.2
    retry = int(d.get("retry") or 0)
    waits = (delay * (n if d.get("backoffPolicy") == "linear" else 2 ** n) for n in range(1, min(retry, 64) + 1))
    return int(min(sum(waits), 3600.0) * 1000)


def window_info(start_ms: int, end_ms: int) -> dict:
    return {"startMs": start_ms, "endMs": end_ms, "start": ev.ms_to_rfc3339(start_ms), "end": ev.ms_to_rfc3339(end_ms)}


# ----------------------------------------------------------------------------------- drift
class AlertState:
    """The alert policy's state in Redis, shared by replicas: optimistic read-modify-write."""

    def __init__(self, client, monitor: str):
        self.client = client
        self.key = "{mm:%s}:alert" % monitor

    def update(self, fn: Callable[[dict | None], tuple[dict, Any]]) -> Any:
        import redis
        while True:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(self.key)
                    raw = pipe.get(self.key)
                    state = json.loads(raw) if raw else None
                    new_state, result = fn(state)
                    pipe.multi()
                    pipe.set(self.key, json.dumps(new_state))
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue


class MemoryAlertState:
    """The same interface over a dict, for pure use (tests, no Redis)."""

    def __init__(self):
        self.state: dict | None = None

    def update(self, fn):
        self.state, result = fn(self.state)
        return result


def measure(mon: Monitor, event: CloudEvent, now_ms: int, alert_state) -> list[CloudEvent]:
    """``drift.measured`` for a closed window, plus ``drift.detected`` when the alert policy fires."""
    data = event_data(event, ev.WINDOW_CLOSED)
    if not isinstance(data.get("window"), dict) or not isinstance(data.get("features"), dict):
        raise Rejected("data must be a window.closed record with window and features")
    window = data["window"]
    for key in ("startMs", "endMs"):
        v = window.get(key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise Rejected(f"data.window.{key} must be an integer")
        check_event_time(v, f"data.window.{key}")
    if window["endMs"] <= window["startMs"]:
        raise Rejected("data.window.endMs must be greater than data.window.startMs")
    count = data.get("count", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise Rejected("data.count must be a non-negative integer")
    if mon.baseline is None or not mon.spec.drift:
        return []
    try:
        measured = measure_drift(data, mon.baseline, mon.spec.drift, mon.spec.features + mon.spec.predictions)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, ArithmeticError) as exc:
        raise Rejected(f"cannot measure drift: {exc}") from None
    out = {
        "monitor": mon.name,
        "window": window,
        "count": data.get("count", 0),
        "closedAtMs": data.get("closedAtMs"),
        "measuredAtMs": now_ms,
        "features": measured,
    }
    wid = ev.window_id(mon.name, window["startMs"], window["endMs"])
    emitted = [ev.make_event(ev.DRIFT_MEASURED, mon.name, wid + "/drift", out, source=mon.source("drift"),
                             time_ms=window["endMs"])]
    drifted = sorted(n for n, metrics in measured.items() if any(m["drifted"] for m in metrics.values()))

    def step(state):
        return evaluate_alert(state, window_end_ms=window["endMs"], window_count=int(data.get("count", 0)),
                              drifted_features=drifted, policy=mon.spec.alerts,
                              monitored_features=len(mon.spec.features) + len(mon.spec.predictions))

    alert = alert_state.update(step)
    if alert is not None:
        detected = dict(out, severity=alert["severity"], reason=alert["reason"], driftedFeatures=drifted)
        emitted.append(ev.make_event(ev.DRIFT_DETECTED, mon.name, wid + "/alert", detected,
                                     source=mon.source("drift"), time_ms=window["endMs"]))
    return emitted


# ----------------------------------------------------------------------------- dead letters
def dead_letter(mon_name: str, role: str, reason: str, original: CloudEvent | None = None,
                raw: bytes | None = None, namespace: str = "default") -> CloudEvent:
    """``event.rejected``: what was refused, by whom, and why (with the original, truncated)."""
    if original is not None:
        # Attributes as strings (a structured-mode event may carry a number where a string belongs).
        otype, osrc, oid = (None if original.get(k) is None else str(original.get(k)) for k in ("type", "source", "id"))
        body = original.data
        if isinstance(body, (dict, list)):
            try:
                body = json.dumps(body)
            except (ValueError, TypeError, RecursionError):  # nested too deeply, or not JSON-able
                body = repr(body)[:MAX_DEAD_LETTER_DATA + 1]
        elif isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        elif body is None:
            body = ""
    else:
        otype = osrc = oid = None
        body = (raw or b"").decode("utf-8", "replace")
    body = str(body)
    truncated = len(body) > MAX_DEAD_LETTER_DATA
    data = {"monitor": mon_name, "reason": reason, "role": role, "originalType": otype,
            "originalSource": osrc, "originalId": oid, "originalData": body[:MAX_DEAD_LETTER_DATA],
            "truncated": truncated}
    rid = f"{mon_name}/rejected/{role}/{ev.short_hash(str(otype), str(osrc), str(oid), reason)}"
    return ev.make_event(ev.DEAD_LETTER, mon_name, rid, data, source=ev.source_for(mon_name, role, namespace))
