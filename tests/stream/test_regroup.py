"""Migrating a shard snapshot to other product groups equals a shard that had them all along (issue #14)."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from schemas.events import EventRecord
from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, ProductGroup
from stream.regroup import ArchivedEvent, ShardMigration
from stream.shard import (
    CustomerShard,
    ShardInput,
    ShardProcessor,
    SnapshotMismatchError,
    base_layout,
    group_keys,
    restore_shard,
    state_layout,
)
from stream.state import StateConfig

HOUR = 3_600_000
DAY = 24 * HOUR
LATENESS = 6 * HOUR
ITEMS = [f"i{k}" for k in range(12)]
COFFEE = ProductGroup(name="coffee", items=tuple(ITEMS[0:4]))
TEA = ProductGroup(name="tea", items=tuple(ITEMS[3:7]))  # i3 is in both
CAKE = ProductGroup(name="cake", items=tuple(ITEMS[6:10]))


class Setup:
    """A processor for one set of groups, and the shards it makes."""

    def __init__(self, groups: tuple[ProductGroup, ...]):
        self.groups = groups
        self.catalog = GroupCatalog.build(groups, [{"item_id": i} for i in ITEMS])
        self.cfg = StateConfig.build(FeatureSpec(groups=self.catalog.names))
        self.layout = state_layout(self.cfg, groups)
        self.processor = ShardProcessor(self.cfg, self.catalog, None, LATENESS)

    def new_shard(self) -> CustomerShard:
        sh = CustomerShard(0, self.layout)
        sh.base_layout, sh.groups = base_layout(self.cfg), group_keys(self.groups)
        return sh

    def features(self, sh: CustomerShard) -> dict[str, dict[str, float]]:
        out = {}
        for user, state in sh.customers.items():
            row = self.cfg.new_row()
            state.write_features(self.cfg, row)
            out[user] = dict(zip(self.cfg.spec.names, row.tolist(), strict=True))
        return out


def events(seed: int, n: int = 3000) -> list[EventRecord]:
    """Baskets of 12 customers over 400 days, a few hours out of order, some lines sent twice."""
    rnd = random.Random(seed)
    t0 = 1_500_000_000_000
    out: list[EventRecord] = []
    for k in range(n):
        ts = t0 + k * (400 * DAY // n) - rnd.randrange(0, 4 * HOUR)
        eid = f"e{k}" if rnd.random() > 0.03 or not out else out[-1].event_id
        out.append(
            EventRecord(
                f"u{rnd.randrange(12)}", rnd.choice(ITEMS), rnd.randrange(3), ts, eid, 1.0, rnd.randrange(1, 900), "t"
            )
        )
    return out


def run(setup: Setup, sh: CustomerShard, batch: list[EventRecord], applied: list[EventRecord]) -> None:
    for start in range(0, len(batch), 97):
        part = batch[start : start + 97]
        out = setup.processor.process(sh, ShardInput(0, part, None, watermark=max(e.ts_ms for e in part)))
        applied += out.applied


def archive_of(setup: Setup, applied: list[EventRecord]):
    def read(group: str) -> dict[str, list[ArchivedEvent]]:
        items = set(setup.catalog.items_of(group))
        by_user: dict[str, list[ArchivedEvent]] = {}
        for e in applied:
            if e.item_id in items:
                by_user.setdefault(e.user_id, []).append((e.ts_ms, e.type_index, e.value_cents, e.event_id))
        return by_user

    return read


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((COFFEE, TEA), (COFFEE, CAKE, TEA)),  # a group added in the middle
        ((COFFEE, TEA), (TEA,)),  # one removed
        ((COFFEE, TEA), (CAKE, TEA, COFFEE)),  # added and reordered
        ((COFFEE, TEA), (COFFEE, TEA.model_copy(update={"items": tuple(ITEMS[3:9])}))),  # rules changed
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_a_resume_with_other_groups_equals_a_run_that_had_them_all_along(before, after, seed):
    log = events(seed)
    cut = len(log) * 2 // 3
    old, new = Setup(before), Setup(after)

    clean = new.new_shard()
    run(new, clean, log, [])

    first, applied = old.new_shard(), []
    run(old, first, log[:cut], applied)
    archive = archive_of(new, applied)
    migration = ShardMigration(new.cfg, new.layout, base_layout(new.cfg), group_keys(after), archive)
    resumed = restore_shard(pickle.dumps(first), new.layout, migration)
    assert resumed.layout == new.layout and resumed.groups == group_keys(after)
    run(new, resumed, log[cut:], [])

    assert new.features(resumed) == new.features(clean)
    assert {u: s.next_change(new.cfg) for u, s in resumed.customers.items()} == {
        u: s.next_change(new.cfg) for u, s in clean.customers.items()
    }
    added = [g.name for g in after if g.rules_key() not in {b.rules_key() for b in before}]
    if added:  # the backfill did something: some customer has counts in an added group
        assert any(
            v for f in new.features(resumed).values() for k, v in f.items() if k.startswith(f"grp={added[0]}|type")
        )


def test_a_migrated_snapshot_of_a_shard_midway_equals_the_clean_shard_at_the_cut():
    """Right after the migration (before any new event) the features equal a clean run's at the same point."""
    log = events(3)
    cut = len(log) // 2
    old, new = Setup((COFFEE, TEA)), Setup((COFFEE, CAKE, TEA))
    clean, applied = new.new_shard(), []
    run(new, clean, log[:cut], [])
    first = old.new_shard()
    run(old, first, log[:cut], applied)
    migration = ShardMigration(
        new.cfg, new.layout, base_layout(new.cfg), group_keys(new.groups), archive_of(new, applied)
    )
    resumed = restore_shard(pickle.dumps(first), new.layout, migration)
    assert new.features(resumed) == new.features(clean)
    cake = new.catalog.names.index("cake")
    assert any(cake in changed for changed in resumed.pending.values())  # their rows and cake's scores get written


