"""A user's mistake gives exit status 2 and one line on stderr naming the problem: no traceback,
and nothing started (no Redis, no functions, no "is running")."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRIS = os.path.join(ROOT, "examples", "iris")
MONITOR = os.path.join(IRIS, "monitor.yaml")
BIN = os.path.dirname(sys.executable)
EXE = os.path.join(BIN, "modelmonitor")


def mm(*args, env=None, timeout=60):
    started = time.monotonic()
    done = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout, env=env)
    done.seconds = time.monotonic() - started
    return done


def assert_one_line_error(done, *needles):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("modelmonitor "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "is running" not in done.stdout


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def requests_file(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps({"specversion": "1.0", "type": "org.kubeflow.serving.inference.request",
                                "source": "/x", "id": "1", "time": "2026-11-22T10:00:01Z",
                                "inferenceservicename": "iris",
                                "data": {"instances": [[5.1, 3.5, 1.4, 0.2]]}}) + "\n")
    return str(path)


def test_replay_with_a_missing_baseline(tmp_path, requests_file):
    missing = str(tmp_path / "nope.json")
    done = mm("replay", MONITOR, "--input", requests_file, "--output", str(tmp_path / "o.jsonl"),
              "--baseline", missing)
    assert_one_line_error(done, missing, "no such file")


def test_replay_with_a_baseline_whose_types_differ(tmp_path, requests_file):
    doc = json.load(open(os.path.join(IRIS, "baseline.json")))
    doc["features"]["sepal_length"] = {"type": "categorical", "count": 3, "missing": 0, "frequencies": {"a": 3}}
    keep = [i for i, name in enumerate(doc["covariance"]["features"]) if name != "sepal_length"]
    doc["covariance"] = {"features": [doc["covariance"]["features"][i] for i in keep],
                         "matrix": [[doc["covariance"]["matrix"][i][j] for j in keep] for i in keep]}
    baseline = tmp_path / "categorical.json"
    baseline.write_text(json.dumps(doc))
    done = mm("replay", MONITOR, "--input", requests_file, "--output", str(tmp_path / "o.jsonl"),
              "--baseline", str(baseline))
    assert_one_line_error(done, "sepal_length", "numerical", "categorical")


def test_report_on_a_missing_file(tmp_path):
    missing = str(tmp_path / "events.jsonl")
    done = mm("report", missing, "--output", str(tmp_path / "r"))
    assert_one_line_error(done, missing, "no such file")
    assert not (tmp_path / "r").exists()


def test_run_subscribe_with_a_missing_file_fails_before_starting_anything(tmp_path):
    missing = str(tmp_path / "alerts.yaml")
    done = mm("run", MONITOR, "--port", "0", "--metrics-port", "0", "--subscribe", missing)
    assert_one_line_error(done, "--subscribe", missing, "no such file")
    assert done.seconds < 15        # found before Redis and four function processes start


def test_run_on_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = mm("run", MONITOR, "--port", str(port), "--metrics-port", "0")
    assert_one_line_error(done, f"--port {port}", "already in use")


@pytest.mark.parametrize("command", ["run", "replay"])
def test_no_redis_server_on_the_path(tmp_path, requests_file, command):
    assert shutil.which("redis-server") is not None
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = dict(os.environ, PATH=str(empty_bin))          # the venv's entry point names its python
    extra = (["--port", "0", "--metrics-port", "0"] if command == "run"
             else ["--input", requests_file, "--output", str(tmp_path / "o.jsonl"), "--engine", "per-event"])
    done = mm(command, MONITOR, *extra, env=env)
    assert_one_line_error(done, "redis-server", "make redis", "--redis")


def test_default_replay_needs_no_redis_server(tmp_path, requests_file):
    """The columnar engine keeps its state in process."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    out = tmp_path / "o.jsonl"
    done = mm("replay", MONITOR, "--input", requests_file, "--output", str(out), "--quiet",
              env=dict(os.environ, PATH=str(empty_bin)))
    assert done.returncode == 0, done.stderr
    assert out.read_text().count("io.modelmonitor.window.closed") >= 1


def test_replay_with_an_unreachable_redis(tmp_path, requests_file):
    url = f"redis://127.0.0.1:{unused_port()}/0"
    done = mm("replay", MONITOR, "--input", requests_file, "--output", str(tmp_path / "o.jsonl"), "--redis", url)
    assert_one_line_error(done, "--redis", url, "cannot reach Redis")


def test_run_with_an_unreachable_redis_fails_fast(tmp_path):
    url = f"redis://:secret@127.0.0.1:{unused_port()}/0"
    done = mm("run", MONITOR, "--port", "0", "--metrics-port", "0", "--redis", url)
    assert_one_line_error(done, "--redis", "cannot reach Redis")
    assert "secret" not in done.stderr                   # the password is not echoed
    assert done.seconds < 15


def test_make_install_advice_is_a_real_target():
    """The advice names `make redis`: it must exist, and run even when the install stamp does."""
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    assert "\nredis:" in makefile
    done = subprocess.run(["make", "-n", "-C", ROOT, "redis"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
