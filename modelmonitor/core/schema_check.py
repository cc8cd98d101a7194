"""Check event data against the published JSON Schemas in ``modelmonitor/core/schemas/``.

Each emitted type ``T`` has the draft 2020-12 schema ``modelmonitor/core/schemas/T.json`` whose
``$id`` is the event's ``dataschema`` (``https://modelmonitor.io/schemas/T.json``). Schemas
refer to each other by relative ``$ref`` (``drift.measured`` reuses the ``window`` definition of
``window.closed``), so all of them are loaded into one registry. Validators are built once per
type and cached.

On top of the schema, :func:`validate_event_data` checks the few cross-field rules JSON Schema
cannot express (a row has one value per feature, a histogram has one count more than it has
edges, ...). Every failure raises :class:`EventDataError`, a ``ValueError`` whose ``path`` names
the offending field.

>>> validate_event_data("io.modelmonitor.instances.late", {
...     "monitor": "iris", "requestId": "r1", "eventTimeMs": 1000, "watermarkMs": 20000,
...     "lateWindows": [{"startMs": 0, "endMs": 15000}], "instances": 2})
>>> try:
...     validate_event_data("io.modelmonitor.instances.late", {
...         "monitor": "iris", "requestId": "r1", "eventTimeMs": 1000, "watermarkMs": 20000,
...         "lateWindows": [{"startMs": 0, "endMs": "15000"}], "instances": 2})
... except EventDataError as err:
...     print(err.path)
data.lateWindows[0].endMs
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from modelmonitor.core import events as _events

__all__ = ["EventDataError", "known_types", "schema_for", "validate_event_data", "validate_event",
           "format_path", "ORIGINAL_DATA_MAX_BYTES"]

ORIGINAL_DATA_MAX_BYTES = 64 * 1024
"""Upper bound of a dead letter's ``originalData`` in UTF-8 bytes (the schema bounds characters)."""

_SOURCE_RE = re.compile(r"^/modelmonitor/[^/]+/(?P<monitor>[^/]+)/[^/]+$")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EventDataError(ValueError):
    """Event data that breaks its type's contract; ``path`` is where, e.g. ``data.window.endMs``.

    >>> str(EventDataError("io.modelmonitor.window.closed", "data.count", "-1 is less than 0"))
    'io.modelmonitor.window.closed: data.count: -1 is less than 0'
    """

    def __init__(self, event_type: str, path: str, reason: str):
        super().__init__(f"{event_type}: {path}: {reason}")
        self.event_type = event_type
        self.path = path
        self.reason = reason


def format_path(parts, root: str = "data") -> str:
    """Readable path from JSON keys and indices: identifiers dotted, other keys quoted.

    >>> format_path(["features", "petal width", "histogram", "counts", 1])
    'data.features["petal width"].histogram.counts[1]'
    """
    out = root
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER_RE.match(part):
            out += f".{part}"
        else:
            out += "[" + json.dumps(part) + "]"
    return out


@functools.lru_cache(maxsize=1)
def _schemas() -> dict[str, dict]:
    """Every packaged schema by event type (the file name without ``.json``)."""
    found = {}
    for entry in resources.files("modelmonitor.core").joinpath("schemas").iterdir():
        if entry.name.endswith(".json"):
            found[entry.name[:-len(".json")]] = json.loads(entry.read_text(encoding="utf-8"))
    return found


@functools.lru_cache(maxsize=1)
def _registry() -> Registry:
    pairs = [(schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012))
             for schema in _schemas().values()]
    return Registry().with_resources(pairs)


def known_types() -> tuple[str, ...]:
    """Event types that have a packaged schema, sorted.

    >>> "io.modelmonitor.window.closed" in known_types()
    True
    """
    return tuple(sorted(_schemas()))


def schema_for(event_type: str) -> dict:
    """The JSON Schema document of ``event_type``'s data (raises ``ValueError`` if there is none).

    >>> schema_for("io.modelmonitor.drift.detected")["$id"]
    'https://modelmonitor.io/schemas/io.modelmonitor.drift.detected.json'
    """
    try:
        return _schemas()[event_type]
    except KeyError:
        raise EventDataError(event_type, "type", "no JSON Schema for this event type "
                             f"(known: {', '.join(known_types())})") from None


@functools.lru_cache(maxsize=None)
def _validator(event_type: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema_for(event_type), registry=_registry())


