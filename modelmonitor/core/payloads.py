"""KServe request and response payloads -> rows in feature order (DESIGN section 3, "Payloads").

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
modelmonitor.core.payloads.PayloadError: instance 0 feature 'sepal_width': '3.5' is not a number
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

from modelmonitor.core.spec import NUMERICAL

__all__ = ["PayloadError", "parse_request", "parse_response", "split_columns", "V2_DATATYPES"]


#: A reason longer than this is cut: it travels in HTTP answers, dead letters and logs, and a
#: hostile payload (a 10 MB key or shape) must not make it megabytes long.
MAX_REASON_CHARS = 2000


def cap_reason(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """``reason`` cut to ``limit`` characters (with a note of how long it was).

    >>> cap_reason("x" * 10, limit=4)
    'xxxx... (10 characters in all)'
    """
    reason = str(reason)
    if len(reason) <= limit:
        return reason
    return f"{reason[:limit]}... ({len(reason)} characters in all)"


class PayloadError(ValueError):
    """A payload that does not fit the monitor's schema; ``reason`` is the human-readable why."""

    def __init__(self, reason: str):
        reason = cap_reason(reason)
        super().__init__(reason)
        self.reason = reason


_FP_DATATYPES = ("FP16", "FP32", "FP64")
_INT_DATATYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
V2_DATATYPES = ("BOOL",) + _INT_DATATYPES + _FP_DATATYPES + ("BYTES",)
_V2_DATATYPE_SET = frozenset(V2_DATATYPES)

# Types a JSON decoder produces for numbers; bool is excluded on purpose (type(True) is bool),
# so booleans take the careful path that turns them into 0.0 / 1.0.
_PLAIN_NUMBER_TYPES = frozenset((float, int))

# Below this many values a Python loop beats numpy's array construction + tolist round trip
# (measured on 4-wide rows: 8 rows 7.3 us loop vs 6.5 us numpy, 4 rows 4.2 vs 5.0).
_NUMPY_MIN_VALUES = 32

_LISTING_MAX = 8  # feature names shown in a width error before eliding the rest


class _Layout:
    """What parsing needs to know about a feature sequence, computed once per sequence."""

    __slots__ = ("names", "numerical", "width", "all_numerical", "name_set", "listing",
                 "numerical_positions", "categorical_positions")

    def __init__(self, features: Sequence[Any]):
        self.names = tuple(f.name for f in features)
        self.numerical = tuple(f.type == NUMERICAL for f in features)
        self.width = len(self.names)
        self.all_numerical = all(self.numerical)
        self.name_set = frozenset(self.names)
        shown = list(self.names[:_LISTING_MAX])
        if self.width > _LISTING_MAX:
            shown.append(f"... {self.width - _LISTING_MAX} more")
        self.listing = ", ".join(shown)
        self.numerical_positions = tuple(i for i, num in enumerate(self.numerical) if num)
        self.categorical_positions = tuple(i for i, num in enumerate(self.numerical) if not num)


# Layout cache keyed by the identity of a tuple of features (MonitorSpec.features is a tuple that
# lives as long as the monitor): an id lookup costs ~50 ns, hashing four dataclasses ~1 us.
# The tuple itself is kept in the entry, so its id cannot be reused while cached.
_LAYOUTS: dict[int, tuple[tuple, _Layout]] = {}
_LAYOUT_CACHE_MAX = 512


def _layout(features: Sequence[Any]) -> _Layout:
    if type(features) is tuple:
        entry = _LAYOUTS.get(id(features))
        if entry is not None and entry[0] is features:
            return entry[1]
        layout = _Layout(features)
        if len(_LAYOUTS) >= _LAYOUT_CACHE_MAX:
            _LAYOUTS.clear()
        _LAYOUTS[id(features)] = (features, layout)
    else:  # a list may be mutated later: never cache it
        layout = _Layout(features)
    if layout.width == 0:
        raise PayloadError("no features to parse into (the schema declares none)")
    return layout


class _Words:
    """Nouns for messages: a request has instances and features, a response predictions and outputs."""

    __slots__ = ("item", "field", "top", "tensor", "one_per_field")

    def __init__(self, item: str, field: str, top: str, tensor: str, one_per_field: str):
        self.item, self.field, self.top, self.tensor = item, field, top, tensor
        self.one_per_field = one_per_field


