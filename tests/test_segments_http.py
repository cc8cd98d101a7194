"""Segments through the real functions over HTTP (func-python serve, one process per role, a
private redis-server): ingest takes the segment from the KServe logger's ``metadata`` extension
(binary mode: a JSON header value) and refuses a bad one with 400 and a dead letter; aggregate
closes one window.closed per segment and counts a segment beyond maxSegments in
segments.excess (and its metric); drift answers drift.measured per segment."""
from __future__ import annotations

import json

import pytest
import requests
import yaml

from modelmonitor.core import events as ev
from modelmonitor.local.procs import start_all, stop_all
from modelmonitor.local.redis_server import RedisServer
from test_functions_http import (BASELINE, DELAY_MS, IDLE_MS, IRIS, WINDOW_MS, function_processes, logger_event,
                                 metric_value, next_base, post, rejected_for, reply_event)
from test_functions_http import sink  # noqa: F401  (the recording K_SINK fixture, one per module)

ROWS = {"v1": [[5.0, 3.0, 1.5, 0.2], [6.0, 2.9, 4.5, 1.5]], "v2": [[7.0, 3.2, 6.0, 2.2]],
        "v3": [[5.5, 2.5, 4.0, 1.3], [5.6, 2.6, 4.1, 1.2], [5.7, 2.7, 4.2, 1.1]]}


@pytest.fixture(scope="module")
def seg_funcs(tmp_path_factory, sink):
    tmp = tmp_path_factory.mktemp("segment-functions")
    server = RedisServer(directory=str(tmp), durable=False).start()
    doc = yaml.safe_load((IRIS / "monitor.yaml").read_text())
    doc["spec"]["baseline"] = {"file": str(BASELINE)}
    doc["spec"]["window"] = {"duration": WINDOW_MS, "watermarkDelay": DELAY_MS, "idleTimeout": IDLE_MS}
    doc["spec"]["segment"] = {"metadataHeader": "X-Model-Version", "maxSegments": 2}
    monitor = tmp / "monitor.yaml"
    monitor.write_text(yaml.safe_dump(doc))
    procs = function_processes(monitor, ("ingest", "aggregate", "drift"), server.url, sink.url, tmp, threads=4)
    try:
        start_all(procs.values())
        yield procs
    finally:
        stop_all(procs.values())
        server.cleanup()


def _ingest(funcs, version, t, rows):
    # KServe's logger: the allowlisted headers as a JSON object of lists in the `metadata` extension.
    extensions = {} if version is None else {"metadata": json.dumps({"X-Model-Version": [version]})}
    return post(funcs["ingest"].url, logger_event({"instances": rows}, time_ms=t, **extensions))


def test_segments_end_to_end_over_http(seg_funcs, sink):
    base = next_base()
    bad = logger_event({"instances": ROWS["v1"]}, time_ms=base + 10,
                       metadata=json.dumps({"X-Model-Version": ["v1 beta"]}))
    resp = post(seg_funcs["ingest"].url, bad)
    assert resp.status_code == 400 and "is not a segment name" in resp.json()["error"]
    assert sink.wait_for(lambda s: rejected_for(s, bad["id"]))

    metrics_before = metric_value(requests.get(seg_funcs["aggregate"].metrics_url, timeout=5).text,
                                  "modelmonitor_segment_excess_instances_total")
    for i, version in enumerate(["v1", "v2", "v3", "v1"]):     # v3 finds both slots taken
        inst = reply_event(_ingest(seg_funcs, version, base + 100 + i * 200, ROWS[version]))
        assert inst.data["segment"] == version
        assert post(seg_funcs["aggregate"].url, inst).status_code == 202
    # the next window's event moves the watermark past the first window's end
    later = reply_event(_ingest(seg_funcs, "v1", base + WINDOW_MS + DELAY_MS + 100, ROWS["v1"]))
    assert post(seg_funcs["aggregate"].url, later).status_code == 202

    def first_window(s):
        got = [e for e in s.of_type(ev.WINDOW_CLOSED) if e.data["window"]["startMs"] == base]
        return got if len(got) == 2 else None
    closed = {e.data["segment"]: e for e in sink.wait_for(first_window)}
    assert closed["v1"]["id"] == f"iris/{base}/{base + WINDOW_MS}@v1" and closed["v1"].data["count"] == 4
    assert closed["v2"].data["count"] == 1
    assert closed["v1"].data["features"]["sepal_length"]["sum"] == pytest.approx(22.0)
    (excess,) = sink.wait_for(lambda s: [e for e in s.of_type(ev.SEGMENTS_EXCESS)
                                             if e.data["window"]["startMs"] == base])
    assert excess["id"] == f"iris/{base}/{base + WINDOW_MS}/excess"
    assert (excess.data["requests"], excess.data["instances"], excess.data["segments"]) == (1, 3, ["v3"])
    metrics_after = metric_value(requests.get(seg_funcs["aggregate"].metrics_url, timeout=5).text,
                                 "modelmonitor_segment_excess_instances_total")
    assert metrics_after - metrics_before == 3

    measured = reply_event(post(seg_funcs["drift"].url, closed["v2"]))
    assert measured["type"] == ev.DRIFT_MEASURED and measured.data["segment"] == "v2"
    assert measured["id"] == f"iris/{base}/{base + WINDOW_MS}@v2/drift"
