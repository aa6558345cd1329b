"""The shard: snapshots and layout, its expiry heap, and how a batch goes through it (events, clock, rows, scores)."""

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
from tests.stream.test_scoring import FakeModels

L = 1_000  # allowed lateness in these tests


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


# --------------------------------------------------------------------------- processing a batch

GROUPS = (ProductGroup(name="coffee", items=("c1",)), ProductGroup(name="tea", items=("t1",)))
CATALOG = GroupCatalog(GROUPS, {"c1": (0, 2), "t1": (1, 2)})
CFG = StateConfig.build(FeatureSpec(groups=("coffee", "tea")))
HOUR, DAY = 3_600_000, 86_400_000
T = 1_500_000_000_000 - 1_500_000_000_000 % DAY


def ev(user: str, item: str, ts: int, eid: str, type_index: int = 2) -> EventRecord:
    return EventRecord(user, item, type_index, ts, eid, 1.0, 100, f"src:{eid}")


def purchases_models() -> FakeModels:
    """Each group's score is its 365-day purchase count (an easy score to predict in a test)."""
    index = CFG.spec.index
    return FakeModels(
        columns=(
            index["grp=coffee|type=purchase|stat=count|win=365d"],
            index["grp=tea|type=purchase|stat=count|win=365d"],
        )
    )


def written(out) -> set[tuple[str, str, float, int]]:
    s = out.scores
    return set(zip(s.user_id, s.group_id, s.score, s.model_version, strict=True))


def test_only_moved_scores_are_written_and_a_promoted_model_rescores_every_customer():
    models = purchases_models()
    proc = ShardProcessor(CFG, CATALOG, models, L)
    sh = CustomerShard(0)

    def batch(*events, at=None):
        wm = at if at is not None else max(e.ts_ms for e in events)
        return proc.process(sh, ShardInput(0, list(events), None, watermark=wm))

    first = batch(ev("u1", "c1", T, "e1"), ev("u2", "t1", T, "e2"))
    assert written(first) == {("u1", "coffee", 1, 1), ("u1", "tea", 0, 1), ("u2", "coffee", 0, 1), ("u2", "tea", 1, 1)}
    viewed = batch(ev("u1", "c1", T + HOUR, "e3", type_index=0))  # features change, purchase counts do not
    assert [f.user_id for f in viewed.features] == ["u1"] and written(viewed) == set()
    bought = batch(ev("u1", "c1", T + 2 * HOUR, "e4"))
    assert written(bought) == {("u1", "coffee", 2, 1)}  # tea was rescored for u1 (``all`` changed), unmoved
    models.promote(1)
    promoted = batch(at=T + 2 * HOUR)
    assert written(promoted) == {("u1", "tea", 0, 2), ("u2", "tea", 1, 2)}
    assert list(promoted.features) == []  # no feature changed


def test_a_customer_is_packed_once_it_waited_a_generation_of_refreshes(monkeypatch):
    """Waiting customers are packed (an idle customer's memory, issue #15); one refreshed again soon is not."""
    monkeypatch.setattr("stream.shard.PACK_AFTER_REFRESHES", 2)  # generations of 2 refreshes (16 by default)
    models = purchases_models()
    proc = ShardProcessor(CFG, CATALOG, models, L)
    sh = CustomerShard(0)

    def unpacked_after(*events, at):
        proc.process(sh, ShardInput(0, list(events), None, watermark=at))
        return {u for u, s in sh.customers.items() if not s.packed}

    assert unpacked_after(ev("u1", "c1", T, "e1"), ev("u2", "t1", T, "e2"), at=T) == {"u1", "u2"}
    assert unpacked_after(ev("u1", "c1", T + 1, "e3"), at=T + 1) == {"u1", "u2"}  # generation 1 ends
    assert unpacked_after(ev("u3", "c1", T + 2, "e4"), at=T + 2) == {"u1", "u2", "u3"}
    assert unpacked_after(ev("u1", "c1", T + 3, "e5"), at=T + 3) == {"u1", "u3"}  # u2 waited all of generation 2
    assert unpacked_after(at=T + 4) == {"u1", "u3"}
    assert unpacked_after(at=T + 5) == set()  # nobody refreshed in generation 3
    models.promote(1)  # every customer rescored for the new model: read, then packed a generation later
    assert unpacked_after(at=T + 6) == {"u1", "u2", "u3"}
    unpacked_after(at=T + 7)
    unpacked_after(at=T + 8)
    assert unpacked_after(at=T + 9) == set()
    assert sorted(sh.customers) == ["u1", "u2", "u3"]


