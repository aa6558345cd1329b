"""Cost of trending: events/s of the dataflow with trending on and off, Bytewax's testing runtime, no sinks.

    .venv/bin/python bench/trending_cost.py [--events 300000] [--days 14] [--rounds 3] [--batch 10000]

A synthetic stream (2,000 items with Zipf popularity, 20 groups, 5,000
customers, --days of event time, views, carts and purchases) is parsed into batches once;
each round runs the same batches through ``build_dataflow`` (features only, no
models) with ``FlowConfig.trending`` None and set (1h/5m and 24h/1h windows),
alternating, and reports the wall time of ``run_main``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import zlib
from datetime import UTC, datetime

from bytewax.testing import TestingSink, TestingSource, run_main

from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, ProductGroup
from schemas.mapping import ColumnMapping
from stream.dataflow import FlowConfig, build_dataflow
from stream.parse import EventParser
from stream.sources.base import SourceBatch
from stream.state import StateConfig
from stream.trending import HOUR_MS, TrendConfig, TrendWindow

START_MS = 1_483_228_800_000
N_PARTS = 4


def stream(n_events: int, days: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    weights = [1 / (k + 1) for k in range(2000)]
    items = rng.choices(range(2000), weights, k=n_events)
    times = sorted(START_MS + rng.randrange(days * 24 * HOUR_MS) for _ in range(n_events))
    types = rng.choices(["view", "cart", "purchase"], [6, 2, 2], k=n_events)
    return [
        {
            "user_id": f"u{rng.randrange(5000)}",
            "item_id": f"i{item}",
            "type": kind,
            "event_id": f"e{n}",
            "timestamp": datetime.fromtimestamp(ts / 1000, tz=UTC).isoformat(timespec="milliseconds"),
        }
        for n, (item, ts, kind) in enumerate(zip(items, times, types, strict=True))
    ]


def batches(events: list[dict], size: int) -> list[SourceBatch]:
    parts: dict[str, list[tuple[str, str]]] = {f"p{k}": [] for k in range(N_PARTS)}
    for e in events:
        p = f"p{zlib.crc32(e['user_id'].encode()) % N_PARTS}"
        parts[p].append((f"{p}:{len(parts[p])}", json.dumps(e)))
    cut = {
        p: [SourceBatch(r[i : i + size], None, p, N_PARTS) for i in range(0, len(r), size)] for p, r in parts.items()
    }
    for bs in cut.values():
        bs[-1].final = True
    out = []
    while any(cut.values()):
        for p in sorted(cut):
            if cut[p]:
                out.append(cut[p].pop(0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=14, help="event-time span: trending work grows with it, per window")
    args = ap.parse_args()
    groups = tuple(ProductGroup(name=f"g{k}", categories=(f"C{k}",)) for k in range(20))
    catalog = GroupCatalog(
        groups, {f"i{i}": (i % 20, (i * 7) % 20, 20) if i % 3 else (i % 20, 20) for i in range(2000)}
    )
    cfg = StateConfig.build(FeatureSpec(groups=catalog.names))
    src = batches(stream(args.events, args.days), args.batch)
    trending = TrendConfig((TrendWindow.parse("1h/5m"), TrendWindow.parse("24h/1h")), sources=4)
    for r in range(args.rounds):
        for name, tcfg in (("off", None), ("on", trending)):
            rows: list = []
            flow = build_dataflow(
                TestingSource(src),
                EventParser(ColumnMapping()),
                cfg,
                catalog,
                None,
                TestingSink([]),
                {},
                FlowConfig(4, 24 * HOUR_MS, 30 * 24 * HOUR_MS, recovery=False, trending=tcfg),
                trending_sinks={"trending_rows": TestingSink(rows)},
            )
            t = time.perf_counter()
            run_main(flow)
            dt = time.perf_counter() - t
            rate = args.events / dt
            print(f"round {r} trending {name:3}: {rate:9,.0f} events/s ({dt:.1f} s, {len(rows):,} trending rows)")


if __name__ == "__main__":
    main()
