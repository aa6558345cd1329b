"""Benchmark: the physical floor of scoring a day-cut replay, tree traversal only.

    python bench/refresh_floor.py [--data-dir DIR] [--rows N] [--refreshes R] [--events E]
                                  [--predicted P] [--repeat K]

Loads every group's production model (run `propstream demo` or `propstream
train` first), builds one big matrix of real feature vectors (The Complete
Journey's households as of several dates, offline replay, tiled to ``--rows``
rows) and scores it for every group with one thread, in turn: as the stream
scores, one call of every group's booster joined (``models.forest.GroupForest``
over the dense rows, ``stream.scoring.ShardScoring.predict``), and, the way
before it, one ``inplace_predict`` per group on a float32 copy of the group's
columns (``ModelArtifact.raw_scores``). The fastest of ``--repeat`` passes
counts. That is the least any refresh can cost for the models as they are:
each row walks every tree once.

Both ways must give the same scores (checked once before timing). Prints
rows, trees per group, then for each way its CPU seconds, µs per row
per group, ns per row and tree and µs per customer refresh (all groups), and
what the day-cut replay needs with the stream's way: its rows predicted
(``--predicted``, from ``bench/replay.py --timers``; default
``--refreshes``, the replay's feature rows, times the groups) times that
cost, and the events per CPU second it caps the replay at (``--events``
replayed). Defaults are the full replay of The Complete Journey with day
cuts (README, BENCHMARKS.md §1, §6v).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.forest import GroupForest
from models.registry import ModelRegistry
from models.scorer import ProductionModels
from offline_train.dataset import replay_features
from propstream import app, completejourney
from schemas.features import FeatureSpec
from schemas.mapping import load_mapping
from schemas.settings import Settings
from stream.scoring import ShardScoring
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


def registered_models(settings: Settings, spec: FeatureSpec) -> ProductionModels | None:
    """Every group's production model registered under the settings' data dir, scoring with one thread (None: none)."""
    models = ProductionModels.load(spec, ModelRegistry(settings.models_dir), 3600.0, threads=1)
    return models if models.scorers else None


def production_models(data_dir: Path) -> tuple[Settings, Path, ProductionModels]:
    """Settings for The Complete Journey under ``data_dir``, its events file, and every group's production model."""
    events, catalog = completejourney.prepare(data_dir)
    settings = Settings(data_dir=data_dir, catalog_file=catalog, groups_file=completejourney.GROUPS_FILE)
    models = registered_models(settings, app.feature_spec(app.load_catalog(settings), settings.events.types))
    if models is None:
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
    x = np.ascontiguousarray(feature_matrix(settings, events, args.rows))
    scorers = list(models.scorers.values())
    forest = GroupForest.build(scorers, x.shape[1], threads=1)
    if forest is None:
        msg = "the production models cannot be joined into one booster (see the log)"
        raise SystemExit(msg)
    plan = [(s, np.arange(len(x)), False) for s in scorers]
    ways = {"joined": forest, "group_by_group": None}  # the stream's way first
    joined, own = (ShardScoring.predict(x, plan, way) for way in ways.values())
    if not all(np.array_equal(a, b) for a, b in zip(joined, own, strict=True)):
        msg = "the joined booster's scores differ from the groups' own: not the same models"
        raise SystemExit(msg)
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(args.repeat):
        for way, way_forest in ways.items():
            t0 = time.process_time()
            ShardScoring.predict(x, plan, way_forest)
            best[way] = min(best[way], time.process_time() - t0)
    n_groups = len(scorers)
    n_trees = sum(s.artifact.booster.num_boosted_rounds() for s in scorers)
    predicted = args.predicted or args.refreshes * n_groups
    result: dict[str, object] = {
        "rows": len(x),
        "groups": n_groups,
        "trees_total": n_trees,
        "trees_per_group": sorted({s.artifact.booster.num_boosted_rounds() for s in scorers}),
    }
    for way, seconds in best.items():
        result[way] = {
            "cpu_seconds": round(seconds, 3),
            "us_per_row_per_group": round(seconds / len(x) / n_groups * 1e6, 3),
            "ns_per_row_per_tree": round(seconds / len(x) / n_trees * 1e9, 2),
            "us_per_customer_refresh": round(seconds / len(x) * 1e6, 2),
        }
    floor = best["joined"] / len(x) / n_groups * predicted  # CPU seconds of the replay's tree traversal
    result |= {
        "replay_refreshes": args.refreshes,
        "replay_rows_predicted": predicted,
        "replay_floor_cpu_seconds": round(floor, 1),
        "replay_events_per_cpu_s_cap": round(args.events / floor),
        "budget_us_per_refresh_at_25k_events_s": round(args.events / 25_000 / args.refreshes * 1e6, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
