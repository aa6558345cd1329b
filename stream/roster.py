"""A shard's customers by row: their place on the expiry heap and their last written scores, in flat arrays.

A shard kept, besides each customer's ``CustomerState``, a ``due`` dict entry
(customer -> next change time), a ``(time, customer)`` tuple on its expiry heap
and a numpy array of 25 last scores in a ``scores`` dict: ~490 bytes per
one-basket customer at 25 groups, ~180 of them object headers and dict entries
(BENCHMARKS.md section 6e). Here each customer has a row number, and per row:

- ``due[row]``: its time on the expiry heap (int64; ``NO_TIME``: none);
- ``scores[row]``: the last score written per group (a float64 matrix, rows
  by groups; NaN: none written). float64 because a score is written again
  only when it moved: float32 would hide moves below its precision;
- the expiry heap holds one Python int per entry, ``time << ROW_BITS | row``
  (ordered by time, then row), instead of a tuple.

The rows of forgotten customers are reused. The arrays grow by doubling
(``np.empty``: capacity not yet used costs address space, not memory).

>>> r = CustomerRoster()
>>> r.schedule("u1", 5_000), r.schedule("u2", 3_000), r.schedule("u1", 5_000)  # same time: not pushed twice
(True, True, False)
>>> r.schedule("u2", 7_000)  # u2 moved later: its first entry is stale
True
>>> r.next_due(), r.pop_due(6_000), r.due_of("u2")
(3000, ['u1'], 7000)
>>> r.put(["u1", "u2"], np.array([[0.5, np.nan], [0.25, 0.75]]))
>>> r.take(["u2", "u3"], 2).tolist()  # u3 never scored: NaN (and it has a row now)
[[0.25, 0.75], [nan, nan]]
>>> r.forget("u1"); sorted(r), r.row_of("u4")  # u4 takes u1's row
(['u2', 'u3'], 0)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

NO_TIME = np.iinfo(np.int64).min  # ``due`` of a row not on the heap
ROW_BITS = 32  # heap entry: time << ROW_BITS | row (rows of one shard < 2**32)
ROW_MASK = (1 << ROW_BITS) - 1


class CustomerRoster:
    """Rows of a shard's customers: expiry schedule and last written scores (see the module docstring).

    Picklable; pickled whole with a shard, or row by row in its side store
    (``stream.snapshots``: ``entry`` / ``restore_entry``).
    """

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}  # customer -> row
        self.users: list[str | None] = []  # row -> customer (None: free)
        self.free: list[int] = []  # rows to reuse
        self.due = np.empty(0, dtype=np.int64)  # row -> time on the heap (NO_TIME: none)
        self.scores = np.empty((0, 0), dtype=np.float64)  # row x group -> last written score (NaN: none)
        self.heap: list[int] = []  # time << ROW_BITS | row; stale when due[row] differs

    # -- rows ---------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, user: object) -> bool:
        return user in self.rows

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def row_of(self, user: str) -> int:
        """The row of ``user``, given a new one (nothing scheduled, no score) if it has none."""
        row = self.rows.get(user)
        if row is not None:
            return row
        if self.free:
            row = self.free.pop()
            self.users[row] = user
        else:
            row = len(self.users)
            if row >= len(self.due):
                self._grow(row + 1, self.scores.shape[1])
            self.users.append(user)
        self.due[row] = NO_TIME
        self.scores[row] = np.nan
        self.rows[user] = row
        return row

    def _grow(self, n_rows: int, n_groups: int) -> None:
        """Capacity for ``n_rows`` rows (doubling) and ``n_groups`` score columns (new columns NaN)."""
        cap = len(self.due)
        if n_rows > cap:
            cap = max(n_rows, 2 * cap, 64)
        used = len(self.users)
        due = np.empty(cap, dtype=np.int64)
        due[:used] = self.due[:used]
        scores = np.empty((cap, n_groups), dtype=np.float64)
        old_groups = self.scores.shape[1]
        scores[:used, :old_groups] = self.scores[:used]
        scores[:used, old_groups:] = np.nan
        self.due, self.scores = due, scores

    def forget(self, user: str) -> None:
        """Drop ``user``: off the heap (its entries go stale), its scores gone, its row free for another."""
        row = self.rows.pop(user, None)
        if row is None:
            return
        self.users[row] = None
        self.due[row] = NO_TIME
        self.free.append(row)

    # -- the expiry heap ----------------------------------------------------------------------------------------

    def schedule(self, user: str, at: int) -> bool:
        """Put ``user`` on the heap at ``at`` (its earlier entry goes stale); False when it was there already."""
        row = self.row_of(user)
        if self.due[row] == at:
            return False
        self.due[row] = at
        heapq.heappush(self.heap, at << ROW_BITS | row)
        return True

    def unschedule(self, user: str) -> None:
        """Take ``user`` off the heap (its entries go stale); its row and scores stay."""
        row = self.rows.get(user)
        if row is not None:
            self.due[row] = NO_TIME

    def heap_times(self) -> dict[str, int]:
        """Customer -> time of its live (not stale) heap entry: equal to ``due_times()`` in a sound roster."""
        out = {}
        for entry in self.heap:
            at, row = entry >> ROW_BITS, entry & ROW_MASK
            user = self.users[row]
            if user is not None and self.due[row] == at:
                out[user] = at
        return out

    def due_of(self, user: str) -> int | None:
        """When ``user`` is due on the heap (None: not scheduled)."""
        row = self.rows.get(user)
        if row is None or self.due[row] == NO_TIME:
            return None
        return int(self.due[row])

    def due_times(self) -> dict[str, int]:
        """Customer -> time on the heap, for every customer scheduled."""
        return {u: int(self.due[r]) for u, r in self.rows.items() if self.due[r] != NO_TIME}

    def next_due(self) -> int | None:
        """The time of the heap's top entry (possibly stale: it costs one pop), None when the heap is empty."""
        return self.heap[0] >> ROW_BITS if self.heap else None

    def pop_due(self, clock: int) -> list[str]:
        """Customers due by ``clock``, taken off the heap, ordered by (time, customer id)."""
        heap, due, users = self.heap, self.due, self.users
        popped: list[tuple[int, str]] = []
        while heap and heap[0] >> ROW_BITS <= clock:
            entry = heapq.heappop(heap)
            at, row = entry >> ROW_BITS, entry & ROW_MASK
            if due[row] == at:  # else stale: the customer was rescheduled or forgotten
                due[row] = NO_TIME
                user = users[row]
                if user is not None:
                    popped.append((at, user))
        popped.sort()
        return [user for _, user in popped]

    def reheap(self) -> None:
        """Rebuild the heap from ``due`` (one entry per scheduled customer, no stale ones)."""
        self.heap = [int(self.due[r]) << ROW_BITS | r for r in self.rows.values() if self.due[r] != NO_TIME]
        heapq.heapify(self.heap)

    # -- last written scores ------------------------------------------------------------------------------------

    def take(self, users: Sequence[str], n_groups: int) -> np.ndarray:
        """Last written scores of ``users`` (a copy, ``n_groups`` columns; NaN: none written)."""
        if self.scores.shape[1] < n_groups:
            self._grow(len(self.due), n_groups)
        rows = [self.row_of(u) for u in users]
        return self.scores[rows, :n_groups]

    def put(self, users: Sequence[str], scores: np.ndarray) -> None:
        """Remember ``scores`` (one row per user) as the last written ones."""
        if self.scores.shape[1] < scores.shape[1]:
            self._grow(len(self.due), scores.shape[1])
        rows = [self.row_of(u) for u in users]
        self.scores[rows, : scores.shape[1]] = scores

    def last_scores(self, user: str) -> np.ndarray | None:
        """A copy of ``user``'s last written scores; None when none was ever written."""
        row = self.rows.get(user)
        if row is None:
            return None
        got = self.scores[row].copy()
        return None if np.isnan(got).all() else got

    def scored(self) -> Mapping[str, np.ndarray]:
        """Customer -> last written scores, for every customer with one (copies)."""
        out = {}
        for user in self.rows:
            got = self.last_scores(user)
            if got is not None:
                out[user] = got
        return out

    def regroup(self, n_groups: int, src: Sequence[int], dst: Sequence[int]) -> None:
        """Renumber score columns: column ``src[i]`` becomes ``dst[i]`` of ``n_groups``; the others are NaN."""
        if src and max(src) >= self.scores.shape[1]:  # columns never written are NaN
            self._grow(len(self.due), max(src) + 1)
        used = len(self.users)
        scores = np.full((len(self.due), n_groups), np.nan)
        scores[:used, list(dst)] = self.scores[:used, list(src)]
        self.scores = scores

    # -- side store rows ----------------------------------------------------------------------------------------

    def entry(self, user: str) -> tuple[bytes | None, int | None]:
        """(last scores as little-endian float64 bytes or None, time on the heap or None): a customer's row."""
        got = self.last_scores(user)
        return (None if got is None else got.astype("<f8").tobytes()), self.due_of(user)

    def restore_entry(self, user: str, scores: bytes | None, due: int | None) -> None:
        """Put back what ``entry`` gave (the heap is rebuilt by ``reheap`` once every row is back)."""
        row = self.row_of(user)
        if scores is not None:
            self.put([user], np.frombuffer(scores, dtype="<f8").astype(np.float64).reshape(1, -1))
        if due is not None:
            self.due[row] = due
