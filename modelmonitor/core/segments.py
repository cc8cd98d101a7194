"""Segments: which segment a logger event belongs to, and which segments a monitor watches.

Pure (no I/O). The segment of a logger event comes from ``spec.segment``:

- ``extension: <name>``: the CloudEvent extension attribute of that name (a string, or an
  integer in structured mode, written in decimal);
- ``metadataHeader: <name>``: the header of that name (case-insensitive) inside the KServe
  logger's ``metadata`` extension, a JSON object of the allowlisted request headers whose values
  are strings or lists of strings (KServe sends ``{"X-Model-Version": ["v2"]}``). A list gives
  its value when all its entries are equal; an empty list is no value.

No value (attribute or header absent, empty string, empty list) is the default segment
(``spec.segment.default``, ``default`` unless set). A value that is not a segment name (see
:data:`~modelmonitor.core.spec.SEGMENT_VALUE_RE`), a list of different values, or a ``metadata``
that is not a JSON object is refused (:class:`ValueError` with the reason; the functions answer
400 and send a dead letter), never put in the default segment: a mislabelled canary must not
vanish into the current model's statistics.

Admission (:class:`SegmentAdmission`): a monitor watches at most ``maxSegments`` segments. A
segment is admitted when first seen while fewer are watched; every later instance of it keeps it
watched. A segment whose newest instance is older than ``retention`` (event time) than the newest
instance of any watched segment gives its slot up when a new segment needs one. Instances of a
segment that finds no slot are *excess*: they are counted per window (``segments.excess``) and
in ``modelmonitor_segment_excess_instances_total``, never merged into another segment.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from modelmonitor.core.spec import SEGMENT_VALUE_RE, SegmentSpec


def check_segment_name(value: Any, what: str) -> str:
    """``value`` if it is a valid segment name, else :class:`ValueError` naming ``what``."""
    if not isinstance(value, str) or not SEGMENT_VALUE_RE.match(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ValueError(f"{what} {shown} is not a segment name (1 to 63 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit)")
    return value


def _header(metadata: Any, header: str) -> Any:
    if metadata is None or metadata == "":
        return None
    if isinstance(metadata, (bytes, str)):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            raise ValueError("attribute 'metadata' is not JSON (expected the KServe logger's object of "
                             "request headers)") from None
    if not isinstance(metadata, Mapping):
        raise ValueError("attribute 'metadata' is not a JSON object of request headers")
    wanted = header.lower()
    found = [v for k, v in metadata.items() if isinstance(k, str) and k.lower() == wanted]
    if len(found) > 1:
        raise ValueError(f"metadata header {header!r} appears {len(found)} times with different cases")
    return found[0] if found else None


def segment_of(spec: SegmentSpec, attrs: Mapping[str, Any]) -> str:
    """The segment of a logger event with attributes ``attrs`` (see the module doc)."""
    if spec.extension is not None:
        value = attrs.get(spec.extension)
        what = f"extension {spec.extension!r}"
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
    else:
        value = _header(attrs.get("metadata"), spec.metadata_header)
        what = f"metadata header {spec.metadata_header!r}"
        if isinstance(value, list):
            distinct = set(map(str, value)) if all(isinstance(v, str) for v in value) else None
            if distinct is None:
                raise ValueError(f"{what} must be a string or a list of strings, got {value!r}"[:300])
            if len(distinct) > 1:
                raise ValueError(f"{what} has several values {sorted(distinct)[:4]!r}: which segment is meant?")
            value = distinct.pop() if distinct else None
    if value is None or value == "":
        return spec.default
    return check_segment_name(value, what)


class SegmentAdmission:
    """The admission rule over ``{segment: newest event time}`` in process (the aggregate keeps
    the same state in Redis, ``state/segments.lua``; a replay keeps it here). ``admit`` takes
    requests in order and says which segments found a slot."""

    def __init__(self, max_segments: int, retention_ms: int):
        self.max_segments = max_segments
        self.retention_ms = retention_ms
        self.newest: dict[str, int] = {}

    def admit(self, requests: Iterable[tuple[str, int]]) -> list[bool]:
        out = []
        newest = self.newest
        for segment, t in requests:
            t = int(t)
            if segment in newest:
                if t > newest[segment]:
                    newest[segment] = t
                out.append(True)
                continue
            if len(newest) >= self.max_segments:
                horizon = max(max(newest.values()), t) - self.retention_ms
                for name in [n for n, v in newest.items() if v < horizon]:
                    del newest[name]
            if len(newest) < self.max_segments:
                newest[segment] = t
                out.append(True)
            else:
                out.append(False)
        return out
