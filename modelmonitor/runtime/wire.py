"""The edge between the domain's :class:`~modelmonitor.core.events.Event` and the CloudEvents SDK 2.x.

Everything that reads or writes CloudEvents on a wire (the function runtime, the local broker,
the Kafka bridge, tests posting events) converts here with the SDK's ``cloudevents.core`` API,
so the SDK is named in one place:

- :func:`from_sdk` / :func:`to_sdk`: an SDK event (``cloudevents.core.v1.event.CloudEvent``, what
  func-python puts in ``scope["event"]``) to and from the domain type;
- :func:`from_http`: the event in an HTTP request or reply (binary or structured content mode),
  or :class:`NotACloudEvent` with the reason;
- :func:`to_binary` / :func:`to_structured`: HTTP headers and body of an event;
- :func:`from_kafka` / :func:`to_kafka`: the same for Kafka records.

The domain keeps ``time`` as an RFC 3339 string; the SDK holds a ``datetime``. Note that the
SDK gives an event decoded without a ``time`` the decoding instant as its time.

>>> e = from_http({"ce-specversion": "1.0", "ce-type": "t", "ce-source": "/s", "ce-id": "1",
...                "ce-time": "2026-01-01T00:00:00.123Z", "content-type": "application/json"},
...               b'{"a": 1}')
>>> e["type"], e["time"], e.data
('t', '2026-01-01T00:00:00.123Z', {'a': 1})
>>> headers, body = to_binary(e)
>>> headers["ce-time"], body          # the SDK writes microseconds
('2026-01-01T00:00:00.123000Z', b'{"a": 1}')
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any, Mapping

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.bindings.common import get_event_factory_for_version
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from dateutil.parser import isoparse

from modelmonitor.core.events import Event

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_FORMAT = JSONFormat()


class NotACloudEvent(ValueError):
    """A message that holds no valid CloudEvent; the message says why."""


def format_time(value: _dt.datetime) -> str:
    """RFC 3339 text of an SDK time: UTC as ``...Z`` with milliseconds (or microseconds when
    they are not whole milliseconds).

    >>> format_time(_dt.datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=_dt.timezone.utc))
    '2026-01-01T00:00:00.123Z'
    >>> format_time(_dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc))   # four-digit year, as RFC 3339 wants
    '0001-01-01T00:00:00.000Z'
    """
    if value.tzinfo is not None and value.utcoffset() == _dt.timedelta(0):
        frac = f".{value.microsecond // 1000:03d}" if value.microsecond % 1000 == 0 else f".{value.microsecond:06d}"
        # Not strftime("%Y"): glibc writes year 1 as "1", which no RFC 3339 parser reads back.
        return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}" + frac + "Z"
    return value.isoformat()


# What the domain writes (events.ms_to_rfc3339, format_time): read by the standard library's
# fromisoformat, which gives the same instant and offset as dateutil's isoparse ~10x faster.
_PLAIN_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")


def parse_time(text: str) -> _dt.datetime:
    """An RFC 3339 timestamp as the SDK holds it (what dateutil's ``isoparse`` reads, which the
    SDK uses itself; plain forms take a faster path to the same datetime).

    >>> parse_time("2026-01-01T00:00:00.123Z") == isoparse("2026-01-01T00:00:00.123Z")
    True
    >>> parse_time("2026-01-01T24:00:00Z")            # isoparse's reading of midnight at the end
    datetime.datetime(2026, 1, 2, 0, 0, tzinfo=tzutc())
    """
    if _PLAIN_RFC3339.fullmatch(text):
        try:
            return _dt.datetime.fromisoformat(text)
        except ValueError:
            pass
    return isoparse(text)


def from_sdk(event: Any) -> Event:
    """The domain event of an SDK event (attributes copied, ``time`` as text, data shared)."""
    attrs = dict(event.get_attributes())
    t = attrs.get("time")
    if isinstance(t, _dt.datetime):
        attrs["time"] = format_time(t)
    try:
        return Event(attrs, event.get_data())
    except ValueError as err:
        raise NotACloudEvent(str(err)) from None


def to_sdk(event: Event) -> SdkEvent:
    """The SDK event of a domain event (a JSON array or number as data is passed as its JSON
    text: the SDK's JSON format serialises only objects, text and bytes)."""
    attrs = dict(event.get_attributes())
    t = attrs.get("time")
    if isinstance(t, str):
        try:
            attrs["time"] = parse_time(t)
        except (ValueError, OverflowError):
            raise NotACloudEvent(f"attribute 'time' is not an RFC 3339 timestamp: {t!r}") from None
    data = event.data
    if data is not None and not isinstance(data, (dict, str, bytes, bytearray)):
        data = json.dumps(data).encode()
    try:  # the event class of its specversion (SDK 2.x reads 0.3 events too)
        return get_event_factory_for_version(str(attrs.get("specversion", "1.0")))(attrs, data)
    except Exception as err:  # CloudEventValidationError: a name or value the SDK refuses
        raise NotACloudEvent(str(err)) from None


def from_http(headers: Mapping[str, str], body: bytes | None) -> Event:
    """The event of an HTTP message in binary (``ce-*`` headers) or structured mode."""
    try:
        sdk_event = ce_http.from_http_event(ce_http.HTTPMessage(
            headers={k.lower(): v for k, v in headers.items()}, body=body or b""))
    except Exception as err:  # the SDK raises several unrelated types for bad input
        raise NotACloudEvent(str(err) or type(err).__name__) from None
    return from_sdk(sdk_event)


def to_binary(event: Event) -> tuple[dict[str, str], bytes]:
    """Binary-mode headers and body (text and bytes data go out as they are, JSON as JSON).

    >>> to_binary(Event({"type": "t", "source": "s", "id": "1", "datacontenttype": "text/plain"}, "hi"))[1]
    b'hi'
    """
    msg = ce_http.to_binary_event(to_sdk(event), _FORMAT)
    return dict(msg.headers), msg.body


def to_structured(event: Event) -> tuple[dict[str, str], bytes]:
    """Structured-mode headers and body (``application/cloudevents+json``)."""
    msg = ce_http.to_structured_event(to_sdk(event), _FORMAT)
    return dict(msg.headers), msg.body


def _partition_key(event) -> str | bytes | None:
    key = event.get_extension("partitionkey")
    return key.encode() if isinstance(key, str) else key


def to_kafka(event: Event, content_mode: str = "structured") -> ce_kafka.KafkaMessage:
    """The Kafka record of an event; the ``partitionkey`` extension becomes the record key."""
    if content_mode == "binary":
        return ce_kafka.to_binary(to_sdk(event), _FORMAT, key_mapper=_partition_key)
    if content_mode == "structured":
        return ce_kafka.to_structured(to_sdk(event), _FORMAT, key_mapper=_partition_key)
    raise ValueError(f"content_mode must be 'binary' or 'structured', got {content_mode!r}")


def from_kafka(headers: Mapping[str, bytes], key: bytes | str | None, value: bytes,
               structured: bool) -> Event:
    """The event of a Kafka record; the record key becomes the ``partitionkey`` extension."""
    msg = ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value)
    try:
        sdk_event = (ce_kafka.from_structured(msg, _FORMAT) if structured
                     else ce_kafka.from_binary(msg, _FORMAT))
    except Exception as err:  # the SDK raises several unrelated types for bad input
        raise NotACloudEvent(str(err) or type(err).__name__) from None
    return from_sdk(sdk_event)
