"""Local Knative-Broker look-alike for `modelmonitor run` (one machine, no Kubernetes).

It reads the same Broker / Trigger YAML as the cluster (`eventing/`) and behaves like a Knative
broker as far as the functions can tell:

* **Ingress**: HTTP POST of a CloudEvent (binary or structured mode) at `/` or at
  `/<namespace>/<broker>` (the Knative broker ingress path, so a KServe logger URL or a
  function's K_SINK can point here). 202 when queued, 400 for a body that is no CloudEvent,
  404 for another path, 413 above `max_body_bytes`.
* **Triggers**: `spec.filter.attributes` (exact match, attributes and extensions; an empty
  value matches anything) or the newer `spec.filters` (exact, prefix, suffix, all, any, not;
  cesql is refused with a clear error). When `filters` is given, `filter` is ignored, as in
  Knative.
* **Delivery**: each matching Trigger gets its own delivery, POSTed in binary mode with
  `Prefer: reply` and the Trigger's timeout, by a pool of worker threads per Trigger (unordered,
  concurrent) or by one worker when the Trigger carries
  `kafka.eventing.knative.dev/delivery.order: ordered` (one at a time, in arrival order).
* **Replies**: a 2xx answer other than 202 that carries a CloudEvent is published to the broker
  again and matched against *all* Triggers. An internal hop count (Knative's old
  `knativebrokerttl` idea, kept out of the event itself) stops reply loops after `max_hops`.
* **Failures**: connection errors, timeouts, 404, 408, 409, 429 and 5xx are retried `retry`
  times, waiting `backoff_delay(policy, delay, attempt)`; a non-retryable status or exhausted
  retries send the event to the dead-letter sink with the `knativeerrordest`,
  `knativeerrorcode` and `knativeerrordata` extensions, or drop it with a log line.
* **Delivery spec**: a Trigger's own fields win, field by field, over the Broker's
  `spec.delivery`, which wins over Knative's defaults (10 retries, exponential, PT0.2S); the
  request timeout defaults to 30 s here.

Example (a subscriber given by URI):

>>> triggers = load_triggers([{
...     "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
...     "metadata": {"name": "to-ingest"},
...     "spec": {"broker": "default",
...              "filter": {"attributes": {"type": "org.kubeflow.serving.inference.request"}},
...              "subscriber": {"uri": "http://127.0.0.1:9/"},
...              "delivery": {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.5S"}}}])
>>> t = triggers[0]
>>> t.name, t.subscriber.uri, t.delivery.retry, t.delivery.backoff_delay
('to-ingest', 'http://127.0.0.1:9/', 3, 0.5)
>>> t.matches({"type": "org.kubeflow.serving.inference.request", "source": "x", "id": "1"})
True
>>> broker = LocalBroker(triggers)     # then broker.start(), broker.url, broker.stop()
"""
from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
import queue
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import urllib3
import yaml
from cloudevents import exceptions as ce_exceptions
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http

log = logging.getLogger(__name__)

ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"
ERROR_DEST = "knativeerrordest"
ERROR_CODE = "knativeerrorcode"
ERROR_DATA = "knativeerrordata"
#: How much of a failed response body goes (base64) into `knativeerrordata`.
ERROR_DATA_LIMIT = 1024
#: Statuses Knative retries besides every 5xx (and connection errors / timeouts).
RETRYABLE_4XX = frozenset({404, 408, 409, 429})


class BrokerConfigError(ValueError):
    """Broker/Trigger YAML that cannot be used (the message names the document and field)."""


class UnsupportedFilterError(BrokerConfigError):
    """A Trigger filter dialect the local broker does not implement (cesql)."""


class BrokerClosedError(RuntimeError):
    """An event was published to a broker that is not running."""


# ---------------------------------------------------------------------------------------------
# Durations and backoff
# ---------------------------------------------------------------------------------------------

_NUM = r"(\d+(?:[.,]\d+)?)"
_DURATION_RE = re.compile(
    rf"^P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?"
    rf"(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?$")


