"""The report's ``index.html``: summary tables, the images, the drift alerts. It needs nothing but
the PNG files next to it."""
from __future__ import annotations

import html
from typing import Any

from modelmonitor.tools.report.summary import LATENCY_MEASURES

__all__ = ["render_page", "group_alerts", "ALERT_GROUPS_SHOWN"]

ALERT_GROUPS_SHOWN = 20
"""Alert groups listed in full; the rest fold into a <details> element."""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
.note { color: #555; font-size: 0.9em; }
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


def group_alerts(alerts: list[dict]) -> list[dict]:
    """Consecutive alerts with the same severity and drifted features, as one group:
    ``{"first", "last", "count", "severity", "driftedFeatures", "reason"}`` (reason of the first).

    >>> a = lambda s, f: {"window": {"start": s, "end": s + "+"}, "severity": "warning", "reason": "r",
    ...                   "driftedFeatures": f}
    >>> [(g["count"], g["first"], g["last"]) for g in group_alerts([a("1", ["x"]), a("2", ["x"]), a("3", ["y"])])]
    [(2, '1', '2+'), (1, '3', '3+')]
    """
    groups: list[dict] = []
    for alert in alerts:
        key = (alert["severity"], tuple(alert["driftedFeatures"]))
        if groups and groups[-1]["key"] == key:
            groups[-1]["count"] += 1
            groups[-1]["last"] = alert["window"]["end"]
        else:
            groups.append({"key": key, "first": alert["window"]["start"], "last": alert["window"]["end"],
                           "count": 1, "severity": alert["severity"],
                           "driftedFeatures": list(alert["driftedFeatures"]), "reason": alert["reason"]})
    return [{k: v for k, v in g.items() if k != "key"} for g in groups]


def _alerts_section(monitor: str, m: dict) -> list[str]:
    esc = html.escape
    parts = [f"<h3>Drift alerts ({m['driftAlerts']})</h3>"]
    if not m["alerts"]:
        return parts + ["<p>No drift alerts.</p>"]
    groups = group_alerts(m["alerts"])
    parts.append(f"<p class=\"note\">{m['driftAlerts']} alerts in {len(groups)} runs: consecutive alerts with the "
                 "same severity and drifted features are one row (window times are event time, UTC).</p>")
    header = ("<table class=\"alerts\">\n<tr><th>From (window start)</th><th>To (window end)</th><th>Alerts</th>"
              "<th>Severity</th><th>Drifted features</th><th>Reason (first alert)</th></tr>")

    def rows(chunk: list[dict]) -> list[str]:
        out = []
        for group in chunk:
            severity = esc(group["severity"])
            out.append(f"<tr><td>{esc(group['first'])}</td><td>{esc(group['last'])}</td>{_cell(group['count'])}"
                       f"<td class=\"{severity}\">{severity}</td>"
                       f"<td>{esc(', '.join(group['driftedFeatures']))}</td><td>{esc(group['reason'])}</td></tr>")
        return out

    parts += [header, *rows(groups[:ALERT_GROUPS_SHOWN]), "</table>"]
    if len(groups) > ALERT_GROUPS_SHOWN:
        rest = groups[ALERT_GROUPS_SHOWN:]
        parts += [f"<details><summary>{len(rest)} more runs of alerts</summary>",
                  header.replace('class="alerts"', 'class="alerts-more"'), *rows(rest), "</table></details>"]
    return parts


def render_page(summary: dict, images: dict[str, list[tuple[str, str]]], title: str, source: str) -> str:
    esc = html.escape
    events = summary["events"]
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{esc(title)}</title>",
             f"<style>{_CSS}</style>\n</head>\n<body>", f"<h1>{esc(title)}</h1>",
             f"<p>Events from <code>{esc(source)}</code>: {events['read']} read, {events['used']} used"
             f" ({events['recordedLive']} with the broker's wall-clock arrival time).</p>"]

    inputs = summary["input"]
    parts.append("<h2>Input</h2>\n<table class=\"input\">"
                 f"<tr><th>KServe logger requests</th>{_cell(inputs['loggerRequests'], 'input.loggerRequests')}</tr>"
                 f"<tr><th>KServe logger responses</th>{_cell(inputs['loggerResponses'], 'input.loggerResponses')}"
                 "</tr></table>\n<p class=\"note\">Logger events appear in files recorded by "
                 "<code>modelmonitor run --events-out</code>; a replay's output holds only what the pipeline "
                 "emitted (its input is the replayed file).</p>")

    columns = [("windows", "Windows"), ("instances", "Instances (sum of window counts)"),
               ("late", "Late (dropped)"), ("outlierEvents", "Requests with outliers"),
               ("outlierInstances", "Outlier instances"), ("outliers", "Outlier rule hits"),
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
    parts.append("</table>\n<p class=\"note\">One <code>outlier.detected</code> event per request that has any; "
                 "it lists every rule an instance's value broke, so one request can hold several outlier "
                 "instances and one instance several rule hits (a value beyond the training range is usually "
                 "also more than 3 standard deviations out).</p>")

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

    parts.append("<h3>Latency (ms, wall clock)</h3>")
    latency_rows = [(monitor, key, stats) for monitor, m in summary["monitors"].items()
                    for key, stats in m["latencyMs"].items()]
    if latency_rows:
        parts.append("<table class=\"latency\">\n<tr><th>Monitor</th><th>Measure</th><th>Clock</th>"
                     "<th>n</th><th>p50</th><th>p75</th><th>p99</th><th>max</th></tr>")
        for monitor, key, stats in latency_rows:
            measure, clock = LATENCY_MEASURES[key]
            parts.append(f"<tr><td>{esc(monitor)}</td><td>{esc(measure)}</td>"
                         f"<td data-clock=\"{esc(key)}\">{esc(clock)}</td>"
                         + "".join(_cell(stats[s], f"{monitor}.latencyMs.{key}.{s}")
                                   for s in ("count", "p50", "p75", "p99", "max")) + "</tr>")
        parts.append("</table>")
    notes = [(monitor, note) for monitor, m in summary["monitors"].items() for note in m["latencyNotes"]]
    for monitor, note in notes:
        parts.append(f"<p class=\"note latency-note\">{esc(monitor)}: {esc(note)}</p>")

    skipped = summary["skipped"]
    parts.append("<h3>Skipped input</h3>\n<table class=\"skipped\">"
                 f"<tr><th>Malformed lines</th>{_cell(skipped['malformed'], 'skipped.malformed')}</tr>"
                 f"<tr><th>Other event types (not used by the report)</th>"
                 f"{_cell(skipped['unknownType'], 'skipped.unknownType')}</tr>"
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
            parts.append(f"<p>Windows from {esc(m['firstWindowStart'])} to {esc(m['lastWindowEnd'])} "
                         "(event time, UTC).</p>")
        parts += _alerts_section(monitor, m)
        for file_name, caption in images.get(monitor, []):
            parts.append(f"<figure><img src=\"{esc(file_name)}\" alt=\"{esc(caption)}\">"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    if not summary["monitors"]:
        parts.append("<p>No ModelMonitor events found: nothing to plot.</p>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)