def test_events_applied_after_the_snapshot_are_not_backfilled_twice():
    """The archive may hold events a killed run applied after its last snapshot: the resumed run applies them.

    Some of them are late (before the customers' clocks, within the allowed
    lateness), so only the ids the snapshot had seen tell them apart.
    """
    log = events(4)
    cut = len(log) // 2
    old, new = Setup((COFFEE, TEA)), Setup((COFFEE, CAKE, TEA))
    first, applied = old.new_shard(), []
    run(old, first, log[:cut], applied)
    snapshot = pickle.dumps(first)
    clock = first.clock
    assert clock is not None
    late = [
        EventRecord(user, ITEMS[7], 2, min(clock, state.clock or clock) - HOUR, f"late-{user}", 1.0, 333, "t")
        for user, state in first.customers.items()
    ]
    rest = late + log[cut:]
    run(old, first, rest[:300], applied)  # written to the archive, then the run was killed
    migration = ShardMigration(
        new.cfg, new.layout, base_layout(new.cfg), group_keys(new.groups), archive_of(new, applied)
    )
    resumed = restore_shard(snapshot, new.layout, migration)
    run(new, resumed, rest, [])
    clean = new.new_shard()
    run(new, clean, log[:cut] + rest, [])
    assert new.features(resumed) == new.features(clean)


def test_a_snapshot_is_refused_when_windows_differ_or_nothing_can_backfill():
    old, new = Setup((COFFEE, TEA)), Setup((COFFEE, CAKE, TEA))
    first = old.new_shard()
    run(old, first, events(5, 300), [])
    no_archive = ShardMigration(new.cfg, new.layout, base_layout(new.cfg), group_keys(new.groups), None)
    with pytest.raises(SnapshotMismatchError, match="other product groups"):
        restore_shard(pickle.dumps(first), new.layout, no_archive)
    other_shards = ShardMigration(new.cfg, new.layout, base_layout(new.cfg, 4), group_keys(new.groups), lambda g: {})
    with pytest.raises(SnapshotMismatchError):
        restore_shard(pickle.dumps(first), new.layout, other_shards)
    removed = Setup((TEA,))  # removing needs no archive
    fewer = ShardMigration(removed.cfg, removed.layout, base_layout(removed.cfg), group_keys((TEA,)), None)
    assert restore_shard(pickle.dumps(first), removed.layout, fewer).groups == group_keys((TEA,))


def test_scores_cache_and_model_versions_follow_their_groups():
    old, new = Setup((COFFEE, TEA)), Setup((CAKE, TEA))
    sh = old.new_shard()
    run(old, sh, events(6, 300), [])
    users = list(sh.customers)
    sh.roster.put(users, np.tile([0.1, 0.2], (len(users), 1)))
    sh.model_versions = {0: 3, 1: 5}
    migration = ShardMigration(new.cfg, new.layout, base_layout(new.cfg), group_keys(new.groups), lambda g: {})
    moved = restore_shard(pickle.dumps(sh), new.layout, migration)
    assert moved.model_versions == {1: 5}  # tea is now index 1; coffee's model is gone
    assert moved.roster.scored().keys() == set(users)
    for last in moved.roster.scored().values():
        assert len(last) == 2 and np.isnan(last[0]) and last[1] == 0.2


def test_an_added_group_gets_a_score_column_of_its_own_and_no_cached_score():
    old, new = Setup((COFFEE, TEA)), Setup((COFFEE, CAKE, TEA))
    sh = old.new_shard()
    run(old, sh, events(7, 300), [])
    users = list(sh.customers)
    sh.roster.put(users, np.tile([0.1, 0.2], (len(users), 1)))
    migration = ShardMigration(new.cfg, new.layout, base_layout(new.cfg), group_keys(new.groups), lambda g: {})
    moved = restore_shard(pickle.dumps(sh), new.layout, migration)
    scored = moved.roster.scored()
    assert scored.keys() == set(users) and moved.roster.due_times() == sh.roster.due_times()
    for last in scored.values():  # coffee stays 0, cake (new) is 1 with nothing written yet, tea moved to 2
        assert len(last) == 3 and last[0] == 0.1 and np.isnan(last[1]) and last[2] == 0.2
