"""``modelmonitor report EVENTS.jsonl --out DIR``: PNG plots and an HTML page of what was emitted.

Input: JSON lines, one structured-mode CloudEvent per line (what ``modelmonitor replay`` and the
demo write), any mix of types. The report reads ``window.closed``, ``drift.measured``,
``drift.detected``, ``outlier.detected``, ``instances.late``, ``event.rejected`` and
``inference.instances`` (counted only); other types are skipped and counted, as are lines that are
not a JSON object with a ``type``, events whose data breaks its schema
(:mod:`modelmonitor.core.schema_check`) and duplicates (same ``type``, ``source``, ``id``: delivery is
at least once).

Output in ``DIR``, per monitor ``<m>``:

- ``<m>-stats-<feature>.png``: per numerical feature, the window mean over time with the
  min-max band and the p25-p75 band (x = window start);
- ``<m>-drift-<feature>.png``: each drift metric over time, its threshold dashed, drifted
  windows marked, windows with an alert shaded;
- ``<m>-outliers.png``: outliers per closed window (or per 15 s bucket of event time when the
  file has no windows), stacked by rule;
- ``<m>-windows.png``: instances and late instances per window;
- ``<m>-latency.png``: histograms, p50/p75/p99 marked, of the window close delay after the
  window's end (``closedAtMs - window.endMs``, watermark delay included), the drift latency
  (``measuredAtMs - closedAtMs``) and the outlier latency (``detectedAtMs - eventTimeMs``);

plus ``index.html`` (summary tables, the images, the drift alerts; it needs nothing but the PNG
files next to it) and ``summary.json`` (what :func:`summarise` returns).

>>> summary = summarise([{"type": "io.modelmonitor.window.closed", "source": "/modelmonitor/default/m/aggregate",
...     "id": "m/0/15000", "data": {"monitor": "m", "count": 3, "late": 1, "watermarkMs": 15000,
...     "closedAtMs": 15020, "features": {}, "covariance": None, "correlation": None,
...     "window": {"startMs": 0, "endMs": 15000, "start": "1970-01-01T00:00:00.000Z",
...                "end": "1970-01-01T00:00:15.000Z"}}}, "not an event"])
>>> summary["totals"]["windows"], summary["totals"]["instances"], summary["totals"]["late"]
(1, 3, 1)
>>> summary["skipped"]["malformed"], summary["monitors"]["m"]["latencyMs"]["windowClose"]["p50"]
(1, 20.0)
"""
from __future__ import annotations

import argparse
import base64
import bisect
import datetime as _dt
import html
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from modelmonitor.core import events as _events
from modelmonitor.core.schema_check import EventDataError, validate_event_data

__all__ = ["summarise", "write_report", "read_event_lines", "outlier_counts", "main", "OUTLIER_BUCKET_MS",
           "LATENCY_PERCENTILES"]

OUTLIER_BUCKET_MS = 15_000
"""Bucket width for outlier counts when the events contain no closed windows (the thesis' window)."""

LATENCY_PERCENTILES = (50, 75, 99)

# What each latency histogram shows: summary key -> label.
_LATENCY_LABELS = {
    "windowClose": "window closed after window end (closedAtMs - window.endMs)",
    "drift": "drift measured after window closed (measuredAtMs - closedAtMs)",
    "outlier": "outlier detected after request time (detectedAtMs - eventTimeMs)",
}
_HANDLED_TYPES = (_events.INSTANCES, _events.OUTLIER_DETECTED, _events.WINDOW_CLOSED,
                  _events.DRIFT_MEASURED, _events.DRIFT_DETECTED, _events.LATE_INSTANCES,
                  _events.DEAD_LETTER)
_RULE_COLOURS = {"zscore": "tab:red", "range": "tab:orange", "iqr": "tab:purple",
                 "mahalanobis": "tab:brown", "unseen": "tab:olive"}
# Enough examples of invalid events to diagnose a producer bug without flooding the page.
_MAX_INVALID_EXAMPLES = 5


# ---------------------------------------------------------------------------------------------
# Reading and summarising
# ---------------------------------------------------------------------------------------------

class _Malformed:
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
    ({'type': 'x'}, '_Malformed')
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
                yield _Malformed(number, str(exc))


