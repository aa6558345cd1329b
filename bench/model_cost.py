"""Benchmark: model quality against scoring cost for cheaper XGBoost settings (issue #15).

    nice python bench/model_cost.py [--data-dir DIR] [--cache DIR] [--month 2017-12-01]
                                    [--configs NAME,...] [--groups g,...] [--rows N] [--repeat K]

Tree traversal dominated a stream refresh (BENCHMARKS.md §1b: 25 groups x
300 trees of depth 6, ~200 µs per customer); this benchmark chose the cheaper
default (§1c: 100 trees of depth 4). This trains every group of The Complete
Journey with each candidate setting on the plan ``propstream train`` fits for
the test month (``bench/backtest.py``'s ``month_plan``: training cutoffs on the
1st and 15th, Platt calibration on the month before, test on ``--month``),
with ``train_group`` (the trainer's own code), and measures on the test month
ROC AUC, ECE and Brier. Then it times each group's booster the way the stream
scores (``ModelArtifact.raw_scores``: float32 copy + one ``inplace_predict``,
one thread, ``models.scorer``) over the test month's real feature rows tiled
to ``--rows`` rows, and sums the groups: µs per customer refresh.

Prints a Markdown table (stdout), one row per setting: trees per group, mean
AUC and its change against the first setting, the smallest margin to the
five reference AUC floors (``bench/backtest.py``'s ``REFERENCE``), mean ECE,
mean Brier, µs per row per group and per refresh (all groups). Progress goes
to stderr.

Settings (``--configs``, in that order; default all; the first is the baseline):
``current`` is ``DEFAULT_PARAMS`` / ``DEFAULT_ROUNDS`` as they stand (depth
4, eta 0.1, 100 rounds); ``d6_eta0.03_r300`` is the default before §1c; the
others override ``max_depth``, ``eta`` and the rounds. ``*_es`` settings stop
early: up to their rounds, stopped when the log loss on the plan's
calibration slice (the month before the test month, after every training
label) has not improved for 30 rounds. That slice then also fits Platt's two
parameters, so an ``_es`` row is slightly optimistic on calibration; the test
month stays unseen.

``--cache DIR`` is the backtest's cache: the examples come from it (or are
replayed and written there), and each booster is kept under its
``booster_fingerprint`` (parameters and rounds included), so the
``current`` boosters are the backtest's own and a second run only evaluates
and times.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xgboost as xgb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.backtest import REFERENCE, _source_key, load_examples, month_plan, save_examples
from bench.common import complete_journey
from models.artifact import ModelArtifact
from offline_train.dataset import Examples, build_examples
from offline_train.train import (
    DEFAULT_PARAMS,
    DEFAULT_ROUNDS,
    TrainPlan,
    _rows,
    booster_fingerprint,
    booster_params,
    fit_booster,
    train_group,
)
from propstream import app
from schemas.features import FeatureSpec
from stream.state import StateConfig

EARLY_STOPPING_ROUNDS = 30


@dataclass(frozen=True)
class Setting:
    """One candidate: overrides of ``DEFAULT_PARAMS``, (most) rounds, and whether to stop early."""

    name: str
    params: dict[str, float | int | str] = field(default_factory=dict)
    rounds: int = DEFAULT_ROUNDS
    early_stop: bool = False

    def describe(self) -> str:
        """``depth 6, eta 0.03, 300 rounds`` (the effective values)."""
        p = {**DEFAULT_PARAMS, **self.params}
        stop = f", early stop on calibration slice ({EARLY_STOPPING_ROUNDS})" if self.early_stop else ""
        return f"depth {p['max_depth']}, eta {p['eta']}, {'<= ' if self.early_stop else ''}{self.rounds} rounds{stop}"


SETTINGS = (
    Setting("current"),
    Setting("d6_eta0.03_r300", {"max_depth": 6, "eta": 0.03}, 300),
    Setting("d6_eta0.1_r100", {"max_depth": 6, "eta": 0.1}, 100),
    Setting("d6_eta0.15_r60", {"max_depth": 6, "eta": 0.15}, 60),
    Setting("d4_eta0.03_r300", {"max_depth": 4, "eta": 0.03}, 300),
    Setting("d4_eta0.15_r60", {"max_depth": 4, "eta": 0.15}, 60),
    Setting("d3_eta0.1_r100", {"max_depth": 3, "eta": 0.1}, 100),
    Setting("d6_eta0.1_es", {"max_depth": 6, "eta": 0.1}, 300, early_stop=True),
    Setting("d4_eta0.1_es", {"max_depth": 4, "eta": 0.1}, 300, early_stop=True),
)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fit_early_stopped(spec: FeatureSpec, group: str, ex: Examples, plan: TrainPlan, s: Setting) -> xgb.Booster:
    """``fit_booster`` with early stopping on the plan's calibration slice; the booster cut to its best round."""
    names = list(spec.default_inputs(group))
    cols = np.array([spec.index[n] for n in names], dtype=np.intp)
    gi = spec.groups.index(group)
    tr, ca = _rows(ex, plan.train), _rows(ex, plan.calibrate)
    dtrain = xgb.DMatrix(ex.x[np.ix_(tr, cols)], label=ex.labels[tr, gi], feature_names=names)
    dcal = xgb.DMatrix(ex.x[np.ix_(ca, cols)], label=ex.labels[ca, gi], feature_names=names)
    booster = xgb.train(
        booster_params(ex, plan, s.params),
        dtrain,
        num_boost_round=s.rounds,
        evals=[(dcal, "calibration")],
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        verbose_eval=False,
    )
    return booster[: booster.best_iteration + 1]


