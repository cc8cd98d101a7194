"""Reading an events file and summarising it: what the report's tables and plots show.

Latencies are shown only where both ends were measured on a wall clock. ``modelmonitor run
--events-out`` stamps every event with the wall time at which the broker accepted it
(:data:`modelmonitor.core.events.RECEIVED_AT`); ``detectedAtMs``, ``closedAtMs`` and
``measuredAtMs`` are the functions' wall clocks in a live run. Event time (the logger's
``time``, window bounds) is a different clock: the demo compresses it and a replay's whole clock
is event time, so no latency mixes it with a wall time. The three measures:

- ``outlier``: broker arrival of the logger request -> broker arrival of its ``outlier.detected``;
- ``windowClose``: broker arrival of the first request whose event time reached the window's end
  plus the watermark delay (the moment the window could close) -> the aggregate's ``closedAtMs``
  (needs the watermark delay, i.e. the monitor file; windows closed by the idle timeout are left out);
- ``drift``: ``closedAtMs`` -> ``measuredAtMs`` of events recorded live.
"""
from __future__ import annotations

import base64
import bisect
import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from modelmonitor.core import events as _events
from modelmonitor.core.schema_check import EventDataError, validate_event_data

__all__ = ["summarise", "read_event_lines", "Collector", "MonitorEvents", "Malformed", "latency_samples",
           "LATENCY_PERCENTILES", "LATENCY_MEASURES", "NO_WALL_CLOCK_NOTE"]

LATENCY_PERCENTILES = (50, 75, 99)

# Each latency: summary key -> (what it measures, the clock of each end).
LATENCY_MEASURES = {
    "outlier": ("request -> outlier.detected",
                "wall clock: broker arrival of the logger request -> broker arrival of outlier.detected"),
    "windowClose": ("window end + watermark delay -> window.closed",
                    "wall clock: broker arrival of the first request at or past window end + watermark delay "
                    "-> the aggregate's closedAtMs"),
    "drift": ("window.closed -> drift.measured",
              "wall clock: the aggregate's closedAtMs -> the drift function's measuredAtMs"),
}
NO_WALL_CLOCK_NOTE = ("No latencies: none of these events carries the broker's arrival time, so no wall-clock "
                      "interval was measured. A replay's detectedAtMs, closedAtMs and measuredAtMs are its event-time "
                      "clock, not wall clock. Record a live run with `modelmonitor run --events-out FILE`.")
_HANDLED_TYPES = (_events.INSTANCES, _events.OUTLIER_DETECTED, _events.WINDOW_CLOSED,
                  _events.DRIFT_MEASURED, _events.DRIFT_DETECTED, _events.LATE_INSTANCES,
                  _events.DEAD_LETTER)
_LOGGER_TYPES = (_events.KSERVE_REQUEST, _events.KSERVE_RESPONSE)
# Enough examples of invalid events to diagnose a producer bug without flooding the page.
_MAX_INVALID_EXAMPLES = 5


class Malformed:
    """Marker yielded for a line that is not a JSON document."""

    def __init__(self, line_number: int, reason: str):
        self.line_number = line_number
        self.reason = reason


def read_event_lines(path: str | Path, progress: Callable[[int], None] | None = None) -> Iterable[Any]:
    """Yield the JSON document of each non-blank line of ``path``; a line that is not JSON yields
    a marker that :func:`summarise` counts as malformed. ``progress(lines)`` is called every
    100,000 lines.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write('{"type": "x"}\\n\\nnot json\\n')
    >>> docs = list(read_event_lines(f.name)); os.unlink(f.name)
    >>> docs[0], type(docs[1]).__name__
    ({'type': 'x'}, 'Malformed')
    """
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if progress is not None and number % 100_000 == 0:
                progress(number)
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError as exc:
                yield Malformed(number, str(exc))


class MonitorEvents:
    """What one monitor's events say, kept just as far as the summary and the plots need."""

    def __init__(self) -> None:
        self.windows: dict[tuple[int, int], dict] = {}
        self.drift: dict[tuple[int, int], dict] = {}
        self.drift_live: set[tuple[int, int]] = set()      # recorded with a broker arrival time
        self.alerts: dict[tuple[int, int], dict] = {}
        # (eventTimeMs, requestId, broker arrival or None, rules, features, instance indexes)
        self.outliers: list[tuple[int, str, int | None, list[str], list[str], set[int]]] = []
        self.live_requests: list[tuple[int, str]] = []      # (eventTimeMs, requestId) recorded live
        self.requests = 0
        self.responses = 0
        self.late_events = 0
        self.late_instances = 0
        self.rejected_by_role: Counter = Counter()