_REQUEST_WORDS = _Words("instance", "feature", "inputs", "input", "one input per feature")
_RESPONSE_WORDS = _Words("prediction", "output", "outputs", "output", "one output per prediction")
_ROW_WORDS = _Words("row", "feature", "rows", "column", "one column per feature")

#: V2 tensors that feed a table have rank 1 or 2; deeper shapes are refused before their nested
#: data is walked (recursively), so a hostile rank cannot exhaust the stack.
_MAX_RANK = 8


# ---------------------------------------------------------------------------------------------
# Values


def _show(value: Any) -> str:
    """A short, JSON-flavoured rendering of a bad value for a message."""
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (math.inf, -math.inf):
            return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _number(value: Any, item: int, name: str, w: _Words) -> float:
    """One numerical value, strictly: int, float or bool (as 0/1); finite; never a string."""
    t = type(value)
    if t is float:
        if value - value == 0.0:  # false exactly for NaN and +-inf
            return value
        raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {_show(value)} is not a finite number")
    if t is int:
        try:
            return float(value)
        except OverflowError:
            raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {_show(value)} is too large for a "
                               "64-bit float") from None
    if t is bool or isinstance(value, (bool, np.bool_)):
        return 1.0 if value else 0.0
    if value is None:
        raise PayloadError(f"{w.item} {item} {w.field} {name!r} is null: a numerical {w.field} needs a number")
    if isinstance(value, (int, float, np.integer, np.floating)):  # numpy scalars from dict bodies
        return _number(float(value) if isinstance(value, (float, np.floating)) else int(value), item, name, w)
    if isinstance(value, str):
        raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {_show(value)} is not a number")
    raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {_show(value)} is not a number "
                       f"(got {_kind(value)}, expected a single value)")


def _category(value: Any, item: int, name: str, w: _Words) -> str | None:
    """One categorical value: a string; integers and booleans become their str(); null is missing."""
    if type(value) is str or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bool, int, np.integer, np.bool_)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {_show(value)} is not a category "
                           "(expected a string, an integer or a boolean)")
    raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {_show(value)} is not a category "
                       f"(got {_kind(value)}, expected a single value)")


# ---------------------------------------------------------------------------------------------
# Instances (V1) -> rows


def _positional(instance: Any, item: int, layout: _Layout, w: _Words) -> Sequence[Any]:
    """The raw values of one instance in feature order (list, object or, for one feature, scalar)."""
    if type(instance) is dict:
        try:
            return [instance[name] for name in layout.names]
        except KeyError:
            values = []
            for name, numerical in zip(layout.names, layout.numerical):
                if name in instance:
                    values.append(instance[name])
                elif numerical:
                    raise PayloadError(f"{w.item} {item} lacks {w.field} {name!r}") from None
                else:  # an absent categorical key is a missing value, like null
                    values.append(None)
            return values
    if isinstance(instance, (list, tuple)):
        if len(instance) != layout.width:
            raise PayloadError(f"{w.item} {item} has {len(instance)} values, expected {layout.width} "
                               f"({layout.listing})")
        return instance
    if isinstance(instance, dict):  # a dict subclass from a Python caller
        return _positional(dict(instance), item, layout, w)
    if layout.width == 1:
        return [instance]
    raise PayloadError(f"{w.item} {item} is {_kind(instance)} ({_show(instance)}), expected a list of "
                       f"{layout.width} values ({layout.listing}) or an object keyed by {w.field} name")


def _convert(instance: Any, item: int, layout: _Layout, w: _Words) -> list:
    """One instance -> one row, with a precise error for the first thing wrong."""
    values = _positional(instance, item, layout, w)
    return [_number(v, item, name, w) if numerical else _category(v, item, name, w)
            for v, name, numerical in zip(values, layout.names, layout.numerical)]