def test_a_customer_without_new_events_is_refreshed_when_the_clock_reaches_its_next_change():
    proc = ShardProcessor(CFG, CATALOG, None, L)
    sh = CustomerShard(0)
    proc.process(sh, ShardInput(0, [ev("u1", "c1", T, "e1")], None, watermark=T))
    due = sh.roster.due_of("u1")
    assert due is not None and T < due <= T + DAY  # the 1d window: its hourly bucket leaves after a day at the latest
    before = proc.process(sh, ShardInput(0, [ev("u2", "t1", due - 1, "e2")], None, watermark=due - 1))
    assert [f.user_id for f in before.features] == ["u2"]
    after = proc.process(sh, ShardInput(0, [ev("u2", "t1", due, "e3")], None, watermark=due))
    assert sorted(f.user_id for f in after.features) == ["u1", "u2"]
    (u1,) = [f for f in after.features if f.user_id == "u1"]
    expected = CustomerState()
    expected.apply(CFG, T, 2, (0, 2), 100)
    expected.advance(CFG, due)
    row = CFG.new_row()
    expected.write_features(CFG, row)
    assert u1.features == {n: v for n, v in zip(CFG.spec.names, row.tolist(), strict=True) if v or n.count("|") == 1}


def test_the_expiry_heap_ignores_entries_of_customers_rescheduled_or_dropped():
    sh = CustomerShard(0)
    sh.customers = {"a": CustomerState(), "b": CustomerState()}
    sh.customers["a"].apply(CFG, T, 2, (0, 2), 100)
    sh.customers["b"].apply(CFG, T, 2, (1, 2), 100)
    assert sh.reschedule(CFG, ["a", "b"]) == []
    at = sh.roster.due_of("a")
    assert at is not None
    assert sh.reschedule(CFG, ["a"]) == [] and len(sh.roster.heap) == 2  # same time: not pushed twice
    assert sh.roster.schedule("b", at + DAY)  # b was rescheduled later; its old entry is stale
    assert sh.next_due() == at
    assert sh.pop_due(at) == ["a"]
    assert sh.pop_due(at + DAY) == ["b"]
    assert sh.roster.heap == [] and sh.roster.due_times() == {} and sh.next_due() is None


def test_a_customer_left_without_history_is_dropped_with_its_cached_scores():
    proc = ShardProcessor(CFG, CATALOG, purchases_models(), L)
    sh = CustomerShard(0)
    proc.process(sh, ShardInput(0, [ev("u1", "c1", T, "e1"), ev("u2", "t1", T, "e2")], None, watermark=T))
    assert sh.roster.scored().keys() == {"u1", "u2"}
    later = T + 400 * DAY  # past the longest window and the recency cap
    out = proc.process(sh, ShardInput(0, [ev("u2", "t1", later, "e3")], None, watermark=later))
    assert sh.customers.keys() == sh.roster.scored().keys() == set(sh.roster) == {"u2"}
    assert "u1" not in sh.roster.due_times()
    assert ("u1", "coffee", 0, 1) in written(out)  # its last scores say it is gone


