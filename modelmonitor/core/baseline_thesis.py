"""The thesis' baseline format (``descriptive`` + ``distributions``), both ways.

Its bins are ordered by the numeric value of their lower edge (the thesis sorted the keys as
strings, which puts "10.0" before "2.0").
"""
from __future__ import annotations

import math

from modelmonitor.core.baseline_validate import (BASELINE_VERSION, BaselineError, _count, _number,
                                                 normalize_baseline)
from modelmonitor.core.spec import NUMERICAL

__all__ = ["from_thesis", "to_thesis_baseline"]


def from_thesis(doc: dict) -> dict:
    """Thesis ``descriptive`` + ``distributions`` -> our format (edges sorted numerically)."""
    descriptive = doc.get("descriptive") or {}
    distributions = doc.get("distributions") or {}
    for key, value in (("descriptive", descriptive), ("distributions", distributions)):
        if not isinstance(value, dict):
            raise BaselineError(key, "expected a mapping of feature name -> values")
    names = list(descriptive) + [name for name in distributions if name not in descriptive]
    if not names:
        raise BaselineError("descriptive", "no features")
    features: dict[str, dict] = {}
    for name in names:
        stats = descriptive.get(name)
        histogram = distributions.get(name)
        if stats is None:
            raise BaselineError(f"descriptive.{name}", "missing: a thesis baseline needs the descriptive "
                                "statistics (count, avg, stddev, min, max) of every feature in distributions")
        if histogram is None:
            raise BaselineError(f"distributions.{name}", "missing: a thesis baseline needs the distribution "
                                "of every feature in descriptive")
        if not isinstance(stats, dict):
            raise BaselineError(f"descriptive.{name}", "expected {count, avg, stddev, min, max}")
        if not isinstance(histogram, dict) or not histogram:
            raise BaselineError(f"distributions.{name}", 'expected a non-empty mapping {"<lower edge>": count}')
        for key in ("count", "avg", "stddev", "min", "max"):
            if key not in stats:
                raise BaselineError(f"descriptive.{name}.{key}", "is required")
        bins = []
        for key, count in histogram.items():
            try:
                lower = float(key)
            except (TypeError, ValueError):
                raise BaselineError(f"distributions.{name}.{key}", "the key is not a number (expected the "
                                    "bin's lower edge)") from None
            if not math.isfinite(lower):
                raise BaselineError(f"distributions.{name}.{key}", "the lower edge is not finite")
            bins.append((lower, key, count))
        bins.sort(key=lambda b: b[0])  # numerically: the thesis' string order put "10.0" before "2.0"
        for (a, key_a, _), (b, key_b, _) in zip(bins, bins[1:]):
            if a == b:
                raise BaselineError(f"distributions.{name}", f"keys {key_a!r} and {key_b!r} are the same edge")
        high = _number(stats["max"], f"descriptive.{name}.max")
        if not high > bins[-1][0]:
            raise BaselineError(f"descriptive.{name}.max", f"{high} is not above the last lower edge "
                                f"{bins[-1][1]!r} of distributions.{name}, so it cannot close the last bin")
        features[name] = {
            "type": NUMERICAL,
            "count": _count(stats["count"], f"descriptive.{name}.count"),
            "mean": _number(stats["avg"], f"descriptive.{name}.avg"),
            "stddev": _number(stats["stddev"], f"descriptive.{name}.stddev", minimum=0),
            "min": _number(stats["min"], f"descriptive.{name}.min"),
            "max": high,
            "edges": [b[0] for b in bins] + [high],
            "counts": [_count(b[2], f"distributions.{name}.{b[1]}") for b in bins],
        }
    return {"version": BASELINE_VERSION, "source": "thesis baseline", "bins": max(len(f["counts"]) for f in features.values()),
            "features": features}


def to_thesis_baseline(doc: dict) -> dict:
    """The thesis form (``descriptive`` + ``distributions``) of a baseline's numerical features.

    >>> from modelmonitor.core.baseline import build_baseline
    >>> thesis = to_thesis_baseline(build_baseline({"x": [1.0, 2.0, 4.0]}, bins=3))
    >>> thesis["distributions"]["x"], thesis["descriptive"]["x"]["avg"]
    ({'1.0': 1, '2.0': 1, '3.0': 1}, 2.3333333333333335)
    """
    normalized = normalize_baseline(doc)
    descriptive, distributions = {}, {}
    for name, entry in normalized["features"].items():
        if entry["type"] != NUMERICAL:
            continue
        descriptive[name] = {"count": entry["count"], "avg": entry["mean"], "stddev": entry["stddev"],
                             "min": entry["min"], "max": entry["max"]}
        distributions[name] = {repr(lower): count for lower, count in zip(entry["edges"], entry["counts"])}
    return {"descriptive": descriptive, "distributions": distributions}
