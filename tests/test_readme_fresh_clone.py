"""The README tried as a new user would: a fresh `git clone`, then its documented commands.

The clone has no .venv, so the commands run with this interpreter (its pinned packages) and the
clone first on PYTHONPATH: the code and files exercised are the clone's. `run` gets a free port
(8080 may be taken on a shared machine) and is stopped with Ctrl-C once it served the README's
curl request.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
MM = ".venv/bin/modelmonitor"


def readme_commands(text: str) -> list[list[str]]:
    """Every shell command of the README's bash blocks, continuation lines joined, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line:
                commands.append(shlex.split(line))
    return commands


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if not (ROOT / ".git").exists():
        pytest.fail("the repository is not a git checkout: cannot clone it")
    target = tmp_path_factory.mktemp("fresh") / "modelmonitor"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True, timeout=120)
    assert not (target / ".venv").exists()
    return target


def run_in(clone: Path, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(clone))
    env.pop("PYTHONHOME", None)
    return subprocess.run([sys.executable, "-m", "modelmonitor.tools.cli", *args], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_the_clone_imports_its_own_code(clone):
    env = dict(os.environ, PYTHONPATH=str(clone))
    done = subprocess.run([sys.executable, "-c", "import modelmonitor, state; print(modelmonitor.__file__, "
                           "state.__file__)"], cwd=clone, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert all(path.startswith(str(clone)) for path in done.stdout.split())


def test_docs_stand_alone(clone):
    for path in [clone / "README.md", *sorted((clone / "docs").glob("*.md"))]:
        text = path.read_text()
        for needle in ("DESIGN", "../shared", "§"):
            assert needle not in text, f"{path.name} mentions {needle!r}"
        for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", text):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_readme_commands_work_from_a_fresh_clone(clone):
    text = (clone / "README.md").read_text()
    commands = [c for c in readme_commands(text) if c[0] == MM]
    ran = []
    for command in commands:
        args = command[1:]
        if args[0] == "run":
            continue                         # long-running: tried below
        done = run_in(clone, args)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (command, done.stderr)
        ran.append(args[0])
    assert {"baseline", "validate", "replay", "report"} <= set(ran), ran
    # What the commands claim to have written is there and well formed.
    replay = next(c for c in commands if c[1] == "replay")
    events = clone / replay[replay.index("--output") + 1]
    types = {json.loads(line)["type"] for line in events.read_text().splitlines()}
    assert {"io.modelmonitor.window.closed", "io.modelmonitor.drift.measured"} <= types
    report = next(c for c in commands if c[1] == "report")
    out = clone / report[report.index("--output") + 1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["monitors"]["iris"]["windows"] >= 10
    assert summary["monitors"]["iris"]["latencyMs"] == {}      # a replay has no wall clock
    assert len(list(out.glob("*.png"))) >= 5
    # The GitOps and conversion commands the README names.
    rendered = run_in(clone, ["render", "examples/iris/monitor.yaml"])
    assert rendered.returncode == 0 and "kn func build" in rendered.stdout, rendered.stderr
    converted = run_in(clone, ["convert", "examples/iris/thesis-monitor.yaml"])
    assert converted.returncode == 0, converted.stderr


def test_readme_run_and_curl_from_a_fresh_clone(clone, tmp_path):
    text = (clone / "README.md").read_text()
    commands = readme_commands(text)
    run_args = next(c for c in commands if c[:2] == [MM, "run"])[1:]
    curl = next(c for c in commands if c[0] == "curl")
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    # The run keeps its broker log under $XDG_STATE_HOME: a folder of this test's, not $HOME's.
    env = dict(os.environ, PYTHONPATH=str(clone), TMPDIR=str(temp), XDG_STATE_HOME=str(tmp_path / "state-home"))
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "modelmonitor.tools.cli", *run_args, "--port", str(port),
                             "--metrics-port", "0"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and "is running" not in (tmp_path / "run.log").read_text():
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            time.sleep(0.3)
        assert "is running" in (tmp_path / "run.log").read_text()
        headers = {curl[i + 1].split(":", 1)[0]: curl[i + 1].split(":", 1)[1].strip()
                   for i, word in enumerate(curl) if word == "-H"}
        body = curl[curl.index("-d") + 1]
        url = next(w for w in curl if w.startswith("http://")).replace(":8080", f":{port}")
        answer = requests.post(url, data=body, headers=headers, timeout=10)
        assert answer.status_code == 202, answer.text
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert not list(temp.glob("modelmonitor-run-*"))         # the function logs' folder is gone
