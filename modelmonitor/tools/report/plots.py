"""The report's PNG plots (matplotlib's object API with the Agg canvas: no pyplot state, no
display needed). Every time axis says which clock it is: window starts and request times are
event time; latencies are wall clock (see :mod:`.summary`)."""
from __future__ import annotations

import bisect
import datetime as _dt
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from modelmonitor.tools.report.summary import LATENCY_MEASURES, LATENCY_PERCENTILES, Collector, MonitorEvents

__all__ = ["render_plots", "outlier_counts", "OUTLIER_BUCKET_MS"]

OUTLIER_BUCKET_MS = 15_000
"""Bucket width for outlier counts when the events contain no closed windows (the thesis' window)."""

_RULE_COLOURS = {"zscore": "tab:red", "range": "tab:orange", "iqr": "tab:purple",
                 "mahalanobis": "tab:brown", "unseen": "tab:olive"}
_EVENT_TIME = "window start (UTC, event time)"


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


def _date_axis(ax, label: str = _EVENT_TIME) -> None:
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


def _numerical_features(mon: MonitorEvents) -> list[str]:
    """Numerical features in order of first appearance in the windows."""
    names: dict[str, None] = {}
    for span in sorted(mon.windows):
        for name, stats in mon.windows[span]["features"].items():
            if "categories" not in stats:
                names.setdefault(name, None)
    return list(names)


def _markers(ax, context: "PlotContext", alert_spans: list[tuple[int, int]]) -> None:
    """Stage boundaries (dotted, labelled) and alert windows (shaded red) on an event-time axis."""
    for name, start_ms in context.stages:
        ax.axvline(_times([start_ms])[0], color="dimgray", linestyle=":", linewidth=1)
        ax.annotate(name, (_times([start_ms])[0], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -2), textcoords="offset points", fontsize="x-small", color="dimgray",
                    va="top", ha="left")
    for start, end in alert_spans:
        ax.axvspan(*_times((start, end)), color="tab:red", alpha=0.12, linewidth=0)


def _plot_stats(monitor: str, feature: str, mon: MonitorEvents, path: Path,
                context: "PlotContext") -> Path | None:
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
    base = context.baseline_feature(feature)
    if base is not None:
        # The training data the windows are compared with: its mean and interquartile band.
        pct = base.get("percentiles") or {}
        if pct.get("25") is not None and pct.get("75") is not None:
            ax.axhspan(float(pct["25"]), float(pct["75"]), color="tab:green", alpha=0.12,
                       label="training p25 - p75")
        ax.axhline(float(base["mean"]), color="tab:green", linestyle="--", linewidth=1.2, label="training mean")
    ax.fill_between(x, low, high, color="tab:blue", alpha=0.15, label="window min - max")
    p25 = [r["percentiles"].get("25") for r in records]
    p75 = [r["percentiles"].get("75") for r in records]
    if any(v is not None for v in p25) and any(v is not None for v in p75):
        ax.fill_between(x, [_number(v) for v in p25], [_number(v) for v in p75], color="tab:blue",
                        alpha=0.35, label="window p25 - p75")
    median = [r["percentiles"].get("50") for r in records]
    if any(v is not None for v in median):
        ax.plot(x, [_number(v) for v in median], color="tab:blue", linestyle=":", linewidth=1, label="window median")
    ax.plot(x, mean, color="tab:blue", marker="o", markersize=3, linewidth=1.5, label="window mean")
    alert_spans = [span for span in sorted(mon.alerts) if feature in mon.alerts[span]["driftedFeatures"]]
    _markers(ax, context, alert_spans)
    title = f"{monitor}: {feature} per window"
    if alert_spans:
        title += " (shaded: windows with a drift alert on it)"
    ax.set_title(title)
    ax.set_ylabel(feature)
    ax.legend(loc="upper left", fontsize="x-small", ncol=2)
    ax.grid(alpha=0.3)
    _date_axis(ax)
    return _save(figure, path)


def _drift_features(mon: MonitorEvents) -> dict[str, list[str]]:
    """Feature -> metrics seen for it, in order of first appearance."""
    found: dict[str, dict[str, None]] = {}
    for span in sorted(mon.drift):
        for feature, scores in mon.drift[span]["features"].items():
            metrics = found.setdefault(feature, {})
            for metric in scores:
                metrics.setdefault(metric, None)
    return {feature: list(metrics) for feature, metrics in found.items() if metrics}


def _plot_drift(monitor: str, feature: str, metrics: list[str], mon: MonitorEvents, path: Path,
                context: "PlotContext") -> Path:
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
        _markers(ax, context, alert_spans)
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


def _plot_outliers(monitor: str, mon: MonitorEvents, path: Path, context: "PlotContext") -> Path:
    spans = sorted(mon.windows)
    intervals, counts, outside = outlier_counts([o[0] for o in mon.outliers], [o[3] for o in mon.outliers], spans)
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
    title = f"{monitor}: outlier rule hits per {per}"
    if outside:
        title += f" ({outside} outside closed windows)"
    _markers(ax, context, [])
    ax.set_title(title)
    ax.set_ylabel("rule hits")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    _integer_axis(ax)
    _date_axis(ax, _EVENT_TIME if spans else "request time (UTC, event time)")
    return _save(figure, path)


