"""The edge between the domain's :class:`~modelmonitor.core.events.Event` and the CloudEvents SDK.

Everything that reads or writes CloudEvents on a wire (the function runtime, the local broker,
the Kafka bridge, tests posting events) converts here, so the SDK is named in one place:

- :func:`from_sdk` / :func:`to_sdk`: an SDK event to and from the domain type;
- :func:`from_http`: the event in an HTTP request or reply (binary or structured content mode),
  or :class:`NotACloudEvent` with the reason;
- :func:`to_binary` / :func:`to_structured`: HTTP headers and body of an event.

>>> e = from_http({"ce-specversion": "1.0", "ce-type": "t", "ce-source": "/s", "ce-id": "1",
...                "content-type": "application/json"}, b'{"a": 1}')
>>> e["type"], e.data
('t', {'a': 1})
>>> to_binary(e)[1]
b'{"a": 1}'
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from cloudevents import exceptions as ce_exceptions
from cloudevents.conversion import to_binary as _sdk_to_binary
from cloudevents.conversion import to_structured as _sdk_to_structured
from cloudevents.http import CloudEvent as SdkEvent
from cloudevents.http import from_http as _sdk_from_http

from modelmonitor.core.events import Event

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


class NotACloudEvent(ValueError):
    """An HTTP message that holds no valid CloudEvent; the message says why."""


def from_sdk(event: Any) -> Event:
    """The domain event of an SDK event (attributes copied, data shared)."""
    return Event(dict(event.get_attributes()), event.data)


def to_sdk(event: Event) -> SdkEvent:
    """The SDK event of a domain event."""
    return SdkEvent(dict(event.get_attributes()), event.data)


def from_http(headers: Mapping[str, str], body: bytes | None) -> Event:
    """The event of an HTTP message in binary (``ce-*`` headers) or structured mode."""
    try:
        return from_sdk(_sdk_from_http(dict(headers), body))
    except (ce_exceptions.GenericException, ValueError, TypeError, AttributeError) as err:
        raise NotACloudEvent(str(err) or type(err).__name__) from None


def _json_content(content_type: str | None) -> bool:
    # CloudEvents: no datacontenttype means JSON data.
    return content_type is None or "json" in content_type.lower()


def to_binary(event: Event) -> tuple[dict[str, str], bytes]:
    """Binary-mode headers and body. Text data of a non-JSON content type goes out as is (the
    SDK's default marshaller would JSON-quote every string); bytes go out raw.

    >>> to_binary(Event({"type": "t", "source": "s", "datacontenttype": "text/plain"}, "hi"))[1]
    b'hi'
    """
    content_type = event.get("datacontenttype")

    def marshal(data: Any) -> Any:
        if data is None or isinstance(data, (bytes, bytearray)):
            return data
        if isinstance(data, str) and not _json_content(content_type):
            return data
        return json.dumps(data)

    headers, body = _sdk_to_binary(to_sdk(event), data_marshaller=marshal)
    if isinstance(body, str):
        body = body.encode()
    # Extensions may be ints or booleans; HTTP header values must be strings.
    return {k: v if isinstance(v, str) else str(v) for k, v in headers.items()}, body or b""


def to_structured(event: Event) -> tuple[dict[str, str], bytes]:
    """Structured-mode headers and body (``application/cloudevents+json``)."""
    headers, body = _sdk_to_structured(to_sdk(event))
    return dict(headers), body if isinstance(body, bytes) else body.encode()
