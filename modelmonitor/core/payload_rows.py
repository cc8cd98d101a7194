"""What KServe V1 and V2 payload parsing share: the feature layout, the strict checks of one
value, instances -> rows, and the error type with its human-readable reason.

:mod:`modelmonitor.core.payloads` (the entry points, V1) and
:mod:`modelmonitor.core.payload_tensors` (V2 tensors) both build on this module; neither parses
a value on its own.

>>> from modelmonitor.core.spec import Feature
>>> layout = layout_of((Feature("x", "numerical", 0), Feature("c", "categorical", 1)))
>>> rows_of([[1, "a"], {"x": 2.5}], layout, REQUEST_WORDS)
[[1.0, 'a'], [2.5, None]]
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from modelmonitor.core.spec import NUMERICAL


#: A reason longer than this is cut: it travels in HTTP answers, dead letters and logs, and a
#: hostile payload (a 10 MB key or shape) must not make it megabytes long.
MAX_REASON_CHARS = 2000

#: Largest magnitude a numerical value may have. Statistics square and sum values (M2,
#: co-moments, Mahalanobis distances, z-scores), and a finite 1e308 overflows them to infinity,
#: which no JSON event can carry; no model feature is meaningfully beyond 1e100.
MAX_MAGNITUDE = 1e100


def in_range(array: np.ndarray) -> bool:
    """True when every value of a float array is a number within +-MAX_MAGNITUDE (NaN is not).

    >>> in_range(np.array([1.0, -1e100])), in_range(np.array([1e101])), in_range(np.array([np.nan]))
    (True, False, False)
    """
    return bool((np.abs(array) <= MAX_MAGNITUDE).all())


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


# Types a JSON decoder produces for numbers; bool is excluded on purpose (type(True) is bool),
# so booleans take the careful path that turns them into 0.0 / 1.0.
_PLAIN_NUMBER_TYPES = frozenset((float, int))

# Below this many values a Python loop beats numpy's array construction + tolist round trip
# (measured on 4-wide rows: 8 rows 7.3 us loop vs 6.5 us numpy, 4 rows 4.2 vs 5.0).
_NUMPY_MIN_VALUES = 32

_LISTING_MAX = 8  # feature names shown in a width error before eliding the rest


class Layout:
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
_LAYOUTS: dict[int, tuple[tuple, Layout]] = {}
_LAYOUT_CACHE_MAX = 512


def layout_of(features: Sequence[Any]) -> Layout:
    if type(features) is tuple:
        entry = _LAYOUTS.get(id(features))
        if entry is not None and entry[0] is features:
            return entry[1]
        layout = Layout(features)
        if len(_LAYOUTS) >= _LAYOUT_CACHE_MAX:
            _LAYOUTS.clear()
        _LAYOUTS[id(features)] = (features, layout)
    else:  # a list may be mutated later: never cache it
        layout = Layout(features)
    if layout.width == 0:
        raise PayloadError("no features to parse into (the schema declares none)")
    return layout


class Words:
    """Nouns for messages: a request has instances and features, a response predictions and outputs."""

    __slots__ = ("item", "field", "top", "tensor", "one_per_field")

    def __init__(self, item: str, field: str, top: str, tensor: str, one_per_field: str):
        self.item, self.field, self.top, self.tensor = item, field, top, tensor
        self.one_per_field = one_per_field


REQUEST_WORDS = Words("instance", "feature", "inputs", "input", "one input per feature")
RESPONSE_WORDS = Words("prediction", "output", "outputs", "output", "one output per prediction")
ROW_WORDS = Words("row", "feature", "rows", "column", "one column per feature")


# ---------------------------------------------------------------------------------------------
# Values


def show(value: Any) -> str:
    """A short, JSON-flavoured rendering of a bad value for a message."""
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (math.inf, -math.inf):
            return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def kind(value: Any) -> str:
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


def number(value: Any, item: int, name: str, w: Words) -> float:
    """One numerical value, strictly: int, float or bool (as 0/1); finite; never a string."""
    t = type(value)
    if t is float:
        if -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # false for NaN and +-inf too
            return value
        if value - value == 0.0:  # finite
            raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {show(value)} is beyond "
                               f"+-{MAX_MAGNITUDE:g}, the largest magnitude a value may have")
        raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {show(value)} is not a finite number")
    if t is int:
        try:
            return number(float(value), item, name, w)
        except OverflowError:
            raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {show(value)} is too large for a "
                               "64-bit float") from None
    if t is bool or isinstance(value, (bool, np.bool_)):
        return 1.0 if value else 0.0
    if value is None:
        raise PayloadError(f"{w.item} {item} {w.field} {name!r} is null: a numerical {w.field} needs a number")
    if isinstance(value, (int, float, np.integer, np.floating)):  # numpy scalars from dict bodies
        return number(float(value) if isinstance(value, (float, np.floating)) else int(value), item, name, w)
    if isinstance(value, str):
        raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {show(value)} is not a number")
    raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {show(value)} is not a number "
                       f"(got {kind(value)}, expected a single value)")


def category(value: Any, item: int, name: str, w: Words) -> str | None:
    """One categorical value: a string; integers and booleans become their str(); null is missing."""
    if type(value) is str or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bool, int, np.integer, np.bool_)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {show(value)} is not a category "
                           "(expected a string, an integer or a boolean)")
    raise PayloadError(f"{w.item} {item} {w.field} {name!r}: {show(value)} is not a category "
                       f"(got {kind(value)}, expected a single value)")


# ---------------------------------------------------------------------------------------------
# Instances (V1) -> rows


def _positional(instance: Any, item: int, layout: Layout, w: Words) -> Sequence[Any]:
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
    raise PayloadError(f"{w.item} {item} is {kind(instance)} ({show(instance)}), expected a list of "
                       f"{layout.width} values ({layout.listing}) or an object keyed by {w.field} name")


def _convert(instance: Any, item: int, layout: Layout, w: Words) -> list:
    """One instance -> one row, with a precise error for the first thing wrong."""
    values = _positional(instance, item, layout, w)
    return [number(v, item, name, w) if numerical else category(v, item, name, w)
            for v, name, numerical in zip(values, layout.names, layout.numerical)]


def _numpy_rows(instances: list, layout: Layout) -> list | None:
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
    if array.dtype.kind == "f" and not in_range(array):
        return None
    return array.astype(np.float64, copy=False).tolist()


def rows_of(instances: list, layout: Layout, w: Words) -> list[list]:
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
                    # (a sum is NaN/inf if any value is; min/max bound the magnitude)
                    if math.isfinite(sum(row)) and -MAX_MAGNITUDE <= min(row, default=0.0) \
                            and max(row, default=0.0) <= MAX_MAGNITUDE:
                        append(row)
                        continue
            append(_convert(instance, item, layout, w))
        return out
    return [_convert(instance, item, layout, w) for item, instance in enumerate(instances)]

