"""Dead letters to a Kafka topic (beside the ``dead_letters`` table), for producers to watch.

The table keeps every payload whole; on the topic a payload over 64 KiB is cut
(``payload_truncated``, ``stream.wire``) so a poison message never exceeds the broker's limit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Producer

from schemas.events import DeadLetter
from stream.producer import DeliveryError
from stream.wire import dead_letter_message


class _Partition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, config: dict[str, Any], topic: str):
        self.topic = topic
        self.producer = Producer({"linger.ms": 5, "enable.idempotence": True, "message.timeout.ms": 20_000, **config})
        self.errors: list[str] = []

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(err.str())

    def write_batch(self, items: list[DeadLetter]) -> None:
        now = datetime.now(tz=UTC).isoformat()
        for dead in items:
            key, value = dead_letter_message(dead, now)
            self.producer.produce(self.topic, value, key=key, on_delivery=self._delivered)
        if self.producer.flush(30) or self.errors:
            msg = (
                f"dead letters not delivered to {self.topic}: {self.errors[:3] or 'flush timed out'} "
                "(does the topic exist? `propstream init --kafka ...` creates it)"
            )
            raise DeliveryError(msg)

    def close(self) -> None:
        self.producer.flush(30)


class DeadLetterTopicSink(DynamicSink[DeadLetter]):
    """Publishes every dead letter (reason, raw payload, source position) to a topic."""

    def __init__(self, config: dict[str, Any], topic: str):
        self.config = config
        self.topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self.config, self.topic)
