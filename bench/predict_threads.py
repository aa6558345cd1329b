"""Benchmark: one refresh's predictions, group by group against every group's booster joined, per thread setting.

    python bench/predict_threads.py [--data-dir DIR] [--rows 1 10 50 200 470 2000 20000] [--repeat K]

Loads every group's production model (run `propstream demo` first) and real
feature vectors of The Complete Journey (``bench.refresh_floor.feature_matrix``),
then scores ``--rows`` rows for every group as a shard refresh does
(``stream.scoring.ShardScoring.predict``, every row changed): one
``inplace_predict`` per group (``ModelArtifact.raw_scores`` on the group's
columns), and one call of the boosters joined (``models.forest.GroupForest``,
the stream's default), each with ``nthread`` 1 and with one per CPU
(``stream.predict_threads`` 1 and 0), the four in turn ``--repeat`` times.
Prints, per row count, way and setting, the median wall and CPU milliseconds
(``time.process_time``: every thread of the process) of one refresh's
predictions, and checks that both ways give the same scores. What the thread
setting costs depends on what else wants the cores: run it on a quiet
machine and beside a load to see both (BENCHMARKS.md 6h, 6l).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.refresh_floor import feature_matrix, production_models
from models.forest import GroupForest
from schemas.settings import DEFAULT_DATA_DIR
from stream.scoring import ShardScoring


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 10, 50, 200, 470, 2000, 20000], help="rows per refresh")
    ap.add_argument("--repeat", type=int, default=10, help="timed refreshes per row count, way and setting")
    args = ap.parse_args()
    settings, events, models = production_models(Path(args.data_dir))
    x_all = feature_matrix(settings, events, max(args.rows))
    scorers = list(models.scorers.values())
    threads = {"1": 1, "0 (one per CPU)": os.cpu_count() or 1}
    forests = {name: GroupForest.build(scorers, x_all.shape[1], n) for name, n in threads.items()}
    for rows in args.rows:
        x = np.ascontiguousarray(x_all[:rows])
        plan = [(s, np.arange(rows), False) for s in scorers]
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.repeat):
            for name, n in threads.items():
                for s in scorers:
                    s.artifact.booster.set_param({"nthread": n})
                for way, forest in (("group by group", None), ("joined", forests[name])):
                    t0, c0 = time.perf_counter(), time.process_time()
                    scores = ShardScoring.predict(x, plan, forest)
                    times.setdefault((way, name), []).append((time.perf_counter() - t0, time.process_time() - c0))
                    if forest is None:
                        expected = scores
                    elif not all(np.array_equal(a, b) for a, b in zip(scores, expected, strict=True)):
                        sys.exit(f"{rows} rows: the joined boosters' scores differ from the groups' own")
        for (way, name), pairs in times.items():
            result = {
                "rows": rows,
                "groups": len(scorers),
                "way": way,
                "predict_threads": name,
                "wall_ms": round(statistics.median(w for w, _ in pairs) * 1e3, 2),
                "cpu_ms": round(statistics.median(c for _, c in pairs) * 1e3, 2),
            }
            print(json.dumps(result))


if __name__ == "__main__":
    main()
