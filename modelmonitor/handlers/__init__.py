"""What the four functions do, apart from HTTP: shared by the Knative functions and `replay`.

- :func:`ingest`   logger event -> ``inference.instances`` (or :class:`Rejected`)
- :func:`outliers` ``inference.instances`` -> ``outlier.detected`` (or nothing)
- :class:`Aggregator` ``inference.instances`` -> Redis windows -> ``window.closed``
- :func:`measure`  ``window.closed`` -> ``drift.measured`` (+ ``drift.detected`` under the alert policy)

Times: ``now_ms`` is passed in. Live functions pass the wall clock; a replay passes its own
event-time clock so its output is deterministic.
"""
from modelmonitor.handlers.aggregate import Aggregator, dedup_key, redelivery_horizon_ms
from modelmonitor.handlers.drift import AlertState, MemoryAlertState, measure
from modelmonitor.handlers.ingest import Instances, event_time_ms, ingest, ingest_rows
from modelmonitor.handlers.monitor import (MAX_DEAD_LETTER_DATA, MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, Layout, Monitor,
                                           Rejected, check_attributes, check_clock_skew,
                                           check_event_time, check_instances, dead_letter, event_data,
                                           wall_clock_ms, window_info)
from modelmonitor.handlers.outlier import outlier_event, outliers

__all__ = ["Aggregator", "AlertState", "Instances", "Layout", "MAX_DEAD_LETTER_DATA", "MAX_EVENT_TIME_MS",
           "MIN_EVENT_TIME_MS", "MemoryAlertState", "Monitor", "Rejected", "check_attributes", "check_clock_skew", "check_event_time", "check_instances",
           "dead_letter", "dedup_key", "event_data", "event_time_ms", "ingest", "ingest_rows", "measure",
           "outlier_event", "outliers", "redelivery_horizon_ms", "wall_clock_ms", "window_info"]