class Collector:
    """Consumes event documents one at a time (so huge files never sit in memory)."""

    def __init__(self, validate: bool = True) -> None:
        self.validate = validate
        self.monitors: dict[str, MonitorEvents] = {}
        self.read = 0
        self.used = 0
        self.malformed = 0
        self.duplicates = 0
        self.logger = Counter()                  # KServe logger events: the input
        self.arrivals: dict[str, int] = {}       # logger request id -> broker arrival (wall ms)
        self.stamped = 0
        self.unknown_types: Counter = Counter()
        self.invalid: Counter = Counter()
        self.invalid_examples: list[str] = []
        self._seen: set[tuple[str, str, str]] = set()

    def monitor(self, name: str) -> MonitorEvents:
        return self.monitors.setdefault(name, MonitorEvents())

    def add(self, doc: Any) -> None:
        if isinstance(doc, Malformed):
            self.read += 1
            self.malformed += 1
            return
        self.read += 1
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            self.malformed += 1
            return
        event_type = doc["type"]
        received = doc.get(_events.RECEIVED_AT)
        received = received if isinstance(received, int) and not isinstance(received, bool) else None
        if event_type in _LOGGER_TYPES:
            self._logger_event(doc, event_type, received)
            return
        if event_type not in _HANDLED_TYPES:
            self.unknown_types[event_type] += 1
            return
        key = (event_type, str(doc.get("source")), str(doc.get("id")))
        if key in self._seen:
            self.duplicates += 1
            return
        data = _event_data(doc)
        try:
            if event_type == _events.INSTANCES:
                # Only counted: a full schema check of every request would dominate the run time.
                if not isinstance(data, dict) or not isinstance(data.get("monitor"), str):
                    raise EventDataError(event_type, "data.monitor", "missing or not a string")
            elif self.validate:
                validate_event_data(event_type, data)
        except EventDataError as exc:
            self.invalid[event_type] += 1
            if len(self.invalid_examples) < _MAX_INVALID_EXAMPLES:
                self.invalid_examples.append(f"{doc.get('id')}: {exc}")
            return
        self._seen.add(key)
        self.used += 1
        self.stamped += received is not None
        self._dispatch(event_type, data, received)

    def _logger_event(self, doc: dict, event_type: str, received: int | None) -> None:
        key = (event_type, str(doc.get("source")), str(doc.get("id")))
        if key in self._seen:
            self.duplicates += 1
            return
        self._seen.add(key)
        self.used += 1
        self.logger[event_type] += 1
        if received is not None:
            self.stamped += 1
            if event_type == _events.KSERVE_REQUEST and isinstance(doc.get("id"), str):
                self.arrivals.setdefault(doc["id"], received)

    def _dispatch(self, event_type: str, data: dict, received: int | None) -> None:
        mon = self.monitor(data["monitor"])
        if event_type == _events.INSTANCES:
            if data.get("kind") == "response":
                mon.responses += 1
            else:
                mon.requests += 1
                if received is not None and isinstance(data.get("eventTimeMs"), int):
                    mon.live_requests.append((data["eventTimeMs"], str(data.get("requestId"))))
        elif event_type == _events.WINDOW_CLOSED:
            span = (data["window"]["startMs"], data["window"]["endMs"])
            if span in mon.windows:
                self.duplicates += 1     # same window from another source: emitted once, counted once
            else:
                mon.windows[span] = data
        elif event_type in (_events.DRIFT_MEASURED, _events.DRIFT_DETECTED):
            target = mon.drift if event_type == _events.DRIFT_MEASURED else mon.alerts
            span = (data["window"]["startMs"], data["window"]["endMs"])
            if span in target:
                self.duplicates += 1
            else:
                target[span] = data
                if received is not None and event_type == _events.DRIFT_MEASURED:
                    mon.drift_live.add(span)
        elif event_type == _events.OUTLIER_DETECTED:
            hits = data["outliers"]
            mon.outliers.append((data["eventTimeMs"], str(data["requestId"]), received,
                                 [o["rule"] for o in hits], [o["feature"] for o in hits],
                                 {o["instance"] for o in hits}))
        elif event_type == _events.LATE_INSTANCES:
            mon.late_events += 1
            mon.late_instances += data["instances"]
        elif event_type == _events.DEAD_LETTER:
            mon.rejected_by_role[data["role"]] += 1

    def summary(self, watermark_delays: dict[str, int] | None = None) -> dict:
        delays = watermark_delays or {}
        monitors = {name: _monitor_summary(self.monitors[name], self.arrivals, delays.get(name))
                    for name in sorted(self.monitors)}
        total_keys = ("windows", "instances", "late", "requests", "responses", "outlierEvents", "outliers",
                      "outlierInstances", "driftMeasured", "driftAlerts", "lateEvents", "lateInstances", "rejected")
        totals = {key: sum(m[key] for m in monitors.values()) for key in total_keys}
        return {
            "events": {"read": self.read, "used": self.used, "recordedLive": self.stamped},
            "input": {"loggerRequests": self.logger[_events.KSERVE_REQUEST],
                      "loggerResponses": self.logger[_events.KSERVE_RESPONSE]},
            "skipped": {"malformed": self.malformed, "unknownType": sum(self.unknown_types.values()),
                        "invalid": sum(self.invalid.values()), "duplicates": self.duplicates},
            "unknownTypes": dict(sorted(self.unknown_types.items())),
            "invalidTypes": dict(sorted(self.invalid.items())),
            "invalidExamples": list(self.invalid_examples),
            "totals": totals,
            "monitors": monitors,
        }