def validate_event_data(event_type: str, data: Any) -> None:
    """Raise :class:`EventDataError` unless ``data`` is valid ``event_type`` data.

    The schema is checked first; the error reported is jsonschema's best match (the deepest,
    most specific one). Then the cross-field rules of the type are checked.

    >>> window = {"startMs": 0, "endMs": 15000, "start": "1970-01-01T00:00:00.000Z",
    ...           "end": "1970-01-01T00:00:15.000Z"}
    >>> data = {"monitor": "iris", "window": window, "count": -1, "late": 0, "watermarkMs": 15000,
    ...         "closedAtMs": 15001, "features": {}, "covariance": None, "correlation": None}
    >>> validate_event_data("io.modelmonitor.window.closed", data)
    Traceback (most recent call last):
    ...
    modelmonitor.core.schema_check.EventDataError: io.modelmonitor.window.closed: data.count: -1 is less than the minimum of 0
    """
    error = best_match(_validator(event_type).iter_errors(data))
    if error is not None:
        parts = list(error.absolute_path)
        reason = error.message
        if error.validator == "required":
            # Name the missing field itself, not just the object that lacks it.
            missing = [name for name in error.validator_value if name not in error.instance]
            parts.append(missing[0])
            reason = "required field is missing"
        raise EventDataError(event_type, format_path(parts), reason)
    check = _CROSS_FIELD_CHECKS.get(_base_type(event_type))
    if check is not None:
        check(event_type, data)


def validate_event(event: Any) -> None:
    """Validate a whole emitted CloudEvent: attributes and data.

    ``event`` is a structured-mode JSON document (a dict) or an :class:`~modelmonitor.core.events.Event`.
    Checks that the type has a schema, ``source`` is ``/modelmonitor/<ns>/<monitor>/<role>``,
    the ``monitor`` extension equals ``data.monitor`` and names the same monitor as the source,
    ``dataschema`` is the type's schema URL, ``datacontenttype`` is JSON, ``id`` is not empty.
    Attribute errors have paths ``attributes.<name>``.

    >>> ev = _events.make_event("io.modelmonitor.instances.late", "iris", "iris/x/late", {
    ...     "monitor": "iris", "requestId": "x", "eventTimeMs": 1000, "watermarkMs": 20000,
    ...     "lateWindows": [{"startMs": 0, "endMs": 15000}], "instances": 1},
    ...     source="/modelmonitor/default/iris/aggregate")
    >>> validate_event(ev)
    >>> doc = dict(ev.get_attributes(), data=ev.data)
    >>> doc["monitor"] = "other"
    >>> validate_event(doc)
    Traceback (most recent call last):
    ...
    modelmonitor.core.schema_check.EventDataError: io.modelmonitor.instances.late: attributes.monitor: 'other' differs from data.monitor 'iris'
    """
    if isinstance(event, Mapping):
        attributes = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
        data = event.get("data")
    else:
        attributes = dict(event.get_attributes())
        data = event.data
    event_type = attributes.get("type")
    if not isinstance(event_type, str) or event_type not in _schemas():
        raise EventDataError(str(event_type), "attributes.type",
                             f"no JSON Schema for this event type (known: {', '.join(known_types())})")

    def fail(name: str, reason: str) -> None:
        raise EventDataError(event_type, f"attributes.{name}", reason)

    if not isinstance(attributes.get("id"), str) or not attributes["id"]:
        fail("id", "missing or empty")
    source = attributes.get("source")
    match = _SOURCE_RE.match(source) if isinstance(source, str) else None
    if match is None:
        fail("source", f"{source!r} is not /modelmonitor/<namespace>/<monitor>/<role>")
    if attributes.get("datacontenttype") != "application/json":
        fail("datacontenttype", f"{attributes.get('datacontenttype')!r} is not 'application/json'")
    expected_schema = _events.SCHEMA_BASE + event_type + ".json"
    if attributes.get("dataschema") != expected_schema:
        fail("dataschema", f"{attributes.get('dataschema')!r} is not {expected_schema!r}")
    validate_event_data(event_type, data)
    monitor = attributes.get("monitor")
    if monitor != data["monitor"]:
        fail("monitor", f"{monitor!r} differs from data.monitor {data['monitor']!r}")
    if match.group("monitor") != monitor:
        fail("source", f"{source!r} names monitor {match.group('monitor')!r}, not {monitor!r}")


# ---------------------------------------------------------------------------------------------
# Cross-field rules (run only on data that already passed the schema, so shapes are known)
# ---------------------------------------------------------------------------------------------

def _base_type(event_type: str) -> str:
    """The type without a version suffix: a ``.v2`` schema keeps the v1 cross-field rules
    unless a check is registered for the suffixed type itself."""
    if event_type in _CROSS_FIELD_CHECKS:
        return event_type
    return re.sub(r"\.v[0-9]+$", "", event_type)


