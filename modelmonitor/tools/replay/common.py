"""What both replay engines share: the summary counters, the meaning of one input line, and
the writer that turns emitted events into output lines.

A replay has no wall clock. Its clock is the largest event time of the logger events ingested
so far (0 before the first), and every time it writes (``detectedAtMs``, ``closedAtMs``,
``measuredAtMs``, a dead letter's ``time``) comes from that clock, so the same input always
gives byte-identical output.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from modelmonitor.core import events as ev
from modelmonitor.handlers import Monitor, Rejected, dead_letter, measure

LOGGER_TYPES = (ev.KSERVE_REQUEST, ev.KSERVE_RESPONSE)


@dataclass
class ReplayStats:
    lines: int = 0
    logger_events: int = 0
    instances: int = 0
    ignored: int = 0
    rejected: int = 0
    duplicates: int = 0
    late_requests: int = 0
    outlier_events: int = 0
    windows: int = 0
    drift_alerts: int = 0
    seconds: float = 0.0
    engine: str = ""
    emitted: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["instancesPerSecond"] = round(self.instances / self.seconds) if self.seconds else None
        return d


# ------------------------------------------------------------------------------ one line
class LineError(Exception):
    """A line that is not a structured-mode CloudEvent: its dead letter is ready."""

    def __init__(self, event):
        super().__init__(event["id"])
        self.event = event


def parse_line(mon: Monitor, item: bytes | str | dict, line_no: int) -> dict | None:
    """The structured-mode CloudEvent document of one input item; None for a blank line;
    :class:`LineError` (with its dead letter) for anything that is not one."""
    if isinstance(item, dict):
        doc = item
        raw = None
    else:
        raw = item.encode() if isinstance(item, str) else item
        raw = raw.strip()
        if not raw:
            return None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise LineError(_not_an_event(mon, line_no, exc, raw)) from None
    try:
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        for key in ("type", "source", "id"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise ValueError(f"attribute '{key}' is missing")
    except ValueError as exc:
        raise LineError(_not_an_event(mon, line_no, exc, raw if raw is not None else _dump(doc))) from None
    return doc


def _dump(doc: Any) -> bytes:
    try:
        return json.dumps(doc).encode()
    except (TypeError, ValueError, RecursionError):
        return repr(doc).encode()


def _not_an_event(mon: Monitor, line_no: int, exc: Exception, raw: bytes):
    return dead_letter(mon.name, "ingest", f"line {line_no}: not a structured CloudEvent: {exc}", raw=raw)


def body_of(doc: dict) -> Any:
    """The logger event's body: ``data``, else the decoded ``data_base64`` (:class:`Rejected`
    when that is not base64)."""
    data = doc.get("data")
    if data is None and "data_base64" in doc:
        try:
            data = base64.b64decode(doc["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise Rejected("attribute 'data_base64' is not valid base64") from None
    return data


def rejection(mon: Monitor, reason: str, doc: dict):
    """The dead letter of a logger event that ingest refused (with the original, if it forms
    a CloudEvent)."""
    try:
        original = ev.from_json_doc(doc)
    except Exception:  # e.g. an unknown specversion: keep the document as raw text instead
        return dead_letter(mon.name, "ingest", reason, raw=_dump(doc))
    return dead_letter(mon.name, "ingest", reason, original=original)


# ------------------------------------------------------------------------------ output
class Output:
    """Writes events as JSON lines and counts them. Dead letters get the replay clock as their
    ``time`` (a CloudEvent built without one would carry the wall clock)."""

    def __init__(self, dst: IO[str], stats: ReplayStats):
        self.dst = dst
        self.stats = stats

    def event(self, event, clock_ms: int) -> None:
        etype = event["type"]
        if etype == ev.DEAD_LETTER:
            event["time"] = ev.ms_to_rfc3339(clock_ms)
        self.count(etype)
        self.dst.write(ev.to_json_line(event) + "\n")

    def line(self, etype: str, text: str) -> None:
        """An event already serialised by :func:`modelmonitor.core.events.to_json_line`."""
        self.count(etype)
        self.dst.write(text + "\n")

    def lines(self, etype: str, texts: list[str]) -> None:
        """Several events of one type already serialised, written at once."""
        self.count(etype, len(texts))
        self.dst.write("\n".join(texts) + "\n")

    def count(self, etype: str, n: int = 1) -> None:
        e = self.stats.emitted
        e[etype] = e.get(etype, 0) + n
        if etype == ev.OUTLIER_DETECTED:
            self.stats.outlier_events += n
        elif etype == ev.WINDOW_CLOSED:
            self.stats.windows += n
        elif etype == ev.DRIFT_DETECTED:
            self.stats.drift_alerts += n
        elif etype == ev.DEAD_LETTER:
            self.stats.rejected += n


class JsonAlertState:
    """The alert policy's state in process, stored as JSON text like :class:`AlertState` keeps
    it in Redis, so the policy sees exactly what it would see there."""

    def __init__(self):
        self.raw: dict[str | None, str] = {}       # segment (None: unsegmented) -> JSON text

    def update(self, fn, segment: str | None = None):
        raw = self.raw.get(segment)
        state = json.loads(raw) if raw else None
        new_state, result = fn(state)
        self.raw[segment] = json.dumps(new_state)
        return result


def drift_events(mon: Monitor, window_event, clock_ms: int, alerts) -> list:
    """What the drift function emits for a closed window: its measurements (and alert), or the
    dead letter it would send for a window it refuses (e.g. one starting before 1970)); nothing
    for a ``segments.excess``, which goes to no Trigger of the drift function."""
    if window_event["type"] != ev.WINDOW_CLOSED:
        return []
    try:
        return measure(mon, window_event, clock_ms, alerts, check_skew=False)
    except Rejected as exc:
        return [dead_letter(mon.name, "drift", exc.reason, original=window_event)]
