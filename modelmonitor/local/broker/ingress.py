"""The broker's HTTP ingress: a CloudEvent POSTed (binary or structured mode) at `/` or at
`/<namespace>/<broker>`; health probes on GET."""
from __future__ import annotations

import logging
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from modelmonitor.runtime import wire

from modelmonitor.local.broker.errors import BrokerClosedError
from modelmonitor.local.broker.wire import binary_headers, to_binary_http

if TYPE_CHECKING:
    from modelmonitor.local.broker.local_broker import LocalBroker

log = logging.getLogger("modelmonitor.local.broker")


class BodyTooLarge(Exception):
    pass


class IngressServer(ThreadingHTTPServer):
    daemon_threads = True
    # Bursts of logger connections should wait in the kernel, not be refused.
    request_queue_size = 256

    def __init__(self, address, broker: "LocalBroker"):
        self.broker = broker
        super().__init__(address, _IngressHandler)


class _IngressHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: loggers and functions reuse connections
    server_version = "modelmonitor-local-broker"
    server: IngressServer

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("ingress %s - " + fmt, self.address_string(), *args)

    def _answer(self, status: int, text: str = "", close: bool = False) -> None:
        payload = (text + "\n").encode() if text else b""
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if close:
            # The unread body is still on the socket; the connection cannot be reused.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, size = [], 0
            while True:
                line = self.rfile.readline(1024)
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                size += length
                if size > limit:
                    raise BodyTooLarge(size)
                chunks.append(self.rfile.read(length))
                self.rfile.readline(1024)  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise BodyTooLarge(length)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/healthz", "/readyz", "/health/readiness", "/health/liveness"):
            self._answer(200, "OK")
        elif self.server.broker._is_ingress_path(path):
            self._answer(405, "POST a CloudEvent here")
        else:
            self._answer(404, f"no broker at {path}")

    def do_POST(self) -> None:
        broker = self.server.broker
        path = urllib.parse.urlsplit(self.path).path
        if not broker._is_ingress_path(path):
            self._answer(404, f"no broker at {path}; POST to / or "
                              f"/{broker.namespace}/{broker.name}", close=True)
            return
        try:
            body = self._read_body(broker.max_body_bytes)
        except BodyTooLarge as err:
            broker._count("rejected")
            self._answer(413, f"body of {err.args[0]} bytes exceeds the broker's limit of "
                              f"{broker.max_body_bytes} bytes", close=True)
            return
        except ValueError:
            self._answer(400, "malformed chunked body", close=True)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            if "ce-specversion" in headers:
                # The SDK would report a binary event lacking ce-id as "no specversion".
                lacking = [f"ce-{k}" for k in ("id", "source", "type") if f"ce-{k}" not in headers]
                if lacking:
                    raise ValueError(f"binary-mode event lacks header(s) {', '.join(lacking)}")
            event = wire.from_http(headers, body)
            missing = [k for k in ("id", "source", "type") if not event.get(k)]
            if missing:
                raise ValueError(f"missing required attribute(s) {', '.join(missing)}")
        except (ValueError, TypeError, KeyError,
                UnicodeDecodeError, RecursionError) as err:   # RecursionError: JSON nested too deep
            broker._count("rejected")
            reason = str(err)
            # The SDK quotes the whole unparsable body in its message; do not echo megabytes.
            self._answer(400, "not a CloudEvent: " + (reason if len(reason) <= 300
                                                      else reason[:300] + "..."))
            return
        # Kept in wire form: a binary-mode request as it came, a structured one converted once.
        wire_form = (binary_headers(headers), body) if "ce-specversion" in headers \
            else to_binary_http(event)
        try:
            broker._accept(wire_form, event)
        except BrokerClosedError as err:
            self._answer(503, str(err))
            return
        self._answer(202)