def parse_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration as Knative delivery specs write them.

    Weeks, days, hours, minutes and (fractional) seconds are accepted; years and months are
    refused because they have no fixed length.

    >>> parse_duration("PT0.2S"), parse_duration("PT1M30S"), parse_duration("P1DT1H")
    (0.2, 90.0, 90000.0)
    >>> parse_duration("0.2s")
    Traceback (most recent call last):
    ...
    ValueError: '0.2s' is not an ISO-8601 duration (e.g. PT0.2S, PT10S, PT1M)
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an ISO-8601 duration string (e.g. PT0.2S)")
    match = _DURATION_RE.match(text.strip().upper())
    if not match or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise ValueError(f"{text!r} is not an ISO-8601 duration (e.g. PT0.2S, PT10S, PT1M)")
    years, months, weeks, days, hours, minutes, seconds = (
        float(g.replace(",", ".")) if g else 0.0 for g in match.groups())
    if years or months:
        raise ValueError(f"{text!r}: years and months have no fixed length; use days (P30D)")
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def backoff_delay(policy: str, delay: float, attempt: int, maximum: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry), as Knative:
    linear `delay * attempt`, exponential `delay * 2**attempt`, capped by `maximum` (the
    `backoffMax` field) when given.

    >>> [backoff_delay("linear", 0.25, n) for n in (1, 2, 3)]
    [0.25, 0.5, 0.75]
    >>> [backoff_delay("exponential", 0.25, n) for n in (1, 2, 3)]
    [0.5, 1.0, 2.0]
    >>> backoff_delay("exponential", 1.0, 10, maximum=60.0)
    60.0
    """
    if attempt < 1:
        raise ValueError(f"retry attempts are numbered from 1, got {attempt}")
    if policy == "linear":
        wait = delay * attempt
    elif policy == "exponential":
        wait = delay * (2 ** attempt)
    else:
        raise ValueError(f"backoffPolicy must be 'linear' or 'exponential', got {policy!r}")
    return min(wait, maximum) if maximum is not None else wait


# ---------------------------------------------------------------------------------------------
# Destinations and delivery specs
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Destination:
    """A Knative Destination: an absolute `uri`, or a `ref` (kind/name, resolved by the broker's
    name -> URL mapping or an in-process sink), optionally with a relative `uri` appended.

    >>> Destination.from_doc({"ref": {"kind": "Service", "name": "ingest"}}, "t").describe()
    'Service/ingest'
    """
    uri: str | None = None
    ref_kind: str | None = None
    ref_name: str | None = None
    ref_namespace: str | None = None
    ref_api_version: str | None = None

    @classmethod
    def from_doc(cls, doc: Any, where: str) -> "Destination":
        if not isinstance(doc, Mapping):
            raise BrokerConfigError(f"{where}: expected a destination with 'uri' or 'ref'")
        uri = doc.get("uri")
        ref = doc.get("ref")
        if uri is not None and not isinstance(uri, str):
            raise BrokerConfigError(f"{where}.uri must be a string")
        if ref is None:
            if not uri:
                raise BrokerConfigError(f"{where}: a destination needs 'uri' or 'ref'")
            parsed = urllib.parse.urlparse(uri)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise BrokerConfigError(f"{where}.uri must be an absolute http(s) URL, got {uri!r}")
            return cls(uri=uri)
        if not isinstance(ref, Mapping) or not ref.get("name"):
            raise BrokerConfigError(f"{where}.ref needs at least a 'name'")
        return cls(uri=uri or None, ref_kind=ref.get("kind"), ref_name=str(ref["name"]),
                   ref_namespace=ref.get("namespace"), ref_api_version=ref.get("apiVersion"))

    def describe(self) -> str:
        if self.ref_name:
            ref = f"{self.ref_kind or '?'}/{self.ref_name}"
            return ref + (f" + {self.uri}" if self.uri else "")
        return str(self.uri)


@dataclass(frozen=True)
class DeliverySpec:
    """Knative `delivery`: fields left None fall back to the next level (see `merged_over`).

    >>> own = DeliverySpec(retry=2)
    >>> own.merged_over(DEFAULT_DELIVERY).retry, own.merged_over(DEFAULT_DELIVERY).backoff_policy
    (2, 'exponential')
    """
    retry: int | None = None
    backoff_policy: str | None = None
    backoff_delay: float | None = None
    backoff_max: float | None = None
    timeout: float | None = None
    dead_letter_sink: Destination | None = None

    @classmethod
    def from_doc(cls, doc: Any, where: str) -> "DeliverySpec":
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise BrokerConfigError(f"{where} must be a mapping")
        retry = doc.get("retry")
        if retry is not None and (not isinstance(retry, int) or isinstance(retry, bool)
                                  or retry < 0):
            raise BrokerConfigError(f"{where}.retry must be a non-negative integer, got {retry!r}")
        policy = doc.get("backoffPolicy")
        if policy is not None and policy not in ("linear", "exponential"):
            raise BrokerConfigError(
                f"{where}.backoffPolicy must be 'linear' or 'exponential', got {policy!r}")

        def duration(key: str) -> float | None:
            if doc.get(key) is None:
                return None
            try:
                return parse_duration(doc[key])
            except ValueError as err:
                raise BrokerConfigError(f"{where}.{key}: {err}") from None

        dls = doc.get("deadLetterSink")
        return cls(retry=retry, backoff_policy=policy, backoff_delay=duration("backoffDelay"),
                   backoff_max=duration("backoffMax"), timeout=duration("timeout"),
                   dead_letter_sink=(Destination.from_doc(dls, f"{where}.deadLetterSink")
                                     if dls is not None else None))

    def merged_over(self, fallback: "DeliverySpec | None") -> "DeliverySpec":
        """This spec with every unset field taken from `fallback`."""
        if fallback is None:
            return self
        return DeliverySpec(**{
            f.name: getattr(self, f.name) if getattr(self, f.name) is not None
            else getattr(fallback, f.name)
            for f in dataclasses.fields(self)})


#: Knative's defaults for a broker without a delivery spec; the timeout is this broker's choice
#: (a hung subscriber must not hold a worker thread forever).
DEFAULT_DELIVERY = DeliverySpec(retry=10, backoff_policy="exponential", backoff_delay=0.2,
                                backoff_max=None, timeout=30.0, dead_letter_sink=None)


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------

def event_attributes(event: CloudEvent | Mapping[str, Any]) -> dict[str, str]:
    """Every context attribute and extension of an event as strings (what filters compare).

    >>> event_attributes(CloudEvent({"type": "t", "source": "s", "id": "1", "monitor": "m"}))["monitor"]
    'm'
    """
    attrs = event.get_attributes() if isinstance(event, CloudEvent) else event
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
    modelmonitor.local.broker.UnsupportedFilterError: filters: the cesql dialect is not supported by the local broker; use exact, prefix, suffix, all, any or not
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


# ---------------------------------------------------------------------------------------------
# Triggers and YAML
# ---------------------------------------------------------------------------------------------

@dataclass
class Trigger:
    """A Knative Trigger: which events (filter) go where (subscriber) and how (delivery)."""
    name: str
    broker: str
    subscriber: Destination
    filter: EventFilter = field(default_factory=MatchAll)
    delivery: DeliverySpec = field(default_factory=DeliverySpec)
    namespace: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def ordered(self) -> bool:
        """True when the Kafka broker's ordered delivery annotation is set."""
        return str(self.annotations.get(ORDER_ANNOTATION, "unordered")).lower() == "ordered"

    def matches(self, event: CloudEvent | Mapping[str, Any]) -> bool:
        attrs = event_attributes(event) if isinstance(event, CloudEvent) else event
        return self.filter.matches(attrs)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], origin: str = "") -> "Trigger":
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        where = f"Trigger {name or '?'}" + (f" ({origin})" if origin else "")
        if not name:
            raise BrokerConfigError(f"{where}: metadata.name is missing")
        spec = doc.get("spec")
        if not isinstance(spec, Mapping):
            raise BrokerConfigError(f"{where}: spec is missing")
        broker = spec.get("broker")
        if not broker:
            raise BrokerConfigError(f"{where}: spec.broker is missing")
        if "subscriber" not in spec:
            raise BrokerConfigError(f"{where}: spec.subscriber is missing")
        subscriber = Destination.from_doc(spec["subscriber"], f"{where}: spec.subscriber")
        filters = spec.get("filters")
        event_filter: EventFilter
        if filters:
            # Knative ignores `filter` when `filters` is set.
            if not isinstance(filters, list):
                raise BrokerConfigError(f"{where}: spec.filters must be a list")
            event_filter = AllFilter(tuple(parse_filter(f, f"{where}: spec.filters[{i}]")
                                           for i, f in enumerate(filters)))
        else:
            attributes = (spec.get("filter") or {}).get("attributes")
            if attributes:
                event_filter = AttributesFilter(
                    _string_map(attributes, f"{where}: spec.filter.attributes",
                                allow_empty_values=True))
            else:
                event_filter = MatchAll()
        delivery = DeliverySpec.from_doc(spec.get("delivery"), f"{where}: spec.delivery")
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        return cls(name=str(name), broker=str(broker), subscriber=subscriber,
                   filter=event_filter, delivery=delivery, namespace=meta.get("namespace"),
                   annotations=annotations)


