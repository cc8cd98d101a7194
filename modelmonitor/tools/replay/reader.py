"""Replay inputs. A reader yields chunks: (items, bytes read so far), where an item is one raw
JSON line (bytes) or one structured-mode CloudEvent document (dict). Other formats (KServe's
stored log batches, ...) plug in as further readers of the same shape.
"""
from __future__ import annotations

import os
from typing import Iterator

CHUNK_BYTES = 4 << 20


def jsonl_chunks(path: str, *, chunk_lines: int = 8192, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[list, int]]:
    """JSON lines in chunks of at most ``chunk_lines`` lines (line numbers stay exact: blank
    lines are items too)."""
    pending: list[bytes] = []
    done = 0
    tail = b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                break
            done += len(block)
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            pending.extend(lines)
            while len(pending) >= chunk_lines:
                yield pending[:chunk_lines], done - len(tail)
                pending = pending[chunk_lines:]
    if tail:
        pending.append(tail)
    while pending:
        yield pending[:chunk_lines], done
        pending = pending[chunk_lines:]


def input_size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
