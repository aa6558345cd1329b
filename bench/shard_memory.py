"""Benchmark: memory per live customer of a whole customer shard, in-process (the suite's state phase, lighter).

    python bench/shard_memory.py [--data-dir DIR] [--customers 20000 60000] [--trace] [--chdb] [--json-out FILE]

Builds one ``CustomerShard`` the way the stream does: synthetic customers
cloned from The Complete Journey (``bench.workload.CloneWorkload``, one basket
each, stamped with the wall clock), sent as JSON payloads in Kafka-sized
batches through the stream's parser (``stream.parse.EventParser``) and
``ShardProcessor.process`` with the production models of every group (live
clock: each batch brings a wall-clock tick). Every ``--epoch-batches``
batches the shard takes an incremental snapshot into a side store
(``stream.snapshots``), as a stream with a recovery directory does.

After the first ``N1`` customers and again after ``N2``, it measures:

- the process's RSS (``/proc/self/statm``; garbage collected first); the
  slope ``(RSS2 - RSS1) / (N2 - N1)`` is the suite's "bytes per customer";
- ``sys.getsizeof`` of each per-customer container of the shard, its keys and
  values counted (each object once; strings interned into one another's
  dicts are counted where first seen);
- with ``--trace``: ``tracemalloc`` snapshots, their difference grouped by
  ``filename:lineno`` (bytes per added customer; tracemalloc's own memory
  makes the RSS of a traced run meaningless, so run without it for RSS).

``--chdb`` also writes every output into an embedded chDB (a fresh temporary
path) through the stream's ``ClickHouseWriter``: its memory is part of the
suite's RSS. Only public calls, so ``PYTHONPATH`` pointing at an export of
older code measures that code (A/B).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import complete_journey
from bench.state_bytes import deep_size
from bench.workload import CloneWorkload, payload

LATENESS_MS = 24 * 3_600_000


def rss() -> int:
    """Resident set size of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def container_bytes(sh) -> dict[str, int]:
    """Deep ``sys.getsizeof`` of the shard's attributes (those that grow with customers are what matters)."""
    counted: set[int] = set()
    out = {}
    for name in sorted(vars(sh)):
        value = getattr(sh, name)
        if name == "items":  # item cells: shared with no customer, counted apart
            out[name] = deep_size(value, set())
            continue
        out[name] = _deep(value, counted)
    return out


def _deep(obj: object, counted: set[int]) -> int:
    """``deep_size`` that also looks into numpy arrays and objects with a ``__dict__``."""
    if isinstance(obj, np.ndarray):
        if id(obj) in counted:
            return 0
        counted.add(id(obj))
        return sys.getsizeof(obj) + (obj.nbytes if obj.base is not None else 0)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        if id(obj) in counted:
            return 0
        counted.add(id(obj))
        return sys.getsizeof(obj) + sum(_deep(v, counted) for v in vars(obj).values())
    if isinstance(obj, dict):
        if id(obj) in counted:
            return 0
        counted.add(id(obj))
        return sys.getsizeof(obj) + sum(_deep(k, counted) + _deep(v, counted) for k, v in obj.items())
    if isinstance(obj, list | tuple | set):
        if id(obj) in counted:
            return 0
        counted.add(id(obj))
        return sys.getsizeof(obj) + sum(_deep(v, counted) for v in obj)
    return deep_size(obj, counted)


