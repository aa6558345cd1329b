"""A shard of customers: state, expiry index, scoring of affected groups.

The dataflow keys batches by shard (``zlib.crc32(user_id) % n_shards``), so a
shard holds many customers. That lets one clock tick reach exactly the
customers whose windows expire (a heap ordered by their next change time), and
lets every group's model score a whole batch in one ``inplace_predict`` call.

Events reach a shard already judged against their partition's watermark
(``stream.watermark``: late and skewed events are dead letters by then).
``ShardProcessor.process`` takes one ``ShardInput`` through four steps, each
owned by a module of its own:

1. events, in arrival order (``stream.apply``): duplicates (event_id seen) and
   events older than the shard's retention horizon become dead letters; the
   rest are applied to their customer's state, consecutive events of one
   customer, time and type (a basket's lines) as one update, and counted in
   their item's hourly cell. In event time an event after the shard's clock
   waits in the shard until the clock reaches it (``ShardClock.due_events``:
   a partition ahead of the slowest one), so no refresh reflects an event
   after its as-of time;
2. the clock and the retention horizon move (``stream.clock``, each batch's
   before its events are applied, judged against the horizon before it);
   customers due in the expiry heap and every touched customer advance to the clock;
3. changed customers' feature vectors are rebuilt (``stream.rows``), and every
   group whose model inputs changed is rescored in one call per group, in a
   scoring thread while the feature records are built (``stream.scoring``);
   a group whose production model changed is rescored for every customer of
   the shard; customers are put back on the expiry heap at their next change,
   and those not refreshed again for a while are packed (``_pack_waiting``);
4. everything that changed leaves as one ``ShardOutput`` for the sinks.
"""

from __future__ import annotations

import hashlib
import pickle
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from schemas.events import DeadLetter, EventRecord
from schemas.groups import GroupCatalog, ProductGroup
from stream.apply import ItemColumns, ItemKey, apply_events, first_kept_hour, forget_items, item_rows
from stream.clock import ShardClock
from stream.errors import StreamError
from stream.roster import CustomerRoster
from stream.rows import FeatureColumns, FeatureRows
from stream.scoring import ScoreColumns, ShardScoring
from stream.snapshots import ShardMarker, ShardSnapshots
from stream.state import CustomerState, StateConfig, advance_all, next_changes

# 2: buckets kept in ascending time order, history_days; shards record their layout
# 3: partition watermarks are event time only, retention horizon, idle partitions not snapshotted
# 4: with a recovery directory, snapshots are markers and customers live in side stores (stream.snapshots)
# 5: CustomerState as flat int64 arrays (window sums as bands, event ids as 64-bit digests)
# 6: expiry heap and last scores by customer row (stream.roster.CustomerRoster); side store rows hold scores as bytes
STATE_VERSION = 6


def shard_of(user_id: str, n_shards: int) -> int:
    """Stable shard of a customer (never Python's salted ``hash``)."""
    return zlib.crc32(user_id.encode()) % n_shards


class SnapshotMismatchError(StreamError):
    """A recovery snapshot was made by other state code or for another feature layout."""


def state_layout(cfg: StateConfig, groups: tuple[ProductGroup, ...], n_shards: int = 1) -> str:
    """Fingerprint of what the counters in a shard mean: the feature layout, the group rules, the shard count.

    Catalog rows are not part of it: new products may join groups without
    invalidating counts of events already applied. The number of shards is:
    it decides which shard holds a customer. Whether a group is active is not:
    a deactivated group keeps its counters.
    """
    rules = [g.model_dump(exclude={"base_rate_30d", "active"}) for g in groups]
    text = cfg.spec.model_dump_json() + repr(rules) + f"|shards={n_shards}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def base_layout(cfg: StateConfig, n_shards: int = 1) -> str:
    """Fingerprint of the layout without its groups: shards with equal ones can be migrated (``stream.regroup``)."""
    text = cfg.spec.model_copy(update={"groups": ()}).model_dump_json() + f"|shards={n_shards}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def group_keys(groups: tuple[ProductGroup, ...]) -> tuple[tuple[str, str], ...]:
    """(name, membership rules) of each group in layout order: what a shard's group counters mean."""
    return tuple((g.name, g.rules_key()) for g in groups)


