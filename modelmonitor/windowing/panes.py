"""Panes and a batch's window statuses, vectorised (pure NumPy; the Redis window store and its
Lua script apply the same rules).

A *pane* is a slice of ``gcd(duration, slide)`` aligned to the epoch: it lies in exactly the
windows that contain any of its instants, so an instance updates one pane whatever the slide,
and a window is the merge of its panes. Window ``k`` covers ``[k*slide, k*slide + duration)``;
the windows containing ``t`` are ``k0(t) .. k1(t)`` (see :mod:`modelmonitor.windowing.assigner`).

An instance's *status* is fixed by the watermark ``W`` it meets: a window is late for it when its
end is at or before ``W``. ``kf`` is the first window it is on time for (``k0`` when none is late);
``kf > k1`` means late for every window containing it.

>>> pane_ms(3_600_000, 300_000), pane_start(1_234_567, 300_000)
(300000, 1200000)
>>> import numpy as np
>>> t = np.array([16_000, 12_000, 30_500])
>>> kf, k0, k1 = first_on_time_windows(t, np.zeros(3, bool), None, 15_000, 5_000, 6_000)
>>> kf.tolist(), k0.tolist(), k1.tolist()
([1, 0, 4], [1, 0, 4], [3, 2, 6])
>>> first_on_time_windows(t[1:2], np.zeros(1, bool), 16_000, 15_000, 5_000, 6_000)[0].tolist()   # [0, 15 s) is late
[1]
>>> late_status(12_000, 2, 15_000, 5_000), late_status(12_000, 3, 15_000, 5_000)
('late:0,5000', 'late:0,5000,10000')
"""
from __future__ import annotations

import math

import numpy as np

#: Below every event time: "no watermark yet".
NO_TIME = -(1 << 62)


def pane_ms(duration_ms: int, slide_ms: int) -> int:
    """The pane length: the largest slice every window boundary falls on."""
    return math.gcd(duration_ms, slide_ms)


def pane_start(t_ms: int, pane: int) -> int:
    return t_ms // pane * pane


def first_on_time_windows(t: np.ndarray, dup: np.ndarray, w0: int | None, duration_ms: int, slide_ms: int,
                          delay_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(kf, k0, k1)`` per request of a batch applied in order, starting from watermark ``w0``.

    The watermark before request ``i`` is ``max(w0, max event time of the fresh requests before
    it - delay)`` (a duplicate moves nothing); ``kf`` is then the first window whose end is after
    it, at least ``k0``."""
    d, s = duration_ms, slide_ms
    fresh_t = np.where(dup, NO_TIME, t)
    before = np.empty_like(t)
    if len(t):
        before[0] = NO_TIME
        np.maximum.accumulate(fresh_t[:-1], out=before[1:])
    w = np.where(before > NO_TIME, before - delay_ms, NO_TIME)
    if w0 is not None:
        np.maximum(w, w0, out=w)
    k0 = (t - d) // s + 1
    k1 = t // s
    kf = np.where(w > NO_TIME, np.maximum(k0, (w - d) // s + 1), k0)
    return kf, k0, k1


def duplicates_in_batch(keys: list[str]) -> np.ndarray:
    """True for each key already seen earlier in the batch."""
    dup = np.zeros(len(keys), dtype=bool)
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        for i, key in enumerate(keys):
            dup[i] = key in seen
            seen.add(key)
    return dup


def late_status(t_ms: int, first_k: int, duration_ms: int, slide_ms: int) -> str:
    """``late:<start>,...``: the windows containing ``t`` before window ``first_k`` (the first it
    counted for, or ``k1 + 1`` when late for all)."""
    k0 = (t_ms - duration_ms) // slide_ms + 1
    return "late:" + ",".join(str(k * slide_ms) for k in range(k0, first_k))
