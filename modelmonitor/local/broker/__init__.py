"""Local Knative-Broker look-alike for `modelmonitor run` (one machine, no Kubernetes).

It reads the same Broker / Trigger YAML as the cluster (`eventing/`) and behaves like a Knative
broker as far as the functions can tell:

* **Ingress**: HTTP POST of a CloudEvent (binary or structured mode) at `/` or at
  `/<namespace>/<broker>` (the Knative broker ingress path, so a KServe logger URL or a
  function's K_SINK can point here). 202 once the event is recorded in the broker log, 400 for
  a body that is no CloudEvent, 404 for another path, 413 above `max_body_bytes`, 503 when the
  log cannot take it (full or unreachable).
* **Log**: accepted events are appended to the log of each Trigger whose filter they pass
  (`log.RedisStreamLog`: a Redis Stream per Trigger read by a consumer group, durable;
  `log.MemoryLog` when embedded without Redis) and kept in wire form (`wire`): the bytes that came in are the bytes delivered.
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
  `knativeerrorcode` and `knativeerrordata` extensions; without one (or when it fails too) the
  event goes to the local dead-letter log (`log.dead_letters()`, `log.redrive()`): a dead
  letter is never dropped.
* **Restarts**: an event is acknowledged in its Trigger's group only after it was delivered
  (its reply appended in the same transaction; written in batches without holding up the next
  delivery) or dead-lettered; after a restart the
  unacknowledged events are delivered again (at least once), in log order for ordered Triggers.
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
from modelmonitor.core.backoff import backoff_delay, parse_duration
from modelmonitor.local.broker.config import (DEFAULT_DELIVERY, ORDER_ANNOTATION, DeliverySpec,
                                              Destination, KafkaSinkSpec, Trigger, TriggerList,
                                              load_triggers)
from modelmonitor.local.broker.errors import (BrokerClosedError, BrokerConfigError,
                                              BrokerUnavailableError, UnsupportedFilterError)
from modelmonitor.local.broker.filters import (AllFilter, AnyFilter, AttributesFilter, EventFilter,
                                               ExactFilter, MatchAll, NotFilter, PrefixFilter,
                                               SuffixFilter, event_attributes, parse_filter)
from modelmonitor.local.broker.local_broker import LocalBroker
from modelmonitor.local.broker.log import DeadLetter, RedisStreamLog
from modelmonitor.local.broker.memory_log import MemoryLog
from modelmonitor.local.broker.targets import (ERROR_CODE, ERROR_DATA, ERROR_DATA_LIMIT, ERROR_DEST,
                                               RETRYABLE_4XX, parse_reply)
from modelmonitor.local.broker.wire import to_binary_http

__all__ = [
    "AllFilter", "AnyFilter", "AttributesFilter", "BrokerClosedError", "BrokerConfigError",
    "BrokerUnavailableError", "DeadLetter", "MemoryLog", "RedisStreamLog",
    "DEFAULT_DELIVERY", "DeliverySpec", "Destination", "ERROR_CODE", "ERROR_DATA", "ERROR_DATA_LIMIT",
    "ERROR_DEST", "EventFilter", "ExactFilter", "KafkaSinkSpec", "LocalBroker", "MatchAll",
    "NotFilter", "ORDER_ANNOTATION", "PrefixFilter", "RETRYABLE_4XX", "SuffixFilter", "Trigger",
    "TriggerList", "UnsupportedFilterError", "backoff_delay", "event_attributes", "load_triggers",
    "parse_duration", "parse_filter", "parse_reply", "to_binary_http",
]
