"""Feature rows of a batch's customers: dense numpy vectors for scoring, ``customer_features`` rows for the sinks.

All customers of a batch are written into one matrix (one row each), which
scoring reads; the ``customer_features`` rows are taken from it for all of
them at once (only counters that are not zero, plus every recency feature),
as arrays (``FeatureColumns``, ``FeatureMaps``): no Python dict per customer
is built on the way to ClickHouse, which writes the Map column from Arrow.

>>> from schemas.features import FeatureSpec
>>> from stream.state import CustomerState, StateConfig
>>> cfg = StateConfig.build(FeatureSpec(groups=("coffee",)))
>>> t = 1_500_000_000_000
>>> s = CustomerState(); changed = s.apply(cfg, t, type_index=2, groups=(0, 1), value_cents=250)
>>> rows = FeatureRows(cfg)
>>> batch = rows.dense({"u1": s, "u2": CustomerState()}, ["u1", "u2"], {"u1": set(changed)})
>>> batch.changed.tolist()  # per customer, per group (``all`` last): features changed
[[True, True], [False, False]]
>>> (record,) = rows.records(batch, t)  # u2 did not change: no record
>>> record.user_id, record.features["grp=coffee|type=purchase|stat=value|win=1d"]
('u1', 2.5)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from schemas.events import FeatureRow
from schemas.tables import row_version
from stream.state import CustomerState, StateConfig, write_rows


class FeatureMaps:
    """The ``features`` column of ``customer_features`` rows: each row's (name, value) pairs as arrays.

    A part holds the feature names it indexes, each row's count of pairs, and
    the pairs of all its rows one after the other (name index, value).
    Columns of several batches are joined with ``+`` (parts are shared, never
    changed); ``to_arrow`` makes the Map column ClickHouse reads, with the
    names as an Arrow dictionary (the column's LowCardinality keys).
    Iterating gives each row as a dict, in its pairs' order.

    >>> a = FeatureMaps.from_dicts([{"x": 1.0}, {"x": 0.5, "y": 2.0}])
    >>> b = FeatureMaps.from_dicts([{"y": 3.0}])
    >>> both = a + b
    >>> len(both), list(both)
    (3, [{'x': 1.0}, {'x': 0.5, 'y': 2.0}, {'y': 3.0}])
    >>> both.to_arrow().to_pylist()[1]
    [('x', 0.5), ('y', 2.0)]
    """

    def __init__(self, parts: Sequence[tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]] = ()):
        self.parts = tuple(parts)  # (names, pairs per row, name index per pair, value per pair)

    @classmethod
    def from_dicts(cls, rows: Sequence[dict[str, float]]) -> FeatureMaps:
        """A column of rows given as dicts (tests, small writers)."""
        names = tuple(dict.fromkeys(name for row in rows for name in row))
        at = {name: i for i, name in enumerate(names)}
        counts = np.array([len(row) for row in rows], dtype=np.int64)
        index = np.array([at[name] for row in rows for name in row], dtype=np.int32)
        values = np.array([v for row in rows for v in row.values()], dtype=np.float64)
        return cls([(names, counts, index, values)])

    def __len__(self) -> int:
        return sum(len(counts) for _, counts, _, _ in self.parts)

    def __add__(self, other: FeatureMaps) -> FeatureMaps:
        return FeatureMaps(self.parts + other.parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureMaps) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> FeatureMaps:
        """Itself (parts are never changed); for writers that copy a column before adding to it."""
        return FeatureMaps(self.parts)

    def __iter__(self) -> Iterator[dict[str, float]]:
        for names, counts, index, values in self.parts:
            keys = [names[i] for i in index.tolist()]
            vals = values.tolist()
            start = 0
            for n in counts.tolist():
                yield dict(zip(keys[start : start + n], vals[start : start + n], strict=True))
                start += n

    def joined(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Every part as one: the names (each once, in order of first part), pairs per row, name index, value."""
        names: dict[str, int] = {}
        index = [np.zeros(0, dtype=np.int32)]
        values = [np.zeros(0, dtype=np.float64)]
        counts = [np.zeros(0, dtype=np.int64)]
        for part_names, part_counts, part_index, part_values in self.parts:
            remap = np.array([names.setdefault(n, len(names)) for n in part_names], dtype=np.int32)
            index.append(remap[part_index] if len(remap) else part_index.astype(np.int32))
            values.append(part_values)
            counts.append(part_counts)
        return list(names), np.concatenate(counts), np.concatenate(index), np.concatenate(values)

    def take(self, rows: Sequence[int]) -> FeatureMaps:
        """The rows at positions ``rows`` (over all parts, in that order), as one part.

        >>> FeatureMaps.from_dicts([{"x": 1.0}, {}, {"x": 0.5, "y": 2.0}]).take([2, 0]).to_arrow().to_pylist()
        [[('x', 0.5), ('y', 2.0)], [('x', 1.0)]]
        """
        names, counts, index, values = self.joined()
        at = np.asarray(rows, dtype=np.int64)
        starts = np.cumsum(counts) - counts
        n = counts[at]
        # each taken row's pairs: its start, then the next n - 1 (a range per row, without a Python loop)
        pairs = np.repeat(starts[at] - (np.cumsum(n) - n), n) + np.arange(int(n.sum()), dtype=np.int64)
        return FeatureMaps([(tuple(names), n, index[pairs], values[pairs])])

    def to_arrow(self) -> pa.MapArray:
        """One Arrow ``map<dictionary<int32, string>, double>`` array of every row."""
        names, counts, index, values = self.joined()
        offsets = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
        if offsets[-1] >= 2**31:
            msg = f"{offsets[-1]} feature values in one insert: more than an Arrow map holds (2**31 - 1)"
            raise ValueError(msg)
        keys = pa.DictionaryArray.from_arrays(pa.array(index), pa.array(names, pa.string()))
        return pa.MapArray.from_arrays(pa.array(offsets.astype(np.int32)), keys, pa.array(values))


@dataclass
class FeatureColumns:
    """``customer_features`` rows of one shard output, column-oriented (one as-of, like ``ScoreColumns``).

    Iterating gives ``FeatureRow`` records (each with its dict of features).
    """

    as_of: int = 0
    user_id: list[str] = field(default_factory=list)
    features: FeatureMaps = field(default_factory=FeatureMaps)
    version: list[int] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows: Sequence[FeatureRow]) -> FeatureColumns:
        """Columns of records that share one as-of (tests, small writers)."""
        if len({r.as_of for r in rows}) > 1:
            msg = "feature rows of one output share one as-of"
            raise ValueError(msg)
        maps = FeatureMaps.from_dicts([r.features for r in rows])
        return cls(rows[0].as_of if rows else 0, [r.user_id for r in rows], maps, [r.version for r in rows])

    def __len__(self) -> int:
        return len(self.user_id)

    def __iter__(self) -> Iterator[FeatureRow]:
        for user, feats, version in zip(self.user_id, self.features, self.version, strict=True):
            yield FeatureRow(user, self.as_of, feats, version)

    def __getitem__(self, i: int) -> FeatureRow:
        return list(self)[i]


