"""The aggregate function (Knative, parliament runtime). The logic lives in modelmonitor.runtime.app."""
import os

os.environ.setdefault("MODELMONITOR_ROLE", "aggregate")

from modelmonitor.runtime.app import handler, main  # noqa: E402,F401

handler()  # load the monitor and warm up now, so readiness means ready
