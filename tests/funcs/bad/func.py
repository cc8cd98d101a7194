"""Toy subscriber that refuses every event with HTTP 400 (not retryable); records each call."""
import json
import os
import threading
import time

_lock = threading.Lock()


def main(context):
    event = context.cloud_event
    path = os.environ.get("RECORD_FILE")
    if path:
        with _lock, open(path, "a") as out:
            out.write(json.dumps({"pid": os.getpid(), "start": time.time(),
                                  "id": event["id"] if event else None}) + "\n")
    return "bad request: this subscriber accepts nothing", 400
