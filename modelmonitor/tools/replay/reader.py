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


def jsonl_blocks(path: str, *, block_bytes: int = 2 << 20) -> Iterator[tuple[bytes, int, int]]:
    """The same lines as :func:`jsonl_chunks` in blocks of whole lines: (block, lines in it,
    bytes read so far). Cheap to hand to another process (one bytes object, split there by
    :func:`block_lines`)."""
    tail = b""
    done = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(block_bytes)
            if not block:
                break
            done += len(block)
            block = tail + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                tail = block
                continue
            block, tail = block[:cut], block[cut:]
            yield block, block.count(b"\n"), done - len(tail)
    if tail:
        yield tail, 1, done


def block_lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    return lines


def input_size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
