"""Counts per category: exact up to a bound of distinct values, then a frequent-items sketch.

Up to ``MAX_EXACT`` distinct categories a window counts every category exactly. Past that, the
counts move into an Apache DataSketches frequent-items sketch (``lg_max_k = LG_MAX_K``: up to 768
tracked categories, each count within ``epsilon * total`` = 0.34% of the total of its true count),
and ``get()`` lists the categories the sketch can report without false positives; what it does
not list is ``other``. The totals stay exact in both modes: ``count`` (non-missing values),
``missing`` (None values) and the number of values unseen in the baseline (counted when they
arrive, against the known set), so ``unseen_share`` is exact too.

>>> cc = CategoryCounts({"a", "b"}).update(["a", "c", None, "a"])
>>> cc.get(), cc.count, cc.missing, cc.unseen_share, cc.other
({'a': 2, 'c': 1}, 3, 1, 0.3333333333333333, 0)
>>> many = CategoryCounts(max_exact=2).update(["x", "y", "z", "x"])
>>> many.exact, many.count, sum(many.get().values()) + many.other
(False, 4, 4)
>>> CategoryCounts.from_bytes(None, many.to_bytes()).get() == many.get()
True
"""
from __future__ import annotations

import struct
from collections import Counter
from typing import Collection, Iterable, Sequence

import numpy as np
from datasketches import frequent_items_error_type, frequent_strings_sketch

from modelmonitor.stats._codec import (_HEADER, _TAG_CATEGORIES, _U4, _U8, _VERSION, _array, _check_same_type,
                                       _expect_end, _open)

#: Distinct categories counted exactly before switching to the frequent-items sketch.
MAX_EXACT = 512
#: The sketch's map size (2**10 slots, 768 tracked items; epsilon = 3.5 / 1024).
LG_MAX_K = 10

_EXACT, _SKETCH = 0, 1


