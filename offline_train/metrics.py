"""Model quality metrics: ranking, probability accuracy, calibration.

ROC AUC, average precision, Brier score and the calibration curve come from
scikit-learn; this module keeps the card's shapes (a float per metric, NaN
where a metric is undefined, and counts per calibration bin).

>>> round(roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 3)
0.75
>>> average_precision([1, 0, 1], [0.5, 0.5, 0.9])  # the tie at 0.5 is one threshold
0.8333333333333333
>>> average_precision([0, 1, 1], [0.5, 0.5, 0.9])  # so row order does not matter
0.8333333333333333
>>> calibration_curve([0, 0, 1, 1], [0.05, 0.15, 0.15, 0.95])
[(0.05, 0.0, 1), (0.15, 0.5, 2), (0.95, 1.0, 1)]
"""

from __future__ import annotations

import numpy as np
from sklearn.calibration import calibration_curve as _sk_calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def roc_auc(labels: np.ndarray | list, scores: np.ndarray | list) -> float:
    """Area under the ROC curve (tied scores count 1/2); NaN if only one class is present."""
    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def average_precision(labels: np.ndarray | list, scores: np.ndarray | list) -> float:
    """Average precision: sum over distinct scores of (recall step) x precision; NaN without positives.

    Customers with the same score form one threshold, as in scikit-learn, so
    the result does not depend on the order of the rows.
    """
    y = np.asarray(labels, dtype=bool)
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, np.asarray(scores, dtype=np.float64)))


def brier(labels: np.ndarray | list, probs: np.ndarray | list) -> float:
    """Mean squared error of probabilities."""
    return float(brier_score_loss(np.asarray(labels, dtype=bool), np.asarray(probs, dtype=np.float64)))


def calibration_curve(
    labels: np.ndarray | list, probs: np.ndarray | list, n_bins: int = 10
) -> list[tuple[float, float, int]]:
    """Per equal-width bin of ``probs`` (in [0, 1]): (mean predicted, observed rate, count); empty bins omitted.

    The bins are scikit-learn's (``strategy="uniform"``): ``[0, 1/n]`` then
    ``(k/n, (k+1)/n]``, so a probability exactly on an inner edge falls in the
    lower bin.
    """
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    if p.size == 0:
        return []
    observed, predicted = _sk_calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    # scikit-learn does not return the bin sizes (the weights of ECE and the card's curve);
    # count them with its own bin edges and rule (searchsorted on the inner edges).
    counts = np.bincount(np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p), minlength=n_bins)
    return [(float(pm), float(obs), int(c)) for pm, obs, c in zip(predicted, observed, counts[counts > 0], strict=True)]


def expected_calibration_error(labels: np.ndarray | list, probs: np.ndarray | list, n_bins: int = 10) -> float:
    """Count-weighted mean |predicted - observed| over equal-width bins; NaN for no rows."""
    # Not in scikit-learn: a weighted mean over the bins of calibration_curve.
    curve = calibration_curve(labels, probs, n_bins)
    n = sum(c for _, _, c in curve)
    return float(sum(abs(pm - obs) * c for pm, obs, c in curve) / n) if n else float("nan")


def evaluate(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """All card metrics for one evaluation slice."""
    return {
        "roc_auc": roc_auc(labels, probs),
        "average_precision": average_precision(labels, probs),
        "brier": brier(labels, probs),
        "ece": expected_calibration_error(labels, probs),
        "distinct_predictions": float(len(np.unique(probs))),
        "base_rate": float(np.mean(labels)),
        "n": float(len(labels)),
    }
