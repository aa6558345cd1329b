"""Kafka producing with acknowledgements awaited by asyncio (one idempotent producer per worker process).

``publish`` produces a request's messages (events keyed by user_id to the
events topic, dead letters to the dead-letter topic) and returns when Kafka
has acknowledged every one of them (``acks=all``, idempotent producer), or
raises :class:`KafkaUnavailable`: the local queue is full, a delivery failed,
or none came within ``collector.ack_timeout_seconds``. librdkafka's delivery
callbacks run in a polling thread and settle an asyncio future on the event
loop (``call_soon_threadsafe``).

A message of a request answered 503 may still reach Kafka later (it was in
flight); the client retries with the same event ids and the stream applies
each id once. To keep that window short, librdkafka's own message timeout is
the acknowledgement timeout, so unacknowledged messages leave the queue at
about the time the request is answered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException, Producer

from collector import metrics
from collector.errors import KafkaUnavailable
from schemas.events import TYPE_NAMES, DeadLetter, EventRecord
from schemas.settings import CollectorSettings, KafkaSettings
from stream.wire import dead_letter_message, event_message

log = logging.getLogger(__name__)
# The guarantees the collector answers for: not overridable by kafka.config.
_GUARANTEES = {"enable.idempotence": True, "acks": "all"}


class _Acks:
    """Counts one request's delivery reports (from the polling thread) and settles its future when all are in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expected: int):
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = expected
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            latency = msg.latency() if msg is not None else None
            if latency is not None:
                metrics.DELIVERY_SECONDS.observe(latency)
        else:
            metrics.DELIVERY_FAILURES.labels(err.name()).inc()
        self.settle(None if err is None else err.str())

    def settle(self, error: str | None) -> None:
        with self.lock:
            if error is not None:
                self.errors.append(error)
            self.pending -= 1
            done = self.pending == 0
        if done:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class KafkaPublisher:
    """One producer and its polling thread; :meth:`start` and :meth:`close` bracket a worker's life."""

    def __init__(
        self,
        kafka: KafkaSettings,
        collector: CollectorSettings,
        clock: Any = time.monotonic,
        type_names: tuple[str, ...] = TYPE_NAMES,
    ):
        self.topic = kafka.topic
        self.type_names = type_names  # the vocabulary's names (events.types), as the intake's parser validated them
        self.dead_letter_topic = kafka.dead_letters_topic
        self.settings = collector
        self.clock = clock
        self.config: dict[str, Any] = {
            "linger.ms": collector.linger_ms,
            "compression.type": "lz4",
            "message.timeout.ms": int(collector.ack_timeout_seconds * 1000),
            "queue.buffering.max.messages": collector.max_queued_events,
            **kafka.client_config(),
            **_GUARANTEES,
        }
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._unavailable_until = 0.0  # after a failed delivery: answer 503 at once until then
        self._last_failure = ""

    def start(self) -> None:
        """Create the producer and start the thread that serves its delivery reports."""
        self._producer = Producer(self.config)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll, args=(self._producer,), name="kafka-delivery-reports", daemon=True
        )
        self._thread.start()

    def _poll(self, producer: Producer) -> None:
        while not self._stop.is_set():
            producer.poll(0.05)
            metrics.QUEUE_DEPTH.set(len(producer))

    def close(self, timeout: float = 10.0) -> int:
        """Deliver what is queued (bounded by ``timeout``), stop the thread; the number of messages left undelivered."""
        if self._producer is None:
            return 0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        left = self._producer.flush(timeout)
        metrics.QUEUE_DEPTH.set(0)
        self._producer = None
        return left

    @property
    def queue_depth(self) -> int:
        """Messages produced and not yet acknowledged."""
        return len(self._producer) if self._producer is not None else 0

    async def publish(self, events: list[EventRecord], dead: list[DeadLetter]) -> None:
        """Produce every message and wait for every acknowledgement, or raise KafkaUnavailable."""
        producer = self._producer
        if producer is None:
            msg = "the collector's producer is not running"
            raise KafkaUnavailable(msg)
        if self.clock() < self._unavailable_until:
            metrics.DELIVERY_FAILURES.labels("recent_failure").inc()
            msg = f"Kafka did not acknowledge recent deliveries ({self._last_failure})"
            raise KafkaUnavailable(msg)
        acks = _Acks(asyncio.get_running_loop(), len(events) + len(dead) + 1)  # +1: released after producing
        now = datetime.now(tz=UTC).isoformat()
        messages = [(self.topic, *event_message(rec, self.type_names)) for rec in events]
        messages += [(self.dead_letter_topic, *dead_letter_message(d, now)) for d in dead]
        try:
            for topic, key, value in messages:
                producer.produce(topic, value, key=key, on_delivery=acks.delivered)
        except BufferError as exc:
            metrics.DELIVERY_FAILURES.labels("queue_full").inc()
            msg = f"the producer's queue is full ({len(producer):,} messages waiting for Kafka)"
            raise KafkaUnavailable(msg) from exc
        except KafkaException as exc:
            metrics.DELIVERY_FAILURES.labels("produce").inc()
            msg = f"Kafka refused a message: {exc.args[0].str()}"
            raise KafkaUnavailable(msg) from exc
        acks.settle(None)
        try:
            # librdkafka times messages out after ack_timeout itself; the margin covers its timer's granularity.
            await asyncio.wait_for(acks.future, self.settings.ack_timeout_seconds + 2.0)
        except TimeoutError as exc:
            metrics.DELIVERY_FAILURES.labels("ack_timeout").inc()
            self._failed("no acknowledgement in time")
            msg = f"Kafka did not acknowledge within {self.settings.ack_timeout_seconds:g} s"
            raise KafkaUnavailable(msg) from exc
        if acks.errors:
            self._failed(acks.errors[0])
            msg = f"Kafka did not acknowledge {len(acks.errors)} message(s): {acks.errors[0]}"
            raise KafkaUnavailable(msg)

    def _failed(self, why: str) -> None:
        self._last_failure = why
        self._unavailable_until = self.clock() + self.settings.retry_after_seconds

    async def reachable(self) -> tuple[bool, str]:
        """Whether Kafka answers metadata within ``health_timeout_seconds`` and both topics exist."""
        producer = self._producer
        if producer is None:
            return False, "producer not running"
        try:
            meta = await asyncio.to_thread(producer.list_topics, timeout=self.settings.health_timeout_seconds)
        except KafkaException as exc:
            return False, exc.args[0].str()
        missing = [t for t in (self.topic, self.dead_letter_topic) if t not in meta.topics]
        if missing:
            return False, f"topic(s) missing: {', '.join(missing)}"
        return True, f"{len(meta.brokers)} broker(s)"
