"""Trigger filters: the legacy `filter.attributes` and the newer `filters` dialects (exact, prefix,
suffix, all, any, not; cesql is refused with a clear error)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from modelmonitor.core.events import Event

from modelmonitor.local.broker.errors import BrokerConfigError, UnsupportedFilterError


def event_attributes(event: Event | Mapping[str, Any]) -> dict[str, str]:
    """Every context attribute and extension of an event as strings (what filters compare).

    >>> event_attributes(Event({"type": "t", "source": "s", "id": "1", "monitor": "m"}))["monitor"]
    'm'
    """
    attrs = event.get_attributes() if isinstance(event, Event) else event
    return {k: v if isinstance(v, str) else str(v) for k, v in attrs.items()
            if v is not None and k != "data"}


class EventFilter:
    """Base of the filter dialects: `matches(attributes) -> bool`."""

    def matches(self, attrs: Mapping[str, str]) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class MatchAll(EventFilter):
    """A Trigger without filter receives every event."""

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return True


@dataclass(frozen=True)
class AttributesFilter(EventFilter):
    """Legacy `filter.attributes`: every pair must match exactly; an empty value means any.

    >>> AttributesFilter({"type": "a", "monitor": ""}).matches({"type": "a"})
    True
    """
    attributes: Mapping[str, str]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return all(want == "" or attrs.get(key) == want for key, want in self.attributes.items())


@dataclass(frozen=True)
class ExactFilter(EventFilter):
    """`exact`: each named attribute exists and equals the value."""
    attributes: Mapping[str, str]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return all(attrs.get(key) == want for key, want in self.attributes.items())


@dataclass(frozen=True)
class PrefixFilter(EventFilter):
    """`prefix`: each named attribute exists and starts with the value.

    >>> PrefixFilter({"type": "io.modelmonitor."}).matches({"type": "io.modelmonitor.drift.detected"})
    True
    """
    attributes: Mapping[str, str]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return all(key in attrs and attrs[key].startswith(want)
                   for key, want in self.attributes.items())


@dataclass(frozen=True)
class SuffixFilter(EventFilter):
    """`suffix`: each named attribute exists and ends with the value."""
    attributes: Mapping[str, str]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return all(key in attrs and attrs[key].endswith(want)
                   for key, want in self.attributes.items())


@dataclass(frozen=True)
class AllFilter(EventFilter):
    """`all`: every nested filter matches (an empty list matches everything)."""
    filters: tuple[EventFilter, ...]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return all(f.matches(attrs) for f in self.filters)


@dataclass(frozen=True)
class AnyFilter(EventFilter):
    """`any`: at least one nested filter matches."""
    filters: tuple[EventFilter, ...]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return any(f.matches(attrs) for f in self.filters)


@dataclass(frozen=True)
class NotFilter(EventFilter):
    """`not`: the nested filter does not match."""
    filter: EventFilter

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return not self.filter.matches(attrs)


def _string_map(body: Any, where: str, allow_empty_values: bool) -> dict[str, str]:
    if not isinstance(body, Mapping) or not body:
        raise BrokerConfigError(f"{where} must be a non-empty mapping of attribute: value")
    out = {}
    for key, value in body.items():
        if not isinstance(value, str) or (not allow_empty_values and value == ""):
            raise BrokerConfigError(f"{where}.{key} must be a non-empty string, got {value!r}")
        out[str(key).lower()] = value
    return out


def parse_filter(doc: Any, where: str = "filters") -> EventFilter:
    """One entry of a Trigger's `spec.filters` (exactly one dialect per entry).

    >>> parse_filter({"any": [{"exact": {"type": "a"}}, {"suffix": {"type": ".b"}}]}).matches({"type": "x.b"})
    True
    >>> parse_filter({"cesql": "type = 'a'"})
    Traceback (most recent call last):
    ...
    modelmonitor.local.broker.errors.UnsupportedFilterError: filters: the cesql dialect is not supported by the local broker; use exact, prefix, suffix, all, any or not
    """
    if not isinstance(doc, Mapping) or len(doc) != 1:
        keys = sorted(doc) if isinstance(doc, Mapping) else type(doc).__name__
        raise BrokerConfigError(
            f"{where}: each filter needs exactly one dialect (exact, prefix, suffix, all, any, "
            f"not, cesql), got {keys}")
    (dialect, body), = doc.items()
    if dialect == "exact":
        return ExactFilter(_string_map(body, f"{where}.exact", allow_empty_values=True))
    if dialect == "prefix":
        return PrefixFilter(_string_map(body, f"{where}.prefix", allow_empty_values=False))
    if dialect == "suffix":
        return SuffixFilter(_string_map(body, f"{where}.suffix", allow_empty_values=False))
    if dialect in ("all", "any"):
        if not isinstance(body, list):
            raise BrokerConfigError(f"{where}.{dialect} must be a list of filters")
        nested = tuple(parse_filter(d, f"{where}.{dialect}[{i}]") for i, d in enumerate(body))
        return AllFilter(nested) if dialect == "all" else AnyFilter(nested)
    if dialect == "not":
        return NotFilter(parse_filter(body, f"{where}.not"))
    if dialect == "cesql":
        raise UnsupportedFilterError(
            f"{where}: the cesql dialect is not supported by the local broker; "
            f"use exact, prefix, suffix, all, any or not")
    raise BrokerConfigError(f"{where}: unknown filter dialect {dialect!r}")
