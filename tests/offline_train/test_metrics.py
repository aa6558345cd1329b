"""Card metrics (offline_train/metrics.py) against brute-force recounts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offline_train.metrics import (
    average_precision,
    brier,
    calibration_curve,
    evaluate,
    expected_calibration_error,
    roc_auc,
)


@st.composite
def scored(draw, max_size: int = 40):
    n = draw(st.integers(1, max_size))
    # scores on a coarse grid so that ties, also across classes, are common
    grid = draw(st.sampled_from([4, 10, 1000]))
    scores = [k / grid for k in draw(st.lists(st.integers(0, grid), min_size=n, max_size=n))]
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return labels, scores


def brute_auc(labels, scores) -> float:
    """P(score of a positive > score of a negative), ties 1/2, over all pairs."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def brute_ap(labels, scores) -> float:
    """Mean over positives of the precision among all rows scored at least as high (scikit-learn's ties)."""
    pairs = list(zip(labels, scores, strict=True))
    precisions = []
    for y, s in pairs:
        if y:
            above = [yy for yy, ss in pairs if ss >= s]
            precisions.append(sum(above) / len(above))
    return sum(precisions) / len(precisions)


def brute_curve(labels, probs, n_bins: int) -> list[tuple[float, float, int]]:
    """Bins [0, 1/n], (1/n, 2/n], ...: each probability goes to the first bin whose upper edge it does not pass."""
    edges = np.linspace(0, 1, n_bins + 1)
    members: dict[int, list[tuple[int, float]]] = {}
    for y, p in zip(labels, probs, strict=True):
        k = next(k for k in range(n_bins) if p <= edges[k + 1])
        members.setdefault(k, []).append((y, p))
    return [(sum(p for _, p in m) / len(m), sum(y for y, _ in m) / len(m), len(m)) for _, m in sorted(members.items())]


@settings(max_examples=200, deadline=None)
@given(scored())
def test_roc_auc_counts_pairs(d):
    labels, scores = d
    got = roc_auc(labels, scores)
    if 0 < sum(labels) < len(labels):
        assert got == pytest.approx(brute_auc(labels, scores), abs=1e-12)
    else:
        assert math.isnan(got)


@settings(max_examples=200, deadline=None)
@given(scored())
def test_average_precision_groups_tied_scores(d):
    labels, scores = d
    got = average_precision(labels, scores)
    if any(labels):
        assert got == pytest.approx(brute_ap(labels, scores), abs=1e-12)
    else:
        assert math.isnan(got)


@settings(max_examples=100, deadline=None)
@given(scored(), st.randoms(use_true_random=False))
def test_metrics_do_not_depend_on_row_order(d, rnd):
    labels, scores = d
    order = list(range(len(labels)))
    rnd.shuffle(order)
    shuffled = [labels[i] for i in order], [scores[i] for i in order]
    for metric in (roc_auc, average_precision):
        a, b = metric(labels, scores), metric(*shuffled)
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_average_precision_of_a_positive_tied_with_a_negative():
    # Ranking by row order would give the first row precision 1; one threshold at 0.5 gives 1/2.
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([1, 0, 1], [0.9, 0.5, 0.5]) == pytest.approx((1 + 2 / 3) / 2)


@settings(max_examples=100, deadline=None)
@given(scored())
def test_brier_is_mean_squared_error(d):
    labels, probs = d
    expected = sum((p - y) ** 2 for y, p in zip(labels, probs, strict=True)) / len(labels)
    assert brier(labels, probs) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(scored(), st.sampled_from([1, 3, 10]))
def test_calibration_curve_matches_a_recount(d, n_bins):
    labels, probs = d
    got = calibration_curve(labels, probs, n_bins)
    want = brute_curve(labels, probs, n_bins)
    assert [c for *_, c in got] == [c for *_, c in want]
    for (pm, obs, _), (wpm, wobs, _) in zip(got, want, strict=True):
        assert pm == pytest.approx(wpm, abs=1e-12) and obs == pytest.approx(wobs, abs=1e-12)
    assert sum(c for *_, c in got) == len(labels)


def test_calibration_bins_close_on_the_right():
    # 0.1 is the upper edge of the first of ten bins; 1.0 belongs to the last.
    assert calibration_curve([0, 1, 1], [0.1, 0.15, 1.0]) == [
        (0.1, 0.0, 1),
        (0.15, 1.0, 1),
        (1.0, 1.0, 1),
    ]


def test_expected_calibration_error_by_hand():
    # bin of 0.2: observed 1/2 (off by 0.3); bin of 0.8: observed 1 (off by 0.2); equal weights.
    assert expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.8, 0.8]) == pytest.approx(0.25)
    assert expected_calibration_error([0, 1], [0.5, 0.5]) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error([], []))


def test_evaluate_reports_every_card_metric():
    labels = np.array([0, 0, 1, 1, 0])
    probs = np.array([0.1, 0.4, 0.35, 0.8, 0.1])
    m = evaluate(labels, probs)
    assert set(m) == {"roc_auc", "average_precision", "brier", "ece", "distinct_predictions", "base_rate", "n"}
    assert m["roc_auc"] == pytest.approx(brute_auc(labels, probs))
    assert m["average_precision"] == pytest.approx(brute_ap(labels, probs))
    assert (m["distinct_predictions"], m["base_rate"], m["n"]) == (4.0, 0.4, 5.0)
    assert all(isinstance(v, float) for v in m.values())
