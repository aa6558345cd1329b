"""Benchmark: chDB's merge CPU under the stream's small inserts, ClickHouse's merge selector against propstream's.

    python bench/merge_cost.py [--parts 300] [--rate 8] [--rows 5500] [--rounds 2]

Makes a ``score_history`` table as the schema declares it (its columns,
engine and sorting key) in a fresh embedded chDB, once with ClickHouse's
default merge selector and once with ``schemas.tables.WIDE_MERGES`` (what
migration 7 sets on the tables the stream writes all the time), the two in
turn ``--rounds`` times. Into each it inserts ``--parts`` blocks of
``--rows`` score rows at ``--rate`` inserts per second (a live stream at
10,000 events/s writes ~5,500 score rows per flush, ~3-4 flushes a second,
into each score table), waits 10 s for merges to settle, and prints the CPU
seconds chDB's merge threads (``MergeMutate``) used meanwhile, the active
parts left and their deepest merge level (how many times the oldest rows were
rewritten). Every table gets the same rows (seeded). BENCHMARKS.md 6j.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clickhouse_connect

from bench.live import thread_cpu
from schemas.tables import SCORE_HISTORY, WIDE_MERGES, create_table_ddl

SELECTORS = {"ClickHouse's default": "", "propstream's": WIDE_MERGES}


def ddl(table: str, settings: str) -> str:
    """``score_history``'s declared columns, engine and key under another name, with MergeTree ``settings``."""
    return create_table_ddl(SCORE_HISTORY, "bench", name=table, settings=settings)


def blocks(parts: int, rows: int, seed: int = 0):
    """``parts`` column-oriented blocks of score rows, as a live stream's flushes write them."""
    rng = random.Random(seed)
    for k in range(parts):
        yield [
            [f"h{rng.randrange(2469)}~{rng.randrange(40)}" for _ in range(rows)],
            [f"group_{i % 25}" for i in range(rows)],
            [rng.random() for _ in range(rows)],
            [1] * rows,
            [1_700_000_000_000 + k * 250] * rows,
            [(k << 20) + i for i in range(rows)],
        ]


def measure(client, table: str, args) -> dict:
    """Insert the blocks at the rate; merge CPU while they went in and 10 s after, parts and levels left."""
    names = list(SCORE_HISTORY.inserted)
    before, t0 = thread_cpu(os.getpid()).get("MergeMutate", 0.0), time.time()
    for k, cols in enumerate(blocks(args.parts, args.rows)):
        client.insert(f"bench.{table}", cols, column_names=names, column_oriented=True)
        time.sleep(max(0.0, t0 + (k + 1) / args.rate - time.time()))
    time.sleep(10)
    merge_cpu = thread_cpu(os.getpid()).get("MergeMutate", 0.0) - before
    parts, rows, level = client.query(
        "SELECT count(), sum(rows), max(level) FROM system.parts "
        "WHERE active AND database = 'bench' AND table = {t:String}",
        parameters={"t": table},
    ).result_rows[0]
    return {"merge_cpu_s": round(merge_cpu, 2), "active_parts": parts, "rows": rows, "max_level": level}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=300, help="inserts per table")
    ap.add_argument("--rate", type=float, default=8.0, help="inserts per second")
    ap.add_argument("--rows", type=int, default=5500, help="rows per insert")
    ap.add_argument("--rounds", type=int, default=2, help="tables per merge selector, made in turn")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="propstream-merge-"))
    try:
        client = clickhouse_connect.get_client(dsn=f"chdb://{work / 'chdb'}")
        client.command("CREATE DATABASE bench")
        for r in range(args.rounds):
            for i, (label, settings) in enumerate(SELECTORS.items()):
                table = f"t{r}_{i}"
                client.command(ddl(table, settings))
                res = measure(client, table, args)
                print(
                    f"round {r + 1}, {label:22s} ({settings or 'merge_selector_base = 5'}): merge CPU "
                    f"{res['merge_cpu_s']:5.2f} s, {res['active_parts']} active parts of {res['rows']:,} rows, "
                    f"deepest level {res['max_level']}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