def _numpy_rows(instances: list, layout: _Layout) -> list | None:
    """All-numerical big batch in one vectorised step, or None to fall back to the careful path.

    ``np.array`` without a dtype keeps strings as strings and nulls as objects, so a numeric
    result dtype proves every value is a plain number (strict: no numeric strings slip through).
    """
    try:
        array = np.array(instances)
    except (ValueError, TypeError, OverflowError):  # ragged rows, mixed nesting
        return None
    if array.dtype.kind not in "fiub":
        return None
    n, k = len(instances), layout.width
    if array.shape != (n, k):
        if k == 1 and array.shape == (n,):  # one feature sent as a flat list of scalars
            array = array.reshape(n, 1)
        else:
            return None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return None
    return array.astype(np.float64, copy=False).tolist()


def _rows(instances: list, layout: _Layout, w: _Words) -> list[list]:
    if layout.all_numerical:
        k = layout.width
        # Objects keyed by name are left to the loop: building positional lists first and then
        # an array measured no faster (10,000 x 4: 9.9 ms vs 9.4 ms).
        if len(instances) * k >= _NUMPY_MIN_VALUES and type(instances[0]) is not dict:
            rows = _numpy_rows(instances, layout)
            if rows is not None:
                return rows
        out = []
        append = out.append
        plain = _PLAIN_NUMBER_TYPES.issuperset
        for item, instance in enumerate(instances):
            # Fast path: a list of plain ints/floats of the right width whose sum is finite
            # (a sum is NaN/inf if any value is; an overflowing sum only costs the slow path).
            if type(instance) is list and len(instance) == k and plain(map(type, instance)):
                try:
                    row = list(map(float, instance))
                except OverflowError:
                    pass
                else:
                    if math.isfinite(sum(row)):
                        append(row)
                        continue
            append(_convert(instance, item, layout, w))
        return out
    return [_convert(instance, item, layout, w) for item, instance in enumerate(instances)]


def _v1(instances: Any, key: str, layout: _Layout, w: _Words) -> list[list]:
    if not isinstance(instances, list):
        raise PayloadError(f"'{key}' must be a list of {w.item}s, got {_kind(instances)}")
    if not instances:
        raise PayloadError(f"empty batch: '{key}' holds no {w.item}s")
    return _rows(instances, layout, w)


# ---------------------------------------------------------------------------------------------
# V2 / Open Inference Protocol tensors -> rows


def _looks_like_tensor(obj: Any, layout: _Layout) -> bool:
    """A V2 tensor object, as opposed to a V1 instance keyed by feature names."""
    return (type(obj) is dict and "data" in obj and ("datatype" in obj or "shape" in obj)
            and not layout.name_set.issubset(obj))


def _flatten(data: list, shape: list[int], depth: int, out: list, where: str) -> None:
    """Append nested ``data`` to ``out``, checking that its nesting mirrors ``shape``."""
    if len(data) != shape[depth]:
        raise PayloadError(f"{where}: nested data has {len(data)} entries at depth {depth}, "
                           f"shape {shape} says {shape[depth]}")
    if depth == len(shape) - 1:
        if any(isinstance(value, list) for value in data):
            raise PayloadError(f"{where}: nested data is deeper than shape {shape}")
        out.extend(data)
        return
    for sub in data:
        if not isinstance(sub, list):
            raise PayloadError(f"{where}: nested data is not as deep as shape {shape}")
        _flatten(sub, shape, depth + 1, out, where)


