"""How much of each group's ECE is the shift of its base rate from the calibration slice to the test month.

    python bench/calibration_shift.py [--data-dir DIR]

Run after `make demo`. Rebuilds the calibration and test slices of the demo's
training plan by replay (about a minute), applies each production model, and
prints per group:

- the ECE as served (Platt fitted on the calibration slice; the card's figure);
- the ECE after moving every score by one constant in logit so that the mean
  score equals the test month's base rate: an oracle that reads the test
  labels, so it cannot be deployed; it shows what the shift alone costs;
- the ECE of isotonic calibration fitted on the same calibration slice.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.calibration import apply_calibration, fit_isotonic
from models.registry import ModelRegistry
from offline_train.dataset import build_examples, to_ms
from offline_train.metrics import expected_calibration_error
from offline_train.train import TrainPlan
from propstream import app, completejourney
from schemas.mapping import load_mapping
from schemas.settings import Settings
from stream.state import StateConfig


def shift_to_rate(probs: np.ndarray, rate: float) -> np.ndarray:
    """Add one constant to every logit so that the mean probability is ``rate`` (bisection)."""
    z = np.log(np.clip(probs, 1e-9, 1 - 1e-9) / (1 - np.clip(probs, 1e-9, 1 - 1e-9)))
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(z + mid)))) < rate else (lo, mid)
    return 1 / (1 + np.exp(-(z + (lo + hi) / 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    events, catalog_file = completejourney.prepare(data_dir)
    settings = Settings(data_dir=data_dir, catalog_file=catalog_file, groups_file=completejourney.GROUPS_FILE)
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog)
    records, _ = app.read_file_records([events], load_mapping(completejourney.MAPPING_FILE))
    first, last = (datetime.fromtimestamp(t / 1000, tz=UTC) for t in (records[0].ts_ms, records[-1].ts_ms))
    plan = TrainPlan.fit(first, last)
    assert plan.test is not None
    cal_cut, test_cut = plan.calibrate[0], plan.test
    ex = build_examples(records, StateConfig.build(spec), catalog, [cal_cut, test_cut])
    cal, test = ex.at(to_ms(cal_cut)), ex.at(to_ms(test_cut))
    registry = ModelRegistry(settings.models_dir)
    print(f"calibration slice {cal_cut.date()} ({cal.sum():,} households), test {test_cut.date()} ({test.sum():,})\n")
    print(
        "| group | base rate, calibration | base rate, test | ECE as served "
        "| ECE, test intercept (oracle) | ECE, isotonic |"
    )
    print("|---|---|---|---|---|---|")
    served, oracle, iso = [], [], []
    for gi, group in enumerate(spec.groups):
        art = registry.load(group, registry.production_version(group) or 0)
        pos = art.input_positions(spec.index)
        y_cal, y_test = ex.labels[cal, gi], ex.labels[test, gi]
        raw_cal, raw_test = art.raw_scores(ex.x[cal][:, pos]), art.raw_scores(ex.x[test][:, pos])
        probs = apply_calibration(art.card.calibration, raw_test)
        served.append(expected_calibration_error(y_test, probs))
        oracle.append(expected_calibration_error(y_test, shift_to_rate(probs, float(y_test.mean()))))
        iso.append(expected_calibration_error(y_test, apply_calibration(fit_isotonic(raw_cal, y_cal), raw_test)))
        rates = f"{y_cal.mean():.3f} | {y_test.mean():.3f}"
        print(f"| {group} | {rates} | {served[-1]:.3f} | {oracle[-1]:.3f} | {iso[-1]:.3f} |")
    n = len(served)
    print(
        f"\nECE <= 0.03: {sum(e <= 0.03 for e in served)} of {n} as served, "
        f"{sum(e <= 0.03 for e in oracle)} of {n} with the test month's intercept (oracle), "
        f"{sum(e <= 0.03 for e in iso)} of {n} with isotonic calibration"
    )


if __name__ == "__main__":
    main()
