"""The registry's pointer moves: promote, rollback, the action log, and what the serving side sees."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import xgboost as xgb

from models.artifact import ModelArtifact
from models.registry import ModelRegistry, RegistryError
from models.scorer import ProductionModels
from schemas.cards import Calibration, ModelCard, Stage
from schemas.features import FeatureSpec

SPEC = FeatureSpec(groups=("coffee", "snacks"), types=("view", "purchase"))


def artifact(group: str, version: int, seed: int = 0) -> ModelArtifact:
    """A tiny real XGBoost model over the group's default inputs (identity calibration)."""
    names = SPEC.default_inputs(group)
    rng = np.random.default_rng(seed + version)
    x = rng.random((200, len(names)))
    y = (x[:, 0] + rng.random(200) > 1.0).astype(float)
    booster = xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(x, label=y, feature_names=list(names)), 3)
    cal = Calibration(method="platt", x=(0.0, 1.0), y=(0.0, 1.0))
    card = ModelCard(
        group_id=group, version=version, feature_names=names, calibration=cal, created_at=datetime.now(tz=UTC)
    )
    return ModelArtifact(card=card, booster=booster)


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    r = ModelRegistry(tmp_path / "models")
    for g in SPEC.groups:
        for v in (1, 2, 3):
            r.register(artifact(g, v))
    return r


def test_a_deleted_production_pointer_stops_that_groups_serving(registry):
    for g in SPEC.groups:
        registry.promote(g, 1)
    models = ProductionModels.load(SPEC, registry, poll_seconds=0.0)
    assert models.versions() == {0: 1, 1: 1}
    (registry.root / "coffee" / "PRODUCTION").unlink()
    models.refresh()
    assert models.versions() == {1: 1}  # coffee is no longer scored; snacks still is
    registry.promote("coffee", 2)
    models.refresh()
    assert models.versions() == {0: 2, 1: 1}


def test_rollback_returns_to_the_previous_production_version_and_logs_who_and_why(registry):
    registry.promote("coffee", 1, by="train", reason="first")
    registry.promote("coffee", 3, by="ann", reason="better AUC")
    registry.promote("snacks", 2)
    done = registry.rollback("coffee", by="bob", reason="v3 over-selects")
    assert (done.version, done.previous, done.by, done.reason) == (1, 3, "bob", "v3 over-selects")
    assert registry.production_version("coffee") == 1
    assert registry.stage("coffee", 3) == Stage.ARCHIVED  # once production
    assert registry.stage("coffee", 2) == Stage.CANDIDATE  # never served, newer than production
    assert [a.action for a in registry.actions("coffee")] == ["promote", "promote", "rollback"]
    assert registry.last_action("coffee", 3) == done
    with pytest.raises(RegistryError, match="no production version before v1"):
        registry.rollback("coffee")  # nothing before v1
    registry.promote("coffee", 2)
    registry.promote("coffee", 3)
    assert registry.rollback("coffee").version == 2
    assert registry.rollback("coffee").version == 1  # rollbacks walk back the promotions, not toggle


def test_promote_refuses_an_unregistered_version(registry):
    with pytest.raises(RegistryError, match="not registered"):
        registry.promote("coffee", 9)
    assert registry.actions() == []
