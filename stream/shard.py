"""A shard of customers: state, expiry index, scoring of affected groups.

The dataflow keys batches by shard (``zlib.crc32(user_id) % n_shards``), so a
shard holds many customers. That lets one clock tick reach exactly the
customers whose windows expire (a heap ordered by their next change time), and
lets every group's model score a whole batch in one ``inplace_predict`` call.

Events reach a shard already judged against their partition's watermark
(``stream.watermark``: late and skewed events are dead letters by then).
Processing one ``ShardInput``:

1. events in arrival order: duplicates (event_id seen) and events older than
   the shard's retention horizon become dead letters; the rest are applied to
   their customer's state, consecutive events of one customer, time and type
   (a basket's lines) as one update;
2. the clock moves (see ``CustomerShard.advance``); customers due in the
   expiry heap and every touched customer advance to it;
3. changed customers' feature vectors are rebuilt, and every group whose
   model inputs changed is rescored in one call per group (in a scoring
   thread, while the feature rows are built); a group whose production model
   changed is rescored for every customer of the shard;
4. everything that changed leaves as one ``ShardOutput`` for the sinks.
"""

from __future__ import annotations

import hashlib
import heapq
import pickle
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from schemas.events import TYPE_NAMES, DeadLetter, EventRecord, FeatureRow, ItemActivityRow
from schemas.groups import GroupCatalog, ProductGroup
from schemas.tables import row_version
from stream.errors import StreamError
from stream.state import CustomerState, StateConfig

if TYPE_CHECKING:
    from models.scorer import GroupScorer

# 2: buckets kept in ascending time order, history_days; shards record their layout
# 3: partition watermarks are event time only, retention horizon, idle partitions not snapshotted
STATE_VERSION = 3


def shard_of(user_id: str, n_shards: int) -> int:
    """Stable shard of a customer (never Python's salted ``hash``)."""
    return zlib.crc32(user_id.encode()) % n_shards


class SnapshotMismatchError(StreamError):
    """A recovery snapshot was made by other state code or for another feature layout."""


def state_layout(cfg: StateConfig, groups: tuple[ProductGroup, ...], n_shards: int = 1) -> str:
    """Fingerprint of what the counters in a shard mean: the feature layout, the group rules, the shard count.

    Catalog rows are not part of it: new products may join groups without
    invalidating counts of events already applied. The number of shards is:
    it decides which shard holds a customer.
    """
    rules = [g.model_dump(exclude={"base_rate_30d"}) for g in groups]
    text = cfg.spec.model_dump_json() + repr(rules) + f"|shards={n_shards}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def restore_shard(snapshot: bytes, layout: str) -> CustomerShard:
    """Unpickle a shard snapshot; refuse one whose counters would be read with another meaning."""
    shard = pickle.loads(snapshot)
    version = getattr(shard, "version", None)
    if version != STATE_VERSION:
        msg = (
            f"recovery snapshot holds customer state version {version}, this build reads version "
            f"{STATE_VERSION}: start a fresh store (--fresh, on an empty directory) and replay the events archive"
        )
        raise SnapshotMismatchError(msg)
    if shard.layout != layout:
        msg = (
            "recovery snapshot was made for other product groups, feature windows or number of shards "
            f"(layout {shard.layout}, now {layout}): resuming would misread its counters; "
            "start a fresh store (--fresh, on an empty directory) and replay the events archive"
        )
        raise SnapshotMismatchError(msg)
    shard.idle = set()  # which partitions are idle is for the source to say again after a restart
    return shard


@dataclass
class ShardInput:
    """Events for one shard, and where their source partition stands."""

    shard: int
    events: list[EventRecord]
    tick_ms: int | None  # wall clock of a live source; None in event time
    part: str = ""  # source partition the batch came from
    n_parts: int = 1  # partitions of the source in all
    idle: bool = False  # the partition has nothing more to deliver for now (or has ended)
    watermark: int | None = None  # the partition's event-time watermark after the batch


@dataclass
class ScoreColumns:
    """Score rows, column-oriented (one as-of per shard output)."""

    as_of: int = 0
    user_id: list[str] = field(default_factory=list)
    group_id: list[str] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    model_version: list[int] = field(default_factory=list)
    version: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass
