"""The `modelmonitor` command as users run it: .venv/bin/modelmonitor in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRIS = os.path.join(ROOT, "examples", "iris")
EXE = os.path.join(os.path.dirname(sys.executable), "modelmonitor")


def mm(*args, cwd=None):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def monitor_with(tmp_path, mutate):
    doc = yaml.safe_load(open(os.path.join(IRIS, "monitor.yaml")))
    doc["spec"]["baseline"] = {"file": os.path.join(IRIS, "baseline.json")}
    mutate(doc["spec"])
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_validate_accepts_the_example():
    r = mm("validate", os.path.join(IRIS, "monitor.yaml"))
    assert r.returncode == 0, r.stderr
    assert "valid ModelMonitor 'iris'" in r.stdout and "15s tumbling" in r.stdout


@pytest.mark.parametrize("mutate,field", [
    (lambda s: s["window"].update(slide="20s"), "spec.window.slide"),
    (lambda s: s["drift"].update(bogus={"threshold": 1}), "spec.drift.bogus"),
    (lambda s: s.pop("baseline"), "spec.baseline"),
    (lambda s: s["schema"]["features"].append({"name": "sepal_width", "type": "numerical"}),
     "spec.schema.features[4].name"),
    (lambda s: s["window"].update(duration="15 parsecs"), "spec.window.duration"),
    (lambda s: s["drift"]["jensenShannon"].update(threshold=-1), "spec.drift.jensenShannon.threshold"),
    (lambda s: s.update(baseline={"file": "/nonexistent/baseline.json"}), "spec.baseline.file"),
])
def test_validate_names_the_offending_field(tmp_path, mutate, field):
    r = mm("validate", monitor_with(tmp_path, mutate))
    assert r.returncode == 1
    assert field in r.stderr, r.stderr


def test_baseline_command_matches_numpy(tmp_path):
    out = tmp_path / "b.json"
    r = mm("baseline", "--input", os.path.join(IRIS, "train.csv"), "--output", str(out), "--bins", "10")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    data = np.genfromtxt(os.path.join(IRIS, "train.csv"), delimiter=",", names=True, dtype=None, encoding="utf-8")
    x = data["petal_width"].astype(float)
    f = doc["features"]["petal_width"]
    assert f["stddev"] == pytest.approx(np.std(x, ddof=1))
    assert f["counts"] == np.histogram(x, bins=10, range=(x.min(), x.max()))[0].tolist()
    assert doc["features"]["species"]["type"] == "categorical"


@pytest.mark.parametrize("content,needle", [
    ("", "empty"),
    ("sepal_length,sepal_width,petal_length,petal_width\n", "no data rows"),
    ("sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,2,abc,4\n", "'abc'"),
])
def test_baseline_command_rejects_bad_files(tmp_path, content, needle):
    src = tmp_path / "train.csv"
    src.write_text(content)
    r = mm("baseline", "--input", str(src), "--output", str(tmp_path / "b.json"),
           "--monitor", os.path.join(IRIS, "monitor.yaml"))
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr


def test_baseline_command_names_a_missing_column(tmp_path):
    r = mm("baseline", "--input", os.path.join(IRIS, "train.csv"), "--output", str(tmp_path / "b.json"),
           "--features", "sepal_length,petal_size")
    assert r.returncode != 0 and "petal_size" in r.stderr


def test_render_and_convert(tmp_path):
    r = mm("render", os.path.join(IRIS, "monitor.yaml"))
    assert r.returncode == 0, r.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(r.stdout) if d]
    assert kinds.count("Service") == 4 and "Trigger" in kinds and "PingSource" in kinds and "ConfigMap" in kinds
    r = mm("convert", os.path.join(IRIS, "thesis-monitor.yaml"))
    assert r.returncode == 0, r.stderr
    converted = tmp_path / "converted.yaml"
    converted.write_text(r.stdout)
    assert mm("validate", str(converted)).returncode == 0


def test_baseline_without_monitor_says_what_it_inferred(tmp_path):
    out = tmp_path / "b.json"
    r = mm("baseline", "--input", os.path.join(IRIS, "train.csv"), "--output", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    lines = {line.split(":")[0]: line for line in r.stdout.splitlines()}
    for name, entry in doc["features"].items():
        assert f"{name}: {entry['type']}, {entry['count']} values, {entry['missing']} missing" in lines[name]
    assert lines["species"].startswith("species: categorical")


def test_baseline_refuses_a_column_mixing_numbers_and_text_unless_told(tmp_path):
    rows = open(os.path.join(IRIS, "train.csv")).read().splitlines()
    header = rows[0].split(",")
    column = header.index("sepal_width")
    cells = rows[5].split(",")
    cells[column] = "abc"
    rows[5] = ",".join(cells)
    src = tmp_path / "train.csv"
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "b.json"
    r = mm("baseline", "--input", str(src), "--output", str(out))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "'sepal_width' mixes numbers" in r.stderr and "'abc'" in r.stderr and "row 6" in r.stderr, r.stderr
    assert not out.exists()
    r = mm("baseline", "--input", str(src), "--output", str(out), "--categorical", "sepal_width")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["features"]["sepal_width"]["type"] == "categorical"
    assert "sepal_width: categorical" in r.stdout


def test_every_option_has_help_and_shows_its_default():
    from modelmonitor.tools.cli import build_parser
    import argparse
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) >= {"validate", "baseline", "replay", "run", "render", "convert", "report", "demo", "bench"}
    for name, sub in commands.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
            shown = action.default not in (None, False, []) and action.option_strings
            if shown:
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.option_strings)
        spellings = [o for a in sub._actions for o in a.option_strings]
        assert "--out" not in spellings or "--output" in spellings, name   # one name, old one an alias
    assert "--output" in commands["report"].format_help() and "--output" in commands["replay"].format_help()


def test_version():
    from importlib.metadata import version
    r = mm("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"modelmonitor {version('modelmonitor')}"


def test_report_accepts_both_spellings_of_output(tmp_path):
    events = tmp_path / "e.jsonl"
    events.write_text("\n")
    for spelling in ("--out", "--output"):
        r = mm("report", str(events), spelling, str(tmp_path / spelling.strip("-")), "--quiet")
        assert r.returncode == 0, r.stderr
        assert (tmp_path / spelling.strip("-") / "index.html").is_file()
