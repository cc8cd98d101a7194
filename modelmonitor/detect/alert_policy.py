"""The alert policy: when a run of drifted windows becomes a ``drift.detected`` alert.

Pure: the state is a plain dict that callers keep in Redis (one per monitor).

Two rules decide when drift is persistent enough to alert (``spec.alerts``):

- ``consecutiveWindows`` (default): N windows in a row with any drifted score.
- ``sequential`` (optional, replaces the former): a CUSUM or Page-Hinkley statistic per feature
  (and per multivariate score) over its *drift ratio*: the largest ``value / threshold`` of its
  scores in the window (1 means "at the threshold"; a score with threshold 0 counts 1 when
  drifted, else 0).

  - ``cusum``: ``S = max(0, S + r - drift)``; alarm when ``S > threshold`` (defaults drift 0.8,
    threshold 1.5). One window at ratio 2.3 alarms at once; ratios of 1.3 need 3 windows;
    ratios below ``drift`` never accumulate.
  - ``pageHinkley``: with ``mean`` the running mean of r, ``m = m + r - mean - drift``,
    ``M = min(M, m)``; alarm when ``m - M > threshold`` (defaults drift 0.1, threshold 2): a rise
    of the ratio above its own past level.

  After an alarm the statistics that alarmed restart from 0 (also when the cooldown silences it). Both run in event-time order of the
  windows, so replays give the same alerts.

``minWindowCount`` and ``cooldown`` apply to both.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelmonitor.core import spec as _spec

__all__ = ["evaluate_alert", "drift_ratios"]

_STATE_KEYS = ("streak", "lastAlertEndMs", "lastWindowEndMs")


def _check_state(state: Any) -> dict:
    if state is None:
        return {"streak": 0, "lastAlertEndMs": None, "lastWindowEndMs": None}
    if not isinstance(state, Mapping):
        raise ValueError(f"alert state: expected a mapping with {', '.join(_STATE_KEYS)}, got {state!r}")
    streak = state.get("streak", 0)
    if isinstance(streak, bool) or not isinstance(streak, int) or streak < 0:
        raise ValueError(f"alert state: streak must be a non-negative integer, got {streak!r}")
    for key in ("lastAlertEndMs", "lastWindowEndMs"):
        v = state.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"alert state: {key} must be an integer (ms) or null, got {v!r}")
    # Keys other than ours are kept: callers may store their own bookkeeping alongside.
    return {**state, "streak": streak, "lastAlertEndMs": state.get("lastAlertEndMs"),
            "lastWindowEndMs": state.get("lastWindowEndMs")}


def drift_ratios(measured: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, float]:
    """The drift ratio of each entry of a ``{name: {metric: score}}`` mapping (see above).

    >>> drift_ratios({"x": {"psi": {"value": 0.1, "threshold": 0.2, "drifted": False},
    ...                     "maxAboveBaseline": {"value": 0.5, "threshold": 0.0, "drifted": True}}})
    {'x': 1.0}
    """
    ratios = {}
    for name, scores in measured.items():
        ratio = 0.0
        for score in scores.values():
            threshold = float(score["threshold"])
            r = float(score["value"]) / threshold if threshold > 0 else float(bool(score["drifted"]))
            ratio = max(ratio, r)
        ratios[name] = ratio
    return ratios


def _sequential_step(stats: dict, ratios: Mapping[str, float], seq: _spec.SequentialSpec) -> tuple[dict, dict]:
    """New per-name statistics and the ``{name: statistic}`` of those past the threshold."""
    out, alarmed = {}, {}
    for name in sorted(set(stats) | set(ratios)):
        r = float(ratios.get(name, 0.0))
        st = dict(stats.get(name) or {})
        if seq.method == "cusum":
            value = max(0.0, float(st.get("s", 0.0)) + r - seq.drift)
            st = {"s": value}
        else:
            n = int(st.get("n", 0)) + 1
            mean = float(st.get("mean", 0.0)) + (r - float(st.get("mean", 0.0))) / n
            m = float(st.get("m", 0.0)) + r - mean - seq.drift
            low = min(float(st.get("low", 0.0)), m)
            st = {"n": n, "mean": mean, "m": m, "low": low}
            value = m - low
        if value > seq.threshold:
            alarmed[name] = value
        out[name] = st
    return out, alarmed


def _restart(stats: dict, names: Sequence[str], method: str) -> dict:
    for name in names:
        stats[name] = {"s": 0.0} if method == "cusum" else {**stats[name], "m": 0.0, "low": 0.0}
    return stats


def evaluate_alert(state: Mapping[str, Any] | None, *, window_end_ms: int, window_count: int,
                   drifted_features: Sequence[str], policy: _spec.AlertSpec,
                   monitored_features: int | None = None, drifted_multivariate: Sequence[str] = (),
                   ratios: Mapping[str, float] | None = None) -> tuple[dict, dict | None]:
    """Advance the alert policy by one closed window; return ``(new_state, alert or None)``.

    Windows are evaluated in the order of their ends. A window ending at or before
    ``lastWindowEndMs`` was already evaluated (a redelivery) and changes nothing. A window with
    fewer than ``policy.min_window_count`` instances is too small to judge: it neither fires nor
    extends nor breaks the streak. Otherwise a window with any drifted feature extends the streak
    and one without resets it. The alert fires once the streak reaches
    ``policy.consecutive_windows``, unless an earlier alert ended less than ``policy.cooldown_ms``
    before this window's end (event time, so replays give the same alerts). Severity is
    ``critical`` when more than half of the ``monitored_features`` (how many features the drift
    detectors watch) drifted, else ``warning``; without that count severity stays ``warning``,
    since "more than half" cannot be judged. A drifted multivariate score
    (``drifted_multivariate``) makes the window drifted too, and the severity ``critical``.

    With ``policy.sequential`` the streak is replaced by the sequential statistics over
    ``ratios`` (:func:`drift_ratios` of the features and of the multivariate scores).

    >>> from modelmonitor.core.spec import AlertSpec
    >>> policy = AlertSpec(min_window_count=10, consecutive_windows=2, cooldown_ms=60_000)
    >>> s, alert = evaluate_alert(None, window_end_ms=15_000, window_count=50,
    ...                           drifted_features=["x"], policy=policy, monitored_features=3)
    >>> s["streak"], alert
    (1, None)
    >>> s, alert = evaluate_alert(s, window_end_ms=30_000, window_count=50,
    ...                           drifted_features=["x"], policy=policy, monitored_features=3)
    >>> alert["severity"], s["lastAlertEndMs"]
    ('warning', 30000)
    """
    current = _check_state(state)
    for name, v in (("window_end_ms", window_end_ms), ("window_count", window_count),
                    ("monitored_features", 1 if monitored_features is None else monitored_features)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"evaluate_alert: {name} must be an integer, got {v!r}")
    if window_count < 0:
        raise ValueError(f"evaluate_alert: window_count must not be negative, got {window_count}")
    if isinstance(drifted_features, str) or not all(isinstance(f, str) for f in drifted_features):
        raise ValueError(f"evaluate_alert: drifted_features must be a list of feature names, "
                         f"got {drifted_features!r}")
    drifted = list(dict.fromkeys(drifted_features))     # drop duplicates, keep order
    if monitored_features is not None and monitored_features < max(len(drifted), 1):
        raise ValueError(f"evaluate_alert: monitored_features ({monitored_features}) must be at least 1 "
                         f"and at least the number of drifted features ({len(drifted)})")

    last_window = current["lastWindowEndMs"]
    if last_window is not None and window_end_ms <= last_window:
        return current, None
    new_state = dict(current, lastWindowEndMs=int(window_end_ms))
    if window_count < policy.min_window_count:
        return new_state, None
    multivariate = list(dict.fromkeys(drifted_multivariate))
    new_state["streak"] = current["streak"] + 1 if (drifted or multivariate) else 0
    seq = policy.sequential
    alarmed: dict = {}
    if seq is not None:
        if ratios is None:
            raise ValueError("evaluate_alert: the sequential rule needs the drift ratios")
        stats, alarmed = _sequential_step(dict(current.get("sequential") or {}), ratios, seq)
        new_state["sequential"] = stats
        if not alarmed:
            return new_state, None
    elif new_state["streak"] < policy.consecutive_windows:
        return new_state, None
    if alarmed:
        # An alarm restarts its statistics even when the cooldown silences it: otherwise the
        # evidence piled up during a long drift would keep alarming for windows after it ended.
        new_state["sequential"] = _restart(new_state["sequential"], list(alarmed), seq.method)
    last_alert = current["lastAlertEndMs"]
    if last_alert is not None and window_end_ms < last_alert + policy.cooldown_ms:
        return new_state, None
    new_state["lastAlertEndMs"] = int(window_end_ms)
    severity = "critical" if multivariate or (monitored_features is not None
                                              and 2 * len(drifted) > monitored_features) else "warning"
    of_total = f" of {monitored_features}" if monitored_features is not None else ""
    parts = [f"{len(drifted)}{of_total} features drifted ({', '.join(drifted)})"] if drifted else []
    if multivariate:
        parts.append(f"multivariate drift ({', '.join(multivariate)})")
    if alarmed:
        method = "CUSUM" if seq.method == "cusum" else "Page-Hinkley"
        parts.append(f"{method} above {seq.threshold:g} for " + ", ".join(
            f"{name} ({value:.3g})" for name, value in alarmed.items()))
    else:
        streak = new_state["streak"]
        parts[-1] += f" for {streak} consecutive window{'s' if streak != 1 else ''}"
    return new_state, {"severity": severity, "reason": "; ".join(parts)}
