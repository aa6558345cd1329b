"""Kafka source: one Bytewax partition per topic partition, offsets in recovery snapshots.

Partitions are assigned directly (no consumer group), as Bytewax's own Kafka
connector does, and the resume state is the next offset to read. With
``auto.offset.reset=error`` a resume position the broker no longer holds
(retention deleted it) stops the flow with a clear error instead of silently
skipping data.

Each poll becomes one ``SourceBatch``; in wall-clock mode it carries the wall
clock as its tick, and a quiet partition 0 still emits an empty tick batch every
``tick_seconds`` so windows expire while nothing arrives (one partition's tick
reaches every shard, so the others do not tick: a quiet stream's ticks cost one
batch per tick, not one per partition).

A poll waits for messages only when its partition has been quiet: after a
poll that brought messages the next one does not wait at all (a busy partition
does not hold up the others), after an empty one it waits up to twice as long
as the last, from 1 ms up to ``poll_max_seconds``. Waiting inside librdkafka
is what keeps a quiet stream cheap: Bytewax's worker loop, given nothing to
wait on (non-blocking polls, ``next_awake``), spins and costs more CPU than
the polls (measured: bench/live.py). A partition that has
been read to the end of its log (librdkafka's partition EOF) and has had no
message for ``idle_seconds`` says so (``SourceBatch.idle``), so that in event
time it does not hold back the clock of the others (see
``stream.clock.ShardClock.advance``); its next message makes it active again. Idleness
and ``exit_when_idle`` both need the end of the log: a partition slow to
start is never taken for an empty one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from stream.sources.base import SourceBatch, SourceError

Clock = Callable[[], float]


def consumer_config(bootstrap: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Librdkafka settings of a partition reader; ``extra`` (security, tuning) wins."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": "propstream-stream",  # required by librdkafka; no group is joined (assign)
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,  # an EOF event says the partition has been read to its end
        "fetch.max.bytes": 52_428_800,
        **extra,
    }


class _KafkaPartition(StatefulSourcePartition[SourceBatch, int]):
    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        partition: int,
        resume: int | None,
        batch_size: int,
        wall_clock: bool,
        tick_seconds: float,
        exit_when_idle: float | None,
        clock: Clock,
        n_parts: int,
        idle_seconds: float = 10.0,
        poll_max_seconds: float = 0.05,
        stop: Callable[[], bool] | None = None,
    ):
        self._topic, self._partition = topic, partition
        self._n_parts = n_parts
        self._stop = stop
        self._ended = False
        self._next = resume if resume is not None else OFFSET_BEGINNING
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, self._next)])
        self._batch_size = batch_size
        self._wall_clock = wall_clock
        self._tick_s = tick_seconds
        self._exit_when_idle = exit_when_idle
        self._clock = clock
        self._last_message = clock()
        self._last_emit = 0.0
        self._idle_s = idle_seconds
        self._idle = False
        self._at_end = False
        self._poll_max = poll_max_seconds
        self._wait = poll_max_seconds  # how long the next poll may wait for messages

    def _paced(self, batches: list[SourceBatch], got_messages: bool) -> list[SourceBatch]:
        """The next poll: no wait after messages, twice the last wait (1 ms to poll_max) after an empty one."""
        self._wait = 0.0 if got_messages else min(self._poll_max, max(0.001, 2 * self._wait))
        return batches

    def next_batch(self) -> list[SourceBatch]:
        if self._ended:
            raise StopIteration
        if self._stop is not None and self._stop():  # the run is to end here and resume (not idle: no final batch)
            raise StopIteration
        msgs = self._consumer.consume(self._batch_size, self._wait)
        records = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._at_end = True  # read to the end of the log (as it is now)
                    continue
                if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                    msg = (
                        f"kafka {self._topic}/{self._partition}: resume offset {self._next} is no longer "
                        f"on the broker ({err.str()}); refusing to skip data. Restore the data or start "
                        "from a fresh recovery directory on purpose."
                    )
                    raise SourceError(msg)
                if err.fatal() or not err.retriable():
                    msg = f"kafka {self._topic}/{self._partition}: {err.str()}"
                    raise SourceError(msg)
                continue  # transient (broker restart): librdkafka retries
            offset: int = m.offset()  # type: ignore[assignment]  # set on every consumed message
            records.append((f"kafka:{m.topic()}/{m.partition()}/{offset}", m.value()))
            self._next = offset + 1
            self._at_end = False
        now = self._clock()
        if records:
            self._last_message = now
        elif self._at_end and self._exit_when_idle is not None and now - self._last_message >= self._exit_when_idle:
            self._ended = True
        # Idle: read to the end and quiet for a while. A partition slow to start (nothing read yet,
        # not at its end) is not idle: it may hold events the others' clock must wait for.
        was_idle = self._idle
        self._idle = self._ended or (self._at_end and not records and now - self._last_message >= self._idle_s)
        tick = int(now * 1000) if self._wall_clock else None
        due = tick is not None and now - self._last_emit >= self._tick_s and self._partition == 0
        if records or self._ended or due or self._idle != was_idle:
            self._last_emit = now
            part = f"{self._topic}/{self._partition}"
            batch = SourceBatch(records, tick, part, self._n_parts, final=self._ended, idle=self._idle)
            return self._paced([batch], bool(msgs))
        return self._paced([], bool(msgs))

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()


class KafkaSource(FixedPartitionedSource[SourceBatch, int]):
    """Reads every partition of ``topic``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        extra_config: dict[str, Any] | None = None,
        batch_size: int = 10_000,
        wall_clock: bool = True,
        tick_seconds: float = 1.0,
        exit_when_idle: float | None = None,
        clock: Clock = time.time,
        idle_seconds: float = 10.0,
        poll_max_seconds: float = 0.05,
    ):
        self.config = consumer_config(bootstrap, extra_config or {})
        self.poll_max_seconds = poll_max_seconds
        self.idle_seconds = idle_seconds
        self.topic = topic
        self.batch_size = batch_size
        self.wall_clock = wall_clock
        self.tick_seconds = tick_seconds
        self.exit_when_idle = exit_when_idle
        self.clock = clock
        self._n_parts = 0
        # Set by the run: True ends every partition where it stands (no final, idle batch), to resume from the
        # snapshot; `stream.reload_groups` uses it to apply a changed groups file.
        self.stop: Callable[[], bool] | None = None

    def list_parts(self) -> list[str]:
        consumer = Consumer(self.config)
        try:
            meta = consumer.list_topics(self.topic, timeout=10)
        except KafkaException as exc:
            msg = f"cannot reach Kafka at {self.config['bootstrap.servers']}: {exc.args[0].str()}"
            raise SourceError(msg) from exc
        finally:
            consumer.close()
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None:
            why = topic.error.str() if topic is not None and topic.error is not None else "not found"
            msg = f"kafka topic {self.topic!r}: {why} (create it with `propstream init`)"
            raise SourceError(msg)
        parts = [str(p) for p in sorted(topic.partitions)]
        self._n_parts = len(parts)
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        return _KafkaPartition(
            dict(self.config),
            self.topic,
            int(for_part),
            resume_state,
            self.batch_size,
            self.wall_clock,
            self.tick_seconds,
            self.exit_when_idle,
            self.clock,
            self._n_parts or len(self.list_parts()),
            self.idle_seconds,
            self.poll_max_seconds,
            self.stop,
        )
