"""The thesis' window-level checks (its DescriptiveStatsDetector) as drift rules.

A window is flagged when its statistics leave the baseline's. Each rule is a score with the
usual ``value > threshold`` semantics, so it is configured like any detector under
``spec.drift`` and feeds the alert policy like any drift score:

==================  ==============================================  =================
rule                value                                           default threshold
==================  ==============================================  =================
maxAboveBaseline    window max - baseline max (feature units)       0
minBelowBaseline    baseline min - window min (feature units)       0
meanShift           abs(window mean - baseline mean) / baseline sd  2
stddevRatio         window stddev / baseline stddev                 2
==================  ==============================================  =================

The thesis' factors (mean outside baseline mean +- 2 sd, sd above twice the baseline's) are the
defaults; a threshold of, say, 0.5 on ``maxAboveBaseline`` tolerates half a unit above the
training maximum. ``meanShift`` and ``stddevRatio`` are left out when the baseline stddev is 0,
``stddevRatio`` too while the window has no stddev (fewer than 2 values, sample type).

>>> base = {"min": 0.0, "max": 10.0, "mean": 5.0, "stddev": 2.0}
>>> window_rule_scores({"min": 1.0, "max": 12.5, "mean": 10.0, "stddev": 1.0}, base, set(WINDOW_RULES))
{'maxAboveBaseline': {'value': 2.5}, 'minBelowBaseline': {'value': -1.0}, 'meanShift': {'value': 2.5}, 'stddevRatio': {'value': 0.5}}
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["WINDOW_RULES", "window_rule_scores"]

WINDOW_RULES = ("maxAboveBaseline", "minBelowBaseline", "meanShift", "stddevRatio")


def _number(entry: Mapping, key: str, what: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}: {key} must be a finite number, got {value!r}")
    return float(value)


def window_rule_scores(window_feature: Mapping[str, Any], baseline_feature: Mapping[str, Any],
                       wanted: set[str], feature: str = "feature") -> dict[str, dict[str, float]]:
    """``{rule: {"value"}}`` of the wanted window rules for one numerical feature."""
    w = {k: _number(window_feature, k, f"window feature {feature!r}") for k in ("min", "max", "mean", "stddev")}
    b = {k: _number(baseline_feature, k, f"baseline feature {feature!r}") for k in ("min", "max", "mean", "stddev")}
    scores: dict[str, dict[str, float]] = {}
    if "maxAboveBaseline" in wanted and w["max"] is not None and b["max"] is not None:
        scores["maxAboveBaseline"] = {"value": w["max"] - b["max"]}
    if "minBelowBaseline" in wanted and w["min"] is not None and b["min"] is not None:
        scores["minBelowBaseline"] = {"value": b["min"] - w["min"]}
    scale = b["stddev"]
    if "meanShift" in wanted and w["mean"] is not None and b["mean"] is not None and scale:
        scores["meanShift"] = {"value": abs(w["mean"] - b["mean"]) / scale}
    if "stddevRatio" in wanted and w["stddev"] is not None and scale:
        scores["stddevRatio"] = {"value": w["stddev"] / scale}
    return scores
