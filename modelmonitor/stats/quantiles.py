"""Percentiles from an Apache DataSketches KLL sketch: fixed size, mergeable, bounded rank error.

``K = 400``. DataSketches states the single-rank normalised error of KLL as a fit to the 99th
percentile of the maximum error measured over many trials: for k = 400 it is 0.68%
(``kll_doubles_sketch.get_normalized_rank_error(400, False)``), inside the 1% the window contract
allows, at 99% confidence, whatever the number of values and however partials were merged. The
error measured against NumPy on 1,000,000 values merged from 1,000 partials is in
docs/benchmarks.md; tests assert the bound. A sketch holds at most about 3k values (under 10 KB).

While fewer than ``k`` values were seen the sketch holds them all, and a percentile is exact
(NumPy's linear interpolation over the retained values). Beyond that a percentile is the sketch's
quantile at rank ``q/100`` (inclusive ranks): a value whose rank is within the bound of ``q``.

>>> qs = Quantiles().update([1, 2, 3]).merge(Quantiles().update([4]))
>>> qs.percentile(50), qs.percentile([25, 75]), Quantiles().percentile(50)
(2.5, [1.75, 3.25], None)
>>> import numpy as np
>>> big = Quantiles().update(np.arange(100_000, dtype=float))
>>> abs(big.percentile(50) - 50_000) <= RANK_ERROR * 100_000
True
>>> Quantiles.from_bytes(big.to_bytes()).count
100000
"""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np
from datasketches import kll_doubles_sketch

from modelmonitor.stats._codec import (_F8, _HEADER, _TAG_KLL, _VERSION, _check_same_type, _float_values, _open)

#: The KLL parameter: 0.68% single-rank error at 99% confidence (see the module docstring).
K = 400
#: The documented percentile rank error bound (what tests and docs promise): 1%.
RANK_ERROR = 0.01


class Quantiles:
    """Percentiles of all values seen, from a KLL sketch (exact while fewer than ``K`` values)."""

    __slots__ = ("sketch",)
    _FIXED = struct.Struct("<I")

    def __init__(self) -> None:
        self.sketch = kll_doubles_sketch(K)

    def update(self, values: np.ndarray | Sequence) -> "Quantiles":
        self._update_checked(_float_values(values, "Quantiles.update"))
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        if x.size:
            x = np.ascontiguousarray(x, dtype=_F8)
            self.sketch.update(x if x.flags.writeable else x.copy())  # the binding refuses read-only arrays

    @property
    def count(self) -> int:
        return int(self.sketch.n)

    @property
    def exact(self) -> bool:
        """True while the sketch still holds every value (percentiles are then exact)."""
        return not self.sketch.is_estimation_mode()

    def merge(self, other: "Quantiles") -> "Quantiles":
        _check_same_type(self, other)
        if not other.sketch.is_empty():
            self.sketch.merge(other.sketch)
        return self

    def percentile(self, q: float | Sequence[float]) -> float | None | list:
        """Percentile(s) ``q`` in [0, 100]; None (or a list of None) when empty."""
        qs = np.asarray(q, dtype=_F8)
        if qs.ndim > 1 or not np.isfinite(qs).all() or ((qs < 0) | (qs > 100)).any():
            raise ValueError(f"percentiles must be numbers in [0, 100], got {q!r}")
        if self.sketch.is_empty():
            return None if qs.ndim == 0 else [None] * qs.size
        flat = np.atleast_1d(qs)
        if self.exact:
            # Every value is retained: NumPy's percentile over them, the same as over the raw values.
            values = np.sort(np.asarray(self._retained(), dtype=_F8))
            result = np.percentile(values, flat)
        else:
            result = np.asarray(self.sketch.get_quantiles((flat / 100.0).tolist(), True), dtype=_F8)
            result[flat == 0] = self.sketch.get_min_value()
            result[flat == 100] = self.sketch.get_max_value()
        return float(result[0]) if qs.ndim == 0 else [float(v) for v in result]

    def _retained(self) -> list[float]:
        # In exact mode every retained item has weight 1, and the sketch's quantile at the mid rank
        # (i + 0.5)/n (inclusive) is the (i+1)-th smallest value, with no float tie at rank bounds.
        n = self.count
        return self.sketch.get_quantiles([(i + 0.5) / n for i in range(n)], True)

    def get(self) -> float | None:
        """The median (None when empty)."""
        return self.percentile(50.0)

    def to_bytes(self) -> bytes:
        blob = self.sketch.serialize()
        return _HEADER.pack(_TAG_KLL, _VERSION) + self._FIXED.pack(len(blob)) + blob

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Quantiles":
        (size,), rest = _open(blob, _TAG_KLL, cls.__name__, cls._FIXED)
        if len(rest) != size:
            raise ValueError(f"Quantiles.from_bytes: truncated ({len(rest)} bytes of a {size}-byte sketch)"
                             if len(rest) < size else f"Quantiles.from_bytes: {len(rest) - size} unexpected trailing bytes")
        out = cls()
        try:
            out.sketch = kll_doubles_sketch.deserialize(bytes(rest))
        except Exception as exc:  # the C++ library raises its own exception types
            raise ValueError(f"Quantiles.from_bytes: not a KLL sketch ({exc})") from None
        if out.sketch.k != K:
            raise ValueError(f"Quantiles.from_bytes: sketch parameter k={out.sketch.k}, this code uses {K}")
        if not out.sketch.is_empty() and not (np.isfinite(out.sketch.get_min_value())
                                              and np.isfinite(out.sketch.get_max_value())):
            raise ValueError("Quantiles.from_bytes: the sketch holds non-finite values")
        return out

    def __repr__(self) -> str:
        return f"Quantiles(count={self.count}, k={K})"
