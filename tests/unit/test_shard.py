"""The shard: its clock (the slowest live source partition sets it) and how it applies a batch."""

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
    row_version,
    shard_of,
    state_layout,
)
from stream.state import CustomerState, StateConfig


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


def test_a_basket_counts_once_per_line_and_a_repeated_line_is_a_duplicate():
    """Lines of one basket (one customer, time, type) are applied as a run; a resent line inside it is not counted."""
    groups = (ProductGroup(name="coffee", items=("c1", "c2")), ProductGroup(name="tea", items=("t1",)))
    catalog = GroupCatalog(groups, {"c1": (0, 2), "c2": (0, 2), "t1": (1, 2)})
    cfg = StateConfig.build(FeatureSpec(groups=("coffee", "tea")))
    t = 1_500_000_000_000
    lines = [("c1", "e1", 199), ("c2", "e2", 350), ("c1", "e1", 199), ("t1", "e3", 425)]  # e1 is sent twice
    basket = [EventRecord("u1", item, 2, t, eid, 1.0, cents, "test") for item, eid, cents in lines]
    later = EventRecord("u1", "t1", 2, t + 3_600_000, "e4", 1.0, 100, "test")  # next basket, own run
    out = ShardProcessor(cfg, catalog, None, 3_600_000).process(CustomerShard(0), ShardInput(0, [*basket, later], None))
    assert [reason.split(":")[0] for reason, _, _ in out.dead_letters] == ["duplicate"]
    assert len(out.applied) == 4
    expected = CustomerState()  # the same events applied one by one, the duplicate left out
    for rec in [basket[0], basket[1], basket[3], later]:
        expected.apply(cfg, rec.ts_ms, rec.type_index, catalog.groups_of(rec.item_id), rec.value_cents)
    row = cfg.new_row()
    expected.write_features(cfg, row)
    ((user, as_of, _, feats),) = out.features
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
        sh, ShardInput(0, [EventRecord("u1", "c1", 2, 10**12, "", 1.0, 99, "")], None)
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
    with pytest.raises(SnapshotMismatchError, match="other product groups or feature windows"):
        restore_shard(snapshot, state_layout(cfg, (wider, tea)))
    sh.version = 1  # made by an older build
    with pytest.raises(SnapshotMismatchError, match="state version 1"):
        restore_shard(pickle.dumps(sh), layout)
