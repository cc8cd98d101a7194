"""Toy subscriber that answers with a CloudEvent reply of another type ($REPLY_TYPE, default
`test.reply`), carrying the original id and the `testcase` extension; records each call."""
import json
import os
import time

from cloudevents.core.v1.event import CloudEvent

from modelmonitor.runtime.wire import from_sdk


class Replier:
    def start(self, cfg):
        self.record_file = cfg.get("RECORD_FILE")
        self.reply_type = cfg.get("REPLY_TYPE", "test.reply")

    async def handle(self, scope, receive, send):
        event = from_sdk(scope["event"])
        if self.record_file:
            with open(self.record_file, "a") as out:
                out.write(json.dumps({"pid": os.getpid(), "start": time.time(),
                                      "attrs": dict(event.get_attributes())}) + "\n")
        attrs = {"type": self.reply_type, "source": "/tests/replier",
                 "id": "reply-" + event["id"], "datacontenttype": "application/json"}
        if event.get("testcase"):
            attrs["testcase"] = event["testcase"]
        await send.binary(CloudEvent(attrs, {"original": event["id"], "originalType": event["type"]}))


def new():
    return Replier()
