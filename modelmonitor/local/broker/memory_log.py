"""The broker log in process memory (no durability), for an embedded broker without Redis:
a queue per Trigger, same interface and retention as `log.RedisStreamLog` (see `log`)."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Iterable, Sequence

from modelmonitor.local.broker.log import Completion, DeadLetter, Entry, LogFullError


class MemoryLog:
    """The log in process memory (no durability): a queue per group."""

    def __init__(self, max_entries: int = 1_000_000, max_dead_letters: int = 100_000):
        self.max_entries = max_entries
        self.max_dead_letters = max_dead_letters
        self._cv = threading.Condition()
        self._queues: dict[str, deque[Entry]] = {}
        self._unacked: dict[str, dict[str, Entry]] = {}
        self._dead: list[DeadLetter] = []
        self._ids = 0

    @property
    def length(self) -> int:
        with self._cv:
            return max((len(q) + len(self._unacked[g]) for g, q in self._queues.items()), default=0)

    def ensure_groups(self, groups: Iterable[str]) -> list[str]:
        with self._cv:
            for g in groups:
                self._queues.setdefault(g, deque())
                self._unacked.setdefault(g, {})
        return []

    def _new_id(self) -> str:
        self._ids += 1
        return f"{int(time.time() * 1000)}-{self._ids}"

    def _add(self, entry: Entry) -> None:
        entry.id = self._new_id()
        for name in self._queues if entry.targets is None else entry.targets:
            if name in self._queues:
                self._queues[name].append(entry)

    def append(self, entries: Sequence[Entry], internal: bool = False) -> list[str]:
        with self._cv:
            if not internal and self.length >= self.max_entries:
                raise LogFullError(f"the broker holds {self.length} undelivered events "
                                   f"(limit {self.max_entries})")
            for e in entries:
                self._add(e)
            self._cv.notify_all()
        return [e.id for e in entries]

    def complete(self, completions: Sequence[Completion]) -> None:
        with self._cv:
            for c in completions:
                for r in c.replies:
                    self._add(r)
                if c.dead_letter is not None:
                    c.dead_letter.id = self._new_id()
                    self._dead.append(c.dead_letter)
                self._unacked[c.group].pop(c.entry_id, None)
            self._cv.notify_all()

    def read(self, group: str, count: int, block_ms: int, pending: bool = False,
             after: str = "0") -> list[Entry]:
        if pending:
            return []  # nothing survives the process
        with self._cv:
            q = self._queues[group]
            if not q and block_ms:
                self._cv.wait_for(lambda: bool(q), block_ms / 1000)
            out = [q.popleft() for _ in range(min(count, len(q)))]
            for e in out:
                self._unacked[group][e.id] = e
            return out

    def backlog(self, group: str) -> int:
        with self._cv:
            return len(self._queues[group]) + len(self._unacked[group])

    def backlogs(self) -> dict[str, int]:
        with self._cv:
            return {g: len(q) + len(self._unacked[g]) for g, q in self._queues.items()}

    def trim(self) -> int:
        return self.length

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        with self._cv:
            return list(self._dead[:limit])

    def dead_letter_count(self) -> int:
        with self._cv:
            return len(self._dead)

    def redrive(self, ids: Iterable[str] | None = None, trigger: str | None = None) -> int:
        wanted = set(ids) if ids is not None else None
        with self._cv:
            keep, moved = [], 0
            for dl in self._dead:
                if (wanted is not None and dl.id not in wanted) or (trigger and dl.trigger != trigger):
                    keep.append(dl)
                    continue
                self._add(Entry("", dl.entry.headers, dl.entry.body, 0, [dl.trigger]))
                moved += 1
            self._dead = keep
            self._cv.notify_all()
        return moved

    def purge(self, ids: Iterable[str] | None = None) -> int:
        with self._cv:
            before = len(self._dead)
            self._dead = [] if ids is None else [d for d in self._dead if d.id not in set(ids)]
            return before - len(self._dead)
