"""Benchmark: a refresh's Python steps, this code against an export of older code, in one process, in turn.

    python bench/refresh_ab.py --base DIR [--data-dir DIR] [--limit N] [--rounds K]

``DIR`` holds an export of the older code (``git archive REV | tar -x -C DIR``).
Its ``stream/state.py`` and ``stream/rows.py`` are loaded next to this
checkout's; the first ``--limit`` events of The Complete Journey are applied to
customer states, every customer is moved a day past the last event, and both
versions build the feature vectors (``FeatureRows.dense``), the
``customer_features`` records and the next change times of every customer,
in turn (A B, then B A, ...), CPU seconds each. Prints µs per customer (the
fastest round) and the ratio new/old pair by pair; refuses to print if the
two versions' rows or records differ. One process, interleaved: a shared,
loaded machine slows both alike, which separate runs cannot promise.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stream.rows as new_rows
import stream.state as new_state
from bench.common import complete_journey
from propstream import app
from schemas.features import DAY_MS


def load(name: str, path: Path, **imports: ModuleType) -> ModuleType:
    """A module from a file, under its own name (the older code next to this checkout's).

    ``imports`` maps module names it imports to the older modules they mean
    (the older rows.py must read the older state.py, not this checkout's).
    """
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        msg = f"cannot load {path}"
        raise SystemExit(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    saved = {k: sys.modules[k] for k in imports if k in sys.modules}
    sys.modules.update(imports)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.update(saved)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", required=True, type=Path, help="export of the older code")
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--limit", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    old_state = load("old_state", args.base / "stream" / "state.py")
    old_rows = load("old_rows", args.base / "stream" / "rows.py", **{"stream.state": old_state})
    data_dir = Path(args.data_dir)
    settings, records, _ = complete_journey(data_dir)
    records = sorted(records, key=lambda r: r.ts_ms)[: args.limit]
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog, settings.events.types)
    clock = records[-1].ts_ms + DAY_MS

    def states(module: ModuleType, cfg) -> dict:
        """The same events applied by one version's own state class (their layouts need not agree)."""
        out: dict = {}
        for r in records:
            state = out.setdefault(r.user_id, module.CustomerState())
            state.apply(cfg, r.ts_ms, r.type_index, catalog.groups_of(r.item_id), r.value_cents)
        for state in out.values():
            state.advance(cfg, clock)
        return out

    cfg, old_cfg = new_state.StateConfig.build(spec), old_state.StateConfig.build(spec)
    new, old = states(new_state, cfg), states(old_state, old_cfg)
    users = sorted(new)
    dirty = {u: set(range(cfg.n_keys // cfg.n_types)) for u in users}
    versions = {"old": (old_rows.FeatureRows(old_cfg), old, old_cfg), "new": (new_rows.FeatureRows(cfg), new, cfg)}
    seconds: dict[tuple[str, str], list[float]] = {}
    made = {}
    for rnd in range(args.rounds):
        for name in ("old", "new") if rnd % 2 == 0 else ("new", "old"):
            rows, customers, version_cfg = versions[name]
            t0 = time.process_time()
            batch = rows.dense(customers, users, dirty)
            t1 = time.process_time()
            recs = rows.records(batch, clock)
            t2 = time.process_time()
            for state in customers.values():
                state.next_change(version_cfg)
            t3 = time.process_time()
            for step, s in (("dense", t1 - t0), ("records", t2 - t1), ("next_change", t3 - t2)):
                seconds.setdefault((name, step), []).append(s)
            made[name] = (batch.rows, recs)
    if not (np.array_equal(made["old"][0], made["new"][0]) and list(made["old"][1]) == list(made["new"][1])):
        msg = "the two versions' feature rows or records differ"
        raise SystemExit(msg)
    print(f"{len(users)} customers; rows and records identical in both versions")
    for step in ("dense", "records", "next_change"):
        o, n = seconds[("old", step)], seconds[("new", step)]
        ratios = sorted(b / a for a, b in zip(o, n, strict=True))
        print(
            f"{step}: old {min(o) / len(users) * 1e6:.1f} µs/customer, new {min(n) / len(users) * 1e6:.1f}; "
            f"new/old pair by pair median {ratios[len(ratios) // 2]:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        )


if __name__ == "__main__":
    main()