class Harness:
    """A shard, its processor and the parser, fed the workload's customers in Kafka-sized batches."""

    def __init__(self, args: argparse.Namespace):
        from bench.suite import scoring_parts
        from schemas.mapping import ColumnMapping
        from stream.parse import EventParser
        from stream.shard import CustomerShard, ShardProcessor, state_layout
        from stream.snapshots import ShardSnapshots

        settings, catalog, cfg, models = scoring_parts(args.data_dir)
        _, records, _ = complete_journey(args.data_dir)
        self.cfg = cfg
        self.workload = CloneWorkload(records, args.customers[1])
        self.parser = EventParser(ColumnMapping(), types=settings.events.types)
        self.proc = ShardProcessor(cfg, catalog, models, LATENESS_MS)
        self.sh = CustomerShard(0, state_layout(cfg, catalog.groups))
        self.sh.changed = set()
        self.tmp = Path(tempfile.mkdtemp(prefix="shard-memory-"))
        self.snapshots = ShardSnapshots(self.tmp / "recovery", "propstream.customers")
        self.batch = args.batch
        self.epoch_batches = args.epoch_batches
        self.n_batches = 0
        self.writer = None
        if args.chdb:
            from stream.sinks.clickhouse import ClickHouseWriter, migrate, open_client

            client = open_client(f"chdb://{self.tmp / 'chdb'}")
            migrate(client)
            self.writer = ClickHouseWriter(client)

    def chdb_memory(self) -> dict[str, int]:
        """The embedded engine's own account of its memory (``--chdb``): tracked, caches, primary keys, parts."""
        if self.writer is None:
            return {}
        q = self.writer.client.query
        tracked = dict(
            q(
                "SELECT metric, value FROM system.metrics WHERE metric IN ('MemoryTracking', 'MarkCacheBytes', "
                "'PrimaryIndexCacheBytes', 'UncompressedCacheBytes', 'MergesMutationsMemoryTracking')"
            ).result_rows
        )
        keys, parts, rows = q(
            "SELECT sum(primary_key_bytes_in_memory_allocated), count(), sum(rows) FROM system.parts "
            "WHERE active AND database = 'propstream'"
        ).result_rows[0]
        return {**{k: int(v) for k, v in tracked.items()}, "primary_keys": int(keys), "parts": parts, "rows": rows}

    def load(self, first: int, last: int) -> int:
        """Offer customers ``first..last`` one basket each; events applied."""
        from stream.shard import ShardInput
        from stream.sinks.base import table_rows
        from stream.sources.base import SourceBatch

        applied = 0
        pending: list = []
        events = self.workload.events(first, last, rounds=1)
        n = 0
        while True:
            pending.clear()
            now = int(time.time() * 1000)
            for user, rec in events:
                pending.append((f"live:0:{n}", payload(user, rec, now, f"m{first}-{n}")))
                n += 1
                if len(pending) == self.batch:
                    break
            if not pending:
                return applied
            pb = self.parser.parse_batch(SourceBatch(list(pending), tick_ms=now, part="live:0"))
            inp = ShardInput(0, pb.records, now, "live:0", 1, watermark=now)
            out = self.proc.process(self.sh, inp)
            applied += len(out.applied)
            if self.writer is not None:
                for table, cols in table_rows([out], self.cfg.type_names).items():
                    self.writer.insert(table, cols)
            self.n_batches += 1
            if self.n_batches % self.epoch_batches == 0:
                self.snapshots.save(self.sh)

    def close(self) -> None:
        """Close the side store; remove the temporary directory."""
        import shutil

        self.snapshots.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def top_lines(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, per: int, n: int) -> list[dict]:
    """The ``n`` lines whose allocations grew most, in bytes per ``per`` customers."""
    stats = after.compare_to(before, "lineno")
    out = []
    for st in stats[:n]:
        frame = st.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        out.append({"where": where, "bytes_per_customer": round(st.size_diff / per, 1), "count_diff": st.count_diff})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("propstream-data"))
    ap.add_argument("--customers", type=int, nargs=2, default=[20_000, 60_000], metavar=("N1", "N2"))
    ap.add_argument("--batch", type=int, default=2000, help="events per source batch")
    ap.add_argument("--epoch-batches", type=int, default=20, help="batches between incremental snapshots")
    ap.add_argument("--trace", action="store_true", help="tracemalloc snapshots (RSS then includes tracemalloc's own)")
    ap.add_argument("--chdb", action="store_true", help="write every output into an embedded chDB too")
    ap.add_argument("--top", type=int, default=15, help="lines shown with --trace")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    n1, n2 = args.customers
    h = Harness(args)
    if args.trace:
        tracemalloc.start()
    result: dict = {"customers": [n1, n2], "batch": args.batch, "chdb": args.chdb, "trace": args.trace}
    points = []
    snaps = []
    try:
        for first, last in ((0, n1), (n1, n2)):
            t0 = time.process_time()
            applied = h.load(first, last)
            h.snapshots.save(h.sh)  # the epoch ends: the changed set is written and emptied
            gc.collect()
            points.append(
                {
                    "customers": len(h.sh.customers),
                    "events_applied": applied,
                    "cpu_s": round(time.process_time() - t0, 1),
                    "rss_mb": round(rss() / 2**20, 1),
                    "containers": container_bytes(h.sh),
                    "chdb": h.chdb_memory(),
                }
            )
            if args.trace:
                snaps.append(tracemalloc.take_snapshot())
            print(json.dumps(points[-1]), file=sys.stderr)
    finally:
        h.close()
    c1, c2 = points[0]["customers"], points[1]["customers"]
    dn = c2 - c1
    result["points"] = points
    result["rss_bytes_per_customer"] = round((points[1]["rss_mb"] - points[0]["rss_mb"]) * 2**20 / dn)
    result["container_bytes_per_customer"] = {
        k: round((points[1]["containers"][k] - points[0]["containers"][k]) / dn) for k in points[0]["containers"]
    }
    if args.trace:
        result["traced_bytes_per_customer"] = round(
            (
                sum(s.size for s in snaps[1].statistics("filename"))
                - sum(s.size for s in snaps[0].statistics("filename"))
            )
            / dn
        )
        result["top_lines"] = top_lines(snaps[0], snaps[1], dn, args.top)
        result["top_files"] = {
            Path(st.traceback[0].filename).name: round(st.size_diff / dn, 1)
            for st in snaps[1].compare_to(snaps[0], "filename")[: args.top]
        }
    text = json.dumps(result)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
