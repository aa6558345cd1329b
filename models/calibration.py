"""Isotonic calibration by pool-adjacent-violators, stored as a piecewise-linear map.

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

    Blocks of the PAV solution become knots at their mean raw score; between
    knots the map interpolates linearly, so nearby customers get distinct
    probabilities instead of a handful of steps.
    """
    x = np.asarray(raw, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        msg = f"fit_isotonic needs equal, non-empty arrays, got {x.shape} and {y.shape}"
        raise ValueError(msg)
    # Equal raw scores are one block from the start, so ties get their pooled rate.
    ux, inv = np.unique(x, return_inverse=True)
    counts_u = np.bincount(inv).astype(np.float64)
    sums_u = np.bincount(inv, weights=y)
    # Pool adjacent violators over blocks: (sum_y, count, sum_x).
    sums: list[float] = []
    counts: list[float] = []
    xs: list[float] = []
    for xi, si, ci in zip(ux, sums_u, counts_u, strict=True):
        sums.append(float(si))
        counts.append(float(ci))
        xs.append(float(xi) * ci)
        while len(sums) > 1 and sums[-2] / counts[-2] >= sums[-1] / counts[-1]:
            s, c, sx = sums.pop(), counts.pop(), xs.pop()
            sums[-1] += s
            counts[-1] += c
            xs[-1] += sx
    knots_x = [sx / c for sx, c in zip(xs, counts, strict=True)]
    knots_y = [s / c for s, c in zip(sums, counts, strict=True)]
    return Calibration(method="isotonic", x=tuple(knots_x), y=tuple(knots_y))


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
    # Newton-Raphson on the logistic log-likelihood, a tiny ridge keeps it finite
    # when the slice is separable or constant.
    a, b = 1.0, 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(a * z + b)))
        w = p * (1 - p)
        g = np.array([np.dot(z, p - y) + 1e-6 * a, np.sum(p - y) + 1e-6 * b])
        h = np.array([[np.dot(w, z * z) + 1e-6, np.dot(w, z)], [np.dot(w, z), np.sum(w) + 1e-6]])
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    a = max(a, 0.0)  # the map must not decrease
    zk = np.linspace(z.min(), z.max(), n_knots) if z.max() > z.min() else z[:1]
    knots_x = 1.0 / (1.0 + np.exp(-zk))
    knots_y = 1.0 / (1.0 + np.exp(-(a * zk + b)))
    return Calibration(method="platt", x=tuple(knots_x.tolist()), y=tuple(knots_y.tolist()))