class CategoryCounts:
    """Count per category, missing (None) values, and the share unseen in a baseline.

    ``unseen_share`` is the share of non-missing values whose category is not in
    ``known_categories``; None without a known set or without non-missing values.
    """

    __slots__ = ("known", "counts", "sketch", "missing", "total", "unseen", "max_exact")
    _FIXED = struct.Struct("<BQQQI")   # mode, missing, total, unseen, number of categories / sketch bytes

    def __init__(self, known_categories: Collection[str] | None = None, max_exact: int = MAX_EXACT) -> None:
        self.known = _known_set(known_categories, "known_categories")
        self.counts: Counter[str] | None = Counter()
        self.sketch: frequent_strings_sketch | None = None
        self.missing = 0
        self.total = 0
        self.unseen = 0
        self.max_exact = max_exact

    def update(self, values: np.ndarray | Sequence[str | None]) -> "CategoryCounts":
        if isinstance(values, (str, bytes)):
            raise ValueError("CategoryCounts.update: expected a batch of categories, got a single string")
        try:
            batch = Counter(values)  # counted in C, not in a Python loop
        except TypeError as exc:
            raise ValueError(f"CategoryCounts.update: expected a batch of strings or None ({exc})") from None
        missing = batch.pop(None, 0)
        for key in batch:
            if type(key) is not str:
                if not isinstance(key, str):
                    raise ValueError("categorical values must be strings or None, "
                                     f"got {type(key).__name__} {key!r}")
                batch = Counter({str(k): c for k, c in batch.items()})  # e.g. numpy.str_ keys
                break
        self.missing += missing
        self._add(batch, sum(batch.values()), self._unseen_in(batch))
        return self

    def _unseen_in(self, counts: Counter) -> int:
        if self.known is None:
            return 0
        return sum(c for category, c in counts.items() if category not in self.known)

    def _add(self, counts: Counter, total: int, unseen: int) -> None:
        self.total += total
        self.unseen += unseen
        if self.counts is not None:
            self.counts.update(counts)
            if len(self.counts) > self.max_exact:
                self._to_sketch()
        else:
            for category, c in counts.items():
                self.sketch.update(category, c)

    def _to_sketch(self) -> None:
        sketch = frequent_strings_sketch(LG_MAX_K)
        for category in sorted(self.counts):  # a fixed order: the sketch's purges depend on it
            sketch.update(category, self.counts[category])
        self.sketch, self.counts = sketch, None

    @property
    def exact(self) -> bool:
        """True while every category is counted exactly."""
        return self.counts is not None

    @property
    def count(self) -> int:
        """Number of non-missing values (exact in both modes)."""
        return self.total

    @property
    def unseen_share(self) -> float | None:
        if self.known is None or self.total == 0:
            return None
        return self.unseen / self.total

    @property
    def other(self) -> int:
        """Values whose category :meth:`get` does not list (0 while exact)."""
        return self.total - sum(self.get().values())

    def merge(self, other: "CategoryCounts") -> "CategoryCounts":
        _check_same_type(self, other)
        if other.known != self.known:
            raise ValueError("cannot merge category counts with different known categories")
        self.missing += other.missing
        if other.counts is not None:
            self._add(other.counts, other.total, other.unseen)
            return self
        self.total += other.total
        self.unseen += other.unseen
        if self.counts is not None:
            self._to_sketch()
        self.sketch.merge(other.sketch)
        return self

    def get(self) -> dict[str, int]:
        """Counts per category, sorted by category so the result never depends on merge order.
        In sketch mode: the categories reported without false positives, with their estimates."""
        if self.counts is not None:
            return {category: self.counts[category] for category in sorted(self.counts)}
        items = self.sketch.get_frequent_items(frequent_items_error_type.NO_FALSE_POSITIVES)
        return {category: int(estimate) for category, estimate, _, _ in sorted(items)}

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(_TAG_CATEGORIES, _VERSION)
        if self.counts is None:
            blob = self.sketch.serialize()
            return b"".join([head, self._FIXED.pack(_SKETCH, self.missing, self.total, self.unseen, len(blob)), blob])
        categories = sorted(self.counts)
        encoded = [c.encode("utf-8", "surrogatepass") for c in categories]
        lengths = np.fromiter(map(len, encoded), dtype=_U4, count=len(encoded))
        counts = np.fromiter((self.counts[c] for c in categories), dtype=_U8, count=len(categories))
        return b"".join([head, self._FIXED.pack(_EXACT, self.missing, self.total, self.unseen, len(categories)),
                         lengths.tobytes(), counts.tobytes(), *encoded])

    @classmethod
    def from_bytes(cls, known_categories: Collection[str] | None, blob: bytes,
                   max_exact: int = MAX_EXACT) -> "CategoryCounts":
        """Read counts written by :meth:`to_bytes`; the known set is configuration, given again."""
        out = cls(known_categories, max_exact)
        (mode, missing, total, unseen, size), rest = _open(blob, _TAG_CATEGORIES, cls.__name__, cls._FIXED)
        out.missing, out.total, out.unseen = missing, total, unseen
        if mode == _SKETCH:
            _expect_end(rest, size, cls.__name__)
            try:
                out.sketch = frequent_strings_sketch.deserialize(bytes(rest))
            except Exception as exc:  # the C++ library raises its own exception types
                raise ValueError(f"CategoryCounts.from_bytes: not a frequent-items sketch ({exc})") from None
            out.counts = None
            if out.sketch.total_weight != total:
                raise ValueError("CategoryCounts.from_bytes: the sketch's total disagrees with the count")
            return out
        if mode != _EXACT:
            raise ValueError(f"CategoryCounts.from_bytes: unknown mode {mode}")
        lengths = _array(rest, _U4, size, cls.__name__)
        counts = _array(rest, _U8, size, cls.__name__, offset=size * 4)
        start = size * 12
        ends = start + np.cumsum(lengths, dtype=np.int64)
        _expect_end(rest, int(ends[-1]) if size else start, cls.__name__)
        raw = bytes(rest[start:])
        names: list[str] = []
        offset = 0
        for length in lengths.tolist():
            try:
                names.append(raw[offset:offset + length].decode("utf-8", "surrogatepass"))
            except UnicodeDecodeError:
                raise ValueError("CategoryCounts.from_bytes: a category name is not valid UTF-8") from None
            offset += length
        out.counts = Counter(dict(zip(names, counts.tolist())))
        if len(out.counts) != size:
            raise ValueError("CategoryCounts.from_bytes: duplicate category names")
        if sum(out.counts.values()) != total:
            raise ValueError("CategoryCounts.from_bytes: the counts disagree with the total")
        return out

    def __repr__(self) -> str:
        return f"CategoryCounts({self.get()}, missing={self.missing}, exact={self.exact})"


def _known_set(known: Collection[str] | None, what: str) -> frozenset[str] | None:
    if known is None:
        return None
    if isinstance(known, (str, bytes)) or not isinstance(known, Iterable):
        raise ValueError(f"{what}: expected a collection of category strings, got {known!r}")
    out = frozenset(known)
    bad = next((k for k in out if not isinstance(k, str)), None)
    if bad is not None:
        raise ValueError(f"{what}: categories must be strings, got {type(bad).__name__} {bad!r}")
    return frozenset(str(k) for k in out)