class _MonitorEvents:
    """What one monitor's events say, kept just as far as the summary and the plots need."""

    def __init__(self) -> None:
        self.windows: dict[tuple[int, int], dict] = {}
        self.drift: dict[tuple[int, int], dict] = {}
        self.alerts: dict[tuple[int, int], dict] = {}
        # (eventTimeMs, detectedAtMs, rules of the outliers, features of the outliers)
        self.outliers: list[tuple[int, int, list[str], list[str]]] = []
        self.requests = 0
        self.responses = 0
        self.late_events = 0
        self.late_instances = 0
        self.rejected_by_role: Counter = Counter()


class _Collector:
    """Consumes event documents one at a time (so huge files never sit in memory)."""

    def __init__(self, validate: bool = True) -> None:
        self.validate = validate
        self.monitors: dict[str, _MonitorEvents] = {}
        self.read = 0
        self.used = 0
        self.malformed = 0
        self.duplicates = 0
        self.unknown_types: Counter = Counter()
        self.invalid: Counter = Counter()
        self.invalid_examples: list[str] = []
        self._seen: set[tuple[str, str, str]] = set()

    def monitor(self, name: str) -> _MonitorEvents:
        return self.monitors.setdefault(name, _MonitorEvents())

    def add(self, doc: Any) -> None:
        self.read += 1
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            self.malformed += 1
            return
        event_type = doc["type"]
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
        self._dispatch(event_type, data)

    def _dispatch(self, event_type: str, data: dict) -> None:
        mon = self.monitor(data["monitor"])
        if event_type == _events.INSTANCES:
            if data.get("kind") == "response":
                mon.responses += 1
            else:
                mon.requests += 1
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
        elif event_type == _events.OUTLIER_DETECTED:
            mon.outliers.append((data["eventTimeMs"], data["detectedAtMs"],
                                 [o["rule"] for o in data["outliers"]],
                                 [o["feature"] for o in data["outliers"]]))
        elif event_type == _events.LATE_INSTANCES:
            mon.late_events += 1
            mon.late_instances += data["instances"]
        elif event_type == _events.DEAD_LETTER:
            mon.rejected_by_role[data["role"]] += 1

    def summary(self) -> dict:
        monitors = {name: _monitor_summary(self.monitors[name]) for name in sorted(self.monitors)}
        total_keys = ("windows", "instances", "late", "requests", "responses", "outlierEvents", "outliers",
                      "driftMeasured", "driftAlerts", "lateEvents", "lateInstances", "rejected")
        totals = {key: sum(m[key] for m in monitors.values()) for key in total_keys}
        return {
            "events": {"read": self.read, "used": self.used},
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


def _latency_samples(mon: _MonitorEvents) -> dict[str, list[float]]:
    return {
        "windowClose": [w["closedAtMs"] - w["window"]["endMs"] for w in mon.windows.values()],
        "drift": [d["measuredAtMs"] - d["closedAtMs"] for d in mon.drift.values()],
        "outlier": [detected - event_time for event_time, detected, _, _ in mon.outliers],
    }


def _drift_flags(mon: _MonitorEvents) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
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


def _monitor_summary(mon: _MonitorEvents) -> dict:
    rules: Counter = Counter()
    features: Counter = Counter()
    for _, _, event_rules, event_features in mon.outliers:
        rules.update(event_rules)
        features.update(event_features)
    flags, flags_by_metric = _drift_flags(mon)
    latency = {key: stats for key, samples in _latency_samples(mon).items()
               if (stats := _percentile_summary(samples)) is not None}
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
        "alerts": alerts,
    }


def summarise(events: Iterable[Any], *, validate: bool = True) -> dict:
    """Summary of an iterable of structured-mode event documents (dicts).

    Keys: ``events`` (read, used), ``skipped`` (malformed, unknownType, invalid, duplicates),
    ``unknownTypes`` and ``invalidTypes`` (counts per type), ``invalidExamples``, ``totals``
    and ``monitors`` (per monitor: windows, instances (sum of window counts), late, requests,
    responses, outlierEvents, outliers, outliersByRule, outliersByFeature, driftMeasured,
    driftAlerts, driftAlertsBySeverity, driftFlags (windows in which each feature drifted on
    some metric), driftFlagsByMetric, lateEvents, lateInstances, rejected, rejectedByRole,
    latencyMs (per measure: count, mean, p50, p75, p99, max), alerts). Anything that is not a
    dict with a string ``type`` counts as malformed. With ``validate`` false, data is trusted.

    >>> s = summarise([{"type": "com.example.other", "id": "1", "source": "/x"}, 42])
    >>> s["skipped"]["unknownType"], s["skipped"]["malformed"], s["unknownTypes"]
    (1, 1, {'com.example.other': 1})
    """
    collector = _Collector(validate=validate)
    for doc in events:
        if isinstance(doc, _Malformed):
            collector.read += 1
            collector.malformed += 1
        else:
            collector.add(doc)
    return collector.summary()


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib's object API with the Agg canvas: no pyplot state, no display needed)
# ---------------------------------------------------------------------------------------------