@dataclass(frozen=True)
class KafkaSinkSpec:
    """A KafkaSink document (eventing.knative.dev/v1alpha1): where its events go."""
    name: str
    topic: str
    bootstrap_servers: tuple[str, ...]
    content_mode: str = "binary"


class TriggerList(list):
    """`load_triggers`' result: the Triggers plus what else the YAML declared.

    `broker_delivery` maps a Broker's name to its `spec.delivery` (the Triggers' defaults),
    `kafka_sinks` maps KafkaSink names to their spec, `other_docs` keeps every other document
    (PingSource, ...) for the caller.
    """

    def __init__(self, triggers: Iterable[Trigger] = ()):
        super().__init__(triggers)
        self.broker_delivery: dict[str, DeliverySpec] = {}
        self.kafka_sinks: dict[str, KafkaSinkSpec] = {}
        self.other_docs: list[dict] = []


def _iter_yaml_docs(items: Any) -> Iterator[tuple[Any, str]]:
    """(document, origin) pairs from paths, folders, YAML text or already-parsed documents."""
    if isinstance(items, (str, Path, Mapping)):
        items = [items]
    for item in items:
        if isinstance(item, Mapping):
            yield item, "<document>"
        elif isinstance(item, str) and ("\n" in item or item.lstrip().startswith(
                ("apiVersion:", "kind:", "---", "{"))):
            for doc in yaml.safe_load_all(item):
                yield doc, "<yaml text>"
        elif isinstance(item, (str, Path)):
            path = Path(item)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            elif path.is_file():
                files = [path]
            else:
                raise BrokerConfigError(f"{path}: no such file or folder")
            for file in files:
                try:
                    docs = list(yaml.safe_load_all(file.read_text()))
                except yaml.YAMLError as err:
                    raise BrokerConfigError(f"{file}: invalid YAML: {err}") from None
                for doc in docs:
                    yield doc, str(file)
        elif isinstance(item, (list, tuple)):
            yield from _iter_yaml_docs(item)
        else:
            raise BrokerConfigError(f"cannot read Triggers from {type(item).__name__}")


