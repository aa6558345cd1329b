"""Isotonic and Platt calibration (models/calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.calibration import apply_calibration, fit_isotonic, fit_platt
from schemas.cards import Calibration


def ece(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error over equal-width bins."""
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return total


scores = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60)


@st.composite
def data(draw):
    xs = draw(scores)
    # coarse scores so ties are common
    if draw(st.booleans()):
        xs = [round(x, 1) for x in xs]
    ys = draw(st.lists(st.integers(0, 1), min_size=len(xs), max_size=len(xs)))
    return xs, ys


@settings(max_examples=150, deadline=None)
@given(data())
def test_fit_is_non_decreasing_and_within_unit_interval(d):
    xs, ys = d
    cal = fit_isotonic(xs, ys)
    assert isinstance(cal, Calibration) and cal.method == "isotonic"
    assert len(cal.x) == len(cal.y) >= 1
    assert all(a <= b for a, b in zip(cal.x, cal.x[1:], strict=False))
    assert all(a <= b for a, b in zip(cal.y, cal.y[1:], strict=False))
    assert all(0 <= v <= 1 for v in cal.y)
    grid = np.linspace(-0.5, 1.5, 201)
    out = apply_calibration(cal, grid)
    assert out.shape == grid.shape
    assert ((out >= 0) & (out <= 1)).all()
    assert (np.diff(out) >= -1e-12).all()


@settings(max_examples=150, deadline=None)
@given(data())
def test_knots_within_label_range_and_bracket_the_mean(d):
    # PAV pools preserve totals: the count-weighted knot means equal the label mean.
    xs, ys = d
    cal = fit_isotonic(xs, ys)
    fitted = apply_calibration(cal, cal.x)
    assert min(fitted) >= min(ys) - 1e-12 and max(fitted) <= max(ys) + 1e-12
    assert cal.y[0] <= np.mean(ys) + 1e-12 <= cal.y[-1] + 2e-12


def test_already_monotone_labels_are_reproduced():
    cal = fit_isotonic([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    assert cal.y == (0.0, 1.0)
    assert cal.x == pytest.approx((0.15, 0.35))
    np.testing.assert_allclose(apply_calibration(cal, [0.0, 0.15, 0.25, 0.35, 1.0]), [0, 0, 0.5, 1, 1])


def test_decreasing_labels_pool_to_the_mean():
    cal = fit_isotonic([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0])
    assert cal.y == (0.5,)
    np.testing.assert_allclose(apply_calibration(cal, [0.0, 0.25, 1.0]), 0.5)


def test_input_order_does_not_matter_for_distinct_scores():
    rng = np.random.default_rng(1)
    x = rng.random(200)
    y = (rng.random(200) < x).astype(int)
    perm = rng.permutation(200)
    a, b = fit_isotonic(x, y), fit_isotonic(x[perm], y[perm])
    assert a.x == pytest.approx(b.x) and a.y == pytest.approx(b.y)


def test_calibration_fixes_a_miscalibrated_score():
    rng = np.random.default_rng(42)
    p_fit, p_test = rng.random(20_000), rng.random(20_000)
    y_fit = (rng.random(20_000) < p_fit**2).astype(int)
    y_test = (rng.random(20_000) < p_test**2).astype(int)
    cal = fit_isotonic(p_fit, y_fit)
    calibrated = apply_calibration(cal, p_test)
    raw_ece, cal_ece = ece(p_test, y_test), ece(calibrated, y_test)
    assert raw_ece > 0.12  # ~ E[p - p^2] = 1/6
    assert cal_ece < 0.03
    assert cal_ece < raw_ece / 5
    # and it recovers the true curve p -> p^2
    grid = np.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(apply_calibration(cal, grid), grid**2, atol=0.05)


@pytest.mark.parametrize("labels", [[0, 1], [1, 0]])
def test_tied_scores_get_their_pooled_rate(labels):
    # Two customers with the same raw score, one positive: P = 0.5 whichever comes first.
    cal = fit_isotonic([0.5, 0.5], labels)
    assert apply_calibration(cal, [0.5])[0] == pytest.approx(0.5)


def test_tied_scores_independent_of_input_order():
    # Same data set (four customers at 0.5, one of them positive), rows in another order.
    x = [0.2, 0.5, 0.5, 0.5, 0.5, 0.8]
    y1 = [0, 0, 0, 0, 1, 1]
    y2 = [0, 1, 0, 0, 0, 1]
    a = apply_calibration(fit_isotonic(x, y1), [0.2, 0.5, 0.8])
    b = apply_calibration(fit_isotonic(x, y2), [0.2, 0.5, 0.8])
    assert b[1] == pytest.approx(0.25)
    np.testing.assert_allclose(a, b)


def test_all_scores_tied():
    cal = fit_isotonic([0.3] * 4, [1, 0, 1, 1])
    assert apply_calibration(cal, [0.0, 0.3, 1.0]) == pytest.approx([0.75] * 3)


def test_constant_labels():
    assert fit_isotonic([0.1, 0.9], [1, 1]).y == (1.0,)
    assert apply_calibration(fit_isotonic([0.1, 0.9], [0, 0]), [0.5])[0] == 0.0


@pytest.mark.parametrize(("x", "y"), [([], []), ([0.1, 0.2], [1]), ([[0.1]], [1, 0])])
def test_bad_shapes_raise(x, y):
    with pytest.raises(ValueError, match="fit_isotonic"):
        fit_isotonic(x, y)


def naive_pav(xs, ys) -> tuple[list[float], list[float]]:
    """Pool any adjacent pair of blocks out of order until the rates strictly increase; (mean x, rate) per block."""
    blocks = [  # [sum of labels, rows, sum of scores]
        [sum(y for xx, y in zip(xs, ys, strict=True) if xx == x), xs.count(x), x * xs.count(x)] for x in sorted(set(xs))
    ]
    merged = True
    while merged:
        merged = False
        for i in range(len(blocks) - 1):
            (s1, c1, _), (s2, c2, _) = blocks[i], blocks[i + 1]
            if s1 / c1 >= s2 / c2:
                blocks[i] = [a + b for a, b in zip(blocks[i], blocks.pop(i + 1), strict=True)]
                merged = True
                break
    return [sx / c for _, c, sx in blocks], [s / c for s, c, _ in blocks]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 1)), min_size=1, max_size=40))
