"""Helpers shared by the statistics: input checks and the binary form's building blocks.

Every statistic's bytes start with ``(tag, format version)`` so a blob of one kind is never read
as another; numbers are little-endian (struct headers + raw NumPy buffers; no pickle, no JSON).
"""
from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

_F8 = np.dtype("<f8")
_U8 = np.dtype("<u8")
_U4 = np.dtype("<u4")
_VERSION = 1
_HEADER = struct.Struct("<BB")  # (tag, format version) at the start of every statistic's bytes

# Statistic tags in the binary form, so a blob of one kind is never read as another.
_TAG_COUNT, _TAG_SUM, _TAG_MIN, _TAG_MAX, _TAG_MOMENTS = 1, 2, 3, 4, 5
_TAG_QUANTILES, _TAG_HISTOGRAM, _TAG_COMOMENTS, _TAG_CATEGORIES = 6, 7, 8, 9
# 6 was the exact (all values) quantiles of format 1; the KLL sketch has its own tag.
_TAG_KLL = 10

_DDOF = {"sample": 1, "population": 0}


def _float_values(values: Any, what: str = "values") -> np.ndarray:
    """``values`` as a 1-D float64 array, refusing non-numbers, NaN and infinities."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D batch of numbers, got an array of shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        if arr.dtype.kind != "O" or not all(map(_is_number, arr)):  # object arrays: slow path, rare
            raise ValueError(f"{what}: expected numbers, got {_describe_kind(arr)}")
    try:
        arr = arr.astype(_F8, copy=False)
    except OverflowError:
        raise ValueError(f"{what}: a value is too large for a 64-bit float") from None
    _check_finite(arr, what)
    return arr


def _describe_kind(arr: np.ndarray) -> str:
    """What a non-numeric array holds, for error messages."""
    if arr.dtype.kind == "b":
        return "booleans"
    for index, value in enumerate(arr.flat):
        if not _is_number(value):
            return f"{type(value).__name__} {value!r} at index {index}"
    return f"values of dtype {arr.dtype}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_finite(arr: np.ndarray, what: str) -> None:
    if arr.size and not np.isfinite(arr).all():
        index = np.unravel_index(int(np.flatnonzero(~np.isfinite(arr))[0]), arr.shape)
        where = index[0] if arr.ndim == 1 else index
        raise ValueError(f"{what}: {arr[index]} at index {where} is not a finite number")


def _check_ddof(ddof: Any) -> int:
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative integer (1 = sample, 0 = population), got {ddof!r}")
    return int(ddof)


def _check_same_type(self: Any, other: Any) -> None:
    if type(other) is not type(self):
        raise ValueError(f"cannot merge {type(other).__name__} into {type(self).__name__}")


def _open(blob: bytes | bytearray | memoryview, tag: int, name: str, fixed: struct.Struct) -> tuple:
    """Check a statistic's header and return its fixed fields, then everything after them."""
    data = memoryview(blob).cast("B")
    if len(data) < _HEADER.size + fixed.size:
        raise ValueError(f"{name}.from_bytes: {len(data)} bytes is too short to be a {name}")
    got_tag, version = _HEADER.unpack_from(data)
    if got_tag != tag:
        raise ValueError(f"{name}.from_bytes: the bytes hold statistic tag {got_tag}, not a {name} (tag {tag})")
    if version != _VERSION:
        raise ValueError(f"{name}.from_bytes: unsupported format version {version} (this code reads {_VERSION})")
    return fixed.unpack_from(data, _HEADER.size), data[_HEADER.size + fixed.size:]


def _array(data: memoryview, dtype: np.dtype, count: int, name: str, offset: int = 0) -> np.ndarray:
    need = offset + count * dtype.itemsize
    if len(data) < need:
        raise ValueError(f"{name}.from_bytes: truncated ({len(data)} bytes, need {need})")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()


def _expect_end(data: memoryview, used: int, name: str) -> None:
    if len(data) != used:
        raise ValueError(f"{name}.from_bytes: {len(data) - used} unexpected trailing bytes")


def _is_constant(x: np.ndarray) -> bool:
    return bool((x == x[0]).all())


def _maybe_constant(m2: float, n: int, mean: float) -> bool:
    # A constant batch leaves only rounding noise (about n*(log2(n)*eps*|mean|)**2 <= 1e-20*n*mean**2)
    # in M2; such batches are checked exactly, so constant data gives a variance of exactly 0.
    return m2 <= 1e-20 * n * mean * mean


def _plain(value: Any) -> float | None:
    """A JSON-ready float: None for undefined or overflowed (non-finite) values."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def percentile_key(q: float) -> str:
    """The ``percentiles`` key for ``q``: shortest decimal form, no trailing ``.0``.

    >>> percentile_key(25.0), percentile_key(99.9), percentile_key(0.001)
    ('25', '99.9', '0.001')
    """
    return np.format_float_positional(float(q), trim="-")


# ----------------------------------------------------------------------------------------------
# scalar statistics
