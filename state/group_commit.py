"""Group commit: concurrent requests to one process share one atomic Redis script call.

Request threads ``submit`` their item and block; a single committer thread takes everything
queued (up to ``max_batch``), calls ``commit(items) -> results`` once, and wakes each caller
with its own result, or with the exception if the commit failed (the caller answers 503 and
the broker retries; the script is atomic, so nothing was half-applied). While one commit runs,
new requests pile up and form the next batch, so batches grow with load by themselves.

>>> gc = GroupCommitter(lambda items: [x * 2 for x in items])
>>> gc.submit(21)
42
>>> done = threading.Event()
>>> gc.submit_nowait(1, lambda result, error: done.set())
>>> done.wait(5)
True
>>> gc.close()
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Sequence

log = logging.getLogger("modelmonitor.group_commit")


class _Slot:
    __slots__ = ("item", "result", "error", "done", "then")

    def __init__(self, item: Any, then: Callable[[Any, BaseException | None], None] | None = None):
        self.item = item
        self.result = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.then = then


class GroupCommitter:
    def __init__(self, commit: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 2048,
                 on_batch: Callable[[int], None] | None = None):
        self._commit = commit
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._queue: deque[_Slot] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def _enqueue(self, slot: _Slot) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("group committer is closed")
            self._queue.append(slot)
            self._cv.notify()

    def submit_nowait(self, item: Any, then: Callable[[Any, BaseException | None], None]) -> None:
        """Queue `item` without waiting; the committer thread calls `then(result, error)` once
        its batch is committed (items are committed in the order they were queued)."""
        self._enqueue(_Slot(item, then))

    def submit(self, item: Any, timeout: float | None = 30.0) -> Any:
        slot = _Slot(item)
        self._enqueue(slot)
        if not slot.done.wait(timeout):
            raise TimeoutError("commit did not finish in time")
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            try:
                results = self._commit([s.item for s in batch])
                if len(results) != len(batch):
                    raise RuntimeError("commit returned a wrong number of results")
                for s, r in zip(batch, results):
                    s.result = r
            except BaseException as exc:  # every waiter must wake up, whatever happened
                for s in batch:
                    s.error = exc
            if self._on_batch:
                self._on_batch(len(batch))
            for s in batch:
                s.done.set()
                if s.then is not None:
                    try:
                        s.then(s.result, s.error)
                    except Exception:  # a caller's bug must not stop the committer
                        log.exception("group commit callback failed")

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=5)