def booster_for(
    cache: Path | None, spec: FeatureSpec, group: str, ex: Examples, plan: TrainPlan, s: Setting
) -> xgb.Booster:
    """The setting's booster for ``group``: from the cache under its fingerprint, or fitted (and cached)."""

    def fit() -> xgb.Booster:
        if s.early_stop:
            return fit_early_stopped(spec, group, ex, plan, s)
        return fit_booster(spec, group, ex, plan, s.params or None, s.rounds)

    if cache is None:
        return fit()
    fp = booster_fingerprint(spec, group, ex, plan, s.params or None, s.rounds)
    path = cache / "boosters" / f"{group}-{fp[:16]}{'-es' if s.early_stop else ''}.ubj"
    if path.exists():
        booster = xgb.Booster()
        booster.load_model(str(path))
        return booster
    booster = fit()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.ubj")
    booster.save_model(str(tmp))
    tmp.replace(path)
    return booster


def cpu_per_row(art: ModelArtifact, x: np.ndarray, repeat: int) -> float:
    """Fewest CPU seconds per row of ``raw_scores`` (float32 copy + one ``inplace_predict``) over ``repeat`` passes."""
    art.booster.set_param({"nthread": 1})
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        art.raw_scores(x)
        best = min(best, time.process_time() - t0)
    return best / len(x)


@dataclass
class Outcome:
    """One setting's figures over the groups."""

    setting: Setting
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> card metrics
    trees: dict[str, int] = field(default_factory=dict)
    seconds_per_row: dict[str, float] = field(default_factory=dict)


