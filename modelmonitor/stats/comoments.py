"""Co-moments of d-vectors: covariance and Pearson correlation."""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from modelmonitor.stats._codec import (_F8, _HEADER, _TAG_COMOMENTS, _VERSION, _array, _check_ddof, _check_finite, _check_same_type, _describe_kind, _expect_end, _is_constant, _maybe_constant, _open, _plain)


class CoMoments:
    """Count, mean vector and co-moment matrix ``C = sum (x - mean)(x - mean)^T`` of d-vectors.

    Batches are merged with Chan et al.'s pairwise formula
    ``C = C_a + C_b + outer(delta, delta) * n_a * n_b / n``. ``covariance(ddof)`` is
    ``C / (n - ddof)`` (every entry None when ``n <= ddof``); ``correlation()`` is Pearson's r,
    with None where either variance is 0 (a constant feature, or fewer than 2 values).

    >>> cm = CoMoments(2).update([[1, 2], [2, 4]]).merge(CoMoments(2).update([[3, 5]]))
    >>> [[round(v, 9) for v in row] for row in cm.covariance()]
    [[1.0, 1.5], [1.5, 2.333333333]]
    >>> CoMoments(2).update([[1, 7], [2, 7]]).correlation()
    [[1.0, None], [None, None]]
    """

    __slots__ = ("dim", "count", "mean", "comoment")
    _FIXED = struct.Struct("<IQ")

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"CoMoments: dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.count = 0
        self.mean = np.zeros(self.dim, dtype=_F8)
        self.comoment = np.zeros((self.dim, self.dim), dtype=_F8)

    def update(self, values: np.ndarray | Sequence) -> "CoMoments":
        """Add a batch of rows, shape ``(n, dim)``."""
        arr = values if isinstance(values, np.ndarray) else np.asarray(values)
        if arr.ndim == 1 and arr.size == 0:
            arr = arr.reshape(0, self.dim)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"CoMoments.update: expected rows of shape (n, {self.dim}), got {arr.shape}")
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"CoMoments.update: expected numbers, got {_describe_kind(arr)}")
        arr = arr.astype(_F8, copy=False)
        _check_finite(arr, "CoMoments.update")
        self._update_checked(arr)
        return self

    def _update_checked(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if n == 0:
            return
        mean = x.mean(axis=0)
        deviations = x - mean
        comoment = deviations.T @ deviations
        for j in np.flatnonzero(_maybe_constant(np.diag(comoment), n, mean)):
            if _is_constant(x[:, j]):  # exact zeros, so a constant feature has variance exactly 0
                mean[j] = x[0, j]
                comoment[j, :] = 0.0
                comoment[:, j] = 0.0
        self._combine(n, mean, comoment)

    def _combine(self, n_b: int, mean_b: np.ndarray, comoment_b: np.ndarray) -> None:
        n_a = self.count
        if n_b == 0:
            return
        if n_a == 0:
            self.count, self.mean, self.comoment = n_b, mean_b.copy(), comoment_b.copy()
            return
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.comoment = self.comoment + comoment_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def merge(self, other: "CoMoments") -> "CoMoments":
        _check_same_type(self, other)
        if other.dim != self.dim:
            raise ValueError(f"cannot merge CoMoments of dimension {other.dim} into dimension {self.dim}")
        self._combine(other.count, other.mean, other.comoment)
        return self

    def _symmetric(self) -> np.ndarray:
        upper = np.triu(self.comoment)
        return upper + np.triu(upper, 1).T

    def covariance(self, ddof: int = 1) -> list[list[float | None]]:
        ddof = _check_ddof(ddof)
        if self.count <= ddof:
            return [[None] * self.dim for _ in range(self.dim)]
        return [[_plain(v) for v in row] for row in self._symmetric() / (self.count - ddof)]

    def correlation(self) -> list[list[float | None]]:
        c = self._symmetric()
        scale = np.sqrt(np.diag(c))
        defined = scale > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.clip(c / np.outer(scale, scale), -1.0, 1.0)
        np.fill_diagonal(r, 1.0)
        return [[_plain(r[i, j]) if defined[i] and defined[j] else None for j in range(self.dim)]
                for i in range(self.dim)]

    def get(self) -> list[list[float | None]]:
        """The sample covariance matrix (ddof=1)."""
        return self.covariance(1)

    def to_bytes(self) -> bytes:
        return (_HEADER.pack(_TAG_COMOMENTS, _VERSION) + self._FIXED.pack(self.dim, self.count)
                + self.mean.astype(_F8).tobytes() + self.comoment.astype(_F8).tobytes())

    @classmethod
    def from_bytes(cls, blob: bytes) -> "CoMoments":
        (dim, count), rest = _open(blob, _TAG_COMOMENTS, cls.__name__, cls._FIXED)
        out = cls(dim)
        mean = _array(rest, _F8, dim, cls.__name__)
        comoment = _array(rest, _F8, dim * dim, cls.__name__, offset=dim * 8).reshape(dim, dim)
        _expect_end(rest, (dim + dim * dim) * 8, cls.__name__)
        _check_finite(mean, "CoMoments.from_bytes")
        _check_finite(comoment, "CoMoments.from_bytes")
        out.count, out.mean, out.comoment = count, mean, comoment
        return out

    def __repr__(self) -> str:
        return f"CoMoments(dim={self.dim}, count={self.count})"
