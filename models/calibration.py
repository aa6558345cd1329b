"""Isotonic and Platt calibration (fitted by scikit-learn), stored as a piecewise-linear map.

>>> cal = fit_isotonic([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
>>> apply_calibration(cal, [0.1, 0.4]).tolist()
[0.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.cards import Calibration


def fit_isotonic(raw: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> Calibration:
    """Fit a non-decreasing map raw score -> P(label=1).

    scikit-learn's ``IsotonicRegression`` pools adjacent violators (equal raw
    scores, and scores less than 1e-15 apart, are one block from the start,
    so ties get their pooled rate).
    Each block becomes one knot at its mean raw score; between knots the map
    interpolates linearly, so nearby customers get distinct probabilities
    instead of a handful of steps, and the map has at most one knot per block.
    """
    x = np.asarray(raw, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.shape != y.shape or x.size == 0 or x.ndim != 1:
        msg = f"fit_isotonic needs equal, non-empty 1-d arrays, got {x.shape} and {y.shape}"
        raise ValueError(msg)
    from sklearn.isotonic import IsotonicRegression  # fitting only: serving applies the stored curve

    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y)
    # The fitted step function keeps the first and last raw score of each block; blocks
    # have strictly increasing rates, so a block starts where the threshold's rate changes.
    starts = np.flatnonzero(np.r_[True, np.diff(iso.y_thresholds_) != 0])
    block_start_x, block_rate = iso.X_thresholds_[starts], iso.y_thresholds_[starts]
    # scikit-learn does not return the blocks' sizes: count each block's rows for its mean raw score.
    block = np.searchsorted(block_start_x, x, side="right") - 1
    knots_x = np.bincount(block, weights=x) / np.bincount(block)
    return Calibration(method="isotonic", x=tuple(knots_x.tolist()), y=tuple(block_rate.tolist()))


def apply_calibration(cal: Calibration, raw: Sequence[float] | np.ndarray) -> np.ndarray:
    """Map raw scores to calibrated probabilities (clamped at the end knots)."""
    return np.interp(np.asarray(raw, dtype=np.float64), cal.x, cal.y)


def fit_platt(raw: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, n_knots: int = 201) -> Calibration:
    """Fit ``P(label=1) = sigmoid(a * logit(raw) + b)`` (Platt scaling on the logit).

    Two parameters instead of one per PAV block, so the map is smooth and less
    sensitive to noise in the calibration slice. Stored as the same
    piecewise-linear map (``n_knots`` knots evenly spaced in logit between the
    smallest and largest raw score seen), so serving is unchanged.

    >>> cal = fit_platt([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9], [0, 0, 1, 0, 1, 0, 1, 1])
    >>> cal.method
    'platt'
    >>> p = apply_calibration(cal, [0.1, 0.5, 0.9]); bool(p[0] < p[1] < p[2])
    True
    """
    x = np.asarray(raw, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        msg = f"fit_platt needs equal, non-empty arrays, got {x.shape} and {y.shape}"
        raise ValueError(msg)
    eps = 1e-6
    z = np.log(np.clip(x, eps, 1 - eps) / (1 - np.clip(x, eps, 1 - eps)))
    if np.all(y == y[0]):
        # LogisticRegression needs both classes; the likelihood is then maximised by
        # a = 0 and the slice's rate (0 or 1), which sigmoid reaches only at b = +-inf.
        a, b = 0.0, float("inf") if y[0] > 0 else float("-inf")
    else:
        # Newton's method on the logistic log-likelihood; C=1e6 is a tiny ridge on the
        # slope that keeps it finite when the slice is separable.
        from sklearn.linear_model import LogisticRegression  # fitting only, like IsotonicRegression

        lr = LogisticRegression(C=1e6, solver="newton-cholesky", tol=1e-10, max_iter=100)
        lr.fit(z.reshape(-1, 1), y)
        a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    a = max(a, 0.0)  # the map must not decrease
    zk = np.linspace(z.min(), z.max(), n_knots) if z.max() > z.min() else z[:1]
    knots_x = 1.0 / (1.0 + np.exp(-zk))
    knots_y = 1.0 / (1.0 + np.exp(-(a * zk + b)))
    return Calibration(method="platt", x=tuple(knots_x.tolist()), y=tuple(knots_y.tolist()))