def load_triggers(paths_or_docs: Any) -> TriggerList:
    """Triggers from Knative YAML (files, folders of *.yaml, YAML text or parsed documents).

    Multi-document streams and `kind: List` are read; Broker documents give the delivery
    defaults of their broker (`.broker_delivery`), KafkaSink documents are kept in
    `.kafka_sinks`, everything else in `.other_docs`.

    >>> ts = load_triggers('''
    ... apiVersion: eventing.knative.dev/v1
    ... kind: Broker
    ... metadata: {name: default}
    ... spec: {delivery: {retry: 5, backoffDelay: PT1S}}
    ... ---
    ... apiVersion: eventing.knative.dev/v1
    ... kind: Trigger
    ... metadata: {name: drift}
    ... spec:
    ...   broker: default
    ...   filters: [{prefix: {type: io.modelmonitor.window.}}]
    ...   subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: drift}}
    ... ''')
    >>> [t.name for t in ts], ts.broker_delivery["default"].retry
    (['drift'], 5)
    """
    result = TriggerList()
    names: set[tuple[str | None, str]] = set()

    def visit(doc: Any, origin: str) -> None:
        if doc is None:
            return  # an empty document between '---' separators
        if not isinstance(doc, Mapping):
            raise BrokerConfigError(f"{origin}: expected a Kubernetes object, got {type(doc).__name__}")
        kind = doc.get("kind")
        api = str(doc.get("apiVersion", ""))
        meta = doc.get("metadata") or {}
        if kind == "List":
            for item in doc.get("items") or []:
                visit(item, origin)
        elif kind == "Trigger" and api.startswith("eventing.knative.dev/"):
            trigger = Trigger.from_doc(doc, origin)
            key = (trigger.namespace, trigger.name)
            if key in names:
                raise BrokerConfigError(f"Trigger {trigger.name} ({origin}) is declared twice")
            names.add(key)
            result.append(trigger)
        elif kind == "Broker" and api.startswith("eventing.knative.dev/"):
            name = meta.get("name") or "default"
            result.broker_delivery[name] = DeliverySpec.from_doc(
                (doc.get("spec") or {}).get("delivery"), f"Broker {name} ({origin}): spec.delivery")
        elif kind == "KafkaSink":
            spec = doc.get("spec") or {}
            name = meta.get("name")
            servers = spec.get("bootstrapServers") or []
            if isinstance(servers, str):
                servers = [s.strip() for s in servers.split(",") if s.strip()]
            if not name or not spec.get("topic") or not servers:
                raise BrokerConfigError(
                    f"KafkaSink {name or '?'} ({origin}): metadata.name, spec.topic and "
                    f"spec.bootstrapServers are required")
            mode = str(spec.get("contentMode", "binary")).lower()
            if mode not in ("binary", "structured"):
                raise BrokerConfigError(f"KafkaSink {name} ({origin}): spec.contentMode must be "
                                        f"binary or structured, got {mode!r}")
            result.kafka_sinks[name] = KafkaSinkSpec(name, spec["topic"], tuple(servers), mode)
        else:
            result.other_docs.append(dict(doc))

    for doc, origin in _iter_yaml_docs(paths_or_docs):
        visit(doc, origin)
    return result


# ---------------------------------------------------------------------------------------------
# Delivery targets
# ---------------------------------------------------------------------------------------------

@dataclass
class _Outcome:
    ok: bool
    retryable: bool = False
    status: int = 0                      # HTTP status; 0 when there was no HTTP answer
    body: bytes = b""                    # response body (or error text) for knativeerrordata
    reply: CloudEvent | None = None
    destination: str = ""


def _json_content(content_type: str | None) -> bool:
    # CloudEvents: no datacontenttype means JSON data.
    return content_type is None or "json" in content_type.lower()


