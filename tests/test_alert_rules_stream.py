"""Each alert rule on the thesis-style 5-stage stream: alerts in the drift stage only.

The stream (normal, outliers, drift, outliers, normal; iris training rows) is replayed with the
example monitor under each alert rule: N consecutive windows (N = 1 and 2), CUSUM and
Page-Hinkley. Every alert's window must lie in the drift stage, and each rule must alert there.
"""
from __future__ import annotations

import json
import os

import pytest
import yaml

from modelmonitor.core import events as ev
from modelmonitor.tools.cli import main as cli_main
from modelmonitor.tools.streams import ThesisStream, stage_names, write_jsonl

IRIS = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "iris")
TOTAL, RATE = 100_000, 177


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "thesis.jsonl"
    write_jsonl(str(path), ThesisStream.from_csv(os.path.join(IRIS, "train.csv"), total=TOTAL), rate_per_s=RATE)
    return path


def stage_at(t_ms: int) -> str:
    start = ev.rfc3339_to_ms(ev.ms_to_rfc3339(1_767_225_600_000))
    i = int((t_ms - start) / (1000 / RATE))
    return stage_names()[min(max(i, 0) * 5 // TOTAL, 4)]


@pytest.mark.parametrize("alerts", [
    {"consecutiveWindows": 1}, {"consecutiveWindows": 2},
    {"sequential": {"method": "cusum"}}, {"sequential": {"method": "pageHinkley"}},
], ids=["consecutive-1", "consecutive-2", "cusum", "page-hinkley"])
def test_alerts_fire_in_the_drift_stage_only(tmp_path, stream_file, alerts):
    doc = yaml.safe_load(open(os.path.join(IRIS, "monitor.yaml")))
    doc["spec"]["baseline"] = {"file": os.path.abspath(os.path.join(IRIS, "baseline.json"))}
    doc["spec"]["alerts"] = {"minWindowCount": 100, "cooldown": "30s", **alerts}
    # With 2,655 instances per window T2 detects mean shifts of a few hundredths of a standard
    # deviation (the outlier stages make such shifts); 1000 asks for a Mahalanobis shift of the
    # mean above sqrt(1000/2655) = 0.6 (the drift stage's is about 2.1).
    doc["spec"]["drift"].update(hotelling={"threshold": 1000, "showAll": True})
    monitor = tmp_path / "monitor.yaml"
    monitor.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out.jsonl"
    assert cli_main(["replay", str(monitor), "--input", str(stream_file), "--output", str(out), "--quiet"]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    alerts_seen = [e["data"] for e in events if e["type"] == ev.DRIFT_DETECTED]
    stages = [(stage_at(a["window"]["startMs"]), stage_at(a["window"]["endMs"] - 1)) for a in alerts_seen]
    assert alerts_seen and all("drift" in pair for pair in stages), stages
    assert any(pair == ("drift", "drift") for pair in stages)
    # The multivariate mean shift flags every window inside the drift stage and none elsewhere.
    hotelling = {}
    for e in events:
        if e["type"] == ev.DRIFT_MEASURED:
            w = e["data"]["window"]
            first, last = stage_at(w["startMs"]), stage_at(w["endMs"] - 1)
            if first == last:
                hotelling.setdefault(first, []).append(e["data"]["multivariate"]["hotelling"]["drifted"])
    assert all(hotelling["drift"]) and len(hotelling["drift"]) >= 5
    assert not any(v for stage, values in hotelling.items() if stage != "drift" for v in values), hotelling
