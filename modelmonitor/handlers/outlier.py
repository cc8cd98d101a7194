"""The outlier handler: ``inference.instances`` -> ``outlier.detected`` (or nothing).
"""
from __future__ import annotations


from modelmonitor.core.events import Event

from modelmonitor.core import events as ev
from modelmonitor.handlers.monitor import (Monitor, check_instances,
    _split)
def outliers(mon: Monitor, event: Event, now_ms: int, *, check_skew: bool = True) -> Event | None:
    """One ``outlier.detected`` event listing every flagged value of the request, or None.
    The whole event is validated (even with no detector), so every role answers the same
    malformed instances event with the same 400."""
    data, layout = check_instances(mon, event, now_ms if check_skew else None)
    if mon.outlier_detector is None:
        return None
    if data.get("kind", "request") != "request":
        return None
    numeric, categorical = _split(data["instances"], layout)
    found = mon.outlier_detector.detect(numeric, categorical)
    if not found:
        return None
    return outlier_event(mon, event["id"], data.get("requestId"), data["eventTimeMs"], found, now_ms,
                         mon.data_segment(data))


def outlier_event(mon: Monitor, inst_id: str, request_id, t: int, found: list, now_ms: int,
                  segment: str | None = None) -> Event:
    out = {"monitor": mon.name, "requestId": request_id, "eventTimeMs": t, "detectedAtMs": now_ms,
           "outliers": found}
    if segment is not None:
        out["segment"] = segment
    return ev.make_event(ev.OUTLIER_DETECTED, mon.name, inst_id + "/outliers", out,
                         source=mon.source("outlier"), time_ms=t)

