"""Toy subscriber that answers with a CloudEvent reply of another type ($REPLY_TYPE, default
`test.reply`), carrying the original id and the `testcase` extension; records each call."""
import json
import os
import threading
import time

from cloudevents.http import CloudEvent

_lock = threading.Lock()


def main(context):
    event = context.cloud_event
    if event is None:
        return "no CloudEvent in the request", 400
    path = os.environ.get("RECORD_FILE")
    if path:
        with _lock, open(path, "a") as out:
            out.write(json.dumps({"pid": os.getpid(), "start": time.time(),
                                  "attrs": dict(event.get_attributes())}) + "\n")
    attrs = {"type": os.environ.get("REPLY_TYPE", "test.reply"), "source": "/tests/replier",
             "id": "reply-" + event["id"], "datacontenttype": "application/json"}
    if event.get("testcase"):
        attrs["testcase"] = event["testcase"]
    return CloudEvent(attrs, {"original": event["id"], "originalType": event["type"]})
