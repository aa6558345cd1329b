"""What adding a product group costs: migrating a shard snapshot vs replaying every event (issue #14).

Random baskets over a catalog of 2,000 items; groups of 200 items each. A
shard is built by the stream's ShardProcessor with the first groups, then a
group is added: the snapshot is migrated (``stream.regroup``: the added group's
events replayed through CustomerState, merged) and compared, feature for
feature, with a shard built from scratch with every group; both are timed.
No services: the archive is the list of applied events.

    nice .venv/bin/python bench/regroup.py [--customers 2000] [--events 200000]
"""

from __future__ import annotations

import argparse
import pickle
import random
import time

from schemas.events import EventRecord
from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, ProductGroup
from stream.regroup import ArchivedEvent, ShardMigration
from stream.shard import CustomerShard, ShardInput, ShardProcessor, base_layout, group_keys, restore_shard, state_layout
from stream.state import StateConfig

HOUR = 3_600_000
DAY = 24 * HOUR


def build(groups: tuple[ProductGroup, ...], items: list[str]):
    catalog = GroupCatalog.build(groups, [{"item_id": i} for i in items])
    cfg = StateConfig.build(FeatureSpec(groups=catalog.names))
    return catalog, cfg, state_layout(cfg, groups), ShardProcessor(cfg, catalog, None, 6 * HOUR)


def run(processor: ShardProcessor, sh: CustomerShard, events: list[EventRecord]) -> list[EventRecord]:
    applied: list[EventRecord] = []
    for start in range(0, len(events), 5000):
        part = events[start : start + 5000]
        applied += processor.process(sh, ShardInput(0, part, None, watermark=part[-1].ts_ms)).applied
    return applied


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--groups", type=int, default=8, help="groups before the one added")
    a = ap.parse_args()
    rnd = random.Random(1)
    items = [f"i{k}" for k in range(2000)]
    groups = tuple(ProductGroup(name=f"g{k}", items=tuple(items[k * 200 : k * 200 + 200])) for k in range(a.groups + 1))
    before, after = groups[:-1], groups
    t0 = 1_500_000_000_000
    events = sorted(
        (
            EventRecord(
                f"u{rnd.randrange(a.customers)}",
                rnd.choice(items),
                rnd.randrange(3),
                t0 + rnd.randrange(400 * DAY),
                f"e{k}",
                1.0,
                rnd.randrange(1, 900),
                "b",
            )
            for k in range(a.events)
        ),
        key=lambda e: e.ts_ms,
    )
    _, _, old_layout, old_proc = build(before, items)
    catalog, cfg, layout, proc = build(after, items)
    sh = CustomerShard(0, old_layout)
    sh.base_layout, sh.groups = base_layout(old_proc.cfg), group_keys(before)
    applied = run(old_proc, sh, events)
    snapshot = pickle.dumps(sh)

    added_items = set(catalog.items_of(after[-1].name))
    by_user: dict[str, list[ArchivedEvent]] = {}
    for e in applied:
        if e.item_id in added_items:
            by_user.setdefault(e.user_id, []).append((e.ts_ms, e.type_index, e.value_cents, e.event_id))
    migration = ShardMigration(cfg, layout, base_layout(cfg), group_keys(after), lambda _: by_user)
    start = time.perf_counter()
    migrated = restore_shard(snapshot, layout, migration)
    t_migrate = time.perf_counter() - start

    clean = CustomerShard(0, layout)
    start = time.perf_counter()
    run(proc, clean, events)
    t_replay = time.perf_counter() - start

    def features(s: CustomerShard) -> dict[str, list[float]]:
        out = {}
        for user, state in s.customers.items():
            row = cfg.new_row()
            state.write_features(cfg, row)
            out[user] = row.tolist()
        return out

    equal = features(migrated) == features(clean)
    n_added = sum(len(v) for v in by_user.values())
    print(
        f"{len(sh.customers):,} customers, {len(applied):,} events, group added with {n_added:,} events: "
        f"migrate {t_migrate:.2f} s (unpickle + backfill), full replay {t_replay:.2f} s; features equal: {equal}"
    )


if __name__ == "__main__":
    main()
