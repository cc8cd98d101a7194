"""The drift handler: ``window.closed`` -> ``drift.measured`` (+ ``drift.detected`` under the alert policy).
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from modelmonitor.core import events as ev
from modelmonitor.core.events import Event
from modelmonitor.core.spec import MULTIVARIATE_DETECTORS
from modelmonitor.detect.alert_policy import drift_ratios
from modelmonitor.detect.drift import evaluate_alert, measure_drift, measure_multivariate, shown_scores
from modelmonitor.handlers.monitor import (Monitor, Rejected, check_attributes, check_clock_skew, check_event_time,
                                           event_data)
class AlertState:
    """The alert policy's state in Redis, shared by replicas: optimistic read-modify-write.

    One state per monitor (``{mm:<monitor>}:alert``), and per segment for a segmented monitor
    (``{mm:<monitor>}:alert@<segment>``).
    Two round trips per update: GET the state, then a compare-and-set script that writes the new
    state only if the key still holds what was read (else the update runs again on the new state)."""

    #: KEYS[1] the state; ARGV[1] "1" when it was absent, ARGV[2] what was read, ARGV[3] the new state.
    _COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '1' and current == false) or (ARGV[1] == '0' and current == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3])
  return 1
end
return 0
"""

    def __init__(self, client, monitor: str):
        self.client = client
        self.key = "{mm:%s}:alert" % monitor
        self._compare_and_set = client.register_script(self._COMPARE_AND_SET)

    def update(self, fn: Callable[[dict | None], tuple[dict, Any]], segment: str | None = None) -> Any:
        key = self.key if segment is None else f"{self.key}@{segment}"
        while True:
            raw = self.client.get(key)
            state = json.loads(raw) if raw else None
            new_state, result = fn(state)
            if self._compare_and_set(keys=[key], args=["1" if raw is None else "0", raw or b"",
                                                       json.dumps(new_state)]):
                return result


class MemoryAlertState:
    """The same interface over a dict, for pure use (tests, no Redis)."""

    def __init__(self):
        self.state: dict | None = None                     # an unsegmented monitor's
        self.segments: dict[str, dict | None] = {}         # a segmented monitor's, per segment

    def update(self, fn, segment: str | None = None):
        if segment is None:
            self.state, result = fn(self.state)
        else:
            self.segments[segment], result = fn(self.segments.get(segment))
        return result


def _features_with_data(mon: Monitor, window_features: dict) -> int:
    from modelmonitor.core.spec import DETECTORS
    baseline = (mon.baseline or {}).get("features") or {}
    count = 0
    for feature in tuple(mon.spec.features) + tuple(mon.spec.predictions):
        stats = window_features.get(feature.name)
        watched = any(feature.type in DETECTORS.get(d.name, ()) for d in mon.spec.drift)
        if watched and feature.name in baseline and isinstance(stats, dict) and stats.get("count"):
            count += 1
    return count


def _optional_time(data: dict, key: str) -> None:
    v = data.get(key)
    if v is not None:
        if not isinstance(v, int) or isinstance(v, bool):
            raise Rejected(f"data.{key} must be an integer")
        check_event_time(v, f"data.{key}")


def measure(mon: Monitor, event: Event, now_ms: int, alert_state, *, check_skew: bool = True) -> list[Event]:
    """``drift.measured`` for a closed window, plus ``drift.detected`` when the alert policy fires.

    Live (``check_skew``), a window ending more than maxClockSkew after ``now_ms`` is rejected:
    the alert policy ignores every window ending before the last one it saw, so a forged window
    from the future would silence every real alert to come."""
    check_attributes(event)
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
    if check_skew:
        check_clock_skew(mon, window["endMs"], now_ms, "data.window.endMs")
    _optional_time(data, "closedAtMs")
    count = data.get("count", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise Rejected("data.count must be a non-negative integer")
    segment = mon.data_segment(data)
    if mon.baseline is None or not mon.spec.drift:
        return []
    # Every score is computed (showAll on): the sequential alert rule needs those under threshold too.
    everything = [replace(d, show_all=True) for d in mon.spec.drift]
    ddof = 0 if mon.spec.stats.covariance_type == "population" else 1
    try:
        full = measure_drift(data, mon.baseline, everything, mon.spec.features + mon.spec.predictions)
        full_multivariate = measure_multivariate(data, mon.baseline, everything, ddof)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, ArithmeticError,
            np.linalg.LinAlgError) as exc:
        raise Rejected(f"cannot measure drift: {exc}") from None
    measured = shown_scores(full, mon.spec.drift)
    out = {
        "monitor": mon.name,
        "window": window,
        "count": data.get("count", 0),
        "closedAtMs": data.get("closedAtMs"),
        "measuredAtMs": now_ms,
        "features": measured,
    }
    if segment is not None:
        out["segment"] = segment
    if any(d.name in MULTIVARIATE_DETECTORS for d in mon.spec.drift):
        out["multivariate"] = shown_scores({"m": full_multivariate}, mon.spec.drift).get("m", {})
    drifted_multivariate = sorted(m for m, score in full_multivariate.items() if score["drifted"])
    ratios = drift_ratios(full)
    ratios.update(drift_ratios({f"multivariate.{m}": {m: score} for m, score in full_multivariate.items()}))
    wid = ev.window_id(mon.name, window["startMs"], window["endMs"], segment)
    emitted = [ev.make_event(ev.DRIFT_MEASURED, mon.name, wid + "/drift", out, source=mon.source("drift"),
                             time_ms=window["endMs"])]
    drifted = sorted(n for n, metrics in measured.items() if any(m["drifted"] for m in metrics.values()))
    # "N of M features drifted": M counts the features this window could judge (values in the
    # window, a baseline entry and a detector for their type), not e.g. predictions never logged.
    judged = _features_with_data(mon, data["features"])

    def step(state):
        return evaluate_alert(state, window_end_ms=window["endMs"], window_count=int(data.get("count", 0)),
                              drifted_features=drifted, policy=mon.spec.alerts,
                              monitored_features=max(judged, len(drifted), 1),
                              drifted_multivariate=drifted_multivariate, ratios=ratios)

    alert = alert_state.update(step) if segment is None else alert_state.update(step, segment)
    if alert is not None:
        detected = dict(out, severity=alert["severity"], reason=alert["reason"], driftedFeatures=drifted)
        if "multivariate" in out:
            detected["driftedMultivariate"] = drifted_multivariate
        emitted.append(ev.make_event(ev.DRIFT_DETECTED, mon.name, wid + "/alert", detected,
                                     source=mon.source("drift"), time_ms=window["endMs"]))
    return emitted

