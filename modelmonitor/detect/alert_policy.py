"""The alert policy: when a run of drifted windows becomes a ``drift.detected`` alert.

Pure: the state is a plain dict that callers keep in Redis (one per monitor).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelmonitor.core import spec as _spec

__all__ = ["evaluate_alert"]

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


def evaluate_alert(state: Mapping[str, Any] | None, *, window_end_ms: int, window_count: int,
                   drifted_features: Sequence[str], policy: _spec.AlertSpec,
                   monitored_features: int | None = None) -> tuple[dict, dict | None]:
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
    since "more than half" cannot be judged.

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
    new_state["streak"] = current["streak"] + 1 if drifted else 0
    if new_state["streak"] < policy.consecutive_windows:
        return new_state, None
    last_alert = current["lastAlertEndMs"]
    if last_alert is not None and window_end_ms < last_alert + policy.cooldown_ms:
        return new_state, None
    new_state["lastAlertEndMs"] = int(window_end_ms)
    severity = "critical" if monitored_features is not None and 2 * len(drifted) > monitored_features \
        else "warning"
    streak = new_state["streak"]
    of_total = f" of {monitored_features}" if monitored_features is not None else ""
    reason = (f"{len(drifted)}{of_total} features drifted ({', '.join(drifted)}) "
              f"for {streak} consecutive window{'s' if streak != 1 else ''}")
    return new_state, {"severity": severity, "reason": reason}
