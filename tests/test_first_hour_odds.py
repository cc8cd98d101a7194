"""Odds and ends a new user meets: drift.measured is counted as emitted, a JSON-string payload is
a 400, `run` leaves no temporary folder behind."""
from __future__ import annotations

import glob
import json
import os
import tempfile
import time
import uuid

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelmonitor.core import events as ev
from modelmonitor.local.procs import free_port
from modelmonitor.local.run_metrics import serve_run_metrics
from modelmonitor.local.runner import LocalRun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRIS = os.path.join(ROOT, "examples", "iris")


def logger_request(run: LocalRun, event_time_ms: int, row: list[float]) -> int:
    headers = {"ce-specversion": "1.0", "ce-type": ev.KSERVE_REQUEST, "ce-source": "t", "ce-id": str(uuid.uuid4()),
               "ce-time": ev.ms_to_rfc3339(event_time_ms), "ce-inferenceservicename": "iris",
               "content-type": "application/json"}
    return requests.post(run.ingress_url, data=json.dumps({"instances": [row]}), headers=headers,
                         timeout=10).status_code


def test_drift_measured_counts_as_emitted_and_run_cleans_its_temporary_folder(tmp_path):
    doc = yaml.safe_load(open(os.path.join(IRIS, "monitor.yaml")))
    doc["spec"]["baseline"] = {"file": os.path.join(IRIS, "baseline.json")}
    doc["spec"]["window"] = {"duration": "1s", "watermarkDelay": "0s", "idleTimeout": "30s"}
    monitor = tmp_path / "m.yaml"
    monitor.write_text(yaml.safe_dump(doc))
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "modelmonitor-run-*")))
    run = LocalRun(str(monitor), port=0, tick_seconds=60)
    created = run.log_dir
    assert created not in before and os.path.isdir(created)
    with run:
        port = free_port()
        serve_run_metrics(run, port)
        now = int(time.time() * 1000) // 1000 * 1000 - 5_000
        assert logger_request(run, now + 100, [5.0, 3.0, 1.5, 0.3]) == 202
        assert logger_request(run, now + 1_500, [5.0, 3.0, 1.5, 0.3]) == 202   # closes the first window
        deadline = time.time() + 30
        measured = 0.0
        while time.time() < deadline and not measured:
            run.broker.wait_idle(timeout=5)
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            families = {f.name: f for f in text_string_to_metric_families(text)}
            measured = sum(s.value for s in families["modelmonitor_events_out"].samples
                           if s.name.endswith("_total") and s.labels["type"] == ev.DRIFT_MEASURED
                           and s.labels["function"] == "drift")
            time.sleep(0.2)
        assert measured == 1.0
    assert not os.path.exists(created)


def test_instances_data_that_is_a_json_string_is_a_400(tmp_path):
    with LocalRun(os.path.join(IRIS, "monitor.yaml"), port=0, tick_seconds=60, log_dir=str(tmp_path / "logs")) as run:
        aggregate = run.pools["aggregate"].urls[0]
        for body in ['"just text"', json.dumps(json.dumps({"monitor": "iris"})), "42"]:
            headers = {"ce-specversion": "1.0", "ce-type": ev.INSTANCES, "ce-source": "/x",
                       "ce-id": str(uuid.uuid4()), "ce-monitor": "iris", "content-type": "application/json"}
            r = requests.post(aggregate, data=body, headers=headers, timeout=10)
            assert r.status_code == 400, (body, r.status_code, r.text)
            assert "data" in r.json()["error"]
    assert os.path.isdir(tmp_path / "logs")             # a folder the caller chose is the caller's


def test_alert_counts_only_features_the_window_could_judge():
    """The Iris monitor also watches `prediction`, which no logger response fed: an alert on the
    four input features says "4 of 4", and is critical (more than half drifted)."""
    from modelmonitor.core.baseline import load_baseline
    from modelmonitor.core.spec import load_monitor
    from modelmonitor.handlers import MemoryAlertState, Monitor, measure
    from modelmonitor.core.events import Event
    spec = load_monitor(os.path.join(IRIS, "monitor.yaml"))
    baseline = load_baseline(os.path.join(IRIS, "baseline.json"))
    assert [p.name for p in spec.predictions] == ["prediction"]
    mon = Monitor(spec, baseline)
    state = MemoryAlertState()
    reasons = []
    for k in range(spec.alerts.consecutive_windows):
        start = 1_800_000_000_000 + k * 15_000
        features = {}
        for name in ("sepal_length", "sepal_width", "petal_length", "petal_width"):
            edges = baseline["features"][name]["edges"]
            counts = [0] * len(edges) + [200]                  # under, K bins, over: all beyond the maximum
            features[name] = {"count": 200, "histogram": {"edges": edges, "counts": counts}}
        features["prediction"] = {"count": 0, "histogram": {"edges": [0.0, 1.0], "counts": [0, 0, 0]}}
        data = {"monitor": "iris", "window": {"startMs": start, "endMs": start + 15_000}, "count": 200,
                "late": 0, "closedAtMs": start + 15_000, "features": features}
        event = Event({"type": ev.WINDOW_CLOSED, "source": "/t", "id": f"w{k}", "monitor": "iris"}, data)
        out = measure(mon, event, start + 15_010, state)
        reasons += [e.data["reason"] for e in out if e["type"] == ev.DRIFT_DETECTED]
        severities = [e.data["severity"] for e in out if e["type"] == ev.DRIFT_DETECTED]
    assert len(reasons) == 1 and reasons[0].startswith("4 of 4 features drifted"), reasons
    assert severities == ["critical"]
