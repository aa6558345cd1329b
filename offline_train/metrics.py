"""Model quality metrics: ranking, probability accuracy, calibration.

>>> round(roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 3)
0.75
"""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray | list, scores: np.ndarray | list) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(labels: np.ndarray | list, scores: np.ndarray | list) -> float:
    """Average precision (area under the precision-recall step curve)."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    y_sorted = y[order]
    tp = np.cumsum(y_sorted)
    precision = tp / np.arange(1, len(y) + 1)
    return float(precision[y_sorted].sum() / y.sum())


def brier(labels: np.ndarray | list, probs: np.ndarray | list) -> float:
    """Mean squared error of probabilities."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    return float(np.mean((p - y) ** 2))


def calibration_curve(
    labels: np.ndarray | list, probs: np.ndarray | list, n_bins: int = 10
) -> list[tuple[float, float, int]]:
    """Per equal-width bin: (mean predicted, observed rate, count); empty bins omitted."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        m = bins == b
        if m.any():
            out.append((float(p[m].mean()), float(y[m].mean()), int(m.sum())))
    return out


def expected_calibration_error(labels: np.ndarray | list, probs: np.ndarray | list, n_bins: int = 10) -> float:
    """Count-weighted mean |predicted - observed| over equal-width bins."""
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
