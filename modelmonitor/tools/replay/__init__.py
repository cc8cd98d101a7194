"""`modelmonitor replay`: a deterministic backtest over recorded logger events.

Two engines with byte-identical output: a columnar one (default; chunked, vectorised, in
process, multi-core) and the per-event reference (the live handlers on Redis). See
:mod:`modelmonitor.tools.replay.run`.
"""
from modelmonitor.tools.replay.common import ReplayStats
from modelmonitor.tools.replay.run import ENGINES, run_replay

__all__ = ["ENGINES", "ReplayStats", "run_replay"]
