"""Benchmark: CPU per event of a shard's apply and refresh in the live regime, in one process (no Kafka, no sinks).

    python bench/live_step.py [--data-dir DIR] [--customers N] [--batch E] [--rate R] [--warm K] [--rounds K]

The live regime of issue #15 (BENCHMARKS.md section 1d): many customers, each
seen about once per batch. ``--customers`` synthetic customers are cloned from
The Complete Journey's households (``bench.workload.CloneWorkload``: one
basket per customer per round, customers in a seeded random order), every
event stamped with a simulated wall clock that moves ``1 / --rate`` seconds per
event, and fed in wire batches of ``--batch`` events through
``ShardProcessor.process`` the way the dataflow does after parsing (one shard,
one partition, the batch's wall clock as the tick, its latest event time as
the watermark), with the production models of ``--data-dir`` when there are
any (``--no-models``: features only).

The first ``--warm`` rounds are applied untimed; the next ``--rounds`` are
timed: CPU of the main thread (``time.thread_time``, the scoring thread's
XGBoost excluded; waiting on it is not CPU) and of the whole process, per
event. Prints one JSON line, with a digest of every output row of the timed
rounds (features, scores, item activity, applied events): two versions of the
code that print the same digest wrote the same rows.

Uses only ``ShardProcessor``/``CustomerShard`` calls that main has, so the
script copied into an export of older code measures that code (A/B, in turn).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import complete_journey
from bench.workload import CloneWorkload
from propstream import app
from schemas.events import EventRecord
from stream import shard as shard_module
from stream.shard import CustomerShard, ShardInput, ShardOutput, ShardProcessor
from stream.state import StateConfig

T0 = 1_800_000_000_000  # the simulated wall clock's start (2027-01-15), epoch ms


def out_digest(h, out: ShardOutput) -> None:
    """Feed every row of ``out`` to ``h`` in a fixed order."""
    for f in sorted(out.features, key=lambda r: r.user_id):
        h.update(repr((f.user_id, f.as_of, f.version, sorted(f.features.items()))).encode())
    s = out.scores
    h.update(repr(sorted(zip(s.user_id, s.group_id, s.score, s.model_version, s.version, strict=True))).encode())
    h.update(repr(s.as_of).encode())
    h.update(repr(sorted(out.item_activity)).encode())
    h.update(repr([r.event_id for r in out.applied]).encode())
    h.update(repr(list(out.dead_letters)).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5_000, help="events per wire batch")
    ap.add_argument("--rate", type=float, default=10_000, help="events per simulated second")
    ap.add_argument("--warm", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds")
    ap.add_argument("--no-models", action="store_true", help="features only")
    ap.add_argument("--profile", type=Path, help="write cProfile stats of the timed ``process`` calls here")
    args = ap.parse_args()
    settings, records, _ = complete_journey(Path(args.data_dir))
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog, settings.events.types)
    cfg = StateConfig.build(spec)
    models = None
    if not args.no_models:
        from models.registry import ModelRegistry
        from models.scorer import ProductionModels

        models = ProductionModels.load(spec, ModelRegistry(settings.models_dir), 3600.0, threads=1)
        if not models.scorers:
            models = None
    lateness = settings.stream.allowed_lateness_hours * 3_600_000
    processor = ShardProcessor(cfg, catalog, models, int(lateness))
    shard = CustomerShard(0)
    workload = CloneWorkload(records, args.customers)
    step = 1000 / args.rate
    digest = hashlib.sha256()
    timed: dict[str, float] = {"events": 0, "batches": 0, "thread": 0.0, "process": 0.0}
    profiler = cProfile.Profile() if args.profile else None
    i = 0
    h = len(workload.households)
    per_round = [  # events of each round: the generator yields round after round
        sum(
            len(own[r % workload.rounds])
            for own in (workload.baskets[c % h] for c in range(args.customers))
            if r % workload.rounds < len(own)
        )
        for r in range(args.warm + args.rounds)
    ]
    feed = workload.events(rounds=args.warm + args.rounds)
    for r, n in enumerate(per_round):
        is_timed = r >= args.warm
        left = n
        while left:
            k = min(args.batch, left)
            left -= k
            batch = []
            for _ in range(k):
                user, rec = next(feed)
                ts = T0 + int(i * step)
                batch.append(
                    EventRecord(user, rec.item_id, rec.type_index, ts, f"e{i}", rec.quantity, rec.value_cents, "bench")
                )
                i += 1
            inp = ShardInput(0, batch, batch[-1].ts_ms, "p0", 1, False, batch[-1].ts_ms)
            if is_timed and profiler is not None:
                profiler.enable()
            t_thread, t_proc = time.thread_time(), time.process_time()
            out = processor.process(shard, inp)
            if profiler is not None:
                profiler.disable()
            if is_timed:
                timed["thread"] += time.thread_time() - t_thread
                timed["process"] += time.process_time() - t_proc
                timed["events"] += k
                timed["batches"] += 1
                out_digest(digest, out)
    if profiler is not None:
        profiler.dump_stats(args.profile)
    n = timed["events"] or 1
    print(
        json.dumps(
            {
                "customers": args.customers,
                "batch": args.batch,
                "models": models is not None,
                "events": timed["events"],
                "batches": timed["batches"],
                "main_us_per_event": round(timed["thread"] / n * 1e6, 2),
                "process_us_per_event": round(timed["process"] / n * 1e6, 2),
                "digest": digest.hexdigest()[:16],
                "code": str(Path(shard_module.__file__).resolve().parents[1]),
            }
        )
    )


if __name__ == "__main__":
    main()
