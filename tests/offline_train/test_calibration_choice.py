"""Which slices calibrate a model (``recent_calibration``), on synthetic data whose truth is known.

Every customer has a model score ``sigmoid(z)``; the true purchase
probability at cutoff t is ``sigmoid(z + b(t))``. A moving ``b`` is a base
rate that shifts over time. Platt calibration is fitted on the slices the
plan picks and judged by its ECE on a large test slice at the test cutoff.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from models.calibration import apply_calibration, fit_platt
from offline_train.metrics import expected_calibration_error
from offline_train.train import recent_calibration

TEST = datetime(2017, 12, 1, tzinfo=UTC)


def _slice(rng: np.random.Generator, n: int, intercept: float) -> tuple[np.ndarray, np.ndarray]:
    z = rng.normal(0.0, 1.2, n)
    raw = 1 / (1 + np.exp(-z))
    y = rng.random(n) < 1 / (1 + np.exp(-(z + intercept)))
    return raw, y


def _test_ece(rng: np.random.Generator, cuts: tuple[datetime, ...], n: int, intercept) -> float:
    pooled = [_slice(rng, n, intercept(c)) for c in cuts]
    cal = fit_platt(np.concatenate([r for r, _ in pooled]), np.concatenate([y for _, y in pooled]))
    raw, y = _slice(rng, 20_000, intercept(TEST))
    return expected_calibration_error(y, apply_calibration(cal, raw))


def _weeks_before_test(t: datetime) -> float:
    return (TEST - t) / timedelta(weeks=1)


def test_with_a_drifting_base_rate_the_slice_nearest_the_test_calibrates_best():
    def intercept(t: datetime) -> float:
        return -0.02 * _weeks_before_test(t)  # the base rate climbs week after week

    (latest,) = recent_calibration(TEST, 30, 1)
    assert latest + timedelta(days=30) == TEST  # its labels close exactly at the test cutoff
    older = latest - timedelta(days=61)  # the slice a plan two months staler would use
    rng = np.random.default_rng(7)
    near = np.mean([_test_ece(rng, (latest,), 3000, intercept) for _ in range(5)])
    far = np.mean([_test_ece(rng, (older,), 3000, intercept) for _ in range(5)])
    assert near < far - 0.02, (near, far)
    assert near < 0.03  # what is left is the shift over the last month


def test_with_a_stable_base_rate_pooling_recent_slices_lowers_the_noise():
    def intercept(t: datetime) -> float:
        return -0.5

    pooled = recent_calibration(TEST, 30, 4)
    assert len(pooled) == 4 and all(c + timedelta(days=30) <= TEST for c in pooled)
    rng = np.random.default_rng(11)
    one = np.mean([_test_ece(rng, pooled[-1:], 150, intercept) for _ in range(40)])
    four = np.mean([_test_ece(rng, pooled, 150, intercept) for _ in range(40)])
    assert four < one * 0.8, (four, one)


def test_pooling_cannot_undo_a_shift_after_the_last_slice():
    """What the backtest found: a base rate that moves after the calibration slices is not recalibrated away."""

    def intercept(t: datetime) -> float:
        return 0.0 if t < TEST else -0.4  # the test month alone drops

    rng = np.random.default_rng(3)
    for n_cal in (1, 4):
        assert _test_ece(rng, recent_calibration(TEST, 30, n_cal), 3000, intercept) > 0.03
