"""Benchmark: replay The Complete Journey through the dataflow into chDB, one worker.

    python bench/replay.py [--data-dir DIR] [--batch-size N] [--limit N] [--gc-seconds S] [--timers]

Uses the production models already registered under the data dir (run
`propstream demo` or `propstream train` first; without models it measures
features only). Writes into a fresh database so runs do not interfere.
Prints events/s through the dataflow (read, parse, state, scoring, inserts).
``--gc-seconds 0`` runs with Python's default garbage collector (the setting's
timer is the default); ``--timers`` adds seconds spent per step (parse, shard,
its refresh and scoring, each table's insert), measured by wrapping those calls.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from propstream import app, completejourney
from schemas.mapping import load_mapping
from schemas.settings import Settings, StreamSettings
from stream.parse import EventParser
from stream.scoring import ShardScoring
from stream.shard import ShardProcessor
from stream.sinks.clickhouse import ClickHouseWriter


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--batch-size", type=int, default=StreamSettings().batch_size)
    ap.add_argument("--shards", type=int, default=StreamSettings().n_shards)
    ap.add_argument("--limit", type=int, default=0, help="replay only the first N events")
    ap.add_argument("--gc-seconds", type=float, default=StreamSettings().gc_seconds)
    ap.add_argument("--timers", action="store_true", help="also print seconds per step")
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
        stream=StreamSettings(batch_size=args.batch_size, n_shards=args.shards, gc_seconds=args.gc_seconds),
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
    }
    if args.timers:
        result["step_seconds"] = {k: round(v, 1) for k, v in seconds.most_common()}
    client.command(f"DROP DATABASE IF EXISTS {db}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
