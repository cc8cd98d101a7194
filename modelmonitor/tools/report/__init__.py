"""``modelmonitor report EVENTS.jsonl --output DIR``: PNG plots and an HTML page of what was emitted.

Input: JSON lines, one structured-mode CloudEvent per line (what ``modelmonitor replay`` and
``modelmonitor run --events-out`` write), any mix of types. The report reads ``window.closed``,
``drift.measured``, ``drift.detected``, ``outlier.detected``, ``instances.late``,
``event.rejected``, ``inference.instances`` and the KServe logger events (counted as input);
other types are skipped and counted, as are lines that are not a JSON object with a ``type``,
events whose data breaks its schema (:mod:`modelmonitor.core.schema_check`) and duplicates (same
``type``, ``source``, ``id``: delivery is at least once).

Output in ``DIR``, per monitor ``<m>``: ``<m>-windows.png`` (instances and late instances per
window), ``<m>-stats-<feature>.png`` (window mean, median, min-max and p25-p75 bands, with the
training mean and p25-p75 band when the baseline is known, stage and alert markers),
``<m>-drift-<feature>.png`` (each metric against its threshold, alert windows shaded),
``<m>-outliers.png`` (rule hits per window by rule) and ``<m>-latency.png`` (wall-clock
latencies only, see :mod:`.summary`); plus ``index.html`` and ``summary.json`` (what
:func:`summarise` returns). Modules: :mod:`.summary` (reading, clocks), :mod:`.plots`, :mod:`.page`.

>>> summary = summarise([{"type": "io.modelmonitor.window.closed", "source": "/modelmonitor/default/m/aggregate",
...     "id": "m/0/15000", "data": {"monitor": "m", "count": 3, "late": 1, "watermarkMs": 15000,
...     "closedAtMs": 15020, "features": {}, "covariance": None, "correlation": None,
...     "window": {"startMs": 0, "endMs": 15000, "start": "1970-01-01T00:00:00.000Z",
...                "end": "1970-01-01T00:00:15.000Z"}}}, "not an event"])
>>> summary["totals"]["windows"], summary["totals"]["instances"], summary["totals"]["late"]
(1, 3, 1)
>>> summary["skipped"]["malformed"], summary["monitors"]["m"]["latencyMs"]      # no wall clock measured
(1, {})
"""
from __future__ import annotations

import html
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from modelmonitor.tools.report.page import render_page
from modelmonitor.tools.report.plots import OUTLIER_BUCKET_MS, PlotContext, outlier_counts, render_plots
from modelmonitor.tools.report.summary import (LATENCY_MEASURES, LATENCY_PERCENTILES, Collector, latency_samples,
                                               read_event_lines, summarise)

__all__ = ["summarise", "write_report", "read_event_lines", "outlier_counts", "main", "run_report_command",
           "OUTLIER_BUCKET_MS", "LATENCY_PERCENTILES", "LATENCY_MEASURES"]


def write_report(events_path: str | Path, out_dir: str | Path, title: str | None = None, *,
                 progress: Callable[[str], None] | None = None, baseline: dict | None = None,
                 watermark_delays: dict[str, int] | None = None,
                 stages: list[tuple[str, int]] | None = None) -> dict:
    """Read ``events_path`` (JSON lines) and write the plots, ``index.html`` and ``summary.json``
    into ``out_dir`` (created if needed). ``baseline`` (a baseline document) draws the training
    statistics on the statistics plots, ``watermark_delays`` (monitor -> ms) enables the window
    close latency, ``stages`` (``[(name, startMs)]``, event time) marks stages; ``progress``
    hears what is being done.

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
    _remove_previous_images(out_dir)
    collector = Collector()
    read_progress = None if progress is None else (lambda lines: progress(f"read {lines:,} lines"))
    for doc in read_event_lines(events_path, read_progress):
        collector.add(doc)
    summary = collector.summary(watermark_delays)
    latency = {name: latency_samples(mon, collector.arrivals, (watermark_delays or {}).get(name))
               for name, mon in collector.monitors.items()}
    images = render_plots(collector, out_dir, latency, PlotContext(baseline, stages), progress)
    page = out_dir / "index.html"
    page.write_text(render_page(summary, images, title or f"ModelMonitor report: {events_path.name}",
                                str(events_path)), encoding="utf-8")
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {"html": page, "summaryJson": summary_path,
            "images": [out_dir / name for monitor in images for name, _ in images[monitor]],
            "summary": summary}


def _remove_previous_images(out_dir: Path) -> None:
    """A report written again into the same folder must not leave the last one's plots behind:
    remove the PNG files its index.html showed (only those: the folder may hold other files)."""
    import re
    page = out_dir / "index.html"
    if not page.is_file():
        return
    for name in re.findall(r'<img src="([^"/\\]+\.png)"', page.read_text(encoding="utf-8", errors="replace")):
        (out_dir / html.unescape(name)).unlink(missing_ok=True)


def monitor_context(monitor_path: str | None, baseline_path: str | None) -> tuple[dict | None, dict[str, int] | None]:
    """The baseline document and ``{monitor: watermark delay}`` from a monitor file and/or a
    baseline file (raises ``SpecError``, ``OSError`` or ``ValueError``)."""
    from modelmonitor.core.baseline import load_baseline
    baseline, delays = None, None
    if monitor_path:
        from modelmonitor.core.spec import load_monitor
        spec = load_monitor(monitor_path)
        delays = {spec.name: spec.window.watermark_delay_ms}
        baseline_path = baseline_path or (spec.baseline_ref or {}).get("file")
    if baseline_path:
        baseline = load_baseline(baseline_path)
    return baseline, delays


def run_report_command(events: str, out: str, *, title: str | None = None, quiet: bool = False,
                       monitor: str | None = None, baseline: str | None = None) -> int:
    """What ``modelmonitor report`` does once its arguments are checked; progress on stderr."""
    started = time.monotonic()
    last = [started]

    def progress(message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:          # a line a second at most: long reports, quiet short ones
            last[0] = now
            print(f"  {message} ({now - started:.0f} s)", file=sys.stderr, flush=True)

    saved_baseline, delays = monitor_context(monitor, baseline)
    written = write_report(events, out, title, progress=None if quiet else progress, baseline=saved_baseline,
                           watermark_delays=delays)
    summary = written["summary"]
    totals, skipped = summary["totals"], summary["skipped"]
    print(f"{totals['windows']} windows, {totals['instances']} instances, {totals['outlierEvents']} requests with "
          f"outliers ({totals['outliers']} rule hits), {totals['driftAlerts']} drift alerts; skipped "
          f"{skipped['malformed']} malformed lines, {skipped['unknownType']} other types, {skipped['invalid']} "
          f"invalid, {skipped['duplicates']} duplicates")
    print(f"wrote {written['html']} and {len(written['images'])} images")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``modelmonitor report EVENTS.jsonl [--output DIR] [--title TEXT]`` run as a module; returns
    the exit status (the ``modelmonitor`` command uses the same options)."""
    from modelmonitor.tools.cli import main as cli_main
    return cli_main(["report", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
