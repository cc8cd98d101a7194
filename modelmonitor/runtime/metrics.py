"""Prometheus metrics of the functions (served on ``GET /`` of each function and by `run`)."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

EVENTS_IN = Counter("modelmonitor_events_in_total", "Events received, by role and outcome", ["role", "outcome"])
EVENTS_OUT = Counter("modelmonitor_events_out_total", "Events emitted, by role and type", ["role", "type"])
BATCH_SIZE = Histogram("modelmonitor_aggregate_batch_size", "Requests per group-committed Redis script call",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048))
REDIS_LATENCY = Histogram("modelmonitor_redis_seconds", "Latency of one group-commit script call",
                          buckets=_LATENCY_BUCKETS)
WINDOWS_CLOSED = Counter("modelmonitor_windows_closed_total", "Windows closed and emitted")
LATE_INSTANCES = Counter("modelmonitor_late_instances_total", "Instance-window pairs dropped as late")
SEGMENT_EXCESS = Counter("modelmonitor_segment_excess_instances_total",
                         "Instances of segments beyond spec.segment.maxSegments: counted, in no segment's windows")
DEDUP_HITS = Counter("modelmonitor_dedup_hits_total", "Redelivered events recognised and not counted again")
WATERMARK_LAG = Gauge("modelmonitor_watermark_lag_seconds", "Wall clock minus the monitor's watermark")
WINDOWS_OPEN = Gauge("modelmonitor_windows_open", "Windows holding instances the watermark has not sealed yet "
                     "(as last seen by this replica's closer)")
WINDOWS_READY = Gauge("modelmonitor_windows_ready", "Sealed windows waiting to be closed and emitted "
                      "(as last seen by this replica's closer; stays above 0 while closing fails)")
OUTLIER_LATENCY = Histogram("modelmonitor_outlier_latency_seconds", "Request event time to outlier detection",
                            buckets=_LATENCY_BUCKETS)
CLOSE_LATENCY = Histogram("modelmonitor_window_close_latency_seconds",
                          "Window end + watermark delay to window.closed", buckets=_LATENCY_BUCKETS)
DRIFT_LATENCY = Histogram("modelmonitor_drift_latency_seconds", "window.closed to drift.measured",
                          buckets=_LATENCY_BUCKETS)


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve ``GET /metrics`` (any path) on its own port, from a daemon thread."""
    from prometheus_client import start_http_server
    start_http_server(port, addr=address)
