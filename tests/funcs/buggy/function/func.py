"""A ModelMonitor function (role from $MODELMONITOR_ROLE) with a planted bug, for
tests/test_internal_errors.py: an event carrying the extension `plantedbug` makes its role handler
raise KeyError, as a real bug would."""
import os

from modelmonitor.runtime.function import MonitorFunction


class Buggy(MonitorFunction):
    def start(self, cfg):
        super().start(cfg)
        real = self.handler.handle

        def handle(event):
            if event.get("plantedbug") is not None:
                raise KeyError("planted bug")
            return real(event)

        self.handler.handle = handle


def new():
    return Buggy(os.environ["MODELMONITOR_ROLE"])
