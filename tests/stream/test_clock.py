"""The shard clock (expires windows) and retention horizon (forgets ids and cells), from where partitions stand."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import EventRecord
from stream.clock import late_reason
from stream.shard import CustomerShard

L = 1_000  # allowed lateness in these tests
HOUR = 3_600_000


def test_clock_waits_for_every_partition_then_follows_the_slowest():
    sh = CustomerShard(0)
    sh.advance("p0", 2, 5_000, None, idle=False, lateness=L)
    assert sh.clock is None  # p1 has not reported: p0 alone could expire windows p1's events still fall in
    sh.advance("p1", 2, 2_000, None, idle=False, lateness=L)
    assert sh.clock == 2_000
    sh.advance("p0", 2, 9_000, None, idle=False, lateness=L)
    assert sh.clock == 2_000
    sh.advance("p1", 2, 7_000, None, idle=False, lateness=L)
    assert sh.clock == 7_000
    sh.advance("p1", 2, None, None, idle=True, lateness=L)  # p1 idle: only p0 holds the clock back
    assert sh.clock == 9_000
    sh.advance("p0", 2, None, None, idle=True, lateness=L)
    assert sh.clock == 9_000


def test_clock_never_moves_backwards():
    sh = CustomerShard(0)
    sh.advance("p0", 1, 10_000, None, idle=False, lateness=L)
    sh.advance("p0", 1, 3_000, None, idle=False, lateness=L)
    assert sh.clock == 10_000


def test_an_idle_partition_that_never_had_events_blocks_neither_the_clock_nor_retention():
    sh = CustomerShard(0)
    sh.advance("p1", 2, None, None, idle=True, lateness=L)
    sh.advance("p0", 2, 4_000, None, idle=False, lateness=L)
    assert (sh.clock, sh.horizon) == (4_000, 4_000 - L)


def test_retention_follows_the_slowest_partition_idle_or_not():
    """An idle partition with a watermark may still send events as old as its watermark minus the lateness."""
    sh = CustomerShard(0)
    sh.advance("p0", 2, 5_000, None, idle=False, lateness=L)
    sh.advance("p1", 2, 3_000, None, idle=True, lateness=L)
    assert sh.clock == 5_000  # p1 is idle: it does not hold the clock back
    assert sh.horizon == 3_000 - L  # but its next event may be as old as 2,000
    sh.advance("p0", 2, 8_000, None, idle=False, lateness=L)
    assert (sh.clock, sh.horizon) == (8_000, 2_000)


def test_a_live_clock_is_the_wall_tick_and_retention_stays_in_event_time():
    """Downtime moves the wall clock, never the horizon: a backlog older than the lateness is still applied."""
    sh = CustomerShard(0)
    sh.advance("p0", 1, 1_000_000, 1_000_500, idle=False, lateness=L)
    assert (sh.clock, sh.horizon) == (1_000_500, 1_000_000 - L)
    sh.advance("p0", 1, None, 1_000_500 + 30 * 3_600_000, idle=False, lateness=L)  # 30 h later, nothing arrived
    assert (sh.clock, sh.horizon) == (1_000_500 + 30 * 3_600_000, 1_000_000 - L)


def test_a_live_clock_follows_the_tick_at_once_while_retention_waits_for_every_partition():
    """The wall clock needs no partition's watermark; the retention horizon does (p0 may still send older events)."""
    sh = CustomerShard(0)
    assert sh.advance("p1", 2, 5_000, 5_010, idle=False, lateness=L) == 5_010
    assert sh.horizon is None
    assert sh.advance("p0", 2, None, 4_000, idle=False, lateness=L) == 5_010  # an older tick, by another route
    assert sh.horizon is None
    assert sh.advance("p0", 2, 3_000, 6_000, idle=False, lateness=L) == 6_000
    assert sh.horizon == 3_000 - L


def test_advance_returns_the_clock_and_a_partition_losing_its_idleness_does_not_unset_it():
    sh = CustomerShard(0)
    assert sh.advance("p1", 2, None, None, idle=True, lateness=L) is None
    assert sh.advance("p0", 2, 4_000, None, idle=False, lateness=L) == 4_000
    # p1 becomes active but has delivered nothing yet: the clock is not known afresh, nor forgotten
    assert sh.advance("p1", 2, None, None, idle=False, lateness=L) == 4_000
    assert sh.clock == 4_000


def test_a_live_tick_earlier_than_the_clock_does_not_move_it_back():
    sh = CustomerShard(0)
    assert sh.advance("p0", 1, 1_000, 50_000, idle=False, lateness=L) == 50_000
    assert sh.advance("p0", 1, 2_000, 40_000, idle=False, lateness=L) == 50_000
    assert sh.horizon == 2_000 - L


def test_the_horizon_never_moves_backwards_even_when_a_new_partition_reports_older_events():
    sh = CustomerShard(0)
    sh.advance("p0", 1, 10_000, None, idle=False, lateness=L)
    assert sh.horizon == 9_000
    sh.advance("p1", 2, 2_000, None, idle=False, lateness=L)  # rescaled to two partitions
    assert sh.horizon == 9_000


