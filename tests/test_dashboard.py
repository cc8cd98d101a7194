"""docs/grafana-dashboard.json: valid, current Grafana JSON whose panels query every metric the
functions export (modelmonitor/metrics.py) under the names Prometheus actually sees."""
from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from modelmonitor.runtime import metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for p in panels:
        out.append(p)
        out += all_panels(p.get("panels", []))
    return out


def expressions(dashboard: dict) -> list[str]:
    return [t["expr"] for p in all_panels(dashboard["panels"]) for t in p.get("targets", [])]


def defined_metrics() -> list[MetricWrapperBase]:
    return [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]


def test_dashboard_is_valid_current_grafana_json_with_a_prometheus_datasource_variable():
    d = load()
    assert d["schemaVersion"] >= 36 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = [v for v in variables.values() if v["type"] == "datasource"]
    assert len(ds) == 1 and ds[0]["query"] == "prometheus"
    ref = "${%s}" % ds[0]["name"]
    panels = all_panels(d["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": ref}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == ref and t["expr"].strip()
    # Panels do not overlap.
    cells = set()
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another at {(x, y)}"
                cells.add((x, y))


def test_every_expression_is_balanced_and_uses_known_variables():
    d = load()
    names = {v["name"] for v in d["templating"]["list"]} | {"__rate_interval", "__range", "__interval"}
    for expr in expressions(d):
        depth = 0
        for ch in expr:
            depth += ch in "({["
            depth -= ch in ")}]"
            assert depth >= 0, expr
        assert depth == 0, expr
        for var in re.findall(r"\$(\w+)", expr):
            assert var in names, (var, expr)
        # rate() and increase() need a range; histogram_quantile needs buckets grouped by le.
        for fn in re.findall(r"\b(rate|increase)\(([^()\[]+)\[", expr):
            assert fn[1].strip().startswith("modelmonitor_"), expr
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and re.search(r"by \((\w+, )*le\)", expr), expr


def test_every_metric_in_metrics_py_is_on_the_dashboard_under_its_exposed_name():
    text = "\n".join(expressions(load()))
    defined = defined_metrics()
    assert len(defined) >= 12
    for m in defined:
        name = m._name
        if isinstance(m, Counter):
            assert re.search(rf"\b{name}_total\b", text), name
        elif isinstance(m, Histogram):
            bucket = rf"histogram_quantile\(0\.99, sum by \(le\) \(rate\({name}_bucket\b"
            assert re.search(bucket, text), f"{name}: no p99 panel"
            if name.endswith("_latency_seconds") or name == "modelmonitor_redis_seconds":
                assert re.search(bucket.replace("0\\.99", "0\\.5"), text), f"{name}: no p50 panel"
        elif isinstance(m, Gauge):
            assert re.search(rf"\b{name}\b", text), name
        else:
            raise AssertionError(f"{name}: a metric type the dashboard test does not know")


def test_every_series_the_dashboard_queries_is_exported():
    """Each metric name in a panel is in the functions' exposition (labelled metrics touched
    once, as a running function would) or in what `modelmonitor run`'s collector exports for
    a real local broker (run_metrics.py)."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from modelmonitor.local.broker import LocalBroker, load_triggers
    from modelmonitor.local.run_metrics import RunCollector
    metrics.EVENTS_IN.labels(role="ingest", outcome="ok")
    metrics.EVENTS_OUT.labels(role="ingest", type="io.modelmonitor.inference.instances")
    pattern = re.compile(r"^(modelmonitor_\w+?)(?:\{| )", re.M)
    exposed = set(pattern.findall(generate_latest().decode()))
    broker = LocalBroker(load_triggers([{"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                                         "metadata": {"name": "t"}, "spec": {
                                             "broker": "default", "subscriber": {"uri": "http://127.0.0.1:9/"}}}]))
    broker.start()
    try:
        registry = CollectorRegistry()
        registry.register(RunCollector(SimpleNamespace(pools={}, broker=broker)))
        from_run = set(pattern.findall(generate_latest(registry).decode()))
    finally:
        broker.stop()
    assert {"modelmonitor_broker_delivered_total", "modelmonitor_broker_pending"} <= from_run
    queried = set(re.findall(r"\b(modelmonitor_\w+)", "\n".join(expressions(load()))))
    missing = queried - exposed - from_run
    assert not missing, missing
