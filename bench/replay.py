"""Benchmark: replay The Complete Journey through the dataflow into chDB, one worker.

    python bench/replay.py [--data-dir DIR] [--batch-size N] [--limit N] [--gc-seconds S]
                           [--max-batch-event-hours H] [--sink-flush-seconds S] [--timers]

Uses the production models already registered under the data dir (run
`propstream demo` or `propstream train` first; without models it measures
features only). Writes into a fresh database so runs do not interfere.
Prints events/s through the dataflow (read, parse, state, scoring, inserts).
``--gc-seconds 0`` runs with Python's default garbage collector (the setting's
timer is the default); ``--timers`` adds seconds spent per step (parse, shard,
its refresh and scoring, each table's insert), measured by wrapping those calls,
and the rows predicted (customer refreshes x groups rescored; bench/refresh_floor.py
gives the least CPU time their tree traversal takes).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from models.registry import ModelRegistry
from offline_train.dataset import build_examples
from offline_train.metrics import roc_auc
from propstream import app, completejourney
from schemas.mapping import load_mapping
from schemas.settings import Settings, StreamSettings
from stream.parse import EventParser
from stream.scoring import ShardScoring
from stream.shard import ShardProcessor
from stream.sinks.clickhouse import ClickHouseWriter
from stream.state import StateConfig


def add_timers(seconds: Counter) -> None:
    """Wrap the dataflow's steps so each adds its wall time to ``seconds`` (nested: refresh within shard)."""

    def timed(cls: type, name: str, key) -> None:
        inner = getattr(cls, name)

        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                seconds[key(a)] += time.perf_counter() - t

        setattr(cls, name, wrapper)

    timed(EventParser, "parse_batch", lambda a: "parse")
    timed(ShardProcessor, "process", lambda a: "shard")
    timed(ShardProcessor, "_refresh", lambda a: "shard: refresh (incl. scoring)")
    timed(ShardScoring, "predict", lambda a: "shard: scoring (own thread, overlaps refresh)")
    timed(ClickHouseWriter, "insert", lambda a: f"insert {a[1]}")
    predict = ShardScoring.predict

    def counted(self, rows, plan):  # rows each group's model predicts: the tree traversal's share of the work
        seconds["rows predicted (all groups)"] += sum(len(idx) for _, idx, _ in plan)
        return predict(self, rows, plan)

    ShardScoring.predict = counted  # type: ignore[method-assign]


def history_auc(settings: Settings, client, db: str, events: Path, at: datetime) -> dict[str, list[float]]:
    """Per group: [ROC AUC of the last score_history row as of ``at``, the model card's test ROC AUC].

    Labels are the training labels at cutoff ``at`` (an event of the label types
    in the group within the label horizon), for the customers offline replay
    holds at ``at``; the model card's figure is the same test at training time.
    """
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    mapping = load_mapping(completejourney.MAPPING_FILE)
    records, _ = app.read_file_records([events], mapping, settings.events.types)
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog, settings.events.types)
    t = settings.train
    ex = build_examples(records, StateConfig.build(spec), catalog, [at], t.label_horizon_days, t.label_types)
    at_ms = int(at.timestamp() * 1000)
    rows = client.query(
        f"SELECT user_id, group_id, argMax(score, (as_of, version)) FROM {db}.score_history "
        "WHERE as_of <= fromUnixTimestamp64Milli({t:Int64}, 'UTC') GROUP BY user_id, group_id",
        parameters={"t": at_ms},
    ).result_rows
    scores = {(u, g): s for u, g, s in rows}
    registry = ModelRegistry(settings.models_dir)
    out: dict[str, list[float]] = {}
    for gi, group in enumerate(spec.groups):
        version = registry.production_version(group)
        if version is None:
            continue
        pairs = [
            (scores[(u, group)], y) for u, y in zip(ex.users, ex.labels[:, gi], strict=True) if (u, group) in scores
        ]
        if not pairs:
            continue
        card_auc = registry.card(group, version).metrics.get("roc_auc", float("nan"))
        out[group] = [round(roc_auc([y for _, y in pairs], [s for s, _ in pairs]), 3), round(card_auc, 3)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--batch-size", type=int, default=StreamSettings().batch_size)
    ap.add_argument("--shards", type=int, default=StreamSettings().n_shards)
    ap.add_argument("--limit", type=int, default=0, help="replay only the first N events")
    ap.add_argument("--gc-seconds", type=float, default=StreamSettings().gc_seconds)
    ap.add_argument(
        "--max-batch-event-hours",
        type=float,
        default=StreamSettings().max_batch_event_hours,
        help="event-time span of a batch (0: cut by --batch-size only)",
    )
    ap.add_argument(
        "--sink-flush-seconds",
        type=float,
        default=StreamSettings().sink_flush_seconds,
        help="the sink's buffer age (0: one insert per table per batch)",
    )
    ap.add_argument("--timers", action="store_true", help="also print seconds per step")
    ap.add_argument(
        "--history-auc",
        metavar="DATE",
        help="also print each group's ROC AUC of score_history as of DATE (e.g. 2017-12-01) next to its model card's",
    )
    args = ap.parse_args()
    seconds: Counter = Counter()
    if args.timers:
        add_timers(seconds)
    data_dir = Path(args.data_dir)
    events, catalog = completejourney.prepare(data_dir)
    if args.limit:
        table = pq.read_table(events)
        events = data_dir / "completejourney" / f"transactions_{args.limit}.parquet"
        pq.write_table(table.slice(0, args.limit), events)
    db = f"bench_{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=data_dir,
        catalog_file=catalog,
        groups_file=completejourney.GROUPS_FILE,
        stream=StreamSettings(
            batch_size=args.batch_size,
            n_shards=args.shards,
            gc_seconds=args.gc_seconds,
            max_batch_event_hours=args.max_batch_event_hours,
            sink_flush_seconds=args.sink_flush_seconds,
        ),
        clickhouse={"database": db},
    )
    source = app.build_source(settings, [events])
    stats = app.run_stream(settings, source, load_mapping(completejourney.MAPPING_FILE), progress=None)
    client = app.client_for(settings)
    n_models = len([p for p in settings.models_dir.glob("*/PRODUCTION")]) if settings.models_dir.exists() else 0
    result = {
        "events": stats.events_in,
        "seconds": round(stats.elapsed, 2),
        "events_per_s": round(stats.events_in / stats.elapsed),
        "batch_size": args.batch_size,
        "shards": args.shards,
        "groups_scored": n_models,
        "score_rows": stats.score_rows,
        "feature_rows": stats.feature_rows,
        "gc_seconds": args.gc_seconds,
        "max_batch_event_hours": args.max_batch_event_hours,
        "sink_flush_seconds": args.sink_flush_seconds,
    }
    if args.timers:
        result["step_seconds"] = {k: round(v, 1) for k, v in seconds.most_common()}
    if args.history_auc:
        result["history_auc"] = history_auc(settings, client, db, events, datetime.fromisoformat(args.history_auc))
    client.command(f"DROP DATABASE IF EXISTS {db}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
