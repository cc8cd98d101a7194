"""Delivery of one Trigger: read its consumer group of the broker log, deliver each matching
entry (retries with the delivery spec's backoff, then the deadLetterSink, then the local
dead-letter log), and acknowledge it together with its reply or dead letter.

An unordered Trigger has a reader thread and `workers` delivery threads (concurrent, a bounded
hand-over queue so undelivered events wait in the log, not in memory); an ordered one
(`kafka.eventing.knative.dev/delivery.order: ordered`) delivers in log order, one at a time,
in its reader thread. After a restart the entries read but never acknowledged come first, in
log order, so ordered delivery keeps its order across restarts.
"""
from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping

from modelmonitor.core.backoff import backoff_delay
from modelmonitor.local.broker.config import DeliverySpec, Trigger
from modelmonitor.local.broker.log import Completion, DeadLetter, Entry
from modelmonitor.local.broker.targets import (ERROR_CODE, ERROR_DATA, ERROR_DATA_LIMIT,
                                               ERROR_DEST, _Outcome)
from modelmonitor.local.broker.wire import wire_attributes

if TYPE_CHECKING:
    from modelmonitor.local.broker.local_broker import LocalBroker

log = logging.getLogger("modelmonitor.local.broker")

TRIGGER_COUNTERS = ("matched", "delivered", "replies", "retried", "dead_lettered",
                    "dead_letter_logged", "dropped", "abandoned")
#: Entries a reader takes from the log at once.
READ_BATCH = 128
#: How long a reader waits in the log for new entries before looking at its stop flag.
READ_BLOCK_MS = 500
#: Seconds between two looks at a full dead-letter log.
DEAD_LETTER_FULL_WAIT_S = 2.0
_STOP = object()


def dead_letter_headers(headers: dict[str, str], outcome: _Outcome) -> dict[str, str]:
    """The event as it goes to a deadLetterSink: unchanged plus the knativeerror* extensions
    (code 0 = no HTTP answer; the data is then the connection error).

    >>> sorted(dead_letter_headers({"ce-id": "1"}, _Outcome(False, status=500, body=b"no", destination="u")))
    ['ce-id', 'ce-knativeerrorcode', 'ce-knativeerrordata', 'ce-knativeerrordest']
    """
    return {**headers, f"ce-{ERROR_DEST}": outcome.destination,
            f"ce-{ERROR_CODE}": str(outcome.status),
            f"ce-{ERROR_DATA}": base64.b64encode(outcome.body[:ERROR_DATA_LIMIT]).decode("ascii")}


