"""Benchmark: replay The Complete Journey through the dataflow into chDB, one worker.

    python bench/replay.py [--data-dir DIR] [--batch-size N] [--limit N]

Uses the production models already registered under the data dir (run
`propstream demo` or `propstream train` first; without models it measures
features only). Writes into a fresh database so runs do not interfere.
Prints events/s through the dataflow (read, parse, state, scoring, inserts).
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from propstream import app, completejourney
from schemas.mapping import load_mapping
from schemas.settings import Settings, StreamSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--batch-size", type=int, default=StreamSettings().batch_size)
    ap.add_argument("--shards", type=int, default=StreamSettings().n_shards)
    ap.add_argument("--limit", type=int, default=0, help="replay only the first N events")
    args = ap.parse_args()
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
        stream=StreamSettings(batch_size=args.batch_size, n_shards=args.shards),
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
    }
    client.command(f"DROP DATABASE IF EXISTS {db}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
