"""Open windows of a columnar replay, in process.

A window keeps its rows per group (numerical as float64, categorical as one JSON line per
request) and hands them to the aggregate handler's ``window_event`` through :meth:`read` as one
partial aggregate per group (the WindowStore.read contract: ``{group: [partial bytes]}``), built
by the aggregate's own codec, so window statistics come from the very same code.
"""
from __future__ import annotations

import json

import numpy as np

from modelmonitor.handlers import Monitor
from modelmonitor.tools.replay.decode import REQUEST, RESPONSE, Decoded
from modelmonitor.handlers.aggregate import AggregateCodec
from state.store import GROUPS, INPUTS, PREDICTIONS, PendingRequest

_KIND_OF_GROUP = {INPUTS: REQUEST, PREDICTIONS: RESPONSE}


class _Window:
    __slots__ = ("numeric", "categorical", "sealed")

    def __init__(self):
        self.numeric = {REQUEST: [], RESPONSE: []}        # arrays of rows
        self.categorical = {REQUEST: [], RESPONSE: []}    # JSON lines, one per request
        self.sealed = False


class WindowBuffers:
    def __init__(self, mon: Monitor):
        self.mon = mon
        self.codec = AggregateCodec(mon)
        self.open: dict[int, _Window] = {}                # window start -> content
        self.has_categorical = {REQUEST: bool(mon.inputs.categorical), RESPONSE: bool(mon.predictions.categorical)}

    def add(self, dec: Decoded, recs: np.ndarray, starts: np.ndarray) -> None:
        """Add the rows of records ``recs`` to the windows starting at ``starts`` (pairwise;
        records ascending within each window)."""
        if not len(recs):
            return
        inst_start = np.zeros(len(dec.n), dtype=np.int64)
        for k in (REQUEST, RESPONSE):
            sel = dec.kind == k
            inst_start[sel] = np.cumsum(dec.n[sel]) - dec.n[sel]
        order = np.argsort(starts, kind="stable")
        s_sorted, r_sorted = starts[order], recs[order]
        bounds = np.flatnonzero(np.diff(s_sorted)) + 1
        for group_starts, group_recs in zip(np.split(s_sorted, bounds), np.split(r_sorted, bounds)):
            start = int(group_starts[0])
            window = self.open.get(start)
            if window is None:
                window = self.open[start] = _Window()
            kinds = dec.kind[group_recs]
            for k in (REQUEST, RESPONSE):
                rk = group_recs[kinds == k] if (kinds != k).any() else group_recs
                if not len(rk) or (kinds != k).all():
                    continue
                n = dec.n[rk]
                first = inst_start[rk]
                lo, hi = int(first[0]), int(first[-1] + n[-1])
                if hi - lo == int(n.sum()):                 # contiguous rows: a slice
                    window.numeric[k].append(dec.numeric[k][lo:hi])
                    rows = None
                else:
                    rows = np.repeat(first - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
                    window.numeric[k].append(dec.numeric[k][rows])
                if self.has_categorical[k]:
                    cols = dec.categorical[k]
                    for a, c in zip(first.tolist(), n.tolist()):
                        window.categorical[k].append(
                            json.dumps([[col[j] for col in cols] for j in range(a, a + c)],
                                       separators=(",", ":")).encode() + b"\n")

    def open_starts(self) -> np.ndarray:
        return np.fromiter((s for s, w in self.open.items() if not w.sealed), dtype=np.int64)

    def seal(self, start: int) -> None:
        self.open[start].sealed = True

    def drop(self, start: int) -> None:
        self.open.pop(start, None)

    # -- what Aggregator.window_event reads (the WindowStore.read contract)
    def read(self, claim) -> dict:
        window = self.open[claim.start_ms]
        out = {}
        for g in GROUPS:
            k = _KIND_OF_GROUP[g]
            parts = window.numeric[k]
            num = b"".join(np.ascontiguousarray(p, dtype="<f8").tobytes() for p in parts) if parts else b""
            cat = b"".join(window.categorical[k])
            if num or cat:
                out[g] = [self.codec.build(g, [PendingRequest("", 0, 0, g, num, cat)])]
        return out