def restore_shard(
    snapshot: bytes,
    layout: str,
    migrate: Callable[[CustomerShard], bool] | None = None,
    side: ShardSnapshots | None = None,
) -> CustomerShard:
    """Unpickle a shard snapshot; refuse one whose counters would be read with another meaning.

    A snapshot is a whole pickled shard, or a ``ShardMarker`` whose customers
    are read from their side store by ``side`` (``stream.snapshots``).
    ``migrate`` (``stream.regroup.ShardMigration``) may bring a snapshot made
    for other product groups to ``layout``; it returns False when it cannot.
    """
    obj = ShardMarker.from_bytes(snapshot) or pickle.loads(snapshot)
    version = getattr(obj, "version", None)
    if version != STATE_VERSION:
        msg = (
            f"recovery snapshot holds customer state version {version}, this build reads version "
            f"{STATE_VERSION}: start a fresh store (--fresh, on an empty directory) and replay the events archive"
        )
        raise SnapshotMismatchError(msg)
    if isinstance(obj, ShardMarker):
        if side is None:
            msg = (
                f"recovery snapshot of shard {obj.shard} keeps its customers in a side store, but the stream "
                "runs without its recovery directory: resume with --recovery-dir"
            )
            raise SnapshotMismatchError(msg)
        shard: CustomerShard = side.load(obj)
    else:
        shard = obj
    for name, default in (("groups", None), ("base_layout", ""), ("generation", 0), ("changed", None)):
        if not hasattr(shard, name):  # snapshots made before the attributes
            setattr(shard, name, default)
    if not hasattr(shard, "held"):  # made before events waited for the clock: none waits
        shard.held = []
    if shard.layout != layout and not (migrate is not None and migrate(shard)):
        msg = (
            "recovery snapshot was made for other product groups, feature windows or number of shards "
            f"(layout {shard.layout}, now {layout}) and cannot be migrated: product groups may change "
            "(`propstream groups`), event types, windows and the number of shards may not; resuming would "
            "misread its counters: start a fresh store (--fresh, on an empty directory) and replay the events archive"
        )
        raise SnapshotMismatchError(msg)
    if shard.layout != layout and shard.changed is not None:  # migrated: every customer was renumbered
        shard.changed.update(shard.customers)
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
class ShardOutput:
    """Rows for the sinks, column-oriented per table."""

    shard: int
    applied: list[EventRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    features: FeatureColumns = field(default_factory=FeatureColumns)
    scores: ScoreColumns = field(default_factory=ScoreColumns)
    item_activity: ItemColumns = field(default_factory=ItemColumns)
    horizon: int | None = None  # the shard's retention horizon after the batch: trending closes windows by it
    horizon_moved: bool = False

    def is_empty(self) -> bool:
        """Nothing to write, and nothing for trending to hear."""
        return not (
            self.applied
            or self.dead_letters
            or len(self.features)
            or len(self.scores)
            or len(self.item_activity)
            or self.horizon_moved
        )


def shard_runs(inputs: Sequence[ShardInput]) -> list[list[ShardInput]]:
    """The batches of ``inputs`` taken together by ``ShardProcessor.process_many``, in order.

    Consecutive live batches (each with a wall-clock tick) go together: a live
    refresh is stamped with the wall clock, so one after all of them is the one
    each would have made, later only by the time the others took. A batch in
    event time goes alone: a replay's batches are its refreshes, and so the
    resolution of ``score_history`` (``stream.eventcut``).

    >>> live = [ShardInput(0, [], tick) for tick in (1, 2)]
    >>> [len(run) for run in shard_runs([*live, ShardInput(0, [], None), ShardInput(0, [], None), *live])]
    [2, 1, 1, 2]
    """
    runs: list[list[ShardInput]] = []
    for inp in inputs:
        if runs and inp.tick_ms is not None and runs[-1][-1].tick_ms is not None:
            runs[-1].append(inp)
        else:
            runs.append([inp])
    return runs


class CustomerShard(ShardClock):
    """Customers of one shard and their expiry heap; the state Bytewax snapshots for recovery.

    Its attributes are the snapshot: renaming or removing one breaks resuming
    from snapshots made before (``STATE_VERSION``). The rules that move the
    clock and the retention horizon are ``stream.clock.ShardClock``'s.
    """

    def __init__(self, shard: int, layout: str = ""):
        self.version = STATE_VERSION
        self.layout = layout  # state_layout() of the config that built it
        self.base_layout = ""  # base_layout() of that config: the layout without its groups
        self.groups: tuple[tuple[str, str], ...] | None = None  # group_keys() of its groups (None: not recorded)
        self.shard = shard
        self.clock: int | None = None
        self.customers: dict[str, CustomerState] = {}
        self.roster = CustomerRoster()  # per customer row: time on the expiry heap, last written score per group
        self.model_versions: dict[int, int] = {}  # group -> version last used for the shard
        self.items: dict[tuple[int, str, int], list] = {}  # (hour_ms, item, type) -> [n, qty, cents]
        self.watermarks: dict[str, int] = {}  # source partition -> its event-time watermark
        self.idle: set[str] = set()  # partitions with nothing to deliver for now (not kept across restarts)
        self.horizon: int | None = None  # retention: no event older than this can still be accepted
        self.resumed = False  # a run before this one may have written rows after its last snapshot
        self.pending: dict[str, set[int]] = {}  # changed before the clock was known
        self.held: list[EventRecord] = []  # event time: events after the clock (``ShardClock.due_events``)
        self.generation = 0  # side store generation of its last incremental snapshot (0: none yet)
        self.changed: set[str] | None = None  # customers changed since that snapshot (None: not tracked)

    def pop_due(self, clock: int) -> list[str]:
        """Customers whose features change by ``clock`` alone (windows, recency), taken off the expiry heap."""
        return self.roster.pop_due(clock)

    def next_due(self) -> int | None:
        """The expiry heap's next time (an entry left by a rescheduled customer may be earlier; None: empty)."""
        return self.roster.next_due()

    def reschedule(self, cfg: StateConfig, users: Iterable[str]) -> list[str]:
        """Put ``users`` on the expiry heap at their next change; drop those left without history (returned).

        A dropped customer is off the heap, but keeps its row (its last scores)
        until ``forget``: its final scores are compared with them first.
        """
        customers, roster = self.customers, self.roster
        dropped: list[str] = []
        live: list[str] = []
        for user in users:
            if customers[user].is_empty():
                del customers[user]
                roster.unschedule(user)
                dropped.append(user)
            else:
                live.append(user)
        for user, at in zip(live, next_changes(cfg, [customers[u] for u in live]), strict=True):
            if at is not None:
                roster.schedule(user, at)
        return dropped

    def pack(self, users: Iterable[str]) -> None:
        """Pack the states of ``users`` that are still live (``CustomerState.pack``): refreshed, they wait."""
        customers = self.customers
        for user in users:
            state = customers.get(user)
            if state is not None:
                state.pack()

    def forget(self, users: Iterable[str]) -> None:
        """Free the rows of dropped customers (their last scores go: the cache holds live customers only)."""
        for user in users:
            self.roster.forget(user)


PACK_AFTER_REFRESHES = 16  # a customer not refreshed again within 16 to 32 refreshes of its shard is packed


@dataclass
class Waiting:
    """The customers a shard refreshed lately, in two generations of ``PACK_AFTER_REFRESHES`` refreshes."""

    recent: set[str] = field(default_factory=set)  # refreshed in this generation
    older: set[str] = field(default_factory=set)  # in the one before: packed at this one's end unless in ``recent``
    refreshes: int = 0  # of this generation


class ShardProcessor:
    """The logic run on a ``CustomerShard``; holds config and models, not state."""

    def __init__(self, cfg: StateConfig, catalog: GroupCatalog, models, allowed_lateness_ms: int):
        self.cfg = cfg
        self.catalog = catalog
        self.lateness = allowed_lateness_ms
        self.feature_rows = FeatureRows(cfg)
        # ProductionModels, or None: features only
        self.scoring = ShardScoring(models, cfg.spec.groups) if models is not None else None
        # shard -> (its item cells, first_kept_hour) when it last forgot cells (``_item_activity``)
        self._forgotten: dict[int, tuple[dict[ItemKey, list], int | None]] = {}
        # shard -> the customers its last refreshes left unpacked (``_pack_waiting``)
        self._waiting: dict[int, Waiting] = {}

    def process(self, sh: CustomerShard, inp: ShardInput) -> ShardOutput:
        """Apply a batch to the shard and return what changed (the steps of the module docstring)."""
        return self.process_many(sh, [inp])

    def process_many(self, sh: CustomerShard, inputs: Sequence[ShardInput]) -> ShardOutput:
        """Apply several batches of one shard in turn, then refresh what changed once, at the clock after the last.

        Each batch's events are judged against the retention horizon its
        predecessors left and its partition's position is recorded before the
        next, as ``process`` would one by one; only the refreshes between them
        are skipped (a customer's features and scores as of the last clock are
        the same either way). Live, the batches Bytewax hands a shard together
        (one per source partition) are taken so (``shard_runs``): the fixed
        costs of a refresh, one predict call per group first, are paid once.
        """
        sh.shard = inputs[0].shard
        out = ShardOutput(shard=sh.shard)
        horizon_before = sh.horizon
        # 1. Events onto their customers (with those changed before the clock was known), and
        # 2. the clock moves, batch by batch.
        dirty, sh.pending = sh.pending, {}
        touched: dict[ItemKey, list] = {}
        clock = sh.clock
        for inp in inputs:
            horizon = sh.horizon  # the batch is judged against the horizon its predecessors left
            clock = sh.advance(inp.part, inp.n_parts, inp.watermark, inp.tick_ms, inp.idle, self.lateness)
            events = inp.events
            if inp.tick_ms is None:  # event time: an event after the clock waits for it
                events = sh.due_events(events, horizon, clock, inp.watermark)
            batch = apply_events(self.cfg, self.catalog, sh.customers, sh.items, events, horizon, dirty)
            out.applied += batch.applied
            out.dead_letters += batch.dead_letters
            touched |= batch.items
        if sh.changed is not None:  # for the next incremental snapshot (due customers are added below)
            sh.changed.update(dirty)
        out.horizon, out.horizon_moved = sh.horizon, sh.horizon != horizon_before
        if clock is None:
            self._item_activity(sh, out, touched)
            sh.pending = dirty  # applied, but nothing can be scored before the clock is known
            return out
        last = inputs[-1]
        rewrite = sh.rewrite_due(last.tick_ms is not None, last.n_parts)
        # Due and touched customers advance to the clock.
        for user in sh.pop_due(clock):
            dirty.setdefault(user, set())
            if sh.changed is not None:
                sh.changed.add(user)
        self._advance_customers(sh, dirty, clock)
        # 3. Feature rows and scores of what changed (item activity while the scoring thread predicts).
        self._refresh(sh, out, dirty, clock, rewrite, lambda: self._item_activity(sh, out, touched))
        # 4. Everything that changed, for the sinks.
        return out

    def _item_activity(self, sh: CustomerShard, out: ShardOutput, touched: dict[ItemKey, list]) -> None:
        """Rows of the item cells ``touched``; cells past the retention horizon forgotten.

        The cells are looked at only when the oldest hour kept moved (or the
        shard's cells are not those it last forgot from): a batch's new cells
        are never older than that hour, since older events are dead letters.
        """
        out.item_activity = item_rows(touched, sh.shard, self.cfg.type_names)
        kept = first_kept_hour(sh.horizon)
        last = self._forgotten.get(sh.shard)
        if last is None or last[0] is not sh.items or last[1] != kept:
            sh.items = forget_items(sh.items, sh.horizon)
            self._forgotten[sh.shard] = (sh.items, kept)

    def _advance_customers(self, sh: CustomerShard, dirty: dict[str, set[int]], clock: int) -> None:
        """Move ``dirty`` customers to ``clock`` (adding the groups that changed); forget ids past retention."""
        customers, forget_before = sh.customers, sh.horizon
        states = [customers[user] for user in dirty]
        for changed, moved in zip(dirty.values(), advance_all(self.cfg, states, clock), strict=True):
            changed.update(moved)
        if forget_before is not None:
            for state in states:
                state.forget_seen_before(forget_before)

    def _refresh(
        self,
        sh: CustomerShard,
        out: ShardOutput,
        dirty: dict[str, set[int]],
        clock: int,
        rewrite: bool = False,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Rebuild changed feature vectors, rescore affected groups, schedule next changes.

        ``rewrite``: every customer's features and every group's score are
        written, changed or not (see ``CustomerShard.rewrite_due``).
        ``meanwhile``: other work of the batch, done while the scoring thread predicts.
        """
        scoring = self.scoring
        swapped = scoring.swapped(sh.model_versions, rewrite) if scoring is not None else set()
        users = [u for u, ch in dirty.items() if ch]
        if swapped or rewrite:  # every live customer; those whose history expired are left to `propstream rescore`
            seen = set(users)
            users += [u for u in sh.customers if u not in seen]
            if sh.changed is not None:  # their cached scores may change: all go in the next snapshot
                sh.changed.update(sh.customers)
        batch = self.feature_rows.dense(sh.customers, users, dirty, rewrite)
        pending = scoring.start(batch.rows, batch.changed, swapped) if scoring is not None and users else None
        out.features = self.feature_rows.records(batch, clock)  # while the scoring thread predicts
        dropped = sh.reschedule(self.cfg, dirty)
        if meanwhile is not None:
            meanwhile()
        if scoring is not None and pending is not None:
            scoring.finish(pending, users, batch.seqs, clock, sh.roster, out.scores)
        sh.forget(dropped)
        self._pack_waiting(sh, users if swapped or rewrite else dirty)

    def _pack_waiting(self, sh: CustomerShard, refreshed: Iterable[str]) -> None:
        """Pack the customers that have waited ``PACK_AFTER_REFRESHES`` to twice that many refreshes of the shard.

        Packing and unpacking a customer costs ~15 µs (one basket) to ~70 µs
        (a year of history): worth it for a customer who waits hours, not
        for one refreshed again a few batches later (a replay's one-day
        batches move most customers' recency every few days). Live, a shard
        refreshes several times a second and a customer's next change is
        hours away: it is packed seconds after its events.
        """
        waiting = self._waiting.get(sh.shard)
        if waiting is None:
            waiting = self._waiting[sh.shard] = Waiting()
        waiting.recent.update(refreshed)
        waiting.refreshes += 1
        if waiting.refreshes >= PACK_AFTER_REFRESHES:
            sh.pack(waiting.older - waiting.recent)
            waiting.older, waiting.recent, waiting.refreshes = waiting.recent, set(), 0