def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    figure.savefig(path, format="png")
    return path


def _times(ms_values: Iterable[int]) -> list[_dt.datetime]:
    """Naive UTC datetimes for matplotlib's date axis."""
    return [_dt.datetime(1970, 1, 1) + _dt.timedelta(milliseconds=int(ms)) for ms in ms_values]


def _date_axis(ax, label: str = "window start (UTC)") -> None:
    import matplotlib.dates as mdates
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel(label)


def _integer_axis(ax) -> None:
    """Counts: no fractional tick labels."""
    from matplotlib.ticker import MaxNLocator
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _ms_label(value: float) -> str:
    """``6,070 ms`` for large values, ``6.5 ms`` for small ones (where rounding would hide the spread)."""
    return f"{value:,.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms"


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _numerical_features(mon: _MonitorEvents) -> list[str]:
    """Numerical features in order of first appearance in the windows."""
    names: dict[str, None] = {}
    for span in sorted(mon.windows):
        for name, stats in mon.windows[span]["features"].items():
            if "categories" not in stats:
                names.setdefault(name, None)
    return list(names)


def _plot_stats(monitor: str, feature: str, mon: _MonitorEvents, path: Path) -> Path | None:
    spans = [span for span in sorted(mon.windows) if feature in mon.windows[span]["features"]]
    records = [mon.windows[span]["features"][feature] for span in spans]
    mean = np.array([_number(r["mean"]) for r in records])
    if np.all(np.isnan(mean)):
        return None
    x = _times(start for start, _ in spans)
    low = np.array([_number(r["min"]) for r in records])
    high = np.array([_number(r["max"]) for r in records])
    figure = _new_figure(10, 4)
    ax = figure.add_subplot()
    ax.fill_between(x, low, high, color="tab:blue", alpha=0.15, label="min - max")
    p25 = [r["percentiles"].get("25") for r in records]
    p75 = [r["percentiles"].get("75") for r in records]
    if any(v is not None for v in p25) and any(v is not None for v in p75):
        ax.fill_between(x, [_number(v) for v in p25], [_number(v) for v in p75], color="tab:blue",
                        alpha=0.35, label="p25 - p75")
    median = [r["percentiles"].get("50") for r in records]
    if any(v is not None for v in median):
        ax.plot(x, [_number(v) for v in median], color="tab:blue", linestyle=":", linewidth=1, label="median")
    ax.plot(x, mean, color="tab:blue", marker="o", markersize=3, linewidth=1.5, label="mean")
    ax.set_title(f"{monitor}: {feature} per window")
    ax.set_ylabel(feature)
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    _date_axis(ax)
    return _save(figure, path)


def _drift_features(mon: _MonitorEvents) -> dict[str, list[str]]:
    """Feature -> metrics seen for it, in order of first appearance."""
    found: dict[str, dict[str, None]] = {}
    for span in sorted(mon.drift):
        for feature, scores in mon.drift[span]["features"].items():
            metrics = found.setdefault(feature, {})
            for metric in scores:
                metrics.setdefault(metric, None)
    return {feature: list(metrics) for feature, metrics in found.items() if metrics}


