"""Count of values."""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from modelmonitor.stats._codec import (_HEADER, _TAG_COUNT, _VERSION, _check_same_type, _expect_end, _open)


class Count:
    """Number of values seen.

    >>> Count().update([4.0, 5.0]).merge(Count().update([6.0])).get()
    3
    """

    __slots__ = ("n",)
    _FIXED = struct.Struct("<Q")

    def __init__(self) -> None:
        self.n = 0

    def update(self, values: np.ndarray | Sequence) -> "Count":
        if isinstance(values, (str, bytes)):
            raise ValueError("Count.update: expected a batch of values, got a single string")
        try:
            self.n += len(values)
        except TypeError:
            raise ValueError("Count.update: expected a batch (sequence or array), "
                             f"got {type(values).__name__}") from None
        return self

    def merge(self, other: "Count") -> "Count":
        _check_same_type(self, other)
        self.n += other.n
        return self

    def get(self) -> int:
        return self.n

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_TAG_COUNT, _VERSION) + self._FIXED.pack(self.n)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Count":
        (n,), rest = _open(blob, _TAG_COUNT, cls.__name__, cls._FIXED)
        _expect_end(rest, 0, cls.__name__)
        out = cls()
        out.n = n
        return out

    def __repr__(self) -> str:
        return f"Count({self.n})"
