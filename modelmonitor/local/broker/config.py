"""Broker and Trigger YAML: destinations, delivery specs, Triggers, KafkaSinks (`load_triggers`)."""
from __future__ import annotations

import dataclasses
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from modelmonitor.core.events import Event

from modelmonitor.core.backoff import parse_duration
from modelmonitor.local.broker.errors import BrokerConfigError
from modelmonitor.local.broker.filters import (AllFilter, AttributesFilter, EventFilter, MatchAll,
                                               _string_map, event_attributes, parse_filter)

ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"


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

    def matches(self, event: Event | Mapping[str, Any]) -> bool:
        attrs = event_attributes(event) if isinstance(event, Event) else event
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
