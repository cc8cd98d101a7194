"""The ingest handler: a KServe logger event -> ``inference.instances`` (or :class:`Rejected`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from modelmonitor.core.events import Event

from modelmonitor.core import events as ev
from modelmonitor.core.payloads import PayloadError, parse_request, parse_response
from modelmonitor.handlers.monitor import (Monitor, Rejected, check_attributes, check_event_time)
def event_time_ms(attrs, now_ms: int) -> int:
    t = attrs.get("time")
    if not t:
        return now_ms
    try:
        ms = ev.rfc3339_to_ms(str(t))
    except (ValueError, OverflowError):
        raise Rejected(f"attribute 'time' is not an RFC 3339 timestamp: {t!r}") from None
    return check_event_time(ms, f"attribute 'time' ({t!s})")


@dataclass
class Instances:
    """What ingest makes of one logger event (the data of an ``inference.instances`` event)."""
    id: str                 # the instances event id (deterministic)
    kind: str               # request | response
    event_time_ms: int
    rows: list
    request_id: str
    logger_type: str
    logger_source: str
    segment: str | None = None      # a segmented monitor's segment of the logger event

    def data(self, mon: Monitor) -> dict:
        out = {"monitor": mon.name, "requestId": self.request_id, "kind": self.kind,
               "eventTime": ev.ms_to_rfc3339(self.event_time_ms), "eventTimeMs": self.event_time_ms,
               "features": mon.layout(self.kind).names, "instances": self.rows,
               "loggerType": self.logger_type, "loggerSource": self.logger_source}
        if self.segment is not None:
            out["segment"] = self.segment
        return out


def ingest_rows(mon: Monitor, attrs, data, now_ms: int, *, check_skew: bool = True,
                rows_parser: Callable | None = None) -> Instances | None:
    """Validate a logger event (attributes + body) into :class:`Instances`; None when it is not
    for this monitor (another InferenceService, or a response with no predictions declared)."""
    etype = attrs["type"]
    if etype not in (ev.KSERVE_REQUEST, ev.KSERVE_RESPONSE):
        raise Rejected(f"event type {etype!r} is not a KServe logger request or response")
    for key in ("source", "id"):  # they name the request downstream (requestId, dedup key)
        if not isinstance(attrs.get(key), str) or not attrs[key]:
            raise Rejected(f"attribute '{key}' is missing or empty")
    isvc = attrs.get("inferenceservicename")
    if isvc is not None and isvc != mon.spec.inference_service:
        return None
    kind = "response" if etype == ev.KSERVE_RESPONSE else "request"
    if kind == "response" and not mon.spec.predictions:
        return None
    t = event_time_ms(attrs, now_ms)
    if check_skew and t - now_ms > mon.spec.window.max_clock_skew_ms:
        raise Rejected(f"event time {ev.ms_to_rfc3339(t)} is {t - now_ms} ms ahead of this function's clock "
                       f"(maxClockSkew {mon.spec.window.max_clock_skew_ms} ms)")
    segment = mon.logger_segment(attrs)
    if data is None or data == b"" or data == "":
        raise Rejected("empty body: expected a KServe V1 or V2 payload")
    try:
        if kind == "request":
            rows = (rows_parser and rows_parser(data)) or parse_request(data, mon.inputs.features)
        else:
            rows = parse_response(data, mon.predictions.features)
    except PayloadError as exc:
        raise Rejected(exc.reason) from None
    source = attrs["source"]
    return Instances(ev.instances_id(mon.name, etype, source, attrs["id"]), kind, t, rows, attrs["id"],
                     etype, source, segment)


def ingest(mon: Monitor, event: Event, now_ms: int, *, check_skew: bool = True) -> Event | None:
    """A KServe logger event as an ``inference.instances`` event (or None, see ingest_rows)."""
    check_attributes(event)
    inst = ingest_rows(mon, event, event.data, now_ms, check_skew=check_skew)
    if inst is None:
        return None
    return ev.make_event(ev.INSTANCES, mon.name, inst.id, inst.data(mon), source=mon.source("ingest"),
                         time_ms=inst.event_time_ms)
