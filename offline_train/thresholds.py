"""What a promotion does to a campaign's threshold: reliability curves and segment sizes, old model vs new.

Marketing picks a threshold per campaign ("customers with score >= 0.3").
When a new model replaces the old one, the same threshold can select a
different number of customers with a different precision. This report shows,
on one evaluation slice scored by both models, the reliability curve of each
(``offline_train.metrics.calibration_curve``, scikit-learn's bins) and, at
thresholds 0.1 ... 0.9: how many customers each model selects, the precision
its scores promise (their mean) and the precision observed on the slice.

>>> r = threshold_report("coffee", [0, 1, 1, 0], [0.2, 0.6, 0.4, 0.1], [0.05, 0.9, 0.7, 0.3], 1, 2, "2017-05-01")
>>> [(t.threshold, t.size_before, t.size_after) for t in r.thresholds][:3]
[(0.1, 4, 3), (0.2, 3, 3), (0.3, 2, 3)]
>>> r.thresholds[2].observed_after
0.6666666666666666
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from offline_train.metrics import calibration_curve

THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))


@dataclass(frozen=True)
class ThresholdRow:
    """One threshold, before (old model) and after (new model); precision NaN for an empty segment."""

    threshold: float
    size_before: int | None
    size_after: int
    expected_before: float | None
    expected_after: float
    observed_before: float | None
    observed_after: float


@dataclass(frozen=True)
class ThresholdReport:
    """Old vs new model of one group on one slice."""

    group: str
    old_version: int | None
    new_version: int
    slice_at: str
    n: int
    base_rate: float
    curve_before: list[tuple[float, float, int]] | None
    curve_after: list[tuple[float, float, int]]
    thresholds: list[ThresholdRow] = field(default_factory=list)


def _at(labels: np.ndarray, probs: np.ndarray, t: float) -> tuple[int, float, float]:
    sel = probs >= t
    n = int(sel.sum())
    if not n:
        return 0, float("nan"), float("nan")
    return n, float(probs[sel].mean()), float(labels[sel].mean())


def threshold_report(
    group: str,
    labels: np.ndarray | list,
    old_probs: np.ndarray | list | None,
    new_probs: np.ndarray | list,
    old_version: int | None,
    new_version: int,
    slice_at: str,
) -> ThresholdReport:
    """The report for one group from the slice's labels and both models' probabilities (``old_probs`` None: none)."""
    y = np.asarray(labels, dtype=np.float64)
    new = np.asarray(new_probs, dtype=np.float64)
    old = None if old_probs is None else np.asarray(old_probs, dtype=np.float64)
    rows = []
    for t in THRESHOLDS:
        na, ea, oa = _at(y, new, t)
        nb, eb, ob = _at(y, old, t) if old is not None else (None, None, None)
        rows.append(ThresholdRow(t, nb, na, eb, ea, ob, oa))
    return ThresholdReport(
        group,
        old_version,
        new_version,
        slice_at,
        len(y),
        float(y.mean()) if len(y) else float("nan"),
        calibration_curve(y, old) if old is not None else None,
        calibration_curve(y, new),
        rows,
    )


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_report(r: ThresholdReport) -> list[str]:
    """The report as text lines (what `propstream train` and `propstream models promote` print)."""
    old = f"v{r.old_version}" if r.old_version is not None else "none"
    out = [
        f"  {r.group}: {old} -> v{r.new_version} on the slice at {r.slice_at} ({r.n:,} customers, "
        f"base rate {r.base_rate:.4f})"
    ]
    for name, curve in (("before", r.curve_before), ("after", r.curve_after)):
        if curve is None:
            continue
        cells = "  ".join(f"{p:.3f}:{o:.3f}/{c}" for p, o, c in curve)
        out.append(f"    reliability {name} (predicted:observed/customers): {cells}")
    out.append("    threshold  size before -> after  expected precision before -> after  observed before -> after")
    for t in r.thresholds:
        size_b = "-" if t.size_before is None else str(t.size_before)
        out.append(
            f"    >= {t.threshold:.1f}  size {size_b} -> {t.size_after}  expected {_f(t.expected_before)} -> "
            f"{_f(t.expected_after)}  observed {_f(t.observed_before)} -> {_f(t.observed_after)}"
        )
    return out
