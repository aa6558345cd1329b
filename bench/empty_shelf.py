"""Benchmark: how far a group's served scores fall when its shelf empties, per model setting (issue #15).

    nice python bench/empty_shelf.py [--data-dir DIR] [--cache DIR] [--month 2017-12-01] [--days 21]
                                     [--groups g,...] [--configs current,d6_eta0.03_r300]

The score drift `propstream monitor` can see depends on how much a group's
model reads the group's own recent activity. For each group this replays The
Complete Journey without any event of the group's items in the ``--days``
before the test month, and scores the households as of the test month with
each setting's model (``bench/model_cost.py``'s settings, trained with
``train_group`` on the plan ``propstream train`` fits, calibrated as served):
the mean served score clean and emptied, over all households and over those
whose feature row the missing events changed.

``--cache`` is the backtest's (``bench/backtest.py``): the clean examples and
the boosters come from it when it holds them. One replay per group (~5 min
on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import complete_journey
from bench.model_cost import SETTINGS, booster_for, examples
from offline_train.dataset import build_examples, to_ms
from offline_train.train import _rows, train_group
from propstream import app
from stream.state import StateConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--cache", default="", help="the backtest's cache directory (examples and boosters)")
    ap.add_argument("--month", default="2017-12-01", help="test month (a month start)")
    ap.add_argument("--days", type=int, default=21, help="days before the month without the group's events")
    ap.add_argument("--groups", default="coffee_tea", help="comma-separated groups, one replay each")
    ap.add_argument("--configs", default="current,d6_eta0.03_r300", help="bench/model_cost.py setting names")
    args = ap.parse_args()
    by_name = {s.name: s for s in SETTINGS}
    chosen = [by_name[n] for n in args.configs.split(",") if n]
    cache = Path(args.cache) if args.cache else None
    spec, ex, plan = examples(Path(args.data_dir), cache, args.month)
    settings, records, _ = complete_journey(Path(args.data_dir))
    catalog = app.load_catalog(settings)
    month = datetime.fromisoformat(args.month).replace(tzinfo=UTC)
    te = _rows(ex, (month,))
    users = [u for u, keep in zip(ex.users, te, strict=True) if keep]
    print("| group | setting | ROC AUC | mean score clean | emptied | fall, all households | fall, changed rows |")
    print("|---|---|---|---|---|---|---|")
    for g in [g for g in args.groups.split(",") if g]:
        items = set(catalog.items_of(g))
        lo, hi = to_ms(month - timedelta(days=args.days)), to_ms(month)
        kept = [r for r in records if not (r.item_id in items and lo <= r.ts_ms < hi)]
        t0 = time.monotonic()
        t = settings.train
        emptied = build_examples(kept, StateConfig.build(spec), catalog, [month], t.label_horizon_days, t.label_types)
        at = {u: i for i, u in enumerate(emptied.users)}
        cols = np.array([spec.index[n] for n in spec.default_inputs(g)], dtype=np.intp)
        x_clean = ex.x[np.ix_(te, cols)]
        x_empty = emptied.x[np.ix_(np.array([at[u] for u in users]), cols)]
        changed = np.any(x_clean != x_empty, axis=1)
        print(
            f"{g}: {len(records) - len(kept):,} events removed, {int(changed.sum()):,} of {len(users):,} "
            f"households' rows changed (replay {time.monotonic() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        for s in chosen:
            booster = booster_for(cache, spec, g, ex, plan, s)
            art = train_group(spec, g, ex, plan, version=1, params=s.params or None, rounds=s.rounds, booster=booster)
            clean, empty = art.predict(x_clean), art.predict(x_empty)
            fall = clean - empty
            print(
                f"| {g} | {s.name}: {s.describe()} | {art.card.metrics['roc_auc']:.4f} | {clean.mean():.4f} | "
                f"{empty.mean():.4f} | {fall.mean():.4f} | {fall[changed].mean():.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
