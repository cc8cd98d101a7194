"""The local broker itself: accepts events, matches Triggers, delivers with retries, replies and
dead letters (see the package docstring)."""
from __future__ import annotations

import base64
import logging
import queue
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable, Mapping, Sequence

import urllib3

from modelmonitor.core.events import Event

from modelmonitor.core.backoff import backoff_delay
from modelmonitor.local.broker.config import DEFAULT_DELIVERY, DeliverySpec, Destination, Trigger
from modelmonitor.local.broker.errors import BrokerClosedError, BrokerConfigError
from modelmonitor.local.broker.filters import AttributesFilter, MatchAll, event_attributes
from modelmonitor.local.broker.ingress import IngressServer
from modelmonitor.local.broker.targets import (ERROR_CODE, ERROR_DATA, ERROR_DATA_LIMIT, ERROR_DEST,
                                               _HttpTarget, _Outcome, _SinkTarget)

log = logging.getLogger("modelmonitor.local.broker")


_TRIGGER_COUNTERS = ("matched", "delivered", "replies", "retried", "dead_lettered", "dropped",
                     "abandoned")


class _TriggerRuntime:
    """A started Trigger: resolved targets, effective delivery, queue, workers, counters."""

    def __init__(self, trigger: Trigger, delivery: DeliverySpec, subscriber, dead_letter,
                 workers: int):
        self.trigger = trigger
        self.delivery = delivery
        self.subscriber = subscriber
        self.dead_letter = dead_letter
        self.workers = 1 if trigger.ordered else max(1, workers)
        self.queue: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.counters = dict.fromkeys(_TRIGGER_COUNTERS, 0)


_STOP = object()


