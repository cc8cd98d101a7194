"""Event contracts: the domain's event type, CloudEvent types, deterministic ids and builders.

The domain (handlers, detectors, statistics, windows) works on :class:`Event`: context
attributes and data, nothing else. The CloudEvents SDK is used only at the edges (the function
runtime, the local broker, the Kafka bridge, replay), which convert through
``modelmonitor.runtime.wire``.

Version policy: a type without suffix is version 1. A change that removes or renames a data
field, or changes a field's meaning, ships under a new type with a `.v2` suffix, and both are
emitted for one minor release. Adding a field is not breaking. Each type's JSON Schema is
`modelmonitor/core/schemas/<type>.json`, referenced by the event's `dataschema` attribute.

>>> ev = make_event(WINDOW_CLOSED, "iris", "iris/0/15000", {"monitor": "iris"})
>>> ev["type"], ev["id"], ev["monitor"], ev["datacontenttype"]
('io.modelmonitor.window.closed', 'iris/0/15000', 'iris', 'application/json')
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import uuid
from types import MappingProxyType
from typing import Any, Iterator, Mapping

# What the KServe payload logger sends.
KSERVE_REQUEST = "org.kubeflow.serving.inference.request"
KSERVE_RESPONSE = "org.kubeflow.serving.inference.response"
# What PingSource sends (the aggregator's processing-time tick).
PING = "dev.knative.sources.ping"

# What ModelMonitor emits.
INSTANCES = "io.modelmonitor.inference.instances"
OUTLIER_DETECTED = "io.modelmonitor.outlier.detected"
WINDOW_CLOSED = "io.modelmonitor.window.closed"
DRIFT_MEASURED = "io.modelmonitor.drift.measured"
DRIFT_DETECTED = "io.modelmonitor.drift.detected"
LATE_INSTANCES = "io.modelmonitor.instances.late"
DEAD_LETTER = "io.modelmonitor.event.rejected"
SEGMENTS_EXCESS = "io.modelmonitor.segments.excess"
SEGMENTS_COMPARED = "io.modelmonitor.segments.compared"

EMITTED_TYPES = (INSTANCES, OUTLIER_DETECTED, WINDOW_CLOSED, DRIFT_MEASURED, DRIFT_DETECTED,
                 LATE_INSTANCES, DEAD_LETTER, SEGMENTS_EXCESS, SEGMENTS_COMPARED)
SCHEMA_BASE = "https://modelmonitor.io/schemas/"


class Event:
    """One CloudEvent as the domain sees it: context attributes (``type``, ``source``, ``id``,
    ``specversion`` and the optional ones as strings; extensions as strings or JSON scalars)
    and ``data`` (a JSON value, ``str`` or ``bytes``).

    It reads like a mapping of its attributes (``e["type"]``, ``e.get("monitor")``, ``"time" in
    e``, iteration over attribute names, ``e["time"] = ...``), with ``e.data`` for the payload,
    the way the CloudEvents SDK 1.x event did, so code written against that keeps working.
    ``specversion`` defaults to 1.0 and ``id`` to a new UUID; no ``time`` is invented.

    >>> e = Event({"type": "t", "source": "/s", "id": "1", "monitor": "m"}, {"a": 1})
    >>> e["type"], e.get("monitor"), e.get("subject"), e.data, sorted(e)
    ('t', 'm', None, {'a': 1}, ['id', 'monitor', 'source', 'specversion', 'type'])
    >>> Event({"source": "/s"})
    Traceback (most recent call last):
    ...
    ValueError: CloudEvent attribute 'type' is missing or empty
    """

    __slots__ = ("_attributes", "data")

    def __init__(self, attributes: Mapping[str, Any], data: Any = None):
        attrs = {k: v for k, v in attributes.items() if v is not None}
        for key in ("type", "source"):
            if not isinstance(attrs.get(key), str) or not attrs[key]:
                raise ValueError(f"CloudEvent attribute '{key}' is missing or empty")
        if "id" not in attrs:
            attrs["id"] = str(uuid.uuid4())
        attrs.setdefault("specversion", "1.0")
        self._attributes = attrs
        self.data = data

    def __getitem__(self, key: str) -> Any:
        return self._attributes[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in ("type", "source", "id", "specversion") and (not isinstance(value, str) or not value):
            raise ValueError(f"CloudEvent attribute '{key}' must be a non-empty string")
        self._attributes[key] = value

    def __delitem__(self, key: str) -> None:
        if key in ("type", "source", "id", "specversion"):
            raise ValueError(f"CloudEvent attribute '{key}' is required")
        del self._attributes[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._attributes.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._attributes

    def __iter__(self) -> Iterator[str]:
        return iter(self._attributes)

    def __len__(self) -> int:
        return len(self._attributes)

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The attributes, as a read-only view."""
        return MappingProxyType(self._attributes)

    def get_attributes(self) -> Mapping[str, Any]:
        """Same as :attr:`attributes` (the SDK's spelling)."""
        return MappingProxyType(self._attributes)

    def with_attributes(self, **changes: Any) -> "Event":
        """A copy with some attributes set (None removes one); the data is shared.

        >>> Event({"type": "t", "source": "/s", "id": "1"}).with_attributes(id="2", x="y")["id"]
        '2'
        """
        attrs = dict(self._attributes)
        attrs.update(changes)
        return Event(attrs, self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._attributes == other._attributes and self.data == other.data

    __hash__ = None  # type: ignore[assignment]  # mutable data: not hashable

    def __repr__(self) -> str:
        return f"Event({self._attributes!r}, {self.data!r})"


def source_for(monitor: str, role: str, namespace: str = "default") -> str:
    """CloudEvent `source` of events a function emits: /modelmonitor/<ns>/<monitor>/<role>."""
    return f"/modelmonitor/{namespace}/{monitor}/{role}"


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_safe(value: str) -> str:
    """``value`` with every lone UTF-16 surrogate (what a JSON ``"\\ud800"`` escape decodes to)
    replaced by U+FFFD, so that it encodes as UTF-8.

    >>> text_safe("a\\ud800b")
    'a\\ufffdb'
    """
    return _SURROGATE.sub("\ufffd", value)


def attributes_problem(attrs: Mapping[str, Any]) -> str | None:
    """Why these CloudEvent attributes cannot be passed on, or None: type, source and id must be
    non-empty strings; every value a string, integer or boolean (structured mode lets a client
    put a number or an object where a string belongs) and every string valid UTF-8 text (no
    lone surrogate), so that the event can be written as headers, as JSON and in a log.

    >>> attributes_problem({"type": "t", "source": "s", "id": 7})
    "attribute 'id' must be a non-empty string"
    """
    for key in ("type", "source", "id"):
        if not isinstance(attrs.get(key), str) or not attrs[key]:
            return f"attribute '{key}' must be a non-empty string"
    for key, value in attrs.items():
        if not isinstance(key, str) or _SURROGATE.search(key):
            return f"attribute name {text_safe(str(key))[:64]!r} is not valid UTF-8 text"
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return f"attribute '{key}' is not valid UTF-8 text (it holds a lone surrogate)"
        elif value is not None and not isinstance(value, (bool, int)):
            return f"attribute '{key}' must be a string, not {type(value).__name__}"
    return None


def short_hash(*parts: str) -> str:
    """Stable 16-hex-digit digest of the parts (used in deterministic ids)."""
    h = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8)
    return h.hexdigest()


