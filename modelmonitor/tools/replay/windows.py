"""Open windows of a columnar replay, in process, in constant memory.

A window keeps one mergeable :class:`~modelmonitor.stats.window.WindowAggregate` per row group
(inputs, predictions) and at most :data:`BLOCK_ROWS` pending rows per group: rows are added in
blocks of exactly ``BLOCK_ROWS`` (``update_columns``), the rest at close, so memory per window
is fixed whatever the window's size, and the statistics do not depend on how the input was
cut into chunks (same blocks, same float rounding, with or without worker processes). :meth:`WindowBuffers.read` hands them to the aggregate handler's
``window_events`` (the WindowStore.read contract: ``{group: [partials]}``) through a codec that
takes the aggregates as they are, so window statistics come from the very same code. A segmented
monitor's window keeps one per row group and segment (``i@<segment>``, ``p@<segment>``) and the
counts of the instances of segments that found no slot (the excess group).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from modelmonitor.handlers import Monitor
from modelmonitor.handlers.aggregate import AggregateCodec
from modelmonitor.handlers.segment_windows import EXCESS, ExcessCounts, group_of
from modelmonitor.stats.window import WindowAggregate
from modelmonitor.tools.replay.decode import REQUEST, RESPONSE, Decoded
from state.store import INPUTS, PREDICTIONS, PendingRequest

_GROUP_OF_KIND = {REQUEST: INPUTS, RESPONSE: PREDICTIONS}


class InProcessCodec(AggregateCodec):
    """An :class:`AggregateCodec` whose partials may be aggregates in memory (no bytes round trip)."""

    def merged(self, group: str, partials: Sequence) -> WindowAggregate:
        if len(partials) == 1 and isinstance(partials[0], WindowAggregate):
            return partials[0]
        agg = self.empty(group)
        for part in partials:
            agg.merge(part if isinstance(part, WindowAggregate) else self.read(group, part))
        return agg


#: Rows of a window's group added to its aggregate at once (and the most it holds pending).
BLOCK_ROWS = 4096


class _Group:
    """One row group of a window: its aggregate and the rows not yet added to it."""
    __slots__ = ("aggregate", "numeric", "categorical", "pending")

    def __init__(self, aggregate: WindowAggregate):
        self.aggregate = aggregate
        self.numeric: list[np.ndarray] = []
        self.categorical: list[list] = []       # per part: one column per categorical feature
        self.pending = 0

    def add(self, numeric: np.ndarray, categorical: list) -> None:
        self.numeric.append(numeric)
        self.categorical.append(categorical)
        self.pending += len(numeric)
        if self.pending >= BLOCK_ROWS:
            self._flush(whole_blocks=True)

    def _flush(self, whole_blocks: bool) -> None:
        numeric = np.concatenate(self.numeric) if len(self.numeric) > 1 else self.numeric[0]
        columns = [[v for part in self.categorical for v in part[j]] for j in range(len(self.categorical[0]))] \
            if len(self.categorical) > 1 else [list(c) for c in self.categorical[0]]
        n = len(numeric)
        upto = n - n % BLOCK_ROWS if whole_blocks else n
        agg = self.aggregate
        for lo in range(0, upto, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, upto)
            part = numeric[lo:hi]
            agg.update_columns(part if part.shape[1] else None, [c[lo:hi] for c in columns])
        self.numeric = [numeric[upto:]] if upto < n else []
        self.categorical = [[c[upto:] for c in columns]] if upto < n else []
        self.pending = n - upto

    def done(self) -> WindowAggregate:
        if self.pending:
            self._flush(whole_blocks=False)
        return self.aggregate


class _Window:
    __slots__ = ("groups", "excess", "sealed")

    def __init__(self):
        self.groups: dict[str, _Group] = {}
        self.excess: ExcessCounts | None = None
        self.sealed = False


class WindowBuffers:
    def __init__(self, mon: Monitor):
        self.mon = mon
        self.codec = InProcessCodec(mon)
        self.open: dict[int, _Window] = {}                # window start -> content

    def add(self, dec: Decoded, recs: np.ndarray, starts: np.ndarray, admitted: np.ndarray | None = None) -> None:
        """Add the rows of records ``recs`` to the windows starting at ``starts`` (pairwise;
        records ascending within each window). A segmented monitor's records go to their
        segment (``dec.segment``), or to the excess counts where ``admitted`` is False."""
        if not len(recs):
            return
        if dec.segment is None:
            self._add(dec, recs, starts, None)
            return
        names = np.asarray(dec.segment, dtype=object)[recs]
        ok = admitted[recs]
        for r, start in zip(recs[~ok].tolist(), starts[~ok].tolist()):
            window = self._window(start)
            if window.excess is None:
                window.excess = ExcessCounts()
            window.excess.add([PendingRequest("", 0, int(dec.n[r]), EXCESS, b"", dec.segment[r].encode())])
        for name in sorted(set(names[ok].tolist())):
            sel = ok & (names == name)
            self._add(dec, recs[sel], starts[sel], name)

    def _window(self, start: int) -> _Window:
        window = self.open.get(start)
        if window is None:
            window = self.open[start] = _Window()
        return window

    def _add(self, dec: Decoded, recs: np.ndarray, starts: np.ndarray, segment: str | None) -> None:
        inst_start = np.zeros(len(dec.n), dtype=np.int64)
        for k in (REQUEST, RESPONSE):
            sel = dec.kind == k
            inst_start[sel] = np.cumsum(dec.n[sel]) - dec.n[sel]
        order = np.argsort(starts, kind="stable")
        s_sorted, r_sorted = starts[order], recs[order]
        bounds = np.flatnonzero(np.diff(s_sorted)) + 1
        for group_starts, group_recs in zip(np.split(s_sorted, bounds), np.split(r_sorted, bounds)):
            window = self._window(int(group_starts[0]))
            kinds = dec.kind[group_recs]
            for k in (REQUEST, RESPONSE):
                mixed = (kinds != k)
                rk = group_recs[~mixed] if mixed.any() else group_recs
                if not len(rk):
                    continue
                n = dec.n[rk]
                first = inst_start[rk]
                total = int(n.sum())
                lo = int(first[0])
                if int(first[-1] + n[-1]) - lo == total:            # contiguous rows: a slice
                    rows = slice(lo, lo + total)
                    categorical = [col[rows] for col in dec.categorical[k]]
                else:
                    rows = np.repeat(first - (np.cumsum(n) - n), n) + np.arange(total)
                    picks = rows.tolist()
                    categorical = [[col[j] for j in picks] for col in dec.categorical[k]]
                group = group_of(_GROUP_OF_KIND[k], segment)
                state = window.groups.get(group)
                if state is None:
                    state = window.groups[group] = _Group(self.codec.empty(group))
                state.add(dec.numeric[k][rows], categorical)

    def open_starts(self) -> np.ndarray:
        return np.fromiter((s for s, w in self.open.items() if not w.sealed), dtype=np.int64)

    def seal(self, start: int) -> None:
        self.open[start].sealed = True

    def drop(self, start: int) -> None:
        self.open.pop(start, None)

    # -- what Aggregator.window_events reads (the WindowStore.read contract)
    def read(self, claim) -> dict:
        window = self.open[claim.start_ms]
        out = {}
        for g, state in window.groups.items():
            agg = state.done()
            if agg.count:
                out[g] = [agg]
        if window.excess is not None:
            out[EXCESS] = [window.excess]
        return out
