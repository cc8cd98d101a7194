"""A recording CloudEvents subscriber over real HTTP, shared by the tests.

It stands for whatever the functions and the broker POST to: a function's K_SINK, a user's
Trigger subscriber, a dead-letter sink, an alert receiver. Every request is parsed with the
CloudEvents SDK and recorded with the status it was answered; ``answer`` decides that status
(202 by default), so a subclass can fail some requests to exercise retries.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from modelmonitor.core.events import Event
from modelmonitor.runtime.wire import from_http


class EventSink:
    def __init__(self):
        self.calls: list[tuple[int, str, Event]] = []     # (status, path, event)
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                event = from_http({k.lower(): v for k, v in self.headers.items()}, body)
                with sink.lock:
                    status, payload = sink.answer(event)
                    sink.calls.append((status, self.path, event))
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, event: Event) -> tuple[int, bytes]:
        """(status, body) for one request; called under ``self.lock``."""
        return 202, b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def snapshot(self) -> list[tuple[int, str, Event]]:
        with self.lock:
            return list(self.calls)

    @property
    def events(self) -> list[Event]:
        """The events answered with a 2xx, in arrival order."""
        return [e for s, _, e in self.snapshot() if s < 300]

    def of_type(self, type_: str) -> list[Event]:
        return [e for e in self.events if e["type"] == type_]

    def wait_for(self, predicate, timeout: float = 10.0):
        """The first truthy predicate(self) within `timeout` seconds, else the last falsy one."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
