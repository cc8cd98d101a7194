"""Event-time windows in Flink's vocabulary: an *assigner* maps an event time to the windows
that contain it; the *watermark* decides when a window is complete (DESIGN section 3).

Windows are aligned to the Unix epoch: window ``k`` covers ``[k*slide, k*slide + duration)``.
Tumbling windows are the case ``slide == duration``.

>>> assign_windows(16_000, duration_ms=15_000, slide_ms=15_000)
[(15000, 30000)]
>>> assign_windows(16_000, duration_ms=15_000, slide_ms=5_000)
[(5000, 20000), (10000, 25000), (15000, 30000)]
"""
from __future__ import annotations


def assign_windows(t_ms: int, duration_ms: int, slide_ms: int) -> list[tuple[int, int]]:
    """Every (start, end) with ``start = k*slide`` and ``start <= t < start + duration``,
    earliest first."""
    last_k = t_ms // slide_ms                      # floor division: also right for t < 0
    first_k = (t_ms - duration_ms) // slide_ms + 1
    return [(k * slide_ms, k * slide_ms + duration_ms) for k in range(first_k, last_k + 1)]


def is_late(window_end_ms: int, watermark_ms: int | None) -> bool:
    """An instance is late for a window whose end is at or before the watermark it met."""
    return watermark_ms is not None and window_end_ms <= watermark_ms


def watermark(max_event_time_ms: int | None, delay_ms: int) -> int | None:
    """``W = max event time - delay``; None (minus infinity) before the first event."""
    return None if max_event_time_ms is None else max_event_time_ms - delay_ms


def idle_watermark(max_event_time_ms: int, last_arrival_ms: int, now_ms: int, delay_ms: int) -> int:
    """Watermark of a quiet stream: it advances with processing time since the last arrival."""
    return max_event_time_ms + (now_ms - last_arrival_ms) - delay_ms
