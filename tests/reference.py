"""A brute-force, in-memory reference of DESIGN section 3 (windows, watermark, lateness,
dedup), written independently of the Redis store: one instance at a time, no batching."""
from __future__ import annotations


def windows_brute_force(t: int, d: int, s: int) -> list[tuple[int, int]]:
    out = []
    k = t // s + 1
    while True:
        start = k * s
        if start > t:
            k -= 1
            continue
        if t >= start + d:
            break
        out.append((start, start + d))
        k -= 1
    return sorted(out)


def reference_run(events, d: int, s: int, delay: int, flush: bool = True):
    """events: iterable of (dedup_key, event_time_ms, rows). Returns the list of closed
    windows in closing order: dicts {start, end, rows, late, watermark}."""
    seen: set = set()
    max_t = None
    w = None
    late = 0
    open_windows: dict[tuple[int, int], list] = {}
    closed = []

    def seal(limit):
        nonlocal late
        for key in sorted((k for k in open_windows if k[1] <= limit), key=lambda k: (k[1], k[0])):
            closed.append({"start": key[0], "end": key[1], "rows": open_windows.pop(key),
                           "late": late, "watermark": w})
            late = 0

    for key, t, rows in events:
        if key in seen:
            continue
        seen.add(key)
        for win in windows_brute_force(t, d, s):
            if w is not None and win[1] <= w:
                late += len(rows)
            else:
                open_windows.setdefault(win, []).extend(rows)
        if max_t is None or t > max_t:
            max_t = t
            if w is None or t - delay > w:
                w = t - delay
                seal(w)
    if flush:
        seal(float("inf"))
    return closed


def percentile_within_bound(value, values, q: float, rank_error: float = 0.01) -> bool:
    """Whether ``value`` is a valid q-th percentile of ``values`` up to the window statistics'
    documented rank error: NumPy's percentile (to float rounding) for windows small enough to be
    exact (at most 400 values), else a value whose rank among ``values`` is within ``rank_error``."""
    import numpy as np
    x = np.sort(np.asarray(values, dtype=float))
    if x.size <= 400:
        return bool(np.isclose(value, np.percentile(x, q), rtol=1e-12, atol=1e-12))
    below = np.searchsorted(x, value, side="left") / x.size
    at_or_below = np.searchsorted(x, value, side="right") / x.size
    return bool(x[0] <= value <= x[-1] and below - rank_error <= q / 100 <= at_or_below + rank_error)
