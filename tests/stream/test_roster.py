"""A shard's customer rows (stream.roster): growth, forgetting, the expiry heap and the score matrix.

The oracle is the layout the roster replaced: a ``due`` dict, a heap of
``(time, user)`` tuples and a dict of score arrays (``Reference`` below).
"""

from __future__ import annotations

import heapq
import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.roster import NO_TIME, CustomerRoster


class Reference:
    """The shard's per-customer containers before the roster (STATE_VERSION 5), as the oracle."""

    def __init__(self) -> None:
        self.due: dict[str, int] = {}
        self.heap: list[tuple[int, str]] = []
        self.scores: dict[str, np.ndarray] = {}

    def schedule(self, user: str, at: int) -> None:
        if self.due.get(user) != at:
            self.due[user] = at
            heapq.heappush(self.heap, (at, user))

    def pop_due(self, clock: int) -> list[str]:
        out = []
        while self.heap and self.heap[0][0] <= clock:
            at, user = heapq.heappop(self.heap)
            if self.due.get(user) == at:
                del self.due[user]
                out.append(user)
        return out

    def forget(self, user: str) -> None:
        self.due.pop(user, None)
        self.scores.pop(user, None)


USERS = [f"u{i}" for i in range(12)]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), st.sampled_from(USERS), st.integers(0, 50)),
        st.tuples(st.just("forget"), st.sampled_from(USERS), st.just(0)),
        st.tuples(st.just("unschedule"), st.sampled_from(USERS), st.just(0)),
        st.tuples(st.just("pop"), st.just(""), st.integers(0, 60)),
        st.tuples(st.just("score"), st.sampled_from(USERS), st.integers(0, 100)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_the_roster_schedules_pops_and_forgets_as_the_dicts_and_tuple_heap_did(steps):
    roster, ref = CustomerRoster(), Reference()
    for op, user, n in steps:
        if op == "schedule":
            roster.schedule(user, n)
            ref.schedule(user, n)
        elif op == "forget":
            roster.forget(user)
            ref.forget(user)
        elif op == "unschedule":
            roster.unschedule(user)
            ref.due.pop(user, None)
        elif op == "pop":
            assert roster.pop_due(n) == ref.pop_due(n)
        else:
            new = np.array([[n / 100, np.nan, n / 7]])
            roster.put([user], new)
            ref.scores[user] = new[0]
        assert roster.due_times() == ref.due
        assert roster.heap_times() == ref.due
        scored = roster.scored()
        assert scored.keys() == ref.scores.keys()
        for u, last in ref.scores.items():
            np.testing.assert_array_equal(scored[u], last)
    assert roster.pop_due(10**6) == ref.pop_due(10**6)


def test_rows_grow_past_their_capacity_and_keep_every_customers_time_and_scores():
    roster = CustomerRoster()
    n = 1_000  # the arrays start at 64 rows and double
    users = [f"c{i}" for i in range(n)]
    for i, user in enumerate(users):
        roster.schedule(user, 10_000 + i)
    roster.put(users, np.arange(3 * n, dtype=np.float64).reshape(n, 3))
    assert len(roster) == n and len(roster.due) >= n
    assert roster.due_of("c0") == 10_000 and roster.due_of("c999") == 10_999
    np.testing.assert_array_equal(roster.take(["c999", "c5"], 3), [[2997, 2998, 2999], [15, 16, 17]])
    assert roster.pop_due(10_000 + n) == users  # by time: the order they were scheduled in


def test_a_forgotten_customers_row_is_reused_without_its_time_or_scores():
    roster = CustomerRoster()
    roster.schedule("gone", 500)
    roster.put(["gone"], np.array([[0.3, 0.4]]))
    row = roster.row_of("gone")
    roster.forget("gone")
    assert "gone" not in roster and roster.last_scores("gone") is None and roster.due_of("gone") is None
    assert roster.row_of("new") == row  # the free row is taken again
    assert roster.last_scores("new") is None and roster.due_of("new") is None
    np.testing.assert_array_equal(roster.take(["new"], 2), [[np.nan, np.nan]])
    assert roster.pop_due(1_000) == []  # the forgotten customer's entry is stale, and not the new one's
    roster.schedule("new", 500)  # at the very time of the stale entry: popped once
    assert roster.pop_due(1_000) == ["new"] and roster.pop_due(1_000) == []


def test_customers_due_together_are_popped_by_id_whatever_their_rows():
    """A resumed shard numbers its rows in another order: the batches it cuts must not change."""
    one, other = CustomerRoster(), CustomerRoster()
    for user in ["b", "c", "a"]:
        one.schedule(user, 7)
    for user in ["a", "c", "b"]:
        other.schedule(user, 7)
    one.schedule("z", 3)
    other.schedule("z", 3)
    assert one.pop_due(7) == other.pop_due(7) == ["z", "a", "b", "c"]


def test_the_score_matrix_grows_a_column_for_a_new_group_and_follows_a_regroup():
    roster = CustomerRoster()
    roster.put(["u1", "u2"], np.array([[0.1, 0.2], [0.3, 0.4]]))
    np.testing.assert_array_equal(roster.take(["u1"], 3), [[0.1, 0.2, np.nan]])  # a third group: no score yet
    roster.regroup(4, src=[0, 1], dst=[2, 0])  # group 0 moved to 2, group 1 to 0; 1 and 3 are new
    np.testing.assert_array_equal(
        roster.take(["u1", "u2"], 4), [[0.2, np.nan, 0.1, np.nan], [0.4, np.nan, 0.3, np.nan]]
    )
    never = CustomerRoster()
    never.schedule("u1", 5)
    never.regroup(2, src=[0, 1], dst=[1, 0])  # nothing was ever scored: all NaN, no error
    assert never.last_scores("u1") is None and never.due_of("u1") == 5


def test_a_roster_survives_pickling_and_its_side_store_entries():
    roster = CustomerRoster()
    roster.schedule("u1", 42)
    roster.put(["u1", "u2"], np.array([[0.5, np.nan], [0.25, 0.125]]))
    roster.forget("u2")
    again = pickle.loads(pickle.dumps(roster))
    assert again.due_times() == {"u1": 42} and again.pop_due(42) == ["u1"]
    rebuilt = CustomerRoster()
    for user in roster:
        rebuilt.restore_entry(user, *roster.entry(user))
    rebuilt.reheap()
    assert rebuilt.due_times() == roster.due_times() and rebuilt.heap_times() == {"u1": 42}
    np.testing.assert_array_equal(rebuilt.last_scores("u1"), [0.5, np.nan])
    assert roster.entry("nobody") == (None, None) and NO_TIME < 0
