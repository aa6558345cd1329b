"""Benchmark: XGBoost threads per predict call, one against one per CPU, at the batch sizes the stream scores.

    python bench/predict_threads.py [--data-dir DIR] [--rows 470 2000 20000] [--repeat K]

Loads every group's production model (run `propstream demo` first) and real
feature vectors of The Complete Journey (``bench.refresh_floor.feature_matrix``),
then scores ``--rows`` rows with every group's model, as a shard refresh does
(``ModelArtifact.raw_scores``, one ``inplace_predict`` per group), with
``nthread`` 1 and with one per CPU (``stream.predict_threads`` 1 and 0), the
two in turn ``--repeat`` times. Prints, per row count and setting, the median
wall and CPU milliseconds (``time.process_time``: every thread of the process)
of one refresh's predictions. Scores are the same either way; what the
setting changes is their cost, and it depends on what else wants the cores:
run it on a quiet machine and beside a load to see both (BENCHMARKS.md 6h).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.refresh_floor import feature_matrix, production_models
from schemas.settings import DEFAULT_DATA_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--rows", type=int, nargs="+", default=[470, 2000, 20000], help="rows per refresh")
    ap.add_argument("--repeat", type=int, default=10, help="timed refreshes per row count and setting")
    args = ap.parse_args()
    settings, events, models = production_models(Path(args.data_dir))
    x_all = feature_matrix(settings, events, max(args.rows))
    settings_tried = {"1": 1, "0 (one per CPU)": os.cpu_count() or 1}
    for rows in args.rows:
        x = x_all[:rows]
        cols = {gi: x[:, s.positions] for gi, s in models.scorers.items()}  # gathered once: not what is timed
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in settings_tried}
        for _ in range(args.repeat):
            for name, threads in settings_tried.items():
                for s in models.scorers.values():
                    s.artifact.booster.set_param({"nthread": threads})
                t0, c0 = time.perf_counter(), time.process_time()
                for gi, s in models.scorers.items():
                    s.artifact.raw_scores(cols[gi])
                times[name].append((time.perf_counter() - t0, time.process_time() - c0))
        for name, pairs in times.items():
            result = {
                "rows": rows,
                "groups": len(models.scorers),
                "predict_threads": name,
                "wall_ms": round(statistics.median(w for w, _ in pairs) * 1e3, 1),
                "cpu_ms": round(statistics.median(c for _, c in pairs) * 1e3, 1),
            }
            print(json.dumps(result))


if __name__ == "__main__":
    main()
