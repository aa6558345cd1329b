"""Publishing validated events to Kafka (the ``propstream produce`` command).

Rows are validated against the event contract before they are sent; rejects
are reported, never sent. Every event is sent as canonical JSON keyed by
user_id (so a customer's events stay in order on one partition), with an
event_id (the file's, or a content hash), so a re-run of the same file is
recognised downstream as duplicate deliveries. A delivery failure is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from stream.errors import StreamError
from stream.parse import EventParser
from stream.sources.base import RawRecord
from stream.wire import event_message


class DeliveryError(StreamError):
    """Kafka did not acknowledge some events."""


@dataclass
class ProduceReport:
    """What a produce run did."""

    read: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0  # of a type the mapping drops on purpose
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)


def produce(
    records: Iterable[RawRecord],
    parser: EventParser,
    config: dict[str, Any],
    topic: str,
    progress: Callable[[ProduceReport], None] | None = None,
    progress_every: int = 100_000,
) -> ProduceReport:
    """Validate and send; raises DeliveryError if any event was not acknowledged."""
    report = ProduceReport()
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            report.failed += 1
            if len(errors) < 5:
                errors.append(err.str())
        else:
            report.sent += 1

    type_names = parser.types.names
    producer = Producer({"linger.ms": 20, "enable.idempotence": True, "compression.type": "lz4", **config})
    for source, payload in records:
        report.read += 1
        rec = parser.check(source, payload)
        if rec is None:
            report.dropped += 1
            continue
        if isinstance(rec, str):
            report.rejected.append((source, rec))
            continue
        key, value = event_message(rec, type_names)
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: wait for deliveries
        producer.poll(0)
        if progress is not None and report.read % progress_every == 0:
            progress(report)
    remaining = producer.flush(60)
    if remaining or report.failed:
        msg = f"{report.failed + remaining} event(s) were not delivered to {topic}: {errors or 'flush timed out'}"
        raise DeliveryError(msg)
    return report
