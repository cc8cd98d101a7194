"""`modelmonitor report`: plots and HTML from a synthetic events file (shapes valid per the schemas)."""
from __future__ import annotations

import html
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelmonitor.core import events as ev
from modelmonitor.tools import report
from modelmonitor.core.schema_check import validate_event

BASE_MS = 1_795_341_600_000           # 2026-11-22T10:00:00.000Z, a multiple of 15 s
WINDOW_MS = 15_000
EDGES = [4.0, 5.0, 6.0, 7.0, 8.0]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A live recording whose event time runs an hour behind the wall clock (as the demo's does): a
# latency that mixed the two clocks would be about 3,600,000 ms.
WALL_OFFSET_MS = 3_600_000
WATERMARK_DELAY_MS = 6_000


def event(type_: str, monitor: str, id_: str, data: dict, role: str, received: int | None = None) -> dict:
    return json.loads(ev.to_json_line(ev.make_event(type_, monitor, id_, data, source=ev.source_for(monitor, role)),
                                      received))


def logger_request(request_id: str, event_time: int, received: int | None) -> dict:
    doc = {"specversion": "1.0", "type": ev.KSERVE_REQUEST, "source": "http://localhost:9081/", "id": request_id,
           "time": ev.ms_to_rfc3339(event_time), "inferenceservicename": "iris",
           "datacontenttype": "application/json", "data": {"instances": [[5.0, 3.0, 1.5, 0.2]]}}
    if received is not None:
        doc[ev.RECEIVED_AT] = received
    return doc


def close_delays_by_brute_force(requests: list[tuple[int, int]], windows: list[tuple[int, int]]) -> list[int]:
    """For each (endMs, closedAtMs): closedAtMs minus the arrival of the first request (in arrival
    order) after which the largest event time seen reaches end + watermark delay."""
    delays = []
    for end, closed_at in windows:
        largest = None
        for arrival, event_time in sorted(requests):
            largest = event_time if largest is None else max(largest, event_time)
            if largest >= end + WATERMARK_DELAY_MS:
                if arrival <= closed_at:
                    delays.append(closed_at - arrival)
                break
    return delays


def window_info(start: int) -> dict:
    return {"startMs": start, "endMs": start + WINDOW_MS, "start": ev.ms_to_rfc3339(start),
            "end": ev.ms_to_rfc3339(start + WINDOW_MS)}


def numerical(values: np.ndarray) -> dict:
    """Window statistics of one numerical feature, as the aggregator reports them."""
    if values.size == 0:
        return {"count": 0, "min": None, "max": None, "mean": None, "stddev": None, "variance": None,
                "sum": 0.0, "percentiles": {"25": None, "50": None, "75": None}, "iqr": None,
                "histogram": {"edges": EDGES, "counts": [0] * (len(EDGES) + 1)}}
    inner, _ = np.histogram(values, bins=EDGES)
    under = int((values < EDGES[0]).sum())
    over = int((values > EDGES[-1]).sum())
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return {"count": int(values.size), "min": float(values.min()), "max": float(values.max()),
            "mean": float(values.mean()), "stddev": float(values.std(ddof=1)) if values.size > 1 else None,
            "variance": float(values.var(ddof=1)) if values.size > 1 else None, "sum": float(values.sum()),
            "percentiles": {"25": float(p25), "50": float(p50), "75": float(p75)}, "iqr": float(p75 - p25),
            "histogram": {"edges": EDGES, "counts": [under, *map(int, inner), over]}}


def synthetic_events() -> tuple[list[dict], dict]:
    """Events of two monitors and the figures a reader would compute from them by hand."""
    rng = np.random.default_rng(7)
    docs: list[dict] = []
    expected = {"windows": 0, "instances": 0, "late": 0, "outliers": 0, "alerts": [], "flags": {},
                "closeWindows": [], "driftDelays": [], "outlierDelays": []}
    counts = [40, 55, 0, 60, 48, 52, 45, 50]          # window 2 is empty
    for k, count in enumerate(counts):
        start = BASE_MS + k * WINDOW_MS
        shift = 1.5 if k >= 4 else 0.0                 # drift from window 4 on
        sepal = rng.normal(5.8 + shift, 0.6, count)
        petal = rng.normal(6.0, 0.5, count)
        late = k % 3
        closed_at = start + WINDOW_MS + WATERMARK_DELAY_MS + 20 * k + WALL_OFFSET_MS     # wall clock
        species = {"a": count // 2, "b": count - count // 2} if count else {}
        window_data = {
            "monitor": "iris", "window": window_info(start), "count": count, "late": late,
            "watermarkMs": start + WINDOW_MS + 5, "closedAtMs": closed_at,
            "features": {"sepal_length": numerical(sepal), "petal_width": numerical(petal),
                         "species_hint": {"count": count, "categories": species,
                                          "unseenShare": 0.0 if count else None, "missing": 0}},
            "covariance": None, "correlation": None}
        docs.append(event(ev.WINDOW_CLOSED, "iris", ev.window_id("iris", start, start + WINDOW_MS),
                          window_data, "aggregate"))
        expected["windows"] += 1
        expected["instances"] += count
        expected["late"] += late
        expected["closeWindows"].append((start + WINDOW_MS, closed_at))
        if count == 0:
            continue                                    # drift skips empty windows
        drifted = k >= 4
        js = 0.3 if drifted else 0.02
        measured = {
            "monitor": "iris", "window": window_info(start), "count": count, "closedAtMs": closed_at,
            "measuredAtMs": closed_at + 5 + k,
            "features": {
                "sepal_length": {"jensenShannon": {"value": js, "threshold": 0.1, "drifted": drifted},
                                 "psi": {"value": 0.1 + js, "threshold": 0.2, "drifted": 0.1 + js > 0.2}},
                "petal_width": {"jensenShannon": {"value": 0.03, "threshold": 0.1, "drifted": False},
                                "psi": {"value": 0.25 if k == 1 else 0.05, "threshold": 0.2, "drifted": k == 1}},
                "species_hint": {"chiSquare": {"value": 0.01, "threshold": 0.05, "drifted": False}}}}
        wid = ev.window_id("iris", start, start + WINDOW_MS)
        docs.append(event(ev.DRIFT_MEASURED, "iris", wid + "/drift", measured, "drift",
                          received=measured["measuredAtMs"] + 1))
        expected["driftDelays"].append(measured["measuredAtMs"] - closed_at)
        for feature, scores in measured["features"].items():
            flagged = any(s["drifted"] for s in scores.values())
            expected["flags"][feature] = expected["flags"].get(feature, 0) + int(flagged)
        if k in (5, 7):
            reason = f"1 of 3 features drifted (sepal_length) for {k - 3} consecutive windows <&>"
            detected = dict(measured, severity="critical" if k == 7 else "warning", reason=reason,
                            driftedFeatures=["sepal_length"])
            docs.append(event(ev.DRIFT_DETECTED, "iris", wid + "/alert", detected, "drift"))
            expected["alerts"].append(reason)
    # Outliers: request event times spread over the windows, one after the last window.
    for n, offset in enumerate([1_000, 2_000, 17_000, 50_000, 61_000, 62_500, 100_000, 130_000]):
        t = BASE_MS + offset
        outliers = [{"instance": 0, "feature": "sepal_length", "value": 9.5, "rule": "zscore",
                     "score": 6.2, "threshold": 3.0}]
        if n % 2:
            outliers.append({"instance": 0, "feature": "sepal_length", "value": 9.5, "rule": "range",
                             "score": 9.5, "threshold": 8.0})
        if n == 3:
            outliers.append({"instance": 1, "feature": "*", "value": None, "rule": "mahalanobis",
                             "score": 42.0, "threshold": 20.0})
        arrival = t + WALL_OFFSET_MS + 7                   # the logger request reached the broker
        docs.append(logger_request(f"req-{n}", t, arrival))
        data = {"monitor": "iris", "requestId": f"req-{n}", "eventTimeMs": t, "detectedAtMs": arrival + 2 + n,
                "outliers": outliers}
        docs.append(event(ev.OUTLIER_DETECTED, "iris", f"iris/request/req-{n}/h/outliers", data, "outlier",
                          received=arrival + 3 + n))
        expected["outliers"] += len(outliers)
        expected["outlierDelays"].append(3 + n)
    docs.append(event(ev.LATE_INSTANCES, "iris", "iris/request/req-late/h/late",
                      {"monitor": "iris", "requestId": "req-late", "eventTimeMs": BASE_MS + 1_000,
                       "watermarkMs": BASE_MS + 20_000, "lateWindows": [{"startMs": BASE_MS,
                                                                         "endMs": BASE_MS + WINDOW_MS}],
                       "instances": 3}, "aggregate"))
    docs.append(event(ev.DEAD_LETTER, "iris", "iris/rejected/ingest/abc",
                      {"monitor": "iris", "reason": "bad payload", "role": "ingest", "originalType": None,
                       "originalSource": None, "originalId": None, "originalData": "{", "truncated": False},
                      "ingest"))
    for n, kind in enumerate(["request", "request", "request", "response"]):
        data = {"monitor": "iris", "requestId": f"req-{n}", "kind": kind,
                "eventTime": ev.ms_to_rfc3339(BASE_MS + n), "eventTimeMs": BASE_MS + n,
                "features": ["sepal_length"], "instances": [[5.0]],
                "loggerType": ev.KSERVE_RESPONSE if kind == "response" else ev.KSERVE_REQUEST,
                "loggerSource": "http://localhost:9081/"}
        docs.append(event(ev.INSTANCES, "iris", f"iris/{kind}/req-{n}/h", data, "ingest"))
    # The live stream: one request a second over the windows, in arrival order, slightly out of
    # event-time order, each with its logger event and its inference.instances event.
    live: list[tuple[int, int]] = []
    for i in range(0, len(counts) * 15 + 8):
        t = BASE_MS + i * 1_000 + (500 if i % 4 == 1 else 0) - (700 if i % 5 == 2 else 0)
        arrival = BASE_MS + WALL_OFFSET_MS + i * 1_000 + 3
        docs.append(logger_request(f"live-{i}", t, arrival))
        data = {"monitor": "iris", "requestId": f"live-{i}", "kind": "request", "eventTime": ev.ms_to_rfc3339(t),
                "eventTimeMs": t, "features": ["sepal_length"], "instances": [[5.0]],
                "loggerType": ev.KSERVE_REQUEST, "loggerSource": "http://localhost:9081/"}
        docs.append(event(ev.INSTANCES, "iris", f"iris/request/live-{i}/h", data, "ingest", received=arrival + 2))
        live.append((arrival, t))
    expected["closeDelays"] = close_delays_by_brute_force(live, expected["closeWindows"])
    expected["liveRequests"] = len(live) + 8
    # A second monitor whose feature name is not file-name safe.
    wine = {"windows": 0, "instances": 0}
    for k in range(2):
        start = BASE_MS + k * WINDOW_MS
        values = rng.normal(6.0, 0.4, 30)
        data = {"monitor": "wine", "window": window_info(start), "count": 30, "late": 0,
                "watermarkMs": start + WINDOW_MS, "closedAtMs": start + WINDOW_MS + 6_100,
                "features": {"alcohol %/vol": numerical(values)}, "covariance": None, "correlation": None}
        docs.append(event(ev.WINDOW_CLOSED, "wine", ev.window_id("wine", start, start + WINDOW_MS), data, "aggregate"))
        wine["windows"] += 1
        wine["instances"] += 30
    expected["wine"] = wine
    for doc in docs:
        if doc["type"] != ev.KSERVE_REQUEST:
            validate_event(doc)                          # the fixture itself honours the contract
    return docs, expected


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The report of a file holding the synthetic events plus junk lines."""
    docs, expected = synthetic_events()
    lines = [json.dumps(doc) for doc in docs]
    invalid = dict(docs[0], id="iris/0/1")
    invalid["data"] = dict(docs[0]["data"], count=-1)
    junk = [
        "this is not json",                                         # malformed
        "[1, 2, 3]",                                                # JSON, not an event object
        json.dumps({"no": "type"}),                                 # object without a type
        json.dumps({"specversion": "1.0", "type": ev.KSERVE_REQUEST, "source": "http://localhost:9081/",
                    "id": "x1", "data": {"instances": [[1, 2, 3, 4]]}}),   # a type the report does not plot
        json.dumps({"specversion": "1.0", "type": "dev.knative.sources.ping", "source": "/ping", "id": "p1"}),
        json.dumps(docs[0]),                                        # a redelivered window.closed
        json.dumps(invalid),                                        # a negative count
        "",                                                         # blank lines are not events
    ]
    # Interleave the junk so that skipping it cannot depend on its position.
    for i, line in enumerate(junk):
        lines.insert(3 * i + 1, line)
    directory = tmp_path_factory.mktemp("report")
    events_path = directory / "events.jsonl"
    events_path.write_text("\n".join(lines) + "\n")
    result = report.write_report(events_path, directory / "out", title="Synthetic <run>",
                                 watermark_delays={"iris": WATERMARK_DELAY_MS})
    return result, docs, expected


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature and trailer."""
    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE
    assert raw[12:16] == b"IHDR"
    assert raw[-8:-4] == b"IEND"
    return struct.unpack(">II", raw[16:24])


def cell(page: str, key: str) -> str:
    match = re.search(rf'data-key="{re.escape(html.escape(key))}">([^<]*)<', page)
    assert match, f"no cell for {key}"
    return match.group(1)


def test_expected_plots_are_written_as_real_pngs(written):
    result, _, _ = written
    names = sorted(p.name for p in result["images"])
    assert names == sorted([
        "iris-windows.png", "iris-stats-sepal_length.png", "iris-stats-petal_width.png",
        "iris-drift-sepal_length.png", "iris-drift-petal_width.png", "iris-drift-species_hint.png",
        "iris-outliers.png", "iris-latency.png", "wine-windows.png", "wine-stats-alcohol_vol.png"])
    import matplotlib.image
    for path in result["images"]:
        assert path.parent == result["html"].parent
        assert path.stat().st_size > 10_000, path.name
        width, height = png_size(path)
        assert width >= 400 and height >= 300, path.name
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[:2] == (height, width)
        assert pixels.std() > 0.01, f"{path.name} is blank"


def test_html_references_every_png_and_nothing_else(written):
    result, _, _ = written
    page = result["html"].read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == sorted(p.name for p in result["images"])
    assert sorted(sources) == sorted(p.name for p in result["html"].parent.glob("*.png"))
    assert "<title>Synthetic &lt;run&gt;</title>" in page
    assert "http://" not in page.split("<body>")[1]               # self-contained: no remote assets


def test_summary_numbers_match_the_events(written):
    result, _, expected = written
    page = result["html"].read_text()
    iris = result["summary"]["monitors"]["iris"]
    assert (iris["windows"], iris["instances"], iris["late"]) == (expected["windows"], expected["instances"],
                                                                  expected["late"])
    assert iris["outliers"] == expected["outliers"] == 13
    assert iris["driftAlerts"] == len(expected["alerts"]) == 2
    assert iris["driftFlags"] == expected["flags"] == {"petal_width": 1, "sepal_length": 4, "species_hint": 0}
    assert (iris["lateEvents"], iris["lateInstances"], iris["rejected"]) == (1, 3, 1)
    assert (iris["requests"], iris["responses"]) == (3 + expected["liveRequests"] - 8, 1)
    assert result["summary"]["input"] == {"loggerRequests": expected["liveRequests"] + 1, "loggerResponses": 0}
    assert iris["outliersByRule"] == {"mahalanobis": 1, "range": 4, "zscore": 8}
    for key, value in [("windows", expected["windows"]), ("instances", expected["instances"]),
                       ("late", expected["late"]), ("outliers", expected["outliers"]),
                       ("driftAlerts", len(expected["alerts"])), ("rejected", 1), ("lateEvents", 1)]:
        assert cell(page, f"iris.{key}") == str(value)
    for feature, count in expected["flags"].items():
        assert cell(page, f"iris.driftFlags.{feature}") == str(count)
    wine = expected["wine"]
    assert cell(page, "wine.windows") == str(wine["windows"])
    assert cell(page, "total.windows") == str(expected["windows"] + wine["windows"])
    assert cell(page, "total.instances") == str(expected["instances"] + wine["instances"])


def test_alerts_are_listed_with_their_reasons(written):
    result, _, expected = written
    page = result["html"].read_text()
    for reason in expected["alerts"]:
        assert html.escape(reason) in page
    assert "<&>" not in page
    alerts_table = page.split('<table class="alerts">')[1].split("</table>")[0]
    assert alerts_table.count("<tr>") == 1 + len(expected["alerts"])
    assert ev.ms_to_rfc3339(BASE_MS + 5 * WINDOW_MS) in alerts_table
    assert 'class="critical">critical<' in alerts_table


def test_latency_percentiles_match_numpy(written):
    result, _, expected = written
    latency = result["summary"]["monitors"]["iris"]["latencyMs"]
    for key, samples in [("windowClose", expected["closeDelays"]), ("drift", expected["driftDelays"]),
                         ("outlier", expected["outlierDelays"])]:
        p50, p75, p99 = np.percentile(samples, [50, 75, 99])
        assert latency[key]["count"] == len(samples)
        assert latency[key]["p50"] == pytest.approx(p50)
        assert latency[key]["p75"] == pytest.approx(p75)
        assert latency[key]["p99"] == pytest.approx(p99)
        assert latency[key]["max"] == max(samples)
    page = result["html"].read_text()
    assert cell(page, "iris.latencyMs.windowClose.p99") == f"{np.percentile(expected['closeDelays'], 99):,.1f}"


def test_junk_is_skipped_and_counted(written):
    result, docs, _ = written
    summary = result["summary"]
    assert summary["skipped"] == {"malformed": 3, "unknownType": 1, "invalid": 1, "duplicates": 1}
    assert summary["unknownTypes"] == {"dev.knative.sources.ping": 1}     # logger requests are input
    assert summary["invalidTypes"] == {ev.WINDOW_CLOSED: 1}
    assert "data.count" in summary["invalidExamples"][0]
    assert summary["events"]["read"] == len(docs) + 7
    assert summary["events"]["used"] == len(docs) + 1
    page = result["html"].read_text()
    assert cell(page, "skipped.malformed") == "3"
    assert cell(page, "skipped.unknownType") == "1"
    assert cell(page, "skipped.invalid") == "1"
    assert cell(page, "skipped.duplicates") == "1"


def test_summary_json_is_the_returned_summary(written):
    result, _, _ = written
    assert json.loads(result["summaryJson"].read_text()) == result["summary"]


def test_summarise_equals_the_report_summary_and_does_not_depend_on_order(written):
    result, docs, _ = written
    delays = {"iris": WATERMARK_DELAY_MS}
    forwards = report.summarise(docs, watermark_delays=delays)
    backwards = report.summarise(list(reversed(docs)), watermark_delays=delays)
    assert forwards["monitors"] == backwards["monitors"] == result["summary"]["monitors"]


def test_summarise_validates_data_unless_told_not_to():
    docs, _ = synthetic_events()
    broken = dict(docs[0], id="other")
    broken["data"] = dict(docs[0]["data"], window={"startMs": 1})
    assert report.summarise([broken])["skipped"]["invalid"] == 1
    with pytest.raises(KeyError):
        report.summarise([broken], validate=False)


def test_outliers_count_in_every_sliding_window_that_holds_them():
    windows = [(0, 30_000), (15_000, 45_000), (30_000, 60_000)]
    intervals, counts, outside = report.outlier_counts([20_000, 35_000, 70_000],
                                                       [["zscore"], ["zscore", "range"], ["iqr"]], windows)
    assert intervals == windows
    assert counts == {"iqr": [0, 0, 0], "range": [0, 1, 1], "zscore": [1, 2, 1]}
    assert outside == 1


def test_outliers_fall_in_15_second_buckets_without_windows():
    intervals, counts, outside = report.outlier_counts([14_999, 15_000, 46_000], [["zscore"]] * 3, [])
    assert intervals == [(0, 15_000), (15_000, 30_000), (45_000, 60_000)]
    assert counts == {"zscore": [1, 1, 1]} and outside == 0


def test_cli_writes_the_report_and_rejects_a_missing_file(tmp_path, capsys):
    docs, expected = synthetic_events()
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    assert report.main([str(path), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"{expected['windows'] + expected['wine']['windows']} windows" in out
    assert (tmp_path / "r" / "index.html").is_file()
    assert report.main([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r2")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


def test_report_needs_no_display_and_no_pyplot(tmp_path):
    docs, _ = synthetic_events()
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs[:12]))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND", "WAYLAND_DISPLAY")}
    code = ("import sys; from modelmonitor.tools.report import write_report; "
            f"w = write_report({str(path)!r}, {str(tmp_path / 'out')!r}); "
            "print(len(w['images']), 'matplotlib.pyplot' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    images, pyplot_loaded = done.stdout.split()
    assert int(images) > 0 and pyplot_loaded == "False"


def test_an_empty_file_gives_a_page_without_images(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n")
    result = report.write_report(path, tmp_path / "out")
    assert result["images"] == []
    assert "nothing to plot" in result["html"].read_text()
    assert result["summary"]["events"] == {"read": 0, "used": 0, "recordedLive": 0}


def test_every_latency_says_its_clock_and_none_mixes_clocks(written):
    result, _, expected = written
    page = result["html"].read_text()
    latency = result["summary"]["monitors"]["iris"]["latencyMs"]
    assert set(latency) == {"outlier", "windowClose", "drift"}
    table = page.split('<table class="latency">')[1].split("</table>")[0]
    rows = table.split("<tr>")[2:]
    assert len(rows) == 3
    for row in rows:
        clock = re.search(r'data-clock="[^"]+">([^<]*)<', row).group(1)
        assert clock.startswith("wall clock: "), row
    for stats in latency.values():
        assert stats["clock"].startswith("wall clock: ")
        assert stats["max"] < 1_000                     # an hour's offset between the clocks never leaks in
    assert "Latency (ms, wall clock)" in page
    assert result["summary"]["monitors"]["wine"]["latencyMs"] == {}


def test_a_replay_output_shows_no_latencies(tmp_path):
    """A replay's events carry no broker arrival time: its clock is event time, so no latency."""
    docs, _ = synthetic_events()
    replayed = [{k: v for k, v in doc.items() if k != ev.RECEIVED_AT} for doc in docs
                if doc["type"] != ev.KSERVE_REQUEST]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in replayed))
    result = report.write_report(path, tmp_path / "out", watermark_delays={"iris": WATERMARK_DELAY_MS})
    for monitor in result["summary"]["monitors"].values():
        assert monitor["latencyMs"] == {}
    assert not list((tmp_path / "out").glob("*latency*.png"))
    page = result["html"].read_text()
    assert '<table class="latency">' not in page
    assert html.escape("none of these events carries the broker's arrival time") in page


def test_window_close_latency_needs_the_watermark_delay(tmp_path):
    docs, _ = synthetic_events()
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    summary = report.write_report(path, tmp_path / "out")["summary"]["monitors"]["iris"]
    assert set(summary["latencyMs"]) == {"outlier", "drift"}
    assert any("--monitor" in note for note in summary["latencyNotes"])


def test_no_empty_late_panel(written):
    result, _, _ = written
    by_name = {p.name: p for p in result["images"]}
    assert result["summary"]["monitors"]["wine"]["late"] == 0
    assert png_size(by_name["wine-windows.png"])[1] < png_size(by_name["iris-windows.png"])[1]   # one panel


def test_outlier_counts_explained(written):
    result, _, _ = written
    page = result["html"].read_text()
    iris = result["summary"]["monitors"]["iris"]
    assert (iris["outlierEvents"], iris["outlierInstances"], iris["outliers"]) == (8, 9, 13)
    assert "Outlier rule hits" in page and "Requests with outliers" in page
    assert "several rule hits" in page


def test_alerts_are_grouped_and_long_lists_fold(tmp_path):
    from modelmonitor.tools.report.page import ALERT_GROUPS_SHOWN, group_alerts
    alerts = []
    for k in range(3 * ALERT_GROUPS_SHOWN):
        # runs of two alerts with the same features, alternating features between runs
        feature = "a" if (k // 2) % 2 else "b"
        alerts.append({"window": {"start": f"s{k}", "end": f"e{k}"}, "severity": "warning",
                       "reason": f"r{k}", "driftedFeatures": [feature]})
    groups = group_alerts(alerts)
    assert len(groups) == len(alerts) // 2
    assert all(g["count"] == 2 for g in groups)
    assert (groups[0]["first"], groups[0]["last"]) == ("s0", "e1")
    from modelmonitor.tools.report.page import render_page
    summary = report.summarise([])
    summary["monitors"]["m"] = dict(report.summarise([])["totals"], alerts=alerts, driftAlerts=len(alerts),
                                    firstWindowStart=None, driftFlags={}, driftFlagsByMetric={},
                                    latencyMs={}, latencyNotes=[])
    page = render_page(summary, {}, "t", "f")
    shown = page.split('<table class="alerts">')[1].split("</table>")[0]
    assert shown.count("<tr>") == 1 + ALERT_GROUPS_SHOWN
    assert f"{len(groups) - ALERT_GROUPS_SHOWN} more runs of alerts" in page


def test_a_report_written_again_leaves_no_stale_plots(tmp_path):
    docs, _ = synthetic_events()
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    first = report.write_report(path, tmp_path / "out")
    assert any(p.name.startswith("wine-") for p in first["images"])
    (tmp_path / "out" / "notes.txt").write_text("mine")
    path.write_text("".join(json.dumps(d) + "\n" for d in docs if d.get("monitor") != "wine"))
    second = report.write_report(path, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == sorted(p.name for p in second["images"])
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
