"""``spec.segment``: windows, statistics, drift and alerts per segment of the traffic.

>>> s = parse_segment({"metadataHeader": "X-Model-Version", "maxSegments": 4}, "spec.segment")
>>> (s.metadata_header, s.max_segments, s.default, s.retention_ms)
('X-Model-Version', 4, 'default', 86400000)
"""
from __future__ import annotations

import re
from typing import Any

from modelmonitor.core.spec.model import (MAX_SEGMENTS_LIMIT, SEGMENT_VALUE_RE, SegmentSpec, SpecError,
                                          parse_duration)

# CloudEvents 1.0: attribute names are lower-case ASCII letters or digits (20 at most is the
# interoperable length).
_EXTENSION_RE = re.compile(r"^[a-z0-9]{1,20}$")
# An HTTP header name (RFC 9110 token).
_HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
# Attributes every logger event has: not a segment.
_RESERVED = {"specversion", "type", "source", "id", "time", "datacontenttype", "dataschema", "subject", "data",
             "data_base64", "metadata"}


def parse_segment(s: Any, path: str) -> SegmentSpec | None:
    """The :class:`SegmentSpec` of ``spec.segment`` (None when absent)."""
    if s is None or s is False:
        return None
    if not isinstance(s, dict):
        raise SpecError(path, "expected {extension: <attribute>} or {metadataHeader: <header>} "
                        "(with optional maxSegments, default, retention)")
    allowed = {"extension", "metadataHeader", "maxSegments", "default", "retention", "compare"}
    unknown = sorted(set(s) - allowed)
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
    extension, header = s.get("extension"), s.get("metadataHeader")
    if (extension is None) == (header is None):
        raise SpecError(path, "name exactly one of extension (a CloudEvent extension attribute) or "
                        "metadataHeader (a header inside the KServe logger's metadata extension)")
    if extension is not None:
        if not isinstance(extension, str) or not _EXTENSION_RE.match(extension):
            raise SpecError(f"{path}.extension", f"{extension!r} is not a CloudEvent extension name "
                            "(1 to 20 lower-case letters or digits)")
        if extension in _RESERVED:
            raise SpecError(f"{path}.extension", f"{extension!r} is a CloudEvent attribute every logger event "
                            "has (for a header in KServe's metadata use metadataHeader)")
    if header is not None and (not isinstance(header, str) or not _HEADER_RE.match(header)):
        raise SpecError(f"{path}.metadataHeader", f"{header!r} is not an HTTP header name")
    max_segments = s.get("maxSegments", SegmentSpec.max_segments)
    if isinstance(max_segments, bool) or not isinstance(max_segments, int) \
            or not 1 <= max_segments <= MAX_SEGMENTS_LIMIT:
        raise SpecError(f"{path}.maxSegments", f"expected an integer from 1 to {MAX_SEGMENTS_LIMIT}, "
                        f"got {max_segments!r}")
    default = s.get("default", SegmentSpec.default)
    if not isinstance(default, str) or not SEGMENT_VALUE_RE.match(default):
        raise SpecError(f"{path}.default", f"{default!r} is not a segment name (1 to 63 letters, digits, "
                        "'.', '_' or '-', starting with a letter or digit)")
    retention = parse_duration(s.get("retention", "1d"), f"{path}.retention")
    if retention <= 0:
        raise SpecError(f"{path}.retention", "must be greater than zero")
    return SegmentSpec(extension, header, max_segments, default, retention, _compare(s.get("compare"), f"{path}.compare"))


def _compare(c: Any, path: str) -> tuple[str, str] | None:
    if c is None:
        return None
    if not isinstance(c, dict) or set(c) != {"candidate", "reference"}:
        raise SpecError(path, "expected {candidate: <segment>, reference: <segment>}")
    for key in ("candidate", "reference"):
        if not isinstance(c[key], str) or not SEGMENT_VALUE_RE.match(c[key]):
            raise SpecError(f"{path}.{key}", f"{c[key]!r} is not a segment name (1 to 63 letters, digits, '.', '_' "
                            "or '-', starting with a letter or digit)")
    if c["candidate"] == c["reference"]:
        raise SpecError(f"{path}.reference", "must differ from the candidate")
    return c["candidate"], c["reference"]
