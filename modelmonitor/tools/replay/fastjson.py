"""Outlier events as JSON text without building a CloudEvent per event.

The text is cut from a template: one event made by the handlers' own
:func:`~modelmonitor.handlers.outlier_event` and :func:`~modelmonitor.core.events.to_json_line`
with marker values, split at the markers. The template is then checked against the real
functions on a probe event; if anything differs (the event layout changed), ``OutlierText``
says so and callers keep the general path, so output stays byte-identical either way.
"""
from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _json_str

import numpy as np

from modelmonitor.core import events as ev
from modelmonitor.handlers import Monitor, outlier_event

_ID = "@@instances-id@@"
_RID = "@@request-id@@"
_T = 1_234_567_890_123          # 2009-02-13T23:31:30.123Z
_NOW = -5_555_555_555_555_555
_HITS = [{"instance": 0, "feature": "@@hits@@", "value": 1.0, "rule": "zscore", "score": 1.0, "threshold": 1.0}]


def rfc3339_column(ms: np.ndarray) -> list[str]:
    """``ms_to_rfc3339`` of a column of epoch milliseconds."""
    return [s + "Z" for s in np.datetime_as_string(np.asarray(ms, dtype="datetime64[ms]"), unit="ms").tolist()]


class OutlierText:
    def __init__(self, mon: Monitor):
        self.mon = mon
        hits_text = json.dumps(_HITS, separators=(",", ":"))
        text = ev.to_json_line(outlier_event(mon, _ID, _RID, _T, _HITS, _NOW))
        self.parts = None
        try:
            rest = text
            pieces = []
            for marker in (json.dumps(_ID + "/outliers"), ev.ms_to_rfc3339(_T), json.dumps(_RID), str(_T), str(_NOW),
                           hits_text):
                head, sep, rest = rest.partition(marker)
                if not sep:
                    raise ValueError(marker)
                pieces.append(head)
            pieces.append(rest)
            self.parts = pieces
            probe_hits = [{"instance": 2, "feature": "f\u00e9", "value": 1e-7, "rule": "range", "score": 3.5e20,
                           "threshold": -0.0}]
            probe = ev.to_json_line(outlier_event(mon, "m/request/r\u2603/abc", "r\"\u2603", 1_767_225_600_123,
                                                  probe_hits, 42))
            if self.text("m/request/r\u2603/abc", "r\"\u2603", 1_767_225_600_123, ev.ms_to_rfc3339(1_767_225_600_123),
                         probe_hits, 42) != probe:
                self.parts = None
        except ValueError:
            self.parts = None

    @property
    def usable(self) -> bool:
        return self.parts is not None

    def text(self, inst_id: str, request_id: str, t: int, t_text: str, hits: list, now) -> str:
        p = self.parts
        return (p[0] + _json_str(inst_id + "/outliers") + p[1] + t_text + p[2] + _json_str(request_id) + p[3]
                + str(t) + p[4] + str(now) + p[5] + json.dumps(hits, separators=(",", ":")) + p[6])
