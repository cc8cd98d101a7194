"""A folder named like one of the project's top-level packages in the working directory (a
`state/` folder is a likely one: `--state-dir state`) must not replace the package in the
function processes `modelmonitor run` starts, nor in the `modelmonitor` command.

The editable install finds `state` and `modelmonitor` through a finder that Python asks only
after sys.path, and `python -m` puts the working directory first on sys.path: there even an
empty `state/` would win (a namespace package). The function processes are started with `-P`.
"""
from __future__ import annotations

import os
import subprocess
import sys

import requests

from live_stack import FEATURES, now_ms, write_monitor
from modelmonitor.core import events as ev
from modelmonitor.core.events import Event
from modelmonitor.local.procs import FunctionProcess
from modelmonitor.local.redis_server import RedisServer, connect
from modelmonitor.runtime.wire import to_binary

DECOY = 'raise SystemExit("decoy {name} imported from the working directory")\n'


def decoy_dir(tmp_path):
    cwd = tmp_path / "cwd"
    for name in ("state", "modelmonitor"):
        (cwd / name).mkdir(parents=True)
        (cwd / name / "__init__.py").write_text(DECOY.format(name=name))
    return cwd


def test_the_decoy_would_be_imported_without_safe_path(tmp_path):
    """The control: Python without -P takes the working directory's `state`."""
    cwd = decoy_dir(tmp_path)
    done = subprocess.run([sys.executable, "-m", "state"], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert "decoy state imported" in done.stderr


def test_a_function_started_from_a_folder_holding_decoys_serves(tmp_path):
    cwd = decoy_dir(tmp_path)
    path = write_monitor(tmp_path / "monitor", duration="2s", watermark="1s", idle="1h")
    redis = RedisServer(durable=False).start()
    proc = FunctionProcess("aggregate", ["--role", "aggregate", "--threads", "2"], cwd=cwd, env={
        "MODELMONITOR_CONFIG": str(path), "MODELMONITOR_BASELINE": str(path.parent / "baseline.json"),
        "REDIS_URL": redis.url, "K_SINK": "http://127.0.0.1:9/"}, log_file=tmp_path / "aggregate.log")
    try:
        proc.start()      # with the decoys imported it exits at once and start() raises
        t = now_ms() - 1000
        headers, body = to_binary(Event(
            {"type": ev.INSTANCES, "source": "/modelmonitor/default/iris/ingest", "id": "iris/request/1/h"},
            {"monitor": "iris", "requestId": "1", "kind": "request", "eventTime": ev.ms_to_rfc3339(t),
             "eventTimeMs": t, "features": list(FEATURES), "instances": [[5.1, 3.5, 1.4, 0.2]]}))
        resp = requests.post(proc.url, data=body, headers=headers, timeout=30)
        assert resp.status_code == 202, resp.text
        # The real window store wrote the request's dedup id into Redis.
        assert any(b"iris" in key for key in connect(redis.url).keys("*"))
    finally:
        proc.stop()
        redis.cleanup()
    assert "decoy" not in (tmp_path / "aggregate.log").read_text()


def test_the_command_from_a_folder_holding_decoys(tmp_path):
    cwd = decoy_dir(tmp_path)
    path = write_monitor(tmp_path / "monitor")
    exe = os.path.join(os.path.dirname(sys.executable), "modelmonitor")
    done = subprocess.run([exe, "validate", str(path)], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "decoy" not in done.stderr + done.stdout
