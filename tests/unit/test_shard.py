"""The shard clock: the slowest live source partition sets it."""

from __future__ import annotations

from stream.shard import CustomerShard, row_version, shard_of


def test_clock_waits_for_every_partition_then_follows_the_slowest():
    sh = CustomerShard(0)
    sh.advance_watermark("p0", 2, 5_000, final=False)
    assert sh.clock is None  # p1 has not reported: p0 alone could make p1's events late
    sh.advance_watermark("p1", 2, 2_000, final=False)
    assert sh.clock == 2_000
    sh.advance_watermark("p0", 2, 9_000, final=False)
    assert sh.clock == 2_000
    sh.advance_watermark("p1", 2, 7_000, final=False)
    assert sh.clock == 7_000
    sh.advance_watermark("p1", 2, None, final=True)  # p1 ended: only p0 holds the clock back
    assert sh.clock == 9_000
    sh.advance_watermark("p0", 2, None, final=True)
    assert sh.clock == 9_000


def test_clock_never_moves_backwards():
    sh = CustomerShard(0)
    sh.advance_watermark("p0", 1, 10_000, final=False)
    sh.advance_watermark("p0", 1, 3_000, final=False)
    assert sh.clock == 10_000


def test_an_ended_partition_that_never_had_events_does_not_block_the_clock():
    sh = CustomerShard(0)
    sh.advance_watermark("p1", 2, None, final=True)
    sh.advance_watermark("p0", 2, 4_000, final=False)
    assert sh.clock == 4_000


def test_versions_order_by_event_time_then_sequence_and_shards_are_stable():
    assert row_version(1_000, 7) < row_version(1_000, 8) < row_version(1_001, 0)
    assert shard_of("customer-42", 8) == shard_of("customer-42", 8)
    assert {shard_of(f"c{i}", 4) for i in range(100)} == {0, 1, 2, 3}
