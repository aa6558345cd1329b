"""Benchmark: score rows into chDB as the sink writes them (native columns) against the same rows as Arrow.

    python bench/insert_formats.py [--rows N ...] [--repeat K]

``scores`` rows (user, group, score, model version, as-of, version) of 25
groups, written into a fresh ``scores`` table of an in-process chDB: by
``ClickHouseWriter.insert`` (clickhouse-connect's native format, the declared
column types; what the sink does for the score tables) and by
``insert_arrow`` of an Arrow table built from the same Python lists (what it
does for ``customer_features``, whose Map column Arrow makes cheap). The two
alternate, ``--repeat`` times each after one untimed warm-up of both; prints
the median process CPU per insert (ms) of each and their ratio, per size.
BENCHMARKS.md section 6p.
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

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.tables import SCORES, create_table_ddl
from stream.sinks.clickhouse import ClickHouseWriter, open_client

NAMES = ("user_id", "group_id", "score", "model_version", "as_of", "version")


def score_columns(n: int, rng: random.Random) -> dict[str, list]:
    """``n`` score rows of 25 groups and 100,000 customers, as the sink's columns."""
    as_of = 1_800_000_000_000
    return {
        "user_id": [f"cust-{rng.randrange(100_000)}" for _ in range(n)],
        "group_id": [f"group_{i % 25}" for i in range(n)],
        "score": [rng.random() for _ in range(n)],
        "model_version": [3] * n,
        "as_of": [as_of] * n,
        "version": [as_of * 1000 + i for i in range(n)],
    }


def as_arrow(columns: dict[str, list]) -> pa.Table:
    """The same columns as Arrow, each of the declared type (``group_id`` dictionary-encoded: LowCardinality)."""
    return pa.table(
        {
            "user_id": pa.array(columns["user_id"], pa.string()),
            "group_id": pa.array(columns["group_id"], pa.string()).dictionary_encode(),
            "score": pa.array(columns["score"], pa.float64()),
            "model_version": pa.array(columns["model_version"], pa.uint32()),
            "as_of": pa.array(columns["as_of"], pa.timestamp("ms", tz="UTC")),
            "version": pa.array(columns["version"], pa.uint64()),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, nargs="+", default=[500, 5_000, 50_000])
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="insert-formats-"))
    client = open_client(f"chdb:///{root}/chdb")
    client.command("CREATE DATABASE IF NOT EXISTS bench")
    client.command(create_table_ddl(SCORES, "bench"))
    writer = ClickHouseWriter(client, "bench")
    rng = random.Random(7)
    result = []
    for n in args.rows:
        columns = score_columns(n, rng)
        ways = {
            "native": lambda c=columns: writer.insert(SCORES.name, c),
            "arrow": lambda c=columns: client.insert_arrow(f"bench.{SCORES.name}", as_arrow(c)),
        }
        cpu: dict[str, list[float]] = {name: [] for name in ways}
        for k in range(args.repeat + 1):
            for name, insert in ways.items() if k % 2 else reversed(ways.items()):
                t = time.process_time()
                insert()
                if k:  # the first round warms both up
                    cpu[name].append(time.process_time() - t)
        native, arrow = (statistics.median(cpu[w]) * 1000 for w in ("native", "arrow"))
        result.append(
            {
                "rows": n,
                "native_cpu_ms": round(native, 2),
                "arrow_cpu_ms": round(arrow, 2),
                "arrow_over_native": round(arrow / native, 3),
            }
        )
    written = client.query(f"SELECT count() FROM bench.{SCORES.name}").result_rows[0][0]
    print(json.dumps({"inserts": result, "rows_written": written}))


if __name__ == "__main__":
    main()
