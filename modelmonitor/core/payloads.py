"""KServe request and response payloads -> rows in feature order: the entry points.

A *row* is one instance as a list in the order of the features given (the order of
``MonitorSpec.features``, or ``MonitorSpec.predictions`` for responses): numerical values are
Python floats, categorical values strings, a missing categorical value ``None``.

Accepted forms:

* KServe V1 requests ``{"instances": [...]}`` or ``{"inputs": [...]}``, each instance a list in
  feature order or an object keyed by feature name (extra keys are ignored, an absent categorical
  key is a missing value); with exactly one feature an instance may be a bare scalar.
* V2 / Open Inference Protocol requests ``{"inputs": [{"name", "shape", "datatype", "data"}]}``:
  one tensor of shape ``[n, n_features]`` (data flat row-major or nested), or one input per feature
  named after it, each of shape ``[n]`` or ``[n, 1]``. A single tensor of shape ``[n]``/``[n, 1]``
  feeds a single feature whatever its name.
* Responses: V1 ``{"predictions": [...]}`` and V2 ``{"outputs": [...]}`` by the same rules, matched
  against the prediction features.

Everything else raises :class:`PayloadError`, whose ``reason`` says exactly what is wrong; the
functions turn it into an HTTP 400 / dead-letter event. Strictness is deliberate: a numeric
string such as ``"5.1"`` is not a number here (a client sending strings has a bug worth seeing),
NaN and infinities are refused, and a null numerical value is refused (no silent imputation).

Value checks, the layout and :class:`PayloadError` live in :mod:`modelmonitor.core.payload_rows`,
V2 tensors in :mod:`modelmonitor.core.payload_tensors`; this module reads the body and picks V1 or V2.

>>> from modelmonitor.core.spec import Feature
>>> iris = [Feature("sepal_length", "numerical", 0), Feature("sepal_width", "numerical", 1)]
>>> parse_request('{"instances": [[5.1, 3.5], {"sepal_width": 3, "sepal_length": 4.9}]}', iris)
[[5.1, 3.5], [4.9, 3.0]]
>>> parse_request({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
...                            "data": [6.2, 2.9]}]}, iris)
[[6.2, 2.9]]
>>> parse_request({"instances": [[5.1, "3.5"]]}, iris)
Traceback (most recent call last):
...
modelmonitor.core.payload_rows.PayloadError: instance 0 feature 'sepal_width': '3.5' is not a number
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from modelmonitor.core.payload_rows import (REQUEST_WORDS, RESPONSE_WORDS, ROW_WORDS, Layout, PayloadError,
                                            Words, cap_reason, category, kind, layout_of, number, rows_of,
                                            in_range, show)
from modelmonitor.core.payload_tensors import V2_DATATYPES, looks_like_tensor, tensors_to_rows

__all__ = ["PayloadError", "parse_request", "parse_response", "split_columns", "V2_DATATYPES", "cap_reason"]


def _v1(instances: Any, key: str, layout: Layout, w: Words) -> list[list]:
    if not isinstance(instances, list):
        raise PayloadError(f"'{key}' must be a list of {w.item}s, got {kind(instances)}")
    if not instances:
        raise PayloadError(f"empty batch: '{key}' holds no {w.item}s")
    return rows_of(instances, layout, w)


def _load(body: bytes | str | dict, what: str) -> dict:
    if isinstance(body, dict):
        return body
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        if not body:
            raise PayloadError(f"empty body: expected a JSON {what}")
        try:
            doc = json.loads(bytes(body) if isinstance(body, memoryview) else body)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise PayloadError(f"body is not JSON: {exc}") from None
    else:
        raise PayloadError(f"body must be bytes, str or a dict, got {type(body).__name__}")
    if not isinstance(doc, dict):
        raise PayloadError(f"expected a JSON object ({what}), got {kind(doc)}")
    return doc


def parse_request(body: bytes | str | dict, features: Sequence[Any]) -> list[list]:
    """Rows (one list per instance, in the order of ``features``) from a KServe V1 or V2 request.

    ``features`` are :class:`modelmonitor.core.spec.Feature` objects (anything with ``name`` and
    ``type``); pass ``MonitorSpec.features`` (a tuple) so the layout is computed once.

    >>> from modelmonitor.core.spec import Feature
    >>> schema = (Feature("age", "numerical", 0), Feature("city", "categorical", 1))
    >>> parse_request(b'{"instances": [[30, "Oslo"], {"age": 41}]}', schema)
    [[30.0, 'Oslo'], [41.0, None]]
    >>> parse_request({"inputs": [
    ...     {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["Rome", "Lima"]},
    ...     {"name": "age", "shape": [2, 1], "datatype": "INT32", "data": [[19], [64]]}]}, schema)
    [[19.0, 'Rome'], [64.0, 'Lima']]
    >>> parse_request({"instances": [[1, "a", 2]]}, schema)
    Traceback (most recent call last):
    ...
    modelmonitor.core.payload_rows.PayloadError: instance 0 has 3 values, expected 2 (age, city)
    """
    try:
        return _parse_request(body, features)
    except RecursionError:  # nesting deep enough to exhaust the stack is not a payload we read
        raise PayloadError("payload is nested too deeply to read") from None


def _parse_request(body: bytes | str | dict, features: Sequence[Any]) -> list[list]:
    doc = _load(body, "KServe request")
    layout = layout_of(features)
    w = REQUEST_WORDS
    if "instances" in doc:
        if "inputs" in doc:
            raise PayloadError("request has both 'instances' and 'inputs': send one of them")
        return _v1(doc["instances"], "instances", layout, w)
    if "inputs" in doc:
        inputs = doc["inputs"]
        if isinstance(inputs, list) and inputs and looks_like_tensor(inputs[0], layout):
            return tensors_to_rows(inputs, layout, w)
        if isinstance(inputs, dict):
            raise PayloadError("'inputs' is an object (TensorFlow columnar form), which is not supported: "
                               "send {'instances': [rows]} or V2 inputs [{name, shape, datatype, data}]")
        return _v1(inputs, "inputs", layout, w)
    keys = ", ".join(repr(key) for key in list(doc)[:8]) or "none"
    raise PayloadError("not a KServe request: expected {'instances': [...]} or {'inputs': [...]} (V1) "
                       f"or V2 {{'inputs': [{{name, shape, datatype, data}}]}}; got keys: {keys}")


def parse_response(body: bytes | str | dict, predictions: Sequence[Any]) -> list[list]:
    """Rows (one list per prediction, in the order of ``predictions``) from a KServe V1 or V2 response.

    >>> from modelmonitor.core.spec import Feature
    >>> parse_response('{"predictions": [0, 2, 1]}', (Feature("prediction", "numerical", 0),))
    [[0.0], [2.0], [1.0]]
    >>> parse_response({"model_name": "iris", "outputs": [{"name": "output-0", "shape": [2],
    ...                 "datatype": "INT64", "data": [1, 0]}]}, (Feature("species", "categorical", 0),))
    [['1'], ['0']]
    """
    try:
        return _parse_response(body, predictions)
    except RecursionError:
        raise PayloadError("payload is nested too deeply to read") from None


def _parse_response(body: bytes | str | dict, predictions: Sequence[Any]) -> list[list]:
    doc = _load(body, "KServe response")
    layout = layout_of(predictions)
    w = RESPONSE_WORDS
    if "predictions" in doc:
        if "outputs" in doc:
            raise PayloadError("response has both 'predictions' and 'outputs': expected one of them")
        return _v1(doc["predictions"], "predictions", layout, w)
    if "outputs" in doc:
        outputs = doc["outputs"]
        if isinstance(outputs, list) and outputs and looks_like_tensor(outputs[0], layout):
            return tensors_to_rows(outputs, layout, w)
        return _v1(outputs, "outputs", layout, w)
    keys = ", ".join(repr(key) for key in list(doc)[:8]) or "none"
    raise PayloadError("not a KServe response: expected {'predictions': [...]} (V1) or "
                       f"{{'outputs': [{{name, shape, datatype, data}}]}} (V2); got keys: {keys}")


def split_columns(rows: Sequence[Sequence[Any]], features: Sequence[Any]) -> tuple[np.ndarray, list[list]]:
    """The numerical values as an ``(n, n_numerical)`` float64 matrix plus one list per categorical feature.

    Columns keep the order of ``features``. Rows parsed above pass at numpy speed; rows from
    anywhere else (an ``inference.instances`` event is untrusted input for outlier and
    aggregate) are held to the same rules as a payload: numerical values are finite numbers
    (booleans count as 0/1; numeric strings, nulls, NaN and infinities are refused), categorical
    values strings or null (integers and booleans become their str(), as in a payload).

    >>> from modelmonitor.core.spec import Feature
    >>> schema = (Feature("x", "numerical", 0), Feature("c", "categorical", 1), Feature("y", "numerical", 2))
    >>> matrix, categorical = split_columns([[1.0, "a", 2.0], [3.0, None, 4.0]], schema)
    >>> matrix.tolist(), categorical
    ([[1.0, 2.0], [3.0, 4.0]], [['a', None]])
    >>> split_columns([[1.0, "a", float("nan")]], schema)
    Traceback (most recent call last):
    ...
    modelmonitor.core.payload_rows.PayloadError: row 0 feature 'y': NaN is not a finite number
    """
    layout = layout_of(features)
    n, k = len(rows), layout.width
    n_numerical = len(layout.numerical_positions)
    if n == 0:
        return np.empty((0, n_numerical), dtype=np.float64), [[] for _ in layout.categorical_positions]
    w = ROW_WORDS
    if layout.all_numerical:
        try:
            # No dtype: a string or a null stays visible in the result's dtype instead of being
            # converted ("1.5" -> 1.5, None -> NaN) behind our back.
            matrix = np.asarray(rows)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise PayloadError(f"rows do not form an (n, {k}) numeric table: {exc}") from None
        if matrix.dtype.kind in "fiub":
            if matrix.shape != (n, k):
                raise PayloadError(f"rows have shape {list(matrix.shape)}, expected [{n}, {k}] ({layout.listing})")
            matrix = np.ascontiguousarray(matrix, dtype=np.float64)
            if matrix.dtype.kind != "f" or in_range(matrix):
                return matrix, []
        # Something is not a finite number: find it, and say which (or convert what is fine,
        # such as integers too large for int64).
        return np.array(_checked_numeric_rows(rows, layout, w), dtype=np.float64).reshape(n, k), []
    for item, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)):
            raise PayloadError(f"row {item} is {kind(row)} ({show(row)}), expected a list of {k} values")
        if len(row) != k:
            raise PayloadError(f"row {item} has {len(row)} values, expected {k} ({layout.listing})")
    columns = list(zip(*rows))
    if n_numerical:
        try:
            matrix = np.array([columns[j] for j in layout.numerical_positions])
        except (ValueError, TypeError, OverflowError, RecursionError):
            matrix = None
        if (matrix is None or matrix.dtype.kind not in "fiub" or matrix.shape != (n_numerical, n)
                or (matrix.dtype.kind == "f" and not in_range(matrix))):
            matrix = np.array([[number(v, item, layout.names[j], w) for item, v in enumerate(columns[j])]
                               for j in layout.numerical_positions], dtype=np.float64)
        matrix = np.ascontiguousarray(matrix.T, dtype=np.float64)
    else:
        matrix = np.empty((n, 0), dtype=np.float64)
    categorical = []
    for j in layout.categorical_positions:
        column = list(columns[j])
        if not all(type(v) is str or v is None for v in column):
            column = [category(v, item, layout.names[j], w) for item, v in enumerate(column)]
        categorical.append(column)
    return matrix, categorical


def _checked_numeric_rows(rows: Sequence[Any], layout: Layout, w: Words) -> list[list[float]]:
    """All-numerical rows converted value by value (raises PayloadError on the first bad one)."""
    k = layout.width
    out = []
    for item, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)):
            raise PayloadError(f"row {item} is {kind(row)} ({show(row)}), expected a list of {k} values")
        if len(row) != k:
            raise PayloadError(f"row {item} has {len(row)} values, expected {k} ({layout.listing})")
        out.append([number(v, item, name, w) for v, name in zip(row, layout.names)])
    return out
