"""The aggregate handler: ``inference.instances`` -> Redis panes of partial aggregates ->
``window.closed``.

A group-committed batch becomes one partial :class:`WindowAggregate` per (pane, first window,
row group), built with NumPy from the batch's packed rows (:class:`AggregateCodec`), and is
applied to Redis in one atomic script call with the batch's dedup and lateness. A closing window
is the merge of its panes' partials; its event is fixed in Redis before it is emitted, so a
re-close after a closer died emits the identical event.
"""
from __future__ import annotations

import json
import math
import struct
import uuid
from typing import Any, Callable, Sequence

import numpy as np
from modelmonitor.core.events import Event

from modelmonitor.core import events as ev
from modelmonitor.core.backoff import parse_duration, total_backoff
from modelmonitor.runtime import metrics
from state.store import INPUTS, PREDICTIONS, ApplyResult, PendingRequest, WindowStore, encode_rows
from modelmonitor.handlers.segment_windows import (EXCESS, ExcessCounts, compared_data, excess_counts, excess_request,
                                                   group_of,
                                                   segment_partials, segments_in)
from modelmonitor.stats.window import WindowAggregate
from modelmonitor.handlers.monitor import (Monitor, Rejected, check_instances,
    wall_clock_ms, window_info, _split)


class AggregateCodec:
    """Partial aggregates of a monitor's row groups, as the window store keeps them.

    A group is ``i`` (inputs) or ``p`` (predictions), optionally followed by ``@<segment>``,
    or ``x``: the excess of a segmented monitor (see :mod:`.segment_windows`).
    """

    def __init__(self, mon: Monitor):
        self.mon = mon

    def layout(self, group: str):
        kind = group.split("@", 1)[0]
        if kind == INPUTS:
            return self.mon.inputs
        if kind == PREDICTIONS:
            return self.mon.predictions
        raise ValueError(f"unknown row group {group!r}")

    def _config(self, group: str):
        layout = self.layout(group)
        names = set(layout.names)
        return (layout.features, {n: e for n, e in self.mon.edges.items() if n in names},
                {n: c for n, c in self.mon.known_categories.items() if n in names})

    def empty(self, group: str) -> WindowAggregate | ExcessCounts:
        if group == EXCESS:
            return ExcessCounts()
        return WindowAggregate(*self._config(group))

    def aggregate(self, group: str, requests: Sequence[PendingRequest]) -> WindowAggregate:
        """One partial from packed requests (vectorised: one NumPy update per batch)."""
        return self.add(self.empty(group), group, requests)

    def add(self, agg: WindowAggregate, group: str, requests: Sequence[PendingRequest]) -> WindowAggregate:
        """Add packed requests to ``agg`` in place (vectorised: one NumPy update per batch)."""
        if group == EXCESS:
            return agg.add(requests)
        layout = self.layout(group)
        n_num = len(layout.numeric)
        numeric = (np.frombuffer(b"".join([r.numeric for r in requests]), dtype="<f8").reshape(-1, n_num)
                   if n_num else None)
        columns: list = []
        if layout.categorical:
            rows = [row for r in requests for line in r.categorical.split(b"\n") if line for row in json.loads(line)]
            columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in layout.categorical]
        agg.update_columns(numeric, columns)
        return agg

    def build(self, group: str, requests: Sequence[PendingRequest]) -> bytes:
        return self.aggregate(group, requests).to_bytes()

    def read(self, group: str, partial: bytes) -> WindowAggregate | ExcessCounts:
        if group == EXCESS:
            return ExcessCounts.from_bytes(partial)
        return WindowAggregate.from_bytes(*self._config(group), partial)

    def merged(self, group: str, partials: Sequence[bytes]) -> WindowAggregate:
        agg = self.empty(group)
        for blob in partials:
            agg.merge(self.read(group, blob))
        return agg

    def merge(self, group: str, partials: Sequence[bytes]) -> bytes:
        return self.merged(group, partials).to_bytes()


def _pack_numeric_rows(rows: list) -> bytes | None:
    """Rows of plain finite numbers packed as float64 (the common case, without NumPy's
    per-call overhead); None when anything needs the general path and its error messages."""
    flat = [v for row in rows for v in row]
    for v in flat:
        if type(v) is not float and type(v) is not int:
            return None
    try:
        packed = struct.pack(f"<{len(flat)}d", *flat)
    except (struct.error, OverflowError):
        return None
    return packed if all(math.isfinite(v) for v in flat) else None