def instances_id(monitor: str, logger_type: str, logger_source: str, logger_id: str) -> str:
    """Id of the instances event derived from one logger event; the same logger event always
    yields the same id, so a redelivered logger event is recognisable downstream.

    >>> instances_id("iris", KSERVE_REQUEST, "http://localhost:9081/", "abc")
    'iris/request/abc/ca8c385b535f7f56'
    """
    kind = "response" if logger_type == KSERVE_RESPONSE else "request"
    return f"{monitor}/{kind}/{logger_id}/{short_hash(logger_type, logger_source, logger_id)}"


def window_id(monitor: str, start_ms: int, end_ms: int, segment: str | None = None) -> str:
    """Id of a window's events; a segmented monitor's window of one segment ends ``@<segment>``.

    >>> window_id("iris", 0, 15000), window_id("iris", 0, 15000, "v2")
    ('iris/0/15000', 'iris/0/15000@v2')
    """
    return f"{monitor}/{start_ms}/{end_ms}" + ("" if segment is None else f"@{segment}")


def ms_to_rfc3339(ms: int) -> str:
    """RFC 3339 with millisecond precision in UTC: 0 -> '1970-01-01T00:00:00.000Z'."""
    dt = _dt.datetime.fromtimestamp(ms // 1000, tz=_dt.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


_DAY_MS: dict[str, int] = {}


def rfc3339_to_ms(value: str) -> int:
    """Milliseconds since the epoch, truncating sub-millisecond digits (never rounding up).

    >>> rfc3339_to_ms("2020-05-01T10:00:00.1239Z"), rfc3339_to_ms("1970-01-01T01:00:00+01:00")
    (1588327200123, 0)
    """
    # Fast path for the common shape 2026-01-01T00:00:00.123Z (what loggers send).
    if len(value) == 24 and value[23] == "Z" and value[19] == "." and value[10] == "T":
        day = _DAY_MS.get(value[:10])
        if day is None:
            day = _DAY_MS[value[:10]] = rfc3339_to_ms(value[:10] + "T00:00:00Z")
        try:
            hh, mi, ss, ms = int(value[11:13]), int(value[14:16]), int(value[17:19]), int(value[20:23])
            if hh < 24 and mi < 60 and ss < 60 and value[13] == value[16] == ":":
                return day + hh * 3_600_000 + mi * 60_000 + ss * 1000 + ms
        except ValueError:
            pass
    s = value.strip()
    if not s:
        raise ValueError("empty time")
    s = s.replace("z", "Z")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    frac_ms = 0
    main = s
    # Split off a fractional part ourselves: datetime accepts at most 6 digits.
    if "." in s:
        head, rest = s.split(".", 1)
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        if not digits:
            raise ValueError(f"bad fractional seconds in {value!r}")
        frac_ms = int((digits + "000")[:3])
        main = head + rest[i:]
    dt = _dt.datetime.fromisoformat(main.replace(" ", "T"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    delta = dt - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + frac_ms


def make_event(type_: str, monitor: str, id_: str, data: Any, *, source: str | None = None,
               time_ms: int | None = None, extensions: dict | None = None) -> Event:
    """A derived ModelMonitor event: JSON data, `monitor` extension, deterministic id."""
    attrs = {
        "type": type_,
        "source": source or source_for(monitor, type_.rsplit(".", 2)[-2]),
        "id": id_,
        "datacontenttype": "application/json",
        "dataschema": SCHEMA_BASE + type_ + ".json",
        "monitor": monitor,
    }
    if time_ms is not None:
        attrs["time"] = ms_to_rfc3339(time_ms)
    if extensions:
        attrs.update(extensions)
    return Event(attrs, data)


RECEIVED_AT = "brokerreceivedms"
"""Extension attribute ``modelmonitor run --events-out`` adds to each recorded event: the wall
clock (Unix ms) at which the local broker accepted it. Only events carrying it give wall-clock
latencies in ``modelmonitor report``; a replay's output has none (its clock is event time)."""


def to_json_line(event: Event, received_ms: int | None = None) -> str:
    """Structured-mode JSON of an event on one line (what replay and the demo write); with
    ``received_ms``, the :data:`RECEIVED_AT` attribute records when a broker accepted it."""
    doc = {k: v for k, v in event.get_attributes().items()}
    if received_ms is not None:
        doc[RECEIVED_AT] = int(received_ms)
    doc["data"] = event.data
    return json.dumps(doc, separators=(",", ":"), sort_keys=False, allow_nan=False)


def to_record_line(event: Event, received_ms: int | None = None) -> str:
    """One line of ``--events-out`` for any event the broker accepted: :func:`to_json_line`
    when its data is strict JSON; otherwise the data goes in ``data_base64`` (the CloudEvents
    JSON format's field for binary data): raw bytes as they are, and JSON data holding NaN or
    Infinity (which strict JSON cannot write) as the JSON text with the tokens ``NaN``,
    ``Infinity`` and ``-Infinity``, what Python's and most JSON parsers read back.

    >>> to_record_line(Event({"type": "t", "source": "s", "id": "1"}, {"x": float("nan")}))
    '{"type":"t","source":"s","id":"1","specversion":"1.0","data_base64":"eyJ4IjogTmFOfQ=="}'
    """
    import base64
    if not isinstance(event.data, (bytes, bytearray)):
        try:
            return to_json_line(event, received_ms)
        except (ValueError, TypeError, RecursionError):
            pass
    doc = {k: v for k, v in event.get_attributes().items()}
    if received_ms is not None:
        doc[RECEIVED_AT] = int(received_ms)
    data = event.data
    if not isinstance(data, (bytes, bytearray)):
        try:
            data = json.dumps(data).encode()            # allow_nan: NaN, Infinity, -Infinity
        except (ValueError, TypeError, RecursionError):   # not JSON at all: recorded as its type
            data = f"<{type(data).__name__} that is not JSON>".encode()
    doc["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    return json.dumps(doc, separators=(",", ":"))


def from_json_doc(doc: dict) -> Event:
    """A CloudEvent from a structured-mode JSON document (data may be JSON or data_base64)."""
    if not isinstance(doc, dict):
        raise ValueError("a structured CloudEvent must be a JSON object")
    attrs = {k: v for k, v in doc.items() if k not in ("data", "data_base64")}
    for key in ("type", "source", "id"):
        if not isinstance(attrs.get(key), str) or not attrs[key]:
            raise ValueError(f"CloudEvent attribute '{key}' is missing")
    attrs.setdefault("specversion", "1.0")
    if "data_base64" in doc:
        import base64
        data: Any = base64.b64decode(doc["data_base64"])
    else:
        data = doc.get("data")
    return Event(attrs, data)
