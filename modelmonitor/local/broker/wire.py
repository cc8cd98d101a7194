"""Events in wire form: binary-mode HTTP headers (`ce-*`, `content-type`) and the body bytes.

The broker keeps an event as it arrived (a binary-mode request as is, a structured one converted
once) and sends those bytes to every subscriber: the data is not decoded and re-encoded at each
hop. Filters read the attributes from the headers; an `Event` is built only for in-process
consumers, and then decodes its data on first use (`LazyEvent`). The CloudEvents SDK is reached
through `modelmonitor.runtime.wire` only.

>>> h, b = to_binary_http(Event({"type": "t", "source": "s", "id": "1", "monitor": "m"}, {"x": 1}))
>>> wire_attributes(h)["monitor"], b
('m', b'{"x": 1}')
>>> lazy_event(h, b).data
{'x': 1}
"""
from __future__ import annotations

from typing import Any, Mapping

from modelmonitor.core.events import Event
from modelmonitor.runtime import wire as ce_wire

REQUIRED = ("id", "source", "type")


def to_binary_http(event: Event) -> tuple[dict[str, str], bytes]:
    """Binary-mode headers (lower-cased) and body of an event; a `LazyEvent` not decoded yet
    gives back the bytes it was made of.

    >>> to_binary_http(Event({"type": "t", "source": "s", "datacontenttype": "text/plain"}, "hi"))[1]
    b'hi'
    """
    if isinstance(event, LazyEvent) and not event._decoded:
        return dict(event._headers), event._body
    headers, body = ce_wire.to_binary(event)
    return {k.lower(): v for k, v in headers.items()}, body


def binary_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The event's part of a binary-mode request's headers (lower-cased `ce-*` and
    `content-type`)."""
    out = {}
    for k, v in headers.items():
        k = k.lower()
        if k.startswith("ce-") or k == "content-type":
            out[k] = v
    return out


def wire_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    """Context attributes and extensions of a wire-form event (what Trigger filters compare)."""
    attrs = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
    if "content-type" in headers:
        attrs["datacontenttype"] = headers["content-type"]
    return attrs


def missing_required(headers: Mapping[str, str]) -> list[str]:
    """Required binary-mode headers an answer lacks (empty: it is an event)."""
    return [f"ce-{k}" for k in REQUIRED if not headers.get(f"ce-{k}")]


_DATA_SLOT = Event.data   # the base class' slot, under the property below


class LazyEvent(Event):
    """An Event over wire-form headers and body whose data is decoded only when read."""

    __slots__ = ("_headers", "_body", "_decoded")

    def __init__(self, headers: Mapping[str, str], body: bytes):
        self._headers = dict(headers)
        self._body = body
        self._decoded = False
        super().__init__(wire_attributes(self._headers), None)

    @property
    def data(self) -> Any:  # type: ignore[override]
        if not self._decoded:
            _DATA_SLOT.__set__(self, ce_wire.from_http(self._headers, self._body).data)
            self._decoded = True
        return _DATA_SLOT.__get__(self)

    @data.setter
    def data(self, value: Any) -> None:
        _DATA_SLOT.__set__(self, value)
        if value is not None or self._decoded:
            self._decoded = True


def lazy_event(headers: Mapping[str, str], body: bytes) -> Event:
    """The wire-form event as an Event (data decoded on first use)."""
    return LazyEvent(headers, body)
