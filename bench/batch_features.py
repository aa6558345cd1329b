"""Every customer's features as of one time T from the whole event log, vectorised: the batch baseline.

This module is **the benchmark's alternative to the stream, not a second
owner of features.** The single definition of every feature is
``stream.state.CustomerState`` (DESIGN.md: no second implementation of a
feature anywhere in the product). bench/suite.py needs the cheapest batch a
data team would write for a nightly refresh that recomputes every customer's
features from the events archive and rescores them, so that the stream is
compared with the best alternative, not with a slow one (replaying every
event through the state machine, ``offline_train.dataset.replay_features``).
This module restates the state machine's rules as array operations over the
whole log, with no Python loop per event; tests/bench/test_batch_features.py
proves it equals the state machine bit for bit, on The Complete Journey at
several as-of times and on a synthetic world with views, duplicate
deliveries and refused late events. Nothing in the product imports it.

**Input: the events the stream applied** (the ``events`` archive holds
exactly those): one delivery per (customer, event_id), none the stream
refused as late. Duplicates and refused events are not the batch's to judge:
which delivery came first and what was too late depend on arrival order and
watermarks, which a log of events does not record.

The rules, as of T (milliseconds), over the applied events with ``ts <= T``
(see ``schemas.features`` for the names and layout):

- an event counts in every group its item belongs to (the catalog), and in
  ``all``; a counter key is (group, event type);
- window ``w`` (buckets of ``res`` ms, ``n`` of them) holds the events whose
  bucket ``ts // res`` is at least ``T // res - n + 1``; its ``count`` is
  their number, ``value`` their summed cents / 100, ``active`` the number of
  distinct buckets they fall in;
- ``recency_days`` of a group: whole days from the group's last event (any
  type, any age) to T, rounded down to a bin edge; the cap when none;
- ``history_days``: whole days from the start of the oldest bucket with an
  event in the longest window to T, rounded down to a bin edge; 0 when none;
- one row per customer with any event at or before T, customers sorted.

>>> from schemas.events import EventRecord
>>> from schemas.features import FeatureSpec
>>> from schemas.groups import GroupCatalog, ProductGroup
>>> from stream.state import StateConfig
>>> catalog = GroupCatalog((ProductGroup(name="coffee", items=("c1",)),), {"c1": (0, 1)})
>>> cfg = StateConfig.build(FeatureSpec(groups=("coffee",)))
>>> t = 1_500_000_000_000
>>> log = EventColumns.from_records([EventRecord("u1", "c1", 2, t, "e1", 1.0, 250, ""),
...                                  EventRecord("u1", "x", 2, t + 3_600_000, "e2", 1.0, 100, "")])
>>> f = features_as_of(log, cfg, catalog, t + 2 * 86_400_000)
>>> f.users.tolist(), float(f.x[0, cfg.spec.index["grp=all|type=purchase|stat=value|win=7d"]])
(['u1'], 3.5)
>>> float(f.x[0, cfg.spec.index["grp=coffee|stat=recency_days"]])  # 2 days since the coffee purchase
2.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemas.events import EventRecord
from schemas.features import DAY_MS
from schemas.groups import GroupCatalog
from stream.state import StateConfig


@dataclass(frozen=True)
class EventColumns:
    """The event log as columns (what a batch job reads from the events archive), ids as integer codes.

    ``users`` and ``items`` hold the distinct ids (``users`` sorted); the
    per-event arrays ``user`` and ``item`` index into them.
    """

    users: np.ndarray  # distinct user ids, sorted (object)
    items: np.ndarray  # distinct item ids (object)
    user: np.ndarray  # int64 per event: index into ``users``
    item: np.ndarray  # int64 per event: index into ``items``
    type_index: np.ndarray  # int64 per event
    ts: np.ndarray  # int64 per event, epoch ms
    cents: np.ndarray  # int64 per event

    @classmethod
    def from_records(cls, records: Sequence[EventRecord]) -> EventColumns:
        """Columns of ``records`` (the applied events; their order does not matter)."""
        frame = pd.DataFrame.from_records(records, columns=EventRecord._fields)
        user, users = pd.factorize(frame["user_id"], sort=True)
        item, items = pd.factorize(frame["item_id"])
        return cls(
            users=np.asarray(users, dtype=object),
            items=np.asarray(items, dtype=object),
            user=user.astype(np.int64),
            item=item.astype(np.int64),
            type_index=frame["type_index"].to_numpy(np.int64),
            ts=frame["ts_ms"].to_numpy(np.int64),
            cents=frame["value_cents"].to_numpy(np.int64),
        )

    def __len__(self) -> int:
        return len(self.ts)

    def scaled(self, repeats: int = 1, clones: int = 1) -> EventColumns:
        """A larger log of the same habits: every event ``repeats`` times, every customer ``clones`` times.

        ``repeats`` keeps the customers and multiplies their events (a denser
        traffic: each event's counts and value ``repeats`` times over, its
        recency and history unchanged); ``clones`` multiplies both (clone ``k``
        of ``u`` is ``u~k``, with ``u``'s events). What the batch costs as its
        log grows is measured on such logs (bench/suite.py).
        """
        n = len(self.users)
        names = np.array([f"{u}~{k}" for k in range(clones) for u in self.users.tolist()], dtype=object)
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(names), dtype=np.int64)
        rank[order] = np.arange(len(names))  # (clone k of customer u, at k * n + u) -> its code in the sorted ids

        def grow(a: np.ndarray) -> np.ndarray:
            return np.tile(np.repeat(a, repeats), clones)

        clone = np.repeat(np.arange(clones, dtype=np.int64), len(self) * repeats)
        return EventColumns(
            users=names[order],
            items=self.items,
            user=rank[clone * n + grow(self.user)],
            item=grow(self.item),
            type_index=grow(self.type_index),
            ts=grow(self.ts),
            cents=grow(self.cents),
        )


@dataclass(frozen=True)
class BatchFeatures:
    """Feature rows as of one time: ``x[i]`` is customer ``users[i]``'s vector, laid out as ``spec.names``."""

    as_of_ms: int
    users: np.ndarray  # sorted user ids (object)
    x: np.ndarray  # (customers, features) float64

    def rows(self) -> dict[str, np.ndarray]:
        """Customer -> feature row, as ``offline_train.dataset.replay_features`` returns them."""
        return dict(zip(self.users.tolist(), self.x, strict=True))


@dataclass(frozen=True)
class _Exploded:
    """One row per (applied event at or before T, group of its item incl. ``all``)."""

    row: np.ndarray  # customer row of the event
    group: np.ndarray  # group index (``all`` last)
    type_index: np.ndarray
    ts: np.ndarray
    cents: np.ndarray


def _explode(log: EventColumns, catalog: GroupCatalog, keep: np.ndarray, row: np.ndarray) -> _Exploded:
    """Join the kept events with the catalog: each repeated once per group of its item.

    The catalog is resolved once per distinct item (a CSR table of group
    indices), then the events are expanded with ``np.repeat``.
    """
    per_item = [catalog.groups_of(i) for i in log.items.tolist()]
    n_of_item = np.fromiter(map(len, per_item), dtype=np.int64, count=len(per_item))
    start_of_item = np.concatenate(([0], np.cumsum(n_of_item)[:-1]))
    flat_groups = np.fromiter((g for gs in per_item for g in gs), dtype=np.int64, count=int(n_of_item.sum()))
    item = log.item[keep]
    reps = n_of_item[item]
    first = np.cumsum(reps) - reps  # position of each event's first exploded row
    k = np.arange(int(reps.sum()), dtype=np.int64) - np.repeat(first, reps)  # 0.. within each event
    group = flat_groups[np.repeat(start_of_item[item], reps) + k]
    return _Exploded(
        row=np.repeat(row, reps),
        group=group,
        type_index=np.repeat(log.type_index[keep], reps),
        ts=np.repeat(log.ts[keep], reps),
        cents=np.repeat(log.cents[keep], reps),
    )


def _bins(cfg: StateConfig, days: np.ndarray) -> np.ndarray:
    """Whole days -> recency bin edge, capped (``StateConfig.recency_bin`` over an array)."""
    table = np.asarray(cfg.recency_table, dtype=np.int64)
    return table[np.minimum(days, len(table) - 1)]


def _write_windows(cfg: StateConfig, ev: _Exploded, n_rows: int, as_of_ms: int, x: np.ndarray) -> None:
    """count, value and active of every window: per resolution, the (customer, key, bucket) cells, then sums."""
    n_keys, n_types = cfg.n_keys, cfg.n_types
    row_key = ev.row * n_keys + ev.group * n_types + ev.type_index
    for ri, res in enumerate(cfg.resolutions_ms):
        windows = cfg.windows_of_res[ri]
        now = as_of_ms // res
        lows = {wi: now - cfg.window_n[wi] + 1 for wi in windows}
        low = min(lows.values())
        bucket = ev.ts // res
        inside = bucket >= low
        span = now - low + 1
        code = row_key[inside] * span + (bucket[inside] - low)
        cell, distinct = pd.factorize(code)  # one cell per distinct (customer, key, bucket); a hash, no sort
        cell_n = np.bincount(cell)
        cell_cents = np.bincount(cell, weights=ev.cents[inside])  # exact: integer sums below 2**53
        cell_key, cell_bucket = np.divmod(distinct, span)
        cell_bucket += low
        for wi in windows:
            sel = cell_bucket >= lows[wi]
            keys = cell_key[sel]
            size = n_rows * n_keys
            count = np.bincount(keys, weights=cell_n[sel], minlength=size).reshape(n_rows, n_keys)
            cents = np.bincount(keys, weights=cell_cents[sel], minlength=size).reshape(n_rows, n_keys)
            active = np.bincount(keys, minlength=size).reshape(n_rows, n_keys)
            base = np.asarray(cfg.bases[wi], dtype=np.int64)
            x[:, base] = count
            x[:, base + 1] = cents / 100  # exact integer sums (< 2**53) divided as the state machine does
            x[:, base + 2] = active


def _write_recency(cfg: StateConfig, ev: _Exploded, n_rows: int, as_of_ms: int, x: np.ndarray) -> None:
    """recency_days of every group: the last event per (customer, group), binned; the cap when none."""
    n_groups = len(cfg.spec.all_groups)
    last = np.full(n_rows * n_groups, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, ev.row * n_groups + ev.group, ev.ts)
    seen = last > np.iinfo(np.int64).min
    rec = np.full(n_rows * n_groups, cfg.recency_edges[-1], dtype=np.int64)
    rec[seen] = _bins(cfg, (as_of_ms - last[seen]) // DAY_MS)
    off = cfg.recency_offset
    x[:, off : off + n_groups] = rec.reshape(n_rows, n_groups)


def _write_history(
    cfg: StateConfig, row: np.ndarray, ts: np.ndarray, n_rows: int, as_of_ms: int, x: np.ndarray
) -> None:
    """history_days: from the oldest bucket with an event in the longest window to T, binned; 0 when none."""
    res = cfg.resolutions_ms[cfg.history_res]
    low = as_of_ms // res - cfg.window_n[cfg.spec.history_window] + 1
    bucket = ts // res
    inside = bucket >= low
    oldest = np.full(n_rows, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(oldest, row[inside], bucket[inside])
    has = oldest < np.iinfo(np.int64).max
    hist = np.zeros(n_rows, dtype=np.int64)
    hist[has] = _bins(cfg, (as_of_ms - oldest[has] * res) // DAY_MS)
    x[:, cfg.history_index] = hist


def features_as_of(log: EventColumns, cfg: StateConfig, catalog: GroupCatalog, as_of_ms: int) -> BatchFeatures:
    """Features of every customer with an applied event at or before ``as_of_ms``, as of that time."""
    keep = log.ts <= as_of_ms
    present = np.bincount(log.user[keep], minlength=len(log.users)) > 0
    row_of_user = np.cumsum(present) - 1  # customer code -> its row (valid where present)
    n_rows = int(present.sum())
    row = row_of_user[log.user[keep]]
    x = np.zeros((n_rows, cfg.n_features), dtype=np.float64)
    x[:] = cfg.new_row()
    ev = _explode(log, catalog, keep, row)
    _write_windows(cfg, ev, n_rows, as_of_ms, x)
    _write_recency(cfg, ev, n_rows, as_of_ms, x)
    _write_history(cfg, row, log.ts[keep], n_rows, as_of_ms, x)
    return BatchFeatures(as_of_ms=as_of_ms, users=log.users[present], x=x)
