"""Per-instance outlier rules against the baseline (DESIGN section 3 "Outliers").

Rules, in the order results list them for one instance and feature:

- ``zscore``: ``|x - mean_b| > k * stddev_b``; score ``|x - mean_b| / stddev_b``, threshold ``k``
  (not applied to a feature whose baseline stddev is 0: every other value would be infinitely far).
- ``range``: ``x < min_b`` or ``x > max_b``; score ``x``, threshold the crossed bound.
- ``iqr``: Tukey fences ``x < Q1 - k*IQR`` or ``x > Q3 + k*IQR`` from the baseline percentiles
  25 and 75; score ``x``, threshold the crossed fence.
- ``mahalanobis``: squared distance ``d2 = (x - mu)^T pinv(Sigma) (x - mu)`` over the baseline
  covariance features; flagged when ``d2 > threshold``; feature ``"*"``, value ``None``,
  score ``d2``. Listed after the per-feature outliers of the same instance.
- ``unseen``: a categorical value (not missing) absent from the baseline frequencies; score 1,
  threshold 0.

Missing values (``NaN`` numbers, ``None`` categories) are never outliers. Features absent from the
baseline are skipped. :class:`OutlierDetector` precomputes the baseline arrays once; the numeric
rules then run as whole-batch NumPy comparisons with no Python loop per value.

>>> from modelmonitor.core.spec import Feature, OutlierSpec
>>> features = [Feature("x", "numerical", 0), Feature("colour", "categorical", 1)]
>>> baseline = {"features": {
...     "x": {"type": "numerical", "mean": 0.0, "stddev": 1.0, "min": -2.0, "max": 2.0},
...     "colour": {"type": "categorical", "frequencies": {"red": 3, "blue": 2}}}}
>>> detector = OutlierDetector(features, baseline, OutlierSpec(stddev_k=3.0, range=True))
>>> for o in detector.detect([[0.5], [3.5]], [["red", "green"]]):
...     print(o["instance"], o["feature"], o["rule"], o["value"], round(o["score"], 2), o["threshold"])
1 x zscore 3.5 3.5 3.0
1 x range 3.5 3.5 2.0
1 colour unseen green 1.0 0.0
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelmonitor.core import spec as _spec

__all__ = ["RULES", "MAHALANOBIS_FEATURE", "OutlierDetector", "detect_outliers"]

RULES = ("zscore", "range", "iqr", "mahalanobis", "unseen")
"""Rule names in the order outliers of one instance and feature are listed."""

MAHALANOBIS_FEATURE = "*"
"""The ``feature`` of a Mahalanobis outlier, which concerns all covariance features at once."""

_ZSCORE, _RANGE, _IQR, _MAHALANOBIS, _UNSEEN = range(len(RULES))


def _baseline_number(entry: Mapping, key: str, feature: str, need: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"baseline feature {feature!r}: {key!r} must be a finite number "
                         f"(needed by {need}), got {value!r}")
    return float(value)


class OutlierDetector:
    """Outlier rules for one monitor, with the baseline precomputed into arrays.

    ``features`` is the monitor schema (``spec.Feature`` list); numeric input columns follow the
    order of its numerical features and categorical columns the order of its categorical ones.

    >>> from modelmonitor.core.spec import Feature, OutlierSpec
    >>> baseline = {"features": {
    ...     "a": {"type": "numerical", "mean": 0.0, "stddev": 1.0, "min": -3.0, "max": 3.0},
    ...     "b": {"type": "numerical", "mean": 0.0, "stddev": 1.0, "min": -3.0, "max": 3.0}},
    ...     "covariance": {"features": ["a", "b"], "matrix": [[1.0, 0.9], [0.9, 1.0]]}}
    >>> rules = OutlierSpec(stddev_k=None, range=False, mahalanobis_threshold=9.0)
    >>> det = OutlierDetector([Feature("a", "numerical", 0), Feature("b", "numerical", 1)], baseline, rules)
    >>> [(o["instance"], o["feature"], round(o["score"], 1)) for o in det.detect([[1, 1], [1, -1]], [])]
    [(1, '*', 20.0)]
    """

    def __init__(self, features: Sequence[_spec.Feature], baseline: Mapping[str, Any],
                 rules: _spec.OutlierSpec):
        if not isinstance(baseline, Mapping) or not isinstance(baseline.get("features"), Mapping):
            raise ValueError("baseline: 'features' mapping is missing")
        self.rules = rules
        base = baseline["features"]
        numerical = [f for f in features if f.type == _spec.NUMERICAL]
        categorical = [f for f in features if f.type == _spec.CATEGORICAL]
        for f in features:
            if f.type not in _spec.FEATURE_TYPES:
                raise ValueError(f"feature {f.name!r}: unknown type {f.type!r}")
            entry = base.get(f.name)
            if entry is not None and entry.get("type", f.type) != f.type:
                raise ValueError(f"feature {f.name!r} is {f.type} in the monitor but "
                                 f"{entry.get('type')} in the baseline")
        # Output order is the schema order, whatever the column grouping.
        order = {f.name: i for i, f in enumerate(features)}
        self.numerical_names = [f.name for f in numerical]
        self.categorical_names = [f.name for f in categorical]
        self._num_order = np.array([order[f.name] for f in numerical], dtype=np.int64)
        self._cat_order = [order[f.name] for f in categorical]
        self._star_order = len(features)

        n_num = len(numerical)
        present = np.array([f.name in base for f in numerical], dtype=bool)
        nan = np.full(n_num, np.nan)
        self._mean, self._std = nan.copy(), nan.copy()
        self._min, self._max = nan.copy(), nan.copy()
        self._low_fence, self._high_fence = nan.copy(), nan.copy()
        for j, f in enumerate(numerical):
            if not present[j]:
                continue
            entry = base[f.name]
            if rules.stddev_k is not None:
                self._mean[j] = _baseline_number(entry, "mean", f.name, "outliers.stddev")
                self._std[j] = _baseline_number(entry, "stddev", f.name, "outliers.stddev")
                if self._std[j] < 0:
                    raise ValueError(f"baseline feature {f.name!r}: stddev must not be negative, "
                                     f"got {self._std[j]}")
            if rules.range:
                self._min[j] = _baseline_number(entry, "min", f.name, "outliers.range")
                self._max[j] = _baseline_number(entry, "max", f.name, "outliers.range")
            if rules.iqr_k is not None:
                pct = entry.get("percentiles")
                if not isinstance(pct, Mapping):
                    raise ValueError(f"baseline feature {f.name!r}: 'percentiles' with \"25\" and \"75\" "
                                     "is needed by outliers.iqr")
                q1 = _baseline_number(_percentile_keys(pct), "25", f.name, "outliers.iqr")
                q3 = _baseline_number(_percentile_keys(pct), "75", f.name, "outliers.iqr")
                self._low_fence[j] = q1 - rules.iqr_k * (q3 - q1)
                self._high_fence[j] = q3 + rules.iqr_k * (q3 - q1)
        # A z-score needs a spread: baseline stddev 0 (a constant feature) disables the rule there.
        self._zscore_on = present & np.isfinite(self._std) & (self._std > 0)
        self._z_std = np.where(self._zscore_on, self._std, 1.0)

        self._maha_columns: np.ndarray | None = None
        if rules.mahalanobis_threshold is not None:
            self._prepare_mahalanobis(baseline, base)

        self._cat_seen: list[frozenset | None] = []
        for f in categorical:
            entry = base.get(f.name)
            if entry is None or not rules.unseen_category:
                self._cat_seen.append(None)
                continue
            freq = entry.get("frequencies")
            if not isinstance(freq, Mapping):
                raise ValueError(f"baseline feature {f.name!r}: 'frequencies' is needed by outliers.unseen")
            self._cat_seen.append(frozenset(freq))

    def _prepare_mahalanobis(self, baseline: Mapping, base: Mapping) -> None:
        cov = baseline.get("covariance")
        if cov is None:
            return  # no covariance in the baseline: the rule has nothing to measure against
        if not isinstance(cov, Mapping) or "features" not in cov or "matrix" not in cov:
            raise ValueError("baseline covariance: expected {features, matrix}")
        names = list(cov["features"])
        try:
            matrix = np.asarray(cov["matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("baseline covariance: matrix must be a square list of numbers") from None
        if matrix.shape != (len(names), len(names)):
            raise ValueError(f"baseline covariance: matrix shape {matrix.shape} does not match "
                             f"{len(names)} features")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("baseline covariance: matrix must be finite")
        # Use the covariance features the monitor has as numerical columns; a principal
        # submatrix of a covariance matrix is the covariance of that subset.
        column_of = {name: j for j, name in enumerate(self.numerical_names)}
        keep = [i for i, name in enumerate(names) if name in column_of and name in base]
        if not keep:
            return
        self._maha_columns = np.array([column_of[names[i]] for i in keep], dtype=np.int64)
        self._maha_mean = np.array([_baseline_number(base[names[i]], "mean", names[i], "outliers.mahalanobis")
                                    for i in keep])
        # pinv keeps singular covariances (collinear features) usable.
        self._maha_inverse = np.linalg.pinv(matrix[np.ix_(keep, keep)], hermitian=True)

    # ----------------------------------------------------------------------------------------

    def _numeric_array(self, numeric: Any) -> np.ndarray:
        try:
            x = np.asarray(numeric, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("numeric: expected an (instances, numerical features) array of numbers "
                             "(use NaN for missing values)") from None
        n_num = len(self.numerical_names)
        if x.ndim == 1 and x.size == 0:
            x = x.reshape(0, n_num)
        if x.ndim != 2 or x.shape[1] != n_num:
            raise ValueError(f"numeric: expected shape (instances, {n_num}) for the numerical features "
                             f"{self.numerical_names}, got {x.shape}")
        return x

    def detect(self, numeric: Any, categorical: Sequence[Sequence[str | None]]) -> list[dict]:
        """Outliers of a batch: ``numeric`` (n, numerical features), ``categorical`` one column
        (length n) per categorical feature. Sorted by (instance, feature order, rule order)."""
        x = self._numeric_array(numeric)
        if not isinstance(categorical, Sequence) or isinstance(categorical, str) \
                or len(categorical) != len(self.categorical_names):
            raise ValueError(f"categorical: expected {len(self.categorical_names)} columns for "
                             f"{self.categorical_names}, got {categorical!r:.80}")
        n = x.shape[0] if self.numerical_names else (len(categorical[0]) if categorical else 0)
        for name, column in zip(self.categorical_names, categorical):
            if isinstance(column, str) or len(column) != n:
                raise ValueError(f"categorical column {name!r}: expected {n} values (one per instance), "
                                 f"got {column!r:.80}")

        # Each hit is (instance, feature position, rule, column, score, threshold); all numeric
        # rules are whole-array comparisons, so only the hits themselves cost Python time.
        instances: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        rule_ids: list[np.ndarray] = []
        columns: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        thresholds: list[np.ndarray] = []

        def add(mask: np.ndarray, rule: int, score: np.ndarray, threshold: np.ndarray) -> None:
            rows, cols = np.nonzero(mask)
            if rows.size:
                instances.append(rows)
                positions.append(self._num_order[cols])
                rule_ids.append(np.full(rows.size, rule))
                columns.append(cols)
                scores.append(score[rows, cols])
                thresholds.append(np.broadcast_to(threshold, x.shape)[rows, cols])

        if x.size:
            rules = self.rules
            # NaN compares False everywhere below, so missing values never count.
            if rules.stddev_k is not None and self._zscore_on.any():
                z = np.abs(x - self._mean) / self._z_std
                add((z > rules.stddev_k) & self._zscore_on, _ZSCORE, z, np.float64(rules.stddev_k))
            if rules.range:
                below, above = x < self._min, x > self._max
                add(below | above, _RANGE, x, np.where(below, self._min, self._max))
            if rules.iqr_k is not None:
                below, above = x < self._low_fence, x > self._high_fence
                add(below | above, _IQR, x, np.where(below, self._low_fence, self._high_fence))

        maha_rows = maha_scores = None
        if self._maha_columns is not None and x.shape[0]:
            centred = x[:, self._maha_columns] - self._maha_mean
            d2 = np.einsum("ij,jk,ik->i", centred, self._maha_inverse, centred)
            maha_rows = np.nonzero(d2 > self.rules.mahalanobis_threshold)[0]
            maha_scores = d2[maha_rows]

        unseen: list[tuple[int, int, str]] = []
        for seen, position, column in zip(self._cat_seen, self._cat_order, categorical):
            if seen is not None:
                unseen.extend((i, position, v) for i, v in enumerate(column) if v is not None and v not in seen)

        return self._assemble(x, instances, positions, rule_ids, columns, scores,
                              thresholds, maha_rows, maha_scores, unseen)

    def _assemble(self, x, instances, positions, rule_ids, columns, scores, thresholds,
                  maha_rows, maha_scores, unseen) -> list[dict]:
        """Build the records in (instance, feature position, rule) order with one lexsort."""
        records: list[dict] = []
        keys_inst: list[np.ndarray] = []
        keys_pos: list[np.ndarray] = []
        keys_rule: list[np.ndarray] = []
        if instances:
            inst = np.concatenate(instances)
            col = np.concatenate(columns)
            names = self.numerical_names
            records.extend(
                {"instance": i, "feature": names[c], "value": v, "rule": RULES[r], "score": sc, "threshold": t}
                for i, c, v, r, sc, t in zip(inst.tolist(), col.tolist(), x[inst, col].tolist(),
                                             np.concatenate(rule_ids).tolist(), np.concatenate(scores).tolist(),
                                             np.concatenate(thresholds).tolist()))
            keys_inst.append(inst)
            keys_pos.append(np.concatenate(positions))
            keys_rule.append(np.concatenate(rule_ids))
        if maha_rows is not None and maha_rows.size:
            threshold = float(self.rules.mahalanobis_threshold)
            records.extend({"instance": i, "feature": MAHALANOBIS_FEATURE, "value": None, "rule": "mahalanobis",
                            "score": sc, "threshold": threshold}
                           for i, sc in zip(maha_rows.tolist(), maha_scores.tolist()))
            keys_inst.append(maha_rows)
            keys_pos.append(np.full(maha_rows.size, self._star_order))
            keys_rule.append(np.full(maha_rows.size, _MAHALANOBIS))
        if unseen:
            name_at = dict(zip(self._cat_order, self.categorical_names))
            records.extend({"instance": i, "feature": name_at[p], "value": v, "rule": "unseen",
                            "score": 1.0, "threshold": 0.0} for i, p, v in unseen)
            keys_inst.append(np.fromiter((i for i, _, _ in unseen), dtype=np.int64, count=len(unseen)))
            keys_pos.append(np.fromiter((p for _, p, _ in unseen), dtype=np.int64, count=len(unseen)))
            keys_rule.append(np.full(len(unseen), _UNSEEN))
        if not records:
            return records
        order = np.lexsort((np.concatenate(keys_rule), np.concatenate(keys_pos), np.concatenate(keys_inst)))
        return [records[k] for k in order.tolist()]

    def detect_rows(self, rows: Sequence[Sequence[Any]], features: Sequence[_spec.Feature]) -> list[dict]:
        """Outliers of rows in schema order (``Feature.index`` positions; ``None`` = missing).

        >>> from modelmonitor.core.spec import Feature, OutlierSpec
        >>> fs = [Feature("x", "numerical", 0), Feature("c", "categorical", 1)]
        >>> base = {"features": {"x": {"mean": 0.0, "stddev": 1.0, "min": -1.0, "max": 1.0},
        ...                      "c": {"frequencies": {"a": 1}}}}
        >>> det = OutlierDetector(fs, base, OutlierSpec(stddev_k=None))
        >>> [(o["instance"], o["rule"]) for o in det.detect_rows([[0.0, "a"], [None, "b"], [2.0, None]], fs)]
        [(1, 'unseen'), (2, 'range')]
        """
        by_name = {f.name: f for f in features}
        try:
            num_idx = [by_name[name].index for name in self.numerical_names]
            cat_idx = [by_name[name].index for name in self.categorical_names]
        except KeyError as exc:
            raise ValueError(f"detect_rows: feature {exc.args[0]!r} is not in the given features") from None
        try:
            numeric = np.array([[math.nan if row[j] is None else row[j] for j in num_idx] for row in rows],
                               dtype=np.float64).reshape(len(rows), len(num_idx))
            categorical = [[row[j] for row in rows] for j in cat_idx]
        except (IndexError, TypeError, ValueError):
            raise ValueError("detect_rows: every row needs a number (or None) at each numerical "
                             "feature's index and a value at each categorical one") from None
        return self.detect(numeric, categorical)


def _percentile_keys(pct: Mapping) -> dict[str, Any]:
    """Percentile maps keyed "25"/"75", also when written as "25.0" or numbers."""
    out: dict[str, Any] = {}
    for key, value in pct.items():
        try:
            number = float(key)
        except (TypeError, ValueError):
            continue
        out[f"{number:g}"] = value
    return out


def detect_outliers(numeric: Any, categorical: Sequence[Sequence[str | None]],
                    features: Sequence[_spec.Feature], baseline: Mapping[str, Any],
                    rules: _spec.OutlierSpec) -> list[dict]:
    """One-shot form of :class:`OutlierDetector` (build it once instead on a hot path).

    >>> from modelmonitor.core.spec import Feature, OutlierSpec
    >>> base = {"features": {"x": {"mean": 10.0, "stddev": 2.0, "min": 5.0, "max": 15.0,
    ...                            "percentiles": {"25": 9.0, "50": 10.0, "75": 11.0}}}}
    >>> out = detect_outliers([[10.0], [14.5]], [], [Feature("x", "numerical", 0)], base,
    ...                       OutlierSpec(stddev_k=None, range=False, iqr_k=1.5))
    >>> [(o["instance"], o["rule"], o["threshold"]) for o in out]
    [(1, 'iqr', 14.0)]
    """
    return OutlierDetector(features, baseline, rules).detect(numeric, categorical)
