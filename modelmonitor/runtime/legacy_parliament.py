"""Legacy runtime: the four functions as parliament functions (``main(context)``, CloudEvents SDK 1.x).

For clusters whose ``kn func`` builds Python functions with parliament: releases before v1.18,
and the deprecated ``pack`` / ``s2i`` path of later ones, which still builds a folder holding
``func.py`` with ``main(context)``, a ``Procfile`` (``web: python -m parliament .``) and a
``requirements.txt`` (``functions/legacy/``). func-python (:mod:`modelmonitor.runtime.function`)
is the default everywhere; this adapter only converts at its edge and calls the same role
handlers (:mod:`modelmonitor.runtime.roles`) on the same :class:`~modelmonitor.core.events.Event`.

parliament-functions 0.1.0 (Flask, served by waitress on port 8080) decodes the request with
the SDK 1.x ``cloudevents.http.from_http`` into ``context.cloud_event`` (``None`` when the
request holds no CloudEvent), calls ``func.main(context)``, and answers a returned SDK 1.x
``CloudEvent`` as a binary-mode reply, anything else as Flask does (``(body, status,
headers)``). Its ``/health/liveness`` and ``/health/readiness`` always answer OK, so the handler
is built when ``func.py`` is imported (before serving): a monitor that cannot load stops the
process instead of serving.

One image serves every role: ``MODELMONITOR_ROLE`` says which (the Services that ``modelmonitor
render`` and the operator write set it). The rest of the configuration is the environment, as
for func-python (MODELMONITOR_CONFIG, MODELMONITOR_BASELINE, REDIS_URL, K_SINK).

This module imports the SDK 1.x API (``cloudevents.http``) and never
:mod:`modelmonitor.runtime.wire` (SDK 2.x only). What it does not do that func-python's runtime
does: a body-size limit before decoding, Prometheus metrics on their own port, and running
blocking handlers off an event loop (waitress gives each request a thread anyway).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from cloudevents.http import CloudEvent, to_binary

from modelmonitor.core.events import Event
from modelmonitor.runtime.roles import Handler, build_handler, respond

#: Environment variable naming the role this process serves.
ROLE_ENV = "MODELMONITOR_ROLE"


def from_sdk1(event: Any) -> Event:
    """The domain event of an SDK 1.x event (attributes copied, data shared; ``time`` is text
    in SDK 1.x already). Raises ValueError when the attributes are no valid CloudEvent."""
    return Event(dict(event.get_attributes()), event.get_data())


def to_sdk1(event: Event) -> CloudEvent:
    """The SDK 1.x event of a domain event."""
    return CloudEvent(dict(event.get_attributes()), event.data)


def encode_binary(event: Event) -> tuple[dict[str, str], bytes]:
    """Binary-mode headers and body of an event, written by the SDK 1.x (the Sink's encoder)."""
    headers, body = to_binary(to_sdk1(event))
    return dict(headers), body if isinstance(body, bytes) else str(body).encode()


class LegacyFunction:
    """One role's handler behind parliament's ``main(context)``."""

    def __init__(self, role: str, cfg: Mapping[str, str]):
        self.handler: Handler = build_handler(role, cfg, encode_binary)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "LegacyFunction":
        role = environ.get(ROLE_ENV)
        if not role:
            raise RuntimeError(f"{ROLE_ENV} is not set: say which function this process serves "
                               "(ingest, outlier, aggregate or drift)")
        return cls(role, dict(environ))

    def main(self, context) -> Any:
        """parliament's entry point: the request's CloudEvent in, the reply (or an answer) out."""
        h = self.handler
        if context.request.method != "POST":
            return _json({"error": "POST a CloudEvent"}, 405)
        sdk_event = getattr(context, "cloud_event", None)
        if sdk_event is None:
            return _answer(h.reject("not a CloudEvent: the request has no valid CloudEvent attributes",
                                    None, context.request.get_data()[:4096]))
        try:
            event = from_sdk1(sdk_event)
        except ValueError as err:
            return _answer(h.reject(f"not a CloudEvent: {err}", None))
        return _answer(respond(h, event))


def _answer(result) -> Any:
    """A handler's answer as parliament returns it: an SDK 1.x event (the binary-mode reply,
    HTTP 200) or Flask's ``(body, status, headers)``."""
    if isinstance(result, Event):
        return to_sdk1(result)
    body, status, *rest = result
    return body, status, dict(rest[0]) if rest else {}


def _json(doc: dict, status: int) -> tuple[str, int, dict]:
    return json.dumps(doc), status, {"Content-Type": "application/json"}