class LocalBroker:
    """An in-memory broker with a Knative-compatible HTTP ingress and Trigger delivery.

    `triggers` are Triggers (a `load_triggers` result); those for another broker name or
    namespace are ignored. `resolve` maps a subscriber `ref` name to its URL(s) (several =
    replicas, used round robin). `on_event(event)` sees every accepted event, including replies
    and in-process publishes, possibly from several threads at once. `concurrency` is the
    number of delivery workers per unordered Trigger. `delivery_defaults` overrides the YAML
    Broker's `spec.delivery`.

    >>> b = LocalBroker([], namespace="ml", name="monitoring")
    >>> b._is_ingress_path("/ml/monitoring"), b._is_ingress_path("/"), b._is_ingress_path("/x")
    (True, True, False)
    """

    def __init__(self, triggers: Iterable[Trigger], resolve: Mapping[str, Sequence[str] | str] | None = None,
                 host: str = "127.0.0.1", port: int = 0, namespace: str = "default",
                 name: str = "default", max_body_bytes: int = 10 * 1024 * 1024,
                 on_event: Callable[[Event], None] | None = None, *,
                 concurrency: int = 16, delivery_defaults: DeliverySpec | None = None,
                 max_hops: int = 255):
        self.host = host
        self.port = port
        self.namespace = namespace
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.on_event = on_event
        self.concurrency = concurrency
        self.max_hops = max_hops
        self.resolve = {k: [v] if isinstance(v, str) else list(v) for k, v in (resolve or {}).items()}
        broker_delivery = getattr(triggers, "broker_delivery", {}) or {}
        self.delivery_defaults = (delivery_defaults or broker_delivery.get(name) or
                                  DeliverySpec()).merged_over(DEFAULT_DELIVERY)
        self.triggers: list[Trigger] = []
        for trigger in triggers:
            if trigger.broker != name or trigger.namespace not in (None, namespace):
                log.warning("ignoring Trigger %s: it belongs to broker %s/%s, not %s/%s",
                            trigger.name, trigger.namespace or namespace, trigger.broker,
                            namespace, name)
                continue
            self.triggers.append(trigger)
        self._sinks: dict[str, Callable[[Event], Any]] = {}
        self._http: urllib3.PoolManager | None = None
        self._runtimes: list[_TriggerRuntime] = []
        self._server: IngressServer | None = None
        self._server_thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._abandon = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self._counter_lock = threading.Lock()
        self._counters = dict.fromkeys(("accepted", "rejected", "unmatched", "loops_dropped",
                                        "dead_letter_failed"), 0)

    # -- configuration ------------------------------------------------------------------------
    def add_trigger(self, trigger: Trigger) -> None:
        """Add a Trigger before `start()`."""
        if self._started:
            raise RuntimeError("add Triggers before start()")
        if any(t.name == trigger.name for t in self.triggers):
            raise BrokerConfigError(f"Trigger {trigger.name} already exists")
        self.triggers.append(trigger)

    def add_sink_subscriber(self, name: str, filter_attributes: Mapping[str, str] | None,
                            sink: Callable[[Event], Any]) -> None:
        """Register an in-process subscriber under `name` (before `start()`).

        Triggers whose subscriber `ref` has this name (e.g. `kind: KafkaSink, name: X`) deliver
        to `sink(event)` instead of a URL. With `filter_attributes` (a dict, possibly empty =
        every event), a Trigger of the same name routing those events to the sink is added too.
        The sink may return a CloudEvent (a reply); an exception is a retryable failure.
        """
        if self._started:
            raise RuntimeError("add sink subscribers before start()")
        if not callable(sink):
            raise TypeError("sink must be callable with one CloudEvent")
        self._sinks[name] = sink
        if filter_attributes is not None:
            self.add_trigger(Trigger(
                name=name, broker=self.name, namespace=self.namespace,
                subscriber=Destination(ref_kind="InProcess", ref_name=name),
                filter=AttributesFilter(dict(filter_attributes)) if filter_attributes else MatchAll()))

    def _target(self, dest: Destination, where: str):
        if dest.ref_name:
            if dest.ref_name in self._sinks:
                return _SinkTarget(dest.ref_name, self._sinks[dest.ref_name])
            urls = self.resolve.get(dest.ref_name)
            if not urls:
                known = sorted(set(self.resolve) | set(self._sinks)) or ["none"]
                raise BrokerConfigError(
                    f"{where}: cannot resolve {dest.describe()}: no URL or in-process sink is "
                    f"registered under {dest.ref_name!r} (known: {', '.join(known)})")
            if dest.uri:
                urls = [urllib.parse.urljoin(u, dest.uri) for u in urls]
            return _HttpTarget(dest.describe(), urls, self._http)
        return _HttpTarget(dest.describe(), [dest.uri], self._http)

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """Root of the ingress (valid after `start()`)."""
        return f"http://{self.host}:{self.port}/"

    @property
    def url(self) -> str:
        """The Knative-style ingress URL `http://host:port/<namespace>/<name>` (K_SINK)."""
        return f"http://{self.host}:{self.port}/{self.namespace}/{self.name}"

    def _is_ingress_path(self, path: str) -> bool:
        return path.rstrip("/") in ("", f"/{self.namespace}/{self.name}")

    def start(self) -> "LocalBroker":
        """Resolve every subscriber (a clear error if one cannot be), start the delivery workers
        and the HTTP ingress."""
        if self._started:
            return self
        # One connection pool per subscriber host, big enough for every worker of every Trigger
        # (several Triggers often share a function); urllib3 discards connections beyond it.
        self._http = urllib3.PoolManager(
            num_pools=64, maxsize=max(1, self.concurrency) * max(1, len(self.triggers)),
            block=False)
        runtimes = []
        for trigger in self.triggers:
            where = f"Trigger {trigger.name}"
            delivery = trigger.delivery.merged_over(self.delivery_defaults)
            subscriber = self._target(trigger.subscriber, f"{where}: subscriber")
            dead_letter = (self._target(delivery.dead_letter_sink, f"{where}: deadLetterSink")
                           if delivery.dead_letter_sink else None)
            runtimes.append(_TriggerRuntime(trigger, delivery, subscriber, dead_letter,
                                            self.concurrency))
        self._runtimes = runtimes
        self._server = IngressServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        for rt in runtimes:
            for i in range(rt.workers):
                thread = threading.Thread(target=self._worker, args=(rt,), daemon=True,
                                          name=f"broker-{rt.trigger.name}-{i}")
                rt.threads.append(thread)
                thread.start()
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
            name="broker-ingress")
        self._server_thread.start()
        self._started = True
        log.info("local broker %s/%s listening at %s with %d trigger(s)", self.namespace,
                 self.name, self.url, len(runtimes))
        return self

    def stop(self, timeout: float = 10.0, drain: bool = True) -> bool:
        """Stop accepting events; with `drain`, let queued deliveries finish for up to
        `timeout` seconds; then abandon what is left (retry waits end at once) and join the
        threads. Returns True when nothing was abandoned."""
        if not self._started or self._closed:
            return True
        deadline = time.monotonic() + timeout
        self._closed = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        drained = self.wait_idle(timeout) if drain else self.wait_idle(0)
        self._abandon.set()
        for rt in self._runtimes:
            for _ in rt.threads:
                rt.queue.put(_STOP)
        for rt in self._runtimes:
            for thread in rt.threads:
                thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if self._http is not None:
            self._http.clear()
        return drained

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once every queue is empty and no delivery is in flight (False on timeout)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    # -- events -------------------------------------------------------------------------------
    def publish(self, event: Event) -> int:
        """Inject an event in-process, as if POSTed to the ingress; returns how many Triggers
        matched it."""
        return self._accept(event, hops=0)

    def _accept(self, event: Event, hops: int, internal: bool = False) -> int:
        # Replies (internal) are still taken while stop() drains: they are part of the work
        # in flight, not new input.
        if not self._started or (self._closed and not internal) or self._abandon.is_set():
            raise BrokerClosedError(f"broker {self.namespace}/{self.name} is not running")
        self._count("accepted")
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a recorder's bug must not lose the event
                log.exception("on_event callback failed")
        attrs = event_attributes(event)
        matched = [rt for rt in self._runtimes if rt.trigger.filter.matches(attrs)]
        if not matched:
            self._count("unmatched")
            return 0
        with self._idle:
            self._pending += len(matched)
        for rt in matched:
            with self._counter_lock:
                rt.counters["matched"] += 1
            rt.queue.put((event, hops))
        return len(matched)

    def _worker(self, rt: _TriggerRuntime) -> None:
        while True:
            item = rt.queue.get()
            if item is _STOP:
                return
            event, hops = item
            try:
                if self._abandon.is_set():
                    self._bump(rt, "abandoned")
                else:
                    self._deliver(rt, event, hops)
            except Exception:
                log.exception("delivery to Trigger %s failed unexpectedly", rt.trigger.name)
                self._bump(rt, "dropped")
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def _send_with_retries(self, rt: _TriggerRuntime, target, event: Event,
                           want_reply: bool) -> tuple[_Outcome, bool]:
        """(last outcome, abandoned?) after up to 1 + retry attempts."""
        d = rt.delivery
        attempt = 0
        while True:
            outcome = target.send(event, d.timeout, want_reply)
            if outcome.ok or not outcome.retryable or attempt >= d.retry:
                return outcome, False
            attempt += 1
            self._bump(rt, "retried")
            wait = backoff_delay(d.backoff_policy, d.backoff_delay, attempt, d.backoff_max)
            log.debug("Trigger %s: %s answered %s; retry %d/%d in %.3f s", rt.trigger.name,
                      outcome.destination, outcome.status or "no response", attempt, d.retry, wait)
            if self._abandon.wait(wait):
                return outcome, True

    def _deliver(self, rt: _TriggerRuntime, event: Event, hops: int) -> None:
        outcome, abandoned = self._send_with_retries(rt, rt.subscriber, event, want_reply=True)
        if outcome.ok:
            self._bump(rt, "delivered")
            if outcome.reply is not None:
                self._bump(rt, "replies")
                if hops + 1 > self.max_hops:
                    self._count("loops_dropped")
                    log.warning("dropping reply %s (type %s) from Trigger %s: it went through "
                                "the broker %d times (a reply loop?)", outcome.reply["id"],
                                outcome.reply["type"], rt.trigger.name, hops + 1)
                else:
                    try:
                        self._accept(outcome.reply, hops + 1, internal=True)
                    except BrokerClosedError:
                        log.warning("broker stopped; reply %s from Trigger %s lost",
                                    outcome.reply["id"], rt.trigger.name)
            return
        if abandoned:
            self._bump(rt, "abandoned")
            return
        reason = (f"HTTP {outcome.status}" if outcome.status
                  else outcome.body.decode(errors="replace"))
        if rt.dead_letter is None:
            self._bump(rt, "dropped")
            log.warning("dropped event %s (type %s) for Trigger %s after %s: %s; no "
                        "deadLetterSink", event["id"], event["type"], rt.trigger.name,
                        "retries" if outcome.retryable else "a non-retryable answer", reason)
            return
        dead = self._dead_letter_event(event, outcome)
        dl_outcome, _ = self._send_with_retries(rt, rt.dead_letter, dead, want_reply=False)
        if dl_outcome.ok:
            self._bump(rt, "dead_lettered")
        else:
            self._bump(rt, "dropped")
            self._count("dead_letter_failed")
            log.warning("dropped event %s for Trigger %s: delivery failed (%s) and so did the "
                        "deadLetterSink %s (%s)", event["id"], rt.trigger.name, reason,
                        dl_outcome.destination, dl_outcome.status or "no response")

    @staticmethod
    def _dead_letter_event(event: Event, outcome: _Outcome) -> Event:
        """The event as it goes to the dead-letter sink: unchanged plus the knativeerror*
        extensions (code 0 = no HTTP answer; the data is then the connection error)."""
        attrs = dict(event.get_attributes())
        attrs[ERROR_DEST] = outcome.destination
        attrs[ERROR_CODE] = str(outcome.status)
        attrs[ERROR_DATA] = base64.b64encode(outcome.body[:ERROR_DATA_LIMIT]).decode("ascii")
        return Event(attrs, event.data)

    # -- counters -----------------------------------------------------------------------------
    def _count(self, key: str) -> None:
        with self._counter_lock:
            self._counters[key] += 1

    def _bump(self, rt: _TriggerRuntime, key: str) -> None:
        with self._counter_lock:
            rt.counters[key] += 1

    def stats(self) -> dict[str, Any]:
        """Counters: broker-wide (accepted, rejected, unmatched, loops_dropped,
        dead_letter_failed, pending), totals over Triggers and per Trigger
        (matched, delivered, replies, retried, dead_lettered, dropped, abandoned)."""
        with self._counter_lock:
            out: dict[str, Any] = dict(self._counters)
            per = {rt.trigger.name: dict(rt.counters) for rt in self._runtimes}
        for key in _TRIGGER_COUNTERS:
            out[key] = sum(c[key] for c in per.values())
        out["pending"] = self._pending
        out["triggers"] = per
        return out
