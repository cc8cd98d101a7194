"""Where deliveries go: subscribers over HTTP (binary mode, `Prefer: reply`) or in-process sinks,
and the outcome of one attempt."""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import urllib3

from modelmonitor.core.events import Event
from modelmonitor.runtime import wire

log = logging.getLogger("modelmonitor.local.broker")

ERROR_DEST = "knativeerrordest"
ERROR_CODE = "knativeerrorcode"
ERROR_DATA = "knativeerrordata"
#: How much of a failed response body goes (base64) into `knativeerrordata`.
ERROR_DATA_LIMIT = 1024
#: Statuses Knative retries besides every 5xx (and connection errors / timeouts).
RETRYABLE_4XX = frozenset({404, 408, 409, 429})



@dataclass
class _Outcome:
    ok: bool
    retryable: bool = False
    status: int = 0                      # HTTP status; 0 when there was no HTTP answer
    body: bytes = b""                    # response body (or error text) for knativeerrordata
    reply: Event | None = None
    destination: str = ""


def to_binary_http(event: Event) -> tuple[dict[str, str], bytes]:
    """Binary-mode HTTP headers and body of an event (text and bytes data go out as they are).

    >>> to_binary_http(Event({"type": "t", "source": "s", "datacontenttype": "text/plain"}, "hi"))[1]
    b'hi'
    """
    return wire.to_binary(event)


def parse_reply(status: int, headers: Mapping[str, str], body: bytes) -> Event | None:
    """The reply event in a subscriber's answer, or None: 202 is never a reply, and an answer
    without ce-* headers or a structured CloudEvent content type is no event (an empty 200).

    >>> parse_reply(200, {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s", "ce-id": "1"}, b"")["type"]
    't'
    >>> parse_reply(202, {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s", "ce-id": "1"}, b"") is None
    True
    """
    if status == 202 or not 200 <= status < 300:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    binary = "ce-specversion" in lowered
    structured = lowered.get("content-type", "").startswith("application/cloudevents+json")
    if not binary and not structured:
        return None
    return wire.from_http(lowered, body)


class _HttpTarget:
    """A subscriber reached over HTTP; several URLs are replicas used round robin.

    urllib3 directly (not requests): a delivery costs about a third of the CPU, and the pool
    checks that a kept-alive connection is still open before reusing it (functions restart).
    """

    def __init__(self, label: str, urls: Sequence[str], pool: urllib3.PoolManager):
        self.label = label
        self.urls = list(urls)
        self._turn = itertools.count()
        self._pool = pool

    def next_url(self) -> str:
        return self.urls[next(self._turn) % len(self.urls)]

    def send(self, event: Event, timeout: float, want_reply: bool) -> _Outcome:
        url = self.next_url()
        headers, body = to_binary_http(event)
        if want_reply:
            headers["Prefer"] = "reply"
        try:
            resp = self._pool.request("POST", url, body=body, headers=headers,
                                      timeout=urllib3.Timeout(connect=timeout, read=timeout),
                                      retries=False, redirect=False)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            # No answer at all (refused, reset, timed out): Knative retries these.
            return _Outcome(ok=False, retryable=True, status=0,
                            body=f"{type(err).__name__}: {err}".encode(), destination=url)
        status = resp.status
        if 200 <= status < 300:
            reply = None
            if want_reply:
                try:
                    reply = parse_reply(status, resp.headers, resp.data)
                except ValueError as err:
                    log.warning("ignoring an invalid reply from %s: %s", url, err)
            return _Outcome(ok=True, status=status, reply=reply, destination=url)
        return _Outcome(ok=False, retryable=status in RETRYABLE_4XX or status >= 500,
                        status=status, body=resp.data[:ERROR_DATA_LIMIT], destination=url)


class _SinkTarget:
    """An in-process subscriber (e.g. a KafkaSinkWriter): called with the event; it may return
    a reply CloudEvent; an exception is a retryable failure."""

    def __init__(self, label: str, sink: Callable[[Event], Any]):
        self.label = label
        self.sink = sink

    def send(self, event: Event, timeout: float, want_reply: bool) -> _Outcome:
        dest = f"inprocess:{self.label}"
        try:
            result = self.sink(event)
        except Exception as err:  # the sink's failure is this delivery's failure
            return _Outcome(ok=False, retryable=True, status=0,
                            body=f"{type(err).__name__}: {err}".encode(), destination=dest)
        reply = result if want_reply and isinstance(result, Event) else None
        return _Outcome(ok=True, status=200, reply=reply, destination=dest)
