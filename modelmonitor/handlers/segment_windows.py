"""A segmented monitor's windows: the row groups of each segment, the excess partial, and the
events one closed window gives (a ``window.closed`` per segment with data, a
``segments.excess`` when instances found no segment slot).

Row groups in the window store are ``i@<segment>`` and ``p@<segment>`` (inputs and predictions
of one segment) and :data:`EXCESS` for the instances of segments beyond ``maxSegments``, whose
partial counts requests and instances and names up to :data:`EXCESS_NAMES` of their segments
(the alphabetically first: the same whatever order partials merge in).
"""
from __future__ import annotations

import json
from typing import Sequence

from modelmonitor.detect.drift import compare_windows
from state.store import INPUTS, PREDICTIONS, PendingRequest

EXCESS = "x"
EXCESS_NAMES = 10


def group_of(kind_group: str, segment: str | None) -> str:
    """The store's row group of a kind (``i``/``p``) in a segment (None: unsegmented)."""
    return kind_group if segment is None else f"{kind_group}@{segment}"


def excess_request(pending: PendingRequest, segment: str) -> PendingRequest:
    """A request of a segment that found no slot: only counted (its segment name travels in
    place of the rows)."""
    return PendingRequest(pending.dedup_key, pending.event_time_ms, pending.instances, EXCESS, b"",
                          segment.encode())


class ExcessCounts:
    """The excess group's mergeable partial: requests, instances and segment names."""
    __slots__ = ("requests", "instances", "names")

    def __init__(self, requests: int = 0, instances: int = 0, names=()):
        self.requests, self.instances, self.names = requests, instances, set(names)

    def add(self, requests: Sequence[PendingRequest]) -> "ExcessCounts":
        self.requests += len(requests)
        self.instances += sum(int(r.instances) for r in requests)
        self.names.update(r.categorical.decode() for r in requests)
        self.names = set(sorted(self.names)[:EXCESS_NAMES])
        return self

    def merge(self, other: "ExcessCounts") -> "ExcessCounts":
        self.requests += other.requests
        self.instances += other.instances
        self.names = set(sorted(self.names | other.names)[:EXCESS_NAMES])
        return self

    def as_dict(self) -> dict:
        return {"requests": self.requests, "instances": self.instances, "segments": sorted(self.names)}

    def to_bytes(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "ExcessCounts":
        doc = json.loads(blob)
        return cls(doc["requests"], doc["instances"], doc["segments"])


def excess_counts(partials: Sequence) -> dict:
    """``{requests, instances, segments}`` of the excess partials (bytes or :class:`ExcessCounts`)."""
    total = ExcessCounts()
    for part in partials:
        total.merge(part if isinstance(part, ExcessCounts) else ExcessCounts.from_bytes(part))
    return total.as_dict()


def segments_in(partials: dict) -> list[str]:
    """The segments with rows in a window's partials (``{group: [bytes]}``), sorted."""
    return sorted({g.split("@", 1)[1] for g in partials if "@" in g})


def segment_partials(partials: dict, segment: str) -> dict:
    """A segment's partials under the unsegmented group names (``i``, ``p``)."""
    return {kind: partials[f"{kind}@{segment}"] for kind in (INPUTS, PREDICTIONS) if f"{kind}@{segment}" in partials}


def compared_data(mon, records: list, window: dict, now_ms: int) -> dict | None:
    """``segments.compared`` data of a window whose ``[[type, data], ...]`` records hold both
    segments of ``spec.segment.compare`` (else None). A comparison that cannot be computed says
    why in ``error``: the window still closes."""
    pair = mon.spec.segment.compare
    if pair is None:
        return None
    windows = {data["segment"]: data for _, data in records}
    if pair[0] not in windows or pair[1] not in windows:
        return None
    cand, ref = windows[pair[0]], windows[pair[1]]
    out = {"monitor": mon.name, "window": window, "candidate": pair[0], "reference": pair[1],
           "candidateCount": cand["count"], "referenceCount": ref["count"], "closedAtMs": now_ms, "features": {}}
    try:
        out["features"] = compare_windows(cand, ref, mon.spec.drift, mon.spec.features + mon.spec.predictions)
    except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
        out["error"] = f"cannot compare the segments: {exc}"
    return out
