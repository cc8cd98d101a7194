"""Toy subscriber for the broker tests (func-python): records every call, acknowledges with 202.

Each call appends one JSON line to the file named by $RECORD_FILE: the process id, start and
end times, the event's attributes and data, and the Prefer header the broker sent. An event
with the extension `echosleepms` makes the call last that long (to observe concurrency).
"""
import asyncio
import json
import os
import time

from modelmonitor.runtime.wire import from_sdk


class Echo:
    def start(self, cfg):
        self.record_file = cfg.get("RECORD_FILE")

    async def handle(self, scope, receive, send):
        started = time.time()
        event = from_sdk(scope["event"])
        sleep_ms = event.get("echosleepms")
        if sleep_ms:
            await asyncio.sleep(int(sleep_ms) / 1000.0)
        data = event.data
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8", errors="replace")
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        if self.record_file:
            with open(self.record_file, "a") as out:
                out.write(json.dumps({"pid": os.getpid(), "start": started, "end": time.time(),
                                      "attrs": dict(event.get_attributes()), "data": data,
                                      "prefer": headers.get("prefer")}) + "\n")
        await send.http({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
        await send.http({"type": "http.response.body", "body": b""})


def new():
    return Echo()
