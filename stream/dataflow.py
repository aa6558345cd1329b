"""The Bytewax dataflow: read -> parse -> route by shard -> customer shards -> ClickHouse.

::

    read (SourceBatch: raw records from files or Kafka, plus a clock tick)
      -> parse: validate; bad records become dead letters
      -> watermark: keyed by source partition; late and skewed events become dead letters
      -> event_time_cut (FlowConfig.max_batch_event_ms > 0): keyed by source partition; replay batches
         re-cut so none spans more than one event-time window (stream/eventcut.py)
      -> route: split each batch by shard (crc32 of user_id), broadcast where the partition stands
      -> customers: stateful per shard (state, expiry heap, scoring); live batches that reach a shard
         together (one per source partition) are applied in turn and refreshed once
      -> clickhouse: one column-oriented insert per table per batch

    trending (when FlowConfig.trending is set; stream/trending.py):
    customers' applied events and retention horizons
      -> trend_route: counts per trend shard (crc32 of scope|key), horizons to every trend shard
      -> trending: stateful per trend shard; closes a window once every customer shard's horizon passed its end
      -> trend_rank: stateful per window name; ranks once every trend shard closed the end
      -> a typed stream of TrendRow -> every sink of trending_sinks (clickhouse_trending: the trending table)

    dead letters of parse, watermark and customers (a typed stream of DeadLetter)
      -> clickhouse_dead_letters: the dead_letters table
      -> dead_letter_topic (optional): a Kafka topic as well

The keyed steps' state is named by FlowConfig.placement (stream/placement.py):
shard i on worker i % w, a partition's state on the worker that reads it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow, operator
from bytewax.inputs import Source
from bytewax.operators import KeyedStream, StatefulBatchLogic, StatefulLogic
from bytewax.outputs import DynamicSink

from schemas.events import DeadLetter, EventRecord
from schemas.groups import GroupCatalog
from stream.eventcut import EventTimeCut
from stream.parse import EventParser, ParsedBatch
from stream.placement import Placement
from stream.regroup import GroupArchive, ShardMigration
from stream.shard import (
    CustomerShard,
    ShardInput,
    ShardOutput,
    ShardProcessor,
    SnapshotMismatchError,
    base_layout,
    group_keys,
    restore_shard,
    shard_of,
    shard_runs,
    state_layout,
)
from stream.sinks.base import RunStats
from stream.snapshots import ShardSnapshots
from stream.sources.base import SourceBatch
from stream.state import StateConfig
from stream.ticks import TickBoard
from stream.trending import STATE_VERSION as TRENDING_VERSION
from stream.trending import TrendClosed, TrendConfig, TrendInput, TrendRanker, TrendRow, TrendShard, rank_closed
from stream.watermark import WatermarkRules


class ShardLogic(StatefulBatchLogic[ShardInput, ShardOutput, bytes]):
    """Bytewax glue around a CustomerShard; snapshots are pickled bytes (immutable).

    Bytewax hands a shard every batch that reached it in one activation (live,
    one per source partition): consecutive live ones are applied together and
    refreshed once (``stream.shard.shard_runs``). With ``side`` (a recovery
    directory), a snapshot writes the customers changed since the last one to
    the shard's side store and is a small marker (``stream.snapshots``);
    without, it is the whole shard pickled. Bytewax asks for a snapshot at
    every epoch even when it keeps none (no recovery); making one then is
    wasted work, so it is skipped.
    """

    def __init__(
        self,
        processor: ShardProcessor,
        shard: CustomerShard,
        snapshots: bool = True,
        side: ShardSnapshots | None = None,
    ):
        self.processor = processor
        self.shard = shard
        self.snapshots = snapshots
        self.side = side if snapshots else None
        if self.side is not None and shard.changed is None:  # a new shard, or one from a whole-shard snapshot
            shard.changed = set(shard.customers)

    def on_batch(self, values: list[ShardInput]) -> tuple[Iterable[ShardOutput], bool]:
        outs = [self.processor.process_many(self.shard, run) for run in shard_runs(values)]
        return [out for out in outs if not out.is_empty()], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        if not self.snapshots:
            return b""
        if self.side is not None:
            return self.side.save(self.shard)
        return pickle.dumps(self.shard, protocol=pickle.HIGHEST_PROTOCOL)


class TickPostingShardLogic(ShardLogic):
    """A ShardLogic that posts, after each batch of inputs, when its shard next needs a tick (``stream.ticks``)."""

    board: TickBoard

    def on_batch(self, values: list[ShardInput]) -> tuple[Iterable[ShardOutput], bool]:
        emitted = super().on_batch(values)
        self.board.post(self.shard.shard, self.shard.tick_due())
        return emitted


@operator
def _customer_shards(
    step_id: str, up: KeyedStream[ShardInput], builder: Callable[[bytes | None], ShardLogic]
) -> KeyedStream[ShardOutput]:
    """``op.stateful``'s shape with the shard's own ``on_batch``.

    Its inner step is named as ``op.stateful``'s (``<step_id>.stateful_batch``),
    so recovery stores written when the shards ran under ``op.stateful`` resume.
    """
    return op.stateful_batch("stateful_batch", up, builder)


FLOW_ID = "propstream"  # step ids in recovery snapshots are "propstream.<step>": renaming a step loses its state


@dataclass(frozen=True)
class FlowConfig:
    """What the dataflow is built from."""

    n_shards: int
    allowed_lateness_ms: int
    max_ahead_ms: int = 30 * 24 * 3_600_000
    recovery: bool = True  # False: Bytewax keeps no snapshots, so the shards need not make them
    # the recovery store (with ``recovery``): customer shards snapshot incrementally into side stores there;
    # None: a snapshot pickles the whole shard
    recovery_dir: Path | None = None
    resumed: bool = False  # an earlier run used the recovery store: shards rewrite their rows once
    trending: TrendConfig | None = None  # None: no trending steps
    max_batch_event_ms: int = 0  # > 0: replay batches span at most one such event-time window (stream/eventcut.py)
    placement: Placement = field(default_factory=Placement)  # the names of the keyed steps' state (stream/placement.py)


class TrendLogic(StatefulLogic[TrendInput, TrendClosed, bytes]):
    """Bytewax glue around a TrendShard (snapshots pickled, skipped without recovery)."""

    def __init__(self, cfg: TrendConfig, shard: TrendShard, snapshots: bool = True):
        self.cfg = cfg
        self.shard = shard
        self.snapshots = snapshots

    def on_item(self, value: TrendInput) -> tuple[Iterable[TrendClosed], bool]:
        return self.cfg.apply(self.shard, value), StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.shard, protocol=pickle.HIGHEST_PROTOCOL) if self.snapshots else b""


class RankLogic(StatefulLogic[TrendClosed, TrendRow, bytes]):
    """Bytewax glue around a TrendRanker: the final rows of closed windows leave as a stream of TrendRow."""

    def __init__(self, cfg: TrendConfig, ranker: TrendRanker, snapshots: bool = True):
        self.cfg = cfg
        self.ranker = ranker
        self.snapshots = snapshots

    def on_item(self, value: TrendClosed) -> tuple[Iterable[TrendRow], bool]:
        return rank_closed(self.ranker, value, self.cfg.shards, self.cfg.top_n), StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.ranker, protocol=pickle.HIGHEST_PROTOCOL) if self.snapshots else b""


def _restore(snapshot: bytes, cls: type):
    """Unpickle a trending snapshot; refuse one made by other trending code."""
    state = pickle.loads(snapshot)
    if not isinstance(state, cls) or getattr(state, "version", TRENDING_VERSION) != TRENDING_VERSION:
        msg = (
            f"recovery snapshot of a trending step holds {type(state).__name__} of another version: "
            "start a fresh store (--fresh, on an empty directory) and replay the events archive"
        )
        raise SnapshotMismatchError(msg)
    return state


def route(n_shards: int, batch: ParsedBatch, keys: Sequence[str] | None = None) -> list[tuple[str, ShardInput]]:
    """Split a batch by shard; every shard hears where the partition stands, so expiry reaches all customers.

    ``keys`` names each shard's state (``Placement.shard_key``; None: its number).
    """
    parts: list[list[EventRecord]] = [[] for _ in range(n_shards)]
    for rec in batch.records:
        parts[shard_of(rec.user_id, n_shards)].append(rec)
    broadcast = batch.tick_ms is not None or batch.idle or batch.watermark is not None
    names = keys if keys is not None else [str(s) for s in range(n_shards)]
    return [
        (names[s], ShardInput(s, p, batch.tick_ms, batch.part, batch.n_parts, batch.idle, batch.watermark))
        for s, p in enumerate(parts)
        if p or broadcast
    ]


def build_dataflow(
    source: Source,
    parser: EventParser,
    cfg: StateConfig,
    catalog: GroupCatalog,
    models,
    sink: DynamicSink[ShardOutput],
    dead_letter_sinks: dict[str, DynamicSink[DeadLetter]],
    flow_cfg: FlowConfig,
    stats: RunStats | None = None,
    flow_id: str = FLOW_ID,
    trending_sinks: Mapping[str, DynamicSink[TrendRow]] | None = None,
    archive: GroupArchive | None = None,
    ticks: TickBoard | None = None,
) -> Dataflow:
    """Wire the dataflow; no I/O happens until it runs.

    ``sink`` takes what the shards changed (``ClickHouseSink`` in production);
    every sink of ``dead_letter_sinks`` (step id -> sink) takes every dead
    letter, whichever step found it (``ClickHouseSink.dead_letter_sink()``,
    a Kafka topic). With ``flow_cfg.trending`` set, every sink of
    ``trending_sinks`` (step id -> sink) takes every ranked trending row
    (``ClickHouseSink.trending_sink()``); without one they are computed and dropped.

    A recovery snapshot made for other product groups is migrated to
    ``catalog``'s (``stream.regroup``): added groups are backfilled from
    ``archive`` (a group's applied events); without one, or when windows,
    types or the shard count changed, it is refused (SnapshotMismatchError).

    ``ticks``: the board the source reads to tick only when a shard needs it
    (``stream.ticks``); every shard posts its next due time to it.
    """
    processor = ShardProcessor(cfg, catalog, models, flow_cfg.allowed_lateness_ms)
    rules = WatermarkRules(flow_cfg.allowed_lateness_ms, flow_cfg.max_ahead_ms, cfg.type_names)
    n_shards = flow_cfg.n_shards
    layout = state_layout(cfg, catalog.groups, n_shards)
    base, groups = base_layout(cfg, n_shards), group_keys(catalog.groups)
    migration = ShardMigration(cfg, layout, base, groups, archive)
    placement = flow_cfg.placement
    shard_keys = [placement.shard_key(s) for s in range(n_shards)]
    side = (
        # _customer_shards' inner step
        ShardSnapshots(flow_cfg.recovery_dir, f"{flow_id}.customers.stateful_batch", shard_keys)
        if flow_cfg.recovery and flow_cfg.recovery_dir is not None
        else None
    )

    def parse(batch: SourceBatch) -> ParsedBatch:
        pb = parser.parse_batch(batch)
        if stats is not None:
            stats.events_in += pb.n_in
            stats.dropped += pb.dropped
        return pb

    def judge(watermark: int | None, pb: ParsedBatch) -> tuple[int | None, ParsedBatch]:
        return rules.judge(watermark, pb), pb

    flow = Dataflow(flow_id)
    raw = op.input("read", flow, source)
    parsed = op.map("parse", raw, parse)

    def partition_key(pb: ParsedBatch) -> str:
        return placement.partition_key(pb.part, pb.index)

    by_partition = op.key_on("by_partition", parsed, partition_key)
    judged = op.map("unkey_partition", op.stateful_map("watermark", by_partition, judge), lambda kv: kv[1])
    rejected = op.flat_map("parse_errors", judged, lambda pb: pb.dead)
    if flow_cfg.max_batch_event_ms > 0:
        by_part = op.key_on("cut_by_partition", judged, partition_key)
        cut = op.stateful_map("event_time_cut", by_part, EventTimeCut(flow_cfg.max_batch_event_ms))
        routed = op.flat_map("route", cut, lambda kv: [r for pb in kv[1] for r in route(n_shards, pb, shard_keys)])
    else:
        routed = op.flat_map("route", judged, lambda pb: route(n_shards, pb, shard_keys))

    def builder(resume: bytes | None) -> ShardLogic:
        # Bytewax does not pass the key; the shard number arrives with each ShardInput.
        shard = restore_shard(resume, layout, migration, side) if resume is not None else CustomerShard(-1, layout)
        shard.base_layout, shard.groups = base, groups  # what its counters mean, for a later migration
        shard.resumed = flow_cfg.resumed  # a shard new to this run may have had rows written by the last one
        if ticks is None:
            return ShardLogic(processor, shard, flow_cfg.recovery, side)
        logic = TickPostingShardLogic(processor, shard, flow_cfg.recovery, side)
        logic.board = ticks
        if shard.shard >= 0:  # restored: its customers may come due before any input reaches it
            ticks.post(shard.shard, shard.tick_due())
        return logic

    keyed_out = _customer_shards("customers", routed, builder)
    outs = op.map("unkey", keyed_out, lambda kv: kv[1])
    tcfg = flow_cfg.trending
    if tcfg is not None:
        snapshots = flow_cfg.recovery

        def trend_route(o: ShardOutput) -> list[tuple[str, TrendInput]]:
            return tcfg.route(catalog, o.shard, o.applied, o.horizon, o.horizon_moved, placement.shard_key)

        def trend_builder(resume: bytes | None) -> TrendLogic:
            shard = _restore(resume, TrendShard) if resume is not None else TrendShard()
            return TrendLogic(tcfg, shard, snapshots)

        def rank_builder(resume: bytes | None) -> RankLogic:
            return RankLogic(tcfg, _restore(resume, TrendRanker) if resume is not None else TrendRanker(), snapshots)

        closed = op.stateful("trending", op.flat_map("trend_route", outs, trend_route), trend_builder)
        by_window = op.key_on("trend_by_window", op.map("unkey_trend", closed, lambda kv: kv[1]), lambda c: c.window)
        ranked = op.map("unkey_rank", op.stateful("trend_rank", by_window, rank_builder), lambda kv: kv[1])
        for step_id, trend_sink in (trending_sinks or {}).items():
            op.output(step_id, ranked, trend_sink)
    op.output("clickhouse", outs, sink)
    dead = op.merge("dead_letters", rejected, op.flat_map("shard_dead_letters", outs, lambda o: o.dead_letters))
    for step_id, dead_sink in dead_letter_sinks.items():
        op.output(step_id, dead, dead_sink)
    return flow
