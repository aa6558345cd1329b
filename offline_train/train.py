"""Per-group training, calibration, evaluation, registration and promotion.

XGBoost learns on earlier cutoffs, Platt calibration fits on a later one,
and the metrics on the card come from the last (test) cutoff. A candidate
replaces the production model unless it is worse on that same test slice
(``PromotionGate``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import xgboost as xgb

from models.artifact import FeatureMismatchError, ModelArtifact, ModelError
from models.calibration import apply_calibration, fit_platt
from models.registry import ModelRegistry
from offline_train.dataset import Examples, to_ms
from offline_train.metrics import calibration_curve, evaluate
from offline_train.slices import save_slice
from offline_train.thresholds import ThresholdReport, format_report, threshold_report
from schemas.cards import ModelCard
from schemas.errors import PropstreamError
from schemas.features import FeatureSpec
from schemas.settings import TrainSettings

log = logging.getLogger(__name__)

# 100 trees of depth 4 (eta 0.1): on The Complete Journey they rank and calibrate as well as the former
# 300 of depth 6 (eta 0.03) for a third of the tree traversal per refresh (BENCHMARKS.md 1c, README backtest).
DEFAULT_PARAMS: dict[str, float | int | str] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 4,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 100,
    "lambda": 5.0,
    "seed": 17,
    "nthread": 2,
}
DEFAULT_ROUNDS = 100


class TrainError(PropstreamError):
    """Training cannot be done as asked (too little data for the plan)."""


def _month_start(t: datetime) -> datetime:
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _day_start(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def recent_calibration(
    test: datetime, horizon_days: int, n: int, latest: datetime | None = None
) -> tuple[datetime, ...]:
    """The ``n`` calibration cutoffs nearest before ``test`` whose labels close by it, oldest first.

    The latest is ``latest`` (default ``test`` minus one horizon; the
    month-start plan passes the month start at or before that); the others
    are ``test`` minus whole weeks (the test cutoff's weekday), each before
    ``latest``. Pooled, they hold ``n`` times the rows of one slice (Platt's
    two parameters are less noisy) from the last few weeks only.
    ``bench/calibration_shift.py`` measured four against one: no gain on The
    Complete Journey (README, backtest), hence the default of one.

    >>> dec = datetime(2017, 12, 1, tzinfo=UTC)
    >>> [c.date().isoformat() for c in recent_calibration(dec, 30, 4)]
    ['2017-10-13', '2017-10-20', '2017-10-27', '2017-11-01']
    >>> aug, jul = dec.replace(month=8), dec.replace(month=7)
    >>> [c.date().isoformat() for c in recent_calibration(aug, 30, 2, latest=jul)]
    ['2017-06-27', '2017-07-01']
    """
    last = test - timedelta(days=horizon_days) if latest is None else latest
    out = [last]
    weeks = horizon_days // 7 + 1  # the first whole week more than one horizon back
    while len(out) < n:
        cut = test - timedelta(weeks=weeks)
        if cut < last:
            out.append(cut)
        weeks += 1
    return tuple(sorted(out))


def _calibration_after(
    train: tuple[datetime, ...], test: datetime, t: TrainSettings, latest: datetime
) -> tuple[datetime, ...]:
    """``recent_calibration`` without cutoffs at or before the last training cutoff (calibration out of sample)."""
    cuts = recent_calibration(test, t.label_horizon_days, t.calibration_cutoffs, latest)
    kept = tuple(c for c in cuts if not train or c > train[-1])
    return kept or cuts[-1:]


@dataclass(frozen=True)
class TrainPlan:
    """Which cutoffs train, calibrate and test."""

    train: tuple[datetime, ...]
    calibrate: tuple[datetime, ...]
    test: datetime | None

    @classmethod
    def fit(cls, first_event: datetime, last_event: datetime, train: TrainSettings | None = None) -> TrainPlan:
        """The plan that fits the data's time range under the ``train.*`` settings.

        Test at the last cutoff whose labels (``label_horizon_days``) the data
        covers, train from ``history_days`` after the first event, every
        ``cutoff_every_days`` (default: month starts for test, the 1st and
        15th for training) on cutoffs whose labels close by the test cutoff
        minus one horizon, and calibrate on the ``calibration_cutoffs``
        slices of ``recent_calibration`` (default one: the month before the
        test). For The Complete Journey (2017-01-01 .. 2018-01-01) with the
        defaults: train Feb 1 .. Oct 1, calibrate Nov 1, test Dec 1.
        """
        t = train or TrainSettings()
        horizon = timedelta(days=t.label_horizon_days)
        start = first_event + timedelta(days=t.history_days)
        if t.cutoff_every_days is None:
            test = _month_start(last_event - horizon)
            calibrate = _month_start(test - horizon)  # its labels close by the test cutoff
            first = start if start == _month_start(start) else _month_start(_month_start(start) + timedelta(days=32))
            plan = cls.semimonthly(first, calibrate, test, t.label_horizon_days)
            plan = cls(plan.train, _calibration_after(plan.train, test, t, calibrate), test)
        else:
            test = _day_start(last_event - horizon)
            calibrate = test - horizon
            every = timedelta(days=t.cutoff_every_days)
            cut = _day_start(start) + (timedelta(days=1) if start != _day_start(start) else timedelta(0))
            cuts = []
            while cut + horizon <= calibrate:
                cuts.append(cut)
                cut += every
            plan = cls(tuple(cuts), _calibration_after(tuple(cuts), test, t, calibrate), test)
        if not plan.train:
            cadence = "semimonthly" if t.cutoff_every_days is None else f"every {t.cutoff_every_days} days"
            msg = (
                f"events from {first_event.date()} to {last_event.date()} are too short to train: need "
                f"{t.history_days} days of history (train.history_days), training cutoffs ({cadence}; "
                f"train.cutoff_every_days), and two {t.label_horizon_days}-day label windows "
                "(train.label_horizon_days)"
            )
            raise TrainError(msg)
        return plan

    @classmethod
    def semimonthly(
        cls, first: datetime, calibrate: datetime, test: datetime | None, horizon_days: int = 30
    ) -> TrainPlan:
        """Training cutoffs on the 1st and 15th from ``first``.

        Only cutoffs whose label windows (``horizon_days``) close by ``calibrate``.
        """
        out = []
        t = first
        while t + timedelta(days=horizon_days) <= calibrate:
            out.append(t)
            t = (
                t.replace(day=15)
                if t.day < 15
                else t.replace(year=t.year + (t.month // 12), month=t.month % 12 + 1, day=1)
            )
        return cls(tuple(out), (calibrate,), test)

    def all_cutoffs(self) -> list[datetime]:
        """Every cutoff the plan needs examples for."""
        return [*self.train, *self.calibrate, *([self.test] if self.test else [])]


@dataclass(frozen=True)
class PromotionGate:
    """A candidate is promoted unless it is worse than production, both measured on the candidate's test slice.

    Worse means ranking (ROC AUC) or probability accuracy (Brier score, which
    counts calibration too) beyond a tolerance; seed noise alone moves ROC AUC
    by ~0.0005 and Brier by less.
    """

    max_auc_drop: float
    max_brier_rise: float
    min_auc: float = 0.0
    min_distinct_predictions: int = 1

    @classmethod
    def from_settings(cls, train: TrainSettings) -> PromotionGate:
        """The gate of the ``train.*`` settings (their defaults are the one place the tolerances are set)."""
        return cls(train.max_auc_drop, train.max_brier_rise, train.min_auc, train.min_distinct_predictions)

    def useless(self, candidate: dict[str, float]) -> str | None:
        """Why a model must never be served whatever production holds (even as a group's first), or None.

        >>> gate = PromotionGate(0.005, 0.002, min_auc=0.55, min_distinct_predictions=10)
        >>> gate.useless({"roc_auc": 0.5, "distinct_predictions": 1.0})
        'ROC AUC 0.5000 is below the floor 0.55 (train.min_auc)'
        >>> gate.useless({"roc_auc": 0.8, "distinct_predictions": 3.0})
        'only 3 distinct predictions on the test slice, fewer than 10 (train.min_distinct_predictions)'
        >>> gate.useless({"roc_auc": 0.8, "distinct_predictions": 500.0}) is None
        True
        """
        if not candidate:
            return None  # no test slice: nothing to judge by
        auc = candidate["roc_auc"]
        if math.isnan(auc):
            return "ROC AUC is undefined: the test slice holds only one class (no buyer, or only buyers)"
        if auc < self.min_auc:
            return f"ROC AUC {auc:.4f} is below the floor {self.min_auc} (train.min_auc)"
        distinct = int(candidate.get("distinct_predictions", self.min_distinct_predictions))
        if distinct < self.min_distinct_predictions:
            return (
                f"only {distinct} distinct predictions on the test slice, fewer than "
                f"{self.min_distinct_predictions} (train.min_distinct_predictions)"
            )
        return None

    def decide(self, candidate: dict[str, float], production: dict[str, float] | None) -> tuple[bool, str]:
        """Whether to promote, and why, from the two models' metrics on one test slice."""
        if not candidate:
            return True, "no test slice to compare on"
        useless = self.useless(candidate)
        if useless is not None:
            return False, useless
        if production is None:
            return True, "no readable production model for the current features"
        auc, prod_auc = candidate["roc_auc"], production["roc_auc"]
        brier, prod_brier = candidate["brier"], production["brier"]
        versus = f"ROC AUC {auc:.4f} vs {prod_auc:.4f}, Brier {brier:.4f} vs {prod_brier:.4f} in production"
        if auc < prod_auc - self.max_auc_drop:
            return False, f"{versus}: ROC AUC may drop by at most {self.max_auc_drop}"
        if brier > prod_brier + self.max_brier_rise:
            return False, f"{versus}: Brier may rise by at most {self.max_brier_rise}"
        return True, versus


def _rows(ex: Examples, cutoffs: tuple[datetime, ...]) -> np.ndarray:
    mask = np.zeros(len(ex.cutoffs), dtype=bool)
    for c in cutoffs:
        mask |= ex.at(to_ms(c))
    return mask


def data_fingerprint(
    spec: FeatureSpec,
    group: str,
    ex: Examples,
    plan: TrainPlan,
    params: dict[str, float | int | str] | None = None,
    rounds: int = DEFAULT_ROUNDS,
) -> str:
    """sha256 of everything ``train_group`` reads for ``group``: equal fingerprints, equal models.

    The plan's cutoffs, the model's feature names, the rows (customers, feature
    values, the group's labels) of every cutoff of the plan, the parameters
    as the booster gets them (``booster_params``: the defaults included).
    """
    h = hashlib.sha256()
    names = spec.default_inputs(group)
    cols = np.array([spec.index[n] for n in names], dtype=np.intp)
    rows = _rows(ex, tuple(plan.all_cutoffs()))
    resolved = booster_params(ex, plan, params)  # the trainer's defaults too: changing them is new training
    h.update(json.dumps([[c.isoformat() for c in plan.all_cutoffs()], list(names), resolved, rounds]).encode())
    h.update(np.ascontiguousarray(ex.cutoffs[rows]).tobytes())
    h.update("\n".join(u for u, keep in zip(ex.users, rows, strict=True) if keep).encode())
    h.update(np.ascontiguousarray(ex.x[np.ix_(rows, cols)], dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(ex.labels[rows, spec.groups.index(group)]).tobytes())
    return h.hexdigest()


def booster_params(
    ex: Examples, plan: TrainPlan, params: dict[str, float | int | str] | None = None
) -> dict[str, float | int | str]:
    """XGBoost parameters of a plan's booster.

    Unless ``params`` set it, ``min_child_weight`` follows the training set:
    100 (tuned on The Complete Journey's 39,445 rows) or, for a smaller
    export, 1/256 of its rows, so that a few weeks of data can still split.
    """
    n_train = int(_rows(ex, plan.train).sum())
    leaf = {"min_child_weight": float(min(100.0, max(1.0, n_train / 256)))}
    return {**DEFAULT_PARAMS, **leaf, **(params or {})}


def booster_fingerprint(
    spec: FeatureSpec,
    group: str,
    ex: Examples,
    plan: TrainPlan,
    params: dict[str, float | int | str] | None = None,
    rounds: int = DEFAULT_ROUNDS,
) -> str:
    """sha256 of what ``fit_booster`` reads (training rows only): equal fingerprints, equal boosters."""
    training_only = TrainPlan(plan.train, (), None)
    return data_fingerprint(spec, group, ex, training_only, booster_params(ex, plan, params), rounds)


def fit_booster(
    spec: FeatureSpec,
    group: str,
    ex: Examples,
    plan: TrainPlan,
    params: dict[str, float | int | str] | None = None,
    rounds: int = DEFAULT_ROUNDS,
) -> xgb.Booster:
    """The group's XGBoost booster on the plan's training cutoffs (uncalibrated)."""
    tr = _rows(ex, plan.train)
    names = spec.default_inputs(group)
    cols = np.array([spec.index[n] for n in names], dtype=np.intp)
    y = ex.labels[tr, spec.groups.index(group)]
    # np.ix_ gathers only the model's columns (the full layout is much wider than one model's inputs).
    dtrain = xgb.DMatrix(ex.x[np.ix_(tr, cols)], label=y, feature_names=list(names))
    return xgb.train(booster_params(ex, plan, params), dtrain, num_boost_round=rounds)


def train_group(
    spec: FeatureSpec,
    group: str,
    ex: Examples,
    plan: TrainPlan,
    version: int,
    params: dict[str, float | int | str] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    booster: xgb.Booster | None = None,
) -> ModelArtifact:
    """Train, calibrate and evaluate one group's model; returns an unregistered artifact.

    ``booster``: the result of ``fit_booster`` for these same arguments, if
    the caller has it already (the backtest caches boosters by
    ``booster_fingerprint``).
    """
    fingerprint = data_fingerprint(spec, group, ex, plan, params, rounds)
    tr, ca = _rows(ex, plan.train), _rows(ex, plan.calibrate)
    if booster is None:
        booster = fit_booster(spec, group, ex, plan, params, rounds)
    params = booster_params(ex, plan, params)
    gi = spec.groups.index(group)
    names = spec.default_inputs(group)
    cols = np.array([spec.index[n] for n in names], dtype=np.intp)
    y = ex.labels[:, gi]
    raw_cal = booster.inplace_predict(ex.x[np.ix_(ca, cols)], validate_features=False)
    calibration = fit_platt(raw_cal, y[ca])
    metrics: dict[str, float] = {}
    curve: list[tuple[float, float, int]] = []
    if plan.test is not None:
        te = _rows(ex, (plan.test,))
        raw = booster.inplace_predict(ex.x[np.ix_(te, cols)], validate_features=False)
        probs = apply_calibration(calibration, raw)
        metrics = evaluate(y[te], probs)
        metrics["roc_auc_uncalibrated"] = evaluate(y[te], np.asarray(raw))["roc_auc"]
        # A base rate that moves between the calibration and test slices shows up as ECE.
        metrics["mean_score"] = float(probs.mean())
        metrics["calibration_base_rate"] = float(y[ca].mean())
        curve = calibration_curve(y[te], probs)
    card = ModelCard(
        group_id=group,
        version=version,
        feature_names=names,
        calibration=calibration,
        train_cutoffs=plan.train,
        calibration_cutoffs=plan.calibrate,
        test_cutoff=plan.test,
        params={**params, "rounds": rounds},
        metrics=metrics,
        calibration_curve=tuple(curve),
        n_train=int(tr.sum()),
        created_at=datetime.now(tz=UTC),
        data_fingerprint=fingerprint,
    )
    booster.set_param({"nthread": 1})
    return ModelArtifact(card=card, booster=booster)


def slice_metrics(spec: FeatureSpec, ex: Examples, plan: TrainPlan, artifact: ModelArtifact) -> dict[str, float] | None:
    """A registered model's metrics on the test slice of ``plan``; None if it cannot read ``spec``'s features."""
    if plan.test is None:
        return None
    try:
        positions = artifact.input_positions(spec.index)
    except FeatureMismatchError:
        return None
    te = _rows(ex, (plan.test,))
    probs = artifact.predict(ex.x[np.ix_(te, positions)])
    return evaluate(ex.labels[te, spec.groups.index(artifact.card.group_id)], probs)


def slice_threshold_report(
    spec: FeatureSpec, ex: Examples, at: datetime, new: ModelArtifact, old: ModelArtifact | None
) -> ThresholdReport:
    """Old and new model of a group on the examples at cutoff ``at`` (old: None if it cannot read ``spec``)."""
    group = new.card.group_id
    te = _rows(ex, (at,))
    y = ex.labels[te, spec.groups.index(group)]
    new_probs = new.predict(ex.x[np.ix_(te, new.input_positions(spec.index))])
    old_probs = None
    if old is not None:
        try:
            old_probs = old.predict(ex.x[np.ix_(te, old.input_positions(spec.index))])
        except FeatureMismatchError:
            old = None
    return threshold_report(
        group,
        y,
        old_probs,
        new_probs,
        None if old is None else old.card.version,
        new.card.version,
        at.isoformat(),
    )


def _keep_test_slice(
    folder: Path,
    spec: FeatureSpec,
    ex: Examples,
    at: datetime,
    art: ModelArtifact,
    registry: ModelRegistry,
    current: int | None,
) -> None:
    """Save the test slice with the model (``offline_train.slices``): the columns it and production read."""
    names = list(art.card.feature_names)
    if current is not None:
        try:
            names += [n for n in registry.card(art.card.group_id, current).feature_names if n not in set(names)]
        except (OSError, ValueError):
            pass  # an unreadable production card: the report will show the new model alone
    names = [n for n in names if n in spec.index]
    te = _rows(ex, (at,))
    cols = np.array([spec.index[n] for n in names], dtype=np.intp)
    users = [u for u, keep in zip(ex.users, te, strict=True) if keep]
    labels = ex.labels[te, spec.groups.index(art.card.group_id)]
    save_slice(folder, tuple(names), ex.x[np.ix_(te, cols)], users, labels, at.isoformat())


DEFAULT_GATE = PromotionGate.from_settings(TrainSettings())


def train_all(
    spec: FeatureSpec,
    ex: Examples,
    plan: TrainPlan,
    registry: ModelRegistry,
    groups: list[str] | None = None,
    gate: PromotionGate = DEFAULT_GATE,
    progress: Callable[[str], None] = print,
    params: dict[str, float | int | str] | None = None,
    force: bool = False,
    rounds: int = DEFAULT_ROUNDS,
) -> list[ModelCard]:
    """Train and register every group's model; promote it if ``gate`` lets it.

    ``force`` skips the comparison with production, never the floor: a model
    that cannot rank (``PromotionGate.useless``) is not served.
    """
    cards = []
    for group in groups or list(spec.groups):
        current = registry.production_version(group)
        if current is not None and not force:
            same = registry.card(group, current).data_fingerprint == data_fingerprint(
                spec, group, ex, plan, params, rounds
            )
            if same:
                progress(f"  {group:<22} unchanged: v{current} in production was trained on these same examples")
                continue
        art = train_group(spec, group, ex, plan, registry.next_version(group), params, rounds)
        folder = registry.register(art)
        current = registry.production_version(group)
        if plan.test is not None:
            _keep_test_slice(folder, spec, ex, plan.test, art, registry, current)
        promote, why = True, "the first model of the group" if current is None else "forced"
        useless = gate.useless(art.card.metrics)
        if useless is not None:
            promote, why = False, useless
        elif not force and current is not None:
            production = None
            try:
                production = slice_metrics(spec, ex, plan, registry.load(group, current))
            except ModelError as exc:  # unreadable: nothing to defend
                log.warning("production model %s v%s cannot be compared: %s", group, current, exc)
            promote, why = gate.decide(art.card.metrics, production)
        report = None
        if promote:
            if plan.test is not None:  # what the promotion does to each threshold, before the pointer moves
                old = None
                if current is not None:
                    try:
                        old = registry.load(group, current)
                    except ModelError:
                        old = None
                report = slice_threshold_report(spec, ex, plan.test, art, old)
            registry.promote(group, art.card.version, reason=f"propstream train: {why}")
        m = art.card.metrics
        stays = f"v{current} stays" if current is not None else "the group has no scores"
        progress(
            f"  {group:<22} v{art.card.version}  auc={m.get('roc_auc', float('nan')):.3f}  "
            f"ece={m.get('ece', float('nan')):.3f}  n_train={art.card.n_train:,}  "
            + (f"promoted ({why})" if promote else f"not promoted, {stays} ({why})")
        )
        for line in format_report(report) if report is not None else []:
            progress(line)
        cards.append(art.card)
    return cards
