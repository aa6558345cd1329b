"""Every group's booster joined into one (``GroupForest``): the same scores as each group's own, bit for bit."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.artifact import ModelArtifact
from models.forest import GroupForest
from models.registry import ModelRegistry
from models.scorer import GroupScorer, ProductionModels
from schemas.cards import Calibration, ModelCard
from schemas.features import FeatureSpec
from stream.scoring import ShardScoring

WIDTH = 40  # features of the dense row the groups' models read from
CALIBRATION = Calibration(method="platt", x=(0.0, 0.3, 1.0), y=(0.05, 0.2, 0.9))


def scorer(gi: int, positions: list[int], rounds: int, depth: int, rate: float, seed: int, **params) -> GroupScorer:
    """A real XGBoost model of group ``gi`` over the dense row's ``positions`` (labels at base rate ~``rate``)."""
    rng = np.random.default_rng(seed)
    x = rng.random((300, len(positions)))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take each split's default branch
    y = (rng.random(300) < rate * (0.5 + x[:, 0].clip(0, 1))).astype(float)
    y[:2] = (0.0, 1.0)  # both classes
    names = tuple(f"f{p}" for p in positions)
    params = {"objective": "binary:logistic", "max_depth": depth, "nthread": 1, **params}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=list(names)), rounds)
    card = ModelCard(
        group_id=f"g{gi}", version=1, feature_names=names, calibration=CALIBRATION, created_at=datetime.now(tz=UTC)
    )
    return GroupScorer(gi, 1, np.array(positions, dtype=np.intp), np.array([gi]), ModelArtifact(card, booster))


@st.composite
def groups(draw) -> list[GroupScorer]:
    """Two to five groups' models: their own inputs anywhere in the row, their own depth, trees and base rate."""
    n = draw(st.integers(2, 5))
    out = []
    for gi in range(n):
        positions = draw(st.lists(st.integers(0, WIDTH - 1), min_size=1, max_size=8, unique=True))
        rounds, depth = draw(st.integers(1, 12)), draw(st.integers(1, 4))
        out.append(scorer(gi, positions, rounds, depth, draw(st.floats(0.05, 0.6)), draw(st.integers(0, 999))))
    return out


def feature_rows(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.random((n, WIDTH)) * rng.choice([1.0, 10.0, 1000.0], size=(n, WIDTH))
    rows[rng.random(rows.shape) < 0.15] = 0.0
    rows[rng.random(rows.shape) < 0.05] = np.nan
    return rows


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups(), st.integers(0, 999), st.integers(1, 60), st.data())
def test_the_joined_forest_scores_every_group_exactly_as_its_own_model_does(scorers, seed, n_rows, data):
    forest = GroupForest.build(scorers, WIDTH)
    assert forest is not None
    rows = feature_rows(seed, n_rows)
    # each group its own rows (a subset, or all of them as live refreshes have), as ShardScoring.plan gives them
    plan = []
    for s in scorers:
        which = data.draw(st.sets(st.integers(0, n_rows - 1), min_size=1)) if data.draw(st.booleans()) else None
        plan.append((s, np.arange(n_rows) if which is None else np.array(sorted(which)), False))
    got = forest.score(rows, plan)
    want = [s.score(rows, idx) for s, idx, _ in plan]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype == np.float64
        assert np.array_equal(g, w), np.abs(g - w).max()  # bit for bit: the same trees, in the same order


def test_models_that_cannot_be_one_booster_are_scored_group_by_group_with_the_reason_logged(caplog):
    logistic = scorer(0, [0, 1, 2], 5, 3, 0.3, 1)
    others = {
        "objective": scorer(1, [3, 4], 5, 3, 0.3, 2, objective="reg:squarederror"),
        "dart": scorer(1, [3, 4], 5, 3, 0.3, 2, booster="dart"),
    }
    rows = feature_rows(0, 20)
    for why, other in others.items():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="models.forest"):
            assert GroupForest.build([logistic, other], WIDTH) is None
        assert why in caplog.text and "g1 v1" in caplog.text
        plan = [(logistic, np.arange(20), False), (other, np.array([1, 5]), False)]
        scores = ShardScoring.predict(rows, plan, forest=None)
        assert np.array_equal(scores[1], other.score(rows, np.array([1, 5])))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="models.forest"):
        assert GroupForest.build([logistic], 2) is None  # its inputs lie past a 2-feature row
    assert "g0 v1 reads position 2 of a 2-feature row" in caplog.text


def artifact(spec: FeatureSpec, group: str, version: int) -> ModelArtifact:
    positions = [spec.index[n] for n in spec.default_inputs(group)]
    s = scorer(spec.groups.index(group), positions, 4 + version, 2, 0.3, version)
    update = {"group_id": group, "version": version, "feature_names": spec.default_inputs(group)}
    card = s.artifact.card.model_copy(update=update)
    return ModelArtifact(card, s.artifact.booster)


def test_a_swapped_in_model_is_never_scored_by_the_forest_built_before_it(tmp_path):
    spec = FeatureSpec(groups=("coffee", "snacks"), types=("view", "purchase"))
    registry = ModelRegistry(tmp_path / "models")
    for g in spec.groups:
        for v in (1, 2):
            registry.register(artifact(spec, g, v))
        registry.promote(g, 1)
    models = ProductionModels.load(spec, registry, poll_seconds=0.0)
    before = models.forest
    assert before is not None and before.serves([(s, None, False) for s in models.scorers.values()])
    registry.promote("snacks", 2)
    models.refresh()
    new = models.scorers[1]
    assert new.version == 2 and models.forest is not None and models.forest.members[1] is new
    rows = np.random.default_rng(3).random((30, len(spec.names)))
    plan = [(s, np.arange(30), False) for s in models.scorers.values()]
    assert not before.serves(plan)  # a batch planned with the new model but handed the old forest
    stale = ShardScoring.predict(rows, plan, before)
    fresh = ShardScoring.predict(rows, plan, models.forest)
    for got, also, (s, idx, _) in zip(stale, fresh, plan, strict=True):
        assert np.array_equal(got, s.score(rows, idx)) and np.array_equal(also, got)
