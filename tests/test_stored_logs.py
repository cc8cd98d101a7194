"""KServe's stored log batches (JSON, CSV, Parquet) replay exactly like the same logger events
as CloudEvent lines. Batches are written here from the LogRequest field names KServe uses (JSON:
the LogRequest object with occurrenceTime; CSV/Parquet: its logRecord table without one)."""
from __future__ import annotations

import base64
import csv
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelmonitor.core import events as ev
from modelmonitor.core.stored_logs import StoredLogError, stored_log_events
from modelmonitor.tools.cli import main as cli_main
from modelmonitor.tools.streams import ThesisStream, logger_events

IRIS = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "iris")
COLUMNS = ["url", "bytes", "contentType", "reqType", "id", "sourceUri", "inferenceService", "namespace",
           "component", "endpoint", "metadata", "annotations", "certName", "tlsSkipVerify"]


def docs(n=6_000):
    stream = ThesisStream.from_csv(os.path.join(IRIS, "train.csv"), total=n)
    return [doc for _, doc in logger_events(stream, rate_per_s=50, responses=True)]


def log_request(doc, nanos="456789"):
    """The LogRequest KServe stores for one logger event (Go's JSON: time with nanoseconds)."""
    return {"bytes": base64.b64encode(json.dumps(doc["data"]).encode()).decode(),
            "contentType": "application/json", "reqType": doc["type"], "id": doc["id"],
            "sourceUri": {"Scheme": "http", "Host": "localhost:9081", "Path": "/"},
            "inferenceService": doc["inferenceservicename"], "namespace": doc["namespace"],
            "component": doc["component"], "metadata": {"X-Event-Time": [doc["time"]]},
            "occurrenceTime": doc["time"].replace("Z", nanos + "Z")}


def log_record(doc):
    req = log_request(doc)
    return {"url": "http://broker/", "bytes": req["bytes"], "contentType": req["contentType"],
            "reqType": req["reqType"], "id": req["id"], "sourceUri": "http://localhost:9081/",
            "inferenceService": req["inferenceService"], "namespace": req["namespace"],
            "component": req["component"], "endpoint": "", "metadata": json.dumps(req["metadata"]),
            "annotations": "", "certName": "", "tlsSkipVerify": "false"}


def replay(tmp_path, name, inp, *extra):
    out = tmp_path / f"{name}.out.jsonl"
    assert cli_main(["replay", os.path.join(IRIS, "monitor.yaml"), "--input", str(inp), "--output", str(out),
                     "--quiet", *extra]) == 0
    return out.read_bytes()


def deterministic(output: bytes) -> list:
    """Every event, without what a KLL sketch past 400 values makes run-dependent (its random
    compaction): percentiles, IQR and the sketch of windows, and the scores computed from it."""
    events = [json.loads(line) for line in output.splitlines()]
    for e in events:
        data = e["data"]
        if e["type"] == ev.WINDOW_CLOSED:
            for f in data["features"].values():
                for key in ("percentiles", "iqr", "quantileSketch"):
                    f.pop(key, None)
        elif e["type"] in (ev.DRIFT_MEASURED, ev.DRIFT_DETECTED):
            for f in data["features"].values():
                for key in ("wasserstein", "wassersteinNorm", "kolmogorovSmirnov"):
                    f.pop(key, None)
    return events


def write_batches(folder, events, fmt, size=700):
    folder.mkdir()
    for k in range(0, len(events), size):
        batch, path = events[k:k + size], folder / f"{k:06d}-batch.{fmt}"
        if fmt == "json":
            path.write_text(json.dumps([log_request(d) for d in batch]))
        elif fmt == "csv":
            with open(path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, COLUMNS)
                writer.writeheader()
                writer.writerows(log_record(d) for d in batch)
        else:
            rows = [log_record(d) for d in batch]
            for r in rows:
                r["tlsSkipVerify"] = False
            pq.write_table(pa.Table.from_pylist(rows), path)
        os.utime(path, ns=(10**18 + k, 10**18 + k))      # file order = modification-time order


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_each_format_replays_like_the_same_cloudevent_lines(tmp_path, fmt):
    events = docs()
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(json.dumps(d) + "\n" for d in events))
    expected = replay(tmp_path, "lines", lines)
    write_batches(tmp_path / fmt, events, fmt)
    extra = [] if fmt == "json" else ["--event-time", "metadata:x-event-time"]
    got = replay(tmp_path, fmt, tmp_path / fmt, *extra)
    assert deterministic(got) == deterministic(expected)
    assert b"io.modelmonitor.window.closed" in got and b"io.modelmonitor.drift.measured" in got


def test_a_single_record_batch_is_the_bare_object_and_csv_defaults_to_the_file_time(tmp_path):
    doc = docs(3)[0]
    single = tmp_path / "one.json"
    single.write_text(json.dumps(log_request(doc)))
    [event] = list(stored_log_events(str(single)))
    assert event["time"] == doc["time"] and event["id"] == doc["id"] and event["type"] == doc["type"]
    assert event["source"] == "http://localhost:9081/" and json.loads(event["metadata"])["X-Event-Time"]
    table = tmp_path / "t.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerow(log_record(doc))
    os.utime(table, ns=(1_767_225_600_123_000_000,) * 2)
    [event] = list(stored_log_events(str(table)))
    assert event["time"] == ev.ms_to_rfc3339(1_767_225_600_123)


def test_bad_batches_are_refused_in_one_line_naming_file_and_record(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "a", "reqType": ev.KSERVE_REQUEST, "bytes": "%%%",
                                "occurrenceTime": "2026-01-01T00:00:00Z"}]))
    with pytest.raises(StoredLogError, match="record 1: 'bytes' is not valid base64"):
        list(stored_log_events(str(bad)))
    out = tmp_path / "o.jsonl"
    rc = cli_main(["replay", os.path.join(IRIS, "monitor.yaml"), "--input", str(bad), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.json record 1" in err[0]
    table = tmp_path / "t.csv"
    table.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(StoredLogError, match="event time"):
        list(stored_log_events(str(table), "header"))
