"""ModelMonitor's outlier function: `new()` is what func-python serves."""
from .func import new

__all__ = ["new"]
