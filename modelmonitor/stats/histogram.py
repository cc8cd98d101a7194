"""Histogram counts on fixed edges plus underflow and overflow."""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from modelmonitor.stats._codec import (_F8, _HEADER, _TAG_HISTOGRAM, _U8, _VERSION, _array, _check_same_type, _expect_end, _float_values, _open)


class Histogram:
    """Counts over fixed bin edges plus one underflow and one overflow bin.

    ``counts`` has length K+2: ``[underflow, c_0 .. c_{K-1}, overflow]`` for K+1 edges. Inner bins
    are ``[e_i, e_{i+1})`` and the last one is closed, ``[e_{K-1}, e_K]``, exactly as
    ``numpy.histogram``; values below ``e_0`` go to underflow, above ``e_K`` to overflow.

    >>> h = Histogram([2, 10, 100]).update([1, 2, 9.5, 10, 100, 250])
    >>> h.get().tolist()
    [1, 2, 2, 1]
    """

    __slots__ = ("edges", "counts", "_search_edges")
    _FIXED = struct.Struct("<I")

    def __init__(self, edges: np.ndarray | Sequence[float]) -> None:
        try:
            e = np.array(edges, dtype=_F8, copy=True)
        except (TypeError, ValueError):
            raise ValueError(f"histogram edges must be numbers, got {edges!r}") from None
        if e.ndim != 1 or e.size < 2:
            raise ValueError(f"histogram edges must be a 1-D list of at least 2 numbers, got shape {e.shape}")
        if not np.isfinite(e).all():
            raise ValueError("histogram edges must be finite numbers")
        if not (np.diff(e) > 0).all():
            raise ValueError(f"histogram edges must be strictly increasing, got {e.tolist()}")
        e.flags.writeable = False
        self.edges = e
        # Searching the edges with the last one nudged up by one ulp puts a value equal to e_K in the
        # last inner bin (numpy's closed last bin) and only values above e_K in the overflow bin.
        search = e.copy()
        search[-1] = np.nextafter(e[-1], np.inf)
        self._search_edges = search
        self.counts = np.zeros(e.size + 1, dtype=np.int64)

    @property
    def bins(self) -> int:
        """Number of inner bins K."""
        return self.edges.size - 1

    def update(self, values: np.ndarray | Sequence) -> "Histogram":
        self._update_checked(_float_values(values, "Histogram.update"))
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        if x.size:
            slots = np.searchsorted(self._search_edges, x, side="right")  # 0 = under, K+1 = over
            self.counts += np.bincount(slots, minlength=self.counts.size)

    def merge(self, other: "Histogram") -> "Histogram":
        _check_same_type(self, other)
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot merge histograms with different edges "
                             f"({self.edges.tolist()} vs {other.edges.tolist()})")
        self.counts += other.counts
        return self

    def get(self) -> np.ndarray:
        """A copy of the counts ``[underflow, c_0 .. c_{K-1}, overflow]``."""
        return self.counts.copy()

    def to_bytes(self) -> bytes:
        return (_HEADER.pack(_TAG_HISTOGRAM, _VERSION) + self._FIXED.pack(self.counts.size)
                + self.counts.astype(_U8).tobytes())

    @classmethod
    def from_bytes(cls, edges: np.ndarray | Sequence[float], blob: bytes) -> "Histogram":
        """Read counts written by :meth:`to_bytes`; the edges are configuration, given again."""
        out = cls(edges)
        (size,), rest = _open(blob, _TAG_HISTOGRAM, cls.__name__, cls._FIXED)
        if size != out.counts.size:
            raise ValueError(f"Histogram.from_bytes: the bytes hold {size - 2} bins but the edges give {out.bins}")
        counts = _array(rest, _U8, size, cls.__name__)
        _expect_end(rest, size * 8, cls.__name__)
        if (counts > np.iinfo(np.int64).max).any():
            raise ValueError("Histogram.from_bytes: a count is out of range")
        out.counts = counts.astype(np.int64)
        return out

    def __repr__(self) -> str:
        return f"Histogram(edges={self.edges.tolist()}, counts={self.counts.tolist()})"
