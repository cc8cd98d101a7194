"""What `kn func build` does with functions/<role>/, reproduced from its documented behaviour
(knative/func's python host builder and scaffolding), and the four images' processes chained
over HTTP.

What the host builder does, and what this test does for each role:
1. vendor step (`make functions`): the modelmonitor wheel goes into the project's vendor/;
2. scaffolding: a service whose main imports ``new`` (else ``handle``) from the distribution
   ``function`` and calls ``func_python.cloudevent.serve`` with it (written here, not copied);
3. ``pip install`` of a service depending on ``func-python==0.8.1`` and ``function @ <dir>``
   (the function folder): the folder must build as the distribution ``function`` and its
   dependency on the vendored wheel must resolve; the function goes into ``lib/`` (the builder
   uses ``pip install . --target lib`` and ``PYTHONPATH=<build>/lib``);
4. run ``python service/main.py`` with ``LISTEN_ADDRESS``.

What differs, to keep `make test` fast: the third-party dependencies are resolved once into a
cached virtual environment (under .cache/, keyed by the dependency files, pinned by
constraints.txt) instead of into each image's lib/; modelmonitor's wheel is rebuilt and
reinstalled on every run. No container image is built and the Python is this machine's 3.11.

The chain: real KServe logger events (binary and structured mode, built with the CloudEvents
SDK 2.x ``cloudevents.core`` API) go to ingest; its replies go to outlier and aggregate; the
windows aggregate closes (POSTed to K_SINK) go to drift; the events that come out are checked.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import requests
from cloudevents.core.bindings.http import (HTTPMessage, from_http_event, to_binary_event,
                                            to_structured_event)
from cloudevents.core.v1.event import CloudEvent

from event_sink import EventSink
from live_stack import FEATURES, ROOT, write_monitor
from modelmonitor.cluster.function_projects import ROLES, WHEEL_NAME, build_wheel
from modelmonitor.core import events as ev
from modelmonitor.local.redis_server import RedisServer, free_port

CACHE = Path(os.environ.get("MODELMONITOR_TEST_CACHE", ROOT / ".cache")) / "kn-func-build"
FUNC_PYTHON = "func-python==0.8.1"

SERVICE_MAIN = '''\
"""Scaffolding as kn func writes it for an instanced CloudEvents function."""
import logging
from func_python.cloudevent import serve

logging.basicConfig(level=logging.INFO)
try:
    from function import new as handler
except ImportError:
    from function import handle as handler

if __name__ == "__main__":
    serve(handler)
'''


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                   check=True, cwd=ROOT)


def _deps_key() -> str:
    h = hashlib.sha256()
    for path in [ROOT / "constraints.txt", ROOT / "pyproject.toml",
                 *sorted((ROOT / "functions").glob("*/pyproject.toml"))]:
        h.update(path.read_bytes())
    h.update(FUNC_PYTHON.encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each role's function installed as kn func build does; returns (python, {role: lib dir})."""
    work = tmp_path_factory.mktemp("kn-func-build")
    wheel = build_wheel(work / "wheel")
    projects = {}
    for role in ROLES:                                   # the build context: a copy of the folder
        project = work / "f" / role
        shutil.copytree(ROOT / "functions" / role, project, ignore=shutil.ignore_patterns("vendor", ".func"))
        (project / "vendor").mkdir()
        shutil.copy2(wheel, project / "vendor" / WHEEL_NAME)
        projects[role] = project
    venv = CACHE / f"venv-{_deps_key()}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # The service's dependencies: func-python and the function, whose own dependency is the
        # vendored modelmonitor wheel (resolved through {root:uri}).
        _pip(python, "-c", str(ROOT / "constraints.txt"), FUNC_PYTHON, f"function @ {projects['ingest'].as_uri()}")
        (venv / ".complete").write_text("ok")
    _pip(python, "--no-deps", "--force-reinstall", str(wheel))
    libs = {}
    for role, project in projects.items():
        lib = work / "build" / role / "lib"
        _pip(python, "--no-deps", "--target", str(lib), f"function @ {project.as_uri()}")
        (work / "build" / role / "service").mkdir(parents=True)
        (work / "build" / role / "service" / "main.py").write_text(SERVICE_MAIN)
        libs[role] = lib
    return python, libs


def test_each_project_installs_as_the_distribution_function(built):
    _, libs = built
    for role, lib in libs.items():
        dist = [p.name for p in lib.glob("*.dist-info")]
        assert dist == ["function-0.1.0.dist-info"], (role, dist)
        assert f'MonitorFunction("{role}")' in (lib / "function" / "func.py").read_text()


class _Service:
    def __init__(self, python: Path, lib: Path, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = open(lib.parent / "service.log", "wb")
        self.proc = subprocess.Popen(
            [str(python), str(lib.parent / "service" / "main.py")], cwd=lib.parent, stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "PYTHONPATH": str(lib), "LISTEN_ADDRESS": f"127.0.0.1:{self.port}"})

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.log.name, Path(self.log.name).read_text()[-2000:])
            try:
                with urllib.request.urlopen(self.url + "health/readiness", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.url} not ready: {Path(self.log.name).read_text()[-2000:]}")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=15)
        finally:
            self.log.close()


