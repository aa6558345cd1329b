"""Kafka source: one Bytewax partition per topic partition, offsets in recovery snapshots.

Partitions are assigned directly (no consumer group), as Bytewax's own Kafka
connector does, and the resume state is the next offset to read. With
``auto.offset.reset=error`` a resume position the broker no longer holds
(retention deleted it) stops the flow with a clear error instead of silently
skipping data.

Each partition's turn gives at most one ``SourceBatch``; in wall-clock mode it
carries the wall clock as its tick. A quiet stream still needs ticks so that
windows expire while nothing arrives: partition 0 sends an empty tick batch,
and one partition's tick reaches every shard, so the others do not tick. With
a ``stream.ticks.TickBoard`` (a one-process run) it ticks only when a shard of
the process has a customer due (its expiry heap's next time) or a model was
swapped, at most every ``tick_seconds``; without one, every ``tick_seconds``.

All the partitions one worker reads share one consumer (``_TopicReader``): a
quiet worker waits in a single poll, up to ``poll_max_seconds`` (shorter when
a tick falls due sooner), which a message on any partition ends. Waiting
inside librdkafka is what keeps a quiet stream cheap: Bytewax's worker loop,
given nothing to wait on (non-blocking polls, ``next_awake``), spins and costs
more CPU than the polls (measured: bench/live.py, BENCHMARKS.md 3 and 3b). A
partition that has
been read to the end of its log (librdkafka's partition EOF) and has had no
message for ``idle_seconds`` says so (``SourceBatch.idle``), so that in event
time it does not hold back the clock of the others (see
``stream.clock.ShardClock.advance``); its next message makes it active again. Idleness
and ``exit_when_idle`` both need the end of the log: a partition slow to
start is never taken for an empty one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from stream.placement import Placement
from stream.sources.base import SourceBatch, SourceError
from stream.ticks import TickBoard

Clock = Callable[[], float]


def consumer_config(bootstrap: str, extra: dict[str, Any], fetch_wait_seconds: float = 0.1) -> dict[str, Any]:
    """Librdkafka settings of a partition reader; ``extra`` (security, tuning) wins.

    The broker holds each fetch until it has 1 MB for the reader or
    ``fetch_wait_seconds`` passed (``kafka.fetch_wait_seconds``). librdkafka's
    defaults (1 byte, 500 ms) answered a fetch as soon as any message came: a
    busy stream fetched after every producer's batch, and the broker's fetch
    work was a quarter of its CPU (BENCHMARKS.md 6q).
    """
    return {
        "bootstrap.servers": bootstrap,
        "fetch.min.bytes": 1_048_576,
        "fetch.wait.max.ms": max(1, round(fetch_wait_seconds * 1000)),
        "group.id": "propstream-stream",  # required by librdkafka; no group is joined (assign)
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,  # an EOF event says the partition has been read to its end
        "fetch.max.bytes": 52_428_800,
        **extra,
    }


class _TopicReader:
    """One librdkafka consumer for every partition of the topic that one worker reads.

    Bytewax asks each partition for a batch in turn. With a consumer each, a
    quiet stream waited in every partition's poll in turn, and a message for
    one partition waited out the others' polls. Here one poll (``poll``) waits
    for all of them and wakes on a message for any; what it brings goes to
    each partition's inbox, which its ``next_batch`` takes from. So a quiet
    worker blocks in one place, for up to ``poll_max_seconds``, and a message
    arriving then is read as soon as the broker hands it over (within
    ``kafka.fetch_wait_seconds``), whichever its partition.

    The wait doubles from 1 ms after each empty poll, up to the most allowed;
    after a poll that brought messages the next one waits ``batch_wait``
    (``kafka.batch_wait_seconds``), ended sooner by a full batch: under
    traffic, polls (and so the dataflow's batches and refreshes) come that
    often, each with what arrived meanwhile. A refresh has fixed costs (the
    models' trees for its rows are walked once per call, ~2 ms for 25 groups
    whatever the rows; the shard's step, the sink's rows): 10,000 events/s
    read without waiting came in ~60 polls a second (BENCHMARKS.md 6l). No poll is
    made while an inbox holds a full batch (a partition held back by Bytewax's
    backpressure), so the inboxes stay bounded.
    """

    def __init__(self, config: dict[str, Any], batch_size: int, batch_wait: float):
        self._consumer = Consumer(config)
        self._batch_size = batch_size
        self._batch_wait = batch_wait
        self.inbox: dict[int, list[Any]] = {}
        self.polls = 0  # polls made so far: a partition polls only when nobody did since its last turn
        self._wait = 0.001

    def assign(self, topic: str, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` too."""
        self.inbox[partition] = []
        self._consumer.incremental_assign([TopicPartition(topic, partition, offset)])

    def release(self, topic: str, partition: int) -> bool:
        """Stop reading ``partition``; True (the consumer closed) once no partition is left."""
        self.inbox.pop(partition, None)
        if self.inbox:
            self._consumer.incremental_unassign([TopicPartition(topic, partition)])
            return False
        self._consumer.close()
        return True

    def poll(self, caller: int, max_wait: float) -> None:
        """Wait up to the current wait (at most ``max_wait`` s) for messages; hand them to their inboxes.

        A message of no assigned partition (a client-wide error) goes to ``caller``'s inbox.
        """
        if any(len(box) >= self._batch_size for box in self.inbox.values()):
            return
        self.polls += 1
        msgs = self._consumer.consume(self._batch_size, min(self._wait, max_wait))
        inbox, mine = self.inbox, self.inbox[caller]
        got = False  # messages, not events (a partition's EOF does not make a stream busy)
        for m in msgs:
            inbox.get(m.partition(), mine).append(m)  # type: ignore[arg-type]
            got = got or m.error() is None
        self._wait = self._batch_wait if got else min(max_wait, max(0.001, 2 * self._wait))

    def high_watermark(self, topic: str, partition: int) -> int | None:
        """The end of ``partition``'s log as of the consumer's last fetch of it (no round trip); None: not known.

        Fetches go on in librdkafka's threads whether or not the messages were
        delivered yet, so this runs ahead of what a partition has read. (Asking
        the broker instead waits behind the connection's fetch long-poll: 170
        ms measured, and more: a 200-ms timeout expired twice in three asks.)
        """
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except KafkaException:
            return None
        return high if high >= 0 else None

    def take(self, partition: int) -> list[Any]:
        """Up to a batch of ``partition``'s messages (and errors), in its order."""
        box = self.inbox[partition]
        taken = box[: self._batch_size]
        del box[: self._batch_size]
        return taken


class _KafkaPartition(StatefulSourcePartition[SourceBatch, int]):
    def __init__(
        self,
        reader: _TopicReader,
        topic: str,
        partition: int,
        resume: int | None,
        wall_clock: bool,
        tick_seconds: float,
        exit_when_idle: float | None,
        clock: Clock,
        n_parts: int,
        idle_seconds: float = 10.0,
        poll_max_seconds: float = 0.5,
        stop: Callable[[], bool] | None = None,
        ticks: TickBoard | None = None,
        on_close: Callable[[], None] | None = None,
    ):
        self._topic, self._partition = topic, partition
        self._ticks = ticks
        self._n_parts = n_parts
        self._stop = stop
        self._ended = False
        self._next = resume if resume is not None else OFFSET_BEGINNING
        self._reader = reader
        reader.assign(topic, partition, self._next)
        self._polls_seen = -1  # the reader's poll count at this partition's last turn
        self._on_close = on_close
        self._wall_clock = wall_clock
        self._tick_s = tick_seconds
        self._exit_when_idle = exit_when_idle
        self._clock = clock
        self._last_message = clock()
        self._last_emit = 0.0
        self._idle_s = idle_seconds
        self._idle = False
        self._at_end = False
        self._end_offset = -1  # where the log ended at the last end-of-log marker
        self._poll_max = poll_max_seconds

    def _max_wait(self) -> float:
        """How long a poll may wait now: ``poll_max_seconds``, less when a tick falls due sooner.

        A tick is due at the board's time, but never sooner than ``tick_seconds``
        after the last one (a shard whose clock cannot move yet keeps a time in
        the past on the board: waiting for the next allowed tick, not spinning).
        """
        board = self._ticks
        if not self._wall_clock:
            return self._poll_max
        if board is None:
            return min(self._poll_max, self._tick_s)
        at = board.next_due()
        if at is None:
            return self._poll_max
        next_tick = max(at / 1000, board.last_tick + self._tick_s)
        return min(self._poll_max, max(0.0, next_tick - self._clock()))

    def _messages(self) -> list[Any]:
        """The partition's next messages: its inbox, filled by a poll of the reader if nobody polled since."""
        reader = self._reader
        if not reader.inbox[self._partition] and reader.polls == self._polls_seen:
            reader.poll(self._partition, self._max_wait())
        self._polls_seen = reader.polls
        return reader.take(self._partition)

    def next_batch(self) -> list[SourceBatch]:
        if self._ended:
            raise StopIteration
        if self._stop is not None and self._stop():  # the run is to end here and resume (not idle: no final batch)
            raise StopIteration
        records = []
        for m in self._messages():
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._at_end = True  # read to the end of the log (as it is now)
                    self._end_offset = m.offset()
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
            offset: int = m.offset()  # set on every consumed message
            records.append((f"kafka:{m.topic()}/{m.partition()}/{offset}", m.value()))
            self._next = offset + 1
            self._at_end = False
        now = self._clock()
        quiet = now - self._last_message
        if records:
            self._last_message = now
        elif self._at_end and self._exit_when_idle is not None and quiet >= self._exit_when_idle:
            self._ended = self._read_to_end()
        # Idle: read to the end and quiet for a while. A partition slow to start (nothing read yet,
        # not at its end) is not idle: it may hold events the others' clock must wait for.
        was_idle = self._idle
        self._idle = self._ended or (
            self._at_end and not records and quiet >= self._idle_s and (was_idle or self._read_to_end())
        )
        tick = int(now * 1000) if self._wall_clock else None
        due = (
            tick is not None
            and self._partition == 0
            and now - self._last_emit >= self._tick_s
            and (self._ticks is None or self._ticks.due(tick))  # with a board: only when a shard needs one
        )
        if records or self._ended or due or self._idle != was_idle:
            self._last_emit = now
            if self._ticks is not None and self._partition == 0:
                self._ticks.last_tick = now
            part = f"{self._topic}/{self._partition}"
            return [
                SourceBatch(
                    records, tick, part, self._n_parts, final=self._ended, idle=self._idle, index=self._partition
                )
            ]
        return []

    def _read_to_end(self) -> bool:
        """Whether nothing is known past what this partition has read, asked before it idles or ends.

        The end-of-log marker (``_at_end``) says where the log ended when it was
        fetched. A worker's partitions share one consumer, and while another
        partition's backlog is delivered, this one's newer messages can wait in
        librdkafka's queue for seconds with the marker the last thing it saw
        (two processes at 20,000 events/s: a partition ended by
        ``exit_when_idle`` with a fifth of its events unread). When the last
        fetch saw more, the marker is stale and dropped; the next one comes when
        the reader gets there. When the consumer cannot say, the marker stands.
        """
        high = self._reader.high_watermark(self._topic, self._partition)
        if high is None or max(self._next, self._end_offset) >= high:
            return True
        self._at_end = False
        return False

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


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
        poll_max_seconds: float = 0.5,
        ticks: TickBoard | None = None,
        batch_wait_seconds: float = 0.1,
        fetch_wait_seconds: float = 0.1,
    ):
        self.config = consumer_config(bootstrap, extra_config or {}, fetch_wait_seconds)
        self.poll_max_seconds = poll_max_seconds
        self.batch_wait_seconds = batch_wait_seconds
        self.idle_seconds = idle_seconds
        self.topic = topic
        self.batch_size = batch_size
        self.wall_clock = wall_clock
        self.tick_seconds = tick_seconds
        self.exit_when_idle = exit_when_idle
        self.clock = clock
        self.ticks = ticks  # None: partition 0 ticks every tick_seconds (a run of several processes)
        # Set by the run: with balanced keys each process lists only the partitions whose state it holds.
        self.placement = Placement()
        self._n_parts = 0
        self._readers: dict[int, _TopicReader] = {}  # worker thread -> the consumer of its partitions
        self._readers_lock = threading.Lock()
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
        parts = sorted(topic.partitions)
        self._n_parts = len(parts)
        # Bytewax makes a listed partition's reader one of the workers that list it; listed here only on the
        # worker that holds its watermark state, its batches reach the shards without a hop between processes.
        return [str(p) for p in parts if self.placement.reads(p)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        worker = threading.get_ident()  # Bytewax builds and runs a worker's partitions on its thread
        with self._readers_lock:
            reader = self._readers.get(worker)
            if reader is None:
                reader = self._readers[worker] = _TopicReader(
                    dict(self.config), self.batch_size, self.batch_wait_seconds
                )
        partition = int(for_part)

        def close() -> None:
            with self._readers_lock:
                if reader.release(self.topic, partition):
                    self._readers.pop(worker, None)

        return _KafkaPartition(
            reader,
            self.topic,
            partition,
            resume_state,
            self.wall_clock,
            self.tick_seconds,
            self.exit_when_idle,
            self.clock,
            self._n_parts or len(self.list_parts()),
            self.idle_seconds,
            self.poll_max_seconds,
            self.stop,
            self.ticks,
            close,
        )
