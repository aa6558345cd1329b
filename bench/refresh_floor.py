"""Benchmark: the physical floor of scoring a day-cut replay, tree traversal only.

    python bench/refresh_floor.py [--data-dir DIR] [--rows N] [--refreshes R] [--events E]
                                  [--predicted P] [--repeat K]

Loads every group's production model (run `propstream demo` or `propstream
train` first), builds one big matrix of real feature vectors (The Complete
Journey's households as of several dates, offline replay, tiled to ``--rows``
rows) and times one ``inplace_predict`` per group over the whole matrix, with
one thread, as the stream scores (``models.scorer``). That is the least any
refresh can cost for the models as they are: each row walks every tree once.

Prints rows, trees per group, seconds, µs per row per group and µs per
customer refresh (all groups), then what the day-cut replay needs: its
rows predicted (``--predicted``, from ``bench/replay.py --timers``; default
``--refreshes``, the replay's feature rows, times the groups) times that cost,
and the events per CPU second it caps the replay at (``--events`` replayed).
Defaults are the full replay of The Complete Journey with day cuts (README,
BENCHMARKS.md §1).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.registry import ModelRegistry
from models.scorer import ProductionModels
from offline_train.dataset import replay_features
from propstream import app, completejourney
from schemas.mapping import load_mapping
from schemas.settings import Settings
from stream.state import StateConfig


def feature_matrix(settings: Settings, events: Path, n_rows: int) -> np.ndarray:
    """Real feature vectors (households as of the first of each month of 2017), tiled to ``n_rows``."""
    mapping = load_mapping(completejourney.MAPPING_FILE)
    records, _ = app.read_file_records([events], mapping, settings.events.types)
    catalog = app.load_catalog(settings)
    cfg = StateConfig.build(app.feature_spec(catalog, settings.events.types))
    cuts = [int(datetime(2017, m, 1, tzinfo=UTC).timestamp() * 1000) for m in range(2, 13)]
    feats = replay_features(records, cfg, catalog, cuts)
    rows = np.array([row for t in cuts for row in feats[t].values()], dtype=np.float64)
    reps = -(-n_rows // len(rows))
    return np.tile(rows, (reps, 1))[:n_rows]


def production_models(data_dir: Path) -> tuple[Settings, Path, ProductionModels]:
    """Settings for The Complete Journey under ``data_dir``, its events file, and every group's production model."""
    events, catalog = completejourney.prepare(data_dir)
    settings = Settings(data_dir=data_dir, catalog_file=catalog, groups_file=completejourney.GROUPS_FILE)
    spec = app.feature_spec(app.load_catalog(settings), settings.events.types)
    models = ProductionModels.load(spec, ModelRegistry(settings.models_dir), threads=1)
    if not models.scorers:
        msg = "no production models under the data dir: run `propstream demo` first"
        raise SystemExit(msg)
    return settings, events, models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--rows", type=int, default=200_000, help="rows of the matrix each group predicts")
    ap.add_argument("--refreshes", type=int, default=591_857, help="customer refreshes of the replay")
    ap.add_argument("--events", type=int, default=1_469_307, help="events of the replay")
    ap.add_argument(
        "--predicted",
        type=int,
        default=0,
        help="rows the replay predicted (bench/replay.py --timers); default: refreshes x groups",
    )
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (the fastest counts)")
    args = ap.parse_args()
    settings, events, models = production_models(Path(args.data_dir))
    spec = models.spec
    x = feature_matrix(settings, events, args.rows)
    trees = {}
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.process_time()
        for gi, scorer in models.scorers.items():
            scorer.artifact.raw_scores(x[:, scorer.positions])  # float32 copy + inplace_predict, as the stream
            trees[spec.groups[gi]] = scorer.artifact.booster.num_boosted_rounds()
        best = min(best, time.process_time() - t0)
    n_groups = len(models.scorers)
    us_refresh = best / len(x) * 1e6
    predicted = args.predicted or args.refreshes * n_groups
    floor = best / len(x) / n_groups * predicted  # CPU seconds of the replay's tree traversal
    result = {
        "rows": len(x),
        "groups": n_groups,
        "trees_total": sum(trees.values()),
        "trees_per_group": sorted(set(trees.values())),
        "cpu_seconds": round(best, 3),
        "us_per_row_per_group": round(us_refresh / n_groups, 3),
        "ns_per_row_per_tree": round(best / len(x) / sum(trees.values()) * 1e9, 2),
        "us_per_customer_refresh": round(us_refresh, 2),
        "replay_refreshes": args.refreshes,
        "replay_rows_predicted": predicted,
        "replay_floor_cpu_seconds": round(floor, 1),
        "replay_events_per_cpu_s_cap": round(args.events / floor),
        "budget_us_per_refresh_at_25k_events_s": round(args.events / 25_000 / args.refreshes * 1e6, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
