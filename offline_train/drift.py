"""Model monitoring arithmetic: matured labels of served scores, per-bucket series, drift detectors, live calibration.

Pure functions over arrays (no store): ``offline_train.monitor`` reads
``score_history`` and the events archive, calls these, and writes the rows.

- A served score (customer u, group g, as-of t) *matures* once the label
  horizon H has passed after t; its realised outcome is the training label:
  a label-type event of u in g within (t, t + H] (``matured_labels``).
- Per time bucket (a day by default) a group has a mean served score and,
  once matured, a realised rate; each series is fed in time order to a river
  drift detector (``detect``). A detection is a drift event.
- Live calibration: over a rolling window of matured scores, predicted vs
  realised per probability decile (the bins of ``offline_train.metrics``) and
  the window's ECE (``calibration_windows``).

Everything is a function of event time (as-of times and event timestamps),
never the wall clock, so the same store gives the same rows.

>>> labels = matured_labels(
...     score_users=np.array([0, 0, 1]), score_ms=np.array([0, 50, 0]),
...     buy_users=np.array([0]), buy_ms=np.array([40]), horizon_ms=30)
>>> labels.tolist()  # u0 bought at 40: inside (0, 30]? no; (50, 80]? no. u1 never bought.
[False, False, False]
>>> matured_labels(np.array([0, 0]), np.array([10, 40]), np.array([0]), np.array([40]), 30).tolist()
[True, False]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from offline_train.metrics import calibration_curve, expected_calibration_error

Detector = Literal["adwin", "page_hinkley"]


def matured_labels(
    score_users: np.ndarray,
    score_ms: np.ndarray,
    buy_users: np.ndarray,
    buy_ms: np.ndarray,
    horizon_ms: int,
) -> np.ndarray:
    """Whether each score's customer had a label event in (as_of, as_of + horizon]; users are integer codes.

    One sorted key per label event (user, time) and a binary search per
    score: the next label event of the same user after the score.
    """
    if len(score_ms) == 0:
        return np.zeros(0, dtype=bool)
    if len(buy_ms) == 0:
        return np.zeros(len(score_ms), dtype=bool)
    lo = int(min(score_ms.min(), buy_ms.min()))
    span = int(max(score_ms.max(), buy_ms.max())) - lo + horizon_ms + 1  # > any offset: users never mix
    keys = np.sort(buy_users.astype(np.int64) * span + (buy_ms.astype(np.int64) - lo))
    start = score_users.astype(np.int64) * span + (score_ms.astype(np.int64) - lo)
    nxt = np.searchsorted(keys, start, side="right")
    found = nxt < len(keys)
    out = np.zeros(len(score_ms), dtype=bool)
    out[found] = keys[nxt[found]] <= start[found] + horizon_ms
    return out


@dataclass(frozen=True)
class BucketSeries:
    """One statistic per time bucket, in time order: bucket start (ms), value, rows behind it."""

    starts: np.ndarray
    values: np.ndarray
    rows: np.ndarray


def bucket_means(ms: np.ndarray, values: np.ndarray, bucket_ms: int, min_rows: int = 1) -> BucketSeries:
    """Mean of ``values`` per bucket of ``ms`` (floor to ``bucket_ms``); buckets with fewer than ``min_rows`` dropped.

    >>> s = bucket_means(np.array([0, 5, 12, 13]), np.array([1.0, 0.0, 1.0, 1.0]), 10)
    >>> s.starts.tolist(), s.values.tolist(), s.rows.tolist()
    ([0, 10], [0.5, 1.0], [2, 2])
    """
    if len(ms) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return BucketSeries(empty, np.zeros(0), empty)
    b = (ms.astype(np.int64) // bucket_ms) * bucket_ms
    starts, inverse, counts = np.unique(b, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=values.astype(np.float64), minlength=len(starts))
    keep = counts >= min_rows
    return BucketSeries(starts[keep], (sums / counts)[keep], counts[keep])


@dataclass(frozen=True)
class Detection:
    """A detector's alarm: the bucket whose value tripped it, that value, and the detector's estimate after it."""

    bucket_ms: int
    value: float
    rows: int
    estimate: float


def _detector(kind: Detector, delta: float, threshold: float) -> Any:
    from river import drift

    if kind == "adwin":
        # clock=1: look for a change after every row (river's default looks every 32 rows).
        return drift.ADWIN(delta=delta, clock=1)
    return drift.PageHinkley(delta=delta, threshold=threshold, mode="both")


def detect(
    ms: np.ndarray,
    values: np.ndarray,
    bucket_ms: int,
    kind: Detector = "adwin",
    delta: float = 0.0001,
    threshold: float = 50.0,
) -> list[Detection]:
    """Feed ``values`` (rows in time order of ``ms``) to a fresh river detector; its alarms, one per bucket at most.

    Rows, not bucket means, go to the detector: ADWIN's bound needs many
    values (on daily means it noticed a halving only weeks later). A
    detection names the bucket of the row that tripped the detector, with
    that bucket's mean and row count. ``delta`` is ADWIN's confidence
    (smaller: fewer, surer alarms) or Page-Hinkley's tolerated change;
    ``threshold`` is Page-Hinkley's alarm level.

    >>> t = np.arange(400)
    >>> [d.bucket_ms for d in detect(t, np.r_[np.full(200, 0.5), np.full(200, 0.1)], bucket_ms=50)]
    [200]
    >>> detect(t, np.full(400, 0.5), bucket_ms=50)
    []
    """
    order = np.argsort(ms, kind="stable")
    ms, values = ms[order], values[order].astype(np.float64)
    series = bucket_means(ms, values, bucket_ms)
    at = {int(s): (float(v), int(n)) for s, v, n in zip(series.starts, series.values, series.rows, strict=True)}
    det = _detector(kind, delta, threshold)
    out: list[Detection] = []
    for t, v in zip(ms.tolist(), values.tolist(), strict=True):
        det.update(v)
        if det.drift_detected:
            start = (t // bucket_ms) * bucket_ms
            if out and out[-1].bucket_ms == start:
                continue
            mean, rows = at[start]
            estimate = float(det.estimation) if kind == "adwin" else float("nan")
            out.append(Detection(start, mean, rows, estimate))
    return out


@dataclass(frozen=True)
class CalibrationWindow:
    """Live calibration of one window of matured scores: ECE and its deciles (bin, predicted, realised, rows)."""

    end_ms: int
    rows: int
    ece: float
    predicted: float
    realised: float
    bins: tuple[tuple[int, float, float, int], ...]


def window_ends(first_ms: int, last_ms: int, window_ms: int, step_ms: int) -> Iterator[int]:
    """Ends of complete windows: multiples of ``step_ms`` with ``end - window >= first`` and ``end <= last``.

    Aligned to the epoch, so a later run (more data) repeats the earlier windows exactly.

    >>> list(window_ends(3, 40, 10, 5))
    [15, 20, 25, 30, 35, 40]
    """
    end = -(-(first_ms + window_ms) // step_ms) * step_ms
    while end <= last_ms:
        yield end
        end += step_ms


def calibration_windows(
    ms: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    first_ms: int,
    last_ms: int,
    window_ms: int,
    step_ms: int,
    n_bins: int = 10,
) -> list[CalibrationWindow]:
    """Calibration over every complete window [end - window, end) of scores whose labels matured by ``last_ms``."""
    order = np.argsort(ms, kind="stable")
    ms, probs, labels = ms[order], probs[order], labels[order]
    inner = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    out = []
    for end in window_ends(first_ms, last_ms, window_ms, step_ms):
        lo, hi = np.searchsorted(ms, end - window_ms, side="left"), np.searchsorted(ms, end, side="left")
        if hi <= lo:
            continue
        p, y = probs[lo:hi], labels[lo:hi]
        curve = calibration_curve(y, p, n_bins)
        bins = tuple((int(np.searchsorted(inner, pm)), pm, obs, n) for pm, obs, n in curve)
        out.append(
            CalibrationWindow(
                end, int(hi - lo), expected_calibration_error(y, p, n_bins), float(p.mean()), float(y.mean()), bins
            )
        )
    return out
