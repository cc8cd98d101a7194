"""RFC 3339 event times to epoch milliseconds for a whole column at once.

Only the shape KServe's logger writes (``2026-01-01T00:00:12.345Z``, exactly 24 characters,
a valid date from 1970 on) is converted here; anything else is left to
:func:`modelmonitor.core.events.rfc3339_to_ms` one value at a time, so both give the same
answer wherever this one gives any.
"""
from __future__ import annotations

from typing import Sequence

import datetime as _dt

import numpy as np

_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22])
_SEPARATORS = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: ".", 23: "Z"}


def parse_times(values: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(milliseconds, converted) for a column of strings; ``converted[i]`` is False where the
    value is not of the logger's shape and must take the general parser."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    try:
        text = np.array(values, dtype=str)
    except (TypeError, ValueError):
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    if text.dtype.itemsize != 24 * 4:     # some value is not 24 characters long
        ok = np.char.str_len(text) == 24
        text = np.where(ok, text, "").astype("<U24")
    else:
        ok = np.ones(n, dtype=bool)
    codes = text.view(np.uint32).reshape(n, 24)
    ok &= (codes[:, _SEP_POS] == _SEP_CODES).all(axis=1)
    digits = codes[:, _DIGITS].astype(np.int64) - 48
    ok &= (digits.astype(np.uint64) <= 9).all(axis=1)      # negative wraps around: not a digit
    digits[~ok] = 0
    date = digits[:, :8] @ _DATE_WEIGHTS                     # YYYYMMDD as one integer
    clock = digits[:, 8:]
    hh, mi, ss = clock[:, 0] * 10 + clock[:, 1], clock[:, 2] * 10 + clock[:, 3], clock[:, 4] * 10 + clock[:, 5]
    ok &= (hh < 24) & (mi < 60) & (ss < 60)
    # Few distinct dates per chunk: each is checked and converted by the calendar itself.
    dates, inverse = np.unique(date, return_inverse=True)
    day_ms = np.array([_day_ms(int(v)) for v in dates.tolist()], dtype=np.int64)[inverse]
    ok &= day_ms >= 0
    ms = day_ms + clock @ _CLOCK_WEIGHTS
    return np.where(ok, ms, 0), ok


_SEP_POS = np.array(list(_SEPARATORS))
_SEP_CODES = np.array([ord(c) for c in _SEPARATORS.values()], dtype=np.uint32)
_DATE_WEIGHTS = np.array([10_000_000, 1_000_000, 100_000, 10_000, 1000, 100, 10, 1], dtype=np.int64)
_CLOCK_WEIGHTS = np.array([36_000_000, 3_600_000, 600_000, 60_000, 10_000, 1000, 100, 10, 1], dtype=np.int64)
_EPOCH = _dt.date(1970, 1, 1)


def _day_ms(yyyymmdd: int) -> int:
    """Epoch ms of a date from 1970 on, or -1 when it is not a date (or earlier)."""
    try:
        day = _dt.date(yyyymmdd // 10000, yyyymmdd // 100 % 100, yyyymmdd % 100)
    except ValueError:
        return -1
    return (day - _EPOCH).days * 86_400_000 if day >= _EPOCH else -1
