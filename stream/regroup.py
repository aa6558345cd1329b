"""Bringing a shard made for one set of product groups to another, exactly (issue #14).

A customer's counters of one group depend only on that group's events: the
``all`` totals count every event whatever the catalog, and a group's keys never
mix with another's. So a shard made for groups ``(a, b)`` becomes one for
``(a, c, b)`` without a full replay:

- the keys of ``a``, ``b`` and ``all`` are renumbered (a key is
  ``group * n_types + type``), and so are the shard's per-group caches (last
  written scores, model versions used, pending changes);
- the keys of a removed group (or of one whose membership rules changed) are
  dropped;
- the keys of an added group are computed by replaying that group's archived
  events (ClickHouse ``events``: the applied events) through the same state
  machine, ``CustomerState``, up to the customer's clock, and merged in.

Window sums, active buckets and recency at a clock depend only on which events
were applied, not on their order or on when the clock moved (DESIGN.md,
invariant 4), so the result equals a shard that counted the added group all
along. Only events the shard had applied count: an archived event is taken
when it is older than the shard's retention horizon (anything that old was
applied before the snapshot or refused) or when its id is among those the
customer has seen.

>>> from schemas.features import FeatureSpec
>>> day = 86_400_000
>>> old_cfg = StateConfig.build(FeatureSpec(groups=("tea",)))
>>> new_cfg = StateConfig.build(FeatureSpec(groups=("tea", "coffee")))
>>> s = CustomerState()
>>> _ = s.apply(old_cfg, 100 * day, 2, (0, 1), 300, "e1")  # a tea purchase
>>> _ = s.apply(old_cfg, 101 * day, 2, (1,), 450, "e2")  # coffee: only ``all`` counted it
>>> renumber(s, {0: 0, 1: 2}, old_cfg.n_types)
>>> backfill(new_cfg, s, 1, [(101 * day, 2, 450, "e2")], horizon=None)
True
>>> row = new_cfg.new_row(); s.write_features(new_cfg, row)
>>> float(row[new_cfg.spec.index["grp=coffee|type=purchase|stat=value|win=7d"]])
4.5
>>> float(row[new_cfg.spec.index["grp=all|type=purchase|stat=value|win=7d"]])
7.5
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from stream.state import CustomerState, StateConfig

if TYPE_CHECKING:
    from stream.shard import CustomerShard

ArchivedEvent = tuple[int, int, int, str]  # (ts ms, type index, value in cents, event_id)
GroupArchive = Callable[[str], Mapping[str, list[ArchivedEvent]]]  # group name -> customer -> its events


def renumber(state: CustomerState, remap: Mapping[int, int], n_types: int) -> None:
    """Move a customer's counters of group ``g`` to ``remap[g]``; drop those of groups not in ``remap``."""
    state.renumber(remap, n_types)


def backfill(
    cfg: StateConfig, state: CustomerState, group: int, events: list[ArchivedEvent], horizon: int | None
) -> bool:
    """Add group ``group``'s counters to ``state`` from its archived ``events``; True when any was applied.

    The events run through a fresh ``CustomerState`` counting only that group,
    which is then moved to the customer's clock; its buckets, window sums and
    last event time are merged into ``state`` (whose keys of that group are empty).
    """
    clock = state.clock
    if clock is None:
        return False
    seen = state.seen
    mine = sorted(
        (ts, t, cents)
        for ts, t, cents, event_id in events
        if ts <= clock and ((horizon is not None and ts < horizon) or event_id in seen)
    )
    if not mine:
        return False
    part = CustomerState()
    i = 0
    while i < len(mine):  # one update per (time, type), as the stream counts a basket
        ts, t, _ = mine[i]
        j, cents = i, 0
        while j < len(mine) and mine[j][:2] == (ts, t):
            cents += mine[j][2]
            j += 1
        part.apply_run(cfg, ts, t, {group: [j - i, cents]}, j - i)
        i = j
    part.advance(cfg, clock)
    state.merge(part)
    return True


class ShardMigration:
    """Brings a restored shard to this run's groups (``restore_shard``'s ``migrate``).

    ``archive`` reads a group's applied events from the events archive, once
    per group per process (cached: every shard of the process asks for it).
    """

    def __init__(
        self,
        cfg: StateConfig,
        layout: str,
        base: str,
        groups: tuple[tuple[str, str], ...],
        archive: GroupArchive | None,
    ):
        self.cfg = cfg
        self.layout = layout
        self.base = base
        self.groups = groups
        self.archive = archive
        self._read: dict[str, Mapping[str, list[ArchivedEvent]]] = {}

    def __call__(self, sh: CustomerShard) -> bool:
        """Migrate ``sh`` in place; False when it cannot (other windows or types, no record of its groups)."""
        if sh.groups is None or sh.base_layout != self.base:
            return False
        known = set(sh.groups)
        added = [gi for gi, gk in enumerate(self.groups) if gk not in known]
        if added and self.archive is None:
            return False
        events = {gi: self._events(self.groups[gi][0]) for gi in added}
        migrate_shard(sh, self.cfg, self.groups, events)
        sh.layout = self.layout
        return True

    def _events(self, group: str) -> Mapping[str, list[ArchivedEvent]]:
        got = self._read.get(group)
        if got is None:
            got = self._read[group] = self.archive(group)  # type: ignore[misc]  # checked by the caller
        return got


def migrate_shard(
    sh: CustomerShard,
    cfg: StateConfig,
    groups: tuple[tuple[str, str], ...],
    added_events: Mapping[int, Mapping[str, list[ArchivedEvent]]],
) -> None:
    """Renumber ``sh`` from its groups (``sh.groups``) to ``groups`` and backfill the added ones.

    ``added_events``: for each added group (its index in ``groups``), customer -> archived events.
    """
    old = sh.groups or ()
    where = {gk: i for i, gk in enumerate(groups)}
    remap = {oi: where[gk] for oi, gk in enumerate(old) if gk in where}
    remap[len(old)] = cfg.all_index  # ``all`` is last in both
    for state in sh.customers.values():
        renumber(state, remap, cfg.n_types)
    src = [oi for oi in remap if oi < len(old)]
    dst = [remap[oi] for oi in src]
    sh.roster.regroup(len(groups), src, dst)  # last written score per group (NaN: none)
    sh.model_versions = {remap[g]: v for g, v in sh.model_versions.items() if g in remap}
    sh.pending = {u: {remap[g] for g in changed if g in remap} for u, changed in sh.pending.items()}
    for gi, by_user in added_events.items():
        for user, state in sh.customers.items():
            events = by_user.get(user)
            if events and backfill(cfg, state, gi, events, sh.horizon):
                sh.pending.setdefault(user, set()).add(gi)  # its features and the group's score are written
    sh.groups = groups