def _event_data(doc: dict) -> Any:
    """The data of a structured event: JSON ``data``, JSON text in ``data``, or ``data_base64``."""
    if "data" not in doc and isinstance(doc.get("data_base64"), str):
        try:
            return json.loads(base64.b64decode(doc["data_base64"]))
        except ValueError:
            return None
    data = doc.get("data")
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


def _percentile_summary(values: list[float]) -> dict | None:
    """Count, mean, p50/p75/p99 (NumPy's linear method) and max of latency samples in ms.

    >>> _percentile_summary([10, 20, 30, 40])["p50"], _percentile_summary([]) is None
    (25.0, True)
    """
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    out = {"count": int(array.size), "mean": float(array.mean())}
    for q, value in zip(LATENCY_PERCENTILES, np.percentile(array, LATENCY_PERCENTILES)):
        out[f"p{q}"] = float(value)
    out["max"] = float(array.max())
    return out


def _close_samples(mon: MonitorEvents, arrivals: dict[str, int], delay_ms: int | None) -> tuple[list[float], int]:
    """Window close latencies on the wall clock, and how many windows closed without such a request
    (the idle timeout closed them: no request's arrival marks when they could close)."""
    if delay_ms is None or not mon.live_requests:
        return [], 0
    timed = sorted((arrivals[rid], t) for t, rid in mon.live_requests if rid in arrivals)
    if not timed:
        return [], 0
    arrived = [a for a, _ in timed]
    reached = np.maximum.accumulate(np.asarray([t for _, t in timed], dtype=np.int64)).tolist()
    samples, idle = [], 0
    for (start, end), window in sorted(mon.windows.items()):
        i = bisect.bisect_left(reached, end + delay_ms)
        if i == len(reached) or arrived[i] > window["closedAtMs"]:
            idle += 1
            continue
        samples.append(float(window["closedAtMs"] - arrived[i]))
    return samples, idle


def latency_samples(mon: MonitorEvents, arrivals: dict[str, int],
                    delay_ms: int | None) -> dict[str, list[float]]:
    """The wall-clock samples of each measure in :data:`LATENCY_MEASURES` (ms)."""
    close, _ = _close_samples(mon, arrivals, delay_ms)
    return {
        "outlier": [float(received - arrivals[rid]) for _, rid, received, _, _, _ in mon.outliers
                    if received is not None and rid in arrivals],
        "windowClose": close,
        "drift": [float(mon.drift[span]["measuredAtMs"] - mon.drift[span]["closedAtMs"])
                  for span in sorted(mon.drift_live) if mon.drift[span].get("closedAtMs") is not None],
    }


