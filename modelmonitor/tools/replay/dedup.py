"""The window store's deduplication for whole chunks of records, over integers.

The store remembers each accepted logger event's identity (type, source, id) in processing-time
buckets of the replay clock and refuses an identity seen within its retention (``buckets``
buckets up to the record's own). Here a chunk is first checked on 64-bit hashes of the
identities, with NumPy: when no hash of the chunk repeats, within the chunk or in a retained
bucket, no identity does either and the whole chunk is accepted at once. Otherwise the chunk
takes the exact path, one record after the other on the identities themselves, so a hash
collision can cost time but never change a result.
"""
from __future__ import annotations

from collections import deque

import numpy as np


class _Bucket:
    __slots__ = ("number", "keys", "parts", "hashes", "exact")

    def __init__(self, number: int):
        self.number = number
        self.keys: list = []                    # identities accepted in this bucket
        self.parts: list[np.ndarray] = []       # their hashes, not yet merged into ``hashes``
        self.hashes = np.zeros(0, dtype=np.int64)   # sorted
        self.exact: set | None = None           # the identities as a set, once the exact path needed it

    def add(self, keys: list, hashes: np.ndarray) -> None:
        self.keys.extend(keys)
        self.parts.append(hashes)
        if self.exact is not None:
            self.exact.update(keys)

    def sorted_hashes(self) -> np.ndarray:
        if self.parts:
            parts = [np.sort(p) for p in self.parts]
            self.hashes = np.sort(np.concatenate([self.hashes, *parts]), kind="stable")   # merges sorted runs
            self.parts = []
        return self.hashes

    def exact_set(self) -> set:
        if self.exact is None:
            self.exact = set(self.keys)
        return self.exact


def _any_in(values: np.ndarray, sorted_pool: np.ndarray) -> bool:
    if not len(sorted_pool):
        return False
    at = np.minimum(np.searchsorted(sorted_pool, values), len(sorted_pool) - 1)
    return bool((sorted_pool[at] == values).any())


class Deduplicator:
    def __init__(self, buckets: int):
        self.buckets = buckets
        self.seen: deque[_Bucket] = deque()     # ascending bucket numbers

    def duplicates(self, keys: list, bucket_of: np.ndarray) -> np.ndarray:
        """Which records of the chunk are duplicates (``bucket_of``: each record's bucket number,
        non-decreasing); the others are remembered."""
        n = len(keys)
        dup = np.zeros(n, dtype=bool)
        hashes = np.fromiter(map(hash, keys), np.int64, n)
        ordered = np.sort(hashes)
        clash = bool((ordered[1:] == ordered[:-1]).any()) or \
            any(_any_in(ordered, b.sorted_hashes()) for b in self.seen)
        numbers = bucket_of.tolist()
        if not clash:
            cuts = [0] + (np.flatnonzero(np.diff(bucket_of)) + 1).tolist() + [n]
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                self._bucket(numbers[lo]).add(keys[lo:hi], hashes[lo:hi])
        else:
            lo_keep = self.buckets - 1
            for r, (key, b) in enumerate(zip(keys, numbers)):
                if any(key in s.exact_set() for s in self.seen if s.number >= b - lo_keep):
                    dup[r] = True
                else:
                    self._bucket(b).add([key], hashes[r:r + 1])
        # forget buckets past the retention of the latest one (no later record can see them)
        last = numbers[-1]
        while self.seen and self.seen[0].number < last - self.buckets + 1:
            self.seen.popleft()
        return dup

    def _bucket(self, number: int) -> _Bucket:
        if not self.seen or self.seen[-1].number != number:
            self.seen.append(_Bucket(number))
        return self.seen[-1]
