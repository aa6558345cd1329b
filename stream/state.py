"""The customer state machine: the single definition of every feature.

Pure and picklable, no I/O. The stream runs it live; offline training replays
the archived events through it, so training and serving cannot disagree.

Counters are bucketed by event time (hourly buckets for the 1d window, daily
for the others). Each window keeps running sums that are updated when an
event lands inside it and when a bucket leaves it as the clock advances.
Values are integer cents, so every sum is exact and the result does not depend
on the order events arrive in.

>>> from schemas.features import FeatureSpec
>>> cfg = StateConfig.build(FeatureSpec(groups=("coffee_tea",)))
>>> s = CustomerState()
>>> sorted(s.apply(cfg, 1_000 * 3600 * 24 * 17_000, type_index=2, groups=(0, 1), value_cents=499))
[0, 1]
>>> row = cfg.new_row(); s.write_features(cfg, row)
>>> float(row[cfg.spec.index["grp=coffee_tea|type=purchase|stat=value|win=7d"]])
4.99
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np

from schemas.features import DAY_MS, FeatureSpec

NO_CHANGE: frozenset[int] = frozenset()


@dataclass(frozen=True)
class StateConfig:
    """Everything the state machine needs to know, resolved once from a FeatureSpec."""

    spec: FeatureSpec
    n_types: int
    type_names: tuple[str, ...]  # type index -> name (the spec's vocabulary)
    n_keys: int  # (group incl. all) x type
    resolutions_ms: tuple[int, ...]  # distinct bucket sizes
    window_res: tuple[int, ...]  # window -> resolution index
    window_n: tuple[int, ...]  # window -> number of buckets
    windows_of_res: tuple[tuple[int, ...], ...]  # resolution -> window indices
    shortest_of_res: tuple[int, ...]  # resolution -> its window with the fewest buckets
    expiry_plan: tuple[tuple[int, int, int, int, bool], ...]  # (window, res index, res ms, buckets, longest)
    bases: tuple[tuple[int, ...], ...]  # window -> key -> index of its count stat
    recency_edges: tuple[int, ...]
    recency_offset: int
    history_index: int  # position of history_days (after the recency features)
    history_res: int  # resolution index of the longest window, whose buckets history_days looks at
    all_index: int  # group index of ``all``
    n_features: int
    recency_table: tuple[int, ...]  # whole days -> bin edge, up to the cap

    @classmethod
    def build(cls, spec: FeatureSpec) -> StateConfig:
        """Resolve the layout of ``spec`` into flat lookup tables."""
        res = sorted({w.bucket_seconds * 1000 for w in spec.windows})
        window_res = tuple(res.index(w.bucket_seconds * 1000) for w in spec.windows)
        n_types = len(spec.types)
        n_keys = len(spec.all_groups) * n_types
        longest_of_res = tuple(
            max((wi for wi, r in enumerate(window_res) if r == ri), key=lambda wi: spec.windows[wi].n_buckets)
            for ri in range(len(res))
        )
        bases = tuple(
            tuple(spec.counter_index(k // n_types, k % n_types, wi) for k in range(n_keys))
            for wi in range(len(spec.windows))
        )
        return cls(
            spec=spec,
            n_types=n_types,
            type_names=spec.types,
            n_keys=n_keys,
            resolutions_ms=tuple(res),
            window_res=window_res,
            window_n=tuple(w.n_buckets for w in spec.windows),
            windows_of_res=tuple(tuple(wi for wi, r in enumerate(window_res) if r == ri) for ri in range(len(res))),
            shortest_of_res=tuple(
                min((wi for wi, r in enumerate(window_res) if r == ri), key=lambda wi: spec.windows[wi].n_buckets)
                for ri in range(len(res))
            ),
            expiry_plan=tuple(
                (wi, ri, res[ri], spec.windows[wi].n_buckets, wi == longest_of_res[ri])
                for wi, ri in sorted(
                    enumerate(window_res),
                    key=lambda w: (w[1], spec.windows[w[0]].n_buckets, w[0] == longest_of_res[w[1]]),
                )
            ),
            bases=bases,
            recency_edges=spec.recency_edges_days,
            recency_offset=spec.recency_offset,
            history_index=spec.index[spec.history_name],
            history_res=window_res[spec.history_window],
            all_index=len(spec.all_groups) - 1,
            n_features=len(spec.names),
            recency_table=tuple(
                spec.recency_edges_days[bisect_right(spec.recency_edges_days, d) - 1]
                for d in range(spec.recency_edges_days[-1] + 1)
            ),
        )

    def new_row(self) -> np.ndarray:
        """A feature vector of a customer with no history."""
        row = np.zeros(self.n_features, dtype=np.float64)
        row[self.recency_offset : self.history_index] = self.recency_edges[-1]
        return row

    def recency_bin(self, days: int) -> int:
        """Round whole days down to a bin edge; the last edge caps."""
        table = self.recency_table
        return table[days] if days < len(table) else table[-1]

    def next_edge_time(self, since: int, at: int) -> int | None:
        """When whole days since ``since`` next reach a bin edge, seen from ``at``; None past the cap."""
        edges = self.recency_edges
        i = bisect_right(edges, (at - since) // DAY_MS)
        return since + edges[i] * DAY_MS if i < len(edges) else None


@lru_cache(maxsize=8)
def next_edges(edges: tuple[int, ...]) -> tuple[int, ...]:
    """Whole days -> the next bin edge after them (``StateConfig.next_edge_time`` as a table), up to the cap.

    >>> next_edges((0, 1, 3))
    (1, 3, 3)
    """
    return tuple(edges[bisect_right(edges, d)] for d in range(edges[-1]))


class CustomerState:
    """Windowed counters of one customer. Small, picklable, versioned by ``seq``.

    ``apply`` and ``advance`` return the indices of the groups (``all`` is the
    last index) whose features changed, so only affected models rescore.
    """

    __slots__ = ("buckets", "clock", "last_ts", "lo", "seen", "seq", "win")

    def __init__(self) -> None:
        self.clock: int | None = None  # ms; features are as of this time
        # res -> bucket -> key -> [n, cents]; buckets in ascending order, so the oldest comes first
        self.buckets: list[dict[int, dict[int, list[int]]]] = []
        self.win: list[dict[int, list[int]]] = []  # window -> key -> [n, cents, active]
        self.lo: list[int] = []  # window -> oldest bucket index still inside it
        self.last_ts: dict[int, int] = {}  # group -> ms of its last event
        self.seen: dict[str, int] = {}  # event_id -> ts, for duplicate delivery
        self.seq = 0  # per-customer update sequence (versions in ClickHouse)

    def __getstate__(self) -> tuple:
        return (self.clock, self.buckets, self.win, self.lo, self.last_ts, self.seen, self.seq)

    def __setstate__(self, st: tuple) -> None:
        self.clock, self.buckets, self.win, self.lo, self.last_ts, self.seen, self.seq = st

    def _start(self, cfg: StateConfig, ts: int) -> None:
        self.clock = ts
        self.buckets = [{} for _ in cfg.resolutions_ms]
        self.win = [{} for _ in cfg.window_n]
        self.lo = [ts // cfg.resolutions_ms[r] - n + 1 for r, n in zip(cfg.window_res, cfg.window_n, strict=True)]

    def see(self, event_id: str, ts: int) -> bool:
        """Remember an event id; False when it was already seen (a second delivery)."""
        seen = self.seen
        if event_id in seen:
            return False
        seen[event_id] = ts
        return True

    def apply(
        self,
        cfg: StateConfig,
        ts: int,
        type_index: int,
        groups: tuple[int, ...],
        value_cents: int,
        event_id: str | None = None,
    ) -> set[int] | frozenset[int]:
        """Count one event; returns the groups whose features changed."""
        if event_id is not None:
            self.seen[event_id] = ts
        return self.apply_run(cfg, ts, type_index, {g: [1, value_cents] for g in groups}, 1)

    def apply_run(
        self, cfg: StateConfig, ts: int, type_index: int, counts: dict[int, list[int]], n_events: int
    ) -> set[int] | frozenset[int]:
        """Count ``n_events`` events of one time and type at once; ``counts`` is group -> [events, cents].

        The same as applying them one by one (sums are exact), with one update
        per group instead of one per event: a basket's lines share a timestamp.
        """
        if self.clock is None:
            self._start(cfg, ts)
            changed: set[int] = set()
        elif ts > self.clock:
            changed = self._advance(cfg, self.clock, ts)
        else:
            changed = set()
        n_types = cfg.n_types
        lo = self.lo
        clock: int = self.clock  # type: ignore[assignment]  # set by _start/advance above
        in_window = False
        for ri, res in enumerate(cfg.resolutions_ms):
            b = ts // res
            windows = cfg.windows_of_res[ri]
            if b < lo[cfg.shortest_of_res[ri]]:  # late: only the longer windows may still hold it
                windows = tuple(wi for wi in windows if b >= lo[wi])
            if not windows:
                continue  # older than every window of this resolution: nothing to keep
            in_window = True
            res_buckets = self.buckets[ri]
            bucket = res_buckets.get(b)
            if bucket is None:
                oldest, newest = next(iter(res_buckets), None), next(reversed(res_buckets), None)
                bucket = res_buckets[b] = {}
                if ri == cfg.history_res and b < clock // res and (oldest is None or b < oldest):
                    changed.add(cfg.all_index)  # history_days now reaches further back
                if newest is not None and b < newest:  # a late event's bucket: keep them in ascending order
                    self.buckets[ri] = dict(sorted(res_buckets.items()))
            for g, (n, cents) in counts.items():
                key = g * n_types + type_index
                cell = bucket.get(key)
                if cell is None:
                    bucket[key] = [n, cents]
                    for wi in windows:
                        sums = self.win[wi]
                        s = sums.get(key)
                        if s is None:
                            sums[key] = [n, cents, 1]
                        else:
                            s[0] += n
                            s[1] += cents
                            s[2] += 1
                else:
                    cell[0] += n
                    cell[1] += cents
                    for wi in windows:
                        s = self.win[wi][key]
                        s[0] += n
                        s[1] += cents
        if in_window:
            changed.update(counts)
        last_ts = self.last_ts
        for g in counts:
            last = last_ts.get(g)
            if last is None or ts > last:
                if not in_window and (
                    last is None or cfg.recency_bin((clock - ts) // DAY_MS) != cfg.recency_bin((clock - last) // DAY_MS)
                ):
                    changed.add(g)
                last_ts[g] = ts
        self.seq += n_events
        return changed  # type: ignore[return-value]

    def advance(self, cfg: StateConfig, now: int) -> frozenset[int]:
        """Move the clock forward to ``now``; expire buckets; return changed groups."""
        clock = self.clock
        if clock is None or now <= clock:
            return NO_CHANGE
        return frozenset(self._advance(cfg, clock, now))

    def _advance(self, cfg: StateConfig, clock: int, now: int) -> set[int]:
        changed: set[int] = set()
        n_types = cfg.n_types
        lo = self.lo
        start = self.history_start(cfg)
        for wi, ri, res, n_buckets, longest in cfg.expiry_plan:
            new_lo = now // res - n_buckets + 1
            old_lo = lo[wi]
            if new_lo <= old_lo:
                continue
            sums = self.win[wi]
            buckets = self.buckets[ri]
            if new_lo - old_lo < len(buckets):
                leaving = [b for b in range(old_lo, new_lo) if b in buckets]
            else:
                leaving = [b for b in buckets if old_lo <= b < new_lo]
            for b in leaving:
                for key, (n, cents) in buckets[b].items():
                    s = sums[key]
                    if s[0] == n:
                        del sums[key]
                    else:
                        s[0] -= n
                        s[1] -= cents
                        s[2] -= 1
                    changed.add(key // n_types)
            if longest:  # out of every window of its resolution (shorter windows went first): drop it
                for b in leaving:
                    del buckets[b]
            lo[wi] = new_lo
        if start is not None:
            after = self.history_start(cfg)
            if after != start or cfg.recency_bin((clock - start) // DAY_MS) != cfg.recency_bin((now - start) // DAY_MS):
                changed.add(cfg.all_index)  # history_days belongs to ``all``
        table = cfg.recency_table  # recency_bin, inlined: this loop runs for every group on every advance
        cap = table[-1]
        for g, last in list(self.last_ts.items()):
            d0, d1 = (clock - last) // DAY_MS, (now - last) // DAY_MS
            if d0 == d1:
                continue
            after = table[d1] if d1 < cap else cap
            if (table[d0] if d0 < cap else cap) != after:
                changed.add(g)
            if after == cap:
                del self.last_ts[g]  # capped recency equals "never": forget it
        self.clock = now
        if changed:
            self.seq += 1
        return changed

    def forget_seen_before(self, ts: int) -> None:
        """Drop duplicate-detection ids of events older than ``ts`` (past allowed lateness)."""
        if self.seen:
            self.seen = {k: v for k, v in self.seen.items() if v >= ts}

    def is_empty(self) -> bool:
        """True when the state equals a customer with no history (safe to drop)."""
        return not self.last_ts and not self.seen and not any(self.buckets)

    def history_start(self, cfg: StateConfig) -> int | None:
        """Start (ms) of the oldest bucket in the longest window, where ``history_days`` counts from."""
        buckets = self.buckets[cfg.history_res] if self.buckets else None
        return next(iter(buckets)) * cfg.resolutions_ms[cfg.history_res] if buckets else None

    def next_change(self, cfg: StateConfig) -> int | None:
        """Earliest clock time at which a feature changes without a new event."""
        clock = self.clock
        if clock is None:
            return None
        best: int | None = None
        for ri, buckets in enumerate(self.buckets):
            if not buckets:
                continue
            keys = list(buckets)  # already ascending
            for wi in cfg.windows_of_res[ri]:
                j = bisect_left(keys, self.lo[wi])  # the window's oldest live bucket leaves first
                if j < len(keys):
                    t = (keys[j] + cfg.window_n[wi]) * cfg.resolutions_ms[ri]
                    best = t if best is None or t < best else best
        starts = list(self.last_ts.values())
        history = self.history_start(cfg)
        if history is not None:
            starts.append(history)
        # cfg.next_edge_time for each start, inlined: a table lookup instead of a call and a bisect each
        following = next_edges(cfg.recency_edges)
        cap = len(following)
        for since in starts:
            days = (clock - since) // DAY_MS
            if days >= cap:
                continue  # past the cap: no edge ahead
            edge = since + (following[days] if days >= 0 else 0) * DAY_MS  # ahead of the clock: edge 0 is next
            if best is None or edge < best:
                best = edge
        return best

    def counter_cells(self, cfg: StateConfig, at: list[int], cells: list[int]) -> None:
        """Append every live counter: its count feature's position to ``at``, ``n, cents, active`` to ``cells``.

        The feature values are ``n``, ``cents / 100`` and ``active`` at
        ``at``, ``at + 1`` and ``at + 2``. Two C-level extends per window,
        no Python loop per counter: this runs for every customer refresh.
        ``cells`` is flat (three ints per counter): numpy reads a flat list
        of ints ~2.5x faster than a list of lists.
        """
        for wi, sums in enumerate(self.win):
            if sums:
                at += map(cfg.bases[wi].__getitem__, sums)
                cells += chain.from_iterable(sums.values())

    def recency_cells(self, cfg: StateConfig, at: list[int], values: list[int]) -> None:
        """Append each recency feature not capped, and ``history_days``: positions to ``at``, bins to ``values``."""
        clock = self.clock
        if clock is None:
            return
        off = cfg.recency_offset
        for g, last in self.last_ts.items():
            at.append(off + g)
            values.append(cfg.recency_bin((clock - last) // DAY_MS))
        start = self.history_start(cfg)
        if start is not None:
            at.append(cfg.history_index)
            values.append(cfg.recency_bin((clock - start) // DAY_MS))

    def write_features(self, cfg: StateConfig, row: np.ndarray) -> None:
        """Fill a vector from ``cfg.new_row()`` with this customer's features as of ``clock``."""
        write_rows(cfg, [self], row.reshape(1, -1))


