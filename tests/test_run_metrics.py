"""`modelmonitor run` serves every function's metrics and the broker's on one endpoint."""
from __future__ import annotations

import json
import os
import time
import uuid

import requests
from prometheus_client.parser import text_string_to_metric_families

from modelmonitor.core import events as ev
from modelmonitor.local.procs import free_port
from modelmonitor.local.run_metrics import serve_run_metrics
from modelmonitor.local.runner import LocalRun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_endpoint_for_all_functions_and_the_broker(tmp_path):
    with LocalRun(os.path.join(ROOT, "examples", "iris", "monitor.yaml"), port=0, tick_seconds=60,
                  log_dir=str(tmp_path / "logs")) as run:
        port = free_port()
        serve_run_metrics(run, port)
        for i in range(3):
            headers = {"ce-specversion": "1.0", "ce-type": ev.KSERVE_REQUEST, "ce-source": "t", "ce-id": str(uuid.uuid4()),
                       "ce-time": ev.ms_to_rfc3339(int(time.time() * 1000)), "ce-inferenceservicename": "iris",
                       "content-type": "application/json"}
            body = {"instances": [[5.0, 3.0, 1.5, 9.0 if i == 0 else 0.3]]}
            assert requests.post(run.ingress_url, data=json.dumps(body), headers=headers, timeout=10).status_code == 202
        assert run.broker.wait_idle(timeout=20)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ins = families["modelmonitor_events_in"].samples
    ok = {(s.labels["function"], s.labels["outcome"]): s.value for s in ins if s.name.endswith("_total")}
    assert ok[("ingest", "ok")] == 3 and ok[("aggregate", "ok")] == 3 and ok[("outlier", "ok")] == 3
    out = {s.labels["function"]: s.value for s in families["modelmonitor_events_out"].samples
           if s.name.endswith("_total") and s.labels["type"] == ev.OUTLIER_DETECTED}
    assert out == {"outlier": 1.0}
    delivered = {s.labels["trigger"]: s.value for s in families["modelmonitor_broker_delivered"].samples
                 if s.name.endswith("_total")}
    assert delivered["iris-ingest-request"] == 3 and delivered["iris-aggregate"] == 3
