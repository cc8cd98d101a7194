"""Minimum and maximum."""
from __future__ import annotations

import math
import struct
from typing import Sequence

import numpy as np

from modelmonitor.stats._codec import (_HEADER, _TAG_MAX, _TAG_MIN, _VERSION, _check_same_type, _expect_end, _float_values, _open)


class _Extreme:
    """Shared code of :class:`Min` and :class:`Max`; the empty state is the identity (+-inf)."""

    __slots__ = ("value",)
    _FIXED = struct.Struct("<d")
    _EMPTY = math.inf
    _TAG = 0

    def __init__(self) -> None:
        self.value = self._EMPTY

    def update(self, values: np.ndarray | Sequence) -> "_Extreme":
        self._update_checked(_float_values(values, f"{type(self).__name__}.update"))
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        if x.size:
            self._fold(float(self._reduce(x)))

    def merge(self, other: "_Extreme") -> "_Extreme":
        _check_same_type(self, other)
        self._fold(other.value)
        return self

    def get(self) -> float | None:
        return None if self.value == self._EMPTY else self.value

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self._TAG, _VERSION) + self._FIXED.pack(self.value)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "_Extreme":
        (value,), rest = _open(blob, cls._TAG, cls.__name__, cls._FIXED)
        _expect_end(rest, 0, cls.__name__)
        if math.isnan(value) or value == -cls._EMPTY:
            raise ValueError(f"{cls.__name__}.from_bytes: {value} is not a valid state")
        out = cls()
        out.value = value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get()!r})"


class Min(_Extreme):
    """Smallest value (None when empty).

    >>> Min().update([3, -1.5]).merge(Min()).get()
    -1.5
    """

    __slots__ = ()
    _EMPTY = math.inf
    _TAG = _TAG_MIN
    _reduce = staticmethod(np.min)

    def _fold(self, value: float) -> None:
        if value < self.value:
            self.value = value


class Max(_Extreme):
    """Largest value (None when empty).

    >>> Max().update([3, -1.5]).merge(Max().update([7])).get()
    7.0
    """

    __slots__ = ()
    _EMPTY = -math.inf
    _TAG = _TAG_MAX
    _reduce = staticmethod(np.max)

    def _fold(self, value: float) -> None:
        if value > self.value:
            self.value = value
