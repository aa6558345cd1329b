"""Applying a batch of events: dead letters with reasons, baskets as one update, item cells, against oracles."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import EventRecord
from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, ProductGroup
from stream.apply import apply_events, forget_items, item_rows
from stream.state import CustomerState, StateConfig

HOUR = 3_600_000
T = 1_500_000_000_000 - 1_500_000_000_000 % HOUR  # an hour boundary
GROUPS = (ProductGroup(name="coffee", items=("c1", "c2")), ProductGroup(name="tea", items=("t1",)))
CATALOG = GroupCatalog(GROUPS, {"c1": (0, 2), "c2": (0, 2), "t1": (1, 2)})
CFG = StateConfig.build(FeatureSpec(groups=("coffee", "tea")))


def ev(user: str, item: str, ts: int, eid: str, cents: int = 100, type_index: int = 2, qty: float = 1.0):
    return EventRecord(user, item, type_index, ts, eid, qty, cents, f"src:{eid}")


def features(state: CustomerState) -> list[float]:
    row = CFG.new_row()
    state.write_features(CFG, row)
    return row.tolist()


def one_by_one(events: list[EventRecord]) -> dict[str, CustomerState]:
    """The oracle: each event applied on its own, a repeated event_id left out."""
    states: dict[str, CustomerState] = {}
    seen: set[tuple[str, str]] = set()
    for e in events:
        if (e.user_id, e.event_id) in seen:
            continue
        seen.add((e.user_id, e.event_id))
        s = states.setdefault(e.user_id, CustomerState())
        s.apply(CFG, e.ts_ms, e.type_index, CATALOG.groups_of(e.item_id), e.value_cents, event_id=e.event_id)
    return states


def test_a_second_delivery_is_a_dead_letter_with_its_reason_and_counts_nothing():
    first = ev("u1", "c1", T, "e1", cents=299)
    customers: dict[str, CustomerState] = {}
    items: dict = {}
    batch = apply_events(CFG, CATALOG, customers, items, [first], None)
    again = apply_events(CFG, CATALOG, customers, items, [first._replace(source="resent")], None)
    assert batch.applied == [first] and again.applied == []
    ((reason, payload, source),) = again.dead_letters
    assert reason == "duplicate: event_id 'e1' was already applied"
    assert (payload, source) == (first.to_json(CFG.type_names), "resent")
    assert again.dirty == {} and again.items == {}
    assert features(customers["u1"]) == features(one_by_one([first])["u1"])
    assert items[(T, "c1", 2)] == [1, 1.0, 299]  # the item cell counted it once


def test_events_older_than_the_retention_horizon_are_dead_letters_and_touch_nothing():
    horizon = T + 5 * HOUR
    old, edge = ev("u1", "c1", horizon - HOUR // 2, "old"), ev("u2", "c1", horizon, "edge")
    customers: dict[str, CustomerState] = {}
    items: dict = {}
    batch = apply_events(CFG, CATALOG, customers, items, [old, edge], horizon)
    assert batch.applied == [edge]  # an event at the horizon itself may still come
    ((reason, payload, _),) = batch.dead_letters
    assert reason.startswith("late: event time is 0.5 h before the shard's retention horizon")
    assert payload == old.to_json(CFG.type_names)
    assert customers.keys() == {"u2"} and list(items) == [(horizon, "c1", 2)]


def test_a_basket_is_one_state_update_per_customer_time_and_type(monkeypatch):
    updates: list[tuple[str, int, int]] = []
    apply_run = CustomerState.apply_run

    def counted(self, cfg, ts, type_index, counts, n_events):
        updates.append((ts, type_index, n_events))
        return apply_run(self, cfg, ts, type_index, counts, n_events)

    monkeypatch.setattr(CustomerState, "apply_run", counted)
    basket = [ev("u1", "c1", T, "e1", 199), ev("u1", "c2", T, "e2", 350), ev("u1", "t1", T, "e3", 425)]
    viewed = ev("u1", "c1", T, "e4", 0, type_index=0)  # same time, another type: another update
    other = ev("u2", "c1", T, "e5")  # another customer
    later = ev("u1", "t1", T + HOUR, "e6")  # the next basket
    events = [*basket, viewed, other, later]
    customers: dict[str, CustomerState] = {}
    batch = apply_events(CFG, CATALOG, customers, {}, events, None)
    assert updates == [(T, 2, 3), (T, 0, 1), (T, 2, 1), (T + HOUR, 2, 1)]
    assert len(batch.applied) == len(events)
    monkeypatch.setattr(CustomerState, "apply_run", apply_run)
    expected = one_by_one(events)
    assert {u: features(s) for u, s in customers.items()} == {u: features(s) for u, s in expected.items()}
    assert {u: sorted(g) for u, g in batch.dirty.items()} == {"u1": [0, 1, 2], "u2": [0, 2]}


def test_customers_already_waiting_for_a_refresh_stay_marked():
    pending = {"u9": {1}}
    batch = apply_events(CFG, CATALOG, {}, {}, [ev("u1", "c1", T, "e1")], None, pending)
    assert batch.dirty is pending
    assert {u: sorted(g) for u, g in pending.items()} == {"u9": [1], "u1": [0, 2]}


def test_item_cells_are_cumulative_per_hour_item_and_type_and_rows_cover_the_touched_cells_only():
    items: dict = {}
    first = [ev("u1", "c1", T + 10, "a", 100, qty=2.0), ev("u2", "c1", T + HOUR - 1, "b", 50), ev("u1", "t1", T, "c")]
    apply_events(CFG, CATALOG, {}, items, first, None)
    second = apply_events(CFG, CATALOG, {}, items, [ev("u3", "c1", T + 5, "d", 25, qty=0.5)], None)
    (row,) = item_rows(second.items, 3, CFG.type_names)
    assert row == (T, "c1", "purchase", 3, 3, 3.5, 1.75)  # the whole hour so far, not only this batch's event
    assert sorted(items) == [(T, "c1", 2), (T, "t1", 2)]


def test_item_cells_are_forgotten_once_their_hour_ends_before_the_horizon():
    items = {(T, "a", 2): [1, 1.0, 1], (T + HOUR, "a", 2): [1, 1.0, 1], (T + 2 * HOUR, "a", 0): [1, 1.0, 1]}
    assert forget_items(items, None) is items
    assert forget_items(items, T + 2 * HOUR) == {k: v for k, v in items.items() if k[0] >= T + HOUR}
    # an event at T + HOUR + 1 (>= horizon) still falls in the cell of hour T + HOUR
    assert (T + HOUR, "a", 2) in forget_items(items, T + HOUR + 1)
    assert forget_items(items, T + HOUR) is items  # nothing to forget: the same cells


event_lists = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["c1", "c2", "t1", "unknown"]),
        st.integers(0, 2),  # type
        st.integers(0, 6 * HOUR).map(lambda d: T + d - d % (HOUR // 2)),  # repeated times: baskets
        st.integers(0, 12),  # event id: repeats are second deliveries
        st.integers(0, 999),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_lists, st.integers(0, 40))
def test_a_batch_equals_applying_the_first_delivery_of_each_event_one_by_one(raw, cut):
    events = [ev(u, item, ts, f"{u}-e{i}", cents, typ, qty=cents / 100) for u, item, typ, ts, i, cents in raw]
    customers: dict[str, CustomerState] = {}
    items: dict = {}
    a = apply_events(CFG, CATALOG, customers, items, events[:cut], None)
    b = apply_events(CFG, CATALOG, customers, items, events[cut:], None)
    firsts, seen = [], set()
    for e in events:
        if (e.user_id, e.event_id) not in seen:
            seen.add((e.user_id, e.event_id))
            firsts.append(e)
    assert a.applied + b.applied == firsts  # conservation: applied or a dead letter, in arrival order
    assert len(a.dead_letters) + len(b.dead_letters) == len(events) - len(firsts)
    expected = one_by_one(events)
    assert {u: features(s) for u, s in customers.items()} == {u: features(s) for u, s in expected.items()}
    # the ids kept for duplicate checks, in order (a basket's are kept at once), and the update sequence
    kept = {u: (list(s.seen), s.seq) for u, s in customers.items()}
    assert kept == {u: (list(s.seen), s.seq) for u, s in expected.items()}
    cells: dict = {}
    for e in firsts:
        c = cells.setdefault((e.ts_ms - e.ts_ms % HOUR, e.item_id, e.type_index), [0, 0.0, 0])
        c[0], c[1], c[2] = c[0] + 1, c[1] + e.quantity, c[2] + e.value_cents
    assert {k: [v[0], v[2]] for k, v in items.items()} == {k: [v[0], v[2]] for k, v in cells.items()}
    assert np.allclose([v[1] for v in items.values()], [cells[k][1] for k in items])


def test_duplicates_are_found_within_a_batch_and_across_batches_for_customers_with_history():
    """One set of digests per customer and batch: ids seen in earlier batches and earlier in this one both count."""
    customers: dict[str, CustomerState] = {}
    items: dict = {}
    first = [ev("u1", "c1", T, "a"), ev("u2", "t1", T, "b")]
    apply_events(CFG, CATALOG, customers, items, first, None)
    second = [
        ev("u1", "c2", T + HOUR, "c"),
        ev("u1", "c1", T + HOUR, "a"),  # seen in the first batch
        ev("u1", "t1", T + HOUR, "c"),  # seen earlier in this batch
        ev("u2", "c1", T + HOUR, "a"),  # another customer's id: not a duplicate of u2's
        ev("u3", "c1", T + HOUR, "d"),
        ev("u3", "c2", T + HOUR, "d"),  # a new customer's own repeat
    ]
    batch = apply_events(CFG, CATALOG, customers, items, second, None)
    assert [(e.user_id, e.event_id) for e in batch.applied] == [("u1", "c"), ("u2", "a"), ("u3", "d")]
    assert [d.payload for d in batch.dead_letters] == [second[i].to_json(CFG.type_names) for i in (1, 2, 5)]
    oracle = one_by_one(first + second)
    assert {u: features(s) for u, s in customers.items()} == {u: features(s) for u, s in oracle.items()}
    assert "a" in customers["u1"].seen and "c" in customers["u1"].seen and "b" not in customers["u1"].seen
