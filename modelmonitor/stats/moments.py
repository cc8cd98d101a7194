"""Mean and variance by count, mean and M2 (Chan et al.)."""
from __future__ import annotations

import math
import struct
from typing import Sequence

import numpy as np

from modelmonitor.stats._codec import (_HEADER, _TAG_MOMENTS, _VERSION, _check_ddof, _check_same_type, _expect_end, _float_values, _is_constant, _maybe_constant, _open)


class Moments:
    """Count, mean and M2 (sum of squared deviations) with Chan et al.'s parallel merge.

    Each batch is reduced exactly as a two-pass computation, then combined by
    ``M2 = M2_a + M2_b + delta**2 * n_a * n_b / n``, which is numerically stable and mergeable.
    ``ddof=1`` is the sample variance (default), ``ddof=0`` the population variance; values that
    are undefined (empty, or ``count <= ddof``) are None. Constant data has a variance of exactly 0.

    >>> m = Moments().update([2, 4, 4, 4]).merge(Moments().update([5, 5, 7, 9]))
    >>> m.count, m.mean, m.variance(ddof=0), m.stddev(ddof=0)
    (8, 5.0, 4.0, 2.0)
    >>> Moments().update([3.0]).variance(), Moments().update([3.0]).variance(ddof=0)
    (None, 0.0)
    """

    __slots__ = ("count", "mean", "m2")
    _FIXED = struct.Struct("<Qdd")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, values: np.ndarray | Sequence) -> "Moments":
        self._update_checked(_float_values(values, "Moments.update"))
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        n = x.size
        if n == 0:
            return
        mean = float(x.mean())
        deviations = x - mean
        m2 = float(deviations @ deviations)
        if _maybe_constant(m2, n, mean) and _is_constant(x):
            mean, m2 = float(x[0]), 0.0
        self._combine(n, mean, m2)

    def _combine(self, n_b: int, mean_b: float, m2_b: float) -> None:
        n_a = self.count
        if n_b == 0:
            return
        if n_a == 0:
            self.count, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta * delta * (n_a * n_b / n)
        self.count = n

    def merge(self, other: "Moments") -> "Moments":
        _check_same_type(self, other)
        self._combine(other.count, other.mean, other.m2)
        return self

    def variance(self, ddof: int = 1) -> float | None:
        ddof = _check_ddof(ddof)
        if self.count <= ddof:
            return None
        return self.m2 / (self.count - ddof)

    def stddev(self, ddof: int = 1) -> float | None:
        var = self.variance(ddof)
        return None if var is None else math.sqrt(var)

    def get(self) -> dict:
        """``{"count", "mean", "variance"}`` (sample variance; None where undefined)."""
        return {"count": self.count, "mean": self.mean if self.count else None, "variance": self.variance(1)}

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_TAG_MOMENTS, _VERSION) + self._FIXED.pack(self.count, self.mean, self.m2)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Moments":
        (count, mean, m2), rest = _open(blob, _TAG_MOMENTS, cls.__name__, cls._FIXED)
        _expect_end(rest, 0, cls.__name__)
        if not (math.isfinite(mean) and math.isfinite(m2) and m2 >= 0):
            raise ValueError(f"Moments.from_bytes: mean {mean} / M2 {m2} is not a valid state")
        out = cls()
        out.count, out.mean, out.m2 = count, mean, m2
        return out

    def __repr__(self) -> str:
        return f"Moments(count={self.count}, mean={self.mean!r}, m2={self.m2!r})"
