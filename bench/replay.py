"""Benchmark: replay The Complete Journey through the dataflow into chDB.

    python bench/replay.py [--data-dir DIR] [--batch-size N] [--limit N] [--gc-seconds S]
                           [--max-batch-event-hours H] [--sink-flush-seconds S] [--timers]
                           [--processes N] [--split N]

``--processes N`` (> 1) runs N processes of one dataflow (``--process-id/--addresses``,
one chDB each in a temporary directory, at least N shards: shard i on process i % N);
the file is one partition, read by one of them. Its events/s is the events over the
slowest process's time; rows are summed. ``--split N`` splits the file by customer
into N files (``input_files``), N partitions of event time, as a partitioned archive:
each shard's clock is their slowest watermark and a faster one's events wait for it
(README, Event time); with ``--processes N`` Bytewax places the files over the
processes (``per_process`` shows who read what).

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
import inspect
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.registry import ModelRegistry
from offline_train.dataset import build_examples
from offline_train.metrics import roc_auc
from propstream import app, completejourney
from schemas.mapping import load_mapping
from schemas.settings import Settings, StreamSettings
from stream.parse import EventParser
from stream.scoring import ShardScoring
from stream.shard import ShardProcessor, shard_of
from stream.sinks.clickhouse import ClickHouseWriter
from stream.state import StateConfig


def add_timers(seconds: Counter, patch: Callable[[type, str, object], None] = setattr) -> None:
    """Wrap the dataflow's steps so each adds its wall time to ``seconds`` (nested: refresh within shard).

    ``patch`` sets each wrapper on its class (a test passes ``monkeypatch.setattr``, which undoes them).
    """

    def timed(cls: type, name: str, key) -> None:
        inner = getattr(cls, name)
        static = isinstance(inspect.getattr_static(cls, name), staticmethod)

        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                seconds[key(a)] += time.perf_counter() - t

        patch(cls, name, staticmethod(wrapper) if static else wrapper)

    timed(EventParser, "parse_batch", lambda a: "parse")
    timed(ShardProcessor, "process_many", lambda a: "shard")
    timed(ShardProcessor, "_refresh", lambda a: "shard: refresh (incl. scoring)")
    timed(ShardScoring, "predict", lambda a: "shard: scoring (own thread, overlaps refresh)")
    timed(ClickHouseWriter, "insert", lambda a: f"insert {a[1]}")
    predict = ShardScoring.predict

    def counted(rows, plan, *rest):  # rows each group's model predicts: the tree traversal's share of the work
        seconds["rows predicted (all groups)"] += sum(len(idx) for _, idx, _ in plan)
        return predict(rows, plan, *rest)

    patch(ShardScoring, "predict", staticmethod(counted))


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


def input_files(events: Path, limit: int, split: int, write: bool) -> list[Path]:
    """The replay's input: ``events``, its first ``limit`` events (0: all), in ``split`` files by customer (> 1).

    Split, customer ``u``'s events go to file ``shard_of(u, split)`` in the
    file's order: a partitioned archive, as Kafka keys events by customer.
    ``write``: write the files (else they were written by the caller).
    """
    stem = events.parent / (f"transactions_{limit}" if limit else "transactions")
    if split <= 1:
        if limit and write:
            pq.write_table(pq.read_table(events).slice(0, limit), stem.with_suffix(".parquet"))
        return [stem.with_suffix(".parquet") if limit else events]
    paths = [Path(f"{stem}_part{k}of{split}.parquet") for k in range(split)]
    if write:
        table = pq.read_table(events)
        if limit:
            table = table.slice(0, limit)
        users = table.column("household_id").to_numpy()  # the mapping's user_id (completejourney_mapping.toml)
        households = np.unique(users)
        part_of = {h: shard_of(str(h), split) for h in households.tolist()}
        parts = np.array([part_of[h] for h in households.tolist()])[np.searchsorted(households, users)]
        for k, path in enumerate(paths):
            pq.write_table(table.filter(pa.array(parts == k)), path)
    return paths


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
    ap.add_argument("--processes", type=int, default=1, help="processes of one dataflow (one chDB each)")
    ap.add_argument(
        "--split",
        type=int,
        default=1,
        help="the file split by customer into N files: N partitions (Bytewax places them over the processes)",
    )
    ap.add_argument("--process-id", type=int, help=argparse.SUPPRESS)  # a process of --processes
    ap.add_argument("--addresses", default="", help=argparse.SUPPRESS)
    ap.add_argument("--chdb-dir", help=argparse.SUPPRESS)
    ap.add_argument(
        "--history-auc",
        metavar="DATE",
        help="also print each group's ROC AUC of score_history as of DATE (e.g. 2017-12-01) next to its model card's",
    )
    args = ap.parse_args()
    if args.history_auc and args.split > 1:
        ap.error("--history-auc reads one input file: leave out --split")
    if args.processes > 1 and args.process_id is None:
        if args.timers or args.history_auc:
            ap.error("--timers and --history-auc measure one process: leave out --processes")
        print(json.dumps(run_processes(args)))
        return
    seconds: Counter = Counter()
    if args.timers:
        add_timers(seconds)
    data_dir = Path(args.data_dir)
    events, catalog = completejourney.prepare(data_dir)
    paths = input_files(events, args.limit, args.split, write=args.process_id is None)  # --processes: the parent's
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
        **({"clickhouse_dsn": f"chdb://{args.chdb_dir}"} if args.chdb_dir else {}),
    )
    source = app.build_source(settings, paths)
    addresses = tuple(a for a in args.addresses.split(",") if a)
    execution = app.Execution(process_id=args.process_id, addresses=addresses)
    stats = app.run_stream(
        settings, source, load_mapping(completejourney.MAPPING_FILE), progress=None, execution=execution
    )
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
        result["history_auc"] = history_auc(settings, client, db, paths[0], datetime.fromisoformat(args.history_auc))
    client.command(f"DROP DATABASE IF EXISTS {db}")
    print(json.dumps(result))


def run_processes(args: argparse.Namespace) -> dict:
    """Run ``args.processes`` processes of this script as one dataflow; their figures together."""
    n = args.processes
    if args.limit or args.split > 1:  # written once, before the processes read them
        events, _ = completejourney.prepare(Path(args.data_dir))
        input_files(events, args.limit, args.split, write=True)
    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    addresses = ",".join(f"127.0.0.1:{p}" for p in ports)
    base = sys.argv[1:]
    if "--processes" in base:
        i = base.index("--processes")
        base = base[:i] + base[i + 2 :]
    base = [a for a in base if not a.startswith("--processes=")]
    shards = max(args.shards, n)
    with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    *base,
                    "--shards",
                    str(shards),
                    "--process-id",
                    str(k),
                    "--addresses",
                    addresses,
                    "--chdb-dir",
                    f"{tmp}/p{k}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for k in range(n)
        ]
        stdouts = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        msg = f"a process of the replay failed: exit codes {[p.returncode for p in procs]}"
        raise SystemExit(msg)
    outs = [json.loads(out.strip().splitlines()[-1]) for out in stdouts]
    events = sum(o["events"] for o in outs)
    slowest = max(o["seconds"] for o in outs)
    return {
        **outs[0],
        "processes": n,
        "shards": shards,
        "events": events,
        "seconds": slowest,
        "events_per_s": round(events / slowest),
        "score_rows": sum(o["score_rows"] for o in outs),
        "feature_rows": sum(o["feature_rows"] for o in outs),
        "per_process": [{k: o[k] for k in ("events", "seconds", "score_rows", "feature_rows")} for o in outs],
    }


if __name__ == "__main__":
    main()