def _check_instances(event_type: str, data: dict) -> None:
    width = len(data["features"])
    for i, row in enumerate(data["instances"]):
        if len(row) != width:
            raise EventDataError(event_type, f"data.instances[{i}]",
                                 f"row has {len(row)} values but there are {width} features")
    if _events.rfc3339_to_ms(data["eventTime"]) != data["eventTimeMs"]:
        raise EventDataError(event_type, "data.eventTime",
                             f"{data['eventTime']!r} is not eventTimeMs {data['eventTimeMs']}")


def _check_window(event_type: str, window: dict) -> None:
    if window["endMs"] <= window["startMs"]:
        raise EventDataError(event_type, "data.window.endMs",
                             f"{window['endMs']} is not after startMs {window['startMs']}")
    for key in ("start", "end"):
        if _events.rfc3339_to_ms(window[key]) != window[key + "Ms"]:
            raise EventDataError(event_type, f"data.window.{key}",
                                 f"{window[key]!r} is not {key}Ms {window[key + 'Ms']}")


def _check_matrix(event_type: str, path: str, matrix: dict | None) -> None:
    if matrix is None:
        return
    size = len(matrix["features"])
    if len(matrix["matrix"]) != size:
        raise EventDataError(event_type, f"{path}.matrix",
                             f"{len(matrix['matrix'])} rows for {size} features")
    for i, row in enumerate(matrix["matrix"]):
        if len(row) != size:
            raise EventDataError(event_type, f"{path}.matrix[{i}]", f"{len(row)} columns for {size} features")


def _check_window_closed(event_type: str, data: dict) -> None:
    _check_window(event_type, data["window"])
    for name, stats in data["features"].items():
        path = format_path(["features", name])
        histogram = stats.get("histogram") if "categories" not in stats else None
        if histogram is None:
            continue
        edges, counts = histogram["edges"], histogram["counts"]
        if len(counts) != len(edges) + 1:
            raise EventDataError(event_type, f"{path}.histogram.counts",
                                 f"{len(counts)} counts for {len(edges)} edges (expected underflow, "
                                 f"{len(edges) - 1} bins, overflow = {len(edges) + 1})")
        if any(b < a for a, b in zip(edges, edges[1:])):
            raise EventDataError(event_type, f"{path}.histogram.edges", "edges must not decrease")
        # Every counted value lands in exactly one bin (under/overflow included).
        if sum(counts) != stats["count"]:
            raise EventDataError(event_type, f"{path}.histogram.counts",
                                 f"counts sum to {sum(counts)} but count is {stats['count']}")
    _check_matrix(event_type, "data.covariance", data["covariance"])
    _check_matrix(event_type, "data.correlation", data["correlation"])


def _check_drift_measured(event_type: str, data: dict) -> None:
    _check_window(event_type, data["window"])


def _check_drift_detected(event_type: str, data: dict) -> None:
    _check_window(event_type, data["window"])
    for i, name in enumerate(data["driftedFeatures"]):
        scores = data["features"].get(name, {})
        if not any(score["drifted"] for score in scores.values()):
            raise EventDataError(event_type, f"data.driftedFeatures[{i}]",
                                 f"{name!r} has no drifted score in data.features")
    for i, name in enumerate(data.get("driftedMultivariate") or ()):
        if not (data.get("multivariate") or {}).get(name, {}).get("drifted"):
            raise EventDataError(event_type, f"data.driftedMultivariate[{i}]",
                                 f"{name!r} has no drifted score in data.multivariate")


def _check_late(event_type: str, data: dict) -> None:
    for i, span in enumerate(data["lateWindows"]):
        if span["endMs"] <= span["startMs"]:
            raise EventDataError(event_type, f"data.lateWindows[{i}].endMs",
                                 f"{span['endMs']} is not after startMs {span['startMs']}")
        # Late means the window had already ended at the watermark (DESIGN section 3).
        if span["endMs"] > data["watermarkMs"]:
            raise EventDataError(event_type, f"data.lateWindows[{i}].endMs",
                                 f"{span['endMs']} is after watermarkMs {data['watermarkMs']}: not late")


def _check_rejected(event_type: str, data: dict) -> None:
    size = len(data["originalData"].encode("utf-8"))
    if size > ORIGINAL_DATA_MAX_BYTES:
        raise EventDataError(event_type, "data.originalData",
                             f"{size} bytes of UTF-8, more than {ORIGINAL_DATA_MAX_BYTES}")


_CROSS_FIELD_CHECKS = {
    _events.INSTANCES: _check_instances,
    _events.WINDOW_CLOSED: _check_window_closed,
    _events.DRIFT_MEASURED: _check_drift_measured,
    _events.DRIFT_DETECTED: _check_drift_detected,
    _events.LATE_INSTANCES: _check_late,
    _events.DEAD_LETTER: _check_rejected,
}
