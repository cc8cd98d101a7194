"""The aggregate function instance; its logic is modelmonitor.runtime.function and modelmonitor.handlers."""
from modelmonitor.runtime.function import MonitorFunction


def new():
    """A new instance of the aggregate function (func-python calls start(cfg) before serving)."""
    return MonitorFunction("aggregate")
