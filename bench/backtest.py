"""Rolling-origin backtest on The Complete Journey: ROC AUC and ECE per group and test month.

    nice python bench/backtest.py [--data-dir DIR] [--months 2017-07-01,...,2017-12-01] [--groups g,...]
                                  [--out FILE.md] [--cache DIR] [--register DIR]

For each test month M the training plan is the one ``propstream train`` would
fit to events that end one label horizon after M (``TrainPlan.fit``): training
cutoffs on the 1st and 15th whose labels close before the calibration cutoff,
Platt calibration on the month before M, test at M. Every feature at a cutoff
T comes from events at or before T and every training or calibration label
from (T, T + horizon] with T + horizon <= M, so each month's model sees only
data before M. The test labels at M are the purchases of (M, M + horizon].

One replay through the stream's state machine (``build_examples``) builds the
examples of every cutoff of every month at once; each month then trains every
group with ``train_group`` (the code ``propstream train`` runs, no registry).

Prints a Markdown table (one row per group, AUC / ECE per month), the share of
group-months with ECE <= 0.03 and the five reference AUC floors at the last
month. Progress goes to stderr. ``--out`` also writes the table to a file
after each month, so an interrupted run keeps the finished months.

``--cache DIR`` keeps the replayed examples (``examples.npz``, reused when
they hold every cutoff asked for and come from the same events file and
feature layout) and each XGBoost booster under its ``booster_fingerprint``
(the training rows, feature names, parameters and rounds it was fitted on:
an equal fingerprint is an equal booster). A second run, e.g. after a change
of calibration, then only calibrates and evaluates.

``--register DIR`` also registers the last month's models as production in
``DIR/models`` (a registry of their own), so ``bench/model_quality.py
--data-dir DIR`` prints their cards: at 2017-12-01 these are the models
``propstream train`` fits to the whole Complete Journey (same plan, same
code), without a second replay.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import xgboost as xgb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import complete_journey
from models.registry import ModelRegistry
from offline_train.dataset import Examples, build_examples, to_ms
from offline_train.train import TrainPlan, booster_fingerprint, fit_booster, train_group
from propstream import app
from schemas.features import FeatureSpec
from schemas.settings import Settings
from stream.state import StateConfig

REFERENCE = {"soft_drinks": 0.831, "beef": 0.835, "coffee_tea": 0.846, "baby": 0.857, "summer_grilling": 0.807}
MONTHS = ("2017-07-01", "2017-08-01", "2017-09-01", "2017-10-01", "2017-11-01", "2017-12-01")
ECE_TARGET = 0.03


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def month_plan(first_event: datetime, month: datetime, settings: Settings) -> TrainPlan:
    """The plan ``propstream train`` fits to data ending one label horizon after ``month`` (tests at ``month``)."""
    plan = TrainPlan.fit(first_event, month + timedelta(days=settings.train.label_horizon_days), settings.train)
    if plan.test != month:
        msg = f"the plan for {month.date()} tests at {plan.test}; pick month starts"
        raise SystemExit(msg)
    return plan


def render(results: dict[tuple[str, str], dict[str, float]], groups: list[str], months: list[str]) -> str:
    """Markdown: one row per group, ROC AUC / ECE per month, then the summary lines."""
    head = "| group | " + " | ".join(f"{m[:7]} AUC / ECE" for m in months) + " |"
    lines = [head, "|---|" + "---|" * len(months)]
    for g in groups:
        cells = []
        for m in months:
            r = results.get((g, m))
            cells.append("" if r is None else f"{r['roc_auc']:.3f} / {r['ece']:.3f}")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    eces = [r["ece"] for r in results.values() if not math.isnan(r["ece"])]
    ok = sum(e <= ECE_TARGET for e in eces)
    lines.append("")
    if eces:
        lines.append(
            f"ECE <= {ECE_TARGET} on {ok} of {len(eces)} group-months done ({ok / len(eces):.0%}); "
            f"{len(results)} of {len(groups) * len(months)} group-months done"
        )
    last = months[-1]
    floors = []
    for g, ref in REFERENCE.items():
        r = results.get((g, last))
        if r is not None:
            mark = "met" if r["roc_auc"] >= ref else "MISSED"
            floors.append(f"{g} {r['roc_auc']:.3f} vs {ref:.3f} {mark}")
    if floors:
        lines.append(f"reference AUC floors at {last}: " + "; ".join(floors))
    return "\n".join(lines)


def _source_key(events: Path, spec: FeatureSpec, settings: Settings) -> str:
    """What the examples depend on besides the cutoffs: the events file, the feature layout, the labels."""
    st = events.stat()
    what = [events.name, st.st_size, st.st_mtime_ns, list(spec.names)]
    what += [settings.train.label_horizon_days, list(settings.train.label_types)]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def load_examples(cache: Path, key: str, cutoffs: list[datetime]) -> Examples | None:
    """The cached examples if they come from ``key`` and hold every cutoff (rows of other cutoffs are kept)."""
    meta, data = cache / "examples.json", cache / "examples.npz"
    if not (meta.exists() and data.exists()):
        return None
    doc = json.loads(meta.read_text())
    if doc.get("source") != key or not {to_ms(c) for c in cutoffs} <= set(doc.get("cutoffs_ms", [])):
        return None
    with np.load(data, allow_pickle=False) as z:
        return Examples(cutoffs=z["cutoffs"], users=z["users"].tolist(), x=z["x"], labels=z["labels"])


def save_examples(cache: Path, key: str, ex: Examples) -> None:
    """Write the examples and their key (the key last: a half-written cache is never reused)."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "examples.json").unlink(missing_ok=True)
    with (cache / "examples.npz").open("wb") as f:
        np.savez(f, cutoffs=ex.cutoffs, users=np.array(ex.users, dtype=str), x=ex.x, labels=ex.labels)
    cutoffs = sorted({int(c) for c in np.unique(ex.cutoffs)})
    (cache / "examples.json").write_text(json.dumps({"source": key, "cutoffs_ms": cutoffs}))


