"""Point-in-time training sets, built by replaying events through the stream's state machine.

For each cutoff T the example of a customer is the feature vector the stream
would hold at T (every event with ts <= T applied, clock advanced to T), and
the label of group g is whether the customer purchased in g in (T, T + horizon].
The population at T is every customer with any event at or before T.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from schemas.events import EventRecord
from schemas.features import DAY_MS
from schemas.groups import GroupCatalog
from stream.state import CustomerState, StateConfig


@dataclass
class Examples:
    """Feature rows and per-group labels at a set of cutoffs."""

    cutoffs: np.ndarray  # ms, one per row
    users: list[str]
    x: np.ndarray  # (rows, n_features), laid out as spec.names
    labels: np.ndarray  # (rows, n_groups) bool

    def at(self, cutoff_ms: int) -> np.ndarray:
        """Row mask of one cutoff."""
        return self.cutoffs == cutoff_ms


def to_ms(t: datetime) -> int:
    """Aware datetime to epoch milliseconds."""
    return int(t.astimezone(UTC).timestamp() * 1000)


def rows_as_of(states: dict[str, CustomerState], cfg: StateConfig, t: int) -> dict[str, np.ndarray]:
    """Every customer's feature row as of ``t``: each state advanced to ``t`` (in place), then written."""
    rows = {}
    for user, st in states.items():
        st.advance(cfg, t)
        row = cfg.new_row()
        st.write_features(cfg, row)
        rows[user] = row
    return rows


def replay_features(
    records: Iterable[EventRecord],
    cfg: StateConfig,
    catalog: GroupCatalog,
    as_of_ms: list[int],
    progress: Callable[[list[EventRecord]], Iterable[EventRecord]] | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """Features of every customer seen so far at each as-of time (events sorted by time here).

    ``progress`` wraps the ordered events as they are replayed (e.g. ``tqdm``).
    """
    ordered = sorted(records, key=lambda r: r.ts_ms)
    cuts = sorted(as_of_ms)
    states: dict[str, CustomerState] = {}
    out: dict[int, dict[str, np.ndarray]] = {}
    ci = 0

    def snapshot(t: int) -> None:
        out[t] = rows_as_of(states, cfg, t)

    for rec in ordered if progress is None else progress(ordered):
        while ci < len(cuts) and rec.ts_ms > cuts[ci]:
            snapshot(cuts[ci])
            ci += 1
        st = states.get(rec.user_id)
        if st is None:
            st = states[rec.user_id] = CustomerState()
        st.apply(cfg, rec.ts_ms, rec.type_index, catalog.groups_of(rec.item_id), rec.value_cents)
    while ci < len(cuts):
        snapshot(cuts[ci])
        ci += 1
    return out


def build_examples(
    records: list[EventRecord],
    cfg: StateConfig,
    catalog: GroupCatalog,
    cutoffs: list[datetime],
    horizon_days: int = 30,
    label_types: tuple[str, ...] = ("purchase",),
    progress: Callable[[list[EventRecord]], Iterable[EventRecord]] | None = None,
) -> Examples:
    """Examples at each cutoff; a group's label: an event of ``label_types`` in it over the next ``horizon_days``."""
    cut_ms = [to_ms(c) for c in cutoffs]
    feats = replay_features(records, cfg, catalog, cut_ms, progress)
    n_groups = len(catalog.groups)
    type_index = cfg.spec.vocabulary.index  # the vocabulary the records' type indexes refer to
    unknown = sorted(set(label_types) - set(type_index))
    if unknown:
        msg = f"label types {unknown} are not event types; use some of {list(type_index)}"
        raise ValueError(msg)
    labelled = {type_index[t] for t in label_types}
    # Label events per group as (user, ts) arrays, for the label scan.
    buyers: list[list[tuple[int, str]]] = [[] for _ in range(n_groups)]
    for r in records:
        if r.type_index in labelled:
            for g in catalog.groups_of(r.item_id)[:-1]:
                buyers[g].append((r.ts_ms, r.user_id))
    buyer_ts = [np.array([t for t, _ in b], dtype=np.int64) for b in buyers]
    buyer_user = [np.array([u for _, u in b], dtype=object) for b in buyers]
    all_cut, all_users, xs, ys = [], [], [], []
    for t in cut_ms:
        rows = feats[t]
        users = sorted(rows)
        if not users:
            continue
        x = np.vstack([rows[u] for u in users])
        y = np.zeros((len(users), n_groups), dtype=bool)
        pos = {u: i for i, u in enumerate(users)}
        end = t + horizon_days * DAY_MS
        for g in range(n_groups):
            m = (buyer_ts[g] > t) & (buyer_ts[g] <= end)
            for u in set(buyer_user[g][m].tolist()):
                i = pos.get(u)
                if i is not None:
                    y[i, g] = True
        all_cut.append(np.full(len(users), t, dtype=np.int64))
        all_users += users
        xs.append(x)
        ys.append(y)
    return Examples(
        cutoffs=np.concatenate(all_cut),
        users=all_users,
        x=np.vstack(xs),
        labels=np.vstack(ys),
    )