def test_events_wait_for_the_clock_before_their_customers_are_refreshed():
    proc = ShardProcessor(CFG, CATALOG, None, L)
    sh = CustomerShard(0)
    early = proc.process(sh, ShardInput(0, [ev("u1", "c1", T, "e1")], None, "p0", 2, watermark=T))
    assert early.applied == [] and list(early.features) == []  # p1 has not reported: no clock yet, the event waits
    ahead = proc.process(sh, ShardInput(0, [ev("u2", "c1", T + 2 * HOUR, "e2")], None, "p0", 2, watermark=T + 2 * HOUR))
    assert ahead.applied == []
    out = proc.process(sh, ShardInput(0, [], None, "p1", 2, watermark=T + HOUR))  # the clock: T + 2 h and T + 1 h
    assert [r.event_id for r in out.applied] == ["e1"]  # u2's event is after the clock: it waits on
    assert [f.user_id for f in out.features] == ["u1"] and out.features[0].as_of == T + HOUR
    last = proc.process(sh, ShardInput(0, [], None, "p1", 2, idle=True))  # p1 idle: the clock is p0's watermark
    assert [r.event_id for r in last.applied] == ["e2"] and [f.user_id for f in last.features] == ["u2"]
    assert last.features[0].as_of == T + 2 * HOUR and sh.held == []


def test_live_a_refresh_is_stamped_at_least_at_the_time_of_the_events_it_applied():
    """Two processes: partitions' batches reach a shard by different routes, so one with an older tick can come later.

    A batch's tick is read after its events, so the shard's clock (the refresh's
    as_of) covers them; it must not wait for a partition that has not reported
    yet and then stamp the refresh with that partition's older tick (found by
    bench/suite.py: events with no row at or after them).
    """
    proc = ShardProcessor(CFG, CATALOG, None, L)
    sh = CustomerShard(0)
    out = proc.process(sh, ShardInput(0, [ev("u1", "c1", T, "e1")], T + 5, "p1", 2, watermark=T))
    late = proc.process(sh, ShardInput(0, [], T - 100, "p0", 2, idle=True))  # p0 went idle before p1's batch
    stamped = [f.as_of for f in [*out.features, *late.features] if f.user_id == "u1"]
    assert stamped and min(stamped) >= T


def test_item_cells_past_the_horizon_are_forgotten_as_a_full_scan_would_though_only_looked_at_when_the_hour_moves():
    """``_item_activity`` skips the scan while the oldest kept hour stays; the cells must equal a scan's anyway."""
    proc = ShardProcessor(CFG, CATALOG, None, L)
    sh = CustomerShard(0)
    every: dict = {}  # the oracle: every accepted event's item cell
    t = T
    for i in range(160):
        t += 13 * 60_000 + (i % 7) * 1_000  # 13 minutes and a little: horizons land everywhere in the hour
        events = [ev(f"u{i % 5}", "c1" if i % 2 else "t1", t - (i % 3) * 400, f"e{i}")]
        out = proc.process(sh, ShardInput(0, events, None, watermark=t))
        for e in out.applied:
            cell = every.setdefault((e.ts_ms - e.ts_ms % HOUR, e.item_id, e.type_index), [0, 0.0, 0])
            cell[0] += 1
            cell[1] += e.quantity
            cell[2] += e.value_cents
        assert sh.horizon is not None
        assert sh.items == {k: v for k, v in every.items() if k[0] >= sh.horizon - HOUR}
        if i == 80:  # a restored shard holds other cells: the first batch after looks at them again
            sh = pickle.loads(pickle.dumps(sh))
    assert len(sh.items) < len(every)  # cells were forgotten along the way


def _last_rows(outs) -> tuple[dict, dict]:
    """Each customer's last feature vector and each (customer, group)'s last score, over outputs."""
    features, scores = {}, {}
    for out in outs:
        for f in out.features:
            features[f.user_id] = f.features
        sc = out.scores
        for user, group, s in zip(sc.user_id, sc.group_id, sc.score, strict=True):
            scores[user, group] = s
    return features, scores