def _drift_flags(mon: MonitorEvents) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Per feature: windows with any drifted score, and windows drifted per metric."""
    flags: Counter = Counter()
    by_metric: dict[str, Counter] = {}
    for record in mon.drift.values():
        for feature, scores in record["features"].items():
            drifted = [metric for metric, score in scores.items() if score["drifted"]]
            by_metric.setdefault(feature, Counter()).update(drifted)
            flags[feature] += 1 if drifted else 0
    return ({f: flags[f] for f in sorted(by_metric)},
            {f: dict(sorted(by_metric[f].items())) for f in sorted(by_metric)})


def _latency_notes(mon: MonitorEvents, arrivals: dict[str, int], delay_ms: int | None,
                   latency: dict) -> list[str]:
    notes = []
    if not latency:
        return [NO_WALL_CLOCK_NOTE]
    if "windowClose" not in latency and mon.windows:
        if delay_ms is None:
            notes.append("Window close latency not shown: it needs the monitor's watermark delay "
                         "(pass --monitor MONITOR.yaml).")
        else:
            notes.append("Window close latency not shown: no window closed after a recorded request moved the "
                         "watermark past it.")
    _, idle = _close_samples(mon, arrivals, delay_ms)
    if idle and "windowClose" in latency:
        notes.append(f"{idle} window(s) closed by the idle timeout, not by a request: left out of the "
                     "window close latency.")
    return notes


def _monitor_summary(mon: MonitorEvents, arrivals: dict[str, int], delay_ms: int | None) -> dict:
    rules: Counter = Counter()
    features: Counter = Counter()
    for _, _, _, event_rules, event_features, _ in mon.outliers:
        rules.update(event_rules)
        features.update(event_features)
    flags, flags_by_metric = _drift_flags(mon)
    latency = {}
    for key, samples in latency_samples(mon, arrivals, delay_ms).items():
        stats = _percentile_summary(samples)
        if stats is not None:
            latency[key] = dict(stats, measure=LATENCY_MEASURES[key][0], clock=LATENCY_MEASURES[key][1])
    spans = sorted(mon.windows)
    alerts = [{"window": dict(mon.alerts[span]["window"]), "severity": mon.alerts[span]["severity"],
               "reason": mon.alerts[span]["reason"], "driftedFeatures": list(mon.alerts[span]["driftedFeatures"])}
              for span in sorted(mon.alerts)]
    return {
        "windows": len(mon.windows),
        "instances": sum(w["count"] for w in mon.windows.values()),
        "late": sum(w["late"] for w in mon.windows.values()),
        "firstWindowStart": _events.ms_to_rfc3339(spans[0][0]) if spans else None,
        "lastWindowEnd": _events.ms_to_rfc3339(spans[-1][1]) if spans else None,
        "requests": mon.requests,
        "responses": mon.responses,
        "outlierEvents": len(mon.outliers),
        "outliers": sum(rules.values()),
        "outlierInstances": sum(len(o[5]) for o in mon.outliers),
        "outliersByRule": dict(sorted(rules.items())),
        "outliersByFeature": dict(sorted(features.items())),
        "driftMeasured": len(mon.drift),
        "driftAlerts": len(mon.alerts),
        "driftAlertsBySeverity": dict(sorted(Counter(a["severity"] for a in alerts).items())),
        "driftFlags": flags,
        "driftFlagsByMetric": flags_by_metric,
        "lateEvents": mon.late_events,
        "lateInstances": mon.late_instances,
        "rejected": sum(mon.rejected_by_role.values()),
        "rejectedByRole": dict(sorted(mon.rejected_by_role.items())),
        "latencyMs": latency,
        "latencyNotes": _latency_notes(mon, arrivals, delay_ms, latency),
        "alerts": alerts,
    }


def summarise(events: Iterable[Any], *, validate: bool = True,
              watermark_delays: dict[str, int] | None = None) -> dict:
    """Summary of an iterable of structured-mode event documents (dicts).

    Keys: ``events`` (read, used, recordedLive: events with a broker arrival time), ``input``
    (KServe logger requests and responses seen), ``skipped`` (malformed, unknownType, invalid,
    duplicates), ``unknownTypes`` and ``invalidTypes`` (counts per type), ``invalidExamples``,
    ``totals`` and ``monitors`` (per monitor: windows, instances (sum of window counts), late,
    requests, responses, outlierEvents (requests with outliers), outliers (rule hits: one value
    can break several rules), outlierInstances, outliersByRule, outliersByFeature,
    driftMeasured, driftAlerts, driftAlertsBySeverity, driftFlags, driftFlagsByMetric,
    lateEvents, lateInstances, rejected, rejectedByRole, latencyMs (per measure: count, mean,
    p50, p75, p99, max, measure, clock), latencyNotes, alerts). ``watermark_delays`` (monitor ->
    ms) enables the window close latency. With ``validate`` false, data is trusted.

    >>> s = summarise([{"type": "com.example.other", "id": "1", "source": "/x"}, 42])
    >>> s["skipped"]["unknownType"], s["skipped"]["malformed"], s["unknownTypes"]
    (1, 1, {'com.example.other': 1})
    """
    collector = Collector(validate=validate)
    for doc in events:
        collector.add(doc)
    return collector.summary(watermark_delays)