def dedup_key(instances_event_id: str) -> str:
    """What the window store remembers of a logger event: a digest of the instances id, which
    is itself derived from the logger event's (type, source, id) for this monitor."""
    return ev.short_hash(instances_event_id)


class Aggregator:
    """Feeds instances into the monitor's Redis windows and turns sealed windows into
    ``window.closed`` events."""

    live = True     # see __init__

    def __init__(self, mon: Monitor, store: WindowStore, *, replica: str | None = None, live: bool = True):
        self.mon = mon
        self.store = store
        codec = getattr(store, "codec", None)
        self.codec = codec if isinstance(codec, AggregateCodec) else AggregateCodec(mon)
        # Live: event times more than maxClockSkew ahead of this function's clock are refused
        # (as ingest does), so no forged or mis-timed event can move the watermark past every
        # open window. A replay has no wall clock and skips the check.
        self.live = live
        self.token = replica or uuid.uuid4().hex
        # Processing time this replica last received a valid instances event, applied or not
        # (the store may have been down), or started; and since when its applies fail: tick().
        self.last_received_ms = wall_clock_ms()
        self.failing_since_ms: int | None = None
        self.redelivery_horizon_ms = redelivery_horizon_ms(mon.spec.delivery)

    @classmethod
    def for_client(cls, mon: Monitor, client, *, live: bool = True, **kwargs) -> "Aggregator":
        w = mon.spec.window
        store = WindowStore(client, mon.name, duration_ms=w.duration_ms, slide_ms=w.slide_ms,
                            delay_ms=w.watermark_delay_ms, codec=AggregateCodec(mon), **kwargs)
        return cls(mon, store, live=live)

    def encode(self, event: Event, now_ms: int | None = None) -> PendingRequest:
        """Validate and pack one instances event (pure: no Redis). Live, an event time beyond
        the function's clock (``now_ms``, else the wall clock) plus maxClockSkew is rejected:
        it would move the watermark past every real instance to come."""
        if now_ms is None and self.live:
            now_ms = wall_clock_ms()
        data, layout = check_instances(self.mon, event, now_ms if self.live else None)
        num = _pack_numeric_rows(data["instances"]) if not layout.categorical else None
        if num is not None:
            cat = b""
        else:
            numeric, categorical = _split(data["instances"], layout)
            cat_rows = [list(r) for r in zip(*categorical)] if categorical else None
            num, cat = encode_rows(numeric, cat_rows)
        group = group_of(PREDICTIONS if data.get("kind") == "response" else INPUTS, self.mon.data_segment(data))
        self.last_received_ms = wall_clock_ms()
        # Dedup key: the logger event (type, source, id), which the instances id encodes.
        return PendingRequest(dedup_key(event["id"]), data["eventTimeMs"], len(data["instances"]),
                              group, num, cat)

    def apply(self, pending: Sequence[PendingRequest], now_ms: int) -> ApplyResult:
        """Apply a batch to the store; a segmented monitor first admits its segments (see
        :mod:`modelmonitor.core.segments`): requests of segments beyond maxSegments are applied
        as excess, counted but in no segment's statistics."""
        try:
            excess = None
            if self.mon.segmented:
                pending, excess = self.admit(pending)
            result = self.store.apply(pending, now_ms)
        except Exception:
            if self.failing_since_ms is None:
                self.failing_since_ms = now_ms
            raise
        self.failing_since_ms = None
        if excess:
            metrics.SEGMENT_EXCESS.inc(sum(p.instances for p, st in zip(pending, result.statuses)
                                           if p.group == EXCESS and st != "dup"))
        return result

    def admit(self, pending: Sequence[PendingRequest]) -> tuple[list[PendingRequest], int]:
        """The batch with the requests of segments that found no slot made excess requests, and
        how many there are."""
        seg = self.mon.spec.segment
        segments = [p.group.split("@", 1)[1] for p in pending]
        admitted = self.store.admit_segments([(name, p.event_time_ms) for name, p in zip(segments, pending)],
                                             seg.max_segments, seg.retention_ms)
        out = [p if ok else excess_request(p, name) for p, name, ok in zip(pending, segments, admitted)]
        return out, admitted.count(False)

    def late_event(self, event: Event, status: str, watermark_ms: int | None) -> Event | None:
        """The optional ``instances.late`` event for a request that was late for some window."""
        if not self.mon.spec.late_events or not status.startswith("late:"):
            return None
        data = event.data if isinstance(event.data, dict) else json.loads(event.data)
        return self.late_event_for(event["id"], data.get("requestId"), data["eventTimeMs"],
                                   len(data["instances"]), status, watermark_ms)

    def late_event_for(self, inst_id: str, request_id, t: int, n: int, status: str,
                       watermark_ms: int | None) -> Event | None:
        if not self.mon.spec.late_events or not status.startswith("late:"):
            return None
        d = self.mon.spec.window.duration_ms
        starts = [int(x) for x in status[5:].split(",") if x]
        out = {"monitor": self.mon.name, "requestId": request_id, "eventTimeMs": t,
               "watermarkMs": watermark_ms, "lateWindows": [{"startMs": x, "endMs": x + d} for x in starts],
               "instances": n}
        return ev.make_event(ev.LATE_INSTANCES, self.mon.name, inst_id + "/late", out,
                             source=self.mon.source("aggregate"), time_ms=t)

    def tick(self, now_ms: int) -> int:
        """The PingSource tick: advance the watermark of an idle stream (see WindowStore.tick).

        The store measures idleness from the last *applied* request. While the store is down
        requests keep arriving but none is applied, so the first tick after it comes back would
        see a long-idle stream and push the watermark past the windows the backlog belongs to,
        making all of it late. So a stream is not idle, whatever the store says, while this
        replica received an event within idleTimeout (or started less than idleTimeout ago: a
        restarted replica cannot tell whether a backlog waits at the broker), nor while the
        broker may still be redelivering requests whose apply failed here (the Trigger's retry
        horizon, from spec.delivery, after the first failure; a successful apply ends it).
        """
        idle = self.mon.spec.window.idle_timeout_ms
        if now_ms - self.last_received_ms < idle:
            return 0
        if self.failing_since_ms is not None and now_ms - self.failing_since_ms < self.redelivery_horizon_ms + idle:
            return 0
        return self.store.tick(now_ms, idle)[1]

    def close_ready(self, now_ms: int, emit: Callable[[Event], None], limit: int = 64) -> int:
        """Close sealed windows: claim (lease), compute, emit, then free. ``emit`` must raise
        if the event could not be sent; the window is then released for a later retry.
        Afterwards (whatever happened) the open / ready window gauges are refreshed."""
        try:
            return self._close_ready(now_ms, emit, limit)
        finally:
            self.observe_windows()

    def observe_windows(self) -> None:
        """Set the windows-open and windows-ready gauges (one pipelined round trip; skipped
        quietly when the store is unreachable: the closer reports that failure itself)."""
        prefix = self.store.prefix
        try:
            pipe = self.store.client.pipeline(transaction=False)
            pipe.zcard(prefix + ":open")
            pipe.zcard(prefix + ":ready")
            n_open, n_ready = pipe.execute()
        except Exception:
            return
        metrics.WINDOWS_OPEN.set(n_open)
        metrics.WINDOWS_READY.set(n_ready)

    def _close_ready(self, now_ms: int, emit: Callable[[Event], None], limit: int) -> int:
        closed = 0
        while True:
            claims = self.store.claim(self.token, limit)
            if not claims:
                return closed
            for claim in claims:
                try:
                    events = self.closed_events(claim, now_ms)
                    if events is None:      # the lease went to another closer: it emits the window
                        continue
                    for event in events:
                        emit(event)
                except BaseException:
                    self.store.release(claim, self.token)
                    raise
                self.store.complete(claim, self.token)
                closed += 1
            if len(claims) < limit:
                return closed

    def closed_events(self, claim, now_ms: int) -> list[Event] | None:
        """The window's events: those an earlier closer fixed in Redis, else computed now and
        fixed (first writer wins); None when the lease is no longer ours. Fixing them renews the
        lease, and the computation reads O(panes x features x sketch size)."""
        held, stored = self.store.stored_result(claim, self.token)
        if not held:
            return None
        if stored is None:
            result = self.window_result(claim, now_ms)
            stored = self.store.store_result(claim, self.token, json.dumps(result, separators=(",", ":"),
                                                                          allow_nan=False).encode())
            if stored is None:
                return None
        return self.make_events(claim.start_ms, claim.end_ms, json.loads(stored))

    def window_events(self, claim, now_ms: int) -> list[Event]:
        """The window's events computed from its partials (no lease bookkeeping)."""
        return self.make_events(claim.start_ms, claim.end_ms, self.window_result(claim, now_ms))

    def window_result(self, claim, now_ms: int):
        """What a closed window gives, as fixed in Redis: its ``window.closed`` data; for a
        segmented monitor ``[[type, data], ...]``: a ``window.closed`` per segment with rows in
        the window (sorted by segment), ``segments.compared`` when ``spec.segment.compare``'s two
        segments both have one, then ``segments.excess`` if instances found no slot."""
        partials = self.store.read(claim)
        args = (claim.start_ms, claim.end_ms, claim.late, claim.watermark_ms, now_ms)
        if not self.mon.segmented:
            return self.window_data(*args, partials)
        out: list = [[ev.WINDOW_CLOSED, dict(self.window_data(*args, segment_partials(partials, name)), segment=name)]
                     for name in segments_in(partials)]
        compared = compared_data(self.mon, out, window_info(claim.start_ms, claim.end_ms), now_ms)
        if compared is not None:
            out.append([ev.SEGMENTS_COMPARED, compared])
        if EXCESS in partials:
            counts = excess_counts(partials[EXCESS])
            out.append([ev.SEGMENTS_EXCESS, {"monitor": self.mon.name, "window": window_info(claim.start_ms, claim.end_ms),
                                             "maxSegments": self.mon.spec.segment.max_segments, **counts,
                                             "watermarkMs": claim.watermark_ms, "closedAtMs": now_ms}])
        return out

    def make_events(self, start_ms: int, end_ms: int, result) -> list[Event]:
        mon = self.mon
        if not mon.segmented:
            return [ev.make_event(ev.WINDOW_CLOSED, mon.name, ev.window_id(mon.name, start_ms, end_ms),
                                  result, source=mon.source("aggregate"), time_ms=end_ms)]
        out = []
        for etype, data in result:
            wid = (ev.window_id(mon.name, start_ms, end_ms, data["segment"]) if etype == ev.WINDOW_CLOSED
                   else ev.window_id(mon.name, start_ms, end_ms)
                   + ("/compare" if etype == ev.SEGMENTS_COMPARED else "/excess"))
            out.append(ev.make_event(etype, mon.name, wid, data, source=mon.source("aggregate"), time_ms=end_ms))
        return out

    def window_data(self, start_ms: int, end_ms: int, late: int, watermark_ms: int | None, closed_at_ms: int,
                    partials: dict[str, Sequence[bytes]]) -> dict:
        """The ``window.closed`` data from a window's partials per group (``{group: [bytes]}``)."""
        record = self.finalize(partials)
        return {
            "monitor": self.mon.name,
            "window": window_info(start_ms, end_ms),
            "count": record["count"],
            "late": late,
            "watermarkMs": watermark_ms,
            "closedAtMs": closed_at_ms,
            "features": record["features"],
            "covariance": record.get("covariance"),
            "correlation": record.get("correlation"),
        }

    def finalize(self, partials: dict[str, Sequence[bytes]]) -> dict:
        """Statistics of a window from its partial aggregates per group."""
        mon = self.mon
        out: dict[str, Any] = {"count": 0, "features": {}, "covariance": None, "correlation": None}
        for group, layout in ((INPUTS, mon.inputs), (PREDICTIONS, mon.predictions)):
            if not layout.features:
                continue
            rec = self.codec.merged(group, partials.get(group, ())).finalize(mon.spec.stats)
            out["features"].update(rec["features"])
            if group == INPUTS:
                out["count"] = rec["count"]
                out["covariance"] = rec.get("covariance")
                out["correlation"] = rec.get("correlation")
            else:
                out["predictionCount"] = rec["count"]
        return out


def redelivery_horizon_ms(delivery: dict | None) -> int:
    """How long the broker keeps redelivering a failed event: the sum of the backoff waits of
    the monitor's Trigger delivery (spec.delivery over the rendered defaults: 5 retries,
    exponential, PT0.2S), at most an hour.

    >>> redelivery_horizon_ms(None), redelivery_horizon_ms({"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT1S"})
    (12400, 6000)
    """
    d = {"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S", **(delivery or {})}
    try:
        delay = parse_duration(str(d.get("backoffDelay") or ""))
    except ValueError:
        delay = 0.2
    waits = total_backoff(d.get("backoffPolicy") or "exponential", delay, min(int(d.get("retry") or 0), 64),
                          maximum=3600.0)
    return int(min(waits, 3600.0) * 1000)

