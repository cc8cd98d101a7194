"""The four functions as Knative Functions for the func-python middleware (``kn func`` python).

Each ``functions/<role>/function/func.py`` defines ``new()`` returning a :class:`MonitorFunction`
for its role; func-python's ``serve(new)`` (``func_python.cloudevent``) wraps it in its ASGI
application on hypercorn: the request's CloudEvent is decoded (SDK 2.x) into ``scope["event"]``,
``handle`` answers, ``/health/liveness`` and ``/health/readiness`` call ``alive`` and ``ready``,
and the ASGI lifespan calls ``start(cfg)`` (cfg: a copy of the environment) and ``stop()``.

Handlers block (Redis round trips, the group commit, POSTs to K_SINK), so they run on a pool of
worker threads (``MODELMONITOR_THREADS``, default 16), never on the event loop; ingest and
outlier are pure computation and run inline unless they refuse an event (the dead letter is a
POST). Requests that are no CloudEvent reach ``handle`` too (see :func:`install_lenient_decoding`),
so that they get the same 400 with the reason and a dead letter as any other bad event. An
exception that is neither a refusal nor an outage (a bug this event triggers) is answered 422
with a dead letter, never 500: see :mod:`modelmonitor.runtime.roles`.

Prometheus metrics: func-python routes every path but the health probes to ``handle``, so the
metrics have their own port, ``MODELMONITOR_METRICS_PORT`` (unset: none), on
``MODELMONITOR_METRICS_ADDRESS`` (default 0.0.0.0).
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

from modelmonitor.core.events import Event
from modelmonitor.runtime import metrics, wire
from modelmonitor.runtime.roles import (DEFAULT_MAX_BODY_BYTES, ROLES, Handler, build_handler, failure_answer,
                                        respond)

log = logging.getLogger("modelmonitor")
#: Roles whose handling is pure computation (no I/O unless an event is refused).
INLINE_ROLES = ("ingest", "outlier")


class Undecodable:
    """What ``scope["event"]`` holds for a request that is no CloudEvent: the reason and the body."""

    def __init__(self, reason: str, body: bytes):
        self.reason = reason
        self.body = body


def install_lenient_decoding() -> None:
    """Make func-python's request decoding hand every request to ``handle``.

    func-python decodes the CloudEvent before calling the function and answers 400 only for the
    SDK's validation errors; anything else the SDK raises on hostile input (``"type": null`` in
    structured mode, JSON nested too deeply) became a 500 (retried by the broker for ever), and
    a header that is not UTF-8 broke its error path as well. Decoding never fails now: a request
    that holds no CloudEvent becomes :class:`Undecodable`, which ``handle`` refuses like any other
    bad event."""
    import func_python.cloudevent as middleware
    if getattr(middleware.decode_event, "modelmonitor_lenient", False):
        return

    async def decode_event(scope, receive):
        body = await middleware.receive_body(receive)
        try:
            # surrogateescape: bytes that are not UTF-8 become lone surrogates, which the
            # attribute check then names, instead of an exception here.
            headers = {k.decode("utf-8", "surrogateescape").lower(): v.decode("utf-8", "surrogateescape")
                       for k, v in scope.get("headers", [])}
            return middleware.from_http_event(middleware.HTTPMessage(headers=headers, body=body))
        except Exception as err:   # the SDK raises many unrelated types on malformed input
            return Undecodable(str(err) or type(err).__name__, body)

    decode_event.modelmonitor_lenient = True
    middleware.decode_event = decode_event


class MonitorFunction:
    """A ModelMonitor function instance (what ``new()`` returns) for one role."""

    def __init__(self, role: str):
        if role not in ROLES:
            raise ValueError(f"function role must be one of {', '.join(ROLES)}, got {role!r}")
        self.role = role
        install_lenient_decoding()
        self.handler: Handler | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.max_body_bytes = DEFAULT_MAX_BODY_BYTES

    # -- lifecycle (func-python calls these) ---------------------------------------------------
    def start(self, cfg: Mapping[str, str]) -> None:
        """Load the monitor and connect, configured from ``cfg`` only. A failure here fails the
        ASGI startup, so the process exits instead of serving a function that cannot work."""
        self.max_body_bytes = int(cfg.get("MODELMONITOR_MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES)
        self.executor = ThreadPoolExecutor(max_workers=int(cfg.get("MODELMONITOR_THREADS") or 16),
                                           thread_name_prefix=f"mm-{self.role}")
        port = cfg.get("MODELMONITOR_METRICS_PORT")
        if port:
            try:
                metrics.serve(int(port), cfg.get("MODELMONITOR_METRICS_ADDRESS") or "0.0.0.0")
            except OSError as exc:  # metrics are no reason to refuse events
                log.warning("metrics not served on port %s: %s", port, exc)
        self.handler = build_handler(self.role, cfg)
        log.info("function %s ready (monitor %s)", self.role, self.handler.mon.name)

    def stop(self) -> None:
        if self.handler is not None:
            self.handler.close()
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    def alive(self):
        return True, "OK"

    def ready(self):
        if self.handler is None:
            return False, "starting"
        return True, "OK"

    # -- requests ------------------------------------------------------------------------------
    async def handle(self, scope, receive, send) -> None:
        h = self.handler
        if h is None:
            await _send_plain(send, 503, {"error": "function is starting"})
            return
        try:
            result = await self._result(h, scope)
            if isinstance(result, Event):
                result = wire.to_sdk(result)     # a reply that cannot be encoded is a bug too
        except Exception as exc:   # a bug this request triggers: 422 and a dead letter, not a 500
            result = await self._pooled(failure_answer, h, exc, scope.get("modelmonitor.event"))
        await _answer(send, result)

    async def _result(self, h: Handler, scope):
        """The handler's answer (an Event or ``(body, status[, headers])``)."""
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            return await self._pooled(h.reject, f"body of {length} bytes is over the "
                                      f"{self.max_body_bytes}-byte limit", None)
        if isinstance(scope["event"], Undecodable):
            return await self._pooled(h.reject, f"not a CloudEvent: {scope['event'].reason}", None,
                                      scope["event"].body[:4096])
        try:
            event = wire.from_sdk(scope["event"])
        except wire.NotACloudEvent as err:
            return await self._pooled(h.reject, f"not a CloudEvent: {err}", None)
        scope["modelmonitor.event"] = event        # for the dead letter if anything below fails
        if self.role in INLINE_ROLES:
            try:
                return h.handle(event)
            except Exception as exc:   # refused, or a bug: the answer may POST a dead letter
                return await self._pooled(failure_answer, h, exc, event)
        return await self._pooled(respond, h, event)

    async def _pooled(self, fn, *args):
        """``fn(*args)`` on the worker threads (it may block)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(send, result) -> None:
    """A handler's answer as the HTTP response: an Event (or its SDK form) is the binary-mode reply."""
    if isinstance(result, Event):
        result = wire.to_sdk(result)
    if not isinstance(result, tuple):
        await send.binary(result)
        return
    body, status, *rest = result
    headers = rest[0] if rest else {}
    payload = body.encode() if isinstance(body, str) else bytes(body)
    raw = [(k.lower().encode(), str(v).encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(payload)).encode()))
    await send.http({"type": "http.response.start", "status": status, "headers": raw})
    await send.http({"type": "http.response.body", "body": payload})


async def _send_plain(send, status: int, doc: dict) -> None:
    await _answer(send, (json.dumps(doc), status, {"Content-Type": "application/json"}))


def new_for_role(role: str) -> MonitorFunction:
    """What each function's ``new()`` returns."""
    return MonitorFunction(role)