class _Tensor:
    __slots__ = ("index", "name", "datatype", "shape", "values", "where")

    def __init__(self, obj: Any, index: int, w: _Words):
        where = f"{w.top}[{index}]"
        if not isinstance(obj, dict):
            raise PayloadError(f"{where} is {_kind(obj)}, expected a tensor object "
                               "{name, shape, datatype, data}")
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise PayloadError(f"{where} lacks 'name' (a non-empty string)")
        where = f"{where} {name!r}"
        datatype = obj.get("datatype")
        if not isinstance(datatype, str) or datatype not in _V2_DATATYPE_SET:   # a list is unhashable
            if datatype is None:
                raise PayloadError(f"{where} lacks 'datatype'")
            raise PayloadError(f"{where}: datatype {_show(datatype)} is not an Open Inference Protocol "
                               f"datatype ({', '.join(V2_DATATYPES)})")
        shape = obj.get("shape")
        if (not isinstance(shape, list) or not shape
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise PayloadError(f"{where}: shape must be a non-empty list of non-negative integers, "
                               f"got {_show(shape)}")
        if len(shape) > _MAX_RANK:
            raise PayloadError(f"{where}: shape {_show(shape)} has {len(shape)} dimensions; a tensor "
                               "feeding the features has 1 or 2")
        data = obj.get("data")
        if not isinstance(data, list):
            if data is None:
                raise PayloadError(f"{where} lacks 'data'")
            raise PayloadError(f"{where}: data must be a list, got {_kind(data)}")
        size = math.prod(shape)
        if data and isinstance(data[0], list):
            flat: list = []
            _flatten(data, shape, 0, flat, where)
            data = flat
        elif len(data) != size:
            raise PayloadError(f"{where}: data has {len(data)} values but shape {shape} holds {size}")
        self.index, self.name, self.datatype, self.shape = index, name, datatype, shape
        self.values, self.where = data, where

    def check_feeds(self, name: str, numerical: bool, w: _Words) -> None:
        if numerical and self.datatype == "BYTES":
            raise PayloadError(f"{self.where}: datatype BYTES (strings) cannot feed numerical "
                               f"{w.field} {name!r}")
        if not numerical and self.datatype in _FP_DATATYPES:
            raise PayloadError(f"{self.where}: datatype {self.datatype} cannot feed categorical "
                               f"{w.field} {name!r} (use BYTES, an integer type or BOOL)")


def _v2(tensors: list, layout: _Layout, w: _Words) -> list[list]:
    parsed = [_Tensor(obj, i, w) for i, obj in enumerate(tensors)]
    k = layout.width
    if len(parsed) == 1:
        only = parsed[0]
        shape = only.shape
        if (len(shape) == 2 and shape[1] == k) or (k == 1 and len(shape) == 1):
            # Only two datatype/type pairs are incompatible: check the first feature of each kind.
            if only.datatype == "BYTES" and layout.numerical_positions:
                only.check_feeds(layout.names[layout.numerical_positions[0]], True, w)
            if only.datatype in _FP_DATATYPES and layout.categorical_positions:
                only.check_feeds(layout.names[layout.categorical_positions[0]], False, w)
            n = shape[0]
            if n == 0:
                raise PayloadError(f"empty batch: {only.where} has shape {shape}")
            values = only.values
            if k == 1:
                raw = [[v] for v in values]
            else:
                raw = [values[i:i + k] for i in range(0, n * k, k)]
            return _rows(raw, layout, w)
        if only.name not in layout.name_set:  # else: one input per feature, the others missing
            raise PayloadError(f"{only.where} has shape {shape}, expected [n, {k}] ({layout.listing})"
                               f"{' or [n]' if k == 1 else f' or {w.one_per_field} of shape [n]'}")
    by_name: dict[str, _Tensor] = {}
    for tensor in parsed:
        if tensor.name in by_name:
            raise PayloadError(f"{w.top}[{by_name[tensor.name].index}] and {w.top}[{tensor.index}] "
                               f"are both named {tensor.name!r}")
        by_name[tensor.name] = tensor
    columns = []
    n = None
    first = None
    for name, numerical in zip(layout.names, layout.numerical):
        tensor = by_name.get(name)
        if tensor is None:
            got = ", ".join(repr(t.name) for t in parsed)
            raise PayloadError(f"no {w.tensor} named {name!r} ({w.one_per_field} is expected; "
                               f"{w.top}: {got})")
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise PayloadError(f"{tensor.where} has shape {shape}, expected [n] or [n, 1] "
                               f"(one value per {w.item})")
        tensor.check_feeds(name, numerical, w)
        if n is None:
            n, first = shape[0], tensor
        elif shape[0] != n:
            raise PayloadError(f"{w.top} disagree on the batch size: {first.where} has {n} values, "
                               f"{tensor.where} has {shape[0]}")
        columns.append(tensor.values)
    if n == 0:
        raise PayloadError(f"empty batch: {first.where} has shape {first.shape}")
    raw = [list(values) for values in zip(*columns)]
    return _rows(raw, layout, w)


# ---------------------------------------------------------------------------------------------
# Entry points


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
        raise PayloadError(f"expected a JSON object ({what}), got {_kind(doc)}")
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
    modelmonitor.core.payloads.PayloadError: instance 0 has 3 values, expected 2 (age, city)
    """
    try:
        return _parse_request(body, features)
    except RecursionError:  # nesting deep enough to exhaust the stack is not a payload we read
        raise PayloadError("payload is nested too deeply to read") from None


def _parse_request(body: bytes | str | dict, features: Sequence[Any]) -> list[list]:
    doc = _load(body, "KServe request")
    layout = _layout(features)
    w = _REQUEST_WORDS
    if "instances" in doc:
        if "inputs" in doc:
            raise PayloadError("request has both 'instances' and 'inputs': send one of them")
        return _v1(doc["instances"], "instances", layout, w)
    if "inputs" in doc:
        inputs = doc["inputs"]
        if isinstance(inputs, list) and inputs and _looks_like_tensor(inputs[0], layout):
            return _v2(inputs, layout, w)
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
    layout = _layout(predictions)
    w = _RESPONSE_WORDS
    if "predictions" in doc:
        if "outputs" in doc:
            raise PayloadError("response has both 'predictions' and 'outputs': expected one of them")
        return _v1(doc["predictions"], "predictions", layout, w)
    if "outputs" in doc:
        outputs = doc["outputs"]
        if isinstance(outputs, list) and outputs and _looks_like_tensor(outputs[0], layout):
            return _v2(outputs, layout, w)
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
    modelmonitor.core.payloads.PayloadError: row 0 feature 'y': NaN is not a finite number
    """
    layout = _layout(features)
    n, k = len(rows), layout.width
    n_numerical = len(layout.numerical_positions)
    if n == 0:
        return np.empty((0, n_numerical), dtype=np.float64), [[] for _ in layout.categorical_positions]
    w = _ROW_WORDS
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
            if matrix.dtype.kind != "f" or np.isfinite(matrix).all():
                return matrix, []
        # Something is not a finite number: find it, and say which (or convert what is fine,
        # such as integers too large for int64).
        return np.array(_checked_numeric_rows(rows, layout, w), dtype=np.float64).reshape(n, k), []
    for item, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)):
            raise PayloadError(f"row {item} is {_kind(row)} ({_show(row)}), expected a list of {k} values")
        if len(row) != k:
            raise PayloadError(f"row {item} has {len(row)} values, expected {k} ({layout.listing})")
    columns = list(zip(*rows))
    if n_numerical:
        try:
            matrix = np.array([columns[j] for j in layout.numerical_positions])
        except (ValueError, TypeError, OverflowError, RecursionError):
            matrix = None
        if (matrix is None or matrix.dtype.kind not in "fiub" or matrix.shape != (n_numerical, n)
                or (matrix.dtype.kind == "f" and not np.isfinite(matrix).all())):
            matrix = np.array([[_number(v, item, layout.names[j], w) for item, v in enumerate(columns[j])]
                               for j in layout.numerical_positions], dtype=np.float64)
        matrix = np.ascontiguousarray(matrix.T, dtype=np.float64)
    else:
        matrix = np.empty((n, 0), dtype=np.float64)
    categorical = []
    for j in layout.categorical_positions:
        column = list(columns[j])
        if not all(type(v) is str or v is None for v in column):
            column = [_category(v, item, layout.names[j], w) for item, v in enumerate(column)]
        categorical.append(column)
    return matrix, categorical


def _checked_numeric_rows(rows: Sequence[Any], layout: _Layout, w: _Words) -> list[list[float]]:
    """All-numerical rows converted value by value (raises PayloadError on the first bad one)."""
    k = layout.width
    out = []
    for item, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)):
            raise PayloadError(f"row {item} is {_kind(row)} ({_show(row)}), expected a list of {k} values")
        if len(row) != k:
            raise PayloadError(f"row {item} has {len(row)} values, expected {k} ({layout.listing})")
        out.append([_number(v, item, name, w) for v, name in zip(row, layout.names)])
    return out
