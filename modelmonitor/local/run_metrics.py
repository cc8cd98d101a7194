"""One Prometheus endpoint for everything `modelmonitor run` starts.

Each function process serves its own metrics on its metrics port (``MODELMONITOR_METRICS_PORT``,
as on a cluster, where Prometheus scrapes every pod). Locally, this collector scrapes them on demand, adds ``function`` and
``replica`` labels, and adds the local broker's delivery counters, so one scrape target
(``http://127.0.0.1:<metrics port>/metrics``) feeds the Grafana dashboard.
"""
from __future__ import annotations

import logging

import requests
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("modelmonitor.run")


class RunCollector:
    def __init__(self, run):
        self.run = run
        self.session = requests.Session()

    def collect(self):
        merged: dict[str, Metric] = {}
        for role, pool in self.run.pools.items():
            for i, proc in enumerate(pool):
                try:
                    text = self.session.get(proc.metrics_url, timeout=2).text
                except requests.RequestException as exc:
                    log.debug("metrics of %s unavailable: %s", proc.name, exc)
                    continue
                for family in text_string_to_metric_families(text):
                    target = merged.get(family.name)
                    if target is None:
                        target = merged[family.name] = Metric(family.name, family.documentation, family.type)
                    for s in family.samples:
                        target.add_sample(s.name, dict(s.labels, function=role, replica=str(i)), s.value,
                                          s.timestamp, s.exemplar)
        yield from merged.values()
        supervisor = getattr(self.run, "supervisor", None)
        if supervisor is not None:
            restarts = supervisor.restarts
            c = CounterMetricFamily("modelmonitor_function_restarts",
                                    "Function processes restarted by modelmonitor run's supervisor",
                                    labels=["function", "replica"])
            for role, pool in self.run.pools.items():
                for i, proc in enumerate(pool):
                    c.add_metric([role, str(i)], restarts.get(proc.name, 0))
            yield c
        broker = self.run.broker
        if broker is None:
            return
        stats = broker.stats()
        for key in ("matched", "delivered", "replies", "retried", "dead_lettered", "dead_letter_logged",
                    "dropped"):
            c = CounterMetricFamily(f"modelmonitor_broker_{key}", f"Local broker deliveries: {key}",
                                    labels=["trigger"])
            for trigger, counts in stats.get("triggers", {}).items():
                c.add_metric([trigger], counts.get(key, 0))
            yield c
        accepted = CounterMetricFamily("modelmonitor_broker_accepted", "Events accepted by the broker ingress")
        accepted.add_metric([], stats.get("accepted", 0))
        yield accepted
        refused = CounterMetricFamily("modelmonitor_broker_refused",
                                      "Requests the broker ingress refused, by HTTP status", labels=["status"])
        for status, n in sorted(stats.get("refused", {}).items()):
            refused.add_metric([str(status)], n)
        yield refused
        pending = GaugeMetricFamily("modelmonitor_broker_pending",
                                    "Events in the broker log some Trigger has not finished with")
        if stats.get("pending") is not None:
            pending.add_metric([], stats["pending"])
        yield pending
        dead = GaugeMetricFamily("modelmonitor_broker_dead_letters",
                                 "Events in the local dead-letter log (modelmonitor deadletters list)")
        if stats.get("dead_letters") is not None:
            dead.add_metric([], stats["dead_letters"])
        yield dead


def serve_run_metrics(run, port: int, host: str = "127.0.0.1"):
    """Start the endpoint (a daemon thread); returns the registry."""
    registry = CollectorRegistry()
    registry.register(RunCollector(run))
    start_http_server(port, addr=host, registry=registry)
    return registry
