"""A validated monitor with its baseline, and what every handler shares: rejections, event
times, data checks, dead letters.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from modelmonitor.core.events import Event

from modelmonitor.core import events as ev
from modelmonitor.core.baseline import load_baseline
from modelmonitor.core.segments import check_segment_name, segment_of
from modelmonitor.detect.drift import measure_drift
from modelmonitor.detect.outliers import OutlierDetector
from modelmonitor.core.payload_rows import cap_reason
from modelmonitor.core.payloads import split_columns
from modelmonitor.core.spec import CATEGORICAL, NUMERICAL, Feature, MonitorSpec, load_monitor
from modelmonitor.stats.aggregate import WindowAggregate

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


def check_clock_skew(mon: "Monitor", t: int, now_ms: int | None, what: str) -> int:
    """``t`` unless it lies more than ``spec.window.maxClockSkew`` ahead of ``now_ms`` (the
    function's own clock; None in a replay, whose clock is event time): an event time that far
    ahead would advance state (a watermark, the alert policy) past every real event to come."""
    if now_ms is not None and t - now_ms > mon.spec.window.max_clock_skew_ms:
        raise Rejected(f"{what} {ev.ms_to_rfc3339(t)} is {t - now_ms} ms ahead of this function's clock "
                       f"(maxClockSkew {mon.spec.window.max_clock_skew_ms} ms)")
    return t


def check_attributes(event: Event) -> None:
    """:class:`Rejected` unless the event's attributes are what any CloudEvent consumer can
    handle (see :func:`~modelmonitor.core.events.attributes_problem`)."""
    problem = ev.attributes_problem(event.get_attributes())
    if problem:
        raise Rejected(problem)


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
    def from_config(cls, cfg) -> "Monitor":
        """The monitor named by a function's configuration (a mapping such as its environment):
        MODELMONITOR_CONFIG (default /etc/modelmonitor/monitor.yaml), MODELMONITOR_BASELINE."""
        config = cfg.get("MODELMONITOR_CONFIG") or "/etc/modelmonitor/monitor.yaml"
        baseline = cfg.get("MODELMONITOR_BASELINE") or None
        if baseline and not os.path.exists(baseline):
            baseline = None
        return cls.from_files(config, baseline)

    @classmethod
    def from_env(cls) -> "Monitor":
        return cls.from_config(os.environ)

    @property
    def segmented(self) -> bool:
        return self.spec.segment is not None

    def logger_segment(self, attrs) -> str | None:
        """The segment of a logger event (None for a monitor without ``spec.segment``)."""
        if self.spec.segment is None:
            return None
        try:
            return segment_of(self.spec.segment, attrs)
        except ValueError as exc:
            raise Rejected(str(exc)) from None

    def data_segment(self, data: dict) -> str | None:
        """The segment of a derived event's data (``data.segment``; absent or null is the
        default segment); None for a monitor without ``spec.segment``, which ignores it."""
        if self.spec.segment is None:
            return None
        value = data.get("segment")
        if value is None:
            return self.spec.segment.default
        try:
            return check_segment_name(value, "data.segment")
        except ValueError as exc:
            raise Rejected(str(exc)) from None

    def layout(self, kind: str) -> Layout:
        return self.predictions if kind == "response" else self.inputs

    def source(self, role: str) -> str:
        return ev.source_for(self.name, role, self.spec.namespace)



def event_data(event: Event, expected_type: str) -> dict:
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


def check_instances(mon: Monitor, event: Event, now_ms: int | None = None) -> tuple[dict, Layout]:
    """The data of an ``inference.instances`` event, checked against this monitor's layout
    (and, given the function's clock ``now_ms``, against ``maxClockSkew``)."""
    check_attributes(event)
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
    check_clock_skew(mon, t, now_ms, "data.eventTimeMs")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(layout.names):
            raise Rejected(f"data.instances[{i}] must be a list of {len(layout.names)} values")
    mon.data_segment(data)
    return data, layout


def _split(rows: list, layout: Layout) -> tuple[np.ndarray, list[list]]:
    try:
        return split_columns(rows, layout.features)
    except (ValueError, TypeError) as exc:
        raise Rejected(f"data.instances: {exc}") from None


def window_info(start_ms: int, end_ms: int) -> dict:
    return {"startMs": start_ms, "endMs": end_ms, "start": ev.ms_to_rfc3339(start_ms), "end": ev.ms_to_rfc3339(end_ms)}


# ----------------------------------------------------------------------------- dead letters
def dead_letter(mon_name: str, role: str, reason: str, original: Event | None = None,
                raw: bytes | None = None, namespace: str = "default",
                attributes: Mapping[str, Any] | None = None) -> Event:
    """``event.rejected``: what was refused, by whom, and why (with the original, truncated).
    Without an ``original`` Event, ``raw`` is the body and ``attributes`` what is known of its
    attributes (e.g. a refused request's ce-* headers). Every string in it is valid UTF-8 (a
    lone surrogate becomes U+FFFD), so it can always be sent."""
    reason = ev.text_safe(reason)
    known = original if original is not None else (attributes or {})
    # Attributes as strings (a structured-mode event may carry a number where a string belongs).
    otype, osrc, oid = (None if known.get(k) is None else ev.text_safe(str(known.get(k))[:1024])
                        for k in ("type", "source", "id"))
    if original is not None:
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
        body = (raw or b"").decode("utf-8", "replace")
    body = ev.text_safe(str(body))
    # The limit is in bytes of UTF-8 (a U+FFFD for each byte that was not UTF-8 takes three):
    # cut there, dropping a character cut in two.
    head = body[:MAX_DEAD_LETTER_DATA].encode("utf-8")
    truncated = len(body) > MAX_DEAD_LETTER_DATA or len(head) > MAX_DEAD_LETTER_DATA
    data = {"monitor": mon_name, "reason": reason, "role": role, "originalType": otype,
            "originalSource": osrc, "originalId": oid,
            "originalData": head[:MAX_DEAD_LETTER_DATA].decode("utf-8", "ignore"), "truncated": truncated}
    rid = f"{mon_name}/rejected/{role}/{ev.short_hash(str(otype), str(osrc), str(oid), reason)}"
    return ev.make_event(ev.DEAD_LETTER, mon_name, rid, data, source=ev.source_for(mon_name, role, namespace))
