"""The local Kafka broker of tools/kafka/broker.py: topics, keyed and 1 MB messages, no loss across restarts.

Needs Java 17 (and Maven plus Maven Central the first time, to install the broker jars).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tools.kafka.broker import LocalBroker

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

PARTITIONS = 4
BIG = 1024 * 1024  # a 1 MB "poison" message must get through (broker message.max.bytes is 2 MB)

Record = tuple[int, int, bytes, bytes]  # partition, offset, key, value


def record(msg: Message) -> Record:
    return (msg.partition(), msg.offset(), msg.key(), msg.value())  # type: ignore[return-value]


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    """A fresh broker for this file; no Java or Maven is a failure, not a skip (as in test_kafka.py)."""
    with LocalBroker() as b:
        yield b


def create_topic(broker: LocalBroker, partitions: int = PARTITIONS) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # must outlive the future
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    return name


def produce(broker: LocalBroker, topic: str, messages: list[tuple[bytes, bytes]]) -> list[Record]:
    """Produce (key, value) pairs, idempotently and acks=all; return what the broker acknowledged."""
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": 2 * BIG,  # the client's own limit is 1,000,000 bytes by default
        }
    )
    acked: list[Record] = []

    def on_delivery(err, msg):
        assert err is None, err
        acked.append(record(msg))

    for key, value in messages:
        producer.produce(topic, value, key, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    return acked


def consume(broker: LocalBroker, topic: str, partitions: int = PARTITIONS) -> list[Record]:
    """Everything in the topic, read with assign() from the beginning up to each partition's high watermark."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "unused",  # assign() without commits: no group is joined
            "enable.auto.commit": False,
        }
    )
    try:
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        end = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign(tps)
        got: list[Record] = []
        next_offset = dict.fromkeys(end, 0)
        deadline = time.monotonic() + 60
        while any(next_offset[p] < end[p] for p in end):
            assert time.monotonic() < deadline, f"consumed up to {next_offset}, expected {end}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(r := record(msg))
            next_offset[r[0]] = r[1] + 1
        return got
    finally:
        consumer.close()


def keyed(n: int, tag: str = "") -> list[tuple[bytes, bytes]]:
    return [(f"user-{i % 97}".encode(), f"{tag}event-{i}".encode()) for i in range(n)]


def by_partition(records: list[Record]) -> dict[int, list[Record]]:
    out: dict[int, list[Record]] = {}
    for r in sorted(records):
        out.setdefault(r[0], []).append(r)
    return out


def test_bootstrap_is_loopback(broker: LocalBroker):
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.startup_seconds is not None and broker.startup_seconds < 60


def test_keyed_messages_and_a_1mb_message_round_trip(broker: LocalBroker):
    topic = create_topic(broker)
    big = (b"poison", bytes(range(256)) * (BIG // 256))
    acked = produce(broker, topic, [*keyed(1000), big])
    assert len(acked) == 1001

    got = consume(broker, topic)

    assert len(got) == 1001
    assert by_partition(got) == by_partition(acked)  # per partition: same offsets, keys and values, in order
    assert len(by_partition(got)) == PARTITIONS  # 97 keys spread over every partition
    partitions_of_key: dict[bytes, set[int]] = {}
    for p, _, key, _ in got:
        partitions_of_key.setdefault(key, set()).add(p)
    assert all(len(ps) == 1 for ps in partitions_of_key.values())  # one key, one partition
    for p, records in by_partition(got).items():
        assert [offset for _, offset, _, _ in records] == list(range(len(records))), p
    assert [v for _, _, k, v in got if k == b"poison"] == [big[1]]


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_messages_survive_a_broker_restart(broker: LocalBroker, how: str):
    topic = create_topic(broker)
    before = produce(broker, topic, keyed(500, "before-"))

    if how == "restart":
        broker.restart()  # SIGTERM, clean shutdown, start on the same port and data
    else:
        broker.kill()  # SIGKILL, as in a crash; acked data is in the OS page cache
        broker.start()
    after = produce(broker, topic, keyed(500, "after-"))

    got = consume(broker, topic)
    assert len(got) == 1000
    assert by_partition(got) == by_partition(before + after)
