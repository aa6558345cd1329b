"""An idle live stream ticks and polls with what is due, not with time (issue #15), against a real broker.

- the source: one poll waits for all of a worker's partitions and hands each
  its own messages; a quiet partition 0 sends a tick only when a shard posted
  a due time (``stream.ticks.TickBoard``);
- end to end: a customer whose window expires while nothing arrives is still
  refreshed and rescored when its expiry is due.
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from confluent_kafka import Producer

from propstream import app
from schemas.events import EventRecord
from schemas.mapping import ColumnMapping
from stream.shard import CustomerShard, ShardInput, ShardProcessor
from stream.sources.kafka import KafkaSource
from stream.ticks import TickBoard
from tests.integration.conftest import make_settings
from tests.integration.helpers import production_predict, query, state_config, stored_features, stored_scores
from tests.integration.kafka_helpers import kafka_settings, new_topic, one_basket_an_hour_ago, produce_events

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


def _turns(parts, seconds: float) -> list:
    """Every batch the partitions give in ``seconds`` of Bytewax-like turns (each partition in order)."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for p in parts:
            out += p.next_batch()
    return out


def _until_stopped(part, seconds: float) -> list:
    """The batches one partition gives in ``seconds`` of turns, or until it stops (``StopIteration``)."""
    out: list = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out += part.next_batch()
        except StopIteration:
            break
    return out


def test_one_poll_serves_every_partition_and_a_quiet_source_ticks_only_when_due(bootstrap):
    topic = new_topic(bootstrap, 2)
    board = TickBoard()
    src = KafkaSource(bootstrap, topic, wall_clock=True, tick_seconds=0.05, idle_seconds=1_000, ticks=board)
    src.list_parts()
    parts = [src.build_part("read", "0", None), src.build_part("read", "1", None)]
    reader = parts[0]._reader
    assert parts[1]._reader is reader  # one consumer for the worker's partitions
    try:
        quiet = _turns(parts, 2.0)
        assert quiet == []  # nothing due, nothing read, no partition gone idle: not even a tick
        # the wait doubles from 1 ms to poll_max (0.5 s): about a dozen polls in 2 s, not one per partition per 50 ms
        assert reader.polls <= 20

        producer = Producer({"bootstrap.servers": bootstrap})
        for i in range(3):
            producer.produce(topic, f"m1-{i}".encode(), partition=1)
        producer.produce(topic, b"m0-0", partition=0)
        producer.flush(10)
        got: dict[str, list] = {}
        end = time.monotonic() + 30
        while sum(len(v) for v in got.values()) < 4 and time.monotonic() < end:
            for b in _turns(parts, 0.1):
                got.setdefault(b.part, []).extend(b.records)
        assert got == {
            f"{topic}/1": [(f"kafka:{topic}/1/{i}", f"m1-{i}".encode()) for i in range(3)],
            f"{topic}/0": [(f"kafka:{topic}/0/0", b"m0-0")],
        }
        assert [p.snapshot() for p in parts] == [1, 3]

        _turns(parts, 0.2)  # let the record batches' ticks pass tick_seconds
        due = int(time.time() * 1000) + 400
        board.post(7, due)  # shard 7 has a customer due in 0.4 s
        ticks = []
        end = time.monotonic() + 30
        while not ticks and time.monotonic() < end:  # turns until the first tick (the shard then takes it)
            for p in parts:
                ticks += [b for b in p.next_batch() if b.tick_ms is not None]
        assert len(ticks) == 1
        assert ticks[0].part == f"{topic}/0"  # partition 0 carries the clock to every shard
        assert ticks[0].records == []
        assert ticks[0].tick_ms >= due
        board.post(7, None)  # the tick popped the customer: nothing due
        assert [b for b in _turns(parts, 1.0) if b.tick_ms is not None] == []
    finally:
        for p in parts:
            p.close()
    assert src._readers == {}  # the last partition closed the consumer