def to_binary_http(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary-mode HTTP headers and body of an event, without re-encoding text and bytes data.

    The SDK's default marshaller JSON-encodes every `str`, so a `text/plain` body "hello" would
    go out as '"hello"'; here only JSON content types are JSON-encoded.

    >>> to_binary_http(CloudEvent({"type": "t", "source": "s", "datacontenttype": "text/plain"}, "hi"))[1]
    b'hi'
    """
    content_type = event.get("datacontenttype")

    def marshal(data: Any) -> Any:
        if data is None or isinstance(data, (bytes, bytearray)):
            return data
        if isinstance(data, str) and not _json_content(content_type):
            return data
        return json.dumps(data)

    headers, body = to_binary(event, data_marshaller=marshal)
    if isinstance(body, str):
        body = body.encode()
    # Extensions may be ints or booleans; HTTP header values must be strings.
    return {k: v if isinstance(v, str) else str(v) for k, v in headers.items()}, body or b""


def parse_reply(status: int, headers: Mapping[str, str], body: bytes) -> CloudEvent | None:
    """The reply event in a subscriber's answer, or None: 202 is never a reply, and an answer
    without ce-* headers or a structured CloudEvent content type is no event (an empty 200).

    >>> parse_reply(200, {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s", "ce-id": "1"}, b"")["type"]
    't'
    >>> parse_reply(202, {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s", "ce-id": "1"}, b"") is None
    True
    """
    if status == 202 or not 200 <= status < 300:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    binary = "ce-specversion" in lowered
    structured = lowered.get("content-type", "").startswith("application/cloudevents+json")
    if not binary and not structured:
        return None
    return from_http(lowered, body)


class _HttpTarget:
    """A subscriber reached over HTTP; several URLs are replicas used round robin.

    urllib3 directly (not requests): a delivery costs about a third of the CPU, and the pool
    checks that a kept-alive connection is still open before reusing it (functions restart).
    """

    def __init__(self, label: str, urls: Sequence[str], pool: urllib3.PoolManager):
        self.label = label
        self.urls = list(urls)
        self._turn = itertools.count()
        self._pool = pool

    def next_url(self) -> str:
        return self.urls[next(self._turn) % len(self.urls)]

    def send(self, event: CloudEvent, timeout: float, want_reply: bool) -> _Outcome:
        url = self.next_url()
        headers, body = to_binary_http(event)
        if want_reply:
            headers["Prefer"] = "reply"
        try:
            resp = self._pool.request("POST", url, body=body, headers=headers,
                                      timeout=urllib3.Timeout(connect=timeout, read=timeout),
                                      retries=False, redirect=False)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            # No answer at all (refused, reset, timed out): Knative retries these.
            return _Outcome(ok=False, retryable=True, status=0,
                            body=f"{type(err).__name__}: {err}".encode(), destination=url)
        status = resp.status
        if 200 <= status < 300:
            reply = None
            if want_reply:
                try:
                    reply = parse_reply(status, resp.headers, resp.data)
                except (ce_exceptions.GenericException, ValueError) as err:
                    log.warning("ignoring an invalid reply from %s: %s", url, err)
            return _Outcome(ok=True, status=status, reply=reply, destination=url)
        return _Outcome(ok=False, retryable=status in RETRYABLE_4XX or status >= 500,
                        status=status, body=resp.data[:ERROR_DATA_LIMIT], destination=url)


class _SinkTarget:
    """An in-process subscriber (e.g. a KafkaSinkWriter): called with the event; it may return
    a reply CloudEvent; an exception is a retryable failure."""

    def __init__(self, label: str, sink: Callable[[CloudEvent], Any]):
        self.label = label
        self.sink = sink

    def send(self, event: CloudEvent, timeout: float, want_reply: bool) -> _Outcome:
        dest = f"inprocess:{self.label}"
        try:
            result = self.sink(event)
        except Exception as err:  # the sink's failure is this delivery's failure
            return _Outcome(ok=False, retryable=True, status=0,
                            body=f"{type(err).__name__}: {err}".encode(), destination=dest)
        reply = result if want_reply and isinstance(result, CloudEvent) else None
        return _Outcome(ok=True, status=200, reply=reply, destination=dest)


_TRIGGER_COUNTERS = ("matched", "delivered", "replies", "retried", "dead_lettered", "dropped",
                     "abandoned")


class _TriggerRuntime:
    """A started Trigger: resolved targets, effective delivery, queue, workers, counters."""

    def __init__(self, trigger: Trigger, delivery: DeliverySpec, subscriber, dead_letter,
                 workers: int):
        self.trigger = trigger
        self.delivery = delivery
        self.subscriber = subscriber
        self.dead_letter = dead_letter
        self.workers = 1 if trigger.ordered else max(1, workers)
        self.queue: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.counters = dict.fromkeys(_TRIGGER_COUNTERS, 0)


_STOP = object()


# ---------------------------------------------------------------------------------------------
# HTTP ingress
# ---------------------------------------------------------------------------------------------

class _BodyTooLarge(Exception):
    pass


class _IngressServer(ThreadingHTTPServer):
    daemon_threads = True
    # Bursts of logger connections should wait in the kernel, not be refused.
    request_queue_size = 256

    def __init__(self, address, broker: "LocalBroker"):
        self.broker = broker
        super().__init__(address, _IngressHandler)


class _IngressHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: loggers and functions reuse connections
    server_version = "modelmonitor-local-broker"
    server: _IngressServer

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("ingress %s - " + fmt, self.address_string(), *args)

    def _answer(self, status: int, text: str = "", close: bool = False) -> None:
        payload = (text + "\n").encode() if text else b""
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if close:
            # The unread body is still on the socket; the connection cannot be reused.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, size = [], 0
            while True:
                line = self.rfile.readline(1024)
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                size += length
                if size > limit:
                    raise _BodyTooLarge(size)
                chunks.append(self.rfile.read(length))
                self.rfile.readline(1024)  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise _BodyTooLarge(length)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/healthz", "/readyz", "/health/readiness", "/health/liveness"):
            self._answer(200, "OK")
        elif self.server.broker._is_ingress_path(path):
            self._answer(405, "POST a CloudEvent here")
        else:
            self._answer(404, f"no broker at {path}")

    def do_POST(self) -> None:
        broker = self.server.broker
        path = urllib.parse.urlsplit(self.path).path
        if not broker._is_ingress_path(path):
            self._answer(404, f"no broker at {path}; POST to / or "
                              f"/{broker.namespace}/{broker.name}", close=True)
            return
        try:
            body = self._read_body(broker.max_body_bytes)
        except _BodyTooLarge as err:
            broker._count("rejected")
            self._answer(413, f"body of {err.args[0]} bytes exceeds the broker's limit of "
                              f"{broker.max_body_bytes} bytes", close=True)
            return
        except ValueError:
            self._answer(400, "malformed chunked body", close=True)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            if "ce-specversion" in headers:
                # The SDK would report a binary event lacking ce-id as "no specversion".
                lacking = [f"ce-{k}" for k in ("id", "source", "type") if f"ce-{k}" not in headers]
                if lacking:
                    raise ValueError(f"binary-mode event lacks header(s) {', '.join(lacking)}")
            event = from_http(headers, body)
            missing = [k for k in ("id", "source", "type") if not event.get(k)]
            if missing:
                raise ValueError(f"missing required attribute(s) {', '.join(missing)}")
        except (ce_exceptions.GenericException, ValueError, TypeError, KeyError,
                UnicodeDecodeError, RecursionError) as err:   # RecursionError: JSON nested too deep
            broker._count("rejected")
            reason = str(err)
            # The SDK quotes the whole unparsable body in its message; do not echo megabytes.
            self._answer(400, "not a CloudEvent: " + (reason if len(reason) <= 300
                                                      else reason[:300] + "..."))
            return
        try:
            broker._accept(event, hops=0)
        except BrokerClosedError as err:
            self._answer(503, str(err))
            return
        self._answer(202)


# ---------------------------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------------------------

class LocalBroker:
    """An in-memory broker with a Knative-compatible HTTP ingress and Trigger delivery.

    `triggers` are Triggers (a `load_triggers` result); those for another broker name or
    namespace are ignored. `resolve` maps a subscriber `ref` name to its URL(s) (several =
    replicas, used round robin). `on_event(event)` sees every accepted event, including replies
    and in-process publishes, possibly from several threads at once. `concurrency` is the
    number of delivery workers per unordered Trigger. `delivery_defaults` overrides the YAML
    Broker's `spec.delivery`.

    >>> b = LocalBroker([], namespace="ml", name="monitoring")
    >>> b._is_ingress_path("/ml/monitoring"), b._is_ingress_path("/"), b._is_ingress_path("/x")
    (True, True, False)
    """

    def __init__(self, triggers: Iterable[Trigger], resolve: Mapping[str, Sequence[str] | str] | None = None,
                 host: str = "127.0.0.1", port: int = 0, namespace: str = "default",
                 name: str = "default", max_body_bytes: int = 10 * 1024 * 1024,
                 on_event: Callable[[CloudEvent], None] | None = None, *,
                 concurrency: int = 16, delivery_defaults: DeliverySpec | None = None,
                 max_hops: int = 255):
        self.host = host
        self.port = port
        self.namespace = namespace
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.on_event = on_event
        self.concurrency = concurrency
        self.max_hops = max_hops
        self.resolve = {k: [v] if isinstance(v, str) else list(v) for k, v in (resolve or {}).items()}
        broker_delivery = getattr(triggers, "broker_delivery", {}) or {}
        self.delivery_defaults = (delivery_defaults or broker_delivery.get(name) or
                                  DeliverySpec()).merged_over(DEFAULT_DELIVERY)
        self.triggers: list[Trigger] = []
        for trigger in triggers:
            if trigger.broker != name or trigger.namespace not in (None, namespace):
                log.warning("ignoring Trigger %s: it belongs to broker %s/%s, not %s/%s",
                            trigger.name, trigger.namespace or namespace, trigger.broker,
                            namespace, name)
                continue
            self.triggers.append(trigger)
        self._sinks: dict[str, Callable[[CloudEvent], Any]] = {}
        self._http: urllib3.PoolManager | None = None
        self._runtimes: list[_TriggerRuntime] = []
        self._server: _IngressServer | None = None
        self._server_thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._abandon = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self._counter_lock = threading.Lock()
        self._counters = dict.fromkeys(("accepted", "rejected", "unmatched", "loops_dropped",
                                        "dead_letter_failed"), 0)

    # -- configuration ------------------------------------------------------------------------
    def add_trigger(self, trigger: Trigger) -> None:
        """Add a Trigger before `start()`."""
        if self._started:
            raise RuntimeError("add Triggers before start()")
        if any(t.name == trigger.name for t in self.triggers):
            raise BrokerConfigError(f"Trigger {trigger.name} already exists")
        self.triggers.append(trigger)

    def add_sink_subscriber(self, name: str, filter_attributes: Mapping[str, str] | None,
                            sink: Callable[[CloudEvent], Any]) -> None:
        """Register an in-process subscriber under `name` (before `start()`).

        Triggers whose subscriber `ref` has this name (e.g. `kind: KafkaSink, name: X`) deliver
        to `sink(event)` instead of a URL. With `filter_attributes` (a dict, possibly empty =
        every event), a Trigger of the same name routing those events to the sink is added too.
        The sink may return a CloudEvent (a reply); an exception is a retryable failure.
        """
        if self._started:
            raise RuntimeError("add sink subscribers before start()")
        if not callable(sink):
            raise TypeError("sink must be callable with one CloudEvent")
        self._sinks[name] = sink
        if filter_attributes is not None:
            self.add_trigger(Trigger(
                name=name, broker=self.name, namespace=self.namespace,
                subscriber=Destination(ref_kind="InProcess", ref_name=name),
                filter=AttributesFilter(dict(filter_attributes)) if filter_attributes else MatchAll()))

    def _target(self, dest: Destination, where: str):
        if dest.ref_name:
            if dest.ref_name in self._sinks:
                return _SinkTarget(dest.ref_name, self._sinks[dest.ref_name])
            urls = self.resolve.get(dest.ref_name)
            if not urls:
                known = sorted(set(self.resolve) | set(self._sinks)) or ["none"]
                raise BrokerConfigError(
                    f"{where}: cannot resolve {dest.describe()}: no URL or in-process sink is "
                    f"registered under {dest.ref_name!r} (known: {', '.join(known)})")
            if dest.uri:
                urls = [urllib.parse.urljoin(u, dest.uri) for u in urls]
            return _HttpTarget(dest.describe(), urls, self._http)
        return _HttpTarget(dest.describe(), [dest.uri], self._http)

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """Root of the ingress (valid after `start()`)."""
        return f"http://{self.host}:{self.port}/"

    @property
    def url(self) -> str:
        """The Knative-style ingress URL `http://host:port/<namespace>/<name>` (K_SINK)."""
        return f"http://{self.host}:{self.port}/{self.namespace}/{self.name}"

    def _is_ingress_path(self, path: str) -> bool:
        return path.rstrip("/") in ("", f"/{self.namespace}/{self.name}")

    def start(self) -> "LocalBroker":
        """Resolve every subscriber (a clear error if one cannot be), start the delivery workers
        and the HTTP ingress."""
        if self._started:
            return self
        # One connection pool per subscriber host, big enough for every worker of every Trigger
        # (several Triggers often share a function); urllib3 discards connections beyond it.
        self._http = urllib3.PoolManager(
            num_pools=64, maxsize=max(1, self.concurrency) * max(1, len(self.triggers)),
            block=False)
        runtimes = []
        for trigger in self.triggers:
            where = f"Trigger {trigger.name}"
            delivery = trigger.delivery.merged_over(self.delivery_defaults)
            subscriber = self._target(trigger.subscriber, f"{where}: subscriber")
            dead_letter = (self._target(delivery.dead_letter_sink, f"{where}: deadLetterSink")
                           if delivery.dead_letter_sink else None)
            runtimes.append(_TriggerRuntime(trigger, delivery, subscriber, dead_letter,
                                            self.concurrency))
        self._runtimes = runtimes
        self._server = _IngressServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        for rt in runtimes:
            for i in range(rt.workers):
                thread = threading.Thread(target=self._worker, args=(rt,), daemon=True,
                                          name=f"broker-{rt.trigger.name}-{i}")
                rt.threads.append(thread)
                thread.start()
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
            name="broker-ingress")
        self._server_thread.start()
        self._started = True
        log.info("local broker %s/%s listening at %s with %d trigger(s)", self.namespace,
                 self.name, self.url, len(runtimes))
        return self

    def stop(self, timeout: float = 10.0, drain: bool = True) -> bool:
        """Stop accepting events; with `drain`, let queued deliveries finish for up to
        `timeout` seconds; then abandon what is left (retry waits end at once) and join the
        threads. Returns True when nothing was abandoned."""
        if not self._started or self._closed:
            return True
        deadline = time.monotonic() + timeout
        self._closed = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        drained = self.wait_idle(timeout) if drain else self.wait_idle(0)
        self._abandon.set()
        for rt in self._runtimes:
            for _ in rt.threads:
                rt.queue.put(_STOP)
        for rt in self._runtimes:
            for thread in rt.threads:
                thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if self._http is not None:
            self._http.clear()
        return drained

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once every queue is empty and no delivery is in flight (False on timeout)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    # -- events -------------------------------------------------------------------------------
    def publish(self, event: CloudEvent) -> int:
        """Inject an event in-process, as if POSTed to the ingress; returns how many Triggers
        matched it."""
        return self._accept(event, hops=0)

    def _accept(self, event: CloudEvent, hops: int, internal: bool = False) -> int:
        # Replies (internal) are still taken while stop() drains: they are part of the work
        # in flight, not new input.
        if not self._started or (self._closed and not internal) or self._abandon.is_set():
            raise BrokerClosedError(f"broker {self.namespace}/{self.name} is not running")
        self._count("accepted")
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a recorder's bug must not lose the event
                log.exception("on_event callback failed")
        attrs = event_attributes(event)
        matched = [rt for rt in self._runtimes if rt.trigger.filter.matches(attrs)]
        if not matched:
            self._count("unmatched")
            return 0
        with self._idle:
            self._pending += len(matched)
        for rt in matched:
            with self._counter_lock:
                rt.counters["matched"] += 1
            rt.queue.put((event, hops))
        return len(matched)

    def _worker(self, rt: _TriggerRuntime) -> None:
        while True:
            item = rt.queue.get()
            if item is _STOP:
                return
            event, hops = item
            try:
                if self._abandon.is_set():
                    self._bump(rt, "abandoned")
                else:
                    self._deliver(rt, event, hops)
            except Exception:
                log.exception("delivery to Trigger %s failed unexpectedly", rt.trigger.name)
                self._bump(rt, "dropped")
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def _send_with_retries(self, rt: _TriggerRuntime, target, event: CloudEvent,
                           want_reply: bool) -> tuple[_Outcome, bool]:
        """(last outcome, abandoned?) after up to 1 + retry attempts."""
        d = rt.delivery
        attempt = 0
        while True:
            outcome = target.send(event, d.timeout, want_reply)
            if outcome.ok or not outcome.retryable or attempt >= d.retry:
                return outcome, False
            attempt += 1
            self._bump(rt, "retried")
            wait = backoff_delay(d.backoff_policy, d.backoff_delay, attempt, d.backoff_max)
            log.debug("Trigger %s: %s answered %s; retry %d/%d in %.3f s", rt.trigger.name,
                      outcome.destination, outcome.status or "no response", attempt, d.retry, wait)
            if self._abandon.wait(wait):
                return outcome, True

    def _deliver(self, rt: _TriggerRuntime, event: CloudEvent, hops: int) -> None:
        outcome, abandoned = self._send_with_retries(rt, rt.subscriber, event, want_reply=True)
        if outcome.ok:
            self._bump(rt, "delivered")
            if outcome.reply is not None:
                self._bump(rt, "replies")
                if hops + 1 > self.max_hops:
                    self._count("loops_dropped")
                    log.warning("dropping reply %s (type %s) from Trigger %s: it went through "
                                "the broker %d times (a reply loop?)", outcome.reply["id"],
                                outcome.reply["type"], rt.trigger.name, hops + 1)
                else:
                    try:
                        self._accept(outcome.reply, hops + 1, internal=True)
                    except BrokerClosedError:
                        log.warning("broker stopped; reply %s from Trigger %s lost",
                                    outcome.reply["id"], rt.trigger.name)
            return
        if abandoned:
            self._bump(rt, "abandoned")
            return
        reason = (f"HTTP {outcome.status}" if outcome.status
                  else outcome.body.decode(errors="replace"))
        if rt.dead_letter is None:
            self._bump(rt, "dropped")
            log.warning("dropped event %s (type %s) for Trigger %s after %s: %s; no "
                        "deadLetterSink", event["id"], event["type"], rt.trigger.name,
                        "retries" if outcome.retryable else "a non-retryable answer", reason)
            return
        dead = self._dead_letter_event(event, outcome)
        dl_outcome, _ = self._send_with_retries(rt, rt.dead_letter, dead, want_reply=False)
        if dl_outcome.ok:
            self._bump(rt, "dead_lettered")
        else:
            self._bump(rt, "dropped")
            self._count("dead_letter_failed")
            log.warning("dropped event %s for Trigger %s: delivery failed (%s) and so did the "
                        "deadLetterSink %s (%s)", event["id"], rt.trigger.name, reason,
                        dl_outcome.destination, dl_outcome.status or "no response")

    @staticmethod
    def _dead_letter_event(event: CloudEvent, outcome: _Outcome) -> CloudEvent:
        """The event as it goes to the dead-letter sink: unchanged plus the knativeerror*
        extensions (code 0 = no HTTP answer; the data is then the connection error)."""
        attrs = dict(event.get_attributes())
        attrs[ERROR_DEST] = outcome.destination
        attrs[ERROR_CODE] = str(outcome.status)
        attrs[ERROR_DATA] = base64.b64encode(outcome.body[:ERROR_DATA_LIMIT]).decode("ascii")
        return CloudEvent(attrs, event.data)

    # -- counters -----------------------------------------------------------------------------
    def _count(self, key: str) -> None:
        with self._counter_lock:
            self._counters[key] += 1

    def _bump(self, rt: _TriggerRuntime, key: str) -> None:
        with self._counter_lock:
            rt.counters[key] += 1

    def stats(self) -> dict[str, Any]:
        """Counters: broker-wide (accepted, rejected, unmatched, loops_dropped,
        dead_letter_failed, pending), totals over Triggers and per Trigger
        (matched, delivered, replies, retried, dead_lettered, dropped, abandoned)."""
        with self._counter_lock:
            out: dict[str, Any] = dict(self._counters)
            per = {rt.trigger.name: dict(rt.counters) for rt in self._runtimes}
        for key in _TRIGGER_COUNTERS:
            out[key] = sum(c[key] for c in per.values())
        out["pending"] = self._pending
        out["triggers"] = per
        return out
