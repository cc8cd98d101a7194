"""`modelmonitor replay`: run either engine over an input and write every emitted event.

- ``columnar`` (default): chunks are decoded into columns (in worker processes when there is
  more than one core: decoding is independent per chunk) and applied in order, in process,
  with no Redis.
- ``per-event``: the live handlers one event at a time on Redis (``--redis`` or a private
  ``redis-server``); the reference the columnar engine is tested against.

Both write the same bytes for the same input.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from collections import deque
from typing import IO, Callable, Iterator

from modelmonitor.handlers import Monitor
from modelmonitor.tools.replay.common import Output, ReplayStats
from modelmonitor.tools.replay.progress import Progress
from modelmonitor.tools.replay.reader import block_lines, input_size, jsonl_blocks, jsonl_chunks

ENGINES = ("columnar", "per-event")
CHUNK_LINES = 8192

_worker_decoder = None


def _init_worker(monitor_path: str, baseline_path: str | None) -> None:
    global _worker_decoder
    import gc
    from modelmonitor.tools.replay.decode import ChunkDecoder
    gc.disable()          # a chunk's many small objects die together; the cyclic collector only costs time
    _worker_decoder = ChunkDecoder(Monitor.from_files(monitor_path, baseline_path))


def _decode_in_worker(items: list | bytes, first_line: int):
    if isinstance(items, bytes):            # a block of whole lines from jsonl_blocks
        items = block_lines(items)
    return _worker_decoder.decode(items, first_line)


def default_workers() -> int:
    return 1 if (os.cpu_count() or 1) > 1 else 0


def run_replay(monitor_path: str, input_path: str, output_path: str, *, baseline_path: str | None = None,
               redis_url: str | None = None, progress: IO | None = sys.stderr, batch: int = CHUNK_LINES,
               engine: str | None = None, workers: int | None = None,
               chunks: Callable[[], Iterator[tuple[list, int]]] | None = None) -> ReplayStats:
    """Replay ``input_path`` (JSON lines; or the chunks of another reader) into ``output_path``.
    ``redis_url`` selects the per-event engine on that Redis unless ``engine`` says otherwise."""
    engine = engine or ("per-event" if redis_url else "columnar")
    if engine not in ENGINES:
        raise ValueError(f"unknown replay engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if batch < 1:
        raise ValueError("batch must be at least 1")
    mon = Monitor.from_files(monitor_path, baseline_path)
    # An instance is in ceil(duration / slide) windows, and a chunk is worked on as (instance,
    # window) pairs: long windows with a short slide get proportionally shorter chunks.
    w = mon.spec.window
    per_instance = -(-w.duration_ms // w.slide_ms)
    lines = batch if batch <= 64 else max(64, batch // per_instance)
    read = chunks or (lambda: jsonl_chunks(input_path, chunk_lines=lines))
    blocks = None if chunks is not None else (lambda: jsonl_blocks(input_path, block_bytes=max(4096, lines * 256)))
    stats = ReplayStats(engine=engine)
    bar = Progress(progress, input_size(input_path) if chunks is None else None)
    started = time.perf_counter()
    try:
        with open(output_path, "w", encoding="utf-8", buffering=1 << 20) as dst:
            out = Output(dst, stats)
            if engine == "columnar":
                _columnar(mon, read, blocks, out, stats, bar, monitor_path, baseline_path,
                          default_workers() if workers is None else workers)
            else:
                _per_event(mon, read, out, stats, bar, redis_url)
    finally:
        bar.close()
    stats.seconds = time.perf_counter() - started
    return stats


def _columnar(mon, read, blocks, out, stats, bar, monitor_path, baseline_path, workers: int) -> None:
    import gc
    from modelmonitor.tools.replay.decode import ChunkDecoder
    from modelmonitor.tools.replay.engine import ColumnarReplay
    replay = ColumnarReplay(mon, out, stats)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        line = 1
        if workers <= 0:
            decoder = ChunkDecoder(mon)
            for items, done in read():
                replay.feed(decoder.decode(items, line))
                line += len(items)
                bar.update(done, stats.instances, stats.windows)
        else:
            _pipelined(mon, replay, stats, bar, monitor_path, baseline_path, workers, blocks, read)
        replay.finish()
    finally:
        if was_enabled:
            gc.enable()


def _pipelined(mon, replay, stats, bar, monitor_path, baseline_path, workers: int, blocks, read) -> None:
    """Decoding is independent per chunk: worker processes decode ahead while this process
    applies chunks strictly in order. When the next chunk to apply is not decoded yet, this
    process decodes a later one itself instead of waiting, so every core stays busy whichever
    side is slower. Bounded queues keep memory constant."""
    from concurrent.futures import Future
    from modelmonitor.tools.replay.decode import ChunkDecoder
    decoder = ChunkDecoder(mon)
    ahead = 2 * workers + 1
    most = ahead + 2                                      # chunks decoded or in flight
    # A JSON-lines file goes to the workers as blocks of whole lines (one bytes object each:
    # nothing to split or pickle line by line here).
    work = iter(blocks()) if blocks is not None else ((items, len(items), d) for items, d in read())
    line = 1
    queue: deque = deque()                                # (Future | Decoded, bytes done)
    in_flight = 0
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(monitor_path, baseline_path)) as pool:
        exhausted = False
        while True:
            while not exhausted and in_flight < ahead and len(queue) < most:
                nxt = next(work, None)
                if nxt is None:
                    exhausted = True
                    break
                items, n_lines, done = nxt
                queue.append((pool.submit(_decode_in_worker, items, line), done))
                line += n_lines
                in_flight += 1
            if not queue:
                return
            head, done = queue[0]
            if isinstance(head, Future) and not head.done() and not exhausted and len(queue) < most:
                nxt = next(work, None)
                if nxt is None:
                    exhausted = True
                else:
                    items, n_lines, d = nxt
                    if isinstance(items, bytes):
                        items = block_lines(items)
                    queue.append((decoder.decode(items, line), d))
                    line += n_lines
                continue
            queue.popleft()
            if isinstance(head, Future):
                in_flight -= 1
                head = head.result()
            replay.feed(head)
            bar.update(done, stats.instances, stats.windows)


def _per_event(mon, read, out, stats, bar, redis_url) -> None:
    from modelmonitor.local.redis_server import RedisServer, connect
    from modelmonitor.tools.replay.reference import PerEventReplay
    server = None
    if redis_url is None:
        server = RedisServer(durable=False).start()
        redis_url = server.url
    client = connect(redis_url)
    try:
        PerEventReplay.reset(client, mon.name)
        replay = PerEventReplay(mon, client, out, stats)
        for items, done in read():
            replay.feed(items)
            bar.update(done, stats.instances, stats.windows)
        replay.finish()
    finally:
        client.close()
        if server is not None:
            server.cleanup()