class ShardOutput:
    """Rows for the sinks, column-oriented per table."""

    shard: int
    applied: list[EventRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    features: list[FeatureRow] = field(default_factory=list)
    scores: ScoreColumns = field(default_factory=ScoreColumns)
    item_activity: list[ItemActivityRow] = field(default_factory=list)

    def is_empty(self) -> bool:
        """Nothing to write."""
        return not (self.applied or self.dead_letters or self.features or len(self.scores) or self.item_activity)


class CustomerShard:
    """Customers of one shard; the state Bytewax snapshots for recovery."""

    def __init__(self, shard: int, layout: str = ""):
        self.version = STATE_VERSION
        self.layout = layout  # state_layout() of the config that built it
        self.shard = shard
        self.clock: int | None = None
        self.customers: dict[str, CustomerState] = {}
        self.due: dict[str, int] = {}  # user -> next change time in the heap
        self.heap: list[tuple[int, str]] = []
        self.scores: dict[str, np.ndarray] = {}  # user -> last written score per group
        self.model_versions: dict[int, int] = {}  # group -> version last used for the shard
        self.items: dict[tuple[int, str, int], list] = {}  # (hour_ms, item, type) -> [n, qty, cents]
        self.watermarks: dict[str, int] = {}  # source partition -> its event-time watermark
        self.idle: set[str] = set()  # partitions with nothing to deliver for now (not kept across restarts)
        self.horizon: int | None = None  # retention: no event older than this can still be accepted
        self.resumed = False  # a run before this one may have written rows after its last snapshot
        self.pending: dict[str, set[int]] = {}  # changed before the clock was known

    def rewrite_due(self, live: bool, n_parts: int) -> bool:
        """Whether to write every customer of the shard now, once after a restart.

        A run that was killed had written rows after its last snapshot. The
        resumed run recomputes them from the snapshot, but its batches are cut
        differently, so in event time its last row for a customer can carry a
        lower version than one the killed run wrote with fewer events applied;
        and a score equal to the cached one is not written again. Rewriting
        every customer once, at a clock no killed run can have passed, makes
        the resumed run's rows win: when live, at the first wall-clock tick
        (later than anything written before the restart); in event time, once
        every partition is idle (the input the killed run read has been read
        again, so the clock is at least where it was). One edge remains: a
        killed run that wrote at this very clock while one of its partitions
        was idle with unread events; the tie goes to the higher sequence.
        """
        if not self.resumed or not (live or len(self.idle) >= n_parts):
            return False
        self.resumed = False
        return True

    def advance(self, part: str, n_parts: int, watermark: int | None, tick: int | None, idle: bool, lateness: int):
        """Record where a partition stands; move the clock and the retention horizon (never backwards).

        The clock, which expires windows: the wall clock of a live source
        (``tick``); in event time, the slowest watermark among partitions that
        are not idle, or the fastest once all are idle (as Flink's source
        idleness: a partition with nothing to deliver does not hold the others
        back). Until every partition has a watermark or is idle, it is unknown.

        The retention horizon, before which duplicate ids and item cells are
        forgotten: the slowest watermark of all partitions, idle or not, minus
        the allowed lateness. A partition accepts nothing older than its own
        watermark minus the lateness, so nothing it can still send is older
        than the horizon. Only a partition that has never delivered an event
        has no watermark: once idle it does not hold the horizon back, and
        should it then send events older than the horizon, they are dead
        letters (``process``).
        """
        wm = self.watermarks
        if watermark is not None and watermark > wm.get(part, watermark - 1):
            wm[part] = watermark
        if idle:
            self.idle.add(part)
        else:
            self.idle.discard(part)
        if len(wm.keys() | self.idle) < n_parts:
            return
        if tick is not None:
            clock: int | None = tick
        else:
            live = [v for p, v in wm.items() if p not in self.idle]
            clock = min(live) if live else max(wm.values(), default=None)
        if clock is not None and (self.clock is None or clock > self.clock):
            self.clock = clock
        if wm:
            horizon = min(wm.values()) - lateness
            if self.horizon is None or horizon > self.horizon:
                self.horizon = horizon


class ShardProcessor:
    """The logic run on a ``CustomerShard``; holds config and models, not state."""

    def __init__(self, cfg: StateConfig, catalog: GroupCatalog, models, allowed_lateness_ms: int):
        self.cfg = cfg
        self.catalog = catalog
        self.models = models  # ProductionModels or None (features only)
        self.lateness = allowed_lateness_ms
        spec = cfg.spec
        self.group_names = spec.groups
        self.feature_names = spec.names
        self.name_array = np.array(spec.names, dtype=object)
        self.n_groups = len(spec.groups)
        self._pool: ThreadPoolExecutor | None = None  # started at the first batch with models

    def process(self, sh: CustomerShard, inp: ShardInput) -> ShardOutput:
        """Apply a batch to the shard and return what changed."""
        cfg = self.cfg
        sh.shard = inp.shard
        out = ShardOutput(shard=sh.shard)
        dirty: dict[str, set[int]] = sh.pending
        sh.pending = {}
        customers = sh.customers
        items = sh.items
        horizon = sh.horizon
        touched_items: set[tuple[int, str, int]] = set()
        groups_of = self.catalog.groups_of
        applied = out.applied
        # Consecutive events of one customer, time and type (a basket's lines) are counted as one run.
        run_key = ("", 0, 0)  # (user, ts, type); run_n == 0 means no run yet
        run_state = CustomerState()
        run_counts: dict[int, list[int]] = {}
        run_n = 0
        for rec in inp.events:
            user, item, type_index, ts, event_id, quantity, cents, _ = rec
            if horizon is not None and ts < horizon:  # only from a partition that was idle without a watermark
                out.dead_letters.append(
                    DeadLetter(
                        f"late: event time is {(horizon - ts) / 3_600_000:.1f} h before the shard's retention "
                        "horizon (its partition had delivered nothing while the others moved on)",
                        rec.to_json(),
                        rec.source,
                    )
                )
                continue
            state = customers.get(user)
            if state is None:
                state = customers[user] = CustomerState()
            if not state.see(event_id, ts):
                out.dead_letters.append(
                    DeadLetter(f"duplicate: event_id {event_id!r} was already applied", rec.to_json(), rec.source)
                )
                continue
            key = (user, ts, type_index)
            if key != run_key:
                if run_n:
                    self._apply_run(dirty, run_key, run_state, run_counts, run_n)
                run_key, run_state, run_counts, run_n = key, state, {}, 0
            for g in groups_of(item):
                c = run_counts.get(g)
                if c is None:
                    run_counts[g] = [1, cents]
                else:
                    c[0] += 1
                    c[1] += cents
            run_n += 1
            applied.append(rec)
            item_key = (ts - ts % 3_600_000, item, type_index)
            touched_items.add(item_key)
            cell = items.get(item_key)
            if cell is None:
                items[item_key] = [1, quantity, cents]
            else:
                cell[0] += 1
                cell[1] += quantity
                cell[2] += cents
        if run_n:
            self._apply_run(dirty, run_key, run_state, run_counts, run_n)
        sh.advance(inp.part, inp.n_parts, inp.watermark, inp.tick_ms, inp.idle, self.lateness)
        clock = sh.clock
        self._item_rows(sh, out, touched_items)
        if clock is None:
            sh.pending = dirty  # applied, but nothing can be scored before the clock is known
            return out
        rewrite = sh.rewrite_due(inp.tick_ms is not None, inp.n_parts)
        # Customers whose windows or recency changed by the clock alone.
        heap = sh.heap
        while heap and heap[0][0] <= clock:
            due, user = heapq.heappop(heap)
            if sh.due.get(user) == due:
                del sh.due[user]
                dirty.setdefault(user, set())
        forget_before = sh.horizon
        for user, changed in dirty.items():
            state = customers[user]
            changed.update(state.advance(cfg, clock))
            if forget_before is not None:
                state.forget_seen_before(forget_before)
        self._refresh(sh, out, dirty, clock, rewrite)
        return out

    def _apply_run(
        self,
        dirty: dict[str, set[int]],
        key: tuple[str, int, int],
        state: CustomerState,
        counts: dict[int, list[int]],
        n_events: int,
    ) -> None:
        user, ts, type_index = key
        changed = state.apply_run(self.cfg, ts, type_index, counts, n_events)
        marked = dirty.get(user)
        if marked is None:
            dirty[user] = set(changed)
        else:
            marked.update(changed)

    def _item_rows(self, sh: CustomerShard, out: ShardOutput, touched: set) -> None:
        items, rows, shard = sh.items, out.item_activity, sh.shard
        for key in touched:
            n, qty, cents = items[key]
            rows.append(ItemActivityRow(key[0], key[1], TYPE_NAMES[key[2]], shard, n, qty, cents / 100))
        if sh.horizon is None:
            return
        horizon = sh.horizon - 3_600_000  # an hour cell ends before the horizon: no event can reach it
        if sh.items and min(k[0] for k in sh.items) < horizon:
            sh.items = {k: v for k, v in sh.items.items() if k[0] >= horizon}

    def _refresh(
        self, sh: CustomerShard, out: ShardOutput, dirty: dict[str, set[int]], clock: int, rewrite: bool = False
    ) -> None:
        """Rebuild changed feature vectors, rescore affected groups, schedule next changes.

        ``rewrite``: every customer's features and every group's score are
        written, changed or not (see ``CustomerShard.rewrite_due``).
        """
        cfg = self.cfg
        # Groups whose production model differs from the one this shard last used.
        swapped: set[int] = set()
        if self.models is not None:
            self.models.refresh()
            for gi, v in self.models.versions().items():
                if sh.model_versions.get(gi) != v or rewrite:
                    swapped.add(gi)
                    sh.model_versions[gi] = v
        users = [u for u, ch in dirty.items() if ch]
        if swapped or rewrite:  # every live customer; those whose history expired are left to `propstream rescore`
            seen = set(users)
            users += [u for u in sh.customers if u not in seen]
        n = len(users)
        rows = np.tile(cfg.new_row(), (n, 1))
        seqs = [0] * n
        customers = sh.customers
        for i, user in enumerate(users):
            state = customers.get(user)
            if state is not None:
                state.write_features(cfg, rows[i])
                seqs[i] = state.seq
        changed = np.zeros((n, cfg.n_keys // cfg.n_types), dtype=bool)
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
        # XGBoost releases the GIL: predictions run in a thread while this one builds rows and schedules.
        scoring = None
        if self.models is not None and n:
            plan = self._score_plan(len(users), changed, swapped)
            scoring = self._scoring_thread().submit(self._predict, rows, plan)
        # Feature rows of the customers whose features changed, built for all of them at once.
        rec_off = cfg.recency_offset
        sub = rows[with_features]
        r, c = np.nonzero(sub[:, :rec_off])  # counters: only those that are not zero
        names = self.name_array[c].tolist()
        values = sub[r, c].tolist()
        ends = np.cumsum(np.bincount(r, minlength=len(with_features))).tolist()
        recency_names = self.feature_names[rec_off:]
        start = 0
        for k, recency in enumerate(sub[:, rec_off:].tolist()):
            i = with_features[k]
            feats = dict(zip(names[start : ends[k]], values[start : ends[k]], strict=True))
            feats.update(zip(recency_names, recency, strict=True))
            start = ends[k]
            out.features.append(FeatureRow(users[i], clock, feats, row_version(clock, seqs[i])))
        dropped: list[str] = []
        for user in dirty:
            state = sh.customers[user]
            if state.is_empty():
                del sh.customers[user]
                sh.due.pop(user, None)
                dropped.append(user)
                continue
            due = state.next_change(cfg)
            if due is not None and sh.due.get(user) != due:
                sh.due[user] = due
                heapq.heappush(sh.heap, (due, user))
        if scoring is not None:
            self._record_scores(sh, out, users, plan, scoring.result(), seqs, clock)
        for user in dropped:  # the last-score cache holds live customers only
            sh.scores.pop(user, None)

    def _scoring_thread(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="propstream-scoring")
        return self._pool

    def _score_plan(self, n: int, changed: np.ndarray, swapped: set[int]) -> list[tuple[GroupScorer, np.ndarray, bool]]:
        """Which rows each group rescores: those whose model inputs changed, or all after a model swap."""
        plan = []
        for gi, scorer in self.models.scorers.items():
            force = gi in swapped
            idx = np.arange(n) if force else np.flatnonzero(changed[:, scorer.input_groups].any(axis=1))
            if idx.size:
                plan.append((scorer, idx, force))
        return plan

    def _predict(self, rows: np.ndarray, plan: list[tuple[GroupScorer, np.ndarray, bool]]) -> list[np.ndarray]:
        """One ``inplace_predict`` per affected group."""
        return [scorer.score(rows, idx) for scorer, idx, _ in plan]

    def _record_scores(
        self,
        sh: CustomerShard,
        out: ShardOutput,
        users: list[str],
        plan: list[tuple[GroupScorer, np.ndarray, bool]],
        predictions: list[np.ndarray],
        seqs: list[int],
        clock: int,
    ) -> None:
        """Keep only scores that moved (all of them after a model swap) and remember them."""
        nan_row = np.full(self.n_groups, np.nan)
        last = np.vstack([sh.scores.get(u, nan_row) for u in users])
        versions = [row_version(clock, q) for q in seqs]
        cols = out.scores
        cols.as_of = clock
        for (scorer, idx, force), probs in zip(plan, predictions, strict=True):
            gi = scorer.group_index
            if not force:
                moved = probs != last[idx, gi]
                idx, probs = idx[moved], probs[moved]
            last[idx, gi] = probs
            group = self.group_names[gi]
            ii = idx.tolist()
            cols.user_id += [users[i] for i in ii]
            cols.group_id += [group] * len(ii)
            cols.score += probs.tolist()
            cols.model_version += [scorer.version] * len(ii)
            cols.version += [versions[i] for i in ii]
        for i, u in enumerate(users):
            sh.scores[u] = last[i]