def test_isotonic_knots_are_the_pooled_blocks(rows):
    xs, ys = [x / 20 for x, _ in rows], [y for _, y in rows]
    cal = fit_isotonic(xs, ys)
    want_x, want_y = naive_pav(xs, ys)
    assert cal.x == pytest.approx(want_x, abs=1e-12)
    assert cal.y == pytest.approx(want_y, abs=1e-12)
    # one knot per block: the rates strictly increase, and there are no more knots than distinct scores
    assert all(a < b for a, b in zip(cal.y, cal.y[1:], strict=False))
    assert len(cal.x) <= len(set(xs))


def test_isotonic_pools_a_violating_run_by_hand():
    # 0.2 -> 1 then 0.3, 0.4 -> 0 violate order: pooled to 1/3 at their mean score 0.3; 0.5, 0.6 tie at rate 1.
    cal = fit_isotonic([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0, 1, 0, 0, 1, 1])
    assert cal.x == pytest.approx((0.1, 0.3, 0.55))
    assert cal.y == pytest.approx((0.0, 1 / 3, 1.0))


def test_isotonic_map_stays_small():
    rng = np.random.default_rng(7)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p**2).astype(int)
    cal = fit_isotonic(p, y)
    assert len(cal.x) <= 150  # 20,000 distinct scores, a few dozen blocks


def logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1 - p))


@pytest.mark.parametrize(("a", "b"), [(1.0, 0.0), (1.7, -0.4), (0.5, 1.2)])
def test_platt_recovers_a_logistic_model(a, b):
    rng = np.random.default_rng(3)
    z = rng.normal(-0.5, 1.5, 40_000)
    raw = 1 / (1 + np.exp(-z))
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(a * z + b)))).astype(int)
    cal = fit_platt(raw, y)
    assert cal.method == "platt"
    # the knots lie on one line in logit space: its slope and intercept are the fitted a, b
    slope, intercept = np.polyfit(logit(cal.x), logit(cal.y), 1)
    np.testing.assert_allclose(logit(cal.y), slope * logit(cal.x) + intercept, atol=1e-6)
    assert slope == pytest.approx(a, abs=0.06)
    assert intercept == pytest.approx(b, abs=0.06)


def test_platt_slope_is_never_negative():
    rng = np.random.default_rng(5)
    raw = rng.random(2_000)
    y = (rng.random(2_000) < 1 - raw).astype(int)  # higher raw score, fewer positives
    cal = fit_platt(raw, y)
    assert np.ptp(cal.y) == 0.0
    out = apply_calibration(cal, np.linspace(0, 1, 11))
    assert (np.diff(out) == 0).all()


def test_platt_on_one_class_is_that_class():
    assert set(apply_calibration(fit_platt([0.2, 0.5, 0.7], [1, 1, 1]), [0.0, 0.5, 1.0])) == {1.0}
    assert set(apply_calibration(fit_platt([0.2, 0.5, 0.7], [0, 0, 0]), [0.0, 0.5, 1.0])) == {0.0}


def test_platt_map_is_n_knots_long():
    rng = np.random.default_rng(9)
    raw = rng.random(10_000)
    y = (rng.random(10_000) < raw).astype(int)
    assert len(fit_platt(raw, y).x) == 201
    small = fit_platt(raw, y, n_knots=11)
    assert len(small.x) == len(small.y) == 11
    assert small.x[0] == pytest.approx(raw.min()) and small.x[-1] == pytest.approx(raw.max())
    assert len(fit_platt([0.4] * 6, [0, 1, 0, 1, 1, 0]).x) == 1


def test_platt_separable_slice_stays_finite_and_increasing():
    cal = fit_platt([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0, 0, 0, 1, 1, 1])
    assert all(np.isfinite(cal.y)) and all(0 <= v <= 1 for v in cal.y)
    assert cal.y[0] < 0.01 and cal.y[-1] > 0.99
    assert all(a <= b for a, b in zip(cal.y, cal.y[1:], strict=False))


@pytest.mark.parametrize(("x", "y"), [([], []), ([0.1, 0.2], [1])])
def test_platt_bad_shapes_raise(x, y):
    with pytest.raises(ValueError, match="fit_platt"):
        fit_platt(x, y)
