"""Models: a promoted model is served without a restart, and every customer is rescored with it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from models.artifact import FeatureMismatchError
from models.registry import ModelRegistry
from models.scorer import GroupScorer, ProductionModels
from propstream import app
from schemas.events import Event
from stream.shard import CustomerShard, ShardInput, ShardProcessor
from stream.state import StateConfig
from tests.integration.conftest import PLAN, SMALL_DATA_PARAMS, make_settings

pytestmark = pytest.mark.integration


def test_promoted_model_rescores_every_customer_of_the_shard(world, trained_dir, tmp_path, chdb_dsn):
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog)
    cfg = StateConfig.build(spec)
    registry = ModelRegistry(settings.models_dir)
    models = ProductionModels(spec, registry, poll_seconds=0.0)
    proc = ShardProcessor(cfg, catalog, models, allowed_lateness_ms=86_400_000)
    shard = CustomerShard(0)
    records = [Event.model_validate(e).to_record("t") for e in world.events[:2000]]
    first = proc.process(shard, ShardInput(0, records, max(r.ts_ms for r in records)))
    users = {r.user_id for r in records}
    assert {(u, g) for u, g in zip(first.scores.user_id, first.scores.group_id, strict=True)} == {
        (u, g) for u in users for g in spec.groups
    }

    # Retrain one group and promote it: the next batch, even with no events, rescores all customers.
    examples_records = [Event.model_validate(e).to_record("t") for e in world.events]
    app.train(
        settings, examples_records, groups=["coffee"], plan=PLAN, progress=lambda _: None, params=SMALL_DATA_PARAMS
    )
    new_version = registry.production_version("coffee")
    assert new_version == 2
    tick = proc.process(shard, ShardInput(0, [], shard.clock))
    rescored = [
        (u, v)
        for u, g, v in zip(tick.scores.user_id, tick.scores.group_id, tick.scores.model_version, strict=True)
        if g == "coffee"
    ]
    assert {u for u, _ in rescored} == users
    assert {v for _, v in rescored} == {new_version}
    assert set(tick.scores.group_id) == {"coffee"}  # other groups' features did not change


def test_model_whose_features_do_not_match_the_spec_is_refused(world, trained_dir, tmp_path, chdb_dsn):
    settings = make_settings(tmp_path, world, chdb_dsn)
    spec = app.feature_spec(app.load_catalog(settings))
    art = ModelRegistry(trained_dir / "models").load("coffee", 1)
    narrower = spec.model_copy(update={"windows": spec.windows[:2]})
    with pytest.raises(FeatureMismatchError, match="propstream train"):
        GroupScorer.build(narrower, 0, art)
    scorer = GroupScorer.build(spec, spec.groups.index("coffee"), art)
    assert scorer.score(np.vstack([StateConfig.build(spec).new_row()])).shape == (1,)
