"""The per-event replay: every logger event goes, one at a time, through the same handlers the
live functions run (ingest, outlier, aggregate with its Redis window store, drift).

This is the reference the columnar engine is held to (byte-identical output). It is also what
``modelmonitor replay --engine per-event`` runs, on the Redis given with ``--redis`` or on a
private ``redis-server``. One event per apply, so its results are those of a live deployment
that receives the events one by one in file order.
"""
from __future__ import annotations

from typing import Iterable

from modelmonitor.core import events as ev
from modelmonitor.handlers import Aggregator, AlertState, Monitor, Rejected, ingest_rows, outliers
from modelmonitor.tools.replay.common import (LOGGER_TYPES, LineError, Output, ReplayStats, body_of, drift_events,
                                              parse_line, rejection)


class PerEventReplay:
    def __init__(self, mon: Monitor, client, out: Output, stats: ReplayStats, *, replica: str = "replay"):
        self.mon = mon
        self.client = client
        self.out = out
        self.stats = stats
        self.aggregator = Aggregator.for_client(mon, client, live=False)  # a replay has no wall clock
        self.aggregator.token = replica
        self.alerts = AlertState(client, mon.name)
        self.clock = 0

    @staticmethod
    def reset(client, monitor: str) -> None:
        """A replay owns its monitor's keys: start from a clean slate so reruns are identical."""
        for key in client.scan_iter(match="{mm:%s}*" % monitor, count=1000):
            client.delete(key)

    def feed(self, items: Iterable) -> None:
        for item in items:
            self.feed_one(item)

    def feed_one(self, item) -> None:
        mon, stats = self.mon, self.stats
        stats.lines += 1
        try:
            doc = parse_line(mon, item, stats.lines)
        except LineError as exc:
            self.out.event(exc.event, self.clock)
            return
        if doc is None:
            return
        if doc["type"] not in LOGGER_TYPES:
            stats.ignored += 1
            return
        stats.logger_events += 1
        try:
            inst = ingest_rows(mon, doc, body_of(doc), self.clock, check_skew=False)
        except Rejected as exc:
            self.out.event(rejection(mon, exc.reason, doc), self.clock)
            return
        if inst is None:
            stats.ignored += 1
            return
        self.clock = max(self.clock, inst.event_time_ms)
        event = ev.make_event(ev.INSTANCES, mon.name, inst.id, inst.data(mon), source=mon.source("ingest"),
                              time_ms=inst.event_time_ms)
        found = outliers(mon, event, self.clock, check_skew=False)
        if found is not None:
            self.out.event(found, self.clock)
        pending = self.aggregator.encode(event)
        result = self.aggregator.apply([pending], self.clock)
        status = result.statuses[0]
        if status == "dup":
            stats.duplicates += 1
            return
        stats.instances += pending.instances
        if status.startswith("late:"):
            stats.late_requests += 1
            late = self.aggregator.late_event(event, status, result.watermark_ms)
            if late is not None:
                self.out.event(late, self.clock)
        if result.ready:
            self.aggregator.close_ready(self.clock, self._emit_window)

    def _emit_window(self, event) -> None:
        self.out.event(event, self.clock)
        for out in drift_events(self.mon, event, self.clock, self.alerts):
            self.out.event(out, self.clock)

    def finish(self) -> None:
        """End of input: every open window closes."""
        self.aggregator.store.flush()
        self.aggregator.close_ready(self.clock, self._emit_window)
