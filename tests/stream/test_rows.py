"""Feature rows of a batch: the dense vectors and the customer_features records agree with each customer's state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.features import FeatureSpec
from schemas.tables import row_version
from stream.rows import FeatureMaps, FeatureRows
from stream.state import CustomerState, StateConfig

CFG = StateConfig.build(FeatureSpec(groups=("coffee", "tea")))
DAY = 86_400_000
T = 1_500_000_000_000 - 1_500_000_000_000 % DAY


def customers() -> dict[str, CustomerState]:
    a, b, c = CustomerState(), CustomerState(), CustomerState()
    a.apply(CFG, T - 3 * DAY, 2, (0, 2), 499)
    a.apply(CFG, T, 0, (1, 2), 0)
    b.apply(CFG, T - 40 * DAY, 1, (1, 2), 1_250)
    b.advance(CFG, T)
    c.apply(CFG, T - DAY, 2, (2,), 99)
    return {"a": a, "b": b, "c": c}


def own_vector(state: CustomerState) -> np.ndarray:
    row = CFG.new_row()
    state.write_features(CFG, row)
    return row


def test_dense_rows_are_each_customers_own_features_in_the_order_asked():
    states = customers()
    batch = FeatureRows(CFG).dense(states, ["c", "a", "b"], {"a": {0}})
    assert batch.users == ["c", "a", "b"]
    for i, user in enumerate(batch.users):
        assert batch.rows[i].tolist() == own_vector(states[user]).tolist()
    assert batch.seqs == [states[u].seq for u in batch.users]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(["a", "b", "c", "new"]), max_size=6), min_size=1, max_size=5),
    st.sampled_from([0, 1, 2, 1 << 20]),
)
def test_batch_after_batch_each_row_is_its_customers_own_whatever_the_sizes(batches, cap_rows):
    """The matrix reused from batch to batch holds nothing of the batch before: no stale feature in a row.

    ``cap_rows``: batches of up to that many rows are written into the reused matrix, larger ones not.
    """
    states = customers()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("stream.rows.REUSED_ROW_BYTES", cap_rows * CFG.new_row().nbytes)
        rows = FeatureRows(CFG)
        for users in batches:
            batch = rows.dense(states, users, {})
            assert batch.rows.shape == (len(users), CFG.n_features)
            assert batch.rows.flags.c_contiguous
            for i, user in enumerate(users):  # "new" has no state: a customer with no history
                expected = own_vector(states[user]) if user in states else CFG.new_row()
                assert batch.rows[i].tolist() == expected.tolist(), (users, i)


def test_changed_marks_exactly_the_groups_whose_features_changed():
    batch = FeatureRows(CFG).dense(customers(), ["a", "b", "c"], {"a": {0, 2}, "c": {1}, "b": set()})
    assert batch.changed.tolist() == [[True, False, True], [False, False, False], [False, True, False]]


def test_records_are_written_for_changed_customers_only_unless_everything_is_rewritten():
    states = customers()
    dirty = {"a": {0, 2}, "b": set(), "c": {2}}
    rows = FeatureRows(CFG)
    batch = rows.dense(states, ["a", "b", "c"], dirty)
    assert [r.user_id for r in rows.records(batch, T)] == ["a", "c"]
    rewrite = rows.dense(states, ["a", "b", "c"], dirty, rewrite=True)
    assert [r.user_id for r in rows.records(rewrite, T)] == ["a", "b", "c"]


def test_a_record_holds_the_counters_that_are_not_zero_and_every_recency_feature():
    states = customers()
    rows = FeatureRows(CFG)
    records = list(rows.records(rows.dense(states, list(states), {u: {2} for u in states}), T))
    names = CFG.spec.names
    first_recency = CFG.recency_offset
    for rec in records:
        vector = own_vector(states[rec.user_id]).tolist()
        expected = {n: v for i, (n, v) in enumerate(zip(names, vector, strict=True)) if v or i >= first_recency}
        assert rec.features == expected
        assert (rec.as_of, rec.version) == (T, row_version(T, states[rec.user_id].seq))
    a = records[0].features
    assert a["grp=coffee|type=purchase|stat=value|win=7d"] == 4.99
    assert "grp=tea|type=purchase|stat=count|win=7d" not in a  # zero counters are left out


def test_no_customers_no_records():
    rows = FeatureRows(CFG)
    batch = rows.dense({}, [], {})
    assert batch.rows.shape == (0, CFG.n_features)
    assert list(rows.records(batch, T)) == []


rows_of_pairs = st.lists(
    st.dictionaries(st.sampled_from("abcdef"), st.floats(allow_nan=False, width=64), max_size=6), max_size=5
)


@settings(deadline=None)  # the first example may pay for imports and warm-up (took 260 ms once)
@given(st.lists(rows_of_pairs, max_size=4))
def test_feature_maps_joined_from_parts_with_their_own_names_keep_every_row_and_its_pairs_in_order(
    parts: list[list[dict[str, float]]],
):
    joined = sum((FeatureMaps.from_dicts(p) for p in parts), FeatureMaps())
    everything = [row for p in parts for row in p]
    assert len(joined) == len(everything) and list(joined) == everything
    assert joined.to_arrow().to_pylist() == [list(row.items()) for row in everything]
    assert joined.copy() == joined and joined != FeatureMaps.from_dicts([*everything, {}])


@settings(deadline=None)
@given(st.lists(rows_of_pairs, max_size=4), st.data())
def test_feature_maps_taken_by_position_are_those_rows_in_that_order(
    parts: list[list[dict[str, float]]], data: st.DataObject
):
    joined = sum((FeatureMaps.from_dicts(p) for p in parts), FeatureMaps())
    everything = [row for p in parts for row in p]
    at = data.draw(st.lists(st.integers(0, len(everything) - 1), max_size=8)) if everything else []
    taken = joined.take(at)
    assert list(taken) == [everything[i] for i in at]
    assert taken.to_arrow().to_pylist() == [list(everything[i].items()) for i in at]


def test_a_batchs_feature_maps_are_the_records_counters_and_recency_in_layout_order():
    states = customers()
    rows = FeatureRows(CFG)
    records = rows.records(rows.dense(states, list(states), {u: {2} for u in states}), T)
    names = CFG.spec.names
    for rec, pairs in zip(records, records.features.to_arrow().to_pylist(), strict=True):
        assert [n for n, _ in pairs] == [n for n in names if n in rec.features]  # the vector's order
        assert dict(pairs) == rec.features