@pytest.fixture(scope="module")
def services(built, tmp_path_factory):
    python, libs = built
    conf = tmp_path_factory.mktemp("monitor")
    monitor = write_monitor(conf, duration="2s", watermark="500ms", idle="60s")
    import yaml
    doc = yaml.safe_load(monitor.read_text())
    doc["spec"]["alerts"] = {"minWindowCount": 5, "consecutiveWindows": 1, "cooldown": "1s"}
    monitor.write_text(yaml.safe_dump(doc, sort_keys=False))
    redis = RedisServer(durable=False).start()
    sink = EventSink()
    env = {"MODELMONITOR_CONFIG": str(monitor), "MODELMONITOR_BASELINE": str(conf / "baseline.json"),
           "REDIS_URL": redis.url, "K_SINK": sink.url}
    started = {role: _Service(python, libs[role], env) for role in ROLES}
    try:
        for s in started.values():
            s.wait_ready()
        yield started, sink
    finally:
        codes = {role: s.stop() for role, s in started.items()}
        redis.cleanup()
        sink.server.shutdown()
    assert codes == {role: 0 for role in ROLES}, codes       # SIGTERM: a clean func-python shutdown


def _post(url: str, msg: HTTPMessage) -> requests.Response:
    return requests.post(url, data=msg.body, headers=msg.headers, timeout=30)


def _reply(resp: requests.Response):
    return from_http_event(HTTPMessage(headers={k.lower(): v for k, v in resp.headers.items()},
                                       body=resp.content))


def _logger_event(rows, t_ms: int) -> CloudEvent:
    from datetime import datetime, timezone
    return CloudEvent(attributes={
        "type": ev.KSERVE_REQUEST, "source": "http://localhost:9081/", "id": str(uuid.uuid4()),
        "time": datetime.fromtimestamp(t_ms / 1000, tz=timezone.utc), "datacontenttype": "application/json",
        "inferenceservicename": "iris", "namespace": "default", "component": "predictor", "endpoint": ""},
        data={"instances": rows})


def test_health_endpoints_answer(services):
    started, _ = services
    for role, s in started.items():
        for probe in ("liveness", "readiness"):
            resp = requests.get(f"{s.url}health/{probe}", timeout=5)
            assert resp.status_code == 200 and resp.text == "OK", (role, probe, resp.text)


def test_logger_events_flow_from_ingest_to_a_drift_alert(services):
    started, sink = services
    now = time.time_ns() // 1_000_000
    t0 = (now // 2000) * 2000 + 100                       # inside one 2 s window
    normal = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    drifted = [[r[0], r[1], r[2] + 6.0, r[3] + 3.0] for r in normal]    # far outside the baseline
    replies = []
    for i in range(4):                                    # binary and structured, as SDK 2.x writes them
        logger = _logger_event(drifted, t0 + i * 10)
        msg = to_binary_event(logger) if i % 2 == 0 else to_structured_event(logger)
        resp = _post(started["ingest"].url, msg)
        assert resp.status_code == 200, resp.text
        reply = _reply(resp)
        assert reply.get_type() == ev.INSTANCES and reply.get_extension("monitor") == "iris"
        assert reply.get_data()["instances"] == drifted and reply.get_data()["requestId"] == logger.get_id()
        assert reply.get_data()["eventTimeMs"] == t0 + i * 10
        replies.append(reply)
    # outlier: the drifted rows are far outside the baseline's range.
    resp = _post(started["outlier"].url, to_binary_event(replies[0]))
    assert resp.status_code == 200, resp.text
    found = _reply(resp)
    assert found.get_type() == ev.OUTLIER_DETECTED
    assert {o["feature"] for o in found.get_data()["outliers"]} >= {"petal_length", "petal_width"}
    # aggregate: every instances event is acknowledged; a redelivery is recognised.
    for reply in replies + [replies[1]]:
        assert _post(started["aggregate"].url, to_binary_event(reply)).status_code == 202
    # An event two windows later moves the watermark past the first window: it closes.
    later = _reply(_post(started["ingest"].url, to_binary_event(_logger_event(normal, t0 + 4000))))
    assert _post(started["aggregate"].url, to_structured_event(later)).status_code == 202
    closed = sink.wait_for(lambda s: [e for e in s.of_type(ev.WINDOW_CLOSED)
                                      if e.data["window"]["startMs"] == t0 - 100], timeout=30)
    assert closed, [e["type"] for e in sink.events]
    window = closed[0]
    assert window.data["count"] == 4 * len(drifted)        # the redelivery was not counted twice
    assert window.data["features"]["petal_length"]["count"] == 12
    # drift: the window as the broker delivers it; drift.measured is the reply, the alert goes to K_SINK.
    from modelmonitor.runtime.wire import to_binary
    headers, body = to_binary(window)
    resp = requests.post(started["drift"].url, data=body, headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    measured = _reply(resp)
    assert measured.get_type() == ev.DRIFT_MEASURED
    scores = {(m["feature"], m["metric"]): m for m in measured.get_data()["metrics"]} \
        if isinstance(measured.get_data().get("metrics"), list) else None
    assert json.dumps(measured.get_data()).count("petal_length") >= 1
    alerts = sink.wait_for(lambda s: s.of_type(ev.DRIFT_DETECTED), timeout=15)
    assert alerts and alerts[0].data["window"]["startMs"] == t0 - 100, scores
