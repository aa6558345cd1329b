"""The shard: its clock and retention horizon (from where its source partitions stand) and how it applies a batch."""

from __future__ import annotations

import pickle

import pytest

from schemas.events import EventRecord
from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, ProductGroup
from stream.shard import (
    CustomerShard,
    ShardInput,
    ShardProcessor,
    SnapshotMismatchError,
    restore_shard,
    shard_of,
    state_layout,
)
from stream.state import CustomerState, StateConfig

L = 1_000  # allowed lateness in these tests


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


def test_which_partitions_are_idle_is_not_carried_across_a_restart():
    """A clean stop leaves every partition idle; after the restart they must not count as idle."""
    sh = CustomerShard(0, "layout")
    for p in ("p0", "p1"):
        sh.advance(p, 2, 5_000 if p == "p0" else 2_000, None, idle=True, lateness=L)
    assert sh.clock == 5_000
    resumed = restore_shard(pickle.dumps(sh), "layout")
    assert resumed.idle == set() and resumed.watermarks == {"p0": 5_000, "p1": 2_000}


def test_shards_are_stable():
    assert shard_of("customer-42", 8) == shard_of("customer-42", 8)
    assert {shard_of(f"c{i}", 4) for i in range(100)} == {0, 1, 2, 3}


def test_a_basket_counts_once_per_line_and_a_repeated_line_is_a_duplicate():
    """Lines of one basket (one customer, time, type) are applied as a run; a resent line inside it is not counted."""
    groups = (ProductGroup(name="coffee", items=("c1", "c2")), ProductGroup(name="tea", items=("t1",)))
    catalog = GroupCatalog(groups, {"c1": (0, 2), "c2": (0, 2), "t1": (1, 2)})
    cfg = StateConfig.build(FeatureSpec(groups=("coffee", "tea")))
    t = 1_500_000_000_000
    lines = [("c1", "e1", 199), ("c2", "e2", 350), ("c1", "e1", 199), ("t1", "e3", 425)]  # e1 is sent twice
    basket = [EventRecord("u1", item, 2, t, eid, 1.0, cents, "test") for item, eid, cents in lines]
    later = EventRecord("u1", "t1", 2, t + 3_600_000, "e4", 1.0, 100, "test")  # next basket, own run
    batch = ShardInput(0, [*basket, later], None, watermark=later.ts_ms)
    out = ShardProcessor(cfg, catalog, None, 3_600_000).process(CustomerShard(0), batch)
    assert [reason.split(":")[0] for reason, _, _ in out.dead_letters] == ["duplicate"]
    assert len(out.applied) == 4
    expected = CustomerState()  # the same events applied one by one, the duplicate left out
    for rec in [basket[0], basket[1], basket[3], later]:
        expected.apply(cfg, rec.ts_ms, rec.type_index, catalog.groups_of(rec.item_id), rec.value_cents)
    row = cfg.new_row()
    expected.write_features(cfg, row)
    ((user, as_of, feats, _),) = out.features
    assert (user, as_of) == ("u1", t + 3_600_000)
    names = cfg.spec.names
    assert feats == {n: v for n, v in zip(names, row.tolist(), strict=True) if v or n.count("|") == 1}
    assert feats["grp=coffee|type=purchase|stat=count|win=1d"] == 2
    assert feats["grp=all|type=purchase|stat=value|win=1d"] == 10.74


def test_a_snapshot_resumes_only_into_the_layout_and_state_version_that_made_it():
    coffee = ProductGroup(name="coffee", categories=("COFFEE",))
    tea = ProductGroup(name="tea", categories=("TEA",))
    cfg = StateConfig.build(FeatureSpec(groups=("coffee", "tea")))
    layout = state_layout(cfg, (coffee, tea))
    catalog = GroupCatalog((coffee, tea), {"c1": (0, 2)})
    sh = CustomerShard(0, layout)
    ShardProcessor(cfg, catalog, None, 0).process(
        sh, ShardInput(0, [EventRecord("u1", "c1", 2, 10**12, "", 1.0, 99, "")], None, watermark=10**12)
    )
    snapshot = pickle.dumps(sh)
    assert restore_shard(snapshot, layout).customers.keys() == {"u1"}
    # The same names with another rule, another group order, other windows: the counters would mean something else.
    wider = ProductGroup(name="coffee", categories=("COFFEE", "TEA"))
    assert state_layout(cfg, (wider, tea)) != layout
    assert state_layout(StateConfig.build(FeatureSpec(groups=("tea", "coffee"))), (tea, coffee)) != layout
    fewer_windows = FeatureSpec(groups=("coffee", "tea"), windows=cfg.spec.windows[:-1])
    assert state_layout(StateConfig.build(fewer_windows), (coffee, tea)) != layout
    # A base rate is documentation, not a rule.
    assert state_layout(cfg, (coffee.model_copy(update={"base_rate_30d": 0.2}), tea)) == layout
    assert state_layout(cfg, (coffee, tea), n_shards=16) != layout  # customers would sit in other shards
    with pytest.raises(SnapshotMismatchError, match="other product groups, feature windows or number of shards"):
        restore_shard(snapshot, state_layout(cfg, (wider, tea)))
    sh.version = 1  # made by an older build
    with pytest.raises(SnapshotMismatchError, match="state version 1"):
        restore_shard(pickle.dumps(sh), layout)


def test_after_a_restart_every_customer_is_rewritten_once_when_no_killed_run_can_be_ahead():
    """A killed run wrote rows after its snapshot; the resumed run's own rows must end up the newest."""
    groups = (ProductGroup(name="coffee", items=("c1",)),)
    cfg = StateConfig.build(FeatureSpec(groups=("coffee",)))
    proc = ShardProcessor(cfg, GroupCatalog(groups, {"c1": (0, 1)}), None, L)
    t = 1_500_000_000_000
    events = [EventRecord(f"u{i}", "c1", 2, t + i, f"e{i}", 1.0, 100, "p0") for i in range(3)]
    sh = CustomerShard(0, "layout")
    proc.process(sh, ShardInput(0, events, None, "p0", 2, watermark=t + 2))
    proc.process(sh, ShardInput(0, [], None, "p1", 2, watermark=t + 5))
    # Event time: once every partition is idle, the input a killed run read has been read again.
    resumed = restore_shard(pickle.dumps(sh), "layout")
    resumed.resumed = True
    assert not proc.process(resumed, ShardInput(0, [], None, "p0", 2, idle=True)).features  # p1 still active
    out = proc.process(resumed, ShardInput(0, [], None, "p1", 2, idle=True))
    assert sorted(row.user_id for row in out.features) == ["u0", "u1", "u2"]
    assert not proc.process(resumed, ShardInput(0, [], None, "p1", 2, idle=True)).features  # once
    # Live: the first wall-clock tick is later than anything written before the restart.
    live = restore_shard(pickle.dumps(sh), "layout")
    live.resumed = True
    out = proc.process(live, ShardInput(0, [], t + 60_000, "p0", 2, watermark=t + 2))
    assert sorted(row.user_id for row in out.features) == ["u0", "u1", "u2"]
    assert not sh.resumed  # a run that was not resumed rewrites nothing