def render(outcomes: list[Outcome]) -> str:
    """The Markdown table, one row per setting; the first setting is the baseline of the AUC change."""
    head = (
        "| setting | trees per group (mean) | mean ROC AUC | vs first | min margin to the 5 floors | "
        "mean ECE | mean Brier | µs per row and group | µs per refresh (all groups) |"
    )
    lines = [head, "|---|" + "---|" * 8]
    base = float(np.mean([m["roc_auc"] for m in outcomes[0].metrics.values()])) if outcomes else 0.0
    for o in outcomes:
        aucs = [m["roc_auc"] for m in o.metrics.values()]
        margins = {g: o.metrics[g]["roc_auc"] - ref for g, ref in REFERENCE.items() if g in o.metrics}
        worst = min(margins, key=margins.__getitem__) if margins else ""
        margin = f"{margins[worst]:+.4f} ({worst})" if worst else ""
        per_row = sum(o.seconds_per_row.values()) * 1e6
        cells = [
            f"{o.setting.name}: {o.setting.describe()}",
            f"{np.mean(list(o.trees.values())):.0f}",
            f"{np.mean(aucs):.4f}",
            f"{np.mean(aucs) - base:+.4f}",
            margin,
            f"{np.mean([m['ece'] for m in o.metrics.values()]):.4f}",
            f"{np.mean([m['brier'] for m in o.metrics.values()]):.4f}",
            f"{per_row / max(1, len(o.seconds_per_row)):.2f}",
            f"{per_row:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def examples(data_dir: Path, cache: Path | None, month: str) -> tuple[FeatureSpec, Examples, TrainPlan]:
    """The feature spec, the examples (from the backtest cache if it holds them) and the month's plan."""
    settings, records, events = complete_journey(data_dir)
    first = datetime.fromtimestamp(min(r.ts_ms for r in records) / 1000, tz=UTC)
    plan = month_plan(first, datetime.fromisoformat(month).replace(tzinfo=UTC), settings)
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog)
    key = _source_key(events, spec, settings)
    ex = load_examples(cache, key, plan.all_cutoffs()) if cache is not None else None
    if ex is None:
        _err(f"replaying {len(records):,} events for {len(plan.all_cutoffs())} cutoffs")
        cfg = StateConfig.build(spec)
        ex = build_examples(
            records, cfg, catalog, plan.all_cutoffs(), settings.train.label_horizon_days, settings.train.label_types
        )
        if cache is not None:
            save_examples(cache, key, ex)
    return spec, ex, plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--cache", default="", help="the backtest's cache directory (examples and boosters)")
    ap.add_argument("--month", default="2017-12-01", help="test month (a month start)")
    ap.add_argument("--configs", default="", help="comma-separated setting names (default all; see above)")
    ap.add_argument("--groups", default="", help="comma-separated groups (default all)")
    ap.add_argument("--rows", type=int, default=20_000, help="rows each booster predicts when timed")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per booster (the fastest counts)")
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    cache = Path(args.cache) if args.cache else None
    wanted = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(wanted) - {s.name for s in SETTINGS})
    if unknown:
        msg = f"unknown setting(s) {unknown}; known: {[s.name for s in SETTINGS]}"
        raise SystemExit(msg)
    by_name = {s.name: s for s in SETTINGS}
    chosen = [by_name[n] for n in wanted] if wanted else list(SETTINGS)
    spec, ex, plan = examples(data_dir, cache, args.month)
    groups = [g for g in args.groups.split(",") if g] or list(spec.groups)
    te = _rows(ex, (plan.test,)) if plan.test is not None else np.zeros(0, dtype=bool)
    outcomes = []
    for s in chosen:
        o = Outcome(s)
        t0 = time.monotonic()
        for g in groups:
            booster = booster_for(cache, spec, g, ex, plan, s)
            art = train_group(spec, g, ex, plan, version=1, params=s.params or None, rounds=s.rounds, booster=booster)
            o.metrics[g] = art.card.metrics
            o.trees[g] = booster.num_boosted_rounds()
            cols = art.input_positions(spec.index)
            x = ex.x[np.ix_(te, cols)]
            x = np.tile(x, (-(-args.rows // len(x)), 1))[: args.rows]
            o.seconds_per_row[g] = cpu_per_row(art, x, args.repeat)
            m = art.card.metrics
            _err(f"  {s.name} {g:<20} trees={o.trees[g]} auc={m['roc_auc']:.4f} ece={m['ece']:.4f}")
        _err(f"{s.name}: {len(groups)} groups in {time.monotonic() - t0:.0f} s")
        outcomes.append(o)
        print(render(outcomes), file=sys.stderr, flush=True)
    print(render(outcomes))
    floors = "; ".join(
        f"{o.setting.name} " + ", ".join(f"{g} {o.metrics[g]['roc_auc']:.3f}" for g in REFERENCE if g in o.metrics)
        for o in outcomes
    )
    print(f"\nfloors ({', '.join(f'{g} {r}' for g, r in REFERENCE.items())}): {floors}")


if __name__ == "__main__":
    main()