def test_an_idle_customer_expires_on_time_with_ticks_only_when_due(trained_dir, bootstrap, tmp_path, chdb_dsn, world):
    """A quiet customer is refreshed and rescored when its next feature change falls due, with no event after it.

    One partition, which does not go idle during the run (``idle_seconds`` 60): no batch but a tick can carry
    the clock between the events and the end of the run, 20 s after them (its final batch would be late).
    """
    topic = new_topic(bootstrap, 1)
    now_ms = int(time.time() * 1000)
    events = one_basket_an_hour_ago("idle-1", "idle", now_ms)
    produce_events(bootstrap, topic, events, tmp_path / "idle.jsonl")
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = kafka_settings(make_settings(tmp_path, world, chdb_dsn), bootstrap, topic, clock="wall")
    assert settings.kafka.tick_when_due

    # When the customer's features next change by the clock alone: the shard's own plan, from the same events.
    cfg = state_config(settings)
    oracle, shard = ShardProcessor(cfg, app.load_catalog(settings), None, 3_600_000), CustomerShard(0)
    purchase = cfg.type_names.index("purchase")
    records = [EventRecord(e["user_id"], "i0", purchase, e["timestamp"], e["event_id"], 1.0, 350, "t") for e in events]
    before = oracle.process(shard, ShardInput(0, records, now_ms, "t", 1, watermark=now_ms - 3_600_000 + 4))
    due_ms = shard.tick_due()
    assert due_ms is not None

    # The wall clock starts 8 s before that time when the source is built, then runs at its pace.
    started: list[float] = []

    def wall_clock() -> float:
        if not started:
            started.append(time.time())
        return due_ms / 1000 - 8 + (time.time() - started[0])

    source = KafkaSource(
        bootstrap, topic, wall_clock=True, tick_seconds=0.2, exit_when_idle=20, clock=wall_clock, idle_seconds=60
    )
    stats = app.run_stream(settings, source, ColumnMapping(), progress=None)
    assert stats.applied == 5

    as_of = query(
        settings, "SELECT toUnixTimestamp64Milli(as_of) FROM {db}.customer_features FINAL WHERE user_id = 'idle-1'"
    )[0][0]
    assert as_of >= due_ms  # refreshed by a tick at or after the due time, with no event after it
    assert as_of - due_ms < 5_000  # when it was due (a tick at most 0.2 s apart; slack for a loaded machine)
    feats = stored_features(settings)["idle-1"]
    after = oracle.process(shard, ShardInput(0, [], as_of, "t", 1)).features  # the oracle's row at that clock
    assert [f.user_id for f in after] == ["idle-1"]
    assert after[0].features != before.features[0].features  # the clock alone changed them
    index = cfg.spec.index
    want_row = cfg.new_row()
    for name, value in after[0].features.items():
        want_row[index[name]] = value
    assert feats.tolist() == want_row.tolist()
    scores = {g: s for (u, g), (s, _) in stored_scores(settings).items() if u == "idle-1"}
    assert scores
    for group, score in scores.items():
        want, _ = production_predict(settings, group, feats[None, :])
        assert score == want[0]  # the scores follow the expired features


def test_a_partition_whose_messages_wait_behind_the_others_is_neither_idle_nor_ended(bootstrap):
    """The end-of-log marker can be stale: ending or going idle checks the last fetch first (found by bench/suite.py).

    A worker's partitions share one consumer; while another partition's backlog
    is delivered, this one's newer messages can wait for seconds with the
    marker the last thing it saw (two processes at 20,000 events/s: a partition
    ended by ``exit_when_idle`` with a fifth of the events unread). Here
    partition 1's full inbox, never taken, holds every poll back.
    """
    from confluent_kafka import TopicPartition

    topic = new_topic(bootstrap, 2)
    now = [1_000.0]
    src = KafkaSource(
        bootstrap, topic, batch_size=5, wall_clock=False, exit_when_idle=5, idle_seconds=2, clock=lambda: now[0]
    )
    src.list_parts()
    parts = [src.build_part("read", "0", None), src.build_part("read", "1", None)]
    reader = parts[0]._reader
    try:
        end = time.monotonic() + 30
        while not all(p._at_end for p in parts) and time.monotonic() < end:  # both read to their (empty) end
            _turns(parts, 0.1)
        assert all(p._at_end for p in parts)
        producer = Producer({"bootstrap.servers": bootstrap})
        for i in range(5):
            producer.produce(topic, f"m1-{i}".encode(), partition=1)
        producer.flush(10)
        end = time.monotonic() + 30
        while len(reader.inbox[1]) < 5 and time.monotonic() < end:  # partition 0's turns fill 1's inbox
            parts[0].next_batch()
        assert len(reader.inbox[1]) == 5 and parts[0]._at_end
        for i in range(5):
            producer.produce(topic, f"m0-{i}".encode(), partition=0)
        producer.flush(10)
        end = time.monotonic() + 30  # librdkafka fetches them; they wait behind partition 1's inbox
        while reader._consumer.get_watermark_offsets(TopicPartition(topic, 0), cached=True)[1] < 5:
            assert time.monotonic() < end
            time.sleep(0.05)
        now[0] += 60  # quiet far longer than idle_seconds and exit_when_idle
        waiting = _until_stopped(parts[0], 1.0)
        assert [b for b in waiting if b.idle or b.final] == []  # its log holds 5 more: not idle, not ended

        assert [v for b in parts[1].next_batch() for _, v in b.records] == [f"m1-{i}".encode() for i in range(5)]
        got: list = []
        end = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < end:
            got += [r for b in _until_stopped(parts[0], 0.1) for r in b.records]
        assert [v for _, v in got] == [f"m0-{i}".encode() for i in range(5)]
        now[0] += 60
        finals = [b for b in _until_stopped(parts[0], 30) if b.final]  # read to the end now: it ends
        assert len(finals) == 1 and finals[0].idle
    finally:
        for p in parts:
            p.close()


