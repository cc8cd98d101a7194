"""Toy subscriber that fails with HTTP 500 for the first $FLAKY_FAILURES calls with a given
event id, then acknowledges with 202; every call (time, id, status) is recorded."""
import collections
import json
import os
import threading
import time

_lock = threading.Lock()
_calls = collections.Counter()


def main(context):
    event = context.cloud_event
    if event is None:
        return "no CloudEvent in the request", 400
    failures = int(os.environ.get("FLAKY_FAILURES", "0"))
    with _lock:
        _calls[event["id"]] += 1
        call = _calls[event["id"]]
    status = 500 if call <= failures else 202
    path = os.environ.get("RECORD_FILE")
    if path:
        with _lock, open(path, "a") as out:
            out.write(json.dumps({"pid": os.getpid(), "start": time.time(), "id": event["id"],
                                  "call": call, "status": status}) + "\n")
    if status == 500:
        return f"flaky failure {call} of {failures} for {event['id']}", 500
    return "", 202
