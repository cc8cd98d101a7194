"""The columnar replay: the per-event semantics (dedup, watermark, lateness, sealing, closing)
computed for a whole decoded chunk at once with NumPy, in constant memory.

Per chunk of records (logger events in line order), with running maxima:

- clock after record ``i``: the largest event time so far (a record without a time takes the
  clock as it stood);
- dedup: a record whose (type, source, id) was accepted within the store's retention buckets
  (processing-time buckets of the clock) is a duplicate and changes nothing;
- watermark after ``i``: ``W = (largest accepted event time) - watermarkDelay``; a record is
  late for each of its windows whose ``end <= W`` as it stood before it;
- a window seals at the first record after which ``W >= end``; the late instances counted
  since the previous seal go to the first window of that seal (earliest end), and it closes
  with ``closedAtMs`` the clock at that record; at the end of input every open window closes.

The events come out in the reference's order: per line a dead letter, or the outlier event,
the late event, then the windows that line closed (each followed by its drift events).
"""
from __future__ import annotations

from operator import itemgetter

import numpy as np

from modelmonitor.core import events as ev
from modelmonitor.core.segments import SegmentAdmission
from modelmonitor.handlers import Aggregator, Monitor, outlier_event
from modelmonitor.tools.replay.common import JsonAlertState, Output, ReplayStats, drift_events
from modelmonitor.tools.replay.decode import CLOCK_MARK, NO_TIME, Decoded
from modelmonitor.tools.replay.dedup import Deduplicator
from modelmonitor.tools.replay.windows import WindowBuffers
from state.store import Claim, WindowStore

NONE = np.iinfo(np.int64).min // 4          # "no watermark yet" (below any real one)
_ORDER = itemgetter(0, 1, 2)                # emitted: (line, priority, seq, what) in the reference's order
_DETECTED_AT = '"detectedAtMs":%d'


class _NoRedis:
    """Lets a WindowStore be built for its parameters only (dedup retention and buckets)."""

    def register_script(self, _text):
        return None


