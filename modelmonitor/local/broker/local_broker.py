"""The local broker itself: accepts events into its log, starts a dispatcher per Trigger, keeps
the counters (see the package docstring)."""
from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable, Mapping, Sequence

from modelmonitor.core.events import Event

from modelmonitor.local.broker.config import DEFAULT_DELIVERY, DeliverySpec, Destination, Trigger
from modelmonitor.local.broker.dispatch import TRIGGER_COUNTERS, TriggerDispatcher
from modelmonitor.local.broker.errors import (BrokerClosedError, BrokerConfigError,
                                              BrokerUnavailableError)
from modelmonitor.local.broker.filters import AttributesFilter, MatchAll
from modelmonitor.local.broker.ingress import IngressServer
from modelmonitor.local.broker.log import Completion, Entry, LogFullError
from modelmonitor.local.broker.memory_log import MemoryLog
from modelmonitor.local.broker.targets import Connections, _HttpTarget, _SinkTarget
from modelmonitor.local.broker.wire import lazy_event, to_binary_http, wire_attributes
from state.group_commit import GroupCommitter

log = logging.getLogger("modelmonitor.local.broker")

#: Seconds between two trims of the acknowledged head of the log.
TRIM_INTERVAL = 1.0


class LocalBroker:
    """A broker with a Knative-compatible HTTP ingress, a log and Trigger delivery.

    `triggers` are Triggers (a `load_triggers` result); those for another broker name or
    namespace are ignored. `resolve` maps a subscriber `ref` name to its URL(s) (several =
    replicas, used round robin). `on_event(event)` sees every accepted event, including replies
    and in-process publishes, once it is in the log, possibly from several threads at once.
    `concurrency` is the number of delivery workers per unordered Trigger. `delivery_defaults`
    overrides the YAML Broker's `spec.delivery`. `log` is where accepted events are kept until
    delivered: a `RedisStreamLog` (durable; `modelmonitor run` uses one) or, by default, a
    `MemoryLog` (lost with the process). `on_reject(reason, body, attributes)` is called for
    every request the ingress refuses although it holds a whole body (not a CloudEvent, or one
    whose attributes cannot be passed on), before the 400: `modelmonitor run` records an
    `event.rejected` dead letter. Every refused request is counted (`stats()`: `rejected`, and
    `refused` by HTTP status) and logged in one line.

    >>> b = LocalBroker([], namespace="ml", name="monitoring")
    >>> b._is_ingress_path("/ml/monitoring"), b._is_ingress_path("/"), b._is_ingress_path("/x")
    (True, True, False)
    """

    def __init__(self, triggers: Iterable[Trigger], resolve: Mapping[str, Sequence[str] | str] | None = None,
                 host: str = "127.0.0.1", port: int = 0, namespace: str = "default",
                 name: str = "default", max_body_bytes: int = 10 * 1024 * 1024,
                 on_event: Callable[[Event], None] | None = None, *,
                 concurrency: int = 16, delivery_defaults: DeliverySpec | None = None,
                 max_hops: int = 255, log=None,
                 on_reject: Callable[[str, bytes, Mapping[str, str]], Any] | None = None):
        self.host = host
        self.port = port
        self.namespace = namespace
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.on_event = on_event
        self.on_reject = on_reject
        self.concurrency = concurrency
        self.max_hops = max_hops
        self.log = log if log is not None else MemoryLog()
        self.resolve = {k: [v] if isinstance(v, str) else list(v) for k, v in (resolve or {}).items()}
        broker_delivery = getattr(triggers, "broker_delivery", {}) or {}
        self.delivery_defaults = (delivery_defaults or broker_delivery.get(name) or
                                  DeliverySpec()).merged_over(DEFAULT_DELIVERY)
        self.triggers: list[Trigger] = []
        for trigger in triggers:
            if trigger.broker != name or trigger.namespace not in (None, namespace):
                log_ignored(trigger, namespace, name)
                continue
            self.triggers.append(trigger)
        self._sinks: dict[str, Callable[[Event], Any]] = {}
        self._http = Connections()
        self._dispatchers: list[TriggerDispatcher] = []
        self._server: IngressServer | None = None
        self._server_thread: threading.Thread | None = None
        self._appender: GroupCommitter | None = None
        self._completer: GroupCommitter | None = None
        self._trimmer: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._abandon = threading.Event()
        self._inflight_lock = threading.Lock()
        self._inflight_n = 0
        self._dead_lock = threading.Lock()
        self._dead_on_the_way = 0
        self._counter_lock = threading.Lock()
        self._counters = dict.fromkeys(("accepted", "rejected", "unmatched", "loops_dropped",
                                        "dead_letter_failed"), 0)
        self._refused: dict[int, int] = {}

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
        The sink may return a Event (a reply); an exception is a retryable failure.
        """
        if self._started:
            raise RuntimeError("add sink subscribers before start()")
        if not callable(sink):
            raise TypeError("sink must be callable with one Event")
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
        """Resolve every subscriber (a clear error if one cannot be), open the log's groups,
        start the delivery threads and the HTTP ingress."""
        if self._started:
            return self
        dispatchers = []
        for trigger in self.triggers:
            where = f"Trigger {trigger.name}"
            delivery = trigger.delivery.merged_over(self.delivery_defaults)
            subscriber = self._target(trigger.subscriber, f"{where}: subscriber")
            dead_letter = (self._target(delivery.dead_letter_sink, f"{where}: deadLetterSink")
                           if delivery.dead_letter_sink else None)
            dispatchers.append(TriggerDispatcher(self, trigger, delivery, subscriber, dead_letter,
                                                 self.concurrency))
        for gone in self.log.ensure_groups([d.name for d in dispatchers]):
            log.warning("Trigger %s is gone: its undelivered events were removed from the "
                        "broker log", gone)
        self._dispatchers = dispatchers
        self._appender = GroupCommitter(self._append_batch)
        self._completer = GroupCommitter(self._complete_batch)
        self._server = IngressServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        for d in dispatchers:
            d.start()
        self._trimmer = threading.Thread(target=self._trim_loop, daemon=True, name="broker-trim")
        self._trimmer.start()
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
            name="broker-ingress")
        self._server_thread.start()
        self._started = True
        log.info("local broker %s/%s listening at %s with %d trigger(s)", self.namespace,
                 self.name, self.url, len(dispatchers))
        return self

    def stop(self, timeout: float = 10.0, drain: bool = True) -> bool:
        """Stop accepting events; with `drain`, let deliveries finish for up to `timeout`
        seconds; then abandon what is left (retry waits end at once; unacknowledged events
        stay in a durable log for the next start) and join the threads. Returns True when
        nothing was left undelivered."""
        if not self._started or self._closed:
            return True
        deadline = time.monotonic() + timeout
        self._closed = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        drained = self.wait_idle(timeout) if drain else self.wait_idle(0)
        self._abandon.set()
        for d in self._dispatchers:
            d.stop()
        for d in self._dispatchers:
            d.join(max(0.0, deadline - time.monotonic()) + 1.0)
        for committer in (self._appender, self._completer):
            if committer is not None:
                committer.close()
        self._http.close()
        return drained

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def backlog(self) -> int:
        """Events some Trigger has not finished with (in the log or in flight)."""
        names = {d.name for d in self._dispatchers}
        return sum(n for g, n in self.log.backlogs().items() if g in names)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once every Trigger finished every event in the log (False on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                if self._inflight_n == 0 and self.backlog() == 0:
                    return True
            except Exception as err:  # the log's store is down: not idle
                log.debug("broker log unavailable while waiting for idle: %s", err)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _trim_loop(self) -> None:
        while not self._abandon.wait(TRIM_INTERVAL):
            try:
                self.log.trim()
            except Exception as err:
                log.debug("broker log trim failed: %s", err)

    # -- events -------------------------------------------------------------------------------
    def publish(self, event: Event) -> int:
        """Inject an event in-process, as if POSTed to the ingress; returns how many Triggers
        matched it."""
        return self._accept(to_binary_http(event), event)

    def _accept(self, wire: tuple[dict[str, str], bytes], event: Event | None = None) -> int:
        """Record an event in the log (durably, when the log is) and return how many Triggers
        it matches; BrokerUnavailableError when it could not be recorded."""
        if not self._started or self._closed or self._abandon.is_set():
            raise BrokerClosedError(f"broker {self.namespace}/{self.name} is not running")
        headers, body = wire
        attrs = wire_attributes(headers)
        targets = self.matching(attrs)
        matched = len(targets)
        if matched:
            entry = Entry("", headers, body, 0, targets)
            try:
                result = self._appender.submit((entry, False))
            except Exception as err:
                result = err
            if isinstance(result, Exception):
                raise BrokerUnavailableError(
                    f"broker {self.namespace}/{self.name} cannot record the event now: "
                    f"{result}") from None
        else:
            self._count("unmatched")
        self._count("accepted")
        self._notify(event if event is not None else lazy_event(headers, body))
        return matched

    def matching(self, attrs: Mapping[str, str]) -> list[str]:
        """The Triggers whose filters an event with these attributes passes (the logs it goes
        to)."""
        return [d.name for d in self._dispatchers if d.wants(attrs)]

    def _append_batch(self, items: Sequence[tuple[Entry, bool]]) -> list:
        """The ingress' group commit: one log round trip for every event waiting."""
        results: list = [None] * len(items)
        room = self.log.max_entries - self.log.length
        take = []
        for i, (entry, internal) in enumerate(items):
            if internal or room > 0:
                take.append(i)
                room -= 0 if internal else 1
            else:
                results[i] = LogFullError(
                    f"the broker log holds {self.log.length} undelivered events (limit "
                    f"{self.log.max_entries}); retry later")
        try:
            ids = self.log.append([items[i][0] for i in take], internal=True) if take else []
        except Exception as err:
            for i in take:
                results[i] = err
            return results
        for i, entry_id in zip(take, ids):
            results[i] = entry_id
        return results

    def _complete_batch(self, items: Sequence[list[Completion]]) -> list:
        """The deliveries' group commit, in order: retried while the log's store is down (later
        acknowledgements wait behind), given up only when the broker is stopped."""
        completions = [c for group in items for c in group]
        warned = False
        while True:
            try:
                self.log.complete(completions)
                return [None] * len(items)
            except Exception as err:
                if self._abandon.is_set():
                    raise
                if not warned:
                    log.warning("cannot acknowledge deliveries in the broker log (%s); "
                                "retrying", err)
                    warned = True
                self._abandon.wait(0.5)

    def _recorded_replies(self, replies: list[Entry]) -> None:
        """Replies were appended with their delivery's acknowledgement: count and show them."""
        for reply in replies:
            self._count("accepted")
            self._notify(lazy_event(reply.headers, reply.body))

    def _notify(self, event: Event) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a recorder's bug must not lose the event
                log.exception("on_event callback failed")

    def _reserve_dead_letter(self) -> bool:
        """A place in the dead-letter log for one more dead letter, counting those on their way
        (written with their acknowledgement); False when it is full."""
        with self._dead_lock:
            if self.log.dead_letter_count() + self._dead_on_the_way >= self.log.max_dead_letters:
                return False
            self._dead_on_the_way += 1
            return True

    def _release_dead_letters(self, n: int) -> None:
        if n:
            with self._dead_lock:
                self._dead_on_the_way -= n

    def _inflight(self, delta: int) -> None:
        with self._inflight_lock:
            self._inflight_n += delta

    # -- counters -----------------------------------------------------------------------------
    def _count(self, key: str) -> None:
        with self._counter_lock:
            self._counters[key] += 1

    def _count_refusal(self, status: int) -> None:
        """One request the ingress refused (answered ``status``)."""
        with self._counter_lock:
            self._counters["rejected"] += 1
            self._refused[status] = self._refused.get(status, 0) + 1

    def _count_trigger(self, d: TriggerDispatcher, key: str) -> None:
        with self._counter_lock:
            d.counters[key] += 1

    def stats(self) -> dict[str, Any]:
        """Counters: broker-wide (accepted, rejected = requests the ingress refused, refused =
        those by HTTP status, unmatched, loops_dropped,
        dead_letter_failed, pending = events some Trigger has not finished with, dead_letters
        = entries in the dead-letter log), totals over Triggers and per Trigger (matched,
        delivered, replies, retried, dead_lettered = sent to a deadLetterSink,
        dead_letter_logged = kept in the local dead-letter log, dropped, abandoned)."""
        with self._counter_lock:
            out: dict[str, Any] = dict(self._counters)
            out["refused"] = dict(self._refused)
            per = {d.name: dict(d.counters) for d in self._dispatchers}
        for key in TRIGGER_COUNTERS:
            out[key] = sum(c[key] for c in per.values())
        try:
            out["pending"] = self._inflight_n + self.backlog()
            out["dead_letters"] = self.log.dead_letter_count()
        except Exception:  # the log's store is down
            out["pending"] = out["dead_letters"] = None
        out["triggers"] = per
        return out


def log_ignored(trigger: Trigger, namespace: str, name: str) -> None:
    log.warning("ignoring Trigger %s: it belongs to broker %s/%s, not %s/%s",
                trigger.name, trigger.namespace or namespace, trigger.broker, namespace, name)