@dataclass
class BatchRows:
    """The customers a batch refreshes, as dense feature vectors."""

    users: list[str]
    rows: np.ndarray  # one feature vector per user, as of the clock
    seqs: list[int]  # per user: the state's update sequence (row versions)
    changed: np.ndarray  # user x group (``all`` last): that group's features changed
    with_features: list[int]  # rows whose customer_features record is written


REUSED_ROW_BYTES = 32 << 20  # feature rows of a batch up to this size are written into one matrix, reused


class FeatureRows:
    """Builds a batch's feature vectors and records; holds the feature layout, not state."""

    def __init__(self, cfg: StateConfig):
        self.cfg = cfg
        self.n_groups = cfg.n_keys // cfg.n_types  # product groups and ``all``
        self.names = cfg.spec.names
        self._blank_row = cfg.new_row()
        self._reused = np.empty((0, cfg.n_features))  # the rows of batches that fit, written over batch after batch

    def _blank(self, n: int) -> np.ndarray:
        """``n`` rows of ``cfg.new_row()``, C-contiguous; up to ``REUSED_ROW_BYTES``, in the reused matrix.

        A fresh matrix per batch (~17 MB for a replay's day of ~1,500
        refreshes at 1,431 features) costs its pages' first touch every
        batch, once the allocator has handed them back to the system; with
        the matrix kept, the day-cut replay's dataflow thread takes 0.88-0.95
        of the CPU (BENCHMARKS.md 6y). One batch at a time: the processor
        that holds these rows serves one dataflow worker (``propstream.app``
        runs one per process).
        """
        width = self._blank_row.nbytes
        if n * width > REUSED_ROW_BYTES:
            return np.tile(self._blank_row, (n, 1))
        if len(self._reused) < n:
            grown = min(max(n, 2 * len(self._reused)), REUSED_ROW_BYTES // width)
            self._reused = np.empty((grown, len(self._blank_row)))
        rows = self._reused[:n]
        rows[:] = self._blank_row
        return rows

    def dense(
        self,
        customers: dict[str, CustomerState],
        users: list[str],
        dirty: dict[str, set[int]],
        rewrite: bool = False,
    ) -> BatchRows:
        """Vectors of ``users``, which groups' features changed (``dirty``), and whose records to write.

        ``rewrite``: every live customer's record is written, changed or not.
        The rows of a batch of up to ``REUSED_ROW_BYTES`` are a view of a matrix
        the next call writes over: a batch is scored and recorded before the next.
        """
        cfg = self.cfg
        n = len(users)
        rows = self._blank(n)
        states = [customers.get(user) for user in users]
        write_rows(cfg, states, rows)
        seqs = [0 if state is None else state.seq for state in states]
        changed = np.zeros((n, self.n_groups), dtype=bool)
        at_row: list[int] = []
        at_group: list[int] = []
        with_features: list[int] = []
        for i, user in enumerate(users):
            groups = dirty.get(user)
            if groups:
                at_row += [i] * len(groups)
                at_group += groups
            if groups or (rewrite and user in customers):
                with_features.append(i)
        changed[at_row, at_group] = True
        return BatchRows(users, rows, seqs, changed, with_features)

    def records(self, batch: BatchRows, clock: int) -> FeatureColumns:
        """``customer_features`` rows of the rows ``batch.with_features``, as of ``clock``."""
        rec_off = self.cfg.recency_offset
        with_features, users, seqs = batch.with_features, batch.users, batch.seqs
        # Usually every row is written: then no copy of the matrix.
        sub = batch.rows if len(with_features) == len(batch.rows) else batch.rows[with_features]
        written = sub != 0  # counters: only those that are not zero; every recency feature
        written[:, rec_off:] = True
        at = np.flatnonzero(written)  # row by row, each row's names in layout order (flat: 3x a 2-D nonzero's speed)
        counts = np.count_nonzero(written, axis=1)
        names = (at % sub.shape[1]).astype(np.int32)
        maps = FeatureMaps([(self.names, counts, names, sub.reshape(-1)[at])])
        return FeatureColumns(
            clock,
            [users[i] for i in with_features],
            maps,
            [row_version(clock, seqs[i]) for i in with_features],
        )
