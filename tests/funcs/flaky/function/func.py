"""Toy subscriber that fails with HTTP 500 for the first $FLAKY_FAILURES calls with a given
event id, then acknowledges with 202; every call (time, id, status) is recorded."""
import collections
import json
import os
import time


class Flaky:
    def start(self, cfg):
        self.record_file = cfg.get("RECORD_FILE")
        self.failures = int(cfg.get("FLAKY_FAILURES", "0"))
        self.calls = collections.Counter()

    async def handle(self, scope, receive, send):
        event_id = scope["event"].get_id()
        self.calls[event_id] += 1
        call = self.calls[event_id]
        status = 500 if call <= self.failures else 202
        if self.record_file:
            with open(self.record_file, "a") as out:
                out.write(json.dumps({"pid": os.getpid(), "start": time.time(), "id": event_id,
                                      "call": call, "status": status}) + "\n")
        body = f"flaky failure {call} of {self.failures} for {event_id}".encode() if status == 500 else b""
        await send.http({"type": "http.response.start", "status": status,
                         "headers": [(b"content-length", str(len(body)).encode())]})
        await send.http({"type": "http.response.body", "body": body})


def new():
    return Flaky()
