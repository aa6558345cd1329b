"""Why calibration misses ECE <= 0.03 in the rolling-origin backtest, and what other calibrations would do.

    nice python bench/calibration_shift.py --cache DIR [--data-dir DIR] [--months 2017-08-01,2017-12-01]
                                           [--groups g,...] [--pool 4] [--cached-only]

Uses ``bench/backtest.py``'s cache (examples and boosters; run the backtest
with ``--cache DIR`` first, or let this script replay and fit). For every
group and test month M of the backtest it prints:

- the base rate of the calibration slice (the month before M) and of M;
- the ECE on M of Platt calibration on that slice (what ``train`` serves);
- the ECE with ``--pool`` recent slices pooled (``train.calibration_cutoffs``);
- the ECE of isotonic calibration on the served slice;
- the ECE after moving every served score by one constant in logit so that
  the mean equals M's base rate: an oracle that reads the test labels, so it
  cannot be deployed; it shows how much of the ECE is the base-rate shift.

Then a summary: how many group-months each calibration brings to
ECE <= 0.03, and the misses by the size of the base-rate shift. Before that,
from the labels alone (no booster), the shift per month over every group.
``--cached-only`` skips group-months whose booster is not in the cache.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backtest import MONTHS, _source_key, cached_booster, load_examples, month_plan, save_examples
from common import complete_journey

from models.calibration import apply_calibration, fit_isotonic, fit_platt
from offline_train.dataset import build_examples
from offline_train.metrics import expected_calibration_error
from offline_train.train import _rows, booster_fingerprint
from propstream import app
from schemas.settings import TrainSettings
from stream.state import StateConfig

TARGET = 0.03


def shift_to_rate(probs: np.ndarray, rate: float) -> np.ndarray:
    """Add one constant to every logit so that the mean probability is ``rate`` (bisection).

    >>> p = shift_to_rate(np.array([0.1, 0.2, 0.3]), 0.4); round(float(p.mean()), 6)
    0.4
    """
    z = np.log(np.clip(probs, 1e-9, 1 - 1e-9) / (1 - np.clip(probs, 1e-9, 1 - 1e-9)))
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(z + mid)))) < rate else (lo, mid)
    return 1 / (1 + np.exp(-(z + (lo + hi) / 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--cache", required=True, help="bench/backtest.py's cache directory")
    ap.add_argument("--months", default=",".join(MONTHS))
    ap.add_argument("--groups", default="")
    ap.add_argument("--pool", type=int, default=4, help="calibration slices pooled in the pooled variant")
    ap.add_argument("--cached-only", action="store_true", help="skip group-months without a cached booster")
    args = ap.parse_args()
    data_dir, cache = Path(args.data_dir), Path(args.cache)
    settings, records, events = complete_journey(data_dir)
    pooled_settings = settings.model_copy(update={"train": TrainSettings(calibration_cutoffs=args.pool)})
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog)
    first = datetime.fromtimestamp(min(r.ts_ms for r in records) / 1000, tz=UTC)
    months = sorted(m.strip() for m in args.months.split(",") if m.strip())
    groups = [g for g in args.groups.split(",") if g] or list(spec.groups)
    at = {m: datetime.fromisoformat(m).replace(tzinfo=UTC) for m in months}
    plans = {m: month_plan(first, at[m], settings) for m in months}
    pooled = {m: month_plan(first, at[m], pooled_settings) for m in months}
    cutoffs = sorted({c for p in [*plans.values(), *pooled.values()] for c in p.all_cutoffs()})
    key = _source_key(events, spec, settings)
    ex = load_examples(cache, key, cutoffs)
    if ex is None:
        print(f"replaying {len(records):,} events for {len(cutoffs)} cutoffs", file=sys.stderr, flush=True)
        t = settings.train
        ex = build_examples(records, StateConfig.build(spec), catalog, cutoffs, t.label_horizon_days, t.label_types)
        save_examples(cache, key, ex)

    print("base rate shift from the calibration month to the test month, every group (labels only):\n")
    shifts: list[str] = []
    print("| test month | mean shift | groups with abs shift >= 0.02 | >= 0.03 |")
    print("|---|---|---|---|")
    for m in months:
        te, ca = _rows(ex, (at[m],)), _rows(ex, plans[m].calibrate)
        d = ex.labels[te].mean(axis=0) - ex.labels[ca].mean(axis=0)
        print(f"| {m} | {d.mean():+.4f} | {int((abs(d) >= 0.02).sum())} | {int((abs(d) >= 0.03).sum())} |")
        shifts.append(f"{m[:7]}: " + " ".join(f"{g}={v:+.3f}" for g, v in zip(spec.groups, d.tolist(), strict=True)))
    print("\nper group:\n" + "\n".join(shifts))

    print(
        f"\n| group | test month | base rate, calibration / test | ECE served | ECE, {args.pool} slices pooled "
        "| ECE, isotonic | ECE, test intercept (oracle) |"
    )
    print("|---|---|---|---|---|---|---|")
    rows: list[tuple[float, float, float, float, float]] = []
    for m in months:
        for g in groups:
            if args.cached_only:
                fp = booster_fingerprint(spec, g, ex, plans[m])[:16]
                if not (cache / "boosters" / f"{g}-{fp}.ubj").exists():
                    continue
            booster = cached_booster(cache, spec, g, ex, plans[m])
            gi = spec.groups.index(g)
            cols = np.array([spec.index[n] for n in spec.default_inputs(g)], dtype=np.intp)

            def raw(mask: np.ndarray) -> np.ndarray:
                return np.asarray(booster.inplace_predict(ex.x[np.ix_(mask, cols)], validate_features=False))  # noqa: B023

            y = ex.labels[:, gi]
            te, ca, po = _rows(ex, (at[m],)), _rows(ex, plans[m].calibrate), _rows(ex, pooled[m].calibrate)
            raw_te = raw(te)
            served = apply_calibration(fit_platt(raw(ca), y[ca]), raw_te)
            e_served = expected_calibration_error(y[te], served)
            e_pool = expected_calibration_error(y[te], apply_calibration(fit_platt(raw(po), y[po]), raw_te))
            e_iso = expected_calibration_error(y[te], apply_calibration(fit_isotonic(raw(ca), y[ca]), raw_te))
            e_oracle = expected_calibration_error(y[te], shift_to_rate(served, float(y[te].mean())))
            shift = float(y[te].mean() - y[ca].mean())
            rows.append((shift, e_served, e_pool, e_iso, e_oracle))
            print(
                f"| {g} | {m[:7]} | {y[ca].mean():.3f} / {y[te].mean():.3f} | {e_served:.3f} | {e_pool:.3f} "
                f"| {e_iso:.3f} | {e_oracle:.3f} |",
                flush=True,
            )
    if not rows:
        return
    a = np.array(rows)
    n = len(a)
    names = ("served", f"{args.pool} slices pooled", "isotonic", "test intercept (oracle)")
    print(
        f"\nECE <= {TARGET} of {n} group-months: "
        + ", ".join(f"{name} {int((a[:, i + 1] <= TARGET).sum())}" for i, name in enumerate(names))
    )
    print("mean ECE: " + ", ".join(f"{name} {a[:, i + 1].mean():.4f}" for i, name in enumerate(names)))
    miss = a[:, 1] > TARGET
    for lo, hi in ((0.0, 0.01), (0.01, 0.02), (0.02, 0.03), (0.03, 1.0)):
        band = (abs(a[:, 0]) >= lo) & (abs(a[:, 0]) < hi)
        print(
            f"abs base-rate shift in [{lo}, {hi}): {int(band.sum())} group-months, "
            f"served misses {int(miss[band].sum())}"
        )


if __name__ == "__main__":
    main()
