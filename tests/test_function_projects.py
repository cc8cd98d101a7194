"""functions/<role>/ are Knative Functions projects a current `kn func` accepts: func.yaml valid
against knative-func's schema, a pyproject naming the distribution `function`, and a function
package exporting new() with the instanced func-python contract."""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import re
import sys
import tomllib

import yaml

from live_stack import ROOT
from modelmonitor.cluster.function_projects import ROLES, WHEEL_NAME
from schema_sources import func_yaml_errors


def test_every_func_yaml_validates_against_the_knative_func_schema():
    for role in ROLES:
        text = (ROOT / "functions" / role / "func.yaml").read_text(encoding="utf-8")
        func = yaml.safe_load(text)
        assert func_yaml_errors(func) == [], role
        assert func["specVersion"] == "0.36.0" and func["runtime"] == "python", role
        assert func["name"] == f"modelmonitor-{role}"
        assert isinstance(func["created"], str)           # quoted: unquoted, YAML makes it a datetime
        # No builder named: the default (host for python) works, and so does --builder pack.
        assert "builder" not in func.get("build", {})
        envs = {e["name"]: e["value"] for e in func["run"]["envs"]}
        assert envs["MODELMONITOR_CONFIG"] == "/etc/modelmonitor/monitor.yaml"
        assert ("REDIS_URL" in envs) == (role in ("aggregate", "drift"))
        assert func["deploy"]["healthEndpoints"] == {"liveness": "/health/liveness",
                                                      "readiness": "/health/readiness"}
        # The check is real: the unquoted timestamp the schema README warns about fails.
        broken = yaml.safe_load(re.sub(r'created: "([^"]+)"', r"created: \1", text))
        assert func_yaml_errors(broken)


def test_pyproject_names_the_distribution_function_and_vendors_modelmonitor():
    for role in ROLES:
        with open(ROOT / "functions" / role / "pyproject.toml", "rb") as fh:
            project = tomllib.load(fh)
        assert project["project"]["name"] == "function"
        assert project["project"]["dependencies"] == [f"modelmonitor @ {{root:uri}}/vendor/{WHEEL_NAME}"]
        assert project["build-system"]["build-backend"] == "hatchling.build"
        assert project["tool"]["hatch"]["metadata"]["allow-direct-references"] is True


def _load(role: str):
    name = f"function_{role}"
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "functions" / role / "function" / "__init__.py",
        submodule_search_locations=[str(ROOT / "functions" / role / "function")])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_new_returns_an_instance_with_the_func_python_contract():
    for role in ROLES:
        module = _load(role)
        assert module.new.__name__ == "new"                  # func_python.cloudevent.serve checks it
        instance = module.new()
        assert instance.role == role
        assert inspect.iscoroutinefunction(instance.handle)
        assert list(inspect.signature(instance.handle).parameters) == ["scope", "receive", "send"]
        for hook in ("start", "stop", "alive", "ready"):
            assert callable(getattr(instance, hook))
        assert list(inspect.signature(instance.start).parameters) == ["cfg"]
        assert instance.alive() == (True, "OK")
        assert instance.ready() == (False, "starting")     # not ready before start(cfg)


def test_start_takes_its_configuration_from_cfg_not_the_environment(tmp_path, monkeypatch):
    from live_stack import write_monitor
    monitor = write_monitor(tmp_path)
    monkeypatch.setenv("MODELMONITOR_CONFIG", str(tmp_path / "missing.yaml"))   # must not be read
    instance = _load("ingest").new()
    instance.start({"MODELMONITOR_CONFIG": str(monitor), "MODELMONITOR_BASELINE": str(tmp_path / "baseline.json")})
    try:
        assert instance.ready() == (True, "OK") and instance.handler.mon.name == "iris"
    finally:
        instance.stop()
    assert asyncio.iscoroutinefunction(instance.handle)


def test_no_legacy_parliament_project_at_the_root():
    # The root is no Knative Functions project: each function has its own folder.
    for name in ("func.py", "func.yaml", "Procfile"):
        assert not (ROOT / name).exists(), name
