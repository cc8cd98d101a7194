"""A one-line progress display on stderr for replays that take more than a moment."""
from __future__ import annotations

import time
from typing import IO


class Progress:
    """Redraws ``instances, instances/s, percent, ETA`` at most every ``every`` seconds, and
    only once ``after`` seconds have passed (short replays print nothing)."""

    def __init__(self, stream: IO | None, total_bytes: int | None, *, after: float = 2.0, every: float = 0.5):
        self.stream = stream
        self.total = total_bytes
        self.after, self.every = after, every
        self.started = time.perf_counter()
        self.last = self.started
        self.shown = False

    def update(self, done_bytes: int, instances: int, windows: int) -> None:
        if self.stream is None:
            return
        now = time.perf_counter()
        elapsed = now - self.started
        if elapsed < self.after or now - self.last < self.every:
            return
        self.last = now
        rate = instances / elapsed if elapsed > 0 else 0.0
        text = f"{instances:>13,} instances  {rate:>11,.0f}/s  {windows:,} windows"
        if self.total:
            share = min(done_bytes / self.total, 1.0)
            eta = elapsed * (1 - share) / share if share > 0 else 0.0
            text += f"  {share:6.1%}  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        self.stream.write("\r" + text)
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()