def _plot_drift(monitor: str, feature: str, metrics: list[str], mon: _MonitorEvents, path: Path) -> Path:
    spans = sorted(mon.drift)
    figure = _new_figure(10, 1.2 + 2.0 * len(metrics))
    axes = figure.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    alert_spans = [span for span in sorted(mon.alerts) if feature in mon.alerts[span]["driftedFeatures"]]
    for ax, metric in zip(axes, metrics):
        points = [(span, mon.drift[span]["features"].get(feature, {}).get(metric)) for span in spans]
        points = [(span, score) for span, score in points if score is not None]
        x = _times(span[0] for span, _ in points)
        ax.plot(x, [score["value"] for _, score in points], color="tab:blue", marker="o", markersize=3,
                linewidth=1.2, label=metric)
        ax.plot(x, [score["threshold"] for _, score in points], color="black", linestyle="--",
                linewidth=1, label="threshold")
        drifted = [(t, score["value"]) for t, (_, score) in zip(x, points) if score["drifted"]]
        if drifted:
            ax.scatter([t for t, _ in drifted], [v for _, v in drifted], color="tab:red", marker="x",
                       s=40, zorder=3, label="drifted")
        for start, end in alert_spans:
            ax.axvspan(*_times((start, end)), color="tab:red", alpha=0.12)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    axes[0].set_title(f"{monitor}: drift of {feature}" + (" (shaded: alert windows)" if alert_spans else ""))
    _date_axis(axes[-1])
    return _save(figure, path)


def _window_bar_width_ms(spans: list[tuple[int, int]]) -> int:
    """Bar width: the window length, or the slide when sliding windows overlap."""
    width = min(end - start for start, end in spans)
    starts = sorted({start for start, _ in spans})
    gaps = [b - a for a, b in zip(starts, starts[1:]) if b > a]
    return min([width] + gaps)