def _plot_windows(monitor: str, mon: MonitorEvents, path: Path, context: "PlotContext") -> Path:
    spans = sorted(mon.windows)
    x = _times(start for start, _ in spans)
    width_days = _window_bar_width_ms(spans) / 86_400_000
    late = [mon.windows[s]["late"] for s in spans]
    figure = _new_figure(10, 5 if any(late) else 3.5)
    # An all-zero late panel says nothing (and matplotlib would scale it to +-0.05): say it in words.
    if any(late):
        top, bottom = figure.subplots(2, 1, sharex=True)
    else:
        top = bottom = figure.add_subplot()
    top.bar(x, [mon.windows[s]["count"] for s in spans], width=width_days, align="edge", color="tab:blue",
            edgecolor="white", linewidth=0.3)
    top.set_ylabel("instances")
    top.set_title(f"{monitor}: instances per window" + (" and late (dropped) instances" if any(late)
                                                        else " (no late instances)"))
    top.grid(alpha=0.3, axis="y")
    _markers(top, context, [])
    _integer_axis(top)
    if any(late):
        bottom.bar(x, late, width=width_days, align="edge", color="tab:red", edgecolor="white", linewidth=0.3)
        bottom.set_ylabel("late (dropped)")
        bottom.grid(alpha=0.3, axis="y")
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
        ax.set_title(f"{LATENCY_MEASURES[key][0]}\n(n = {array.size})", fontsize="medium")
        ax.set_xlabel("ms, wall clock")
        ax.set_ylabel("count")
        _integer_axis(ax)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    figure.suptitle(f"{monitor}: latency on the wall clock (broker arrival and function clocks)")
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


class PlotContext:
    """What the plots draw besides the events: the training baseline (``{"features": ...}``),
    stage boundaries (``[(name, startMs)]``, event time) and the wall-clock latency samples."""

    def __init__(self, baseline: dict | None = None, stages: list[tuple[str, int]] | None = None):
        self.baseline = baseline
        self.stages = list(stages or [])

    def baseline_feature(self, feature: str) -> dict | None:
        entry = ((self.baseline or {}).get("features") or {}).get(feature)
        return entry if entry and entry.get("type", "numerical") == "numerical" and "mean" in entry else None


def render_plots(collector: Collector, out_dir: Path, latency: dict[str, dict[str, list[float]]],
                 context: PlotContext | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, list[tuple[str, str]]]:
    """Write every plot; per monitor, the (file name, caption) of each image written.
    ``latency`` holds each monitor's wall-clock samples; ``progress(message)`` hears each plot."""
    context = context or PlotContext()
    names = _FileNames()
    images: dict[str, list[tuple[str, str]]] = {}
    baseline_note = ", training mean and p25-p75 band" if context.baseline else ""
    for monitor in sorted(collector.monitors):
        mon = collector.monitors[monitor]
        written: list[tuple[str, str]] = []
        images[monitor] = written
        jobs: list[tuple[Callable[[], Path | None], str]] = []
        if mon.windows:
            jobs.append((lambda m=monitor, mon=mon: _plot_windows(m, mon, out_dir / names(m, "windows"), context),
                         "Instances and late (dropped) instances per window (x: window start, event time)"))
            for feature in _numerical_features(mon):
                jobs.append((lambda m=monitor, mon=mon, f=feature: _plot_stats(
                    m, f, mon, out_dir / names(m, "stats", f), context),
                    f"Statistics of {feature} per window: mean, median, min-max and p25-p75 bands"
                    f"{baseline_note}; shaded: drift alerts on {feature} (x: event time)"))
        for feature, metrics in _drift_features(mon).items():
            jobs.append((lambda m=monitor, mon=mon, f=feature, ms=metrics: _plot_drift(
                m, f, ms, mon, out_dir / names(m, "drift", f), context),
                f"Drift scores of {feature} per window, threshold dashed, drifted windows x, alert windows shaded "
                "(x: event time)"))
        if mon.outliers:
            jobs.append((lambda m=monitor, mon=mon: _plot_outliers(m, mon, out_dir / names(m, "outliers"), context),
                         "Outlier rule hits per window, by rule (one value can break several rules)"))
        samples = latency.get(monitor, {})
        if any(samples.values()):
            jobs.append((lambda m=monitor, sm=samples: _plot_latency(m, sm, out_dir / names(m, "latency")),
                         "Wall-clock latency histograms with p50/p75/p99"))
        for number, (job, caption) in enumerate(jobs, 1):
            if progress is not None:
                progress(f"{monitor}: plot {number} of {len(jobs)}")
            path = job()
            if path is not None:
                written.append((path.name, caption))
    return images
