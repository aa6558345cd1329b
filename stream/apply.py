"""Applying a batch of events to a shard's customers and item-activity cells.

Events are taken in arrival order. One older than the shard's retention
horizon, or whose event_id its customer has already seen (a second delivery),
becomes a dead letter with its reason. The rest are applied: consecutive
events of one customer, time and type (a basket's lines) as one update of the
customer's state (``CustomerState.apply_run``, exact: the same as one by one),
and each to its item's hourly cell ``(hour_ms, item_id, type_index) ->
[events, quantity, cents]``.

The loop is inlined: it runs for every event, so it calls only what each
event needs (its id's digest, remembering it) and, per basket, the count of
its events into their groups (``stream._cells.count_run``, compiled: a
dictionary lookup per event and group was most of the loop, BENCHMARKS.md
6za) and one state update.
Duplicates are checked against one set of digests per customer and batch,
not a scan of the customer's ids per event (live traffic: many customers, a
basket or two each per batch; BENCHMARKS.md section 1d).

>>> from schemas.events import EventRecord
>>> from schemas.features import FeatureSpec
>>> from schemas.groups import GroupCatalog, ProductGroup
>>> from stream.state import StateConfig
>>> catalog = GroupCatalog((ProductGroup(name="coffee", items=("c1",)),), {"c1": (0, 1), "x": (1,)})
>>> cfg = StateConfig.build(FeatureSpec(groups=("coffee",)))
>>> t = 1_500_000_000_000
>>> basket = [EventRecord("u1", item, 2, t, eid, 1.0, 250, "f:1") for item, eid in [("c1", "e1"), ("x", "e2")]]
>>> customers, items = {}, {}
>>> batch = apply_events(cfg, catalog, customers, items, [*basket, basket[0]], horizon=None)
>>> [rec.event_id for rec in batch.applied], [d.reason for d in batch.dead_letters]
(['e1', 'e2'], ["duplicate: event_id 'e1' was already applied"])
>>> {user: sorted(groups) for user, groups in batch.dirty.items()}  # coffee (0) and all (1) changed
{'u1': [0, 1]}
>>> [(row.item_id, row.type, row.events, row.value) for row in sorted(item_rows(batch.items, 0, cfg.type_names))]
[('c1', 'purchase', 1, 2.5), ('x', 'purchase', 1, 2.5)]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from schemas.events import DeadLetter, EventRecord, ItemActivityRow
from schemas.groups import GroupCatalog
from stream._cells import count_run
from stream.clock import HOUR_MS, late_reason
from stream.state import CustomerState, StateConfig, event_digest

ItemKey = tuple[int, str, int]  # (hour_ms, item_id, type_index)


@dataclass
class AppliedEvents:
    """What applying a batch did."""

    dirty: dict[str, set[int]]  # customer -> groups (``all`` last) whose features changed
    applied: list[EventRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    items: dict[ItemKey, list] = field(default_factory=dict)  # the item-activity cells the batch touched, by key


def apply_events(
    cfg: StateConfig,
    catalog: GroupCatalog,
    customers: dict[str, CustomerState],
    items: dict[ItemKey, list],
    events: list[EventRecord],
    horizon: int | None,
    dirty: dict[str, set[int]] | None = None,
) -> AppliedEvents:
    """Apply ``events`` to ``customers`` (new ones are added) and ``items``; refuse duplicates and the too late.

    ``horizon``: the shard's retention horizon (events before it are dead
    letters). ``dirty``, updated in place when given: customers already
    changed whose features are still to be refreshed.
    """
    out = AppliedEvents({} if dirty is None else dirty)
    dirty = out.dirty
    dead = out.dead_letters
    applied = out.applied
    touched_items = out.items
    item_groups, only_all = catalog.groups_lookup()  # catalog.groups_of, without a call per event
    type_names = cfg.type_names
    n_groups = cfg.all_index + 1
    # Consecutive events of one customer, time and type (a basket's lines) are counted as one run.
    run_key = ("", 0, 0)  # (user, ts, type); no ids: no run yet
    run_state = CustomerState()
    run_groups: list[tuple[int, ...]] = []  # each event of the run: its item's groups (``all`` included)
    run_cents: list[int] = []  # and its value in cents
    run_ids: list[int] = []  # digests of the run's event ids, kept by its customer once the run is applied
    # customer -> digests of the ids it has seen: one set per customer and batch, not a scan of its ids per event
    seen: dict[str, set[int]] = {}
    for rec in events:
        user, item, type_index, ts, event_id, quantity, cents, _ = rec
        if horizon is not None and ts < horizon:  # only from a partition that was idle without a watermark
            dead.append(DeadLetter(late_reason(horizon, ts), rec.to_json(type_names), rec.source))
            continue
        state = customers.get(user)
        if state is None:
            state = customers[user] = CustomerState()
            ids = seen[user] = set()
        elif user in seen:
            ids = seen[user]
        else:
            ids = seen[user] = state.seen_digests()
        digest = event_digest(event_id)
        if digest in ids:
            reason = f"duplicate: event_id {event_id!r} was already applied"
            dead.append(DeadLetter(reason, rec.to_json(type_names), rec.source))
            continue
        ids.add(digest)
        key = (user, ts, type_index)
        if key != run_key:
            if run_ids:
                _apply_run(cfg, dirty, run_key, run_state, count_run(run_groups, run_cents, n_groups), run_ids)
            run_key, run_state, run_groups, run_cents, run_ids = key, state, [], [], []
        run_ids.append(digest)
        run_groups.append(item_groups.get(item, only_all))
        run_cents.append(cents)
        applied.append(rec)
        item_key = (ts - ts % 3_600_000, item, type_index)  # the hour (HOUR_MS) it falls in
        cell = items.get(item_key)
        if cell is None:
            cell = items[item_key] = [1, quantity, cents]
        else:
            cell[0] += 1
            cell[1] += quantity
            cell[2] += cents
        touched_items[item_key] = cell  # the cell itself: its row needs no second lookup (a tuple key's hash)
    if run_ids:
        _apply_run(cfg, dirty, run_key, run_state, count_run(run_groups, run_cents, n_groups), run_ids)
    return out


def _apply_run(
    cfg: StateConfig,
    dirty: dict[str, set[int]],
    key: tuple[str, int, int],
    state: CustomerState,
    counts: dict[int, list[int]],
    ids: list[int],
) -> None:
    """One basket (events of one customer, time and type) as one state update; marks its changed groups.

    ``ids``: the digests of its events' ids, one per event, kept by the customer.
    """
    user, ts, type_index = key
    state.remember(ids, ts)
    changed = state.apply_run(cfg, ts, type_index, counts, len(ids))
    marked = dirty.get(user)
    if marked is None:
        dirty[user] = set(changed)
    else:
        marked.update(changed)


@dataclass
class ItemColumns:
    """``item_activity`` rows of one shard output, column-oriented (like ``ScoreColumns``); one shard.

    Iterating gives ``ItemActivityRow`` records.
    """

    shard: int = 0
    hour: list[int] = field(default_factory=list)  # ms, start of the hour
    item_id: list[str] = field(default_factory=list)
    type: list[str] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    quantity: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows: Sequence[ItemActivityRow]) -> ItemColumns:
        """Columns of records of one shard (tests, small writers)."""
        if len({r.shard for r in rows}) > 1:
            msg = "item rows of one output come from one shard"
            raise ValueError(msg)
        if not rows:
            return cls()
        hour, item, type_, _, events, quantity, value = (list(c) for c in zip(*rows, strict=True))
        return cls(rows[0].shard, hour, item, type_, events, quantity, value)

    def __len__(self) -> int:
        return len(self.hour)

    def __iter__(self) -> Iterator[ItemActivityRow]:
        for hour, item, type_, n, qty, value in zip(
            self.hour, self.item_id, self.type, self.events, self.quantity, self.value, strict=True
        ):
            yield ItemActivityRow(hour, item, type_, self.shard, n, qty, value)


def item_rows(touched: dict[ItemKey, list], shard: int, type_names: tuple[str, ...]) -> ItemColumns:
    """Rows of ``item_activity`` for the cells a batch touched (``AppliedEvents.items``, cumulative counts), as columns.

    ``type_names`` (``StateConfig.type_names``) names each cell's type index.
    A list per column, each built in one comprehension: no tuple per row on
    the way to the sink (BENCHMARKS.md 6t).
    """
    keys = list(touched)
    cells = list(touched.values())
    return ItemColumns(
        shard,
        [key[0] for key in keys],
        [key[1] for key in keys],
        [type_names[key[2]] for key in keys],
        [cell[0] for cell in cells],
        [cell[1] for cell in cells],
        [cell[2] / 100 for cell in cells],
    )


def first_kept_hour(horizon: int | None) -> int | None:
    """The oldest hour cell ``forget_items`` keeps at ``horizon`` (None: all are kept).

    Cells start on whole hours, so the cells forgotten change only when this
    does: while it stays, a shard need not look at its cells again.

    >>> first_kept_hour(HOUR_MS + 1) == HOUR_MS, first_kept_hour(2 * HOUR_MS) == HOUR_MS
    (True, True)
    """
    if horizon is None:
        return None
    return -(-(horizon - HOUR_MS) // HOUR_MS) * HOUR_MS


def forget_items(items: dict[ItemKey, list], horizon: int | None) -> dict[ItemKey, list]:
    """``items`` without the cells no event can reach any more (the hour ended before the horizon).

    >>> forget_items({(0, "a", 2): [1, 1.0, 99], (HOUR_MS, "a", 2): [1, 1.0, 99]}, horizon=HOUR_MS + 1)
    {(3600000, 'a', 2): [1, 1.0, 99]}
    """
    if horizon is None:
        return items
    horizon -= HOUR_MS  # an hour cell ends before the horizon: no event can reach it
    if items and min(k[0] for k in items) < horizon:
        return {k: v for k, v in items.items() if k[0] >= horizon}
    return items
