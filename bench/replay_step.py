"""Benchmark: main-thread CPU of a shard's apply and refresh in the day-cut replay, in one process (no sinks).

    python bench/replay_step.py [--data-dir DIR] [--limit N] [--warm N] [--base DIR] [--profile FILE]

The replay regime of issue #15's target 5 (BENCHMARKS.md section 1): The
Complete Journey's first ``--limit`` events in the file's order, cut into one
batch per UTC day of event time by the dataflow's own rule
(``stream.eventcut.EventTimeCut``, as ``stream.max_batch_event_hours`` = 24
does), each fed to one shard through ``ShardProcessor.process`` in event time
(no wall-clock tick, the batch's latest event as its watermark) with the
production models of ``--data-dir``. The first ``--warm`` events' batches are
applied untimed (customers with history first); the rest are timed: CPU of
the main thread (``time.thread_time``; the scoring thread's XGBoost is not
counted, waiting for it is not CPU) per event and per customer refresh, with
a digest of every row written (``bench.live_step.out_digest``).

``--base DIR`` (an export of older code, ``git archive REV | tar -x -C DIR``):
both versions take every batch, in turn, who goes first alternating, each
with a shard of its own; prints new/old and whether both wrote the same rows.
One process, interleaved: a loaded machine slows both alike, which two runs of
``bench/replay.py`` cannot promise.
Garbage is collected as the stream collects it (``stream.gc_seconds``, on a
thread of its own: ``bench.live_step.collected_as_the_stream``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import complete_journey
from bench.live_step import collected_as_the_stream, make_sides, side_figures
from bench.refresh_floor import registered_models
from propstream import app
from stream.eventcut import DAY_MS, EventTimeCut
from stream.parse import ParsedBatch
from stream.shard import ShardInput
from stream.state import StateConfig


def day_batches(records: list, limit: int) -> list[ParsedBatch]:
    """The first ``limit`` records cut as the dataflow cuts a file partition: one UTC day of event time each."""
    cut = EventTimeCut(DAY_MS)
    held, out = cut(None, ParsedBatch(records=records[:limit], part="p0"))
    _, last = cut(held, ParsedBatch(part="p0", idle=True, watermark=held.watermark if held else None))
    return out + last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--limit", type=int, default=300_000, help="events of the file, in its order")
    ap.add_argument("--warm", type=int, default=100_000, help="events whose batches are applied untimed first")
    ap.add_argument("--profile", type=Path, help="write cProfile stats of the new code's timed batches here")
    ap.add_argument("--base", type=Path, help="an export of older code: both versions take every batch, in turn")
    args = ap.parse_args()
    settings, records, _ = complete_journey(Path(args.data_dir))
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog, settings.events.types)
    cfg = StateConfig.build(spec)
    models = registered_models(settings, spec)
    if models is None:
        sys.exit(f"no production models under {settings.models_dir}: run `propstream demo` first")
    sides = make_sides(settings, cfg, catalog, models, args.base)
    profiler = cProfile.Profile() if args.profile else None
    seen = 0
    with collected_as_the_stream(settings):
        for n, batch in enumerate(day_batches(records, args.limit)):
            is_timed = seen >= args.warm
            seen += len(batch.records)
            for side in sides if n % 2 else sides[::-1]:
                inp = ShardInput(0, list(batch.records), None, batch.part, 1, batch.idle, batch.watermark)
                side.run(inp, len(batch.records), is_timed, profiler if side.name == "new" else None)
    if profiler is not None:
        profiler.dump_stats(args.profile)
    result: dict = {
        "events": int(sides[-1].timed["events"]),
        "batches": int(sides[-1].timed["batches"]),
        "refreshes": int(sides[-1].timed["refreshes"]),
        **side_figures(sides),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
