"""`modelmonitor replay`: a deterministic backtest over recorded logger events.

Each input line is one structured-mode CloudEvent (JSON). Lines run in file order through the
same ingest, outlier, aggregate and drift code as the functions. There is no wall clock: the
replay clock is the largest event time seen so far, so ``detectedAtMs``, ``closedAtMs`` and
``measuredAtMs`` (and so the whole output) are the same on every run. Instances are applied
to Redis in batches (one script call per batch, as the group commit does live); a batch's
result is the same as applying its events one by one. At the end every open window closes.
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Callable

import base64

import numpy as np
import orjson
from cloudevents.http import CloudEvent

from modelmonitor.core import events as ev
from modelmonitor.core.payloads import PayloadError, parse_request, split_columns
from modelmonitor.handlers import (Aggregator, AlertState, Instances, Monitor, Rejected, dead_letter, dedup_key, ingest_rows,
                       measure, outlier_event)
from state.store import INPUTS, PREDICTIONS, PendingRequest, encode_rows
from modelmonitor.local.redis_server import RedisServer, connect


@dataclass
class ReplayStats:
    lines: int = 0
    logger_events: int = 0
    instances: int = 0
    ignored: int = 0
    rejected: int = 0
    duplicates: int = 0
    late_requests: int = 0
    outlier_events: int = 0
    windows: int = 0
    drift_alerts: int = 0
    seconds: float = 0.0
    emitted: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["instancesPerSecond"] = round(self.instances / self.seconds) if self.seconds else None
        return d


class Replay:
    def __init__(self, mon: Monitor, client, write: Callable[[CloudEvent], None], *, batch: int = 2000,
                 replica: str = "replay"):
        self.mon = mon
        self.client = client
        self.write = write
        self.batch_size = batch
        self.aggregator = Aggregator.for_client(mon, client)
        self.aggregator.token = replica
        self.alerts = AlertState(client, mon.name)
        self.clock = 0
        self.stats = ReplayStats()
        self._pending: list = []
        self._pending_events: list = []
        self._all_numeric = not mon.inputs.categorical
        self._width = len(mon.inputs.features)

    def _emit(self, event: CloudEvent) -> None:
        self.stats.emitted[event["type"]] = self.stats.emitted.get(event["type"], 0) + 1
        self.write(event)

    def _emit_window(self, event: CloudEvent) -> None:
        self.stats.windows += 1
        self._emit(event)
        for out in measure(self.mon, event, self.clock, self.alerts):
            if out["type"] == ev.DRIFT_DETECTED:
                self.stats.drift_alerts += 1
            self._emit(out)

    def feed_lines(self, lines: list[str | bytes]) -> None:
        """A chunk of input lines, processed as one batch (one Redis script call)."""
        mon = self.mon
        items: list[tuple[Instances, int]] = []           # (instances, replay clock at that line)
        for line in lines:
            self.stats.lines += 1
            line = line.strip()
            if not line:
                continue
            try:
                doc = orjson.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                for key in ("type", "source", "id"):
                    if not isinstance(doc.get(key), str) or not doc[key]:
                        raise ValueError(f"attribute '{key}' is missing")
            except (ValueError, TypeError) as exc:
                self.stats.rejected += 1
                raw = line if isinstance(line, bytes) else line.encode()
                self._emit(dead_letter(mon.name, "ingest", f"line {self.stats.lines}: not a structured "
                                       f"CloudEvent: {exc}", raw=raw))
                continue
            if doc["type"] not in (ev.KSERVE_REQUEST, ev.KSERVE_RESPONSE):
                self.stats.ignored += 1
                continue
            self.stats.logger_events += 1
            data = doc.get("data")
            if data is None and "data_base64" in doc:
                data = base64.b64decode(doc["data_base64"])
            try:
                inst = ingest_rows(mon, doc, data, self.clock, check_skew=False, rows_parser=self._fast_rows)
            except Rejected as exc:
                self._reject(exc.reason, doc)
                continue
            if inst is None:
                self.stats.ignored += 1
                continue
            self.clock = max(self.clock, inst.event_time_ms)
            items.append((inst, self.clock))
        if items:
            self._process(items)

    def _fast_rows(self, data):
        """V1 rows of numbers of the right width, or None to take the general parser."""
        if self._all_numeric and type(data) is dict and len(data) == 1:
            rows = data.get("instances")
            width = self._width
            if type(rows) is list and rows and all(type(r) is list and len(r) == width and
                                                   all(type(v) is float or type(v) is int for v in r)
                                                   for r in rows):
                return rows
        return None

    def _reject(self, reason: str, doc: dict) -> None:
        self.stats.rejected += 1
        original = ev.from_json_doc(doc) if isinstance(doc, dict) else None
        self._emit(dead_letter(self.mon.name, "ingest", reason, original=original))

    def _process(self, items) -> None:
        mon = self.mon
        requests = [(i, c) for i, c in items if i.kind == "request"]
        matrices: dict[int, tuple[np.ndarray, list]] = {}
        if requests:
            all_rows = [row for inst, _ in requests for row in inst.rows]
            try:
                numeric, categorical = split_columns(all_rows, mon.inputs.features)
                ok = bool(np.isfinite(numeric).all())
            except PayloadError:
                ok = False
            if not ok:  # something slipped past the fast path: let each request speak for itself
                kept = []
                for inst, clock in items:
                    try:
                        if inst.kind == "request":
                            parse_request({"instances": inst.rows}, mon.inputs.features)
                        kept.append((inst, clock))
                    except PayloadError as exc:
                        self.stats.rejected += 1
                        self._emit(dead_letter(mon.name, "ingest", exc.reason))
                if len(kept) < len(items):
                    return self._process(kept) if kept else None
                numeric, categorical = split_columns(all_rows, mon.inputs.features)
            offsets = np.cumsum([0] + [len(inst.rows) for inst, _ in requests])
            for j, (inst, _) in enumerate(requests):
                lo, hi = offsets[j], offsets[j + 1]
                matrices[id(inst)] = (numeric[lo:hi], [c[lo:hi] for c in categorical])
            if mon.outlier_detector is not None:
                found = mon.outlier_detector.detect(numeric, categorical)
                by_request: dict[int, list] = {}
                if found:
                    owners = np.searchsorted(offsets, [o["instance"] for o in found], side="right") - 1
                    for o, j in zip(found, owners.tolist()):
                        o["instance"] -= int(offsets[j])
                        by_request.setdefault(j, []).append(o)
                for j in sorted(by_request):
                    inst, clock = requests[j]
                    self.stats.outlier_events += 1
                    self._emit(outlier_event(mon, inst.id, inst.request_id, inst.event_time_ms, by_request[j], clock))
        for inst, _ in items:
            if inst.kind == "request":
                num, cat_cols = matrices[id(inst)]
            else:
                num, cat_cols = split_columns(inst.rows, mon.predictions.features)
            cat_rows = [list(r) for r in zip(*cat_cols)] if cat_cols else None
            nb, cb = encode_rows(num, cat_rows)
            self._pending.append(PendingRequest(dedup_key(inst.id), inst.event_time_ms, len(inst.rows),
                                                PREDICTIONS if inst.kind == "response" else INPUTS, nb, cb))
            self._pending_events.append(inst)
        self.commit()

    def feed_line(self, line: str) -> None:
        self.feed_lines([line])

    def commit(self) -> None:
        if not self._pending:
            return
        result = self.aggregator.apply(self._pending, self.clock)
        for status, pending, inst in zip(result.statuses, self._pending, self._pending_events):
            if status == "dup":
                self.stats.duplicates += 1
                continue
            self.stats.instances += pending.instances
            if status.startswith("late:"):
                self.stats.late_requests += 1
                late = self.aggregator.late_event_for(inst.id, inst.request_id, inst.event_time_ms,
                                                      len(inst.rows), status, result.watermark_ms)
                if late is not None:
                    self._emit(late)
        self._pending.clear()
        self._pending_events.clear()
        if result.ready:
            self.aggregator.close_ready(self.clock, self._emit_window)

    def finish(self) -> ReplayStats:
        self.commit()
        self.aggregator.store.flush()
        self.aggregator.close_ready(self.clock, self._emit_window)
        return self.stats


def run_replay(monitor_path: str, input_path: str, output_path: str, *, baseline_path: str | None = None,
               redis_url: str | None = None, progress: IO | None = sys.stderr, batch: int = 2000) -> ReplayStats:
    mon = Monitor.from_files(monitor_path, baseline_path)
    server = None
    if redis_url is None:
        server = RedisServer(durable=False).start()
        redis_url = server.url
    client = connect(redis_url)
    started = time.perf_counter()
    last_report = started
    try:
        # A replay owns its monitor's keys: start from a clean slate so reruns are identical.
        for key in client.scan_iter(match="{mm:%s}*" % mon.name, count=1000):
            client.delete(key)
        with open(input_path, "rb") as src, open(output_path, "w", encoding="utf-8") as dst:
            replay = Replay(mon, client, lambda e: dst.write(ev.to_json_line(e) + "\n"), batch=batch)
            while True:
                chunk = list(itertools.islice(src, batch))
                if not chunk:
                    break
                replay.feed_lines(chunk)
                if progress is not None:
                    now = time.perf_counter()
                    if now - last_report >= 1.0:
                        last_report = now
                        rate = replay.stats.instances / (now - started) if now > started else 0
                        print(f"  {replay.stats.lines:,} lines, {replay.stats.instances:,} instances, "
                              f"{replay.stats.windows} windows ({rate:,.0f} instances/s)", file=progress, flush=True)
            stats = replay.finish()
        stats.seconds = time.perf_counter() - started
        return stats
    finally:
        client.close()
        if server is not None:
            server.cleanup()
