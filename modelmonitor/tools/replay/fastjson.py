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
import orjson

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
                + str(t) + p[4] + str(now) + p[5] + hits_text(hits) + p[6])


_HIT_KEYS = ("instance", "feature", "value", "rule", "score", "threshold")
_HIT = '{"instance":%d,"feature":%s,"value":%r,"rule":%s,"score":%r,"threshold":%r}'
_NAMES: dict[str, str] = {}


def _name(text: str) -> str:
    out = _NAMES.get(text)
    if out is None:
        out = _json_str(text)
        if len(_NAMES) < 4096:          # feature and rule names: a handful
            _NAMES[text] = out
    return out


def hits_text(hits: list) -> str:
    """``json.dumps(hits, separators=(",", ":"))`` for outlier records.

    First orjson, whose text is the same wherever it holds no exponent, no null (orjson writes
    NaN as null), no escape and only ASCII: both write a float in plain notation as its
    shortest round-trip digits (Python's repr), and a float of magnitude below 1e-4 is the only
    one orjson writes plainly and repr with an exponent (caught by ``0.0000``). Anything else
    (e.g. ``1e-05``, ``"é"``, NaN) takes the formatting below."""
    try:
        text = orjson.dumps(hits)
    except TypeError:       # orjson.JSONEncodeError: e.g. an integer beyond 64 bits
        return _hits_text_slow(hits)
    if text.isascii() and not (b"e-" in text or b"e+" in text or b"null" in text or b"\\" in text
                               or b"0.0000" in text or b"Infinity" in text or b"NaN" in text):
        return text.decode()
    return _hits_text_slow(hits)


def _hits_text_slow(hits: list) -> str:
    """Numeric hits formatted directly (JSON writes a finite float as its repr), anything else
    by json."""
    parts = []
    for h in hits:
        v, sc, th, i = h["value"], h["score"], h["threshold"], h["instance"]
        if (type(v) is float and type(sc) is float and type(th) is float and type(i) is int
                and v - v == 0.0 and sc - sc == 0.0 and th - th == 0.0 and tuple(h) == _HIT_KEYS
                and type(h["feature"]) is str and type(h["rule"]) is str):
            parts.append(_HIT % (i, _name(h["feature"]), v, _name(h["rule"]), sc, th))
        else:
            parts.append(json.dumps(h, separators=(",", ":")))
    return "[" + ",".join(parts) + "]"