def outlier_counts(outlier_times: list[int], outlier_rules: list[list[str]],
                   windows: list[tuple[int, int]],
                   bucket_ms: int = OUTLIER_BUCKET_MS) -> tuple[list[tuple[int, int]], dict[str, list[int]], int]:
    """Outliers per interval, by rule: ``(intervals, {rule: counts}, outside)``.

    With ``windows`` (``[(startMs, endMs)]``, the closed windows) each request's outliers count
    in every window that contains its event time, as the window statistics do (sliding windows
    overlap); ``outside`` counts outliers in no closed window. Without windows the intervals are
    epoch-aligned buckets of ``bucket_ms``.

    >>> outlier_counts([1000, 16000, 17000], [["zscore"], ["range", "zscore"], ["zscore"]], [])
    ([(0, 15000), (15000, 30000)], {'range': [0, 1], 'zscore': [1, 2]}, 0)
    >>> outlier_counts([1000, 40000], [["zscore"], ["zscore"]], [(0, 15000)])
    ([(0, 15000)], {'zscore': [1]}, 1)
    """
    rules = sorted({rule for event_rules in outlier_rules for rule in event_rules})
    if windows:
        intervals = sorted(set(windows))
    else:
        intervals = sorted({(t // bucket_ms * bucket_ms, t // bucket_ms * bucket_ms + bucket_ms)
                            for t in outlier_times})
    starts = [start for start, _ in intervals]
    longest = max((end - start for start, end in intervals), default=0)
    counts = {rule: [0] * len(intervals) for rule in rules}
    outside = 0
    for t, event_rules in zip(outlier_times, outlier_rules):
        hit = False
        i = bisect.bisect_right(starts, t) - 1
        # Walk back over every interval that starts late enough to still contain t.
        while i >= 0 and starts[i] > t - longest:
            if intervals[i][0] <= t < intervals[i][1]:
                hit = True
                for rule in event_rules:
                    counts[rule][i] += 1
            i -= 1
        if not hit:
            outside += len(event_rules)
    return intervals, counts, outside


def _plot_outliers(monitor: str, mon: _MonitorEvents, path: Path) -> Path:
    spans = sorted(mon.windows)
    intervals, counts, outside = outlier_counts([o[0] for o in mon.outliers], [o[2] for o in mon.outliers], spans)
    per = "closed window" if spans else f"{OUTLIER_BUCKET_MS // 1000} s of event time"
    figure = _new_figure(10, 4)
    ax = figure.add_subplot()
    width_days = _window_bar_width_ms(intervals) / 86_400_000 if intervals else 0
    x = _times(start for start, _ in intervals)
    bottom = np.zeros(len(intervals))
    for rule, values in counts.items():
        ax.bar(x, values, width=width_days, bottom=bottom, align="edge", label=rule,
               color=_RULE_COLOURS.get(rule), edgecolor="white", linewidth=0.3)
        bottom += np.asarray(values)
    title = f"{monitor}: outliers per {per}"
    if outside:
        title += f" ({outside} outside closed windows)"
    ax.set_title(title)
    ax.set_ylabel("outliers")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    _integer_axis(ax)
    _date_axis(ax, "window start (UTC)" if spans else "event time (UTC)")
    return _save(figure, path)


def _plot_windows(monitor: str, mon: _MonitorEvents, path: Path) -> Path:
    spans = sorted(mon.windows)
    x = _times(start for start, _ in spans)
    width_days = _window_bar_width_ms(spans) / 86_400_000
    figure = _new_figure(10, 5)
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.bar(x, [mon.windows[s]["count"] for s in spans], width=width_days, align="edge", color="tab:blue",
            edgecolor="white", linewidth=0.3)
    top.set_ylabel("instances")
    top.set_title(f"{monitor}: instances and late instances per window")
    top.grid(alpha=0.3, axis="y")
    bottom.bar(x, [mon.windows[s]["late"] for s in spans], width=width_days, align="edge", color="tab:red",
               edgecolor="white", linewidth=0.3)
    bottom.set_ylabel("late (dropped)")
    bottom.grid(alpha=0.3, axis="y")
    _integer_axis(top)
    _integer_axis(bottom)
    _date_axis(bottom)
    return _save(figure, path)


def _plot_latency(monitor: str, samples: dict[str, list[float]], path: Path) -> Path:
    present = [(key, values) for key, values in samples.items() if values]
    figure = _new_figure(5 * len(present), 4)
    axes = figure.subplots(1, len(present), squeeze=False)[0]
    for ax, (key, values) in zip(axes, present):
        array = np.asarray(values, dtype=float)
        bins = int(min(50, max(10, math.sqrt(array.size))))
        ax.hist(array, bins=bins, color="tab:gray", alpha=0.8)
        for q, value, colour in zip(LATENCY_PERCENTILES, np.percentile(array, LATENCY_PERCENTILES),
                                    ("tab:green", "tab:orange", "tab:red")):
            ax.axvline(value, color=colour, linestyle="--", linewidth=1.2, label=f"p{q} {_ms_label(value)}")
        ax.set_title(_LATENCY_LABELS[key].split(" (")[0] + f"\n(n = {array.size})", fontsize="medium")
        ax.set_xlabel("ms")
        ax.set_ylabel("count")
        _integer_axis(ax)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    figure.suptitle(f"{monitor}: latency")
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

class _FileNames:
    """Distinct, filesystem-safe PNG names (feature names may hold any character)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, *parts: str) -> str:
        stem = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p).strip("._") or "x" for p in parts)
        name, n = f"{stem}.png", 2
        while name.lower() in self.used:
            name, n = f"{stem}-{n}.png", n + 1
        self.used.add(name.lower())
        return name


def _render_plots(collector: _Collector, out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Write every plot; per monitor, the (file name, caption) of each image written."""
    names = _FileNames()
    images: dict[str, list[tuple[str, str]]] = {}
    for monitor in sorted(collector.monitors):
        mon = collector.monitors[monitor]
        written: list[tuple[str, str]] = []
        images[monitor] = written
        if mon.windows:
            path = _plot_windows(monitor, mon, out_dir / names(monitor, "windows"))
            written.append((path.name, "Instances and late (dropped) instances per window"))
            for feature in _numerical_features(mon):
                path = _plot_stats(monitor, feature, mon, out_dir / names(monitor, "stats", feature))
                if path is not None:
                    written.append((path.name, f"Statistics of {feature} per window: mean, "
                                               "min-max band, p25-p75 band"))
        for feature, metrics in _drift_features(mon).items():
            path = _plot_drift(monitor, feature, metrics, mon, out_dir / names(monitor, "drift", feature))
            written.append((path.name, f"Drift scores of {feature} per window (threshold dashed)"))
        if mon.outliers:
            path = _plot_outliers(monitor, mon, out_dir / names(monitor, "outliers"))
            written.append((path.name, "Outliers per window, by rule"))
        samples = _latency_samples(mon)
        if any(samples.values()):
            path = _plot_latency(monitor, samples, out_dir / names(monitor, "latency"))
            written.append((path.name, "Latency histograms with p50/p75/p99"))
    return images


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
.critical { color: #b00; font-weight: bold; }
.warning { color: #a60; font-weight: bold; }
"""


def _cell(value: Any, key: str | None = None) -> str:
    """A table cell; numbers right-aligned, ``data-key`` naming the summary field it shows."""
    attrs = f' data-key="{html.escape(key)}"' if key else ""
    if isinstance(value, bool) or value is None:
        return f"<td{attrs}>{html.escape(str(value if value is not None else '-'))}</td>"
    if isinstance(value, int):
        return f'<td class="num"{attrs}>{value}</td>'
    if isinstance(value, float):
        return f'<td class="num"{attrs}>{value:,.1f}</td>'
    return f"<td{attrs}>{html.escape(str(value))}</td>"


def _html(summary: dict, images: dict[str, list[tuple[str, str]]], title: str, source: str) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{esc(title)}</title>",
             f"<style>{_CSS}</style>\n</head>\n<body>", f"<h1>{esc(title)}</h1>",
             f"<p>Events from <code>{esc(source)}</code>: {summary['events']['read']} read, "
             f"{summary['events']['used']} used.</p>"]

    columns = [("windows", "Windows"), ("instances", "Instances (sum of window counts)"),
               ("late", "Late (dropped)"), ("outliers", "Outliers"), ("outlierEvents", "Requests with outliers"),
               ("driftMeasured", "Windows measured for drift"), ("driftAlerts", "Drift alerts"),
               ("lateEvents", "Late events"), ("rejected", "Rejected events")]
    parts.append("<h2>Summary</h2>\n<table class=\"summary\">\n<tr><th>Monitor</th>"
                 + "".join(f"<th>{esc(label)}</th>" for _, label in columns) + "</tr>")
    for monitor, m in summary["monitors"].items():
        parts.append(f"<tr><th>{esc(monitor)}</th>"
                     + "".join(_cell(m[key], f"{monitor}.{key}") for key, _ in columns) + "</tr>")
    if len(summary["monitors"]) != 1:
        parts.append("<tr><th>total</th>" + "".join(_cell(summary["totals"][key], f"total.{key}")
                                                     for key, _ in columns) + "</tr>")
    parts.append("</table>")

    flag_rows = [(monitor, feature, count, m["driftFlagsByMetric"].get(feature, {}))
                 for monitor, m in summary["monitors"].items() for feature, count in m["driftFlags"].items()]
    if flag_rows:
        parts.append("<h3>Drift flags per feature</h3>\n<p>Windows in which the feature drifted on at least "
                     "one metric, and per metric.</p>\n<table class=\"drift-flags\">\n<tr><th>Monitor</th>"
                     "<th>Feature</th><th>Windows drifted</th><th>By metric</th></tr>")
        for monitor, feature, count, by_metric in flag_rows:
            detail = ", ".join(f"{metric} {n}" for metric, n in by_metric.items()) or "-"
            parts.append(f"<tr><td>{esc(monitor)}</td><td>{esc(feature)}</td>"
                         f"{_cell(count, f'{monitor}.driftFlags.{feature}')}<td>{esc(detail)}</td></tr>")
        parts.append("</table>")

    latency_rows = [(monitor, key, stats) for monitor, m in summary["monitors"].items()
                    for key, stats in m["latencyMs"].items()]
    if latency_rows:
        parts.append("<h3>Latency (ms)</h3>\n<table class=\"latency\">\n<tr><th>Monitor</th><th>Measure</th>"
                     "<th>n</th><th>p50</th><th>p75</th><th>p99</th><th>max</th></tr>")
        for monitor, key, stats in latency_rows:
            parts.append(f"<tr><td>{esc(monitor)}</td><td>{esc(_LATENCY_LABELS[key])}</td>"
                         + "".join(_cell(stats[s], f"{monitor}.latencyMs.{key}.{s}")
                                   for s in ("count", "p50", "p75", "p99", "max")) + "</tr>")
        parts.append("</table>")

    skipped = summary["skipped"]
    parts.append("<h3>Skipped input</h3>\n<table class=\"skipped\">"
                 f"<tr><th>Malformed lines</th>{_cell(skipped['malformed'], 'skipped.malformed')}</tr>"
                 f"<tr><th>Other event types</th>{_cell(skipped['unknownType'], 'skipped.unknownType')}</tr>"
                 f"<tr><th>Invalid data</th>{_cell(skipped['invalid'], 'skipped.invalid')}</tr>"
                 f"<tr><th>Duplicates</th>{_cell(skipped['duplicates'], 'skipped.duplicates')}</tr></table>")
    if summary["unknownTypes"]:
        parts.append("<p>Other types: " + ", ".join(f"<code>{esc(t)}</code> {n}"
                                                    for t, n in summary["unknownTypes"].items()) + "</p>")
    if summary["invalidExamples"]:
        parts.append("<p>Invalid events (first ones):</p>\n<ul>"
                     + "".join(f"<li><code>{esc(e)}</code></li>" for e in summary["invalidExamples"]) + "</ul>")

    for monitor, m in summary["monitors"].items():
        parts.append(f"<h2>Monitor {esc(monitor)}</h2>")
        if m["firstWindowStart"]:
            parts.append(f"<p>Windows from {esc(m['firstWindowStart'])} to {esc(m['lastWindowEnd'])}.</p>")
        parts.append(f"<h3>Drift alerts ({m['driftAlerts']})</h3>")
        if m["alerts"]:
            parts.append("<table class=\"alerts\">\n<tr><th>Window start</th><th>Window end</th><th>Severity</th>"
                         "<th>Drifted features</th><th>Reason</th></tr>")
            for alert in m["alerts"]:
                severity = esc(alert["severity"])
                parts.append(f"<tr><td>{esc(alert['window']['start'])}</td><td>{esc(alert['window']['end'])}</td>"
                             f"<td class=\"{severity}\">{severity}</td>"
                             f"<td>{esc(', '.join(alert['driftedFeatures']))}</td><td>{esc(alert['reason'])}</td></tr>")
            parts.append("</table>")
        else:
            parts.append("<p>No drift alerts.</p>")
        for file_name, caption in images.get(monitor, []):
            parts.append(f"<figure><img src=\"{esc(file_name)}\" alt=\"{esc(caption)}\">"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    if not summary["monitors"]:
        parts.append("<p>No ModelMonitor events found: nothing to plot.</p>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def write_report(events_path: str | Path, out_dir: str | Path, title: str | None = None, *,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Read ``events_path`` (JSON lines) and write the plots, ``index.html`` and ``summary.json``
    into ``out_dir`` (created if needed).

    Returns ``{"html": Path, "summaryJson": Path, "images": [Path, ...], "summary": dict}``.

    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "events.jsonl").write_text('{"type": "io.example.other", "id": "1", "source": "/x"}\\n')
    >>> written = write_report(tmp / "events.jsonl", tmp / "out")
    >>> written["html"].name, written["images"], written["summary"]["skipped"]["unknownType"]
    ('index.html', [], 1)
    """
    events_path, out_dir = Path(events_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    collector = _Collector()
    for doc in read_event_lines(events_path, progress):
        if isinstance(doc, _Malformed):
            collector.read += 1
            collector.malformed += 1
        else:
            collector.add(doc)
    summary = collector.summary()
    images = _render_plots(collector, out_dir)
    page = out_dir / "index.html"
    page.write_text(_html(summary, images, title or f"ModelMonitor report: {events_path.name}", str(events_path)),
                    encoding="utf-8")
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {"html": page, "summaryJson": summary_path,
            "images": [out_dir / name for monitor in images for name, _ in images[monitor]],
            "summary": summary}


def main(argv: list[str] | None = None) -> int:
    """``modelmonitor report EVENTS.jsonl --out DIR [--title TEXT]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="modelmonitor report",
                                     description="PNG plots and an HTML page from emitted events (JSON lines).")
    parser.add_argument("events", help="JSON lines file, one structured-mode CloudEvent per line")
    parser.add_argument("--out", default="report", help="output directory (default: ./report)")
    parser.add_argument("--title", default=None, help="page title")
    args = parser.parse_args(argv)
    if not Path(args.events).is_file():
        print(f"modelmonitor report: {args.events}: no such file", file=sys.stderr)
        return 2

    def progress(lines: int) -> None:
        print(f"read {lines:,} lines", file=sys.stderr, flush=True)

    written = write_report(args.events, args.out, args.title, progress=progress)
    summary = written["summary"]
    totals, skipped = summary["totals"], summary["skipped"]
    print(f"{totals['windows']} windows, {totals['instances']} instances, {totals['outliers']} outliers, "
          f"{totals['driftAlerts']} drift alerts; skipped {skipped['malformed']} malformed lines, "
          f"{skipped['unknownType']} other types, {skipped['invalid']} invalid, {skipped['duplicates']} duplicates")
    print(f"wrote {written['html']} and {len(written['images'])} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
