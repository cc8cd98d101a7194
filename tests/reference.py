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


def assert_same_window(got: dict, want: dict, what: str = "") -> None:
    """Two ``window.closed`` data of the same instances, perhaps merged in another order (other
    replicas, batches, a replay): exact for counts, late, min, max, histograms and categories;
    moments, sums, covariance and correlation to 1e-9 relative; percentiles and IQR equal to float
    rounding while the window is small enough to be exact (<= 400 values), else both inside
    [min, max] (each is checked against raw values where a test has them)."""
    import math

    def close(a, b, scale):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12 * max(scale, 1.0))

    assert set(got) == set(want), (what, set(got) ^ set(want))
    for key in got:
        if key not in ("features", "covariance", "correlation"):
            assert got[key] == want[key], (what, key, got[key], want[key])
    assert set(got["features"]) == set(want["features"]), what
    scales = {}
    for name, g in got["features"].items():
        w = want["features"][name]
        assert set(g) == set(w), (what, name)
        if "categories" in g:
            assert g == w, (what, name)
            continue
        scale = max(abs(w["min"] or 0.0), abs(w["max"] or 0.0))
        scales[name] = scale
        n = max(w["count"], 1)
        for key in ("count", "min", "max", "histogram"):
            assert g[key] == w[key], (what, name, key)
        for key, s in (("mean", scale), ("sum", n * scale), ("stddev", scale), ("variance", n * scale * scale)):
            assert close(g[key], w[key], s), (what, name, key, g[key], w[key])
        exact = w["count"] <= 400
        for q in w["percentiles"]:
            a, b = g["percentiles"][q], w["percentiles"][q]
            assert (a is None) == (b is None), (what, name, q)
            if b is not None:
                assert close(a, b, scale) if exact else (w["min"] <= a <= w["max"]), (what, name, q, a, b)
        if "iqr" in w and exact:
            assert close(g["iqr"], w["iqr"], scale), (what, name)
    n = max(want.get("count") or 1, 1)
    for key in ("covariance", "correlation"):
        g, w = got.get(key), want.get(key)
        assert (g is None) == (w is None), (what, key)
        if w is None:
            continue
        assert g["features"] == w["features"], (what, key)
        for i, row in enumerate(w["matrix"]):
            for j, b in enumerate(row):
                s = 1.0 if key == "correlation" else n * scales.get(w["features"][i], 1.0) * scales.get(w["features"][j], 1.0)
                assert close(g["matrix"][i][j], b, s), (what, key, i, j, g["matrix"][i][j], b)


def assert_close_json(got, want, what: str = "") -> None:
    """Equal JSON documents, floats to 1e-9 relative (scores derived from merged statistics)."""
    import math
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (what, got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (what, got, want)
        for k in want:
            assert_close_json(got[k], want[k], f"{what}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (what, got, want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close_json(g, w, f"{what}[{i}]")
    elif isinstance(want, str) and got != want and want.startswith("{"):
        import json   # an event carried as text (a dead letter's originalData)
        assert_close_json(json.loads(got), json.loads(want), what)
    else:
        assert got == want, (what, got, want)
