"""Errors of the local broker."""
from __future__ import annotations


class BrokerConfigError(ValueError):
    """Broker/Trigger YAML that cannot be used (the message names the document and field)."""


class UnsupportedFilterError(BrokerConfigError):
    """A Trigger filter dialect the local broker does not implement (cesql)."""


class BrokerClosedError(RuntimeError):
    """An event was published to a broker that is not running."""


class BrokerUnavailableError(BrokerClosedError):
    """The broker cannot record an event now (its log is full or unreachable): HTTP 503."""
