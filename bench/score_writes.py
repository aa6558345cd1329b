"""Benchmark: what writing a live stream's score rows costs, with ``score_history`` beside ``scores`` or behind it.

    python bench/score_writes.py [--seconds S] [--rows-per-second R] [--rounds K]

The sink's ``TableBuffer`` against an in-process chDB, paced as a live stream
at 10,000 events/s writes its scores (about 30,000 score rows a second, 6,075
per 0.2-s flush; BENCHMARKS.md 6s): a batch of score rows every 50 ms,
flushed by the buffer's timer every ``stream.sink_flush_seconds`` (0.2 s).
Two ways, in turn, each into a database of its own in the same chDB:

- ``beside``: both score tables at every timed flush (the sink until
  2026-12-04);
- ``behind``: ``scores`` at every timed flush, ``score_history`` every
  ``stream.sink_archive_flush_seconds`` (2 s), its ``written_at`` stamped
  with the time the same rows reached ``scores`` (``ClickHouseSink``'s
  buffer, as the stream runs it).

The figure is the process CPU (the caller, the writer thread, and chDB's
insert and merge threads) over each way's ``--seconds`` plus a 5-s tail for
its merges, per score row, and behind/beside per round. Prints one JSON line.
BENCHMARKS.md section 6t.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.insert_formats import score_columns
from schemas.tables import SCORE_HISTORY, SCORES, WIDE_MERGES, create_table_ddl
from stream.sinks.clickhouse import ClickHouseSink, ClickHouseWriter, TableBuffer, open_client

TICK_S = 0.05  # a batch of score rows every 50 ms
TAIL_S = 5.0  # after a way's last flush: its merges, counted to it


def buffer_of(way: str, writer: ClickHouseWriter) -> TableBuffer:
    """The sink's buffer for ``way``: ``behind`` is ``ClickHouseSink``'s own (the stream's defaults)."""
    if way == "behind":
        return ClickHouseSink(
            writer, type_names=(), flush_rows=1_000_000, flush_seconds=0.2, archive_flush_seconds=2.0
        ).buffer
    return TableBuffer(writer, 1_000_000, 0.2, first=(SCORES.name, SCORE_HISTORY.name))


def score_batches(seconds: float, per_tick: int, seed: int) -> list[dict[str, list]]:
    """A batch of score rows per tick for ``seconds``, each tick's as-of its own (a refresh per tick)."""
    rng = random.Random(seed)
    batches = []
    for i in range(round(seconds / TICK_S)):
        columns = score_columns(per_tick, rng)
        columns["as_of"] = [columns["as_of"][0] + round(i * TICK_S * 1000)] * per_tick
        batches.append(columns)
    return batches


def run_way(way: str, writer: ClickHouseWriter, batches: list[dict[str, list]], tail: float = TAIL_S) -> float:
    """Pace ``batches`` through ``way``'s buffer, one per tick; the process CPU it took (s), ``tail`` included."""
    buffer = buffer_of(way, writer)
    cpu, start = time.process_time(), time.monotonic()
    for i, columns in enumerate(batches):
        delay = start + i * TICK_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        buffer.add({SCORES.name: columns, SCORE_HISTORY.name: dict(columns)}, lambda: None)
    buffer.flush()
    time.sleep(tail)
    return time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rows-per-second", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="score-writes-"))
    client = open_client(f"chdb:///{root}/chdb")
    per_tick = max(1, round(args.rows_per_second * TICK_S))
    ways = ("beside", "behind")
    cpu: dict[str, list[float]] = {w: [] for w in ways}
    rows: dict[str, int] = dict.fromkeys(ways, 0)
    for k in range(args.rounds):
        batches = score_batches(args.seconds, per_tick, seed=k)  # the same rows both ways
        for way in ways if k % 2 == 0 else reversed(ways):
            db = f"{way}_{k}"
            client.command(f"CREATE DATABASE {db}")
            for table in (SCORES, SCORE_HISTORY):
                client.command(create_table_ddl(table, db, settings=WIDE_MERGES))
            cpu[way].append(run_way(way, ClickHouseWriter(client, db), batches))
            rows[way] += per_tick * len(batches)
    stored = {  # count() without FINAL: parts not merged yet may still hold a key (a customer and group) twice
        way: {
            t.name: sum(
                client.query(f"SELECT count() FROM {way}_{k}.{t.name}").result_rows[0][0] for k in range(args.rounds)
            )
            for t in (SCORES, SCORE_HISTORY)
        }
        for way in ways
    }
    per_row = {w: statistics.median(cpu[w]) / (rows[w] / args.rounds) * 1e6 for w in ways}
    print(
        json.dumps(
            {
                "seconds": args.seconds,
                "score_rows_per_second": per_tick / TICK_S,
                "cpu_s": {w: [round(c, 2) for c in cpu[w]] for w in ways},
                "cores": {w: round(statistics.median(cpu[w]) / (args.seconds + TAIL_S), 3) for w in ways},
                "cpu_us_per_score_row": {w: round(v, 3) for w, v in per_row.items()},
                "behind_over_beside": [round(b / a, 3) for a, b in zip(cpu["beside"], cpu["behind"], strict=True)],
                "rows_offered": rows,
                "rows_stored": stored,
            }
        )
    )


if __name__ == "__main__":
    main()