def test_live_batches_handed_over_together_are_applied_in_turn_and_refreshed_once():
    """``process_many``: what one-by-one processing would leave, less the refreshes between the batches.

    Four partitions' live batches (Bytewax hands a shard all that reached it in
    one activation): a customer in several, a line sent again through another
    partition (a duplicate either way), a customer already known. The final
    feature vectors and scores equal one-by-one processing's (whose last rows
    are stamped earlier: nothing changed them since); the combined run
    refreshes each customer once, at the last tick, with one predict call per
    group instead of one per group and batch.
    """

    def batches():
        return [
            ShardInput(
                0, [ev("u1", "c1", T + 10, "e1"), ev("u2", "t1", T + 11, "e2")], T + 100, "p0", 4, watermark=T + 11
            ),
            ShardInput(
                0, [ev("u1", "t1", T + 20, "e3"), ev("u3", "c1", T + 21, "e4")], T + 200, "p1", 4, watermark=T + 21
            ),
            ShardInput(
                0, [ev("u2", "t1", T + 11, "e2"), ev("u4", "c1", T + 30, "e5")], T + 300, "p2", 4, watermark=T + 30
            ),
            ShardInput(0, [], T + 400, "p3", 4, idle=True),
        ]

    def shard_and_models():
        proc = ShardProcessor(CFG, CATALOG, FakeModels(), L)
        sh = CustomerShard(0)
        proc.process(sh, ShardInput(0, [ev("u4", "t1", T - DAY, "e0")], T, "p0", 4, watermark=T - DAY))  # known
        return proc, sh

    proc_one, one = shard_and_models()
    outs_one = [proc_one.process(one, inp) for inp in batches()]
    proc_many, many = shard_and_models()
    calls_before = sum(len(s.calls) for s in proc_many.scoring.models.scorers.values())
    out = proc_many.process_many(many, batches())

    assert [e.event_id for e in out.applied] == [e.event_id for o in outs_one for e in o.applied]
    assert [d.reason for d in out.dead_letters] == [d.reason for o in outs_one for d in o.dead_letters]
    assert [d.reason.split(":")[0] for d in out.dead_letters] == ["duplicate"]
    assert _last_rows([out]) == _last_rows(outs_one)
    assert sorted(f.user_id for f in out.features) == ["u1", "u2", "u3", "u4"]  # each refreshed once
    assert {f.as_of for f in out.features} == {T + 400} and len(out.scores) and out.scores.as_of == T + 400
    calls = sum(len(s.calls) for s in proc_many.scoring.models.scorers.values()) - calls_before
    assert calls == len(CATALOG.groups)  # one predict call per group for the four batches
    assert (many.clock, many.horizon, many.watermarks, many.idle) == (one.clock, one.horizon, one.watermarks, one.idle)


def test_the_shard_step_refreshes_live_batches_together_and_event_time_batches_one_by_one():
    """``ShardLogic.on_batch``: a replay's batches are its refreshes (score_history's resolution); live ones are not."""
    from stream.dataflow import ShardLogic

    logic = ShardLogic(ShardProcessor(CFG, CATALOG, FakeModels(), L), CustomerShard(0), snapshots=False)
    replay = [ShardInput(0, [ev("u1", "c1", T + i * DAY, f"r{i}")], None, watermark=T + i * DAY) for i in range(3)]
    outs, _ = logic.on_batch(replay)
    assert [o.scores.as_of for o in outs] == [T, T + DAY, T + 2 * DAY]  # a refresh per event-time batch
    now = T + 3 * DAY
    live = [
        ShardInput(0, [ev(f"u{i}", "t1", now + i, f"l{i}")], now + 10 + i, "p0", 1, watermark=now + i) for i in range(3)
    ]
    outs, _ = logic.on_batch(live)
    assert len(outs) == 1 and sorted(f.user_id for f in outs[0].features) == ["u0", "u1", "u2"]
    assert outs[0].scores.as_of == now + 12
    # two processes: a partition's batch can come by another route with an older tick; the refresh still covers all
    skewed = [ShardInput(0, [ev("u5", "t1", now + 50, "s1")], now + 60, "p0", 1, watermark=now + 50)]
    skewed.append(ShardInput(0, [ev("u6", "t1", now + 20, "s2")], now + 30, "p0", 1, watermark=now + 20))
    outs, _ = logic.on_batch(skewed)
    assert [(f.user_id, f.as_of) for f in outs[0].features] == [("u5", now + 60), ("u6", now + 60)]
