"""Where deliveries go: subscribers over HTTP (binary mode, `Prefer: reply`) or in-process sinks,
and the outcome of one attempt. Events travel in wire form (see `wire`)."""
from __future__ import annotations

import http.client
import itertools
import logging
import select
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from modelmonitor.core.events import Event
from modelmonitor.local.broker.wire import (binary_headers, lazy_event, missing_required,
                                            to_binary_http)
from modelmonitor.runtime import wire as ce_wire

log = logging.getLogger("modelmonitor.local.broker")

ERROR_DEST = "knativeerrordest"
ERROR_CODE = "knativeerrorcode"
ERROR_DATA = "knativeerrordata"
#: How much of a failed response body goes (base64) into `knativeerrordata`.
ERROR_DATA_LIMIT = 1024
#: Statuses Knative retries besides every 5xx (and connection errors / timeouts).
RETRYABLE_4XX = frozenset({404, 408, 409, 429})

Wire = tuple[dict[str, str], bytes]


@dataclass
class _Outcome:
    ok: bool
    retryable: bool = False
    status: int = 0                      # HTTP status; 0 when there was no HTTP answer
    body: bytes = b""                    # response body (or error text) for knativeerrordata
    reply: Wire | None = None            # the reply event in wire form
    destination: str = ""


def reply_wire(status: int, headers: Mapping[str, str], body: bytes) -> Wire | None:
    """The reply event in a subscriber's answer in wire form, or None: 202 is never a reply,
    and an answer without ce-* headers or a structured CloudEvent content type is no event
    (an empty 200). A binary reply is kept as it came (not decoded); a structured one is
    converted once. Raises ValueError for an answer that claims to be an event but is none.

    >>> reply_wire(200, {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s", "ce-id": "1"}, b"")[0]["ce-type"]
    't'
    >>> reply_wire(202, {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s", "ce-id": "1"}, b"") is None
    True
    """
    if status == 202 or not 200 <= status < 300:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if "ce-specversion" in lowered:
        missing = missing_required(lowered)
        if missing:
            raise ValueError(f"binary-mode reply lacks header(s) {', '.join(missing)}")
        return binary_headers(lowered), body
    if lowered.get("content-type", "").startswith("application/cloudevents+json"):
        return to_binary_http(ce_wire.from_http(lowered, body))
    return None


def parse_reply(status: int, headers: Mapping[str, str], body: bytes) -> Event | None:
    """The reply event in a subscriber's answer as an Event, or None (see `reply_wire`).

    >>> parse_reply(200, {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s", "ce-id": "1"}, b"")["type"]
    't'
    """
    wire = reply_wire(status, headers, body)
    return lazy_event(*wire) if wire is not None else None


class Connections:
    """Kept-alive HTTP/1.1 connections of the delivery threads: one per thread and subscriber
    address (a delivery thread sends one request at a time), so no pool, no lock.

    `http.client` directly: per delivery it costs about half the CPU of urllib3's pool on this
    project's machine (148 against 323 µs for a small event). A kept connection the other side
    closed meanwhile (a function restarted) is noticed before reuse, as urllib3 does: an idle
    connection's socket that is readable is at its end, and a new connection is opened.
    """

    def __init__(self):
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []

    def get(self, scheme: str, netloc: str, timeout: float) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get((scheme, netloc))
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = conns[(scheme, netloc)] = cls(netloc, timeout=timeout)
            with self._lock:
                self._all.append(conn)
        elif conn.sock is not None:
            if select.select([conn.sock], [], [], 0)[0]:   # closed by the other side
                conn.close()
            else:
                conn.sock.settimeout(timeout)
        conn.timeout = timeout
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


class _HttpTarget:
    """A subscriber reached over HTTP; several URLs are replicas used round robin."""

    def __init__(self, label: str, urls: Sequence[str], connections: Connections):
        self.label = label
        self.urls = list(urls)
        self._parts = [urllib.parse.urlsplit(u) for u in self.urls]
        self._turn = itertools.count()
        self._connections = connections

    def send(self, headers: dict[str, str], body: bytes, timeout: float,
             want_reply: bool) -> _Outcome:
        turn = next(self._turn) % len(self.urls)
        url, parts = self.urls[turn], self._parts[turn]
        if want_reply:
            headers = {**headers, "Prefer": "reply"}
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn = self._connections.get(parts.scheme, parts.netloc, timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.will_close:
                conn.close()
        except (http.client.HTTPException, OSError, ValueError) as err:
            # No answer at all (refused, reset, timed out): Knative retries these.
            conn.close()
            return _Outcome(ok=False, retryable=True, status=0,
                            body=f"{type(err).__name__}: {err}".encode(), destination=url)
        status = resp.status
        if 200 <= status < 300:
            reply = None
            if want_reply:
                try:
                    reply = reply_wire(status, resp.headers, data)
                except ValueError as err:   # wire.NotACloudEvent is a ValueError
                    log.warning("ignoring an invalid reply from %s: %s", url, err)
            return _Outcome(ok=True, status=status, reply=reply, destination=url)
        return _Outcome(ok=False, retryable=status in RETRYABLE_4XX or status >= 500,
                        status=status, body=data[:ERROR_DATA_LIMIT], destination=url)


class _SinkTarget:
    """An in-process subscriber (e.g. a KafkaSinkWriter): called with the event; it may return
    a reply Event; an exception is a retryable failure."""

    def __init__(self, label: str, sink: Callable[[Event], Any]):
        self.label = label
        self.sink = sink

    def send(self, headers: dict[str, str], body: bytes, timeout: float,
             want_reply: bool) -> _Outcome:
        dest = f"inprocess:{self.label}"
        try:
            result = self.sink(lazy_event(headers, body))
        except Exception as err:  # the sink's failure is this delivery's failure
            return _Outcome(ok=False, retryable=True, status=0,
                            body=f"{type(err).__name__}: {err}".encode(), destination=dest)
        reply = (to_binary_http(result) if want_reply and isinstance(result, Event)
                 else None)
        return _Outcome(ok=True, status=200, reply=reply, destination=dest)