class TriggerDispatcher:
    """A started Trigger: resolved targets, effective delivery, threads, counters."""

    def __init__(self, broker: "LocalBroker", trigger: Trigger, delivery: DeliverySpec,
                 subscriber, dead_letter, workers: int):
        self.broker = broker
        self.trigger = trigger
        self.name = trigger.name
        self.delivery = delivery
        self.subscriber = subscriber
        self.dead_letter = dead_letter
        self.workers = 1 if trigger.ordered else max(1, workers)
        self.queue: queue.Queue = queue.Queue(maxsize=2 * self.workers)
        self.threads: list[threading.Thread] = []
        self.counters = dict.fromkeys(TRIGGER_COUNTERS, 0)
        self._stop = threading.Event()

    # -- matching -----------------------------------------------------------------------------
    def wants(self, attrs: Mapping[str, str]) -> bool:
        return self.trigger.filter.matches(attrs)

    # -- threads ------------------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._read_loop, "read")
        if not self.trigger.ordered:
            for i in range(self.workers):
                self._spawn(self._work_loop, str(i))

    def _spawn(self, target, suffix: str) -> None:
        thread = threading.Thread(target=target, daemon=True,
                                  name=f"broker-{self.name}-{suffix}")
        self.threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stop.set()
        # Wake the idle workers (they block on the queue without polling: no CPU while idle).
        for _ in range(self.workers if not self.trigger.ordered else 0):
            try:
                self.queue.put_nowait(_STOP)
            except queue.Full:
                threading.Thread(target=self.queue.put, args=(_STOP,), daemon=True).start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _stopping(self) -> bool:
        return self._stop.is_set() or self.broker._abandon.is_set()

    def _read_loop(self) -> None:
        resuming, after = True, "0"
        failing_since = None
        while not self._stopping():
            try:
                if resuming:
                    entries = self.broker.log.read(self.name, READ_BATCH, 0, pending=True,
                                                   after=after)
                    if not entries:
                        resuming = False
                        continue
                    after = entries[-1].id
                else:
                    entries = self.broker.log.read(self.name, READ_BATCH, READ_BLOCK_MS)
                failing_since = None
            except Exception as err:  # the log's store is down: wait, never lose a place
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("Trigger %s cannot read the broker log (%s); retrying",
                                self.name, err)
                self._stop.wait(0.5)
                continue
            skipped = []
            for entry in entries:
                # Filtered at append time; checked again for entries moved from an earlier
                # version's shared log (cheap: the attributes are in the headers).
                if not self.wants(wire_attributes(entry.headers)):
                    skipped.append(Completion(self.name, entry.id))
                    continue
                self.broker._count_trigger(self, "matched")
                self.broker._inflight(+1)
                if self.trigger.ordered:
                    self._handle(entry)
                else:
                    while not self._stopping():
                        try:
                            self.queue.put(entry, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    else:
                        self.broker._inflight(-1)  # left unacknowledged: read again next start
            if skipped:
                self._acknowledge(skipped)

    def _work_loop(self) -> None:
        while True:
            entry = self.queue.get()
            if entry is _STOP:
                return
            self._handle(entry)

    def _handle(self, entry: Entry) -> None:
        completion = None
        try:
            if self._stopping():
                self.broker._count_trigger(self, "abandoned")
                return
            completion = self._deliver(entry)
            if completion is not None:
                self._acknowledge([completion], completion.replies, inflight=1)
        except Exception:
            log.exception("delivery to Trigger %s failed unexpectedly; the event stays in the "
                          "log and is delivered again when the broker restarts", self.name)
        finally:
            if completion is None:
                self.broker._inflight(-1)

    def _acknowledge(self, completions: list[Completion], replies: list[Entry] = (),
                     inflight: int = 0) -> None:
        """Record completions durably without waiting for the write: the committer writes them
        in the order given, in batches, retrying while the log's store is down, and the next
        delivery does not wait for this one's fsync. Until written the entries stay pending in
        the log (a crash before then delivers them again: at least once). `inflight` events
        end when written (or when the broker stopped first)."""
        dead = sum(c.dead_letter is not None for c in completions)

        def recorded(_result, error) -> None:
            try:
                if error is None:
                    self.broker._recorded_replies(replies)
            finally:
                self.broker._inflight(-inflight)
                self.broker._release_dead_letters(dead)
        try:
            self.broker._completer.submit_nowait(completions, recorded)
        except RuntimeError:   # the broker stopped: read again at the next start
            recorded(None, RuntimeError("stopped"))

    # -- one delivery -------------------------------------------------------------------------
    def _send_with_retries(self, target, headers: dict[str, str], body: bytes,
                           want_reply: bool) -> tuple[_Outcome, bool]:
        """(last outcome, abandoned?) after up to 1 + retry attempts."""
        d = self.delivery
        attempt = 0
        while True:
            outcome = target.send(headers, body, d.timeout, want_reply)
            if outcome.ok or not outcome.retryable or attempt >= d.retry:
                return outcome, False
            attempt += 1
            self.broker._count_trigger(self, "retried")
            wait = backoff_delay(d.backoff_policy, d.backoff_delay, attempt, d.backoff_max)
            log.debug("Trigger %s: %s answered %s; retry %d/%d in %.3f s", self.name,
                      outcome.destination, outcome.status or "no response", attempt, d.retry, wait)
            if self.broker._abandon.wait(wait):
                return outcome, True

    def _deliver(self, entry: Entry) -> Completion | None:
        """The completion of a delivery, or None when the broker stopped during it."""
        outcome, abandoned = self._send_with_retries(self.subscriber, entry.headers, entry.body,
                                                     want_reply=True)
        if outcome.ok:
            self.broker._count_trigger(self, "delivered")
            replies = []
            if outcome.reply is not None:
                self.broker._count_trigger(self, "replies")
                headers, body = outcome.reply
                if entry.hops + 1 > self.broker.max_hops:
                    self.broker._count("loops_dropped")
                    log.warning("dropping reply %s (type %s) from Trigger %s: it went through "
                                "the broker %d times (a reply loop?)", headers.get("ce-id"),
                                headers.get("ce-type"), self.name, entry.hops + 1)
                else:
                    replies.append(Entry("", headers, body, entry.hops + 1,
                                         self.broker.matching(wire_attributes(headers))))
            return Completion(self.name, entry.id, replies)
        if abandoned:
            self.broker._count_trigger(self, "abandoned")
            return None
        reason = (f"HTTP {outcome.status}" if outcome.status
                  else outcome.body.decode(errors="replace"))
        why = "retries" if outcome.retryable else "a non-retryable answer"
        if self.dead_letter is not None:
            dl_outcome, abandoned = self._send_with_retries(
                self.dead_letter, dead_letter_headers(entry.headers, outcome), entry.body,
                want_reply=False)
            if dl_outcome.ok:
                self.broker._count_trigger(self, "dead_lettered")
                return Completion(self.name, entry.id)
            if abandoned:
                self.broker._count_trigger(self, "abandoned")
                return None
            self.broker._count("dead_letter_failed")
            reason += (f"; the deadLetterSink {dl_outcome.destination} failed too "
                       f"({dl_outcome.status or 'no response'})")
        if not self._wait_for_dead_letter_room():
            self.broker._count_trigger(self, "abandoned")
            return None
        self.broker._count_trigger(self, "dead_letter_logged")
        log.warning("event %s (type %s) for Trigger %s kept in the local dead-letter log after "
                    "%s: %s (`modelmonitor deadletters list` shows it, `modelmonitor "
                    "deadletters redrive` delivers it again)", entry.headers.get("ce-id"),
                    entry.headers.get("ce-type"), self.name, why, reason)
        dead = DeadLetter("", self.name, f"{why}: {reason}", outcome.status, outcome.destination,
                          int(time.time() * 1000), Entry(entry.id, entry.headers, entry.body))
        return Completion(self.name, entry.id, dead_letter=dead)

    def _wait_for_dead_letter_room(self) -> bool:
        """Wait while the dead-letter log is full (the event stays unacknowledged in this
        Trigger's log meanwhile); False when the broker stopped first."""
        dlog, warned = self.broker.log, False
        while True:
            try:
                if self.broker._reserve_dead_letter():
                    return True
                why = f"it holds {dlog.max_dead_letters} (its limit)"
            except Exception as err:   # the log's store is down: wait as for a full log
                why = f"it cannot be read ({err})"
            if not warned:
                log.warning("Trigger %s waits to dead-letter an event: the local dead-letter "
                            "log is full, %s; `modelmonitor deadletters redrive` or `purge` "
                            "makes room. Its undelivered events wait in the broker log.",
                            self.name, why)
                warned = True
            if self.broker._abandon.wait(DEAD_LETTER_FULL_WAIT_S):
                return False

    def snapshot(self) -> dict[str, Any]:
        return dict(self.counters)
