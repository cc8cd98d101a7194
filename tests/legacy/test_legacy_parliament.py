"""The legacy parliament runtime (functions/legacy/, modelmonitor.runtime.legacy_parliament) in its
own environment, as the pack / s2i builders of kn func make its image (opt in: `make test-legacy`).

What the builders do, and what this test does:
1. ``make functions``: the modelmonitor wheel is unpacked into the project's vendor/
   (:func:`~modelmonitor.cluster.function_projects.vendor_legacy`, on a copy of the folder);
2. ``pip install -r requirements.txt``: parliament-functions 0.1.0, the CloudEvents SDK 1.x and
   modelmonitor's run-time dependencies, into a virtual environment of this machine's Python
   3.11, cached under ~/.cache/modelmonitor/legacy-parliament (``MODELMONITOR_TEST_CACHE``),
   keyed by requirements.txt and constraints.txt (without its SDK 2.x and func-python pins);
3. the Procfile's ``python -m parliament .`` in the project folder, parliament's own entry point.
   It listens on 0.0.0.0:8080 whatever the environment says, so tests/legacy/driver.py runs it
   in a private network namespace (``unshare -rn``) and posts the requests there.

The requests are real KServe logger events written with the CloudEvents SDK 2.x (this process),
through ingest and outlier, then the instances events through aggregate (with a private
redis-server in the namespace) until it POSTs a window.closed to K_SINK, and that window through
drift; the replies and what reaches K_SINK are read back with the SDK 2.x and checked against
NumPy and SciPy.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from live_stack import FEATURES, ROOT, write_monitor
from modelmonitor.cluster.function_projects import build_wheel, vendor_legacy
from modelmonitor.core import events as ev
from modelmonitor.core.events import Event
from modelmonitor.runtime import wire

LEGACY = ROOT / "functions" / "legacy"
DRIVER = Path(__file__).resolve().parent / "driver.py"
CACHE = Path(os.environ.get("MODELMONITOR_TEST_CACHE") or Path.home() / ".cache" / "modelmonitor") \
    / "legacy-parliament"
#: Pins of constraints.txt that belong to the func-python runtime, not to this environment.
NOT_LEGACY = ("cloudevents==", "func-python==", "func_python==")


def _legacy_constraints(target: Path) -> Path:
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
             if not line.lower().startswith(NOT_LEGACY)]
    target.write_text("\n".join(lines) + "\n")
    return target


def _deps_key() -> str:
    h = hashlib.sha256()
    for path in (ROOT / "constraints.txt", LEGACY / "requirements.txt"):
        h.update(path.read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """(python of the legacy environment, the built project folder)."""
    work = tmp_path_factory.mktemp("legacy")
    project = work / "project"
    shutil.copytree(LEGACY, project, ignore=shutil.ignore_patterns("vendor", ".func", "__pycache__"))
    vendor_legacy(project, build_wheel(work / "wheel"))
    venv = CACHE / f"venv-{_deps_key()}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-c", str(_legacy_constraints(work / "constraints.txt")),
                        "-r", str(project / "requirements.txt")], check=True)
        (venv / ".complete").write_text(f"created in {time.monotonic() - t0:.0f} s\n")
    return python, project


def _namespace_prefix() -> list[str]:
    """``unshare -rn`` when this machine allows a private network namespace (port 8080 is then
    ours); otherwise nothing, and port 8080 must be free here."""
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True) if shutil.which("unshare") else None
    return ["unshare", "-rn"] if probe is not None and probe.returncode == 0 else []


def serve_and_post(legacy, role: str, conf: Path, messages: list[tuple[dict, bytes]], *,
                   redis: bool = False, wait_for: str | None = None) -> dict:
    python, project = legacy
    prefix = _namespace_prefix()
    job = {"project": str(project), "namespace": bool(prefix), "redis": redis, "wait_for": wait_for,
           "env": {"MODELMONITOR_ROLE": role, "MODELMONITOR_CONFIG": str(conf / "monitor.yaml"),
                   "MODELMONITOR_BASELINE": str(conf / "baseline.json"), "PYTHONDONTWRITEBYTECODE": "1"},
           "requests": [{"headers": h, "body": base64.b64encode(b).decode()} for h, b in messages]}
    done = subprocess.run([*prefix, str(python), str(DRIVER)], input=json.dumps(job).encode(),
                          capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = json.loads(done.stdout)
    assert "error" not in out, (out["error"], out["log"])
    assert out["exit"] in (0, 128 + 15), out["log"]           # parliament exits 143 on SIGTERM
    return out


def _event_of(message: dict) -> Event:
    return wire.from_http(message["headers"], base64.b64decode(message["body"]))


def _logger_event(rows: list, t_ms: int) -> Event:
    return Event({"type": ev.KSERVE_REQUEST, "source": "http://localhost:9081/", "id": str(uuid.uuid4()),
                  "time": ev.ms_to_rfc3339(t_ms), "datacontenttype": "application/json",
                  "inferenceservicename": "iris", "namespace": "default", "component": "predictor",
                  "endpoint": ""}, {"instances": rows})


def test_the_legacy_environment_has_the_sdk_1x_and_no_wire_module(legacy):
    python, project = legacy
    code = ("import sys, cloudevents, func; "
            "print(cloudevents.__version__, 'modelmonitor.runtime.wire' in sys.modules, "
            "'func_python' in sys.modules)")
    conf = project.parent / "conf-import"
    write_monitor(conf)
    done = subprocess.run([str(python), "-c", code], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "MODELMONITOR_ROLE": "ingest",
                               "MODELMONITOR_CONFIG": str(conf / "monitor.yaml"),
                               "MODELMONITOR_BASELINE": str(conf / "baseline.json")})
    assert done.returncode == 0, done.stderr[-2000:]
    version, wire_loaded, func_python_loaded = done.stdout.split()
    assert version.startswith("1.") and wire_loaded == "False" and func_python_loaded == "False"


def test_logger_events_through_parliament_ingest_and_outlier(legacy, tmp_path):
    conf = tmp_path / "conf"
    write_monitor(conf)
    now = time.time_ns() // 1_000_000
    normal = [[5.1, 3.5, 1.4, 0.2], [6.7, 3, 5.2, 2.3]]
    far = [[5.9, 3.0, 14.2, 9.5]]                              # petal sizes far beyond the baseline
    binary = _logger_event(normal, now - 50)
    structured = _logger_event(far, now - 40)
    bad = _logger_event([[5.1, "3.5", 1.4, 0.2]], now - 30)   # a numeric string: refused
    messages = [wire.to_binary(binary), wire.to_structured(structured), wire.to_binary(bad)]
    out = serve_and_post(legacy, "ingest", conf, messages)
    ok_binary, ok_structured, refused = out["replies"]

    for reply, sent, rows in ((ok_binary, binary, normal), (ok_structured, structured, far)):
        assert reply["status"] == 200, base64.b64decode(reply["body"])
        assert "ce-id" in reply["headers"]                     # parliament's binary-mode reply
        instances = _event_of(reply)
        assert instances["type"] == ev.INSTANCES and instances["monitor"] == "iris"
        # the oracle: the rows sent, as floats in feature order
        assert instances.data["instances"] == [[float(v) for v in r] for r in rows]
        assert instances.data["requestId"] == sent["id"]
        assert instances.data["eventTimeMs"] == ev.rfc3339_to_ms(sent["time"])

    assert refused["status"] == 400
    reason = json.loads(base64.b64decode(refused["body"]))["error"]
    assert "sepal_width" in reason and "'3.5' is not a number" in reason
    dead = [_event_of(m) for m in out["sink"]]                 # written by the SDK 1.x, read by 2.x
    assert [d["type"] for d in dead] == [ev.DEAD_LETTER]
    assert dead[0].data["reason"] == reason and bad["id"] in json.dumps(dead[0].data)

    # outlier, on the instances event ingest made of the far rows
    found = serve_and_post(legacy, "outlier", conf, [wire.to_binary(_event_of(ok_structured))])
    assert found["replies"][0]["status"] == 200
    detected = _event_of(found["replies"][0])
    assert detected["type"] == ev.OUTLIER_DETECTED
    flagged = {o["feature"] for o in detected.data["outliers"]}
    assert {"petal_length", "petal_width"} <= flagged <= set(FEATURES)


def test_a_request_without_a_cloudevent_is_refused_with_a_reason(legacy, tmp_path):
    conf = tmp_path / "conf"
    write_monitor(conf)
    out = serve_and_post(legacy, "ingest", conf, [({"content-type": "application/json"}, b'{"instances": [[1]]}')])
    reply = out["replies"][0]
    assert reply["status"] == 400
    assert "not a CloudEvent" in json.loads(base64.b64decode(reply["body"]))["error"]
    assert [_event_of(m)["type"] for m in out["sink"]] == [ev.DEAD_LETTER]


def test_aggregate_closes_a_window_and_drift_measures_it(legacy, tmp_path):
    """The Redis roles on parliament: aggregate (group commit, closer thread, window.closed POSTed
    to K_SINK with the SDK 1.x) and drift (drift.measured as the reply), each with a private
    redis-server in its namespace."""
    conf = tmp_path / "conf"
    write_monitor(conf, duration="2s", watermark="500ms", idle="60s")
    now = time.time_ns() // 1_000_000
    t0 = (now // 2000) * 2000 - 6000 + 100                  # inside a window that ended 4 s ago
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    from modelmonitor.handlers import Monitor, ingest
    mon = Monitor.from_files(str(conf / "monitor.yaml"), str(conf / "baseline.json"))
    instances = [ingest(mon, _logger_event(rows, t), now) for t in (t0, t0 + 10, t0 + 4000)]
    out = serve_and_post(legacy, "aggregate", conf, [wire.to_binary(e) for e in instances]
                         + [wire.to_binary(instances[1])],           # a redelivery
                         redis=True, wait_for=ev.WINDOW_CLOSED)
    assert [r["status"] for r in out["replies"]] == [202, 202, 202, 202], out["log"]
    closed = [e for e in map(_event_of, out["sink"]) if e["type"] == ev.WINDOW_CLOSED
              and e.data["window"]["startMs"] == t0 - 100]
    assert closed, ([_event_of(m)["type"] for m in out["sink"]], out["log"])
    window = closed[0].data
    assert window["count"] == 2 * len(rows)                 # the redelivery was not counted twice
    # the oracle: NumPy over the six rows of the window
    import numpy as np
    sample = np.array(rows + rows)
    for j, name in enumerate(FEATURES):
        stats = window["features"][name]
        assert stats["count"] == 6 and stats["min"] == sample[:, j].min() and stats["max"] == sample[:, j].max()
        assert abs(stats["mean"] - sample[:, j].mean()) < 1e-12

    measured = serve_and_post(legacy, "drift", conf, [wire.to_binary(closed[0])], redis=True)
    reply = measured["replies"][0]
    assert reply["status"] == 200, base64.b64decode(reply["body"])
    drift = _event_of(reply)
    assert drift["type"] == ev.DRIFT_MEASURED and drift.data["window"] == window["window"]
    assert set(drift.data["features"]) == set(FEATURES) and drift.data["count"] == 6
    # the oracle for one score: SciPy's Jensen-Shannon distance, squared, on the smoothed bins
    from scipy.spatial.distance import jensenshannon
    base = json.loads((conf / "baseline.json").read_text())["features"]["petal_length"]
    eps = 1e-6
    win = np.array(window["features"]["petal_length"]["histogram"]["counts"], dtype=float)
    ref = np.array([0.0, *base["counts"], 0.0])
    p, q = (win + eps) / (win.sum() + win.size * eps), (ref + eps) / (ref.sum() + ref.size * eps)
    js = drift.data["features"]["petal_length"]["jensenShannon"]["value"]
    assert abs(js - jensenshannon(p, q, base=2) ** 2) < 1e-9
