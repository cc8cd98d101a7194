"""Toy subscriber that refuses every event with HTTP 400 (not retryable); records each call."""
import json
import os
import time


class Bad:
    def start(self, cfg):
        self.record_file = cfg.get("RECORD_FILE")

    async def handle(self, scope, receive, send):
        event = scope["event"]
        if self.record_file:
            with open(self.record_file, "a") as out:
                out.write(json.dumps({"pid": os.getpid(), "start": time.time(), "id": event.get_id()}) + "\n")
        body = b"bad request: this subscriber accepts nothing"
        await send.http({"type": "http.response.start", "status": 400,
                         "headers": [(b"content-length", str(len(body)).encode())]})
        await send.http({"type": "http.response.body", "body": body})


def new():
    return Bad()
