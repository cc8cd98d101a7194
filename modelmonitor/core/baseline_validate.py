"""Validating and loading baseline documents (either format; thesis baselines are converted).
"""
from __future__ import annotations

import copy
import json
import math
import os
from typing import Any

from modelmonitor.core.spec import CATEGORICAL, NUMERICAL

__all__ = ["BASELINE_VERSION", "BaselineError", "normalize_baseline", "load_baseline", "write_baseline"]

BASELINE_VERSION = 1


class BaselineError(ValueError):
    """An invalid baseline document; ``field`` is the dotted path of the offending field."""

    def __init__(self, field_path: str, message: str):
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.reason = message


# ---------------------------------------------------------------------------------------------
# Validation and the thesis format


def _number(value: Any, field_path: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BaselineError(field_path, f"expected a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise BaselineError(field_path, f"expected a finite number, got {value!r}")
    if minimum is not None and result < minimum:
        raise BaselineError(field_path, f"must not be below {minimum:g}, got {value!r}")
    return result


def _count(value: Any, field_path: str) -> int | float:
    number = _number(value, field_path, minimum=0)
    return int(number) if number.is_integer() else number


def _validate_numerical(name: str, entry: dict, path: str) -> dict:
    out = dict(entry)
    out["type"] = NUMERICAL
    for key in ("count", "mean", "stddev", "min", "max", "edges", "counts"):
        if key not in entry:
            raise BaselineError(f"{path}.{key}", "is required")
    out["count"] = _count(entry["count"], f"{path}.count")
    out["mean"] = _number(entry["mean"], f"{path}.mean")
    out["stddev"] = _number(entry["stddev"], f"{path}.stddev", minimum=0)
    out["min"] = _number(entry["min"], f"{path}.min")
    out["max"] = _number(entry["max"], f"{path}.max")
    if out["min"] > out["max"]:
        raise BaselineError(f"{path}.min", f"{out['min']} is larger than max {out['max']}")
    edges = entry["edges"]
    if not isinstance(edges, list) or len(edges) < 2:
        raise BaselineError(f"{path}.edges", "expected a list of at least 2 bin edges")
    out["edges"] = [_number(e, f"{path}.edges[{i}]") for i, e in enumerate(edges)]
    for i in range(1, len(edges)):
        if not out["edges"][i] > out["edges"][i - 1]:
            raise BaselineError(f"{path}.edges", f"not increasing (edges[{i - 1}] = {out['edges'][i - 1]}, "
                                f"edges[{i}] = {out['edges'][i]})")
    counts = entry["counts"]
    if not isinstance(counts, list) or len(counts) != len(edges) - 1:
        got = len(counts) if isinstance(counts, list) else repr(counts)
        raise BaselineError(f"{path}.counts", f"expected {len(edges) - 1} bin counts (one per pair of edges), "
                            f"got {got}")
    out["counts"] = [_count(c, f"{path}.counts[{i}]") for i, c in enumerate(counts)]
    total = float(sum(out["counts"]))
    if "probabilities" in entry:
        probabilities = entry["probabilities"]
        if not isinstance(probabilities, list) or len(probabilities) != len(counts):
            raise BaselineError(f"{path}.probabilities", f"expected {len(counts)} probabilities (one per bin)")
        out["probabilities"] = [_number(p, f"{path}.probabilities[{i}]", minimum=0)
                                for i, p in enumerate(probabilities)]
        if any(p > 1 for p in out["probabilities"]):
            raise BaselineError(f"{path}.probabilities", "a probability is larger than 1")
    else:
        out["probabilities"] = [c / total if total else 0.0 for c in out["counts"]]
    if "percentiles" in entry:
        percentiles = entry["percentiles"]
        if not isinstance(percentiles, dict):
            raise BaselineError(f"{path}.percentiles", 'expected a mapping like {"25": 5.1, "50": 5.8}')
        out["percentiles"] = {str(k): _number(v, f"{path}.percentiles.{k}") for k, v in percentiles.items()}
    if "missing" in entry:
        out["missing"] = _count(entry["missing"], f"{path}.missing")
    if entry.get("quantileSketch") is not None:
        _check_sketch(entry["quantileSketch"], out["count"], f"{path}.quantileSketch")
    return out


def _check_sketch(field: Any, count: float, path: str) -> None:
    from modelmonitor.detect.quantile_sketch import decode
    try:
        sample = decode(field, path)
    except ValueError as exc:
        raise BaselineError(path, str(exc).removeprefix(f"{path}: ")) from None
    if abs(sample.total - count) > 0.5:
        raise BaselineError(path, f"holds {sample.total:g} values, the feature's count is {count:g}")


def _validate_categorical(name: str, entry: dict, path: str) -> dict:
    out = dict(entry)
    out["type"] = CATEGORICAL
    frequencies = entry.get("frequencies")
    if not isinstance(frequencies, dict):
        raise BaselineError(f"{path}.frequencies", "is required: a mapping of category -> count")
    out["frequencies"] = {str(k): _count(v, f"{path}.frequencies.{k}") for k, v in frequencies.items()}
    out["count"] = (_count(entry["count"], f"{path}.count") if "count" in entry
                    else sum(out["frequencies"].values()))
    if "missing" in entry:
        out["missing"] = _count(entry["missing"], f"{path}.missing")
    return out


def _validate(doc: dict) -> dict:
    version = doc.get("version", BASELINE_VERSION)
    if version != BASELINE_VERSION:
        raise BaselineError("version", f"{version!r} is not supported (expected {BASELINE_VERSION})")
    features = doc.get("features")
    if not isinstance(features, dict) or not features:
        raise BaselineError("features", "expected a non-empty mapping of feature name -> statistics")
    out = {key: copy.deepcopy(value) for key, value in doc.items() if key not in ("features", "covariance")}
    out["version"] = BASELINE_VERSION
    out["features"] = {}
    for name, entry in features.items():
        path = f"features.{name}"
        if not isinstance(entry, dict):
            raise BaselineError(path, "expected a mapping of statistics")
        kind = entry.get("type", CATEGORICAL if "frequencies" in entry else NUMERICAL)
        if kind == NUMERICAL:
            out["features"][name] = _validate_numerical(name, copy.deepcopy(entry), path)
        elif kind == CATEGORICAL:
            out["features"][name] = _validate_categorical(name, copy.deepcopy(entry), path)
        else:
            raise BaselineError(f"{path}.type", f"{kind!r} is not {NUMERICAL} or {CATEGORICAL}")
    covariance = doc.get("covariance")
    if covariance is not None:
        if not isinstance(covariance, dict):
            raise BaselineError("covariance", "expected {features: [...], matrix: [[...]]}")
        names = covariance.get("features")
        matrix = covariance.get("matrix")
        if not isinstance(names, list):
            raise BaselineError("covariance.features", "expected a list of numerical feature names")
        for i, name in enumerate(names):
            if out["features"].get(name, {}).get("type") != NUMERICAL:
                raise BaselineError(f"covariance.features[{i}]", f"{name!r} is not a numerical feature of this baseline")
        if not isinstance(matrix, list) or len(matrix) != len(names):
            raise BaselineError("covariance.matrix", f"expected a {len(names)} x {len(names)} matrix")
        rows = []
        for i, row in enumerate(matrix):
            if not isinstance(row, list) or len(row) != len(names):
                raise BaselineError(f"covariance.matrix[{i}]", f"expected {len(names)} values")
            rows.append([_number(v, f"covariance.matrix[{i}][{j}]") for j, v in enumerate(row)])
        out["covariance"] = {"features": list(names), "matrix": rows}
    return out


def normalize_baseline(doc: Any) -> dict:
    """A validated copy of a baseline in our format (thesis baselines are converted).

    Probabilities absent from a bin list are computed as counts / sum(counts).

    >>> thesis = {"descriptive": {"x": {"count": 4, "avg": 7.0, "stddev": 4.0, "min": 2.0, "max": 13.0}},
    ...           "distributions": {"x": {"10.0": 1, "2.0": 1, "6.0": 2}}}
    >>> x = normalize_baseline(thesis)["features"]["x"]
    >>> x["edges"], x["counts"], x["probabilities"], x["mean"]
    ([2.0, 6.0, 10.0, 13.0], [1, 2, 1], [0.25, 0.5, 0.25], 7.0)
    >>> normalize_baseline({"features": {"y": {"count": 2, "mean": 0, "stddev": 1, "min": 0, "max": 1,
    ...                                          "edges": [0, 1, 0.5], "counts": [1, 1]}}})
    Traceback (most recent call last):
    ...
    modelmonitor.core.baseline_validate.BaselineError: features.y.edges: not increasing (edges[1] = 1.0, edges[2] = 0.5)
    """
    if not isinstance(doc, dict):
        raise BaselineError("(document)", f"expected a baseline mapping, got {type(doc).__name__}")
    if "features" in doc:
        return _validate(doc)
    if "descriptive" in doc or "distributions" in doc:
        from modelmonitor.core.baseline_thesis import from_thesis
        return _validate(from_thesis(doc))
    raise BaselineError("(document)", "expected 'features' (a modelmonitor baseline) or 'descriptive' and "
                        "'distributions' (a thesis baseline)")


def load_baseline(path_or_doc: str | os.PathLike | dict) -> dict:
    """A validated baseline from a JSON file or an already loaded document (either format)."""
    if isinstance(path_or_doc, (str, os.PathLike)):
        path = os.fspath(path_or_doc)
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except OSError as exc:
            raise BaselineError("(file)", f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise BaselineError("(file)", f"{path} is not valid JSON: {exc}") from None
        return normalize_baseline(doc)
    return normalize_baseline(path_or_doc)


def write_baseline(doc: dict, path: str | os.PathLike) -> None:
    """Validate ``doc`` and write it as JSON (sorted keys, indent 2), replacing ``path`` atomically."""
    normalized = normalize_baseline(doc)
    path = os.fspath(path)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as fh:
        json.dump(normalized, fh, sort_keys=True, indent=2, allow_nan=False)
        fh.write("\n")
    os.replace(temporary, path)
