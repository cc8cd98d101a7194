"""The broker's HTTP ingress: a CloudEvent POSTed (binary or structured mode) at `/` or at
`/<namespace>/<broker>`; health probes on GET."""
from __future__ import annotations

import logging
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from modelmonitor.core import events as ev
from modelmonitor.runtime import wire

from modelmonitor.local.broker.errors import BrokerClosedError
from modelmonitor.local.broker.wire import binary_headers, to_binary_http

if TYPE_CHECKING:
    from modelmonitor.local.broker.local_broker import LocalBroker

log = logging.getLogger("modelmonitor.local.broker")


#: Seconds a client may take to send a request's line, headers or any part of its body (a slow
#: or lying client: a Content-Length larger than what it sends) before the connection is closed.
READ_TIMEOUT_S = 30.0
#: What the broker answers to methods other than GET and POST, like Knative's broker ingress.
NOT_ALLOWED = ("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT")


class BodyTooLarge(Exception):
    pass


class BadBody(ValueError):
    """A request body that cannot be read as HTTP frames it (the message says why)."""


class LengthRequired(Exception):
    pass


class _Reader:
    """The request stream of a connection, remembering whether the current request has begun to
    arrive and whether a read timed out (http.server closes such a connection without a word)."""

    def __init__(self, raw):
        self.raw = raw
        self.started = False
        self.timed_out = False

    def readline(self, limit: int = -1) -> bytes:
        return self._read(self.raw.readline, limit)

    def read(self, n: int = -1) -> bytes:
        return self._read(self.raw.read, n)

    def _read(self, fn, arg) -> bytes:
        try:
            data = fn(arg)
        except TimeoutError:
            self.timed_out = True
            raise
        self.started = self.started or bool(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


def _short(value: Any, limit: int = 100) -> str:
    """A client-chosen string for a log line: cut, and quoted so it stays on one line."""
    text = "" if value is None else str(value)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


class IngressServer(ThreadingHTTPServer):
    daemon_threads = True
    # Bursts of logger connections should wait in the kernel, not be refused.
    request_queue_size = 256

    def __init__(self, address, broker: "LocalBroker", read_timeout: float = READ_TIMEOUT_S):
        self.broker = broker
        self.read_timeout = read_timeout
        super().__init__(address, _IngressHandler)


class _IngressHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: loggers and functions reuse connections
    server_version = "modelmonitor-local-broker"
    # Answers to unparsable request lines (HTTP/2.0, a bare "POST /") keep their status line
    # (http.server's default, HTTP/0.9, would send only an HTML body).
    default_request_version = "HTTP/1.0"

    server: IngressServer

    def setup(self) -> None:
        self.timeout = self.server.read_timeout    # socket timeout for every read and write
        super().setup()
        self.rfile = _Reader(self.rfile)

    def handle_one_request(self) -> None:
        self.rfile.started = self.rfile.timed_out = False
        self._status: int | None = None
        self._why = ""
        # Nothing of the previous request on this connection may describe this one.
        self.command = self.path = None
        self.requestline = ""
        self.request_version = self.default_request_version
        super().handle_one_request()
        if self.rfile.timed_out and self.rfile.started and self._status is None:
            # The request line or headers stalled (http.server would close without an answer);
            # an idle keep-alive connection that times out before a new request is just closed.
            try:
                self._answer(408, f"request line and headers not received within "
                                  f"{self.server.read_timeout:g} s", close=True)
            except OSError:
                self.close_connection = True

    def send_response(self, code: int, message: str | None = None) -> None:
        """Every answer passes here, http.server's own refusals (400, 414, 431, 501, 505 through
        send_error) as well as ours: each refused request is counted and logged in one line."""
        self._status = code
        if code >= 400 and code != 503:     # 503: the broker cannot take events now, no refusal
            self.server.broker._count_refusal(code)
            log.warning("ingress refused %s %s from %s: %d %s", _short(self.command, 20), _short(self.path),
                        self.client_address[0], code, _short(self._why or message or "", 300))
        super().send_response(code, message)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("ingress %s - " + fmt, self.address_string(), *args)

    def _answer(self, status: int, text: str = "", close: bool = False) -> None:
        payload = (ev.text_safe(text) + "\n").encode() if text else b""
        self._why = text
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
        """The request body, at most ``limit`` bytes, plain or chunked; :class:`BadBody` for a
        malformed frame, :class:`LengthRequired` for neither a length nor chunking."""
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise BadBody(f"unsupported Transfer-Encoding {encoding[:64]!r}")
            if self.headers.get("Content-Length") is not None:
                raise BadBody("both Transfer-Encoding and Content-Length")   # RFC 9112 6.3: smuggling
            return self._read_chunked(limit)
        declared = self.headers.get_all("Content-Length") or []
        if not declared:
            raise LengthRequired()
        if len(set(v.strip() for v in declared)) != 1 or not declared[0].strip().isdigit() \
                or not declared[0].strip().isascii():
            raise BadBody(f"invalid Content-Length {', '.join(declared)[:64]!r}")
        length = int(declared[0])
        if length > limit:
            raise BodyTooLarge(length)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) != length:
            raise BadBody(f"body ended after {len(body)} of {length} bytes")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        chunks, size = [], 0
        while True:
            line = self.rfile.readline(1026)
            if not line.endswith(b"\n"):
                raise BadBody("chunk size line missing or too long")
            digits = line.split(b";")[0].strip()
            if not digits or len(digits) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in digits):
                raise BadBody(f"invalid chunk size {digits[:20]!r}")   # also "-5", "+5", "0x5"
            length = int(digits, 16)
            if length == 0:
                for _ in range(100):          # trailers, then the blank line
                    trailer = self.rfile.readline(1026)
                    if trailer in (b"\r\n", b"\n"):
                        return b"".join(chunks)
                    if not trailer.endswith(b"\n"):
                        raise BadBody("chunked body ends without its final blank line")
                raise BadBody("too many trailer fields")
            size += length
            if size > limit:
                raise BodyTooLarge(size)
            chunk = self.rfile.read(length)
            if len(chunk) != length or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadBody("chunk shorter than its size or not followed by CRLF")
            chunks.append(chunk)

    def _not_allowed(self) -> None:
        self._why = "method not allowed"
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")   # whatever body came with it stays unread
        self.close_connection = True
        self.end_headers()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = _not_allowed

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        # A body sent with a GET stays unread: it must not be parsed as the next request.
        close = any(self.headers.get(h) is not None for h in ("Content-Length", "Transfer-Encoding"))
        if path in ("/healthz", "/readyz", "/health/readiness", "/health/liveness"):
            self._answer(200, "OK", close=close)
        elif self.server.broker._is_ingress_path(path):
            self._answer(405, "POST a CloudEvent here", close=close)
        else:
            self._answer(404, f"no broker at {path}", close=close)

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
            self._answer(413, f"body of {err.args[0]} bytes exceeds the broker's limit of "
                              f"{broker.max_body_bytes} bytes", close=True)
            return
        except LengthRequired:
            self._answer(411, "POST needs a Content-Length or a chunked body", close=True)
            return
        except BadBody as err:
            self._answer(400, f"malformed body: {err}", close=True)
            return
        except TimeoutError:
            # A slow client, or one that sent less than its Content-Length: answer, then close.
            try:
                self._answer(408, f"body not received within {self.server.read_timeout:g} s", close=True)
            except OSError:
                self.close_connection = True
            return
        except OSError:
            self.close_connection = True    # the client went away: nobody to answer
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            if "ce-specversion" in headers:
                # The SDK would report a binary event lacking ce-id as "no specversion".
                lacking = [f"ce-{k}" for k in ("id", "source", "type") if f"ce-{k}" not in headers]
                if lacking:
                    raise ValueError(f"binary-mode event lacks header(s) {', '.join(lacking)}")
            event = wire.from_http(headers, body)
            # Validated now, not when a delivery fails to encode it: nothing accepted is lost.
            problem = ev.attributes_problem(event.get_attributes())
            if problem:
                raise ValueError(problem)
            # Kept in wire form: a binary-mode request as it came, a structured one converted
            # once (inside the check: an event that cannot be encoded is refused, not dropped).
            wire_form = (binary_headers(headers), body) if "ce-specversion" in headers \
                else to_binary_http(event)
        except (ValueError, TypeError, KeyError, AttributeError,
                UnicodeError, RecursionError) as err:   # RecursionError: JSON nested too deep
            reason = ev.text_safe(str(err))
            # The SDK quotes the whole unparsable body in its message; do not echo megabytes.
            reason = "not a CloudEvent: " + (reason if len(reason) <= 300 else reason[:300] + "...")
            self._keep_refused(reason, body, headers)
            self._answer(400, reason)
            return
        try:
            broker._accept(wire_form, event)
        except BrokerClosedError as err:
            self._answer(503, str(err))
            return
        self._answer(202)

    def _keep_refused(self, reason: str, body: bytes, headers: dict[str, str]) -> None:
        """A refused request that holds a whole body: hand it to the broker's ``on_reject`` (a
        dead letter in `modelmonitor run`) with the attributes its ce-* headers name."""
        keep = self.server.broker.on_reject
        if keep is None:
            return
        attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        try:
            keep(reason, body, attributes)
        except Exception as exc:   # the 400 still goes out; the refusal is counted and logged
            log.warning("could not dead-letter a refused request: %s", exc)
