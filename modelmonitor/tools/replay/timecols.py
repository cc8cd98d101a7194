"""RFC 3339 event times to epoch milliseconds for a whole column at once.

Only the shape KServe's logger writes (``2026-01-01T00:00:12.345Z``, exactly 24 characters,
a valid date from 1970 on) is converted here; anything else is left to
:func:`modelmonitor.core.events.rfc3339_to_ms` one value at a time, so both give the same
answer wherever this one gives any.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22])
_SEPARATORS = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: ".", 23: "Z"}
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_times(values: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(milliseconds, converted) for a column of strings; ``converted[i]`` is False where the
    value is not of the logger's shape and must take the general parser."""
    n = len(values)
    ms = np.zeros(n, dtype=np.int64)
    if n == 0:
        return ms, np.zeros(0, dtype=bool)
    try:
        text = np.array(values, dtype=str)
    except (TypeError, ValueError):
        return ms, np.zeros(n, dtype=bool)
    if text.dtype.itemsize != 24 * 4:     # some value is not 24 characters long
        lengths = np.char.str_len(text)
        ok = lengths == 24
        text = np.where(ok, text, "").astype("<U24")
    else:
        ok = np.ones(n, dtype=bool)
    codes = text.view(np.uint32).reshape(n, 24).astype(np.int64)
    digits = codes[:, _DIGITS] - 48
    ok &= ((digits >= 0) & (digits <= 9)).all(axis=1)
    for pos, ch in _SEPARATORS.items():
        ok &= codes[:, pos] == ord(ch)
    dg = np.where(ok[:, None], digits, 0)
    year = dg[:, 0] * 1000 + dg[:, 1] * 100 + dg[:, 2] * 10 + dg[:, 3]
    month = dg[:, 4] * 10 + dg[:, 5]
    day = dg[:, 6] * 10 + dg[:, 7]
    hh, mi, ss = dg[:, 8] * 10 + dg[:, 9], dg[:, 10] * 10 + dg[:, 11], dg[:, 12] * 10 + dg[:, 13]
    frac = dg[:, 14] * 100 + dg[:, 15] * 10 + dg[:, 16]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    mclip = np.clip(month, 0, 12)
    dim = _DAYS_IN_MONTH[mclip] + ((mclip == 2) & leap)
    ok &= (year >= 1970) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= dim)
    ok &= (hh < 24) & (mi < 60) & (ss < 60)
    days = days_from_civil(year, np.where(ok, month, 1), np.where(ok, day, 1))
    ms = days * 86_400_000 + hh * 3_600_000 + mi * 60_000 + ss * 1000 + frac
    return np.where(ok, ms, 0), ok
