"""Prometheus metrics of the collector (``GET /metrics``).

With several worker processes (``collector.workers``) every worker writes its
samples to ``PROMETHEUS_MULTIPROC_DIR`` (set by ``collector.server``) and
``/metrics`` sums them over the workers, whichever worker answers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from schemas.events import Event

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("propstream_collector_requests", "HTTP requests, by endpoint and status", ["endpoint", "status"])
REQUEST_SECONDS = Histogram(
    "propstream_collector_request_seconds",
    "time to answer a request, by endpoint",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
EVENTS_ACCEPTED = Counter("propstream_collector_events_accepted", "events acknowledged by Kafka")
EVENTS_REJECTED = Counter(
    "propstream_collector_events_rejected", "events (or whole requests) refused, by kind of reason", ["reason"]
)
DELIVERY_SECONDS = Histogram(
    "propstream_collector_kafka_delivery_seconds",
    "from produce to Kafka's acknowledgement, per message",
    buckets=_LATENCY_BUCKETS,
)
DELIVERY_FAILURES = Counter(
    "propstream_collector_kafka_delivery_failures",
    "messages Kafka did not acknowledge, and requests refused before producing, by error",
    ["error"],
)
QUEUE_DEPTH = Gauge(
    "propstream_collector_kafka_queue_depth",
    "messages produced and not yet acknowledged (summed over workers)",
    multiprocess_mode="livesum",
)


def reason_kind(reason: str) -> str:
    """A reason's kind, a label of few values: its head, and the first bad field of an invalid event.

    >>> reason_kind("invalid event: timestamp: Value error, timestamp 3000-01-01 is outside [...]; type: ...")
    'invalid timestamp'
    >>> reason_kind("bad JSON: JSONDecodeError: Expecting value: line 1 column 1 (char 0)")
    'bad JSON'
    """
    head, _, rest = reason.partition(":")
    if head == "invalid event":
        name = rest.strip().partition(":")[0]
        return f"invalid {name}" if name in Event.model_fields else "invalid event"
    return head if len(head) <= 40 else "other"


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, summed over worker processes when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
