"""Sum of values."""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from modelmonitor.stats._codec import (_HEADER, _TAG_SUM, _VERSION, _check_same_type, _expect_end, _float_values, _open)


class Sum:
    """Sum of the values (0.0 when empty); each batch is summed pairwise by NumPy.

    >>> Sum().update([1.5, 2.5]).merge(Sum().update([4])).get()
    8.0
    """

    __slots__ = ("total",)
    _FIXED = struct.Struct("<d")

    def __init__(self) -> None:
        self.total = 0.0

    def update(self, values: np.ndarray | Sequence) -> "Sum":
        self._update_checked(_float_values(values, "Sum.update"))
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        if x.size:
            self.total += float(x.sum())

    def merge(self, other: "Sum") -> "Sum":
        _check_same_type(self, other)
        self.total += other.total
        return self

    def get(self) -> float:
        return self.total

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_TAG_SUM, _VERSION) + self._FIXED.pack(self.total)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Sum":
        (total,), rest = _open(blob, _TAG_SUM, cls.__name__, cls._FIXED)
        _expect_end(rest, 0, cls.__name__)
        out = cls()
        out.total = total
        return out

    def __repr__(self) -> str:
        return f"Sum({self.total!r})"