def cached_booster(cache: Path | None, spec: FeatureSpec, group: str, ex: Examples, plan: TrainPlan) -> xgb.Booster:
    """``fit_booster``, or the booster saved under the same ``booster_fingerprint``."""
    if cache is None:
        return fit_booster(spec, group, ex, plan)
    path = cache / "boosters" / f"{group}-{booster_fingerprint(spec, group, ex, plan)[:16]}.ubj"
    if path.exists():
        booster = xgb.Booster()
        booster.load_model(str(path))
        return booster
    booster = fit_booster(spec, group, ex, plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.ubj")
    booster.save_model(str(tmp))
    tmp.replace(path)
    return booster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="propstream-data")
    ap.add_argument("--months", default=",".join(MONTHS), help="comma-separated test months (month starts)")
    ap.add_argument("--groups", default="", help="comma-separated groups (default all)")
    ap.add_argument(
        "--first",
        default=",".join(REFERENCE),
        help="train these groups first, newest month first (default the five reference groups), then the rest",
    )
    ap.add_argument("--out", default="", help="also write the Markdown table here after each month")
    ap.add_argument("--cache", default="", help="keep examples and boosters here and reuse them (see above)")
    ap.add_argument("--register", default="", help="register the last month's models in DIR/models (see above)")
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    cache = Path(args.cache) if args.cache else None
    settings, records, events = complete_journey(data_dir)
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog)
    first = datetime.fromtimestamp(min(r.ts_ms for r in records) / 1000, tz=UTC)
    months = sorted(m.strip() for m in args.months.split(",") if m.strip())
    groups = [g for g in args.groups.split(",") if g] or list(spec.groups)
    plans = {m: month_plan(first, datetime.fromisoformat(m).replace(tzinfo=UTC), settings) for m in months}
    cutoffs = sorted({c for p in plans.values() for c in p.all_cutoffs()})
    t0 = time.monotonic()
    key = _source_key(events, spec, settings)
    ex = load_examples(cache, key, cutoffs) if cache is not None else None
    if ex is not None:
        _err(f"{len(ex.users):,} examples from {cache}")
    else:
        n_cut = len(cutoffs)
        _err(f"replaying {len(records):,} events for {n_cut} cutoffs ({cutoffs[0].date()} .. {cutoffs[-1].date()})")
        ex = build_examples(
            records,
            StateConfig.build(spec),
            catalog,
            cutoffs,
            settings.train.label_horizon_days,
            settings.train.label_types,
        )
        _err(f"{len(ex.users):,} examples in {time.monotonic() - t0:.0f} s")
        if cache is not None:
            save_examples(cache, key, ex)
    results: dict[tuple[str, str], dict[str, float]] = {}
    first_groups = [g for g in args.first.split(",") if g in groups]
    rest = [g for g in groups if g not in first_groups]
    # The reference groups' newest month first: an interrupted run still has the figures that matter most.
    order = [(m, g) for m in reversed(months) for g in first_groups] + [(m, g) for m in reversed(months) for g in rest]
    registry = ModelRegistry(Path(args.register) / "models") if args.register else None
    for m, g in order:
        t1 = time.monotonic()
        booster = cached_booster(cache, spec, g, ex, plans[m])
        if registry is not None and m == months[-1]:
            artifact = train_group(spec, g, ex, plans[m], version=registry.next_version(g), booster=booster)
            registry.register(artifact)
            registry.promote(g, artifact.card.version, reason="bench/backtest.py --register")
        else:
            artifact = train_group(spec, g, ex, plans[m], version=1, booster=booster)
        met = artifact.card.metrics
        results[(g, m)] = met
        _err(f"{m} {g:<22} auc={met['roc_auc']:.3f} ece={met['ece']:.3f} ({time.monotonic() - t1:.0f} s)")
        if args.out:
            Path(args.out).write_text(render(results, groups, months) + "\n")
    print(render(results, groups, months))


if __name__ == "__main__":
    main()