def test_a_resumed_shard_rewrites_once_live_at_once_and_in_event_time_when_every_partition_is_idle():
    fresh = CustomerShard(0)
    fresh.advance("p0", 1, 1_000, None, idle=True, lateness=L)
    assert not fresh.rewrite_due(live=True, n_parts=1)  # nothing was written by an earlier run

    sh = CustomerShard(0)
    sh.resumed = True
    sh.advance("p0", 2, 1_000, None, idle=True, lateness=L)
    sh.advance("p1", 2, 2_000, None, idle=False, lateness=L)
    assert not sh.rewrite_due(live=False, n_parts=2)  # p1 may still deliver what the killed run had read
    sh.advance("p1", 2, None, None, idle=True, lateness=L)
    assert sh.rewrite_due(live=False, n_parts=2)
    assert not sh.rewrite_due(live=False, n_parts=2)  # once

    live = CustomerShard(0)
    live.resumed = True
    assert live.rewrite_due(live=True, n_parts=2)
    assert not live.rewrite_due(live=True, n_parts=2)


def test_late_reason_says_how_far_behind_the_horizon_in_hours():
    assert late_reason(10 * HOUR, 10 * HOUR - 90 * 60_000).startswith(
        "late: event time is 1.5 h before the shard's retention horizon"
    )


def test_tick_due_is_the_next_expiry_at_once_while_a_rewrite_is_owed_and_none_with_nobody_left():
    """What a shard posts to the TickBoard: a tick at its expiry heap's next time, and only while it has one."""
    from schemas.events import EventRecord
    from schemas.features import FeatureSpec
    from schemas.groups import GroupCatalog, ProductGroup
    from stream.shard import ShardInput, ShardProcessor
    from stream.state import StateConfig

    coffee = ProductGroup(name="coffee", items=("c1",))
    cfg = StateConfig.build(FeatureSpec(groups=("coffee",)))
    proc = ShardProcessor(cfg, GroupCatalog((coffee,), {"c1": (0, 1)}), None, L)
    sh = CustomerShard(0)
    assert sh.tick_due() is None  # no customer: no tick needed
    t = 1_500_000_000_000
    proc.process(sh, ShardInput(0, [EventRecord("u1", "c1", 2, t, "e1", 1.0, 99, "")], t, watermark=t))
    due = sh.tick_due()
    assert due is not None and due > t
    assert due == sh.customers["u1"].next_change(cfg)  # the customer's next change by the clock alone
    proc.process(sh, ShardInput(0, [], due - 1, watermark=t))  # a tick before it changes nothing
    assert sh.tick_due() == due
    proc.process(sh, ShardInput(0, [], due, watermark=t))  # the tick at it advances the customer
    assert sh.tick_due() is None or sh.tick_due() > due
    sh.resumed = True
    assert sh.tick_due() == 0  # a resumed shard's rewrite wants the first tick
    far = t + 10 * 365 * 24 * HOUR  # every window and recency edge passed: nothing left to change
    proc.process(sh, ShardInput(0, [], far, watermark=t))
    assert sh.resumed is False
    assert sh.tick_due() is None


batch_strategy = st.lists(
    st.tuples(
        st.sampled_from(["p0", "p1", "p2"]),
        st.lists(st.integers(0, 50), max_size=6),  # event times of the batch, in the partition's arrival order
        st.booleans(),  # the partition goes idle after it
    ),
    min_size=1,
    max_size=25,
)


@settings(deadline=None)
@given(batch_strategy)
def test_in_event_time_every_event_is_applied_once_never_after_the_clock_and_waiting_ones_in_arrival_order(batches):
    """``due_events`` as the shard calls it, batch by batch, then every partition idle (the end of a replay)."""
    sh = CustomerShard(0)
    arrived: list[EventRecord] = []
    applied: list[EventRecord] = []
    marks: dict[str, int] = {}
    parts = ["p0", "p1", "p2"]
    for k, (part, times, idle) in enumerate([*batches, *((p, [], True) for p in parts)]):
        watermark = marks[part] = max([marks.get(part, -1), *times])
        events = [EventRecord("u", "i", 2, ts, f"e{k}.{j}", 1.0, 1, part) for j, ts in enumerate(times)]
        arrived += events
        horizon = sh.horizon
        clock = sh.advance(part, 3, watermark if watermark >= 0 else None, None, idle, lateness=10)
        due = sh.due_events(events, horizon, clock, watermark if watermark >= 0 else None)
        assert all((clock is not None and e.ts_ms <= clock) or (horizon is not None and e.ts_ms < horizon) for e in due)
        assert all(clock is None or e.ts_ms > clock for e in sh.held)
        applied += due
    assert sorted(applied) == sorted(arrived) and sh.held == []  # nothing lost, nothing twice
    order = {id(e): i for i, e in enumerate(arrived)}
    for a, b in pairwise(applied):  # out of arrival order only when the earlier one still waited for the clock
        if order[id(a)] > order[id(b)]:
            assert b.ts_ms > a.ts_ms  # b was after the clock that a was due (or late) by
