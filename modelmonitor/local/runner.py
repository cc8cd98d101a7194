"""`modelmonitor run`: the whole pipeline on one machine, no Kubernetes.

A local broker reads the same Broker and Trigger objects as the cluster (rendered from the
monitor by the code that writes `eventing/`, plus the user's own Trigger YAML), accepts
CloudEvents at ``/`` and ``/<namespace>/<broker>``, and delivers them over HTTP to the four
functions, each served by the parliament runtime in its own process (several replicas when
asked). A ticker plays the PingSource. Without ``--redis`` a private, durable redis-server
is started; with ``--kafka-bootstrap`` logger events are also read from a Kafka topic and the
analysis Triggers write to Kafka topics.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from typing import Callable

from modelmonitor.core.events import Event

from modelmonitor.core import events as ev
from modelmonitor.core.baseline import load_baseline
from modelmonitor.local.broker import LocalBroker, load_triggers
from modelmonitor.handlers import Monitor
from modelmonitor.local.procs import FunctionPool, free_port
from modelmonitor.local.redis_server import RedisServer
from modelmonitor.cluster.render import render_broker, render_ping_source, render_wiring, roles_for
from modelmonitor.core.spec import load_monitor

log = logging.getLogger("modelmonitor.run")


class LocalRun:
    def __init__(self, monitor_path: str, *, baseline_path: str | None = None, redis_url: str | None = None,
                 host: str = "127.0.0.1", port: int = 8080, subscribe: list[str] | None = None,
                 replicas: dict[str, int] | None = None, kafka_bootstrap: str | None = None,
                 kafka_topic: str = "inference-logs", events_out: str | None = None, tick_seconds: float = 5.0,
                 on_event: Callable[[Event], None] | None = None, log_dir: str | None = None,
                 threads: int = 16):
        self.monitor_path = os.path.abspath(monitor_path)
        self.spec = load_monitor(self.monitor_path)
        baseline_path = baseline_path or (self.spec.baseline_ref or {}).get("file")
        self.baseline_path = os.path.abspath(baseline_path) if baseline_path else None
        if self.baseline_path:
            load_baseline(self.baseline_path)  # fail now, with the reason, not in four processes
        Monitor(self.spec, load_baseline(self.baseline_path) if self.baseline_path else None)
        self.redis_url = redis_url
        self.host = host
        self.port = port or free_port(host)
        self.subscribe = subscribe or []
        self.replicas = replicas or {}
        self.kafka_bootstrap = kafka_bootstrap
        self.kafka_topic = kafka_topic
        self.events_out = events_out
        self.tick_seconds = tick_seconds
        self.user_on_event = on_event
        self._own_log_dir = log_dir is None       # a temporary folder of ours: removed by stop()
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="modelmonitor-run-")
        self.threads = threads
        self.redis_server: RedisServer | None = None
        self.pools: dict[str, FunctionPool] = {}
        self.broker: LocalBroker | None = None
        self.kafka_ingress = None
        self.kafka_writers: list = []
        self._events_file = None
        self._events_lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def ingress_url(self) -> str:
        return f"http://{self.host}:{self.port}/{self.spec.namespace}/{self.spec.broker}"

    def function_env(self, role: str) -> dict[str, str]:
        env = {"MODELMONITOR_ROLE": role, "MODELMONITOR_CONFIG": self.monitor_path,
               "REDIS_URL": self.redis_url, "K_SINK": self.ingress_url}
        if self.baseline_path:
            env["MODELMONITOR_BASELINE"] = self.baseline_path
        return env

    def _on_event(self, event: Event) -> None:
        if self._events_file is not None:
            received_ms = int(time.time() * 1000)   # wall clock: what the report's latencies use
            line = ev.to_json_line(event, received_ms) if not isinstance(event.data, bytes) else None
            if line is not None:
                with self._events_lock:
                    self._events_file.write(line + "\n")
        if self.user_on_event is not None:
            self.user_on_event(event)

    def start(self) -> "LocalRun":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        os.makedirs(self.log_dir, exist_ok=True)   # a caller's log_dir need not exist yet
        if self.redis_url is None:
            self.redis_server = RedisServer(durable=True).start()
            self.redis_url = self.redis_server.url
        for role in roles_for(self.spec):
            pool = FunctionPool(f"{self.spec.name}-{role}", self.replicas.get(role, 1),
                                args=["--role", role, "--threads", str(self.threads)],
                                env=self.function_env(role), host="127.0.0.1")
            for proc in pool:
                proc.log_file = os.path.join(self.log_dir, proc.name + ".log")
            self.pools[role] = pool
        for pool in self.pools.values():
            pool.start(wait=False)
        for pool in self.pools.values():
            for proc in pool:
                proc.wait_ready()
        docs = render_broker(self.spec.namespace, self.spec.broker) + render_wiring(self.spec)
        if not self.kafka_bootstrap:
            # Without Kafka, the analysis-topic Triggers have nowhere to deliver.
            docs = [d for d in docs if d.get("kind") != "KafkaSink" and
                    d.get("spec", {}).get("subscriber", {}).get("ref", {}).get("kind") != "KafkaSink"]
            for d in docs:
                dls = d.get("spec", {}).get("delivery", {}).get("deadLetterSink", {})
                if dls.get("ref", {}).get("kind") == "KafkaSink":
                    del d["spec"]["delivery"]["deadLetterSink"]
        triggers = load_triggers(docs + list(self.subscribe))
        resolve = {pool.name: pool.urls for pool in self.pools.values()}
        if self.events_out:
            self._events_file = open(self.events_out, "a", encoding="utf-8", buffering=1)
        self.broker = LocalBroker(triggers, resolve, host=self.host, port=self.port,
                                  namespace=self.spec.namespace, name=self.spec.broker, on_event=self._on_event)
        if self.kafka_bootstrap:
            from modelmonitor.local.kafka_bridge import KafkaIngress, register_kafka_sinks
            self.kafka_writers = register_kafka_sinks(self.broker, getattr(triggers, "kafka_sinks", {}),
                                                      bootstrap=self.kafka_bootstrap)
        self.broker.start()
        if self.kafka_bootstrap:
            from modelmonitor.local.kafka_bridge import KafkaIngress
            self.kafka_ingress = KafkaIngress(self.kafka_bootstrap, self.kafka_topic, self.broker.publish,
                                              group_id=f"modelmonitor-{self.spec.name}").start()
        ping = render_ping_source(self.spec)
        self._ping_data = ping["spec"].get("data", json.dumps({"monitor": self.spec.name}))
        self._ticker = threading.Thread(target=self._tick_loop, name="pingsource", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        """What the PingSource does on a cluster: a tick event for the aggregator."""
        while not self._stop.wait(self.tick_seconds):
            self.tick()

    def tick(self) -> None:
        if self.broker is None:
            return
        event = Event({"type": ev.PING, "id": str(uuid.uuid4()),
                            "source": f"/apis/v1/namespaces/{self.spec.namespace}/pingsources/{self.spec.name}-tick",
                            "datacontenttype": "application/json", "monitor": self.spec.name},
                           json.loads(self._ping_data))
        try:
            self.broker.publish(event)
        except Exception as exc:  # a stopping broker
            log.debug("tick not published: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self.kafka_ingress is not None:
            self.kafka_ingress.stop()
        if self.broker is not None:
            self.broker.stop(timeout=5)
        for w in self.kafka_writers:
            w.close()
        for pool in self.pools.values():
            pool.stop()
        if self.redis_server is not None:
            self.redis_server.cleanup()
            self.redis_server = None
        if self._events_file is not None:
            self._events_file.close()
            self._events_file = None
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> "LocalRun":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_replicas(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        role, _, n = item.partition("=")
        if role not in ("ingest", "outlier", "aggregate", "drift") or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"modelmonitor run: --replicas {item!r}: expected ROLE=N with ROLE one of "
                             "ingest, outlier, aggregate, drift and N >= 1")
        out[role] = int(n)
    return out


def run_from_args(args) -> int:
    from modelmonitor.core.spec import SpecError
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        run = LocalRun(args.monitor, baseline_path=args.baseline, redis_url=args.redis, host=args.host,
                       log_dir=args.log_dir,
                       port=args.port, subscribe=args.subscribe, replicas=parse_replicas(args.replicas),
                       kafka_bootstrap=args.kafka_bootstrap, kafka_topic=args.kafka_topic,
                       events_out=args.events_out, tick_seconds=args.tick)
    except SpecError as exc:
        raise SystemExit(f"modelmonitor run: {args.monitor}: {exc}")
    except (OSError, ValueError) as exc:
        raise SystemExit(f"modelmonitor run: {exc}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run.start()
    metrics_line = ""
    if args.metrics_port:
        from modelmonitor.local.run_metrics import serve_run_metrics
        try:
            serve_run_metrics(run, args.metrics_port, host=args.host)
            metrics_line = f"  metrics (all functions + broker): http://{args.host}:{args.metrics_port}/metrics\n"
        except OSError as exc:
            metrics_line = f"  metrics endpoint not started (port {args.metrics_port}: {exc.strerror})\n"
    print(f"ModelMonitor '{run.spec.name}' is running.\n"
          f"  broker ingress (point the KServe logger here): {run.ingress_url}\n"
          f"  functions: " + ", ".join(f"{r} x{len(p)}" for r, p in run.pools.items()) + "\n"
          f"  redis: {run.redis_url}\n  function logs: {run.log_dir}\n"
          + metrics_line +
          "Press Ctrl-C to stop.", flush=True)
    stop.wait()
    print("stopping...", flush=True)
    run.stop()
    return 0