def _batches_of_a_trickle(bootstrap: str, batch_wait: float) -> list[list]:
    """The record batches a busy source gives for 5 messages produced 0.1 s apart, after a first one."""
    topic = new_topic(bootstrap, 1)
    src = KafkaSource(
        bootstrap, topic, tick_seconds=5, idle_seconds=1_000, poll_max_seconds=5, batch_wait_seconds=batch_wait
    )
    src.list_parts()
    part = src.build_part("read", "0", None)
    producer = Producer({"bootstrap.servers": bootstrap})
    try:
        producer.produce(topic, b"first")
        producer.flush(10)
        end = time.monotonic() + 30
        while not [b for b in part.next_batch() if b.records] and time.monotonic() < end:
            pass  # the stream is busy from here: the poll that brought "first" sets the next poll's wait

        def trickle() -> None:
            for i in range(5):
                time.sleep(0.1)
                producer.produce(topic, f"m{i}".encode())
                producer.flush(10)

        thread = threading.Thread(target=trickle)
        thread.start()
        batches: list[list] = []
        end = time.monotonic() + 30
        while sum(map(len, batches)) < 5 and time.monotonic() < end:
            batches += [b.records for b in part.next_batch() if b.records]
        thread.join()
        return batches
    finally:
        part.close()


def test_a_busy_source_waits_batch_wait_seconds_for_more_messages_before_its_next_batch(bootstrap):
    # kafka.batch_wait_seconds: what arrives within the wait after a batch comes as one batch (one refresh)
    waited = _batches_of_a_trickle(bootstrap, batch_wait=2.0)
    assert [len(b) for b in waited] == [5]
    assert [v for _, v in waited[0]] == [f"m{i}".encode() for i in range(5)]
    # without the wait each message is read as it comes: 0.1 s apart, they leave in several batches
    assert len(_batches_of_a_trickle(bootstrap, batch_wait=0.0)) > 1


def test_a_stream_asks_the_broker_to_hold_its_fetches_for_fetch_wait_seconds_and_kafka_config_wins(tmp_path):
    from schemas.settings import KafkaSettings, Settings

    def source(**kafka: object) -> KafkaSource:
        settings = Settings(data_dir=tmp_path, kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", **kafka))
        built = app.build_source(settings, None)
        assert isinstance(built, KafkaSource)
        return built

    assert source().config["fetch.wait.max.ms"] == 100 and source().config["fetch.min.bytes"] == 1_048_576
    assert source(fetch_wait_seconds=0.2).config["fetch.wait.max.ms"] == 200
    assert source(fetch_wait_seconds=0.2, config={"fetch.wait.max.ms": 7}).config["fetch.wait.max.ms"] == 7


def test_a_lone_message_on_a_quiet_stream_is_read_though_far_below_the_fetch_size(bootstrap):
    topic = new_topic(bootstrap, 1)
    src = KafkaSource(bootstrap, topic, wall_clock=True, idle_seconds=1_000, fetch_wait_seconds=0.05)
    src.list_parts()
    part = src.build_part("read", "0", None)
    try:
        _until_stopped(part, 1.0)  # quiet: the broker answers the held fetches empty
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, b"alone", partition=0)
        producer.flush(10)
        got: list = []
        end = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
        while not got and time.monotonic() < end:
            got = [r for b in part.next_batch() for r in b.records]
        assert got == [(f"kafka:{topic}/0/0", b"alone")]
    finally:
        part.close()
