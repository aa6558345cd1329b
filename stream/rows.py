"""Feature rows of a batch's customers: dense numpy vectors for scoring, ``FeatureRow`` records for the sinks.

All customers of a batch are written into one matrix (one row each), which
scoring reads; the ``customer_features`` records are built from it for all of
them at once (only counters that are not zero, plus every recency feature).

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

from dataclasses import dataclass
from itertools import islice

import numpy as np

from schemas.events import FeatureRow
from schemas.tables import row_version
from stream.state import CustomerState, StateConfig, write_rows


@dataclass
class BatchRows:
    """The customers a batch refreshes, as dense feature vectors."""

    users: list[str]
    rows: np.ndarray  # one feature vector per user, as of the clock
    seqs: list[int]  # per user: the state's update sequence (row versions)
    changed: np.ndarray  # user x group (``all`` last): that group's features changed
    with_features: list[int]  # rows whose customer_features record is written


class FeatureRows:
    """Builds a batch's feature vectors and records; holds the feature layout, not state."""

    def __init__(self, cfg: StateConfig):
        self.cfg = cfg
        self.n_groups = cfg.n_keys // cfg.n_types  # product groups and ``all``
        self.names = cfg.spec.names
        self.name_array = np.array(cfg.spec.names, dtype=object)

    def dense(
        self,
        customers: dict[str, CustomerState],
        users: list[str],
        dirty: dict[str, set[int]],
        rewrite: bool = False,
    ) -> BatchRows:
        """Vectors of ``users``, which groups' features changed (``dirty``), and whose records to write.

        ``rewrite``: every live customer's record is written, changed or not.
        """
        cfg = self.cfg
        n = len(users)
        rows = np.tile(cfg.new_row(), (n, 1))
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

    def records(self, batch: BatchRows, clock: int) -> list[FeatureRow]:
        """``customer_features`` records of the rows ``batch.with_features``, as of ``clock``."""
        rec_off = self.cfg.recency_offset
        with_features, users, seqs = batch.with_features, batch.users, batch.seqs
        # Usually every row is written: then no copy of the matrix.
        sub = batch.rows if len(with_features) == len(batch.rows) else batch.rows[with_features]
        counters = sub[:, :rec_off]
        r, c = np.nonzero(counters)  # counters: only those that are not zero, row by row
        pairs = zip(self.name_array[c].tolist(), counters[r, c].tolist(), strict=True)
        per_row = np.bincount(r, minlength=len(with_features)).tolist()
        recency_names = self.names[rec_off:]
        out = []
        for k, recency in enumerate(sub[:, rec_off:].tolist()):
            i = with_features[k]
            feats = dict(islice(pairs, per_row[k]))  # this row's counters, taken off the one iterator
            feats.update(zip(recency_names, recency, strict=True))
            out.append(FeatureRow(users[i], clock, feats, row_version(clock, seqs[i])))
        return out
