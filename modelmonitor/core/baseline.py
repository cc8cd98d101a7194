"""Training baselines: build from CSV/Parquet, validate, load, convert thesis baselines (DESIGN section 3).

A baseline (``baseline.json``, version 1; layout in ``docs/architecture.md``) holds, per numerical
feature, the descriptive statistics the outlier rules use (``stddev`` with ddof=1), percentiles
(numpy's default linear method) and an equal-width histogram over the training range that the
drift metrics compare windows against; per categorical feature the category frequencies; and the
covariance matrix of the numerical features (``numpy.cov``, ddof=1).

>>> doc = build_baseline({"x": [1.0, 2.0, 3.0, 4.0], "colour": ["red", "red", "blue", ""]}, bins=2)
>>> x = doc["features"]["x"]
>>> x["mean"], round(x["stddev"], 6), x["edges"], x["counts"], x["probabilities"]
(2.5, 1.290994, [1.0, 2.5, 4.0], [2, 2], [0.5, 0.5])
>>> doc["features"]["colour"]["frequencies"], doc["features"]["colour"]["missing"]
({'red': 2, 'blue': 1}, 1)

Missing values: an empty cell (or null, or NaN) is a missing value. It is left out of the
statistics and counted under ``missing``; the covariance uses the rows complete in every
numerical feature. Anything else that is not a number in a numerical column is an error naming
the file, row and column. Row numbers in CSV messages are file line numbers (the header is
row 1); in Parquet messages the first data row is row 1; for in-memory tables they are indexes.

A thesis-style baseline (``descriptive`` + ``distributions``) is converted on load; its bins are
ordered by the numeric value of their lower edge (the thesis sorted the keys as strings, which
puts "10.0" before "2.0").
"""

from modelmonitor.core.baseline_build import (DEFAULT_BINS, PERCENTILES, build_baseline,
                                              build_baseline_file, describe_inference, infer_features)
from modelmonitor.core.baseline_tables import TableError, read_table
from modelmonitor.core.baseline_thesis import to_thesis_baseline
from modelmonitor.core.baseline_validate import (BASELINE_VERSION, BaselineError, load_baseline,
                                                 normalize_baseline, write_baseline)

__all__ = [
    "BASELINE_VERSION", "DEFAULT_BINS", "PERCENTILES", "BaselineError", "TableError", "read_table",
    "infer_features", "describe_inference", "build_baseline", "build_baseline_file", "load_baseline",
    "normalize_baseline", "write_baseline", "to_thesis_baseline",
]