class ColumnarReplay:
    def __init__(self, mon: Monitor, out: Output, stats: ReplayStats):
        self.mon = mon
        self.out = out
        self.stats = stats
        w = mon.spec.window
        self.d, self.s, self.delay = w.duration_ms, w.slide_ms, w.watermark_delay_ms
        params = WindowStore(_NoRedis(), mon.name, duration_ms=self.d, slide_ms=self.s, delay_ms=self.delay)
        self.bucket_ms, self.n_buckets = params.dedup_bucket_ms, params.dedup_buckets
        self.windows = WindowBuffers(mon)
        self.aggregator = Aggregator(mon, self.windows, live=False)  # a replay has no wall clock
        self.alerts = JsonAlertState()
        seg = mon.spec.segment
        self.admission = None if seg is None else SegmentAdmission(seg.max_segments, seg.retention_ms)
        self.late_events = mon.spec.late_events
        self.clock = 0
        self.max_t: int | None = None
        self.late = 0                                   # late instances since the previous seal
        self.dedup = Deduplicator(self.n_buckets)
        self.lines = 0

    # ------------------------------------------------------------------ per chunk
    def feed(self, dec: Decoded) -> None:
        stats = self.stats
        first_line_clock = self.clock
        stats.lines += dec.lines
        stats.logger_events += dec.logger_events
        stats.ignored += dec.ignored
        R = len(dec.line)
        emit: list[tuple] = []                         # (line, priority, seq, what)
        if R:
            self._records(dec, emit)
        if dec.dead:
            # a dead letter's time is the clock as it stood at its line
            rec_lines = dec.line
            for i, event in dec.dead:
                j = int(np.searchsorted(rec_lines, i, side="left")) - 1
                emit.append((i, 0, 0, ("dead", event, int(self._clock_after[j]) if j >= 0 else first_line_clock)))
        emit.sort(key=_ORDER)
        # Consecutive outlier events already serialised are written at once.
        texts: list[str] = []
        mark = _DETECTED_AT % CLOCK_MARK
        for item in emit:
            what = item[3]
            if what[0] == "outlier" and type(what[3]) is str:
                texts.append(what[3].replace(mark, _DETECTED_AT % what[5], 1))
                continue
            if texts:
                self.out.lines(ev.OUTLIER_DETECTED, texts)
                texts = []
            self._emit(what)
        if texts:
            self.out.lines(ev.OUTLIER_DETECTED, texts)
        self.lines += dec.lines

    def _records(self, dec: Decoded, emit: list) -> None:
        stats = self.stats
        R = len(dec.line)
        t_raw = dec.t
        absent = t_raw == NO_TIME
        run = np.maximum.accumulate(np.concatenate([[self.clock], np.where(absent, -1, t_raw)]))
        clock_after = run[1:]
        t = np.where(absent, run[:-1], t_raw)
        self._clock_after = clock_after
        # -- segments: admitted in line order, duplicates included (as the aggregate admits
        # before its store finds duplicates)
        admitted = None
        if self.admission is not None:
            admitted = np.asarray(self.admission.admit(zip(dec.segment, t.tolist())), dtype=bool)
        # -- dedup over processing-time buckets of the clock
        buckets = clock_after // self.bucket_ms
        dup = self.dedup.duplicates(dec.keys, buckets)
        accepted = ~dup
        stats.duplicates += int(dup.sum())
        stats.instances += int(dec.n[accepted].sum())
        # -- watermark before / after each record
        acc_t = np.where(accepted, t, NONE)
        start_max = NONE if self.max_t is None else self.max_t
        max_run = np.maximum.accumulate(np.concatenate([[start_max], acc_t]))
        w_run = np.where(max_run == NONE, NONE, max_run - self.delay)
        w_before, w_after = w_run[:-1], w_run[1:]
        # -- windows of the accepted records
        ia = np.nonzero(accepted)[0]
        ta = t[ia]
        k_last = ta // self.s
        k_first = (ta - self.d) // self.s + 1
        m = k_last - k_first + 1
        rep = np.repeat(np.arange(len(ia)), m)
        total = int(m.sum())
        k = k_first[rep] + (np.arange(total) - np.repeat(np.cumsum(m) - m, m))
        ws = k * self.s
        we = ws + self.d
        pair_rec = ia[rep]
        late = we <= w_before[pair_rec]
        late_inc = np.zeros(R, dtype=np.int64)
        if late.any():
            np.add.at(late_inc, pair_rec[late], dec.n[pair_rec[late]])
            late_recs = np.unique(pair_rec[late])
            stats.late_requests += len(late_recs)
            if self.late_events:
                for r in late_recs.tolist():
                    starts = ws[late & (pair_rec == r)].tolist()
                    emit.append((int(dec.line[r]), 2, 0, ("late", dec, r, int(t[r]), starts, int(w_after[r]),
                                                      int(clock_after[r]))))
        late_cum = self.late + np.cumsum(late_inc)
        # -- window contents
        on_time = ~late
        self.windows.add(dec, pair_rec[on_time], ws[on_time], admitted)
        # -- sealing: each open window at the first record after which W >= end
        starts = self.windows.open_starts()
        if len(starts):
            ends = starts + self.d
            seal_at = np.searchsorted(w_after, ends, side="left")
            sealed = seal_at < R
            if sealed.any():
                order = np.lexsort((ends[sealed], seal_at[sealed]))
                s_starts, s_at = starts[sealed][order], seal_at[sealed][order]
                last_at = -1
                base = 0                                  # late_cum already holds the carry
                for seq, (start, j) in enumerate(zip(s_starts.tolist(), s_at.tolist())):
                    late_here = 0
                    if j != last_at:
                        late_here = int(late_cum[j]) - base
                        base = int(late_cum[j])
                        last_at = j
                    claim = Claim(f"{start}:{start + self.d}", start, start + self.d, late_here, int(w_after[j]))
                    self.windows.seal(start)
                    emit.append((int(dec.line[j]), 3, seq, ("window", claim, int(clock_after[j]))))
                self.late = int(late_cum[-1]) - base
            else:
                self.late = int(late_cum[-1])
        else:
            self.late = int(late_cum[-1])
        # -- outliers found by the decoder
        if dec.outliers:
            rs = np.fromiter((r for r, _ in dec.outliers), np.int64, len(dec.outliers))
            emit.extend((line, 1, 0, ("outlier", dec, r, what, tr, clock))
                        for (r, what), line, tr, clock in zip(dec.outliers, dec.line[rs].tolist(), t[rs].tolist(),
                                                              clock_after[rs].tolist()))
        self.clock = int(clock_after[-1])
        if accepted.any():
            self.max_t = int(max_run[-1])

    # ------------------------------------------------------------------ end of input
    def finish(self) -> None:
        starts = self.windows.open_starts()
        w = None if self.max_t is None else self.max_t - self.delay
        late = self.late
        for start in sorted(starts.tolist(), key=lambda s: s + self.d):
            claim = Claim(f"{start}:{start + self.d}", start, start + self.d, late, w)
            late = 0
            self.windows.seal(start)
            self._emit(("window", claim, self.clock))
        self.late = late

    # ------------------------------------------------------------------ output
    def _emit(self, what: tuple) -> None:
        out, mon = self.out, self.mon
        kind = what[0]
        if kind == "dead":
            out.event(what[1], what[2])
        elif kind == "outlier":
            _, dec, r, found, t, clock = what
            if isinstance(found, str):
                out.line(ev.OUTLIER_DETECTED, found.replace(_DETECTED_AT % CLOCK_MARK, _DETECTED_AT % clock, 1))
            else:
                typ, source, lid = dec.keys[r]
                segment = None if dec.segment is None else dec.segment[r]
                out.event(outlier_event(mon, ev.instances_id(mon.name, typ, source, lid), lid, t, found, clock,
                                        segment), clock)
        elif kind == "late":
            _, dec, r, t, starts, w_after, clock = what
            typ, source, lid = dec.keys[r]
            status = "late:" + ",".join(str(x) for x in starts)
            event = self.aggregator.late_event_for(ev.instances_id(mon.name, typ, source, lid), lid, t,
                                                   int(dec.n[r]), status, w_after)
            if event is not None:
                out.event(event, clock)
        else:
            _, claim, clock = what
            events = self.aggregator.window_events(claim, clock)
            self.windows.drop(claim.start_ms)
            for event in events:
                out.event(event, clock)
                for drift in drift_events(mon, event, clock, self.alerts):
                    out.event(drift, clock)