def write_rows(cfg: StateConfig, states: Sequence[CustomerState | None], rows: np.ndarray) -> None:
    """Fill ``rows`` (C-contiguous, one row per state, each from ``cfg.new_row()``) with the states' features.

    One numpy assignment per kind of value for all of them: the counters of
    every state are gathered first (``counter_cells``), then written as
    count, ``cents / 100`` (numpy's float division, the same IEEE result as
    Python's) and active at once.

    >>> from schemas.features import FeatureSpec
    >>> cfg = StateConfig.build(FeatureSpec(groups=("coffee",)))
    >>> s = CustomerState(); _ = s.apply(cfg, 1_500_000_000_000, type_index=2, groups=(0, 1), value_cents=250)
    >>> rows = np.tile(cfg.new_row(), (2, 1)); write_rows(cfg, [None, s], rows)
    >>> float(rows[1, cfg.spec.index["grp=coffee|type=purchase|stat=value|win=7d"]])
    2.5
    >>> bool((rows[0] == cfg.new_row()).all())  # no state: a customer with no history
    True
    """
    if not rows.flags.c_contiguous:
        msg = "write_rows needs C-contiguous rows"
        raise ValueError(msg)
    n_features = cfg.n_features
    at: list[int] = []
    cells: list[int] = []
    rec_at: list[int] = []
    rec_values: list[int] = []
    counter_rows: list[int] = []  # per state: counters gathered so far (row offsets are added per state)
    recency_rows: list[int] = []
    for state in states:
        if state is not None:
            state.counter_cells(cfg, at, cells)
            state.recency_cells(cfg, rec_at, rec_values)
        counter_rows.append(len(at))
        recency_rows.append(len(rec_at))
    flat = rows.reshape(-1)  # a view: rows is contiguous
    offsets = np.arange(len(states), dtype=np.int64) * n_features
    if at:
        pos = np.asarray(at, dtype=np.int64) + np.repeat(offsets, np.diff(counter_rows, prepend=0))
        vals = np.array(cells, dtype=np.int64).reshape(-1, 3)
        flat[pos] = vals[:, 0]
        flat[pos + 1] = vals[:, 1] / 100
        flat[pos + 2] = vals[:, 2]
    if rec_at:
        pos = np.asarray(rec_at, dtype=np.int64) + np.repeat(offsets, np.diff(recency_rows, prepend=0))
        flat[pos] = rec_values
