"""`modelmonitor run`: the whole pipeline on one machine, no Kubernetes.

A local broker reads the same Broker and Trigger objects as the cluster (rendered from the
monitor by the code that writes `eventing/`, plus the user's own Trigger YAML), accepts
CloudEvents at ``/`` and ``/<namespace>/<broker>``, and delivers them over HTTP to the four
functions, each served by func-python (its image's runtime) in its own process (several replicas when
asked). A ticker plays the PingSource. Without ``--redis`` a private, durable redis-server
is started; with ``--kafka-bootstrap`` logger events are also read from a Kafka topic and the
analysis Triggers write to Kafka topics.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from typing import Callable, TextIO

from modelmonitor.core.events import Event

from modelmonitor.core import events as ev
from modelmonitor.core.baseline import load_baseline
from modelmonitor.local.broker import LocalBroker, RedisStreamLog, load_triggers
from modelmonitor.handlers import Monitor
from modelmonitor.local.procs import FunctionPool, FunctionStartError, free_port
from modelmonitor.local.redis_server import RedisServer, connect
from modelmonitor.local.run_state import (RUN_FILE, RunStateBusyError, default_state_dir, process_start_time,
                                          reap_previous_run)
from modelmonitor.local.supervisor import Supervisor
from modelmonitor.cluster.wiring import render_broker, render_ping_source, render_wiring, roles_for
from modelmonitor.core.spec import load_monitor

log = logging.getLogger("modelmonitor.run")

#: Seconds a function process may take to answer its readiness probe (imports are slow on a
#: busy machine).
READY_TIMEOUT = 60.0


class LocalRun:
    """The pipeline on one machine. `state_dir` keeps the broker log (a private redis-server,
    fsynced on every write) and, without `redis_url`, the window state too; a run started
    again on the same `state_dir` continues where the last one stopped. Without `state_dir`
    a temporary one is used and removed at `stop()`. `alerts` prints each drift.detected
    alert as one line on `alert_stream`; `supervise` restarts function processes that exit
    or fail their liveness probe."""

    def __init__(self, monitor_path: str, *, baseline_path: str | None = None, redis_url: str | None = None,
                 host: str = "127.0.0.1", port: int = 8080, subscribe: list[str] | None = None,
                 replicas: dict[str, int] | None = None, kafka_bootstrap: str | None = None,
                 kafka_topic: str = "inference-logs", events_out: str | None = None, tick_seconds: float = 5.0,
                 on_event: Callable[[Event], None] | None = None, log_dir: str | None = None,
                 threads: int = 16, state_dir: str | None = None, alerts: bool = True,
                 alert_stream: TextIO | None = None, supervise: bool = True,
                 stop_timeout: float = 5.0):
        self.monitor_path = os.path.abspath(monitor_path)
        self.spec = load_monitor(self.monitor_path)
        baseline_path = baseline_path or (self.spec.baseline_ref or {}).get("file")
        self.baseline_path = os.path.abspath(baseline_path) if baseline_path else None
        if self.baseline_path:
            load_baseline(self.baseline_path)  # fail now, with the reason, not in four processes
        Monitor(self.spec, load_baseline(self.baseline_path) if self.baseline_path else None)
        self.redis_url = redis_url
        self.user_redis = redis_url is not None
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
        self.state_dir = os.path.abspath(state_dir) if state_dir else None
        self.alerts = alerts
        self.alert_stream = alert_stream
        self.supervise = supervise
        self.stop_timeout = stop_timeout
        self.redis_server: RedisServer | None = None
        self.log_client = None
        self.pools: dict[str, FunctionPool] = {}
        self.broker: LocalBroker | None = None
        self.supervisor: Supervisor | None = None
        self.kafka_ingress = None
        self.kafka_writers: list = []
        self.undelivered: dict[str, int] | None = None
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
            line = ev.to_record_line(event, received_ms)
            with self._events_lock:
                self._events_file.write(line + "\n")
        if self.user_on_event is not None:
            self.user_on_event(event)

    def _reject_record(self, reason: str, value: bytes | None, attributes: dict | None = None) -> None:
        """A Kafka record or an HTTP request at the ingress that holds no usable CloudEvent: an
        ``event.rejected`` dead letter (role ``ingress``) on the broker, where the functions'
        dead letters go."""
        from modelmonitor.handlers.monitor import dead_letter
        self.broker.publish(dead_letter(self.spec.name, "ingress", reason, raw=value,
                                        namespace=self.spec.namespace, attributes=attributes))

    def _print_alert(self, event: Event) -> None:
        """The console's alert Trigger: one line per drift.detected."""
        print(alert_line(event), file=self.alert_stream or sys.stdout, flush=True)

    def start(self) -> "LocalRun":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        os.makedirs(self.log_dir, exist_ok=True)   # a caller's log_dir need not exist yet
        if self.state_dir:
            os.makedirs(self.state_dir, exist_ok=True)
            reap_previous_run(self.state_dir)
        # The broker log's own server, durable (AOF fsynced on every write); it holds the
        # window state too unless the user gave a Redis.
        self.redis_server = RedisServer(durable=True, directory=self.state_dir).start()
        if self.redis_url is None:
            self.redis_url = self.redis_server.url
        self.log_client = connect(self.redis_server.url, socket_timeout=30)
        self._write_run_file()
        for role in roles_for(self.spec):
            pool = FunctionPool(f"{self.spec.name}-{role}", self.replicas.get(role, 1),
                                args=["--role", role, "--threads", str(self.threads)],
                                env=self.function_env(role), host="127.0.0.1",
                                ready_timeout=READY_TIMEOUT)
            for proc in pool:
                proc.log_file = os.path.join(self.log_dir, proc.name + ".log")
            self.pools[role] = pool
        for pool in self.pools.values():
            pool.start(wait=False)
        self._write_run_file()
        for pool in self.pools.values():
            for proc in pool:
                proc.wait_ready()
        if self.supervise:
            self.supervisor = Supervisor([p for pool in self.pools.values() for p in pool],
                                         on_restart=lambda _p: self._write_run_file()).start()
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
        record = self.events_out is not None or self.user_on_event is not None
        self.broker = LocalBroker(triggers, resolve, host=self.host, port=self.port,
                                  namespace=self.spec.namespace, name=self.spec.broker,
                                  on_event=self._on_event if record else None,
                                  log=RedisStreamLog(self.log_client, self.spec.namespace,
                                                     self.spec.broker),
                                  on_reject=self._reject_record)
        if self.alerts:
            self.broker.add_sink_subscriber(f"{self.spec.name}-console-alerts",
                                            {"type": ev.DRIFT_DETECTED, "monitor": self.spec.name},
                                            self._print_alert)
        if self.kafka_bootstrap:
            from modelmonitor.local.kafka_bridge import register_kafka_sinks
            self.kafka_writers = register_kafka_sinks(self.broker, getattr(triggers, "kafka_sinks", {}),
                                                      bootstrap=self.kafka_bootstrap)
        self.broker.start()
        if self.kafka_bootstrap:
            from modelmonitor.local.kafka_bridge import KafkaIngress
            self.kafka_ingress = KafkaIngress(self.kafka_bootstrap, self.kafka_topic, self.broker.publish,
                                              group_id=f"modelmonitor-{self.spec.name}",
                                              on_reject=self._reject_record).start()
        ping = render_ping_source(self.spec)
        self._ping_data = ping["spec"].get("data", json.dumps({"monitor": self.spec.name}))
        self._ticker = threading.Thread(target=self._tick_loop, name="pingsource", daemon=True)
        self._ticker.start()

    def _write_run_file(self) -> None:
        """Who this run is and which processes it started, so a run started later on the same
        state dir can end what a killed run left behind."""
        if not self.state_dir:
            return
        doc = {"pid": os.getpid(), "started": process_start_time(os.getpid()), "logRedisUrl": self.redis_server.url if self.redis_server else None,
               "children": ([self.redis_server.proc.pid] if self.redis_server and self.redis_server.proc else [])
               + [p.pid for pool in self.pools.values() for p in pool if p.pid]}
        path = os.path.join(self.state_dir, RUN_FILE)
        with open(path + ".tmp", "w") as fh:
            json.dump(doc, fh)
        os.replace(path + ".tmp", path)

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

    def stop(self) -> dict[str, int] | None:
        """Stop everything; returns (and keeps in `undelivered`) how many events were left
        undelivered: {"log": still in the broker log, "deadLetters": in the dead-letter log}
        (None when it could not be told)."""
        self._stop.set()
        if self.kafka_ingress is not None:
            self.kafka_ingress.stop()
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.broker is not None:
            self.broker.stop(timeout=self.stop_timeout)
            try:
                self.undelivered = {"log": self.broker.backlog(),
                                    "deadLetters": self.broker.log.dead_letter_count()}
            except Exception as exc:
                log.warning("could not count undelivered events: %s", exc)
        for w in self.kafka_writers:
            w.close()
        for pool in self.pools.values():
            pool.stop()
        if self.log_client is not None:
            self.log_client.close()
            self.log_client = None
        if self.redis_server is not None:
            self.redis_server.cleanup()
            self.redis_server = None
        if self.state_dir:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self.state_dir, RUN_FILE))
        if self._events_file is not None:
            self._events_file.close()
            self._events_file = None
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        return self.undelivered

    def __enter__(self) -> "LocalRun":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def alert_line(event: Event) -> str:
    """One console line for a drift.detected alert.

    >>> alert_line(Event({"type": "t", "source": "s", "id": "i"}, {"monitor": "iris",
    ...     "severity": "warning", "window": {"start": "A", "end": "B"}, "count": 40,
    ...     "driftedFeatures": ["x"], "reason": "x drifted in 2 windows"}))
    'ALERT warning: iris drifted in window A .. B (40 instances; features x): x drifted in 2 windows'
    """
    d = event.data if isinstance(event.data, dict) else {}
    w = d.get("window") or {}
    return (f"ALERT {d.get('severity', '?')}: {d.get('monitor', event.get('monitor'))} drifted in "
            f"window {w.get('start', '?')} .. {w.get('end', '?')} ({d.get('count', '?')} instances; "
            f"features {', '.join(d.get('driftedFeatures') or []) or '?'}): {d.get('reason', '')}")


