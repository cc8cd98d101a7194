"""Toy subscriber for the broker tests: records every call, acknowledges with 202 (no reply).

Each call appends one JSON line to the file named by $RECORD_FILE: the process id, start and
end times, the event's attributes and data, and the Prefer header the broker sent. An event
with the extension `echosleepms` makes the call last that long (to observe concurrency).
"""
import json
import os
import threading
import time

_lock = threading.Lock()


def record(entry):
    path = os.environ.get("RECORD_FILE")
    if path:
        line = json.dumps(entry) + "\n"
        with _lock, open(path, "a") as out:
            out.write(line)


def main(context):
    started = time.time()
    event = context.cloud_event
    if event is None:
        return "no CloudEvent in the request", 400
    sleep_ms = event.get("echosleepms")
    if sleep_ms:
        time.sleep(int(sleep_ms) / 1000.0)
    data = event.data
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8", errors="replace")
    record({"pid": os.getpid(), "start": started, "end": time.time(),
            "attrs": dict(event.get_attributes()), "data": data,
            "prefer": context.request.headers.get("Prefer")})
    return "", 202
