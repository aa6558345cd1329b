"""Benchmark: the Python work of one customer refresh, step by step, on real customer state.

    python bench/refresh_step.py [--data-dir DIR] [--limit N] [--repeat K]

Applies the first ``--limit`` events of The Complete Journey to customer
states (``stream.state``, no dataflow, no sinks, no models), moves every
customer to the last event's time, then times, in CPU seconds per customer,
what a day-cut refresh does for each of them (``stream.shard._refresh``):

- ``advance_1d``: the clock moves one day (buckets leave windows, recency);
- ``dense``: the feature vectors of all of them (``FeatureRows.dense``);
- ``records``: their ``customer_features`` records (``FeatureRows.records``);
- ``next_change``: when each changes next (the expiry heap's key).

Only public calls that every version since #15 has, so a run with
``PYTHONPATH`` set to an export of older code measures that code (A/B).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import complete_journey
from propstream import app
from schemas.features import DAY_MS
from stream.rows import FeatureRows
from stream.state import CustomerState, StateConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--limit", type=int, default=300_000, help="events applied before timing")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes (the fastest counts)")
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    settings, records, _ = complete_journey(data_dir)
    records = sorted(records, key=lambda r: r.ts_ms)[: args.limit]
    catalog = app.load_catalog(settings)
    cfg = StateConfig.build(app.feature_spec(catalog, settings.events.types))
    customers: dict[str, CustomerState] = {}
    for r in records:
        state = customers.setdefault(r.user_id, CustomerState())
        state.apply(cfg, r.ts_ms, r.type_index, catalog.groups_of(r.item_id), r.value_cents)
    clock = records[-1].ts_ms
    for state in customers.values():
        state.advance(cfg, clock)
    users = sorted(customers)
    n_groups = cfg.n_keys // cfg.n_types
    frozen = pickle.dumps(customers)
    rows = FeatureRows(cfg)
    best: dict[str, float] = {}

    def keep(name: str, since: float) -> None:
        best[name] = min(best.get(name, float("inf")), time.process_time() - since)

    for _ in range(args.repeat):
        moved: dict[str, CustomerState] = pickle.loads(frozen)
        dirty = {u: set(range(n_groups)) for u in users}
        t = time.process_time()
        for state in moved.values():
            state.advance(cfg, clock + DAY_MS)
        keep("advance_1d", t)
        t = time.process_time()
        batch = rows.dense(moved, users, dirty)
        keep("dense", t)
        t = time.process_time()
        rows.records(batch, clock + DAY_MS)
        keep("records", t)
        t = time.process_time()
        for state in moved.values():
            state.next_change(cfg)
        keep("next_change", t)
    per = {k: round(v / len(users) * 1e6, 1) for k, v in best.items()}
    result = {
        "events": len(records),
        "customers": len(users),
        "us_per_customer": per,
        "us_per_customer_total": round(sum(per.values()), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