def parse_replicas(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        role, _, n = item.partition("=")
        if role not in ("ingest", "outlier", "aggregate", "drift") or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"modelmonitor run: --replicas {item!r}: expected ROLE=N with ROLE one of "
                             "ingest, outlier, aggregate, drift and N >= 1")
        out[role] = int(n)
    return out


def redis_durability(url: str) -> str:
    """What a Redis server promises about acknowledged writes, as its own configuration says."""
    try:
        client = connect(url, socket_timeout=5)
        try:
            conf = client.config_get("append*")
        finally:
            client.close()
    except Exception as exc:  # CONFIG may be refused (managed Redis); say so
        return f"unknown (CONFIG GET refused: {exc})"
    if conf.get("appendonly") != "yes":
        return "not durable: appendonly is off, a crash of that Redis loses writes since its last snapshot"
    fsync = conf.get("appendfsync", "?")
    if fsync == "always":
        return "durable: appendonly, fsync on every write"
    if fsync == "everysec":
        return "appendonly with fsync every second: a crash of that host can lose the last second"
    return f"appendonly with appendfsync {fsync}: the OS decides when writes reach the disk"


def run_from_args(args) -> int:
    from modelmonitor.core.spec import SpecError
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        spec = load_monitor(args.monitor)
        state_dir = args.state_dir or default_state_dir(spec)
        run = LocalRun(args.monitor, baseline_path=args.baseline, redis_url=args.redis, host=args.host,
                       log_dir=args.log_dir,
                       port=args.port, subscribe=args.subscribe, replicas=parse_replicas(args.replicas),
                       kafka_bootstrap=args.kafka_bootstrap, kafka_topic=args.kafka_topic,
                       events_out=args.events_out, tick_seconds=args.tick, state_dir=state_dir,
                       alerts=not args.no_alerts)
    except SpecError as exc:
        raise SystemExit(f"modelmonitor run: {args.monitor}: {exc}")
    except (OSError, ValueError) as exc:
        raise SystemExit(f"modelmonitor run: {exc}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run.start()
    except (RunStateBusyError, FunctionStartError, RuntimeError, OSError) as exc:
        raise SystemExit(f"modelmonitor run: {exc}")
    metrics_line = ""
    if args.metrics_port:
        from modelmonitor.local.run_metrics import serve_run_metrics
        try:
            serve_run_metrics(run, args.metrics_port, host=args.host)
            metrics_line = f"  metrics (all functions + broker): http://{args.host}:{args.metrics_port}/metrics\n"
        except OSError as exc:
            metrics_line = f"  metrics endpoint not started (port {args.metrics_port}: {exc.strerror})\n"
    backlog = run.broker.backlog()
    resumed = f" ({backlog} undelivered events from an earlier run resume now)" if backlog else ""
    state = (f"  window state: {run.redis_url} ({redis_durability(run.redis_url)})\n" if run.user_redis
             else "  window state: the same private redis-server\n")
    print(f"ModelMonitor '{run.spec.name}' is running.\n"
          f"  broker ingress (point the KServe logger here): {run.ingress_url}\n"
          f"  functions: " + ", ".join(f"{r} x{len(p)}" for r, p in run.pools.items()) + " (restarted when they exit)\n"
          f"  broker log and dead letters: {state_dir} (private redis-server, fsync on every write){resumed}\n"
          + state +
          f"  function logs: {run.log_dir}\n"
          + metrics_line +
          ("  drift alerts are printed here (--no-alerts: off)\n" if run.alerts else "") +
          "Press Ctrl-C to stop.", flush=True)
    stop.wait()
    print("stopping...", flush=True)
    left = run.stop()
    if left is None:
        print("stopped; could not count undelivered events (the broker log was unreachable)", flush=True)
        return 1
    total = left["log"] + left["deadLetters"]
    if total:
        print(f"stopped with {total} events undelivered: {left['log']} still in the broker log "
              f"(delivered when `modelmonitor run` starts again with --state-dir {state_dir}), "
              f"{left['deadLetters']} in the dead-letter log (`modelmonitor deadletters list "
              f"{args.monitor}` shows them, `... redrive` delivers them again)", flush=True)
        return 1
    print("stopped; every accepted event was delivered", flush=True)
    return 0
